//! The log cleaner: one actor per node that compacts the logs of
//! `cleanup.policy=compact` topics (Kafka's `LogCleaner`, with one cleaning thread).
//!
//! Partition actors register their open log ([`CleanerRegistry::register`]);
//! the registry holds it weakly, so a closed or retired log drops out by
//! itself. Every `backoff` the cleaner looks at each log's dirty share
//! (taking its lock only for that), picks the filthiest log that is due, and
//! runs one pass on tokio's blocking pool: the plan under the log's lock, the
//! reading and writing without it (at most `io_max_bytes_per_second`, with an
//! offset map of `dedupe_buffer_bytes`), the swap under the lock again. Each
//! replica cleans its own log, as in Kafka; followers copy the leader's
//! batches, gaps included. A pass that finds the log's segments changed is
//! abandoned; a pass that fails is logged and retried after the backoff.
//!
//! Failure: the cleaner runs under an [`actix::Supervisor`]; a panic in a
//! pass is contained by the blocking pool and reported, never spread to the
//! partitions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix::prelude::*;
use silt_tiering::cleaner::{self, CleanerLimits};
use silt_tiering::log::{discard_cleaning, CleaningNeed};
use silt_tiering::PartitionLog;

use crate::{now_ms, TopicPartition};

/// Logs a pass looks at, at most: a bound on one tick's work.
pub const LOGS_PER_TICK_MAX: usize = 100_000;

/// How the cleaner runs (Kafka's `log.cleaner.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanerOptions {
    /// `log.cleaner.enable`
    pub enabled: bool,
    /// Pause between passes when no log is due (`log.cleaner.backoff.ms`).
    pub backoff: Duration,
    pub limits: CleanerLimits,
}

impl Default for CleanerOptions {
    fn default() -> Self {
        CleanerOptions { enabled: true, backoff: Duration::from_secs(15), limits: CleanerLimits { offset_map_bytes: 128 << 20, io_bytes_per_second: None } }
    }
}

/// Counters the metrics endpoint reads.
#[derive(Debug, Default)]
pub struct CleanerStats {
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub segments_cleaned: AtomicU64,
    pub passes: AtomicU64,
    pub failures: AtomicU64,
    /// Dirty bytes of every compacted log, as of the last look (the cleaner's lag).
    pub dirty_bytes: AtomicU64,
}

/// The open logs the cleaner may clean, held weakly.
#[derive(Debug, Clone, Default)]
pub struct CleanerRegistry {
    logs: Arc<Mutex<HashMap<TopicPartition, Weak<Mutex<PartitionLog>>>>>,
}

impl CleanerRegistry {
    /// Makes `log` visible to the cleaner (again, after a reopen).
    pub fn register(&self, tp: TopicPartition, log: &Arc<Mutex<PartitionLog>>) {
        if let Ok(mut logs) = self.logs.lock() {
            logs.insert(tp, Arc::downgrade(log));
        }
    }

    /// The logs still open, forgetting the others.
    fn live(&self) -> Vec<(TopicPartition, Arc<Mutex<PartitionLog>>)> {
        let Ok(mut logs) = self.logs.lock() else { return Vec::new() };
        logs.retain(|_, weak| weak.strong_count() > 0);
        logs.iter().filter_map(|(tp, weak)| weak.upgrade().map(|log| (tp.clone(), log))).take(LOGS_PER_TICK_MAX).collect()
    }
}

/// The node's log cleaner. See the module docs.
pub struct LogCleaner {
    options: CleanerOptions,
    registry: CleanerRegistry,
    stats: Arc<CleanerStats>,
    busy: bool,
    /// Raised by [`Pause`]: a pass in progress stops at its next batch.
    cancel: Arc<AtomicBool>,
}

impl LogCleaner {
    pub fn new(options: CleanerOptions, registry: CleanerRegistry, stats: Arc<CleanerStats>) -> Self {
        LogCleaner { options, registry, stats, busy: false, cancel: Arc::default() }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy || !self.options.enabled {
            return;
        }
        self.busy = true;
        let (registry, stats, limits, cancel) = (self.registry.clone(), Arc::clone(&self.stats), self.options.limits, Arc::clone(&self.cancel));
        let pass = tokio::task::spawn_blocking(move || clean_filthiest(&registry, &stats, &limits, &cancel));
        ctx.spawn(pass.into_actor(self).map(|joined, act, ctx| {
            act.busy = false;
            match joined {
                // Another log may be due at once: look again without waiting.
                Ok(true) => ctx.notify(Tick),
                Ok(false) => {}
                Err(join) => {
                    act.stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(cause = %join, "a log cleaner pass panicked");
                }
            }
        }));
    }
}

/// Runs one pass over the log that most needs it. Returns whether it cleaned one.
fn clean_filthiest(registry: &CleanerRegistry, stats: &CleanerStats, limits: &CleanerLimits, cancel: &AtomicBool) -> bool {
    let now = now_ms();
    let mut total_dirty = 0u64;
    let mut filthiest: Option<(u64, TopicPartition, Arc<Mutex<PartitionLog>>)> = None;
    for (tp, log) in registry.live() {
        let Ok(guard) = log.lock() else { continue };
        let (need, dirty) = guard.cleaning_need(now);
        drop(guard);
        total_dirty += dirty;
        if need == CleaningNeed::Due && filthiest.as_ref().is_none_or(|(d, _, _)| dirty >= *d) {
            filthiest = Some((dirty, tp, log));
        }
    }
    stats.dirty_bytes.store(total_dirty, Ordering::Relaxed);
    let Some((_, tp, log)) = filthiest else { return false };
    let plan = match log.lock() {
        Ok(guard) => guard.cleaning_plan(now),
        Err(_) => None,
    };
    let Some(plan) = plan else { return false };
    let outcome = match cleaner::clean(&plan, limits, cancel) {
        Ok(outcome) => outcome,
        Err(silt_tiering::LogError::CleaningCancelled) => return false,
        Err(e) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(topic = %tp.topic, partition = tp.partition, cause = %e, "log cleaning failed");
            // What it wrote is left for the next open to remove, or overwritten by the next pass.
            return false;
        }
    };
    stats.bytes_read.fetch_add(outcome.stats.bytes_read, Ordering::Relaxed);
    stats.bytes_written.fetch_add(outcome.stats.bytes_written, Ordering::Relaxed);
    let committed = match log.lock() {
        Ok(mut guard) => guard.commit_cleaning(&plan, &outcome),
        Err(_) => {
            let _ignored = discard_cleaning(&outcome).map_err(|e| tracing::warn!(cause = %e, "cannot remove cleaned files"));
            return false;
        }
    };
    match committed {
        Ok(report) if report.abandoned => {
            tracing::info!(topic = %tp.topic, partition = tp.partition, "log cleaning abandoned: the segments changed meanwhile");
            false
        }
        Ok(report) => {
            stats.passes.fetch_add(1, Ordering::Relaxed);
            stats.segments_cleaned.fetch_add(outcome.stats.segments_cleaned, Ordering::Relaxed);
            tracing::info!(topic = %tp.topic, partition = tp.partition, swapped = report.swapped_groups, cleaned_up_to = outcome.cleaned_up_to,
                records_removed = outcome.stats.records_removed, bytes_read = outcome.stats.bytes_read, bytes_written = outcome.stats.bytes_written, "log cleaned");
            true
        }
        Err(e) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            // A swap that failed half-way is finished when the log next opens.
            tracing::error!(topic = %tp.topic, partition = tp.partition, cause = %e, "swapping cleaned segments failed");
            false
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

/// Stops starting passes (the node is shutting down).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pause;

impl Handler<Pause> for LogCleaner {
    type Result = ();

    fn handle(&mut self, _msg: Pause, _ctx: &mut Context<Self>) {
        self.options.enabled = false;
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl Handler<Tick> for LogCleaner {
    type Result = ();

    fn handle(&mut self, _msg: Tick, ctx: &mut Context<Self>) {
        self.tick(ctx);
    }
}

impl Actor for LogCleaner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // One timer and at most one self-notification outstanding.
        ctx.set_mailbox_capacity(4);
        ctx.run_interval(self.options.backoff, |act, ctx| act.tick(ctx));
    }
}

impl Supervised for LogCleaner {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.busy = false;
    }
}
