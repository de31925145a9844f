//! Messages that change a partition other than by appending: DeleteRecords,
//! new topic configs, and closing the log (shutdown) or retiring it (topic
//! deleted).

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;

use super::{Close, DeleteRecords, LogState, PartitionActor, Reconfigure, Retire};
use crate::error::Error;

impl Handler<DeleteRecords> for PartitionActor {
    type Result = AtomicResponse<Self, Result<i64, Error>>;

    fn handle(&mut self, msg: DeleteRecords, ctx: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(self.guarded(ctx, |act, _| {
            if let Err(e) = act.check_leader(None) {
                return Box::pin(actix::fut::ready(Err(e)));
            }
            let archive = act.ready_archive();
            let local = act.with_log(move |log| {
                // -1 means "up to the high watermark", as in Kafka.
                let before = if msg.before_offset == -1 { log.high_watermark() } else { msg.before_offset };
                log.delete_records_before(before)?;
                Ok(before)
            });
            let archived = local.then(move |before, _, _| {
                actix::fut::wrap_future::<_, Self>(async move {
                    let before = before?;
                    if let Some(part) = archive {
                        part.advance_start(before).await?;
                    }
                    Ok::<_, Error>(before)
                })
            });
            Box::pin(archived.then(|before, act: &mut Self, ctx| {
                act.sync_archive_bounds(ctx);
                // Everything below `before` is gone, locally and in the archive.
                act.with_log(move |log| Ok(before?.max(log.effective_log_start_offset())))
            }))
        }))
    }
}

impl Handler<Reconfigure> for PartitionActor {
    type Result = ();

    fn handle(&mut self, msg: Reconfigure, _ctx: &mut Context<Self>) {
        self.options.log = msg.log.clone();
        self.options.min_insync_replicas = msg.min_insync_replicas;
        if let LogState::Open(log) = &self.state {
            let log = Arc::clone(log);
            // A short critical section on the blocking pool: the lock may be held by a write.
            tokio::task::spawn_blocking(move || {
                if let Ok(mut guard) = log.lock() {
                    guard.set_config(msg.log);
                }
            });
        }
    }
}

impl Handler<Close> for PartitionActor {
    type Result = AtomicResponse<Self, Result<(), Error>>;

    fn handle(&mut self, _msg: Close, _ctx: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(self.close_log(LogState::Closed))
    }
}

impl Handler<Retire> for PartitionActor {
    type Result = AtomicResponse<Self, Result<PathBuf, Error>>;

    fn handle(&mut self, _msg: Retire, _ctx: &mut Context<Self>) -> Self::Result {
        let dir = self.options.dir.clone();
        let fut = match self.state {
            LogState::Open(_) => self.close_log(LogState::Retired),
            _ => {
                self.state = LogState::Retired;
                Box::pin(actix::fut::ready(Ok(())))
            }
        };
        AtomicResponse::new(Box::pin(fut.map(move |result, _, _| result.map(|()| dir))))
    }
}
