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
//!
//! | module | owns |
//! |---|---|
//! | `mod.rs` | the actor: its state, opening the log, running log operations on the blocking pool, supervision |
//! | `messages.rs` | the domain messages it answers |
//! | `handle.rs` | [`PartitionHandle`]: the address, watermarks and mailbox-depth count others hold |
//! | `watermarks.rs` | [`Watermarks`]: the offsets it publishes |
//! | `append.rs` | appends in mailbox order and group commit (`flush.messages`) |
//! | `read.rs` | reads and ListOffsets, locally or from the archive |
//! | `admin.rs` | DeleteRecords, reconfiguration, close and retire |
//! | `archiving.rs` | uploads to the archive and its retention |
//! | `role.rs` | the role in the replica set (leader or follower) and leader-epoch checks |
//! | `replicas.rs` | the leader's replica-set state: follower LEOs, ISR lag, waiting `acks=all` produces |
//! | `leader.rs` | follower fetches, the high watermark, ISR changes through the controller |
//! | `follower.rs` | appending the leader's batches and truncating a divergent tail |

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use silt_tiering::log::RetentionReport;
use silt_tiering::{LogConfig, PartitionLog};
use tokio::sync::watch;

use crate::error::Error;
use crate::replication::PartitionRole;
use crate::{now_ms, TopicPartition};

mod admin;
mod append;
#[cfg(test)]
mod archive_role_tests;
mod archiving;
mod describe;
mod follower;
mod handle;
mod leader;
mod messages;
mod read;
mod replicas;
#[cfg(test)]
mod replication_tests;
mod role;
#[cfg(test)]
mod tests;
mod watermarks;

use append::GroupCommit;
pub use archiving::{ArchiveOptions, ArchiveStatus};
use archiving::{ArchiveState, UploadSchedule, UPLOAD_BACKOFF_MIN};
pub use describe::{DescribeProducers, EndOffsetForEpoch};
pub use handle::{Counted, PartitionHandle, ResultInner};
pub use messages::{
    Append, AppendAsFollower, CheckedListOffset, CheckedRead, Close, DeleteRecords, FollowerAtLogEnd, GetReplicaPosition, ListOffset, OffsetSpec, Read,
    Reconfigure, ReplicaFetch, ReplicaPosition, RequiredAcks, Retire, StartAt, TruncateTo, TruncateToLeader, Truncation,
};
use replicas::ReplicaSet;
pub use replicas::{IsrChangeCounts, ReplicationOptions, PENDING_ACKS_MAX, REPLICA_LAG_TIME_MAX_DEFAULT};
pub use watermarks::Watermarks;
use watermarks::{publish, publish_role};

/// Messages a partition queues before senders wait (backpressure on producers).
pub const MAILBOX_CAPACITY: usize = 256;

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
    /// The role the partition starts in; [`SetRole`](crate::replication::SetRole) changes it.
    pub role: PartitionRole,
    /// This node's id, the topic's id, the way to the controller and the ISR lag limit.
    pub replication: ReplicationOptions,
    /// The node's log cleaner, which the open log registers with; `None` never cleans.
    pub cleaner: Option<crate::cleaner::CleanerRegistry>,
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
    /// Leader or follower, with the epochs and replica set the metadata gave.
    role: PartitionRole,
    /// The leader's view of its followers and its waiting `acks=all` produces.
    replicas: ReplicaSet,
    /// The most the HW may be by the ISR's followers, as of the latest role
    /// and follower fetch. Log operations on the blocking pool read it under
    /// the log lock, so a HW move never uses a view older than the ISR.
    hw_bound: Arc<AtomicI64>,
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

type LogFuture<T> = Pin<Box<dyn ActorFuture<PartitionActor, Output = Result<T, Error>>>>;

impl PartitionActor {
    pub fn new(
        tp: TopicPartition,
        options: PartitionOptions,
        watermarks: watch::Sender<Watermarks>,
        restarts: Arc<AtomicU64>,
        archive_status: Arc<ArchiveStatus>,
    ) -> Self {
        let role = options.role.clone();
        let mut replicas = ReplicaSet::default();
        replicas.set_role(&role, options.replication.local_broker, true, 0, Instant::now());
        publish_role(&watermarks, role.is_leader(), role.leader_epoch());
        PartitionActor {
            archive: if options.archive.is_some() { ArchiveState::Loading } else { ArchiveState::Off },
            uploads: UploadSchedule { in_flight: false, not_before: Instant::now(), backoff: UPLOAD_BACKOFF_MIN },
            archive_status,
            tp,
            options,
            state: LogState::Opening,
            role,
            replicas,
            hw_bound: Arc::new(AtomicI64::new(i64::MIN)),
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
                // The log reopens at its checkpointed high watermark; as the
                // sole in-sync replica this actor has everything it wrote committed.
                let checkpointed = log.high_watermark();
                if act.is_sole() {
                    append::commit_sole_replica(&mut log);
                }
                let leo = log.log_end_offset();
                tracing::info!(topic = %act.tp.topic, partition = act.tp.partition, log_end_offset = leo, high_watermark_checkpoint = checkpointed,
                    segments = report.segments, validated = report.segments_validated, truncated_bytes = report.truncated_bytes, "partition log open");
                publish(&act.watermarks, Watermarks::of(&log));
                let log = Arc::new(Mutex::new(log));
                if let Some(cleaner) = &act.options.cleaner {
                    cleaner.register(act.tp.clone(), &log);
                }
                act.state = LogState::Open(log);
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
            log.checkpoint_high_watermark()?;
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
        self.refresh_hw_bound();
        self.open_log(ctx);
        ctx.run_interval(self.options.maintenance_interval, |act, ctx| act.maintain(ctx));
        ctx.run_interval(leader::isr_check_interval(self.options.replication.replica_lag_time_max), |act, ctx| act.check_isr(ctx));
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
        let tp = self.tp.to_string();
        self.replicas.fail_pending(|| Error::Unavailable(tp.clone(), "the partition restarted".into()));
    }
}
