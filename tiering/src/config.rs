//! A partition log's settings, in the units the log works in. Kafka-named topic
//! configs are parsed and validated at the edge (`src/`) and arrive here typed.

use crate::batch::Codec;

/// Settings of one partition log. `None` limits are unbounded (Kafka's -1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll the active segment when it would grow past this size (`segment.bytes`).
    pub segment_bytes: u64,
    /// Roll the active segment once its first batch is this old (`segment.ms`).
    pub segment_ms: u64,
    /// Delete whole segments whose newest record is older than this (`retention.ms`).
    pub retention_ms: Option<u64>,
    /// Delete oldest segments while the log is larger than this (`retention.bytes`).
    pub retention_bytes: Option<u64>,
    /// The largest batch accepted (`max.message.bytes`).
    pub max_message_bytes: u64,
    /// Stamp batches with the broker's clock (`message.timestamp.type=LogAppendTime`).
    pub log_append_time: bool,
    /// fsync after this many appended messages (`flush.messages`); `None` leaves it to the OS.
    pub flush_messages: Option<u64>,
    /// fsync when the oldest unflushed write is this old (`flush.ms`); `None` leaves it to the OS.
    pub flush_ms: Option<u64>,
    /// Add an index entry after this many bytes of batches (`index.interval.bytes`).
    pub index_interval_bytes: u64,
    /// Whether sealed segments are archived to object storage (`remote.storage.enable`).
    pub archived: bool,
    /// For archived logs: delete local segments that are archived and older
    /// than this (`local.retention.ms`). Never deletes an unarchived segment.
    pub local_retention_ms: Option<u64>,
    /// For archived logs: delete archived local segments while the local log
    /// is larger than this (`local.retention.bytes`).
    pub local_retention_bytes: Option<u64>,
    /// The codec batches are stored with (`compression.type`); `None`
    /// (`producer`) keeps each producer's codec. The leader recompresses.
    pub compression: Option<Codec>,
    /// `cleanup.policy` contains `delete`: `retention.ms`/`retention.bytes` apply.
    pub cleanup_delete: bool,
    /// `cleanup.policy` contains `compact`: the log cleaner keeps the latest record per key.
    pub cleanup_compact: bool,
    /// `min.cleanable.dirty.ratio` in parts per million (kept integral so the config compares exactly).
    pub min_cleanable_dirty_ratio_ppm: u32,
    /// A record stays uncompacted at least this long (`min.compaction.lag.ms`).
    pub min_compaction_lag_ms: u64,
    /// A record is compacted at the latest this long after it was written (`max.compaction.lag.ms`).
    pub max_compaction_lag_ms: u64,
    /// Tombstones survive this long after the cleaner first saw them (`delete.retention.ms`).
    pub delete_retention_ms: u64,
}

/// One in a million: the unit of [`LogConfig::min_cleanable_dirty_ratio_ppm`].
pub const PPM: u32 = 1_000_000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            max_message_bytes: 1_048_588,
            log_append_time: false,
            flush_messages: None,
            flush_ms: None,
            index_interval_bytes: 4096,
            archived: false,
            local_retention_ms: Some(24 * 3600 * 1000),
            local_retention_bytes: None,
            compression: None,
            cleanup_delete: true,
            cleanup_compact: false,
            min_cleanable_dirty_ratio_ppm: PPM / 2,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX as u64,
            delete_retention_ms: 24 * 3600 * 1000,
        }
    }
}
