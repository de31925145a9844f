//! Topic configs under Kafka's names: validation of overrides, resolution
//! against the broker's defaults into a [`LogConfig`], and the description
//! DescribeConfigs reports.

use std::collections::BTreeMap;

use silt_tiering::LogConfig;

use crate::error::Error;

/// Broker-wide defaults that topic overrides fall back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDefaults {
    pub log: LogConfig,
    pub min_insync_replicas: i32,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults { log: LogConfig::default(), min_insync_replicas: 1 }
    }
}

/// The value type of a config, as Kafka's DescribeConfigs reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    Int,
    Long,
    Double,
    String,
    List,
}

/// One config key Silt understands.
#[derive(Debug)]
pub struct ConfigKey {
    pub name: &'static str,
    pub config_type: ConfigType,
    pub doc: &'static str,
}

/// Every topic config Silt accepts. An unknown key is refused, as Kafka does.
pub const KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "cleanup.policy",
        config_type: ConfigType::List,
        doc: "delete removes old segments by retention.ms/retention.bytes; compact keeps the latest record per key; compact,delete does both.",
    },
    ConfigKey {
        name: "compression.type",
        config_type: ConfigType::String,
        doc: "The codec batches are stored with: uncompressed, gzip, snappy, lz4, zstd, or producer (as the producer sent them).",
    },
    ConfigKey { name: "delete.retention.ms", config_type: ConfigType::Long, doc: "How long the cleaner keeps a tombstone after it first cleaned it." },
    ConfigKey { name: "flush.messages", config_type: ConfigType::Long, doc: "fsync the log after this many messages; 1 fsyncs before every acknowledgement." },
    ConfigKey { name: "flush.ms", config_type: ConfigType::Long, doc: "fsync the log when the oldest unflushed write is this many milliseconds old." },
    ConfigKey {
        name: "local.retention.bytes",
        config_type: ConfigType::Long,
        doc: "Delete archived local segments while the local log is larger than this; -2 follows retention.bytes, -1 is unbounded.",
    },
    ConfigKey {
        name: "local.retention.ms",
        config_type: ConfigType::Long,
        doc: "Delete archived local segments older than this; -2 follows retention.ms, -1 is unbounded.",
    },
    ConfigKey { name: "index.interval.bytes", config_type: ConfigType::Int, doc: "Bytes of batches between two offset-index entries." },
    ConfigKey { name: "max.message.bytes", config_type: ConfigType::Int, doc: "The largest record batch accepted, in bytes." },
    ConfigKey {
        name: "message.timestamp.type",
        config_type: ConfigType::String,
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps the broker's clock.",
    },
    ConfigKey {
        name: "max.compaction.lag.ms",
        config_type: ConfigType::Long,
        doc: "A record is compacted at the latest this long after it was written, whatever the dirty ratio.",
    },
    ConfigKey {
        name: "min.cleanable.dirty.ratio",
        config_type: ConfigType::Double,
        doc: "The share of uncleaned bytes at which the cleaner compacts a log (0 to 1).",
    },
    ConfigKey { name: "min.compaction.lag.ms", config_type: ConfigType::Long, doc: "A record stays uncompacted at least this long after it was written." },
    ConfigKey { name: "min.insync.replicas", config_type: ConfigType::Int, doc: "Replicas that must be in sync for an acks=all produce to succeed." },
    ConfigKey {
        name: "remote.storage.enable",
        config_type: ConfigType::Boolean,
        doc: "Archive sealed segments to object storage as Parquet (when the broker has an archive).",
    },
    ConfigKey {
        name: "retention.bytes",
        config_type: ConfigType::Long,
        doc: "Delete the oldest segments while a partition is larger than this; -1 is unbounded.",
    },
    ConfigKey { name: "retention.ms", config_type: ConfigType::Long, doc: "Delete segments whose newest record is older than this; -1 is unbounded." },
    ConfigKey { name: "segment.bytes", config_type: ConfigType::Int, doc: "Roll to a new segment file at this size." },
    ConfigKey { name: "segment.ms", config_type: ConfigType::Long, doc: "Roll to a new segment when the active one is this old." },
];

/// A topic's overrides, by Kafka name. Invariant: every key is in [`KEYS`]
/// and every value parses.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicConfigs(BTreeMap<String, String>);

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig { key: key.to_owned(), value: value.to_owned(), reason: reason.into() }
}

fn parse_i64(key: &str, value: &str, min: i64, max: i64) -> Result<i64, Error> {
    let n: i64 = value.trim().parse().map_err(|_| invalid(key, value, "not an integer"))?;
    if n < min || n > max {
        return Err(invalid(key, value, format!("must be between {min} and {max}")));
    }
    Ok(n)
}

/// `(delete, compact)` from a `cleanup.policy` list; `None` when invalid.
fn parse_cleanup_policy(value: &str) -> Option<(bool, bool)> {
    let (mut delete, mut compact) = (false, false);
    for part in value.split(',').map(str::trim) {
        match part {
            "delete" => delete = true,
            "compact" => compact = true,
            _ => return None,
        }
    }
    (delete || compact).then_some((delete, compact))
}

/// A ratio in `[0, 1]` as parts per million; `None` when invalid.
fn parse_ratio_ppm(value: &str) -> Option<u32> {
    let ratio: f64 = value.trim().parse().ok()?;
    (0.0..=1.0).contains(&ratio).then(|| (ratio * f64::from(silt_tiering::config::PPM)).round() as u32)
}

fn unbounded(n: i64) -> Option<u64> {
    (n >= 0).then_some(n as u64)
}

/// Kafka topic configs Silt knows but cannot honour, so it refuses to set
/// them; deleting one is a no-op, since it is never set. Kafka's
/// `kafka-reassign-partitions --verify` deletes the throttle lists of every
/// reassigned topic whether or not it set them.
const NOT_SETTABLE: &[&str] = &["leader.replication.throttled.replicas", "follower.replication.throttled.replicas"];

/// Checks one key/value pair.
pub fn validate(key: &str, value: &str) -> Result<(), Error> {
    match key {
        _ if NOT_SETTABLE.contains(&key) => Err(invalid(key, value, "replication throttling is not supported")),
        "cleanup.policy" => parse_cleanup_policy(value).map(drop).ok_or_else(|| invalid(key, value, "must be delete, compact, or compact,delete")),
        "compression.type" => match value.trim() {
            "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(()),
            _ => Err(invalid(key, value, "must be one of uncompressed, gzip, snappy, lz4, zstd, producer")),
        },
        "min.cleanable.dirty.ratio" => parse_ratio_ppm(value).map(drop).ok_or_else(|| invalid(key, value, "must be a number between 0 and 1")),
        "min.compaction.lag.ms" | "delete.retention.ms" => parse_i64(key, value, 0, i64::MAX).map(drop),
        "max.compaction.lag.ms" => parse_i64(key, value, 1, i64::MAX).map(drop),
        "message.timestamp.type" => match value.trim() {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err(invalid(key, value, "must be CreateTime or LogAppendTime")),
        },
        "retention.ms" | "retention.bytes" => parse_i64(key, value, -1, i64::MAX).map(drop),
        "local.retention.ms" | "local.retention.bytes" => parse_i64(key, value, -2, i64::MAX).map(drop),
        "remote.storage.enable" => match value.trim() {
            "true" | "false" => Ok(()),
            _ => Err(invalid(key, value, "must be true or false")),
        },
        "segment.bytes" => parse_i64(key, value, 1024, i32::MAX as i64).map(drop),
        "segment.ms" | "flush.messages" => parse_i64(key, value, 1, i64::MAX).map(drop),
        "flush.ms" => parse_i64(key, value, 0, i64::MAX).map(drop),
        "max.message.bytes" | "index.interval.bytes" => parse_i64(key, value, 0, i32::MAX as i64).map(drop),
        "min.insync.replicas" => parse_i64(key, value, 1, i32::MAX as i64).map(drop),
        _ => Err(Error::InvalidConfig { key: key.to_owned(), value: value.to_owned(), reason: "unknown topic config".into() }),
    }
}

impl TopicConfigs {
    /// Builds overrides from key/value pairs, validating each.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<TopicConfigs, Error> {
        let mut configs = TopicConfigs::default();
        for (k, v) in pairs {
            configs.set(k, v)?;
        }
        Ok(configs)
    }

    pub fn set(&mut self, key: &str, value: &str) -> Result<(), Error> {
        validate(key, value)?;
        self.0.insert(key.to_owned(), value.trim().to_owned());
        Ok(())
    }

    pub fn remove(&mut self, key: &str) -> Result<(), Error> {
        if !KEYS.iter().any(|k| k.name == key) && !NOT_SETTABLE.contains(&key) {
            return Err(invalid(key, "", "unknown topic config"));
        }
        self.0.remove(key);
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The overrides, by key.
    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    fn number(&self, key: &str) -> Option<i64> {
        // Values were validated on the way in.
        self.get(key).and_then(|v| v.parse().ok())
    }

    /// The log settings of a partition of this topic.
    pub fn resolve(&self, defaults: &TopicDefaults) -> LogConfig {
        let d = &defaults.log;
        LogConfig {
            segment_bytes: self.number("segment.bytes").map_or(d.segment_bytes, |n| n as u64),
            segment_ms: self.number("segment.ms").map_or(d.segment_ms, |n| n as u64),
            retention_ms: self.number("retention.ms").map_or(d.retention_ms, unbounded),
            retention_bytes: self.number("retention.bytes").map_or(d.retention_bytes, unbounded),
            max_message_bytes: self.number("max.message.bytes").map_or(d.max_message_bytes, |n| n as u64),
            log_append_time: self.get("message.timestamp.type").map_or(d.log_append_time, |v| v == "LogAppendTime"),
            flush_messages: self.number("flush.messages").map_or(d.flush_messages, |n| Some(n as u64)),
            flush_ms: self.number("flush.ms").map_or(d.flush_ms, |n| Some(n as u64)),
            index_interval_bytes: self.number("index.interval.bytes").map_or(d.index_interval_bytes, |n| n as u64),
            archived: self.get("remote.storage.enable").map_or(d.archived, |v| v == "true"),
            local_retention_ms: self.local_limit("local.retention.ms", "retention.ms", d.local_retention_ms, d.retention_ms),
            local_retention_bytes: self.local_limit("local.retention.bytes", "retention.bytes", d.local_retention_bytes, d.retention_bytes),
            compression: self.get("compression.type").map_or(d.compression, silt_tiering::batch::Codec::from_topic_config),
            cleanup_delete: self.get("cleanup.policy").and_then(parse_cleanup_policy).map_or(d.cleanup_delete, |(delete, _)| delete),
            cleanup_compact: self.get("cleanup.policy").and_then(parse_cleanup_policy).map_or(d.cleanup_compact, |(_, compact)| compact),
            min_cleanable_dirty_ratio_ppm: self.get("min.cleanable.dirty.ratio").and_then(parse_ratio_ppm).unwrap_or(d.min_cleanable_dirty_ratio_ppm),
            min_compaction_lag_ms: self.number("min.compaction.lag.ms").map_or(d.min_compaction_lag_ms, |n| n as u64),
            max_compaction_lag_ms: self.number("max.compaction.lag.ms").map_or(d.max_compaction_lag_ms, |n| n as u64),
            delete_retention_ms: self.number("delete.retention.ms").map_or(d.delete_retention_ms, |n| n as u64),
        }
    }

    /// A local retention limit: its own override, or -2 (Kafka's "follow the
    /// total limit"), or the broker default.
    fn local_limit(&self, key: &str, total_key: &str, default: Option<u64>, total_default: Option<u64>) -> Option<u64> {
        match self.number(key) {
            Some(-2) => self.number(total_key).map_or(total_default, unbounded),
            Some(n) => unbounded(n),
            None => default,
        }
    }

    pub fn min_insync_replicas(&self, defaults: &TopicDefaults) -> i32 {
        self.number("min.insync.replicas").map_or(defaults.min_insync_replicas, |n| n as i32)
    }

    /// Every known key with its effective value and whether it is overridden.
    pub fn describe(&self, defaults: &TopicDefaults) -> Vec<DescribedConfig> {
        KEYS.iter()
            .map(|key| {
                let overridden = self.get(key.name);
                DescribedConfig { key, value: overridden.map_or_else(|| default_value(key.name, defaults), str::to_owned), is_default: overridden.is_none() }
            })
            .collect()
    }
}

/// A config's effective value for DescribeConfigs.
#[derive(Debug, Clone)]
pub struct DescribedConfig {
    pub key: &'static ConfigKey,
    pub value: String,
    pub is_default: bool,
}

fn limit(value: Option<u64>) -> String {
    value.map_or("-1".to_owned(), |v| v.to_string())
}

/// The broker default of a topic config, rendered as Kafka renders it.
pub fn default_value(key: &str, defaults: &TopicDefaults) -> String {
    let d = &defaults.log;
    match key {
        "cleanup.policy" => match (d.cleanup_delete, d.cleanup_compact) {
            (true, true) => "compact,delete",
            (false, true) => "compact",
            _ => "delete",
        }
        .into(),
        "compression.type" => match d.compression {
            None => "producer",
            Some(silt_tiering::batch::Codec::None) => "uncompressed",
            Some(silt_tiering::batch::Codec::Gzip) => "gzip",
            Some(silt_tiering::batch::Codec::Snappy) => "snappy",
            Some(silt_tiering::batch::Codec::Lz4) => "lz4",
            Some(silt_tiering::batch::Codec::Zstd) => "zstd",
        }
        .into(),
        "delete.retention.ms" => d.delete_retention_ms.to_string(),
        "max.compaction.lag.ms" => d.max_compaction_lag_ms.to_string(),
        "min.cleanable.dirty.ratio" => (f64::from(d.min_cleanable_dirty_ratio_ppm) / f64::from(silt_tiering::config::PPM)).to_string(),
        "min.compaction.lag.ms" => d.min_compaction_lag_ms.to_string(),
        "flush.messages" => d.flush_messages.map_or(i64::MAX.to_string(), |v| v.to_string()),
        "flush.ms" => d.flush_ms.map_or(i64::MAX.to_string(), |v| v.to_string()),
        "index.interval.bytes" => d.index_interval_bytes.to_string(),
        "local.retention.ms" => limit(d.local_retention_ms),
        "local.retention.bytes" => limit(d.local_retention_bytes),
        "remote.storage.enable" => d.archived.to_string(),
        "max.message.bytes" => d.max_message_bytes.to_string(),
        "message.timestamp.type" => if d.log_append_time { "LogAppendTime" } else { "CreateTime" }.into(),
        "min.insync.replicas" => defaults.min_insync_replicas.to_string(),
        "retention.bytes" => limit(d.retention_bytes),
        "retention.ms" => limit(d.retention_ms),
        "segment.bytes" => d.segment_bytes.to_string(),
        "segment.ms" => d.segment_ms.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_resolve_over_defaults() {
        let configs = TopicConfigs::from_pairs([("retention.ms", "-1"), ("segment.bytes", "4096"), ("message.timestamp.type", "LogAppendTime")]).unwrap();
        let log = configs.resolve(&TopicDefaults::default());
        assert_eq!(log.retention_ms, None);
        assert_eq!(log.segment_bytes, 4096);
        assert!(log.log_append_time);
        assert_eq!(log.max_message_bytes, LogConfig::default().max_message_bytes);
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = TopicConfigs::from_pairs([("retention.ms", "soon")]).unwrap_err();
        assert!(err.to_string().contains("retention.ms"), "{err}");
        assert!(TopicConfigs::from_pairs([("segment.bytes", "10")]).is_err());
        assert!(TopicConfigs::from_pairs([("cleanup.policy", "compact,shred")]).is_err());
        assert!(TopicConfigs::from_pairs([("compression.type", "brotli")]).is_err());
        assert!(TopicConfigs::from_pairs([("min.cleanable.dirty.ratio", "1.5")]).is_err());
        assert!(TopicConfigs::from_pairs([("no.such.key", "1")]).is_err());
    }

    #[test]
    fn compaction_and_compression_configs_resolve() {
        let configs = TopicConfigs::from_pairs([
            ("cleanup.policy", "compact,delete"),
            ("compression.type", "zstd"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.compaction.lag.ms", "5"),
            ("max.compaction.lag.ms", "600"),
            ("delete.retention.ms", "100"),
        ])
        .unwrap();
        let log = configs.resolve(&TopicDefaults::default());
        assert_eq!((log.cleanup_delete, log.cleanup_compact), (true, true));
        assert_eq!(log.compression, Some(silt_tiering::batch::Codec::Zstd));
        assert_eq!(log.min_cleanable_dirty_ratio_ppm, 10_000);
        assert_eq!((log.min_compaction_lag_ms, log.max_compaction_lag_ms, log.delete_retention_ms), (5, 600, 100));
        let compact_only =
            TopicConfigs::from_pairs([("cleanup.policy", "compact"), ("compression.type", "producer")]).unwrap().resolve(&TopicDefaults::default());
        assert_eq!((compact_only.cleanup_delete, compact_only.cleanup_compact, compact_only.compression), (false, true, None));
        let described = TopicDefaults::default();
        assert_eq!(default_value("min.cleanable.dirty.ratio", &described), "0.5");
        assert_eq!(default_value("cleanup.policy", &described), "delete");
    }

    #[test]
    fn describe_marks_defaults() {
        let configs = TopicConfigs::from_pairs([("retention.bytes", "1000")]).unwrap();
        let described = configs.describe(&TopicDefaults::default());
        assert_eq!(described.len(), KEYS.len());
        let rb = described.iter().find(|d| d.key.name == "retention.bytes").unwrap();
        assert_eq!((rb.value.as_str(), rb.is_default), ("1000", false));
        let rm = described.iter().find(|d| d.key.name == "retention.ms").unwrap();
        assert_eq!((rm.value.as_str(), rm.is_default), ("604800000", true));
    }
}
