//! The partition actor: one partition's log behind domain messages.
//!
//! The actor owns a [`PartitionLog`]. Appends write to the page cache on the
//! actor's own thread (one buffered write per batch, as Kafka's request
//! threads do); everything that waits for the device (fsync, reads, opening,
//! retention, rolling) runs on tokio's blocking pool while the actor keeps
//! its mailbox order: appends are written in the order they arrive; one that
//! `flush.messages` makes wait for an fsync is answered when a group commit
//! covering it finishes, while later appends go on being written. It
//! publishes its [`Watermarks`] on a watch channel, which is how fetch
//! long-polls learn that new data arrived without asking the actor.
//!
//! Failure: a panic, in a handler or in a log operation, stops the actor; its
//! [`actix::Supervisor`] restarts it and `started` reopens the log from disk
//! with full recovery. Other partitions and the node are unaffected.
//!
//! Tiered storage (`archiving.rs`): the actor uploads its sealed segments to
//! the archive and answers reads below the local log start from it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use silt_tiering::log::RetentionReport;
use silt_tiering::{AppendResult, LogConfig, LogError, PartitionLog, ReadResult};
use tokio::sync::{oneshot, watch};

use crate::error::Error;
use crate::{now_ms, TopicPartition};

mod archiving;
mod describe;

pub use archiving::{ArchiveOptions, ArchiveStatus};
use archiving::{ArchiveState, UploadSchedule, UPLOAD_BACKOFF_MIN};
pub use describe::{DescribeProducers, EndOffsetForEpoch};

/// Messages a partition queues before senders wait (backpressure on producers).
pub const MAILBOX_CAPACITY: usize = 256;

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
    fn of(log: &PartitionLog) -> Watermarks {
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
fn publish(sender: &watch::Sender<Watermarks>, marks: Watermarks) {
    sender.send_if_modified(|current| {
        let changed = *current != marks;
        *current = marks;
        changed
    });
}

/// How many replicas must have a write before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequiredAcks {
    /// acks=0: the producer waits for nothing.
    None,
    /// acks=1: the leader has written it.
    Leader,
    /// acks=all: every in-sync replica has it (subject to min.insync.replicas).
    All,
}

/// Append a producer's record batches.
#[derive(Debug, Message)]
#[rtype(result = "Result<AppendResult, Error>")]
pub struct Append {
    pub records: Bytes,
    pub acks: RequiredAcks,
}

/// Read whole batches from `offset`, below the high watermark.
#[derive(Debug, Message)]
#[rtype(result = "Result<ReadResult, Error>")]
pub struct Read {
    pub offset: i64,
    pub max_bytes: usize,
}

/// Which offset a ListOffsets query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    MaxTimestamp,
    /// The first offset whose timestamp is >= this.
    Timestamp(i64),
    EarliestLocal,
    LatestTiered,
}

/// Resolve an [`OffsetSpec`] to `(offset, timestamp)`; `None` when no record matches.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<(i64, i64)>, Error>")]
pub struct ListOffset(pub OffsetSpec);

/// Advance the log start offset (DeleteRecords). Answers the new low watermark.
#[derive(Debug, Message)]
#[rtype(result = "Result<i64, Error>")]
pub struct DeleteRecords {
    pub before_offset: i64,
}

/// Apply new topic configs.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Reconfigure {
    pub log: LogConfig,
    pub min_insync_replicas: i32,
}

/// Flush and close the log for a clean shutdown; the actor then refuses work.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct Close;

/// Close the log for good (its topic is being deleted). Answers the log's directory.
#[derive(Debug, Message)]
#[rtype(result = "Result<PathBuf, Error>")]
pub struct Retire;

/// A partition's address plus its published watermarks.
///
/// Invariant: every message to the actor goes through [`PartitionHandle::ask`]
/// or [`PartitionHandle::tell`] (the address is private), so
/// [`PartitionHandle::mailbox_depth`] counts all of them.
#[derive(Debug, Clone)]
pub struct PartitionHandle {
    pub tp: TopicPartition,
    addr: Addr<PartitionActor>,
    pub watermarks: watch::Receiver<Watermarks>,
    pub archive_status: Arc<ArchiveStatus>,
    mailbox_depth: MailboxDepth,
}

impl PartitionHandle {
    /// A handle on a started actor; its mailbox-depth count starts at 0.
    pub fn new(tp: TopicPartition, addr: Addr<PartitionActor>, watermarks: watch::Receiver<Watermarks>, archive_status: Arc<ArchiveStatus>) -> Self {
        PartitionHandle { tp, addr, watermarks, archive_status, mailbox_depth: MailboxDepth::default() }
    }

    /// The watermarks the actor last published (no message round trip).
    pub fn watermarks(&self) -> Watermarks {
        *self.watermarks.borrow()
    }

    /// Messages sent through this handle (or its clones) and not yet answered.
    pub fn mailbox_depth(&self) -> u64 {
        self.mailbox_depth.get()
    }

    /// Sends a message, folding a dead or restarting actor into [`Error::Unavailable`].
    ///
    /// The message counts in [`PartitionHandle::mailbox_depth`] until its answer
    /// arrives, the send fails, or this future is dropped.
    pub async fn ask<M>(&self, msg: M) -> Result<<M::Result as ResultInner>::Ok, Error>
    where
        M: Message + Send + 'static,
        M::Result: Send + ResultInner,
        PartitionActor: Handler<M>,
    {
        let _queued = self.mailbox_depth.enter();
        match self.addr.send(msg).await {
            Ok(result) => result.into_result(),
            Err(e) => Err(Error::Unavailable(self.tp.to_string(), e.to_string())),
        }
    }

    /// Queues a message without waiting for its answer. A full mailbox or a
    /// stopped actor is an error, never a wait (see [`MAILBOX_CAPACITY`]).
    ///
    /// The message counts in [`PartitionHandle::mailbox_depth`] until the actor's
    /// handler returns, or until it is dropped unhandled.
    pub fn tell<M>(&self, msg: M) -> Result<(), Error>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        PartitionActor: Handler<Counted<M>>,
    {
        let counted = Counted { msg, _queued: self.mailbox_depth.enter() };
        self.addr.try_send(counted).map_err(|e| Error::Unavailable(self.tp.to_string(), e.to_string()))
    }
}

/// How many messages sent to one partition actor are queued or being handled.
///
/// actix does not expose a mailbox's length, so senders count: [`InMailbox`]
/// adds one when a message is sent and takes it away when dropped. Shared by a
/// handle's clones. A cancelled `ask` stops counting at once, although its
/// message may still be in the mailbox: the count is of work someone waits for.
#[derive(Debug, Clone, Default)]
struct MailboxDepth(Arc<AtomicU64>);

impl MailboxDepth {
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn enter(&self) -> InMailbox {
        self.0.fetch_add(1, Ordering::Relaxed);
        InMailbox(Arc::clone(&self.0))
    }
}

/// One message counted in a [`MailboxDepth`]; dropping it uncounts the message,
/// whichever way it ends (answered, failed to send, cancelled, or handled).
#[derive(Debug)]
struct InMailbox(Arc<AtomicU64>);

impl Drop for InMailbox {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A message sent with [`PartitionHandle::tell`], carrying its place in the
/// mailbox-depth count into the actor so that handling it uncounts it.
#[derive(Debug)]
pub struct Counted<M> {
    msg: M,
    _queued: InMailbox,
}

impl<M: Message> Message for Counted<M> {
    type Result = M::Result;
}

// One impl per told message: a blanket `impl<M> Handler<Counted<M>>` sends
// trait resolution into `Counted<Counted<..>>` for every `ask`.
impl Handler<Counted<Reconfigure>> for PartitionActor {
    type Result = ();

    fn handle(&mut self, counted: Counted<Reconfigure>, ctx: &mut Context<Self>) {
        // `_queued` drops when this returns: the message has been handled.
        let Counted { msg, _queued } = counted;
        <PartitionActor as Handler<Reconfigure>>::handle(self, msg, ctx)
    }
}

/// Lets [`PartitionHandle::ask`] flatten `Result<T, Error>` message results.
pub trait ResultInner {
    type Ok;
    fn into_result(self) -> Result<Self::Ok, Error>;
}

impl<T> ResultInner for Result<T, Error> {
    type Ok = T;
    fn into_result(self) -> Result<T, Error> {
        self
    }
}

/// Settings a partition actor starts with.
#[derive(Debug, Clone)]
pub struct PartitionOptions {
    pub dir: PathBuf,
    pub log: LogConfig,
    pub min_insync_replicas: i32,
    /// Whether the node shut down cleanly last time (segments are then trusted).
    pub clean_start: bool,
    /// How often retention, time-based rolling and `flush.ms` are checked.
    pub maintenance_interval: Duration,
    /// Archiving to object storage; `None` keeps the partition local only.
    pub archive: Option<ArchiveOptions>,
}

enum LogState {
    Opening,
    Open(Arc<Mutex<PartitionLog>>),
    Failed(String),
    Closed,
    Retired,
}

/// One partition. See the module docs.
pub struct PartitionActor {
    tp: TopicPartition,
    options: PartitionOptions,
    state: LogState,
    leader_epoch: i32,
    in_sync_replicas: i32,
    maintenance_running: bool,
    /// Published from inside the log lock, so snapshots reach watchers in the
    /// order the log changed (a read finishing after a later append must not
    /// publish its older view over the newer one).
    watermarks: Arc<watch::Sender<Watermarks>>,
    restarts: Arc<AtomicU64>,
    archive: ArchiveState,
    uploads: UploadSchedule,
    archive_status: Arc<ArchiveStatus>,
    flush: GroupCommit,
}

/// Appends waiting for an fsync (`flush.messages`), and whether one runs.
/// One fsync covers every append written before it started, so appends that
/// arrive while it runs share the next one (group commit).
#[derive(Default)]
struct GroupCommit {
    in_flight: bool,
    /// The log end offset each append needs durable, in append order.
    waiters: Vec<(i64, oneshot::Sender<Result<(), Error>>)>,
}

type LogFuture<T> = Pin<Box<dyn ActorFuture<PartitionActor, Output = Result<T, Error>>>>;

impl PartitionActor {
    pub fn new(
        tp: TopicPartition,
        options: PartitionOptions,
        watermarks: watch::Sender<Watermarks>,
        restarts: Arc<AtomicU64>,
        archive_status: Arc<ArchiveStatus>,
    ) -> Self {
        PartitionActor {
            archive: if options.archive.is_some() { ArchiveState::Loading } else { ArchiveState::Off },
            uploads: UploadSchedule { in_flight: false, not_before: Instant::now(), backoff: UPLOAD_BACKOFF_MIN },
            archive_status,
            tp,
            options,
            state: LogState::Opening,
            leader_epoch: 0,
            in_sync_replicas: 1,
            maintenance_running: false,
            watermarks: Arc::new(watermarks),
            restarts,
            flush: GroupCommit::default(),
        }
    }

    fn unavailable(&self) -> Error {
        let reason = match &self.state {
            LogState::Open(_) => "open",
            LogState::Opening => "the log is still opening",
            LogState::Failed(reason) => reason.as_str(),
            LogState::Closed => "the node is shutting down",
            LogState::Retired => return Error::UnknownTopicOrPartition(self.tp.to_string()),
        };
        Error::Unavailable(self.tp.to_string(), reason.to_owned())
    }

    fn open_log(&mut self, ctx: &mut Context<Self>) {
        let dir = self.options.dir.clone();
        let config = self.options.log.clone();
        let clean = self.options.clean_start;
        // Any later open (after a crash of this actor) must not trust the disk state.
        self.options.clean_start = false;
        self.state = LogState::Opening;
        let opening = tokio::task::spawn_blocking(move || PartitionLog::open(&dir, config, clean));
        ctx.wait(opening.into_actor(self).map(|opened, act, _ctx| match opened {
            Ok(Ok((mut log, report))) => {
                let leo = log.log_end_offset();
                log.set_high_watermark(leo);
                tracing::info!(topic = %act.tp.topic, partition = act.tp.partition, log_end_offset = leo,
                    segments = report.segments, validated = report.segments_validated, truncated_bytes = report.truncated_bytes, "partition log open");
                publish(&act.watermarks, Watermarks::of(&log));
                act.state = LogState::Open(Arc::new(Mutex::new(log)));
            }
            Ok(Err(e)) => {
                tracing::error!(topic = %act.tp.topic, partition = act.tp.partition, cause = %e, "partition log failed to open");
                act.state = LogState::Failed(e.to_string());
            }
            Err(join) => {
                tracing::error!(topic = %act.tp.topic, partition = act.tp.partition, cause = %join, "partition log open panicked");
                act.state = LogState::Failed(format!("opening the log panicked: {join}"));
            }
        }));
    }

    /// Stops the actor so that its supervisor restarts it from disk.
    fn crash(&mut self, ctx: &mut Context<Self>, reason: &str) {
        tracing::error!(topic = %self.tp.topic, partition = self.tp.partition, %reason, "partition actor failed; restarting");
        self.state = LogState::Failed(reason.to_owned());
        ctx.stop();
    }

    /// Runs `op` on the log on the blocking pool and publishes the new watermarks.
    fn with_log<T, F>(&mut self, op: F) -> LogFuture<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut PartitionLog) -> Result<T, Error> + Send + 'static,
    {
        let LogState::Open(log) = &self.state else {
            return Box::pin(actix::fut::ready(Err(self.unavailable())));
        };
        let log = Arc::clone(log);
        let watermarks = Arc::clone(&self.watermarks);
        let tp = self.tp.to_string();
        let work = tokio::task::spawn_blocking(move || {
            let mut guard = log.lock().map_err(|_| Error::Unavailable(tp, "the log is recovering from a failure".into()))?;
            let result = op(&mut guard);
            publish(&watermarks, Watermarks::of(&guard));
            Ok::<_, Error>(result)
        });
        Box::pin(work.into_actor(self).map(|joined, act, ctx| match joined {
            Ok(Ok(result)) => result,
            Ok(Err(unavailable)) => Err(unavailable),
            Err(join) => {
                act.crash(ctx, &format!("a log operation panicked: {join}"));
                Err(act.unavailable())
            }
        }))
    }

    /// Runs a handler body, turning a panic into a supervised restart.
    fn guarded<T: 'static>(&mut self, ctx: &mut Context<Self>, body: impl FnOnce(&mut Self, &mut Context<Self>) -> LogFuture<T>) -> LogFuture<T> {
        match catch_unwind(AssertUnwindSafe(|| body(self, &mut *ctx))) {
            Ok(fut) => fut,
            Err(_) => {
                self.crash(ctx, "a handler panicked");
                Box::pin(actix::fut::ready(Err(self.unavailable())))
            }
        }
    }

    fn maintain(&mut self, ctx: &mut Context<Self>) {
        if self.maintenance_running || !matches!(self.state, LogState::Open(_)) {
            return;
        }
        self.maintenance_running = true;
        let fut = self.with_log(|log| {
            let now = now_ms();
            log.roll_if_old(now)?;
            log.flush_if_due(now)?;
            let report = log.enforce_retention(now)?;
            Ok((report, log.log_start_offset(), log.size_bytes(), log.config().clone()))
        });
        ctx.spawn(fut.map(|result: Result<(RetentionReport, i64, u64, LogConfig), Error>, act, ctx| {
            act.maintenance_running = false;
            match result {
                Err(e) => tracing::warn!(topic = %act.tp.topic, partition = act.tp.partition, cause = %e, "partition maintenance failed"),
                Ok((_, local_start, local_bytes, config)) => act.enforce_archive_retention(ctx, local_start, local_bytes, &config),
            }
        }));
    }

    fn close_log(&mut self, next: LogState) -> LogFuture<()> {
        let fut = self.with_log(|log| Ok(log.close(now_ms())?));
        let next = Some(next);
        Box::pin(fut.map(move |result, act, _| {
            let mut next = next;
            act.state = next.take().expect("state set once");
            if result.is_ok() {
                // Closing flushed everything: appends waiting for an fsync are durable.
                act.answer_flush_waiters(i64::MAX, &Ok(()));
            }
            result
        }))
    }
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        self.open_log(ctx);
        ctx.run_interval(self.options.maintenance_interval, |act, ctx| act.maintain(ctx));
        if let Some(archive) = &self.options.archive {
            ctx.run_interval(archive.check_interval, |act, ctx| act.archive_tick(ctx));
        }
    }
}

impl Supervised for PartitionActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.maintenance_running = false;
        self.state = LogState::Opening;
        // The manifest is reloaded too: an upload may have been cut short.
        if self.options.archive.is_some() {
            self.archive = ArchiveState::Loading;
        }
        self.uploads = UploadSchedule { in_flight: false, not_before: Instant::now(), backoff: UPLOAD_BACKOFF_MIN };
        // Appends still waiting for an fsync are answered "unavailable" (their
        // senders drop): the log reopens from disk and they may not be durable.
        self.flush = GroupCommit::default();
    }
}

impl Handler<Append> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<AppendResult, Error>>;

    fn handle(&mut self, msg: Append, ctx: &mut Context<Self>) -> Self::Result {
        // A panic holding the log lock poisons it; the restart reopens the log.
        self.guarded(ctx, |act, ctx| act.append(msg, ctx))
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
    fn append(&mut self, msg: Append, ctx: &mut Context<Self>) -> LogFuture<AppendResult> {
        if msg.acks == RequiredAcks::All {
            let required = self.options.min_insync_replicas;
            if self.in_sync_replicas < required {
                return Box::pin(actix::fut::ready(Err(Error::NotEnoughReplicas { required, available: self.in_sync_replicas })));
            }
        }
        let LogState::Open(log) = &self.state else {
            return Box::pin(actix::fut::ready(Err(self.unavailable())));
        };
        let log = Arc::clone(log);
        let epoch = self.leader_epoch;
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
        guard.set_high_watermark(leo);
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
        let epoch = self.leader_epoch;
        let (answer, answered) = oneshot::channel();
        let appending = self.with_log(move |log| {
            let result = log.append(&msg.records, epoch, now_ms())?;
            // A single replica: what the leader has written is committed.
            let leo = log.log_end_offset();
            log.set_high_watermark(leo);
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
    fn start_flush(&mut self, ctx: &mut Context<Self>) {
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
    fn answer_flush_waiters(&mut self, covered: i64, outcome: &Result<(), Error>) {
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

/// Where a read is served from, decided under the log lock.
enum ReadPlan {
    Local(ReadResult),
    /// Below the local log start but within the archive: the offsets to answer with.
    Archive(ReadResult),
}

impl Handler<Read> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<ReadResult, Error>>;

    fn handle(&mut self, msg: Read, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |act, _| {
            let archive = act.ready_archive();
            let remote = archive.is_some();
            let plan = act.with_log(move |log| {
                let offset = msg.offset;
                if remote && offset < log.log_start_offset() && offset >= log.effective_log_start_offset() {
                    return Ok(ReadPlan::Archive(ReadResult {
                        records: None,
                        high_watermark: log.high_watermark(),
                        log_start_offset: log.effective_log_start_offset(),
                        log_end_offset: log.log_end_offset(),
                    }));
                }
                let mut read = log.read(offset, msg.max_bytes)?;
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
        })
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
        self.guarded(ctx, |act, _| {
            let archive = act.ready_archive();
            let spec = msg.0;
            let local = act.with_log(move |log| {
                let answer = match spec {
                    OffsetSpec::Earliest => Some((log.effective_log_start_offset(), -1)),
                    OffsetSpec::EarliestLocal => Some((log.log_start_offset(), -1)),
                    OffsetSpec::Latest => Some((log.high_watermark(), -1)),
                    // The last offset in the archive; -1 when nothing is archived.
                    OffsetSpec::LatestTiered => {
                        Some((log.archived_offset().filter(|&end| end > log.effective_log_start_offset()).map_or(-1, |end| end - 1), -1))
                    }
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
        })
    }
}

impl Handler<DeleteRecords> for PartitionActor {
    type Result = AtomicResponse<Self, Result<i64, Error>>;

    fn handle(&mut self, msg: DeleteRecords, ctx: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(self.guarded(ctx, |act, _| {
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

/// Test-only fault injection: panic in the handler or inside a log operation.
#[cfg(test)]
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct InjectPanic {
    pub in_log_operation: bool,
}

#[cfg(test)]
impl Handler<InjectPanic> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<(), Error>>;

    fn handle(&mut self, msg: InjectPanic, ctx: &mut Context<Self>) -> Self::Result {
        self.guarded(ctx, |act, _| {
            if msg.in_log_operation {
                act.with_log(|_| panic!("injected fault in a log operation"))
            } else {
                panic!("injected fault in a handler")
            }
        })
    }
}

/// Holds the log on the blocking pool for a while, as a slow read or
/// maintenance would (tests only).
#[cfg(test)]
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct HoldLog(pub Duration);

#[cfg(test)]
impl Handler<HoldLog> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<(), Error>>;

    fn handle(&mut self, msg: HoldLog, _ctx: &mut Context<Self>) -> Self::Result {
        self.with_log(move |_| {
            std::thread::sleep(msg.0);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silt_tiering::batch::BatchHeader;

    /// A minimal valid magic v2 batch with `n` empty-ish records (header only is
    /// validated by the log; records_count must match last_offset_delta + 1).
    fn batch(n: i32) -> Bytes {
        let mut b = vec![0u8; 61];
        b[8..12].copy_from_slice(&(61 - 12i32).to_be_bytes());
        b[16] = 2;
        b[23..27].copy_from_slice(&(n - 1).to_be_bytes());
        b[43..51].copy_from_slice(&(-1i64).to_be_bytes());
        b[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        b[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        b[57..61].copy_from_slice(&n.to_be_bytes());
        let crc = silt_tiering::batch::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }

    fn start(dir: PathBuf, partition: i32, restarts: Arc<AtomicU64>) -> PartitionHandle {
        start_with(dir, partition, restarts, LogConfig::default())
    }

    fn start_with(dir: PathBuf, partition: i32, restarts: Arc<AtomicU64>, log: LogConfig) -> PartitionHandle {
        let tp = TopicPartition { topic: "t".into(), partition };
        let (tx, rx) = watch::channel(Watermarks::default());
        let options = PartitionOptions { dir, log, min_insync_replicas: 1, clean_start: true, maintenance_interval: Duration::from_secs(60), archive: None };
        let tp2 = tp.clone();
        let status = Arc::new(ArchiveStatus::default());
        let status2 = status.clone();
        let addr = Supervisor::start(move |_| PartitionActor::new(tp2, options, tx, restarts, status2));
        PartitionHandle::new(tp, addr, rx, status)
    }

    async fn append(handle: &PartitionHandle, n: i32) -> Result<AppendResult, Error> {
        handle.ask(Append { records: batch(n), acks: RequiredAcks::All }).await
    }

    #[actix_rt::test]
    async fn a_panicking_partition_restarts_from_disk_and_others_keep_serving() {
        let dir = tempfile::tempdir().unwrap();
        let restarts = Arc::new(AtomicU64::new(0));
        let victim = start(dir.path().join("t-0"), 0, restarts.clone());
        let bystander = start(dir.path().join("t-1"), 1, restarts.clone());
        assert_eq!(append(&victim, 3).await.unwrap().base_offset, 0);
        assert_eq!(append(&bystander, 2).await.unwrap().base_offset, 0);

        for in_log_operation in [false, true] {
            let injected = victim.ask(InjectPanic { in_log_operation }).await;
            assert!(matches!(injected, Err(Error::Unavailable(..))), "{injected:?}");
            // The bystander is unaffected while the victim restarts.
            assert!(append(&bystander, 1).await.is_ok());
        }
        // The victim is back, with its data recovered from disk.
        let result = append(&victim, 2).await.unwrap();
        assert_eq!(result.base_offset, 3, "offsets continue after the restart");
        let read = victim.ask(Read { offset: 0, max_bytes: 1 << 20 }).await.unwrap();
        let header = BatchHeader::parse(read.records.as_ref().unwrap()).unwrap();
        assert_eq!(header.base_offset, 0);
        assert_eq!(read.high_watermark, 5);
        assert_eq!(restarts.load(Ordering::Relaxed), 2);
        assert_eq!(victim.watermarks().log_end_offset, 5);
    }

    #[actix_rt::test]
    async fn appends_that_roll_or_flush_keep_offsets_contiguous_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        // Every third batch fills a segment (rolled on the blocking pool);
        // flush.messages=2 makes every other append wait for an fsync.
        let log = LogConfig { segment_bytes: 61 * 3, flush_messages: Some(2), ..LogConfig::default() };
        let handle = start_with(dir.path().join("t-0"), 0, Arc::default(), log.clone());
        let mut next = 0;
        for n in 1..=20 {
            let appended = append(&handle, n).await.unwrap();
            assert_eq!((appended.base_offset, appended.last_offset), (next, next + i64::from(n) - 1));
            next += i64::from(n);
        }
        let marks = handle.watermarks();
        assert_eq!((marks.log_end_offset, marks.high_watermark), (next, next));
        assert!(marks.segments >= 6, "segments rolled: {marks:?}");
        handle.ask(Close).await.unwrap();
        let reopened = start_with(dir.path().join("t-0"), 0, Arc::default(), log);
        let read = reopened.ask(Read { offset: 0, max_bytes: 1 << 20 }).await.unwrap();
        assert_eq!(read.log_end_offset, next);
        assert_eq!(BatchHeader::parse(read.records.as_ref().unwrap()).unwrap().base_offset, 0);
    }

    #[actix_rt::test]
    async fn appends_waiting_for_fsync_share_group_commits_and_are_answered_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogConfig { flush_messages: Some(1), ..LogConfig::default() };
        let handle = start_with(dir.path().join("t-0"), 0, Arc::default(), log);
        const APPENDS: i64 = 64;
        // Sent back to back: later appends are written while earlier ones wait for their fsync.
        let appends = (0..APPENDS).map(|_| append(&handle, 2));
        let answered = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(appends)).await.expect("every append is answered");
        for (i, result) in answered.into_iter().enumerate() {
            let result = result.unwrap_or_else(|e| panic!("append {i}: {e}"));
            assert_eq!(result.base_offset, 2 * i as i64, "appends are written in mailbox order");
        }
        assert_eq!(handle.watermarks().high_watermark, 2 * APPENDS);
    }

    #[actix_rt::test]
    async fn appends_wait_off_thread_while_the_log_is_held_and_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let handle = start(dir.path().join("t-0"), 0, Arc::default());
        assert_eq!(append(&handle, 1).await.unwrap().base_offset, 0, "the log is open");
        const HOLD: Duration = Duration::from_millis(300);
        let started = Instant::now();
        let holder = handle.clone();
        let held = actix_rt::spawn(async move { holder.ask(HoldLog(HOLD)).await });
        actix_rt::time::sleep(Duration::from_millis(50)).await; // the blocking pool holds the log by now
        let appends = futures::future::join_all((0..8).map(|_| append(&handle, 1)));
        // The partition's thread (this test's) stays free: a timer on it fires while the log is held.
        let ticked = async {
            actix_rt::time::sleep(Duration::from_millis(50)).await;
            started.elapsed()
        };
        let (appended, ticked) = futures::future::join(appends, ticked).await;
        held.await.unwrap().unwrap();
        assert!(ticked < HOLD, "the thread was blocked until {ticked:?}");
        for (i, result) in appended.into_iter().enumerate() {
            assert_eq!(result.unwrap().base_offset, 1 + i as i64, "appends are written in mailbox order");
        }
        assert!(started.elapsed() >= HOLD);
    }

    #[actix_rt::test]
    async fn published_watermarks_end_at_the_latest_state_under_concurrent_reads() {
        let dir = tempfile::tempdir().unwrap();
        let handle = start(dir.path().join("t-0"), 0, Arc::default());
        const ROUNDS: usize = 200;
        let appends = (0..ROUNDS).map(|_| append(&handle, 1));
        let reads = (0..ROUNDS).map(|_| handle.ask(Read { offset: 0, max_bytes: 1 << 20 }));
        let (appended, read) = futures::future::join(futures::future::join_all(appends), futures::future::join_all(reads)).await;
        assert!(read.iter().all(Result::is_ok));
        for (i, result) in appended.into_iter().enumerate() {
            // Appends that find the log held by a read wait on the blocking pool; order holds.
            assert_eq!(result.unwrap().base_offset, i as i64, "appends are written in mailbox order");
        }
        let marks = handle.watermarks();
        assert_eq!(marks.high_watermark, ROUNDS as i64, "a read that finished last must not publish an older view");
    }

    #[actix_rt::test]
    async fn watermarks_say_when_the_log_is_not_open_yet() {
        let dir = tempfile::tempdir().unwrap();
        let handle = start(dir.path().join("t-0"), 0, Arc::default());
        // The actor has not run yet on this single-threaded runtime.
        assert!(!handle.watermarks().open, "offsets must not be trusted before the log opens");
        append(&handle, 3).await.unwrap();
        let marks = handle.watermarks();
        assert!(marks.open);
        assert_eq!((marks.high_watermark, marks.log_end_offset), (3, 3));
    }

    #[actix_rt::test]
    async fn mailbox_depth_counts_asks_until_answered_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let handle = start(dir.path().join("t-0"), 0, Arc::default());
        let read = || handle.ask(Read { offset: 0, max_bytes: 1 << 20 });
        // The actor cannot run until this task yields, so polled asks stay queued.
        let mut answered = Box::pin(read());
        let mut dropped = Box::pin(read());
        assert!(futures::poll!(&mut answered).is_pending());
        assert!(futures::poll!(&mut dropped).is_pending());
        assert_eq!(handle.mailbox_depth(), 2, "two asks are waiting");
        drop(dropped);
        assert_eq!(handle.mailbox_depth(), 1, "a cancelled ask stops counting");
        answered.await.unwrap();
        assert_eq!(handle.mailbox_depth(), 0, "an answered ask stops counting");

        handle.tell(Reconfigure { log: LogConfig::default(), min_insync_replicas: 1 }).unwrap();
        assert_eq!(handle.clone().mailbox_depth(), 1, "a told message counts, in every clone of the handle");
        // Mailboxes are FIFO: once this answer arrives the told message was handled.
        read().await.unwrap();
        assert_eq!(handle.mailbox_depth(), 0, "a handled told message stops counting");
    }

    #[actix_rt::test]
    async fn acks_all_respects_min_insync_replicas_and_retire_refuses_work() {
        let dir = tempfile::tempdir().unwrap();
        let handle = start(dir.path().join("t-0"), 0, Arc::default());
        handle.tell(Reconfigure { log: LogConfig::default(), min_insync_replicas: 2 }).unwrap();
        assert!(matches!(append(&handle, 1).await, Err(Error::NotEnoughReplicas { required: 2, available: 1 })));
        let leader_only = handle.ask(Append { records: batch(1), acks: RequiredAcks::Leader }).await;
        assert!(leader_only.is_ok());
        let retired_dir = handle.ask(Retire).await.unwrap();
        assert_eq!(retired_dir, dir.path().join("t-0"));
        let after = handle.ask(Append { records: batch(1), acks: RequiredAcks::Leader }).await;
        assert!(matches!(after, Err(Error::UnknownTopicOrPartition(_))), "{after:?}");
    }
}
