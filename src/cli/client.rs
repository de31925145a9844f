//! Connecting to a broker: the shared `--bootstrap-server`/`--timeout` options,
//! the librdkafka client context, and the reachability check every command
//! starts with (librdkafka itself retries an unreachable broker forever).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::Client;
use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message};

use super::{parse_duration, parse_key_value, CliError};

/// How to reach the cluster; shared by every Kafka command.
#[derive(clap::Args, Clone, Debug)]
pub struct Connection {
    /// Kafka bootstrap servers, host:port[,host:port...].
    #[arg(long, short = 'b', default_value = "127.0.0.1:9092", env = "SILT_BOOTSTRAP_SERVER", global = true)]
    pub bootstrap_server: String,
    /// How long to wait for the broker before giving up (500ms, 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration, global = true)]
    pub timeout: Duration,
    /// Extra librdkafka client property, key=value (repeatable), e.g. -X security.protocol=ssl.
    #[arg(long = "property", short = 'X', value_parser = parse_key_value, global = true)]
    pub properties: Vec<(String, String)>,
}

/// Client callbacks: keeps librdkafka's last error (to explain a failure) and
/// counts produce deliveries. librdkafka's own logging is turned off; the
/// command reports what went wrong itself.
#[derive(Default)]
pub struct Context {
    last_error: Mutex<Option<String>>,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl Context {
    /// The most recent client-level error librdkafka reported, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// The first failed delivery's error, if any.
    pub fn first_failure(&self) -> Option<String> {
        self.first_failure.lock().ok().and_then(|e| e.clone())
    }
}

impl ClientContext for Context {
    fn log(&self, _level: RDKafkaLogLevel, _fac: &str, _log_message: &str) {}

    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(if reason.is_empty() { error.to_string() } else { reason.to_owned() });
        }
    }
}

impl ConsumerContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, message)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_failure.lock() {
                    first.get_or_insert_with(|| format!("{error} (topic {}, partition {})", message.topic(), message.partition()));
                }
            }
        }
    }
}

impl Connection {
    /// A client configuration for this cluster, with `extra` settings applied
    /// before the user's `-X` properties (which win).
    pub fn config(&self, extra: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        let timeout_ms = self.timeout.as_millis().max(1).to_string();
        config
            .set("bootstrap.servers", &self.bootstrap_server)
            .set("client.id", "silt-cli")
            .set("socket.connection.setup.timeout.ms", &timeout_ms)
            .set("log.connection.close", "false")
            .set_log_level(RDKafkaLogLevel::Emerg);
        for (k, v) in extra {
            config.set(*k, *v);
        }
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }

    /// Creates a client of kind `T` (admin, consumer, producer).
    pub fn create<T>(&self, extra: &[(&str, &str)]) -> Result<T, CliError>
    where
        T: FromClientConfigAndContext<Context>,
    {
        self.config(extra).create_with_context(Context::default()).map_err(|e| match e {
            KafkaError::ClientConfig(..) | KafkaError::ClientCreation(..) => CliError::BadArgument(format!("invalid client settings: {e}")),
            e => CliError::Kafka { action: "create a Kafka client".into(), source: e },
        })
    }

    /// An admin client.
    pub fn admin(&self) -> Result<AdminClient<Context>, CliError> {
        self.create(&[])
    }

    /// Fetches the metadata of every topic; the first thing each command does,
    /// so an unreachable broker is reported within `--timeout`.
    pub fn metadata(&self, client: &Client<Context>) -> Result<Metadata, CliError> {
        client.fetch_metadata(None, self.timeout).map_err(|e| self.unreachable(client, e))
    }

    /// Explains a failure to talk to the cluster, with librdkafka's last error.
    pub fn unreachable(&self, client: &Client<Context>, error: KafkaError) -> CliError {
        let cause = client.context().last_error().map_or_else(|| error.to_string(), |last| format!("{error} ({last})"));
        CliError::Unreachable { bootstrap: self.bootstrap_server.clone(), timeout: self.timeout, cause }
    }

    /// Admin options bounded by `--timeout`.
    pub fn admin_options(&self) -> rdkafka::admin::AdminOptions {
        rdkafka::admin::AdminOptions::new().request_timeout(Some(self.timeout)).operation_timeout(Some(self.timeout))
    }
}

/// Fails with `UnknownTopic` unless `metadata` lists `topic`.
pub fn require_topic<'m>(metadata: &'m Metadata, topic: &str) -> Result<&'m rdkafka::metadata::MetadataTopic, CliError> {
    metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none()).ok_or_else(|| CliError::UnknownTopic { topic: topic.to_owned() })
}
