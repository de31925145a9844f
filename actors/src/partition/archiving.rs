//! The partition actor's side of tiered storage: loading the manifest,
//! uploading sealed segments one at a time with backoff, telling the log what
//! is archived, and applying retention to the archive. The archive itself
//! (format, manifest, store) lives in `silt_tiering::archive`.
//!
//! Only the partition's leader archives: it opens the manifest at its leader
//! epoch, uploads and applies retention to the archive; the manifest writes
//! are fenced by that epoch, and a refused write (a newer leader wrote)
//! stops this node's archiving until it leads again. A follower only reads
//! the manifest the leader wrote, so that its local retention (which deletes
//! only archived segments) never deletes a segment the archive lacks.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use silt_tiering::archive::{Archive, PartitionArchive, SealedSegment};
use silt_tiering::{ArchiveError, LogConfig};

use super::{LogState, PartitionActor};
use crate::error::Error;
use crate::now_ms;

/// A partition's archiving progress, for metrics. Updated by the actor.
#[derive(Debug)]
pub struct ArchiveStatus {
    /// Bytes and segments sealed locally but not yet archived.
    pub lag_bytes: AtomicU64,
    pub lag_segments: AtomicU64,
    /// Parquet bytes and segments in the archive.
    pub archived_bytes: AtomicU64,
    pub archived_segments: AtomicU64,
    /// One past the last archived offset; -1 until the manifest is loaded.
    pub archived_offset: AtomicI64,
}

impl Default for ArchiveStatus {
    fn default() -> Self {
        ArchiveStatus {
            lag_bytes: AtomicU64::new(0),
            lag_segments: AtomicU64::new(0),
            archived_bytes: AtomicU64::new(0),
            archived_segments: AtomicU64::new(0),
            archived_offset: AtomicI64::new(-1),
        }
    }
}

/// How a partition archives its sealed segments.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    pub archive: Arc<Archive>,
    /// The topic's id, recorded in the manifest.
    pub topic_id: String,
    /// How often the actor looks for sealed segments to upload.
    pub check_interval: Duration,
    /// The longest wait between retries of a failed upload.
    pub retry_backoff_max: Duration,
}

/// The partition's view of the archive.
pub(super) enum ArchiveState {
    /// Not archived (tiering off, or an internal topic).
    Off,
    /// Waiting for the log to open, or for the manifest to (re)load.
    Loading,
    /// This node leads: it writes the archive at its leader epoch.
    Ready(Arc<PartitionArchive>),
    /// This node follows: the leader's manifest, read-only, re-read each check.
    Following(Arc<PartitionArchive>),
    /// A newer leader wrote the manifest: nothing is written until a new role.
    Deposed,
}

/// When the next upload may start: failures back off exponentially.
pub(super) struct UploadSchedule {
    pub(super) in_flight: bool,
    pub(super) not_before: Instant,
    pub(super) backoff: Duration,
}

pub(super) const UPLOAD_BACKOFF_MIN: Duration = Duration::from_millis(200);

impl PartitionActor {
    /// The archive as its writer: only on the leader.
    pub(super) fn ready_archive(&self) -> Option<Arc<PartitionArchive>> {
        match &self.archive {
            ArchiveState::Ready(part) => Some(Arc::clone(part)),
            _ => None,
        }
    }

    /// The archive as last loaded, written by this node or read from the leader's.
    fn known_archive(&self) -> Option<Arc<PartitionArchive>> {
        match &self.archive {
            ArchiveState::Ready(part) | ArchiveState::Following(part) => Some(Arc::clone(part)),
            _ => None,
        }
    }

    /// A new role (or a new leader epoch) reloads the manifest: a new leader
    /// must build on what the previous one wrote.
    pub(super) fn archive_role_changed(&mut self) {
        if !matches!(self.archive, ArchiveState::Off) {
            self.archive = ArchiveState::Loading;
            self.uploads.not_before = Instant::now();
            self.uploads.backoff = UPLOAD_BACKOFF_MIN;
        }
    }

    /// Whether a result started under `epoch` / `leader` still applies.
    fn same_role(&self, epoch: i32, leader: bool) -> bool {
        self.role.leader_epoch() == epoch && self.role.is_leader() == leader
    }

    /// A failed archive step: a fenced write deposes this node's archiving
    /// (unless a new role has already replaced the archive it wrote with),
    /// anything else backs off and retries.
    fn archive_failed(&mut self, ctx: &mut Context<Self>, e: &Error, what: &str, started_as: (i32, bool)) {
        if matches!(e, Error::Archive(ArchiveError::Fenced { .. })) {
            if !self.same_role(started_as.0, started_as.1) {
                return; // started under an older role, which the new one has replaced
            }
            tracing::warn!(topic = %self.tp.topic, partition = self.tp.partition, cause = %e, "a newer leader writes the archive; this node stops archiving the partition until it leads again");
            self.archive = ArchiveState::Deposed;
            return;
        }
        tracing::warn!(topic = %self.tp.topic, partition = self.tp.partition, cause = %e, retry_in_ms = self.uploads.backoff.as_millis() as u64, "{what}; retrying");
        self.back_off_uploads();
        self.sync_archive_bounds(ctx);
    }

    /// Applies `retention.ms` / `retention.bytes` to the archived part.
    pub(super) fn enforce_archive_retention(&mut self, ctx: &mut Context<Self>, local_start: i64, local_bytes: u64, config: &LogConfig) {
        let Some(part) = self.ready_archive() else { return };
        if config.retention_ms.is_none() && config.retention_bytes.is_none() {
            return;
        }
        let (retention_ms, retention_bytes) = (config.retention_ms, config.retention_bytes);
        let (epoch, leader) = (self.role.leader_epoch(), self.role.is_leader());
        let fut = async move { part.enforce_retention(now_ms(), retention_ms, retention_bytes, local_start, local_bytes).await };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| match result {
            Ok(Some(_)) => act.sync_archive_bounds(ctx),
            Ok(None) => {}
            Err(e) => {
                if matches!(e, ArchiveError::Fenced { .. }) && act.same_role(epoch, leader) {
                    act.archive = ArchiveState::Deposed;
                }
                tracing::warn!(topic = %act.tp.topic, partition = act.tp.partition, cause = %e, "archive retention failed");
            }
        }));
    }

    pub(super) fn back_off_uploads(&mut self) {
        let max = self.options.archive.as_ref().map_or(UPLOAD_BACKOFF_MIN, |a| a.retry_backoff_max);
        self.uploads.not_before = Instant::now() + self.uploads.backoff;
        self.uploads.backoff = (self.uploads.backoff * 2).min(max.max(UPLOAD_BACKOFF_MIN));
    }

    /// The archive's periodic step: load the manifest, then upload the oldest
    /// sealed segment not yet archived, one at a time. A failure backs off;
    /// the hot tier is never blocked on the object store.
    pub(super) fn archive_tick(&mut self, ctx: &mut Context<Self>) {
        if self.uploads.in_flight || Instant::now() < self.uploads.not_before || !matches!(self.state, LogState::Open(_)) {
            return;
        }
        let Some(options) = self.options.archive.clone() else { return };
        let (epoch, leader) = (self.role.leader_epoch(), self.role.is_leader());
        match &self.archive {
            ArchiveState::Off | ArchiveState::Deposed => {}
            ArchiveState::Loading | ArchiveState::Following(_) if !leader => self.follow_archive(ctx, options),
            ArchiveState::Following(_) => self.archive_role_changed(),
            ArchiveState::Loading => {
                self.uploads.in_flight = true;
                let (topic, partition) = (self.tp.topic.to_string(), self.tp.partition);
                let fut = async move { options.archive.open_partition(&topic, partition, &options.topic_id, epoch).await };
                ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                    act.uploads.in_flight = false;
                    if !act.same_role(epoch, leader) {
                        return; // the role moved on while loading: the next tick loads again
                    }
                    match result {
                        Ok(part) => {
                            act.uploads.backoff = UPLOAD_BACKOFF_MIN;
                            act.archive = ArchiveState::Ready(part);
                            act.sync_archive_bounds(ctx);
                        }
                        Err(e) => act.archive_failed(ctx, &Error::Archive(e), "cannot load the archive manifest", (epoch, leader)),
                    }
                }));
            }
            ArchiveState::Ready(_) if !leader => self.archive_role_changed(),
            ArchiveState::Ready(part) => {
                let archived_end = part.manifest().end_offset().unwrap_or(i64::MIN);
                if self.watermarks.borrow().sealed_end_offset <= archived_end {
                    return; // nothing sealed past the archive: no need to lock the log
                }
                self.uploads.in_flight = true;
                let part = Arc::clone(part);
                let next = self.with_log(move |log| Ok(log.sealed_segments_from(archived_end).into_iter().next()));
                let upload = next.then(move |candidate: Result<Option<SealedSegment>, Error>, _, _| {
                    actix::fut::wrap_future::<_, Self>(async move {
                        match candidate? {
                            Some(segment) => Ok(part.upload(segment).await?.is_some()),
                            None => Ok(false),
                        }
                    })
                });
                ctx.spawn(upload.map(move |result: Result<bool, Error>, act, ctx| {
                    act.uploads.in_flight = false;
                    match result {
                        Ok(uploaded) => {
                            act.uploads.backoff = UPLOAD_BACKOFF_MIN;
                            act.sync_archive_bounds(ctx);
                            if uploaded {
                                act.archive_tick(ctx); // catch up without waiting for the next tick
                            }
                        }
                        Err(e) => act.archive_failed(ctx, &e, "segment upload failed", (epoch, leader)),
                    }
                }));
            }
        }
    }

    /// A follower's step: re-read the leader's manifest (read-only) and tell
    /// the log what it holds, so that local retention deletes only segments
    /// the leader has archived (KIP-405 likewise lets a follower delete
    /// local segments only once the remote log metadata lists them).
    fn follow_archive(&mut self, ctx: &mut Context<Self>, options: super::ArchiveOptions) {
        self.uploads.in_flight = true;
        let (epoch, topic, partition) = (self.role.leader_epoch(), self.tp.topic.to_string(), self.tp.partition);
        let fut = async move { options.archive.read_partition(&topic, partition).await.map(|part| (part, options.topic_id)) };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.uploads.in_flight = false;
            act.uploads.not_before = Instant::now() + act.options.archive.as_ref().map_or(UPLOAD_BACKOFF_MIN, |a| a.check_interval);
            if !act.same_role(epoch, false) {
                return;
            }
            match result {
                Ok((Some(part), topic_id)) if part.manifest().topic_id == topic_id => {
                    act.archive = ArchiveState::Following(part);
                    act.sync_archive_bounds(ctx);
                }
                Ok(_) => {} // no archive yet (or another topic's): local retention keeps everything
                Err(e) => tracing::debug!(topic = %act.tp.topic, partition = act.tp.partition, cause = %e, "cannot read the leader's archive manifest"),
            }
        }));
    }

    /// Tells the log what the archive holds (local retention may then delete
    /// archived segments, and reads below the local start go to the archive)
    /// and refreshes the archive status for metrics.
    pub(super) fn sync_archive_bounds(&mut self, ctx: &mut Context<Self>) {
        let Some(part) = self.known_archive() else { return };
        let manifest = part.manifest();
        let status = Arc::clone(&self.archive_status);
        status.archived_bytes.store(manifest.size_bytes(), Ordering::Relaxed);
        status.archived_segments.store(manifest.segments.len() as u64, Ordering::Relaxed);
        let (start, end) = (manifest.start_offset(), manifest.end_offset());
        let fut = self.with_log(move |log| {
            let end = end.unwrap_or_else(|| log.log_start_offset());
            log.set_archive_bounds(start, end);
            let waiting = log.sealed_segments_from(end);
            status.lag_bytes.store(waiting.iter().map(|s| s.size).sum(), Ordering::Relaxed);
            status.lag_segments.store(waiting.len() as u64, Ordering::Relaxed);
            status.archived_offset.store(end, Ordering::Relaxed);
            Ok(())
        });
        ctx.spawn(fut.map(|result, act, _| {
            if let Err(e) = result {
                tracing::warn!(topic = %act.tp.topic, partition = act.tp.partition, cause = %e, "could not record the archive's bounds");
            }
        }));
    }
}
