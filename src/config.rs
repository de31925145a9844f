//! The broker's configuration: a TOML file (optional) plus `SILT_`-prefixed
//! environment overrides, one typed section per concern.
//!
//! Environment keys name the section and key separated by a double
//! underscore: `SILT_STORAGE__DATA_DIR=/var/lib/silt`, `SILT_KAFKA__LISTEN=0.0.0.0:9092`.
//! Every default lives in the `Default` impls below; `validate` names the key
//! and the bad value of any error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use silt_actors::topic_config::TopicDefaults;
use silt_actors::NodeOptions;
use silt_tiering::LogConfig;

pub mod cluster;
pub mod security;
pub use cluster::{BrokerSection, ClusterConfig, ClusterSection, Role, Voter};
pub use security::{ClientAuth, ListenerSection, ListenerSpec, SaslMechanism, SaslSection, SecurityProtocol, TlsSection};

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeSection,
    pub kafka: KafkaSection,
    pub http: HttpSection,
    pub storage: StorageSection,
    pub log: LogSection,
    pub groups: GroupsSection,
    pub tiering: TieringSection,
    pub metrics: MetricsSection,
    /// Node-to-node traffic and the metadata quorum; absent: the embedded single node.
    pub cluster: Option<ClusterSection>,
    /// The broker's rack and its session with the active controller.
    pub broker: BrokerSection,
    /// The certificate of SSL and SASL_SSL listeners (docs/security.md).
    pub tls: TlsSection,
    /// SASL mechanisms and PLAIN users of SASL listeners (docs/security.md).
    pub sasl: SaslSection,
}

/// This broker's identity.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// The broker id reported to clients.
    pub id: i32,
    /// Cluster id for a fresh data directory; random when unset.
    pub cluster_id: Option<String>,
}

/// The Kafka protocol listeners: this section's own (`listen`), and more
/// under `[[kafka.listeners]]` (see [`security`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSection {
    /// Address to accept Kafka clients on. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// `host:port` clients are told to connect to; defaults to the bound address.
    pub advertised_address: Option<String>,
    /// The name of the `listen` listener (Kafka's listener name).
    pub listener_name: String,
    /// The `listen` listener's protocol; defaults to the one its name denotes.
    pub security_protocol: Option<SecurityProtocol>,
    /// More listeners, each with its own name, addresses and protocol.
    pub listeners: Vec<ListenerSection>,
    /// The listener other brokers' replica fetchers connect to
    /// (`inter.broker.listener.name`); defaults to `listener_name`. PLAINTEXT only.
    pub inter_broker_listener: Option<String>,
    /// Open connections beyond this are refused.
    pub max_connections: usize,
    /// A request larger than this is refused before it is read (`socket.request.max.bytes`).
    pub socket_request_max_bytes: u32,
    /// Bytes of requests buffered across all connections at once (`queued.max.request.bytes`).
    pub queued_max_request_bytes: u64,
    /// Close a connection idle this long (`connections.max.idle.ms`).
    pub connections_max_idle_ms: u64,
    /// Close a connection whose request has not fully arrived after this long.
    pub request_read_timeout_ms: u64,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_address: None,
            listener_name: "PLAINTEXT".into(),
            security_protocol: None,
            listeners: Vec::new(),
            inter_broker_listener: None,
            max_connections: 10_000,
            socket_request_max_bytes: 104_857_600,
            queued_max_request_bytes: 512 * 1024 * 1024,
            connections_max_idle_ms: 600_000,
            request_read_timeout_ms: 30_000,
        }
    }
}

/// The HTTP listener for `/metrics` and `/health`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    pub listen: SocketAddr,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection { listen: SocketAddr::from(([127, 0, 0, 1], 9644)) }
    }
}

/// What `/metrics` exports.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Export series per partition (offsets, sizes). Off by default: their
    /// number grows with the partition count, and per-topic sums cover most needs.
    pub per_partition: bool,
}

/// Where data lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// Partition logs and the catalog.
    pub data_dir: PathBuf,
    /// Threads that partition actors and client connections run on; 0 means one per CPU.
    pub partition_threads: usize,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection { data_dir: PathBuf::from("./data"), partition_threads: 0 }
    }
}

/// Defaults for topics (each overridable per topic under its Kafka name).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// Partitions of a topic created without a count (`num.partitions`).
    pub num_partitions: i32,
    /// Create a topic when a client asks for metadata of an unknown one (`auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// `segment.bytes`
    pub segment_bytes: u64,
    /// `segment.ms`
    pub segment_ms: u64,
    /// `retention.ms`; -1 keeps data forever. Unset: -1 when tiering is
    /// enabled (the archive keeps history), else 7 days.
    pub retention_ms: Option<i64>,
    /// `retention.bytes`; -1 is unbounded.
    pub retention_bytes: i64,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: u64,
    /// `flush.messages`: fsync after this many messages; unset leaves flushing to the OS.
    pub flush_messages: Option<u64>,
    /// `flush.ms`: fsync when the oldest unflushed write is this old.
    pub flush_ms: Option<u64>,
    /// `index.interval.bytes`
    pub index_interval_bytes: u64,
    /// `min.insync.replicas`
    pub min_insync_replicas: i32,
    /// How often retention and time-based rolling run (`log.retention.check.interval.ms`).
    pub retention_check_interval_ms: u64,
    /// `local.retention.ms` of archived topics: archived segments older than
    /// this leave the local disk; -2 follows `retention.ms`, -1 is unbounded.
    pub local_retention_ms: i64,
    /// `local.retention.bytes` of archived topics; -2 follows `retention.bytes`, -1 is unbounded.
    pub local_retention_bytes: i64,
    /// `log.cleaner.enable`: compact `cleanup.policy=compact` topics.
    pub cleaner_enable: bool,
    /// `log.cleaner.backoff.ms`: how often the cleaner looks for a log to clean when none is due.
    pub cleaner_backoff_ms: u64,
    /// `log.cleaner.io.max.bytes.per.second`: the cleaner's read plus write rate; 0 is unbounded.
    pub cleaner_io_max_bytes_per_second: u64,
    /// `log.cleaner.dedupe.buffer.size`: memory of the cleaner's offset map (24 bytes a key).
    pub cleaner_dedupe_buffer_size: u64,
}

impl Default for LogSection {
    fn default() -> Self {
        let log = LogConfig::default();
        LogSection {
            num_partitions: 1,
            auto_create_topics: true,
            segment_bytes: log.segment_bytes,
            segment_ms: log.segment_ms,
            retention_ms: None,
            retention_bytes: log.retention_bytes.map_or(-1, |v| v as i64),
            max_message_bytes: log.max_message_bytes,
            flush_messages: log.flush_messages,
            flush_ms: log.flush_ms,
            index_interval_bytes: log.index_interval_bytes,
            min_insync_replicas: 1,
            retention_check_interval_ms: 300_000,
            local_retention_ms: log.local_retention_ms.map_or(-1, |v| v as i64),
            local_retention_bytes: log.local_retention_bytes.map_or(-1, |v| v as i64),
            cleaner_enable: true,
            cleaner_backoff_ms: 15_000,
            cleaner_io_max_bytes_per_second: 0,
            cleaner_dedupe_buffer_size: 128 << 20,
        }
    }
}

/// The group coordinator (Kafka's `group.*` and `offsets.*` broker configs).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupsSection {
    /// How long the first rebalance of an empty group waits for more members (`group.initial.rebalance.delay.ms`).
    pub initial_rebalance_delay_ms: u64,
    /// The shortest session timeout a member may ask for (`group.min.session.timeout.ms`).
    pub min_session_timeout_ms: i32,
    /// The longest session timeout a member may ask for (`group.max.session.timeout.ms`).
    pub max_session_timeout_ms: i32,
    /// The most members of one group (`group.max.size`).
    pub max_size: u32,
    /// Partitions of `__consumer_offsets` when it is created (`offsets.topic.num.partitions`).
    pub offsets_topic_partitions: i32,
    /// Replicas of each `__consumer_offsets` partition (`offsets.topic.replication.factor`),
    /// at most the number of voters.
    pub offsets_topic_replication_factor: i16,
    /// Committed offsets of an empty group expire this long after their commit (`offsets.retention.minutes`, in ms).
    pub offsets_retention_ms: u64,
    /// How often consumer-protocol (KIP-848) members are told to heartbeat (`group.consumer.heartbeat.interval.ms`).
    pub consumer_heartbeat_interval_ms: i32,
    /// A consumer-protocol member without a heartbeat for this long is removed (`group.consumer.session.timeout.ms`).
    pub consumer_session_timeout_ms: i32,
}

impl Default for GroupsSection {
    fn default() -> Self {
        let d = silt_actors::group::GroupsConfig::default();
        GroupsSection {
            initial_rebalance_delay_ms: d.initial_rebalance_delay_ms,
            min_session_timeout_ms: d.min_session_timeout_ms,
            max_session_timeout_ms: d.max_session_timeout_ms,
            max_size: i32::MAX as u32,
            offsets_topic_partitions: d.offsets_topic_partitions,
            offsets_topic_replication_factor: d.offsets_topic_replication_factor,
            offsets_retention_ms: d.offsets_retention_ms,
            consumer_heartbeat_interval_ms: d.consumer_heartbeat_interval_ms,
            consumer_session_timeout_ms: d.consumer_session_timeout_ms,
        }
    }
}

/// Archiving of sealed segments to object storage as Parquet.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TieringSection {
    /// Archive sealed segments of every (non-internal) topic.
    pub enabled: bool,
    /// Where the archive lives: `file:///path`, `s3://bucket/prefix`,
    /// `gs://bucket/prefix` or `az://container/prefix`. Empty: a folder
    /// named `<data dir>-archive` beside the data directory.
    pub archive_url: String,
    /// S3 endpoint for S3-compatible stores (MinIO, moto, Ceph...); else `AWS_ENDPOINT_URL` or AWS.
    pub s3_endpoint: Option<String>,
    /// S3 region; else `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub s3_region: Option<String>,
    /// S3 credentials; else `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (or instance credentials).
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    /// Allow a plain `http://` endpoint.
    pub s3_allow_http: bool,
    /// Virtual-hosted-style requests (`bucket.host`) instead of path style.
    pub s3_virtual_hosted_style: bool,
    /// Further object_store options by name (e.g. `aws_session_token`, `google_service_account`).
    pub options: std::collections::BTreeMap<String, String>,
    /// Segments uploaded at once across the node.
    pub upload_concurrency: usize,
    /// How often each partition looks for sealed segments to upload.
    pub upload_check_interval_ms: u64,
    /// The longest wait between retries of a failed upload (backoff doubles from 200 ms).
    pub upload_retry_backoff_max_ms: u64,
    /// Memory for decoded archive row groups served to consumers reading history.
    pub cache_bytes: u64,
    /// A Parquet row group closes after about this many bytes of record batches.
    pub row_group_bytes: u64,
    /// zstd level of the Parquet pages (1 = fastest).
    pub zstd_level: i32,
}

impl Default for TieringSection {
    fn default() -> Self {
        let encode = silt_tiering::archive::format::EncodeOptions::default();
        TieringSection {
            enabled: true,
            archive_url: String::new(),
            s3_endpoint: None,
            s3_region: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_allow_http: false,
            s3_virtual_hosted_style: false,
            options: Default::default(),
            upload_concurrency: 2,
            upload_check_interval_ms: 1_000,
            upload_retry_backoff_max_ms: 30_000,
            cache_bytes: 256 << 20,
            row_group_bytes: encode.row_group_bytes,
            zstd_level: encode.zstd_level,
        }
    }
}

/// A configuration that cannot be used, naming the key and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("{key} {problem}, got {value}")]
    Invalid { key: &'static str, value: String, problem: &'static str },
}

fn invalid(key: &'static str, value: impl ToString, problem: &'static str) -> ConfigError {
    ConfigError::Invalid { key, value: value.to_string(), problem }
}

/// The prefix of every environment override.
const ENV_PREFIX: &str = "SILT_";
/// Separates the section from the key: `SILT_STORAGE__DATA_DIR`.
const ENV_SEPARATOR: &str = "__";

/// Splits the `SILT_`-prefixed variables of `vars` into configuration keys,
/// shaped `SILT_<SECTION>__<KEY>`, and the names of the others. Those belong to
/// scripts and images around Silt (`SILT_BIN`, `SILT_HOME`, `SILT_VERSION`) and
/// are not configuration; a misspelt key inside a section still has the shape
/// and fails deserialisation as before.
fn environment_keys(vars: impl IntoIterator<Item = (String, String)>) -> (config::Map<String, String>, Vec<String>) {
    let mut keys = config::Map::new();
    let mut ignored = Vec::new();
    for (name, value) in vars {
        let Some(rest) = name.get(..ENV_PREFIX.len()).filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX)).map(|_| &name[ENV_PREFIX.len()..]) else { continue };
        match rest.split_once(ENV_SEPARATOR) {
            Some((section, key)) if !section.is_empty() && !key.is_empty() => {
                keys.insert(name, value);
            }
            _ => ignored.push(name),
        }
    }
    ignored.sort();
    (keys, ignored)
}

/// The configuration source for environment keys chosen by [`environment_keys`].
fn environment(keys: config::Map<String, String>) -> config::Environment {
    config::Environment::with_prefix(ENV_PREFIX.trim_end_matches('_')).prefix_separator("_").separator(ENV_SEPARATOR).try_parsing(true).source(Some(keys))
}

impl Config {
    /// Loads `file` (if given) and the `SILT_*` environment, then validates.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(config::File::from(file).required(true));
        }
        let (keys, ignored) = environment_keys(std::env::vars_os().map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned())));
        if !ignored.is_empty() {
            tracing::warn!(variables = ?ignored, "ignoring SILT_ environment variables that are not configuration keys (SILT_<SECTION>__<KEY>)");
        }
        builder = builder.add_source(environment(keys));
        let config: Config = builder.build()?.try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and relations the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if k.max_connections == 0 {
            return Err(invalid("kafka.max_connections", k.max_connections, "must be at least 1"));
        }
        if k.socket_request_max_bytes < 1024 || k.socket_request_max_bytes > i32::MAX as u32 {
            return Err(invalid("kafka.socket_request_max_bytes", k.socket_request_max_bytes, "must be 1024..=2147483647"));
        }
        if k.queued_max_request_bytes < u64::from(k.socket_request_max_bytes) {
            return Err(invalid("kafka.queued_max_request_bytes", k.queued_max_request_bytes, "must be at least kafka.socket_request_max_bytes"));
        }
        if k.connections_max_idle_ms == 0 {
            return Err(invalid("kafka.connections_max_idle_ms", 0, "must be positive"));
        }
        if k.request_read_timeout_ms == 0 {
            return Err(invalid("kafka.request_read_timeout_ms", 0, "must be positive"));
        }
        if let Some(addr) = &k.advertised_address {
            if !security::valid_host_port(addr) {
                return Err(invalid("kafka.advertised_address", addr, "must be host:port"));
            }
        }
        self.validate_security()?;
        if self.storage.data_dir.as_os_str().is_empty() {
            return Err(invalid("storage.data_dir", "\"\"", "must not be empty"));
        }
        let l = &self.log;
        if !(1..=silt_actors::node::PARTITIONS_MAX).contains(&l.num_partitions) {
            return Err(invalid("log.num_partitions", l.num_partitions, "must be 1..=100000"));
        }
        if l.segment_bytes < 1024 || l.segment_bytes > i32::MAX as u64 {
            return Err(invalid("log.segment_bytes", l.segment_bytes, "must be 1024..=2147483647"));
        }
        if l.segment_ms == 0 {
            return Err(invalid("log.segment_ms", 0, "must be positive"));
        }
        if l.cleaner_backoff_ms == 0 {
            return Err(invalid("log.cleaner_backoff_ms", 0, "must be positive"));
        }
        if let Some(ms) = l.retention_ms.filter(|&ms| ms < -1) {
            return Err(invalid("log.retention_ms", ms, "must be -1 (unbounded) or non-negative"));
        }
        if l.local_retention_ms < -2 {
            return Err(invalid("log.local_retention_ms", l.local_retention_ms, "must be -2 (follow retention.ms), -1 (unbounded) or non-negative"));
        }
        if l.local_retention_bytes < -2 {
            return Err(invalid("log.local_retention_bytes", l.local_retention_bytes, "must be -2 (follow retention.bytes), -1 (unbounded) or non-negative"));
        }
        if l.retention_bytes < -1 {
            return Err(invalid("log.retention_bytes", l.retention_bytes, "must be -1 (unbounded) or non-negative"));
        }
        if l.max_message_bytes == 0 || l.max_message_bytes > i32::MAX as u64 {
            return Err(invalid("log.max_message_bytes", l.max_message_bytes, "must be 1..=2147483647"));
        }
        if l.flush_messages == Some(0) {
            return Err(invalid("log.flush_messages", 0, "must be at least 1 (or unset)"));
        }
        if l.min_insync_replicas < 1 {
            return Err(invalid("log.min_insync_replicas", l.min_insync_replicas, "must be at least 1"));
        }
        if l.retention_check_interval_ms == 0 {
            return Err(invalid("log.retention_check_interval_ms", 0, "must be positive"));
        }
        self.validate_tiering()?;
        cluster::validate_broker(&self.broker)?;
        self.cluster_config()?;
        let g = &self.groups;
        if g.initial_rebalance_delay_ms > 600_000 {
            return Err(invalid("groups.initial_rebalance_delay_ms", g.initial_rebalance_delay_ms, "must be 0..=600000"));
        }
        if g.min_session_timeout_ms < 1 {
            return Err(invalid("groups.min_session_timeout_ms", g.min_session_timeout_ms, "must be positive"));
        }
        if g.max_session_timeout_ms < g.min_session_timeout_ms {
            return Err(invalid("groups.max_session_timeout_ms", g.max_session_timeout_ms, "must be at least groups.min_session_timeout_ms"));
        }
        if g.max_size == 0 {
            return Err(invalid("groups.max_size", 0, "must be at least 1"));
        }
        if !(1..=1000).contains(&g.offsets_topic_partitions) {
            return Err(invalid("groups.offsets_topic_partitions", g.offsets_topic_partitions, "must be 1..=1000"));
        }
        if g.offsets_topic_replication_factor < 1 {
            return Err(invalid("groups.offsets_topic_replication_factor", g.offsets_topic_replication_factor, "must be at least 1"));
        }
        if g.offsets_retention_ms == 0 {
            return Err(invalid("groups.offsets_retention_ms", 0, "must be positive"));
        }
        if !(1..=3_600_000).contains(&g.consumer_session_timeout_ms) {
            return Err(invalid("groups.consumer_session_timeout_ms", g.consumer_session_timeout_ms, "must be 1..=3600000"));
        }
        if g.consumer_heartbeat_interval_ms < 1 || g.consumer_heartbeat_interval_ms >= g.consumer_session_timeout_ms {
            return Err(invalid(
                "groups.consumer_heartbeat_interval_ms",
                g.consumer_heartbeat_interval_ms,
                "must be at least 1 and below groups.consumer_session_timeout_ms",
            ));
        }
        Ok(())
    }

    fn validate_tiering(&self) -> Result<(), ConfigError> {
        let t = &self.tiering;
        if !t.archive_url.is_empty() {
            let scheme = t.archive_url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("file" | "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" | "azure" | "memory")) {
                return Err(invalid("tiering.archive_url", &t.archive_url, "must be a file://, s3://, gs:// or az:// URL"));
            }
        }
        if !(1..=64).contains(&t.upload_concurrency) {
            return Err(invalid("tiering.upload_concurrency", t.upload_concurrency, "must be 1..=64"));
        }
        if t.upload_check_interval_ms < 10 {
            return Err(invalid("tiering.upload_check_interval_ms", t.upload_check_interval_ms, "must be at least 10"));
        }
        if t.upload_retry_backoff_max_ms < 200 {
            return Err(invalid("tiering.upload_retry_backoff_max_ms", t.upload_retry_backoff_max_ms, "must be at least 200"));
        }
        if t.cache_bytes < 1 << 20 {
            return Err(invalid("tiering.cache_bytes", t.cache_bytes, "must be at least 1048576"));
        }
        if !(4096..=1 << 30).contains(&t.row_group_bytes) {
            return Err(invalid("tiering.row_group_bytes", t.row_group_bytes, "must be 4096..=1073741824"));
        }
        if !(1..=22).contains(&t.zstd_level) {
            return Err(invalid("tiering.zstd_level", t.zstd_level, "must be 1..=22"));
        }
        Ok(())
    }

    /// The `[cluster]` section parsed, or `None` for the embedded single node.
    pub fn cluster_config(&self) -> Result<Option<ClusterConfig>, ConfigError> {
        self.cluster.as_ref().map(|section| cluster::resolve(section, self.node.id)).transpose()
    }

    /// The archive's location: the configured URL, or `<data dir>-archive`.
    pub fn archive_url(&self) -> Result<String, ConfigError> {
        if !self.tiering.archive_url.is_empty() {
            return Ok(self.tiering.archive_url.clone());
        }
        let data_dir =
            std::path::absolute(&self.storage.data_dir).map_err(|_| invalid("storage.data_dir", self.storage.data_dir.display(), "cannot be made absolute"))?;
        let mut name = data_dir.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "silt".into());
        name.push("-archive");
        let dir = data_dir.with_file_name(name);
        Ok(format!("file://{}", dir.display()))
    }

    /// The archive's settings, when tiering is enabled.
    pub fn archive_settings(&self) -> Result<Option<silt_tiering::archive::ArchiveSettings>, ConfigError> {
        use silt_tiering::archive::{format::EncodeOptions, ArchiveSettings, S3Settings, StoreSettings};
        let t = &self.tiering;
        if !t.enabled {
            return Ok(None);
        }
        Ok(Some(ArchiveSettings {
            store: StoreSettings {
                url: self.archive_url()?,
                s3: S3Settings {
                    endpoint: t.s3_endpoint.clone(),
                    region: t.s3_region.clone(),
                    access_key_id: t.s3_access_key_id.clone(),
                    secret_access_key: t.s3_secret_access_key.clone(),
                    allow_http: t.s3_allow_http,
                    virtual_hosted_style: t.s3_virtual_hosted_style,
                },
                options: t.options.clone(),
            },
            encode: EncodeOptions { row_group_bytes: t.row_group_bytes, zstd_level: t.zstd_level },
            upload_concurrency: t.upload_concurrency,
            cache_bytes: t.cache_bytes,
        }))
    }

    /// Topic defaults in the log's units.
    pub fn topic_defaults(&self) -> TopicDefaults {
        let l = &self.log;
        let limit = |v: i64| (v >= 0).then_some(v as u64);
        let retention_ms = l.retention_ms.unwrap_or(if self.tiering.enabled { -1 } else { 7 * 24 * 3_600_000 });
        TopicDefaults {
            log: LogConfig {
                segment_bytes: l.segment_bytes,
                segment_ms: l.segment_ms,
                retention_ms: limit(retention_ms),
                retention_bytes: limit(l.retention_bytes),
                max_message_bytes: l.max_message_bytes,
                log_append_time: false,
                flush_messages: l.flush_messages,
                flush_ms: l.flush_ms,
                index_interval_bytes: l.index_interval_bytes,
                archived: self.tiering.enabled,
                local_retention_ms: limit(if l.local_retention_ms == -2 { retention_ms } else { l.local_retention_ms }),
                local_retention_bytes: limit(if l.local_retention_bytes == -2 { l.retention_bytes } else { l.local_retention_bytes }),
                ..LogConfig::default()
            },
            min_insync_replicas: l.min_insync_replicas,
        }
    }

    /// How the group coordinator runs.
    pub fn groups_config(&self) -> silt_actors::group::GroupsConfig {
        let g = &self.groups;
        silt_actors::group::GroupsConfig {
            initial_rebalance_delay_ms: g.initial_rebalance_delay_ms,
            min_session_timeout_ms: g.min_session_timeout_ms,
            max_session_timeout_ms: g.max_session_timeout_ms,
            max_size: g.max_size as usize,
            offsets_topic_partitions: g.offsets_topic_partitions,
            offsets_topic_replication_factor: g.offsets_topic_replication_factor,
            offsets_retention_ms: g.offsets_retention_ms,
            consumer_heartbeat_interval_ms: g.consumer_heartbeat_interval_ms,
            consumer_session_timeout_ms: g.consumer_session_timeout_ms,
        }
    }

    /// How the node actor starts; `archive` is the opened archive, if tiering is enabled.
    pub fn node_options(&self, archive: Option<std::sync::Arc<silt_tiering::archive::Archive>>) -> NodeOptions {
        let threads = match self.storage.partition_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        NodeOptions {
            data_dir: self.storage.data_dir.clone(),
            node_id: self.node.id,
            cluster_id: self.node.cluster_id.clone().or_else(|| self.cluster.as_ref().map(|c| cluster::default_cluster_id(&c.voters))),
            topic_defaults: self.topic_defaults(),
            default_partitions: self.log.num_partitions,
            maintenance_interval: Duration::from_millis(self.log.retention_check_interval_ms),
            partition_threads: threads,
            archive: archive.map(|archive| silt_actors::node::NodeArchiveOptions {
                archive,
                check_interval: Duration::from_millis(self.tiering.upload_check_interval_ms),
                retry_backoff_max: Duration::from_millis(self.tiering.upload_retry_backoff_max_ms),
            }),
            // The broker fills in its advertised listener once it is bound.
            endpoints: Vec::new(),
            rack: self.broker.rack.clone(),
            cluster: Default::default(),
            cleaner: silt_actors::cleaner::CleanerOptions {
                enabled: self.log.cleaner_enable,
                backoff: Duration::from_millis(self.log.cleaner_backoff_ms),
                limits: silt_tiering::cleaner::CleanerLimits {
                    offset_map_bytes: usize::try_from(self.log.cleaner_dedupe_buffer_size).unwrap_or(usize::MAX),
                    io_bytes_per_second: (self.log.cleaner_io_max_bytes_per_second > 0).then_some(self.log.cleaner_io_max_bytes_per_second),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_embedded() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.kafka.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:9644");
        assert_eq!(config.storage.data_dir, PathBuf::from("./data"));
        assert!(!config.metrics.per_partition, "per-partition series are opt-in");
    }

    #[test]
    fn the_shipped_config_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/silt.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let config: Config = toml_from(&text);
        config.validate().unwrap();
    }

    #[test]
    fn the_cluster_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cluster.toml");
        let config: Config = toml_from(&std::fs::read_to_string(&path).unwrap());
        config.validate().unwrap();
        let cluster = config.cluster_config().unwrap().expect("a [cluster] section");
        assert_eq!((cluster.node_id, cluster.voters.len()), (1, 3));
    }

    fn toml_from(text: &str) -> Config {
        config::Config::builder().add_source(config::File::from_str(text, config::FileFormat::Toml)).build().unwrap().try_deserialize().unwrap()
    }

    #[test]
    fn group_settings_are_validated() {
        let mut config = Config::default();
        assert_eq!(config.groups.initial_rebalance_delay_ms, 3000);
        assert_eq!(config.groups.offsets_topic_partitions, 50);
        config.groups.max_session_timeout_ms = 10;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("groups.max_session_timeout_ms") && err.contains("10"), "{err}");
        let mut config = Config::default();
        config.groups.offsets_topic_partitions = 0;
        assert!(config.validate().unwrap_err().to_string().contains("groups.offsets_topic_partitions"));
        let mut config = Config::default();
        assert_eq!((config.groups.consumer_heartbeat_interval_ms, config.groups.consumer_session_timeout_ms), (5000, 45000));
        config.groups.consumer_heartbeat_interval_ms = 45000;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("groups.consumer_heartbeat_interval_ms") && err.contains("45000"), "{err}");
        let mut config = Config::default();
        config.groups.consumer_session_timeout_ms = 0;
        assert!(config.validate().unwrap_err().to_string().contains("groups.consumer_session_timeout_ms"));
    }

    fn from_env(vars: &[(&str, &str)]) -> (Result<Config, config::ConfigError>, Vec<String>) {
        let (keys, ignored) = environment_keys(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        (config::Config::builder().add_source(environment(keys)).build().and_then(|c| c.try_deserialize::<Config>()), ignored)
    }

    #[test]
    fn silt_variables_that_are_not_keys_are_ignored_and_named() {
        let (config, ignored) = from_env(&[
            ("SILT_BIN", "/usr/local/bin/silt"),
            ("SILT_HOME", "/opt/silt"),
            ("SILT_VERSION", "0.1.0"),
            ("SILT_KAFKA__LISTEN", "127.0.0.1:19092"),
            ("SILT_STORAGE__DATA_DIR", "/var/lib/silt"),
            ("PATH", "/usr/bin"),
        ]);
        let config = config.unwrap();
        assert_eq!(config.kafka.listen.to_string(), "127.0.0.1:19092");
        assert_eq!(config.storage.data_dir, PathBuf::from("/var/lib/silt"));
        assert_eq!(ignored, ["SILT_BIN", "SILT_HOME", "SILT_VERSION"]);
    }

    #[test]
    fn a_misspelt_key_in_a_known_section_still_fails() {
        let (config, ignored) = from_env(&[("SILT_KAFKA__LISTN", "127.0.0.1:1"), ("SILT_BIN", "silt")]);
        let err = config.unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
        assert_eq!(ignored, ["SILT_BIN"]);
        let (config, _) = from_env(&[("SILT_KAFK__LISTEN", "127.0.0.1:1")]);
        assert!(config.unwrap_err().to_string().contains("kafk"), "an unknown section is refused too");
    }

    #[test]
    fn a_cluster_comes_from_the_environment_and_no_section_is_a_single_node() {
        assert!(Config::default().cluster_config().unwrap().is_none(), "no [cluster] section: the embedded single node");
        let (config, _) = from_env(&[
            ("SILT_NODE__ID", "2"),
            ("SILT_CLUSTER__VOTERS", "1@127.0.0.1:19093,2@127.0.0.1:29093,3@127.0.0.1:39093"),
            ("SILT_CLUSTER__LISTEN", "127.0.0.1:29093"),
            ("SILT_BROKER__RACK", "r2"),
            ("SILT_BROKER__SESSION_TIMEOUT_MS", "6000"),
        ]);
        let config = config.unwrap();
        config.validate().unwrap();
        let cluster = config.cluster_config().unwrap().unwrap();
        assert_eq!(cluster.voters.len(), 3);
        assert_eq!(cluster.voters[2].to_string(), "3@127.0.0.1:39093");
        assert!(cluster.is_controller() && cluster.is_broker(), "both roles by default");
        assert_eq!(config.broker.rack.as_deref(), Some("r2"));
        assert_eq!(config.broker.session_timeout_ms, 6000);
        let (config, _) = from_env(&[("SILT_NODE__ID", "4"), ("SILT_CLUSTER__VOTERS", "1@127.0.0.1:19093"), ("SILT_CLUSTER__ROLES", "broker")]);
        let cluster = config.unwrap().cluster_config().unwrap().unwrap();
        assert!(!cluster.is_controller());
    }

    #[test]
    fn a_cluster_file_section_parses_and_is_checked() {
        let config = toml_from("[node]\nid = 1\n[cluster]\nlisten = \"127.0.0.1:9093\"\nvoters = [\"1@127.0.0.1:9093\", \"2@h:9093\"]\n");
        config.validate().unwrap();
        let config = toml_from("[node]\nid = 5\n[cluster]\nvoters = [\"1@127.0.0.1:9093\"]\n");
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("cluster.voters") && err.contains("node.id"), "{err}");
    }

    #[test]
    fn errors_name_the_key_and_value() {
        let mut config = Config::default();
        config.log.segment_bytes = 10;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("log.segment_bytes") && err.contains("10"), "{err}");
        let unknown = config::Config::builder()
            .add_source(config::File::from_str("[kafka]\nlisten_port = 1\n", config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize::<Config>();
        assert!(unknown.unwrap_err().to_string().contains("listen_port"));
    }
}
