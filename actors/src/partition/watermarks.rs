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
    /// Whether this replica leads, and at which leader epoch (set by the
    /// actor's role, kept by every log snapshot): a fetch handler sees a
    /// follower or a fenced epoch without asking.
    pub leader: bool,
    pub leader_epoch: i32,
}

impl Watermarks {
    /// Whether a consumer's fetch at `fetch_offset` has an answer now: records
    /// below the high watermark, or an error (an offset out of range). An
    /// offset in `[high_watermark, log_end_offset]` has none yet, although the
    /// log may hold records there: they are not committed. Before the log is
    /// open only the actor knows, so the answer is yes (ask it).
    pub fn fetch_would_answer(&self, fetch_offset: i64) -> bool {
        let in_range = fetch_offset >= self.log_start_offset && fetch_offset <= self.log_end_offset;
        !self.open || !in_range || fetch_offset < self.high_watermark
    }

    /// Whether a follower's fetch at `fetch_offset` has an answer now: records
    /// below the log end (a follower reads past the HW), or an error.
    pub fn replica_fetch_would_answer(&self, fetch_offset: i64) -> bool {
        let in_range = fetch_offset >= self.local_log_start_offset && fetch_offset <= self.log_end_offset;
        !self.open || !in_range || fetch_offset < self.log_end_offset
    }

    /// Whether a client-facing request with this view of the leader epoch
    /// must be refused (this replica follows, or the epochs differ): the
    /// actor then answers with the precise error.
    pub fn refuses(&self, current_leader_epoch: Option<i32>) -> bool {
        self.open && (!self.leader || current_leader_epoch.is_some_and(|e| e != self.leader_epoch))
    }

    /// A log snapshot (the role fields are the publisher's to keep).
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
            leader: false,
            leader_epoch: 0,
        }
    }
}

/// Publishes a log snapshot, keeping the role, waking watchers only when it changed.
pub(super) fn publish(sender: &watch::Sender<Watermarks>, marks: Watermarks) {
    sender.send_if_modified(|current| {
        let marks = Watermarks { leader: current.leader, leader_epoch: current.leader_epoch, ..marks };
        let changed = *current != marks;
        *current = marks;
        changed
    });
}

/// Publishes a new role (leadership and leader epoch).
pub(super) fn publish_role(sender: &watch::Sender<Watermarks>, leader: bool, leader_epoch: i32) {
    sender.send_if_modified(|current| {
        let changed = current.leader != leader || current.leader_epoch != leader_epoch;
        current.leader = leader;
        current.leader_epoch = leader_epoch;
        changed
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_has_an_answer_below_the_high_watermark_or_out_of_range_only() {
        let marks = Watermarks { open: true, log_start_offset: 10, high_watermark: 20, log_end_offset: 30, ..Watermarks::default() };
        for offset in [10, 15, 19] {
            assert!(marks.fetch_would_answer(offset), "{offset} is committed");
        }
        for offset in [20, 25, 30] {
            assert!(!marks.fetch_would_answer(offset), "{offset} is not committed: wait, do not read (or spin)");
        }
        for offset in [9, 31] {
            assert!(marks.fetch_would_answer(offset), "{offset} is out of range: an error to answer");
        }
        assert!(Watermarks { open: false, ..marks }.fetch_would_answer(25), "only the actor knows before the log opens");
    }
}
