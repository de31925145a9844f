//! The offsets a partition actor publishes on its watch channel, read by
//! fetch long-polls and metrics without a message round trip.

use silt_tiering::PartitionLog;
use tokio::sync::watch;

/// The offsets (and size) of a partition as last published by its actor.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// False until the log has opened (the offsets below are then meaningless):
    /// readers must ask the actor, which answers once the log is open.
    pub open: bool,
    /// The first readable offset, in the archive or on local disk.
    pub log_start_offset: i64,
    /// The first offset on local disk; below it, reads go to the archive.
    pub local_log_start_offset: i64,
    pub high_watermark: i64,
    pub log_end_offset: i64,
    pub size_bytes: u64,
    pub segments: usize,
    /// Offsets below this are in sealed segments (the active segment's base).
    pub sealed_end_offset: i64,
}

impl Watermarks {
    pub(super) fn of(log: &PartitionLog) -> Watermarks {
        Watermarks {
            open: true,
            log_start_offset: log.effective_log_start_offset(),
            local_log_start_offset: log.log_start_offset(),
            high_watermark: log.high_watermark(),
            log_end_offset: log.log_end_offset(),
            size_bytes: log.size_bytes(),
            segments: log.segment_count(),
            sealed_end_offset: log.active_segment_base_offset(),
        }
    }
}

/// Publishes a snapshot, waking watchers only when it changed.
pub(super) fn publish(sender: &watch::Sender<Watermarks>, marks: Watermarks) {
    sender.send_if_modified(|current| {
        let changed = *current != marks;
        *current = marks;
        changed
    });
}
