//! Reads and ListOffsets: answered from the local log, or from the archive
//! below the local log start (decided under the log lock).

use actix::prelude::*;
use silt_tiering::ReadResult;

use super::{CheckedListOffset, CheckedRead, ListOffset, LogFuture, OffsetSpec, PartitionActor, Read};
use crate::error::Error;

/// Where a read is served from, decided under the log lock.
enum ReadPlan {
    Local(ReadResult),
    /// Below the local log start but within the archive: the offsets to answer with.
    Archive(ReadResult),
}

impl Handler<Read> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<ReadResult, Error>>;

    fn handle(&mut self, msg: Read, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |act, _| match act.check_leader(None) {
            Ok(()) => act.read(msg, ReadEnd::HighWatermark),
            Err(e) => Box::pin(actix::fut::ready(Err(e))),
        })
    }
}

impl Handler<CheckedRead> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<ReadResult, Error>>;

    fn handle(&mut self, msg: CheckedRead, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |act, _| match act.check_leader(msg.current_leader_epoch) {
            Ok(()) => act.read(msg.read, ReadEnd::HighWatermark),
            Err(e) => Box::pin(actix::fut::ready(Err(e))),
        })
    }
}

/// How far a read may go: a consumer's to the high watermark, a follower's to the log end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadEnd {
    HighWatermark,
    LogEnd,
}

impl PartitionActor {
    /// Reads whole batches from `msg.offset`, locally or from the archive,
    /// after `before_read` ran on the log (under the same lock).
    pub(super) fn read_with(
        &mut self,
        msg: Read,
        end: ReadEnd,
        before_read: impl FnOnce(&mut silt_tiering::PartitionLog) + Send + 'static,
    ) -> LogFuture<ReadResult> {
        let archive = self.ready_archive();
        let remote = archive.is_some();
        let plan = self.with_log(move |log| {
            before_read(log);
            let offset = msg.offset;
            if remote && offset < log.log_start_offset() && offset >= log.effective_log_start_offset() {
                return Ok(ReadPlan::Archive(ReadResult {
                    records: None,
                    high_watermark: log.high_watermark(),
                    log_start_offset: log.effective_log_start_offset(),
                    log_end_offset: log.log_end_offset(),
                }));
            }
            let until = match end {
                ReadEnd::HighWatermark => log.high_watermark(),
                ReadEnd::LogEnd => log.log_end_offset(),
            };
            let mut read = log.read_until(offset, msg.max_bytes, until)?;
            read.log_start_offset = log.effective_log_start_offset();
            Ok(ReadPlan::Local(read))
        });
        Box::pin(plan.then(move |plan, _, _| {
            actix::fut::wrap_future::<_, Self>(async move {
                match (plan?, archive) {
                    (ReadPlan::Local(read), _) => Ok(read),
                    (ReadPlan::Archive(mut read), Some(part)) => {
                        read.records = part.read(msg.offset, msg.max_bytes).await?;
                        Ok(read)
                    }
                    (ReadPlan::Archive(read), None) => Ok(read),
                }
            })
        }))
    }

    fn read(&mut self, msg: Read, end: ReadEnd) -> LogFuture<ReadResult> {
        self.read_with(msg, end, |_| ())
    }
}

/// What the local log answers to a ListOffsets query, before the archive is asked.
struct LocalOffsets {
    answer: Option<(i64, i64)>,
    local_start: i64,
}

/// The earlier of two `(offset, timestamp)` answers.
fn earliest(a: Option<(i64, i64)>, b: Option<(i64, i64)>) -> Option<(i64, i64)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.0 < x.0 { y } else { x }),
        (x, y) => x.or(y),
    }
}

impl Handler<ListOffset> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<Option<(i64, i64)>, Error>>;

    fn handle(&mut self, msg: ListOffset, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |act, _| act.list_offset(msg.0, None))
    }
}

impl Handler<CheckedListOffset> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<Option<(i64, i64)>, Error>>;

    fn handle(&mut self, msg: CheckedListOffset, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |act, _| act.list_offset(msg.spec, msg.current_leader_epoch))
    }
}

impl PartitionActor {
    /// ListOffsets, on the leader only (as Kafka answers consumers).
    fn list_offset(&mut self, spec: OffsetSpec, current_leader_epoch: Option<i32>) -> LogFuture<Option<(i64, i64)>> {
        if let Err(e) = self.check_leader(current_leader_epoch) {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let archive = self.ready_archive();
        let local = self.with_log(move |log| {
            let answer = match spec {
                OffsetSpec::Earliest => Some((log.effective_log_start_offset(), -1)),
                OffsetSpec::EarliestLocal => Some((log.log_start_offset(), -1)),
                OffsetSpec::Latest => Some((log.high_watermark(), -1)),
                // The last offset in the archive; -1 when nothing is archived.
                OffsetSpec::LatestTiered => Some((log.archived_offset().filter(|&end| end > log.effective_log_start_offset()).map_or(-1, |end| end - 1), -1)),
                OffsetSpec::MaxTimestamp => log.max_timestamp_offset()?,
                OffsetSpec::Timestamp(ts) => log.offset_for_timestamp(ts)?,
            };
            Ok(LocalOffsets { answer, local_start: log.log_start_offset() })
        });
        Box::pin(local.then(move |local, _, _| {
            actix::fut::wrap_future::<_, Self>(async move {
                let local = local?;
                let Some(part) = archive.filter(|p| p.manifest().start_offset().is_some_and(|s| s < local.local_start)) else {
                    return Ok(local.answer);
                };
                Ok(match spec {
                    OffsetSpec::Timestamp(ts) => earliest(local.answer, part.offset_for_timestamp(ts).await?),
                    OffsetSpec::MaxTimestamp => match (local.answer, part.max_timestamp().await?) {
                        (Some(l), Some(r)) => Some(if r.1 > l.1 { r } else { l }),
                        (l, r) => l.or(r),
                    },
                    _ => local.answer,
                })
            })
        }))
    }
}
