//! Fenced manifest writes: a deposed leader never overwrites the manifest of
//! a newer one.
//!
//! Every manifest carries the leader epoch of the node that wrote it. A write
//! by a partition's archive (which knows the epoch it leads in):
//!
//! 1. re-reads the stored manifest and refuses ([`ArchiveError::Fenced`]) when
//!    its epoch is newer than the writer's; when its version (e-tag) is not
//!    the one this writer last read or wrote, another writer got in between:
//!    the stored manifest is adopted and the write refused
//!    ([`ArchiveError::ManifestChanged`]) so that the caller retries on it;
//! 2. writes conditionally: `PutMode::Create` when there was no manifest,
//!    `PutMode::Update` with the version it read otherwise, so a writer that
//!    slips in between the re-read and the write makes this one fail the same
//!    way. Stores without conditional updates (the local-folder store)
//!    answer `NotImplemented`; the write then overwrites, and step 1 alone
//!    keeps the invariant up to the short window between re-read and write.

use std::sync::atomic::Ordering;

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::manifest::Manifest;
use super::{Archive, PartitionArchive};
use crate::error::ArchiveError;

/// A manifest as stored, with the version a conditional write names.
pub(super) struct Stored {
    pub(super) manifest: Manifest,
    pub(super) version: UpdateVersion,
}

impl Archive {
    /// Reads the manifest at `path` and its version; `None` when there is none.
    pub(super) async fn load_manifest(&self, path: &Path) -> Result<Option<Stored>, ArchiveError> {
        match self.store.get(path).await {
            Ok(got) => {
                let version = UpdateVersion { e_tag: got.meta.e_tag.clone(), version: got.meta.version.clone() };
                let bytes = got.bytes().await.map_err(ArchiveError::store(path))?;
                let manifest = Manifest::from_json(&bytes).map_err(|reason| ArchiveError::CorruptManifest { path: path.to_string(), reason })?;
                Ok(Some(Stored { manifest, version }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(ArchiveError::store(path)(e)),
        }
    }
}

/// Refuses a stored manifest written by a newer leader than `epoch`.
pub(super) fn check_epoch(path: &Path, stored: &Manifest, epoch: i32) -> Result<(), ArchiveError> {
    if stored.leader_epoch > epoch {
        return Err(ArchiveError::Fenced { path: path.to_string(), stored: stored.leader_epoch, epoch });
    }
    Ok(())
}

impl PartitionArchive {
    fn manifest_path(&self) -> Path {
        self.manifest_path.clone()
    }

    fn stored_version(&self) -> Option<UpdateVersion> {
        self.version.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn publish(&self, manifest: Manifest, version: Option<UpdateVersion>) {
        *self.version.lock().unwrap_or_else(|p| p.into_inner()) = version;
        *self.manifest.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(manifest);
    }

    /// Takes the manifest another writer stored (or its absence) as the new
    /// base and says why this write was refused.
    fn adopt(&self, stored: Option<Stored>, epoch: i32) -> ArchiveError {
        let path = self.manifest_path();
        let Some(stored) = stored else {
            // Removed under us: the next write creates it again.
            *self.version.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return ArchiveError::ManifestChanged { path: path.to_string(), stored: -1 };
        };
        if let Err(fenced) = check_epoch(&path, &stored.manifest, epoch) {
            return fenced;
        }
        if stored.manifest.topic_id != self.manifest().topic_id {
            return ArchiveError::ForeignManifest { path: path.to_string(), found: stored.manifest.topic_id, expected: self.manifest().topic_id.clone() };
        }
        let stored_epoch = stored.manifest.leader_epoch;
        self.publish(stored.manifest, Some(stored.version));
        ArchiveError::ManifestChanged { path: path.to_string(), stored: stored_epoch }
    }

    /// Writes `next` as the manifest, fenced by this writer's leader epoch,
    /// then publishes it to readers. Callers hold `writer`.
    pub(super) async fn save(&self, mut next: Manifest) -> Result<(), ArchiveError> {
        let path = self.manifest_path();
        let Some(epoch) = self.epoch else { return Err(ArchiveError::ReadOnly { path: path.to_string() }) };
        let expected = self.stored_version();
        let stored = self.archive.load_manifest(&self.manifest_path).await?;
        let unchanged = match (&stored, &expected) {
            (Some(s), Some(v)) => s.version == *v && s.manifest.leader_epoch <= epoch,
            (None, None) => true,
            _ => false,
        };
        if !unchanged {
            return Err(self.adopt(stored, epoch));
        }
        next.leader_epoch = epoch;
        let payload = PutPayload::from(next.to_json());
        let updates = !self.archive.no_conditional_updates.load(Ordering::Relaxed);
        let mode = match expected {
            None => PutMode::Create,
            Some(v) if updates => PutMode::Update(v),
            Some(_) => PutMode::Overwrite,
        };
        let conditional = !matches!(mode, PutMode::Overwrite);
        let written = match self.archive.store.put_opts(&path, payload.clone(), PutOptions::from(mode)).await {
            Err(object_store::Error::NotImplemented { .. }) if conditional => {
                // The store has no conditional writes (of this kind): the re-read above is the fence.
                if updates {
                    self.archive.no_conditional_updates.store(true, Ordering::Relaxed);
                    tracing::info!(url = %self.archive.url(), "the archive store has no conditional updates; manifest writes are fenced by re-reading only");
                }
                self.archive.store.put(&path, payload).await
            }
            other => other,
        };
        match written {
            Ok(result) => {
                self.publish(next, Some(UpdateVersion::from(result)));
                Ok(())
            }
            Err(object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }) => {
                let stored = self.archive.load_manifest(&self.manifest_path).await?;
                Err(self.adopt(stored, epoch))
            }
            Err(e) => Err(ArchiveError::store(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{on_both_stores, open};
    use super::*;

    fn with_start(part: &PartitionArchive, start: i64) -> Manifest {
        let mut next = (*part.manifest()).clone();
        next.log_start_offset = start;
        next
    }

    #[test]
    fn a_deposed_leader_cannot_overwrite_a_newer_manifest() {
        on_both_stores(|archive, rt| {
            let old = rt.block_on(archive.open_partition("t", 0, "id", 1)).expect("open at epoch 1");
            rt.block_on(old.save(with_start(&old, 10))).expect("the first write creates the manifest");
            let new = rt.block_on(archive.open_partition("t", 0, "id", 2)).expect("open at epoch 2");
            assert_eq!(new.manifest().log_start_offset, 10, "the new leader reloads what the old one wrote");
            rt.block_on(new.save(with_start(&new, 20))).expect("the new leader writes");

            let err = rt.block_on(old.save(with_start(&old, 30))).expect_err("the deposed leader is fenced");
            assert!(matches!(err, ArchiveError::Fenced { stored: 2, epoch: 1, .. }), "{err}");
            let err = rt.block_on(archive.open_partition("t", 0, "id", 1)).expect_err("an older epoch cannot open it as leader");
            assert!(matches!(err, ArchiveError::Fenced { .. }), "{err}");

            let stored = rt.block_on(archive.read_partition("t", 0)).expect("read").expect("a manifest");
            assert_eq!((stored.manifest().leader_epoch, stored.manifest().log_start_offset), (2, 20));
            let err = rt.block_on(stored.save(with_start(&stored, 40))).expect_err("read-only");
            assert!(matches!(err, ArchiveError::ReadOnly { .. }), "{err}");
        });
    }

    #[test]
    fn a_concurrent_write_is_detected_and_the_write_retried_on_the_new_manifest() {
        on_both_stores(|archive, rt| {
            let a = rt.block_on(archive.open_partition("t", 1, "id", 3)).expect("open a");
            let b = rt.block_on(archive.open_partition("t", 1, "id", 3)).expect("open b");
            rt.block_on(a.save(with_start(&a, 5))).expect("a creates the manifest");
            // b expected no manifest: its create is refused and it adopts a's.
            let err = rt.block_on(b.save(with_start(&b, 7))).expect_err("b raced a");
            assert!(matches!(err, ArchiveError::ManifestChanged { stored: 3, .. }), "{err}");
            assert_eq!(b.manifest().log_start_offset, 5, "b reloaded a's manifest");
            rt.block_on(b.save(with_start(&b, 7))).expect("b's retry succeeds");
            // Now a's version is stale: its update is refused the same way.
            let err = rt.block_on(a.save(with_start(&a, 9))).expect_err("a raced b");
            assert!(matches!(err, ArchiveError::ManifestChanged { .. }), "{err}");
            assert_eq!(a.manifest().log_start_offset, 7);
        });
    }

    #[test]
    fn the_in_memory_store_refuses_a_stale_conditional_update() {
        // The second line of defence on its own: a conditional put naming a
        // version that is no longer stored fails, whatever the re-read saw.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let archive = open("memory:///", &runtime);
        let path = Path::from("m.json");
        let first = runtime.block_on(archive.store.put_opts(&path, PutPayload::from_static(b"1"), PutMode::Create.into())).expect("create");
        let stale = UpdateVersion::from(first);
        runtime.block_on(archive.store.put_opts(&path, PutPayload::from_static(b"2"), PutMode::Update(stale.clone()).into())).expect("update");
        let err = runtime.block_on(archive.store.put_opts(&path, PutPayload::from_static(b"3"), PutMode::Update(stale).into())).expect_err("stale");
        assert!(matches!(err, object_store::Error::Precondition { .. }), "{err}");
    }
}
