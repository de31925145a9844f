//! Appends, in mailbox order: written to the page cache on the actor's
//! thread, or on the blocking pool when they may wait for the device, and
//! answered after a group commit when `flush.messages` asks for an fsync.

use std::sync::{Arc, TryLockError};

use actix::prelude::*;
use silt_tiering::{AppendResult, LogError, PartitionLog};
use tokio::sync::oneshot;

use super::{publish, Append, LogFuture, LogState, PartitionActor, RequiredAcks, Watermarks};
use crate::error::Error;
use crate::{now_ms, TopicPartition};

/// The high watermark rule of a partition whose only in-sync replica is this
/// one (every partition of a single node): what the leader has written is
/// committed, so the high watermark moves to the log end, as Kafka's leader
/// does when its ISR is itself. With followers in the ISR the HW is the
/// smallest log end among them instead (`leader.rs`).
pub(super) fn commit_sole_replica(log: &mut PartitionLog) {
    let leo = log.log_end_offset();
    log.set_high_watermark(leo);
}

/// Appends waiting for an fsync (`flush.messages`), and whether one runs.
/// One fsync covers every append written before it started, so appends that
/// arrive while it runs share the next one (group commit).
#[derive(Default)]
pub(super) struct GroupCommit {
    in_flight: bool,
    /// The log end offset each append needs durable, in append order.
    waiters: Vec<(i64, oneshot::Sender<Result<(), Error>>)>,
}

impl Handler<Append> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<AppendResult, Error>>;

    fn handle(&mut self, msg: Append, ctx: &mut Context<Self>) -> Self::Result {
        // With followers in the ISR, acks=all waits for the HW; the sole
        // replica's appends are committed as they are written.
        let wait_for_followers = msg.acks == RequiredAcks::All && !self.is_sole();
        // A panic holding the log lock poisons it; the restart reopens the log.
        let appended = self.guarded(ctx, |act, ctx| act.append(msg, ctx));
        if !wait_for_followers {
            return appended;
        }
        Box::pin(appended.then(|appended, act, _| act.await_commit(appended)))
    }
}

impl PartitionActor {
    /// Appends in mailbox order. The write goes to the page cache on this
    /// thread (a hand-off to the blocking pool and back cost more than the
    /// write). Waiting for the device happens elsewhere: a roll (which fsyncs
    /// the old segment), or an append finding the log held by a read or by
    /// maintenance, runs on the blocking pool while the actor waits, and
    /// an append that `flush.messages` makes wait for an fsync joins the next
    /// group commit while later appends go on.
    pub(super) fn append(&mut self, msg: Append, ctx: &mut Context<Self>) -> LogFuture<AppendResult> {
        if !self.role.is_leader() {
            return Box::pin(actix::fut::ready(Err(self.not_leader())));
        }
        if msg.acks == RequiredAcks::All {
            let required = self.options.min_insync_replicas;
            if self.in_sync_replicas() < required {
                return Box::pin(actix::fut::ready(Err(Error::NotEnoughReplicas { required, available: self.in_sync_replicas() })));
            }
        }
        let LogState::Open(log) = &self.state else {
            return Box::pin(actix::fut::ready(Err(self.unavailable())));
        };
        let log = Arc::clone(log);
        let epoch = self.leader_epoch();
        let mut guard = match log.try_lock() {
            Ok(guard) => guard,
            // A read, or maintenance that may fsync, holds the log on the
            // blocking pool: wait there rather than block this thread.
            Err(TryLockError::WouldBlock) => return self.append_on_blocking_pool(msg, ctx),
            Err(TryLockError::Poisoned(_)) => return Box::pin(actix::fut::ready(Err(self.unavailable()))),
        };
        if guard.append_may_roll(msg.records.len() as u64, now_ms()) {
            // Rolling fsyncs the old segment.
            drop(guard);
            return self.append_on_blocking_pool(msg, ctx);
        }
        let appended = guard.append_buffered(&msg.records, epoch, now_ms());
        let leo = guard.log_end_offset();
        if self.is_sole() {
            commit_sole_replica(&mut guard);
        }
        publish(&self.watermarks, Watermarks::of(&guard));
        let flush_due = guard.flush_due_by_messages();
        drop(guard);
        match appended {
            Ok(result) if flush_due => {
                let (durable, made_durable) = oneshot::channel();
                self.flush.waiters.push((leo, durable));
                self.start_flush(ctx);
                let tp = self.tp.to_string();
                Box::pin(
                    async move {
                        match made_durable.await {
                            Ok(flushed) => flushed.map(|()| result),
                            Err(_) => Err(Error::Unavailable(tp, "the partition restarted before its fsync".into())),
                        }
                    }
                    .into_actor(self),
                )
            }
            done => Box::pin(actix::fut::ready(done.map_err(Error::from))),
        }
    }

    /// Appends on the blocking pool, for appends that may wait for the
    /// device; the actor handles nothing else meanwhile, so appends stay in
    /// mailbox order.
    fn append_on_blocking_pool(&mut self, msg: Append, ctx: &mut Context<Self>) -> LogFuture<AppendResult> {
        let epoch = self.leader_epoch();
        let sole = self.is_sole();
        let (answer, answered) = oneshot::channel();
        let appending = self.with_log(move |log| {
            let result = log.append(&msg.records, epoch, now_ms())?;
            if sole {
                commit_sole_replica(log);
            }
            Ok(result)
        });
        ctx.wait(appending.map(move |result, _, _| {
            let _ = answer.send(result);
        }));
        let tp = self.tp.to_string();
        Box::pin(async move { answered.await.unwrap_or_else(|_| Err(Error::Unavailable(tp, "the partition restarted".into()))) }.into_actor(self))
    }

    /// Starts an fsync covering everything written so far, unless one runs
    /// (it starts the next when done) or nobody waits.
    pub(super) fn start_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flush.in_flight || self.flush.waiters.is_empty() {
            return;
        }
        let LogState::Open(log) = &self.state else {
            let error = self.unavailable();
            self.answer_flush_waiters(i64::MAX, &Err(error));
            return;
        };
        let log = Arc::clone(log);
        let ticket = match log.lock() {
            Ok(guard) => guard.begin_flush().map_err(Error::from),
            Err(_) => Err(self.unavailable()),
        };
        let ticket = match ticket {
            Ok(ticket) => ticket,
            Err(e) => {
                self.answer_flush_waiters(i64::MAX, &Err(e));
                return;
            }
        };
        self.flush.in_flight = true;
        let syncing = tokio::task::spawn_blocking(move || {
            let synced = ticket.sync();
            (ticket, synced)
        });
        ctx.spawn(syncing.into_actor(self).map(move |joined, act, ctx| {
            act.flush.in_flight = false;
            match joined {
                Ok((ticket, Ok(()))) => {
                    if let Ok(mut guard) = log.lock() {
                        guard.finish_flush(&ticket);
                    }
                    act.answer_flush_waiters(ticket.end_offset(), &Ok(()));
                }
                Ok((ticket, Err(e))) => {
                    tracing::error!(topic = %act.tp.topic, partition = act.tp.partition, cause = %e, "fsync failed");
                    act.answer_flush_waiters(ticket.end_offset(), &Err(Error::from(e)));
                }
                Err(join) => {
                    act.crash(ctx, &format!("an fsync panicked: {join}"));
                    return;
                }
            }
            act.start_flush(ctx);
        }));
    }

    /// Answers the appends whose offsets end at or below `covered`.
    pub(super) fn answer_flush_waiters(&mut self, covered: i64, outcome: &Result<(), Error>) {
        let done = self.flush.waiters.iter().take_while(|(end, _)| *end <= covered).count();
        for (_, waiter) in self.flush.waiters.drain(..done) {
            let _ = waiter.send(match outcome {
                Ok(()) => Ok(()),
                Err(e) => Err(same_error(e, &self.tp)),
            });
        }
    }
}

/// A copy of a failed flush's error for each append that waited on it
/// (I/O errors keep their kind, so clients get the same error code).
fn same_error(error: &Error, tp: &TopicPartition) -> Error {
    match error {
        Error::Log(LogError::Io { path, source }) => {
            Error::Log(LogError::Io { path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) })
        }
        Error::Unavailable(partition, reason) => Error::Unavailable(partition.clone(), reason.clone()),
        other => Error::Unavailable(tp.to_string(), other.to_string()),
    }
}
