//! `silt topic create|list|describe|alter|delete`.

use std::ffi::{CStr, CString};

use clap::Subcommand;
use futures::executor::block_on;
use rdkafka::admin::{AdminClient, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::bindings as rd;

use super::client::{require_topic, Connection, Context};
use super::{parse_key_value, print_table, CliError};

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        #[command(flatten)]
        connection: Connection,
        /// The topic's name.
        topic: String,
        /// Partitions (default: the broker's num.partitions).
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// Replicas of each partition (default: the broker's default).
        #[arg(long, short = 'r')]
        replication_factor: Option<i32>,
        /// A topic config, key=value (repeatable), e.g. --config retention.ms=86400000.
        #[arg(long = "config", short = 'c', value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
        /// Succeed if the topic already exists.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// List topics, one a line.
    List {
        #[command(flatten)]
        connection: Connection,
        /// Include internal topics such as __consumer_offsets.
        #[arg(long)]
        internal: bool,
    },
    /// Show a topic's partitions (leader, replicas, in-sync replicas) and its configs.
    Describe {
        #[command(flatten)]
        connection: Connection,
        /// The topic's name.
        topic: String,
        /// Show every config, not just those set on the topic.
        #[arg(long)]
        all_configs: bool,
    },
    /// Change a topic's configs (IncrementalAlterConfigs) or add partitions.
    Alter {
        #[command(flatten)]
        connection: Connection,
        /// The topic's name.
        topic: String,
        /// Set a config, key=value (repeatable).
        #[arg(long = "set", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// Remove a config override, going back to the broker default (repeatable).
        #[arg(long = "delete")]
        delete: Vec<String>,
        /// Grow the topic to this many partitions (it never shrinks).
        #[arg(long, short = 'p')]
        partitions: Option<usize>,
    },
    /// Delete topics and all their data.
    Delete {
        #[command(flatten)]
        connection: Connection,
        /// The topics to delete.
        #[arg(required = true)]
        topics: Vec<String>,
    },
}

pub fn run(command: TopicCommand) -> Result<(), CliError> {
    match command {
        TopicCommand::Create { connection, topic, partitions, replication_factor, configs, if_not_exists } => {
            if partitions.is_some_and(|p| p < 1) {
                return Err(CliError::BadArgument(format!("--partitions must be at least 1, got {}", partitions.unwrap_or_default())));
            }
            if replication_factor.is_some_and(|r| r < 1) {
                return Err(CliError::BadArgument(format!("--replication-factor must be at least 1, got {}", replication_factor.unwrap_or_default())));
            }
            let admin = connection.admin()?;
            connection.metadata(admin.inner())?;
            let mut new = NewTopic::new(&topic, partitions.unwrap_or(-1), TopicReplication::Fixed(replication_factor.unwrap_or(-1)));
            for (k, v) in &configs {
                new = new.set(k, v);
            }
            let results = block_on(admin.create_topics([&new], &connection.admin_options())).map_err(CliError::kafka(format!("create topic {topic:?}")))?;
            for result in results {
                match result {
                    Ok(name) => println!("created topic {name}"),
                    Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) if if_not_exists => println!("topic {name} already exists"),
                    Err((name, code)) => return Err(CliError::Refused { action: format!("create topic {name:?}"), reason: code.to_string() }),
                }
            }
            Ok(())
        }
        TopicCommand::List { connection, internal } => {
            let admin = connection.admin()?;
            let metadata = connection.metadata(admin.inner())?;
            let mut names: Vec<&str> = metadata.topics().iter().map(|t| t.name()).filter(|n| internal || !n.starts_with("__")).collect();
            names.sort_unstable();
            for name in names {
                println!("{name}");
            }
            Ok(())
        }
        TopicCommand::Describe { connection, topic, all_configs } => describe(&connection, &topic, all_configs),
        TopicCommand::Alter { connection, topic, set, delete, partitions } => {
            if set.is_empty() && delete.is_empty() && partitions.is_none() {
                return Err(CliError::BadArgument("nothing to alter: give --set, --delete or --partitions".into()));
            }
            if let Some((k, _)) = set.iter().find(|(k, _)| delete.contains(k)) {
                return Err(CliError::BadArgument(format!("config {k} is both set and deleted")));
            }
            let admin = connection.admin()?;
            let metadata = connection.metadata(admin.inner())?;
            let current = require_topic(&metadata, &topic)?.partitions().len();
            if let Some(wanted) = partitions {
                if wanted <= current {
                    return Err(CliError::BadArgument(format!("--partitions must be more than the topic's {current} partitions, got {wanted}")));
                }
                let results = block_on(admin.create_partitions([&NewPartitions::new(&topic, wanted)], &connection.admin_options()))
                    .map_err(CliError::kafka(format!("add partitions to {topic:?}")))?;
                for result in results {
                    if let Err((name, code)) = result {
                        return Err(CliError::Refused { action: format!("add partitions to {name:?}"), reason: code.to_string() });
                    }
                }
                println!("topic {topic} now has {wanted} partitions");
            }
            if !set.is_empty() || !delete.is_empty() {
                incremental_alter_configs(&admin, &connection, &topic, &set, &delete)?;
                for (k, v) in &set {
                    println!("set {k}={v} on topic {topic}");
                }
                for k in &delete {
                    println!("removed {k} from topic {topic}");
                }
            }
            Ok(())
        }
        TopicCommand::Delete { connection, topics } => {
            let admin = connection.admin()?;
            let metadata = connection.metadata(admin.inner())?;
            for topic in &topics {
                require_topic(&metadata, topic)?;
            }
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            let results = block_on(admin.delete_topics(&names, &connection.admin_options())).map_err(CliError::kafka("delete topics"))?;
            for result in results {
                match result {
                    Ok(name) => println!("deleted topic {name}"),
                    Err((name, code)) => return Err(CliError::Refused { action: format!("delete topic {name:?}"), reason: code.to_string() }),
                }
            }
            Ok(())
        }
    }
}

fn describe(connection: &Connection, topic: &str, all_configs: bool) -> Result<(), CliError> {
    let admin = connection.admin()?;
    let metadata = connection.metadata(admin.inner())?;
    let described = require_topic(&metadata, topic)?;
    let replication = described.partitions().first().map_or(0, |p| p.replicas().len());
    println!("topic {topic}  partitions {}  replication-factor {replication}", described.partitions().len());
    let ids = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let mut rows = vec![vec!["PARTITION".into(), "LEADER".into(), "REPLICAS".into(), "ISR".into(), "LOG-START".into(), "HIGH-WATERMARK".into()]];
    let mut partitions: Vec<_> = described.partitions().iter().collect();
    partitions.sort_by_key(|p| p.id());
    for p in partitions {
        let (low, high) =
            admin.inner().fetch_watermarks(topic, p.id(), connection.timeout).map_err(CliError::kafka(format!("read the offsets of {topic}/{}", p.id())))?;
        rows.push(vec![p.id().to_string(), p.leader().to_string(), ids(p.replicas()), ids(p.isr()), low.to_string(), high.to_string()]);
    }
    print_table(&rows);
    let results = block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &connection.admin_options()))
        .map_err(CliError::kafka(format!("describe the configs of {topic:?}")))?;
    println!();
    let mut rows = vec![vec!["CONFIG".into(), "VALUE".into(), "SOURCE".into()]];
    for result in results {
        let resource = result.map_err(|code| CliError::Refused { action: format!("describe the configs of {topic:?}"), reason: code.to_string() })?;
        let mut entries: Vec<_> = resource.entries.iter().filter(|e| all_configs || matches!(e.source, ConfigSource::DynamicTopic)).collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for e in entries {
            let value = if e.is_sensitive { "(sensitive)".to_owned() } else { e.value.clone().unwrap_or_default() };
            let source = match e.source {
                ConfigSource::DynamicTopic => "topic",
                ConfigSource::DynamicBroker | ConfigSource::DynamicDefaultBroker | ConfigSource::StaticBroker => "broker",
                ConfigSource::Default => "default",
                ConfigSource::Unknown => "unknown",
            };
            rows.push(vec![e.name.clone(), value, source.into()]);
        }
    }
    if rows.len() == 1 {
        println!("no configs set on the topic (--all-configs shows the defaults)");
    } else {
        print_table(&rows);
    }
    Ok(())
}

/// Owns a librdkafka object and destroys it when dropped.
struct Owned<T>(*mut T, unsafe extern "C" fn(*mut T));

#[allow(unsafe_code, reason = "destroys a librdkafka object through its C destructor")]
impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from the matching librdkafka constructor and is destroyed once.
            unsafe { (self.1)(self.0) }
        }
    }
}

fn c_string(what: &str, s: &str) -> Result<CString, CliError> {
    CString::new(s).map_err(|_| CliError::BadArgument(format!("{what} must not contain a NUL byte: {s:?}")))
}

/// IncrementalAlterConfigs (API 44) on one topic: SET and DELETE operations.
///
/// rdkafka 0.39 only wraps the legacy AlterConfigs (API 33), which replaces a
/// resource's whole config set (overrides not named are removed) and is
/// deprecated in Kafka, so this calls librdkafka's `rd_kafka_IncrementalAlterConfigs`
/// directly. All unsafe code of the CLI is in this function.
#[allow(unsafe_code, reason = "rdkafka 0.39 does not wrap IncrementalAlterConfigs")]
fn incremental_alter_configs(
    admin: &AdminClient<Context>,
    connection: &Connection,
    topic: &str,
    set: &[(String, String)],
    delete: &[String],
) -> Result<(), CliError> {
    let action = format!("alter the configs of topic {topic:?}");
    let rk = admin.inner().native_ptr();
    let name = c_string("a topic name", topic)?;
    let mut ops = Vec::new();
    for (k, v) in set {
        ops.push((c_string("a config name", k)?, Some(c_string("a config value", v)?), rd::rd_kafka_AlterConfigOpType_t::RD_KAFKA_ALTER_CONFIG_OP_TYPE_SET));
    }
    for k in delete {
        ops.push((c_string("a config name", k)?, None, rd::rd_kafka_AlterConfigOpType_t::RD_KAFKA_ALTER_CONFIG_OP_TYPE_DELETE));
    }
    let timeout_ms = i32::try_from(connection.timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: every pointer passed below is either owned by an `Owned` guard that
    // outlives the call, or a NUL-terminated CString that outlives it; results
    // are read before their event is destroyed.
    unsafe {
        let resource =
            Owned(rd::rd_kafka_ConfigResource_new(rd::rd_kafka_ResourceType_t::RD_KAFKA_RESOURCE_TOPIC, name.as_ptr()), rd::rd_kafka_ConfigResource_destroy);
        for (k, v, op) in &ops {
            let error = rd::rd_kafka_ConfigResource_add_incremental_config(resource.0, k.as_ptr(), *op, v.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()));
            if !error.is_null() {
                let reason = CStr::from_ptr(rd::rd_kafka_error_string(error)).to_string_lossy().into_owned();
                rd::rd_kafka_error_destroy(error);
                return Err(CliError::BadArgument(format!("cannot alter {}: {reason}", k.to_string_lossy())));
            }
        }
        let options =
            Owned(rd::rd_kafka_AdminOptions_new(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_INCREMENTALALTERCONFIGS), rd::rd_kafka_AdminOptions_destroy);
        let mut errstr = [0 as std::os::raw::c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(options.0, timeout_ms, errstr.as_mut_ptr(), errstr.len());
        let queue = Owned(rd::rd_kafka_queue_new(rk), rd::rd_kafka_queue_destroy);
        let mut resources = [resource.0];
        rd::rd_kafka_IncrementalAlterConfigs(rk, resources.as_mut_ptr(), 1, options.0, queue.0);
        // The request timeout bounds the answer; wait a little longer for the event itself.
        let event = Owned(rd::rd_kafka_queue_poll(queue.0, timeout_ms.saturating_add(5000)), rd::rd_kafka_event_destroy);
        if event.0.is_null() {
            return Err(CliError::Refused { action, reason: format!("no answer within {:?}", connection.timeout) });
        }
        if rd::rd_kafka_event_error(event.0) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            let reason = CStr::from_ptr(rd::rd_kafka_event_error_string(event.0)).to_string_lossy().into_owned();
            return Err(CliError::Refused { action, reason });
        }
        let result = rd::rd_kafka_event_IncrementalAlterConfigs_result(event.0);
        if result.is_null() {
            return Err(CliError::Refused { action, reason: "librdkafka answered with an unexpected event".into() });
        }
        let mut count = 0usize;
        let answered = rd::rd_kafka_IncrementalAlterConfigs_result_resources(result, &mut count);
        for i in 0..count {
            let r = *answered.add(i);
            if rd::rd_kafka_ConfigResource_error(r) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                let text = rd::rd_kafka_ConfigResource_error_string(r);
                let reason =
                    if text.is_null() { format!("{:?}", rd::rd_kafka_ConfigResource_error(r)) } else { CStr::from_ptr(text).to_string_lossy().into_owned() };
                return Err(CliError::Refused { action, reason });
            }
        }
    }
    Ok(())
}
