//! Where the archive's objects live, and moving an archive of the first
//! layout to the current one.
//!
//! A topic's folder `topic=<topic>/` holds Parquet files and nothing else, so
//! that every engine can read it as a table: pyarrow, Polars, DuckDB,
//! DataFusion and Spark given the folder. Polars reads every file under the
//! folder it is given, `_`- and `.`-prefixed ones included, and so does
//! DuckDB's `**` glob; a metadata file anywhere under `topic=<topic>/` breaks
//! them. Silt's own objects therefore live under one separate prefix whose
//! `_` makes the Hive/Spark readers of the whole root skip it:
//!
//! ```text
//! <root>/topic=<topic>/partition=<n>/<base>-<last>.parquet          data
//! <root>/_silt/topic=<topic>/partition=<n>/manifest.json            the manifest
//! <root>/_silt/staging/topic=<topic>/partition=<n>/<base>-<last>.parquet
//!                                       (local folder only: a file being written)
//! ```
//!
//! The local-folder store writes an object to a temporary `<name>#<n>` beside
//! it and renames it into place; a crash mid-write would leave that temporary
//! among the data. Uploads to a local folder therefore write to the staging
//! prefix and rename the finished file into the topic's folder (one rename
//! on the same file system). Object stores (S3, GCS, Azure) make a put
//! visible only whole, so they write in place.
//!
//! **Migration.** The first layout kept `manifest.json` inside the partition
//! folder. A leader opening a partition whose manifest is only there copies it
//! (unchanged, a conditional create) to the new path, then deletes the old
//! one. A crash between the two leaves both; the next leader open finds the
//! new one, checks that the old one holds nothing the new one lacks, and
//! deletes the old one. Read-only opens (followers, `silt replay`) read the
//! new path, else the old, and change nothing.

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::fence::{self, Stored};
use super::manifest::{Manifest, MANIFEST_FILE};
use super::Archive;
use crate::error::ArchiveError;

/// The prefix (under the root) of everything that is not data.
pub const METADATA_DIR: &str = "_silt";
/// Under [`METADATA_DIR`]: files being written to a local-folder store.
const STAGING_DIR: &str = "staging";

fn partition_dir(topic: &str, partition: i32) -> [String; 2] {
    [format!("topic={topic}"), format!("partition={partition}")]
}

/// `<root>/topic=<topic>`: the folder engines read as the topic's table.
pub(super) fn topic_prefix(root: &Path, topic: &str) -> Path {
    root.clone().join(format!("topic={topic}"))
}

/// `<root>/topic=<topic>/partition=<n>`: a partition's Parquet files.
pub(super) fn data_prefix(root: &Path, topic: &str, partition: i32) -> Path {
    partition_dir(topic, partition).into_iter().fold(root.clone(), |p, part| p.join(part))
}

/// `<root>/_silt/topic=<topic>`: the manifests of a topic's partitions.
pub(super) fn metadata_topic_prefix(root: &Path, topic: &str) -> Path {
    root.clone().join(METADATA_DIR).join(format!("topic={topic}"))
}

/// `<root>/_silt/staging/topic=<topic>`: a topic's uploads cut short by a crash.
pub(super) fn staging_topic_prefix(root: &Path, topic: &str) -> Path {
    root.clone().join(METADATA_DIR).join(STAGING_DIR).join(format!("topic={topic}"))
}

/// `<root>/_silt/topic=<topic>/partition=<n>/manifest.json`.
pub(super) fn manifest_path(root: &Path, topic: &str, partition: i32) -> Path {
    partition_dir(topic, partition).into_iter().fold(root.clone().join(METADATA_DIR), |p, part| p.join(part)).join(MANIFEST_FILE)
}

/// Where the first layout kept the manifest: inside the partition's data folder.
pub(super) fn legacy_manifest_path(root: &Path, topic: &str, partition: i32) -> Path {
    data_prefix(root, topic, partition).join(MANIFEST_FILE)
}

/// Where a local-folder upload writes `file` before renaming it into place.
pub(super) fn staging_path(root: &Path, topic: &str, partition: i32, file: &str) -> Path {
    staging_topic_prefix(root, topic).join(format!("partition={partition}")).join(file)
}

/// A partition's manifest as found, and whether it is still at the first
/// layout's path.
pub(super) struct Found {
    pub(super) stored: Stored,
    pub(super) legacy: bool,
}

impl Archive {
    /// Reads a partition's manifest from the current path, else from the
    /// first layout's. `None` when it has neither.
    pub(super) async fn find_manifest(&self, topic: &str, partition: i32) -> Result<Option<Found>, ArchiveError> {
        let current = manifest_path(&self.root, topic, partition);
        if let Some(stored) = self.load_manifest(&current).await? {
            return Ok(Some(Found { stored, legacy: false }));
        }
        if let Some(stored) = self.load_manifest(&legacy_manifest_path(&self.root, topic, partition)).await? {
            return Ok(Some(Found { stored, legacy: true }));
        }
        // A migration may have moved it between the two reads.
        Ok(self.load_manifest(&current).await?.map(|stored| Found { stored, legacy: false }))
    }

    /// Brings a partition's manifest to the current layout for its leader at
    /// `epoch`, who has checked `found`'s topic id: copies a first-layout
    /// manifest to the current path, and deletes the first-layout one once
    /// the current one holds everything it does. Returns the current
    /// manifest; refuses ([`ArchiveError::Fenced`]) one of a newer epoch.
    pub(super) async fn migrate(&self, topic: &str, partition: i32, found: Found, epoch: i32) -> Result<Stored, ArchiveError> {
        let current_path = manifest_path(&self.root, topic, partition);
        let legacy_path = legacy_manifest_path(&self.root, topic, partition);
        let current = if found.legacy {
            fence::check_epoch(&legacy_path, &found.stored.manifest, epoch)?;
            let legacy = found.stored.manifest;
            match self.create(&current_path, &legacy).await? {
                Some(version) => {
                    tracing::info!(from = %legacy_path, to = %current_path, "archive manifest moved to the current layout");
                    Stored { manifest: legacy, version }
                }
                // Another leader migrated it first: take what it wrote.
                None => self.load_manifest(&current_path).await?.ok_or_else(|| ArchiveError::Missing { path: current_path.to_string() })?,
            }
        } else {
            found.stored
        };
        // A deposed leader changes nothing, not even a leftover.
        fence::check_epoch(&current_path, &current.manifest, epoch)?;
        // Both present (a crash after the copy, or a copy by another leader):
        // the old one goes only if it holds nothing the current one lacks.
        if let Some(legacy) = self.load_manifest(&legacy_path).await? {
            let (legacy_end, current_end) = (legacy.manifest.end_offset().unwrap_or(0), current.manifest.end_offset().unwrap_or(0));
            if legacy.manifest.topic_id != current.manifest.topic_id || legacy_end > current_end {
                return Err(ArchiveError::ManifestsDisagree { legacy: legacy_path.to_string(), current: current_path.to_string(), legacy_end, current_end });
            }
            match self.store.delete(&legacy_path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(ArchiveError::store(&legacy_path)(e)),
            }
        }
        Ok(current)
    }

    /// Writes `manifest` at `path` only if nothing is there: the version
    /// written, or `None` when another writer created it first. A store
    /// without conditional creates overwrites (its callers re-read first).
    async fn create(&self, path: &Path, manifest: &Manifest) -> Result<Option<UpdateVersion>, ArchiveError> {
        let payload = PutPayload::from(manifest.to_json());
        let written = match self.store.put_opts(path, payload.clone(), PutOptions::from(PutMode::Create)).await {
            Err(object_store::Error::NotImplemented { .. }) => self.store.put(path, payload).await,
            other => other,
        };
        match written {
            Ok(result) => Ok(Some(UpdateVersion::from(result))),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(None),
            Err(e) => Err(ArchiveError::store(path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::manifest::{file_name, ArchivedSegment};
    use super::super::tests::on_both_stores;
    use super::*;

    fn manifest(segments: i64, epoch: i32) -> Manifest {
        let mut m = Manifest::new("t", 0, "id");
        m.leader_epoch = epoch;
        for n in 0..segments {
            let (base, last) = (n * 10, n * 10 + 9);
            let segment = ArchivedSegment {
                file: file_name(base, last),
                base_offset: base,
                last_offset: last,
                min_timestamp: base,
                max_timestamp: last,
                size_bytes: 1,
                segment_bytes: 1,
                rows: 10,
                archived_at_ms: 0,
            };
            m.push(segment).expect("in order");
        }
        m
    }

    fn put(archive: &Archive, rt: &tokio::runtime::Runtime, path: &Path, m: &Manifest) {
        rt.block_on(archive.store.put(path, PutPayload::from(m.to_json()))).expect("put");
    }

    fn exists(archive: &Archive, rt: &tokio::runtime::Runtime, path: &Path) -> bool {
        match rt.block_on(archive.store.head(path)) {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => panic!("head {path}: {e}"),
        }
    }

    fn paths(archive: &Archive) -> (Path, Path) {
        (manifest_path(&archive.root, "t", 0), legacy_manifest_path(&archive.root, "t", 0))
    }

    #[test]
    fn paths_keep_metadata_out_of_the_topic_folder() {
        let root = Path::from("prefix");
        assert_eq!(data_prefix(&root, "orders", 3).as_ref(), "prefix/topic=orders/partition=3");
        assert_eq!(manifest_path(&root, "orders", 3).as_ref(), "prefix/_silt/topic=orders/partition=3/manifest.json");
        assert_eq!(staging_path(&root, "orders", 3, "f.parquet").as_ref(), "prefix/_silt/staging/topic=orders/partition=3/f.parquet");
        assert_eq!(legacy_manifest_path(&root, "orders", 3).as_ref(), "prefix/topic=orders/partition=3/manifest.json");
        for path in [manifest_path(&root, "orders", 3), staging_path(&root, "orders", 3, "f.parquet")] {
            assert!(!path.as_ref().starts_with(topic_prefix(&root, "orders").as_ref()), "{path}");
        }
    }

    #[test]
    fn an_old_manifest_alone_is_moved_unchanged_by_the_leader_only() {
        on_both_stores(|archive, rt| {
            let (current, legacy) = paths(archive);
            let old = manifest(3, -1);
            put(archive, rt, &legacy, &old);
            // Read-only opens see it where it is and move nothing.
            let read = rt.block_on(archive.read_partition("t", 0)).expect("read").expect("found");
            assert_eq!(*read.manifest(), old);
            assert!(exists(archive, rt, &legacy) && !exists(archive, rt, &current), "a reader changes nothing");

            let part = rt.block_on(archive.open_partition("t", 0, "id", 0)).expect("open as leader");
            assert_eq!(*part.manifest(), old, "nothing lost or added");
            assert!(!exists(archive, rt, &legacy), "the old manifest is gone");
            let moved = rt.block_on(archive.load_manifest(&current)).expect("load").expect("moved");
            assert_eq!(moved.manifest, old);
            // The next write is a conditional update of the moved manifest.
            let mut next = (*part.manifest()).clone();
            next.log_start_offset = 5;
            rt.block_on(part.save(next)).expect("save after the move");
            assert_eq!(rt.block_on(archive.load_manifest(&current)).expect("load").expect("saved").manifest.log_start_offset, 5);
        });
    }

    #[test]
    fn a_new_manifest_alone_is_used_as_it_is() {
        on_both_stores(|archive, rt| {
            let (current, legacy) = paths(archive);
            put(archive, rt, &current, &manifest(2, 0));
            let part = rt.block_on(archive.open_partition("t", 0, "id", 0)).expect("open");
            assert_eq!(*part.manifest(), manifest(2, 0));
            assert!(!exists(archive, rt, &legacy));
        });
    }

    #[test]
    fn a_crash_after_the_copy_leaves_both_and_the_next_open_finishes() {
        on_both_stores(|archive, rt| {
            let (current, legacy) = paths(archive);
            // The copy was written, the old one not yet deleted; since then
            // the new one may even have moved on.
            put(archive, rt, &legacy, &manifest(2, 0));
            put(archive, rt, &current, &manifest(3, 0));
            let read = rt.block_on(archive.read_partition("t", 0)).expect("read").expect("found");
            assert_eq!(read.manifest().segments.len(), 3, "readers prefer the current path");
            let part = rt.block_on(archive.open_partition("t", 0, "id", 0)).expect("open");
            assert_eq!(*part.manifest(), manifest(3, 0));
            assert!(!exists(archive, rt, &legacy), "the leftover is deleted");
        });
    }

    #[test]
    fn a_crash_before_the_copy_is_whole_leaves_the_old_manifest_which_is_moved_again() {
        on_both_stores(|archive, rt| {
            let (current, legacy) = paths(archive);
            put(archive, rt, &legacy, &manifest(2, 0));
            // A half-written copy is never visible at the current path (an
            // object store put is atomic; the local store writes `<name>#<n>`
            // and renames), so the state is "old only": opening moves it.
            let first = rt.block_on(archive.open_partition("t", 0, "id", 0)).expect("open");
            drop(first);
            // Opening again (a restart) changes nothing further.
            let again = rt.block_on(archive.open_partition("t", 0, "id", 0)).expect("reopen");
            assert_eq!(*again.manifest(), manifest(2, 0));
            assert!(exists(archive, rt, &current) && !exists(archive, rt, &legacy));
        });
    }

    #[test]
    fn two_leaders_moving_at_once_keep_one_copy() {
        on_both_stores(|archive, rt| {
            let (current, legacy) = paths(archive);
            put(archive, rt, &legacy, &manifest(2, 0));
            // The other leader's copy lands between this one's read and create.
            let found = rt.block_on(archive.find_manifest("t", 0)).expect("find").expect("found");
            assert!(found.legacy);
            let mut theirs = manifest(3, 1);
            theirs.log_start_offset = 7;
            put(archive, rt, &current, &theirs);
            let got = rt.block_on(archive.migrate("t", 0, found, 1)).expect("migrate");
            assert_eq!(got.manifest, theirs, "the copy already there wins");
            assert!(!exists(archive, rt, &legacy));
        });
    }

    #[test]
    fn an_old_manifest_ahead_of_the_new_one_or_of_a_newer_epoch_is_kept() {
        on_both_stores(|archive, rt| {
            let (current, legacy) = paths(archive);
            put(archive, rt, &legacy, &manifest(3, 0));
            put(archive, rt, &current, &manifest(2, 0));
            let err = rt.block_on(archive.open_partition("t", 0, "id", 0)).expect_err("the old one lists more");
            assert!(matches!(err, ArchiveError::ManifestsDisagree { legacy_end: 30, current_end: 20, .. }), "{err}");
            assert!(exists(archive, rt, &legacy) && exists(archive, rt, &current), "both kept for an operator");
        });
        on_both_stores(|archive, rt| {
            let (current, legacy) = paths(archive);
            put(archive, rt, &legacy, &manifest(1, 5));
            let err = rt.block_on(archive.open_partition("t", 0, "id", 4)).expect_err("fenced");
            assert!(matches!(err, ArchiveError::Fenced { stored: 5, epoch: 4, .. }), "{err}");
            assert!(exists(archive, rt, &legacy) && !exists(archive, rt, &current), "a fenced leader moves nothing");
        });
        on_both_stores(|archive, rt| {
            let (current, legacy) = paths(archive);
            put(archive, rt, &legacy, &manifest(1, 0));
            put(archive, rt, &current, &manifest(2, 5));
            let err = rt.block_on(archive.open_partition("t", 0, "id", 4)).expect_err("fenced");
            assert!(matches!(err, ArchiveError::Fenced { stored: 5, epoch: 4, .. }), "{err}");
            assert!(exists(archive, rt, &legacy), "a fenced leader deletes no leftover either");
        });
    }

    #[test]
    fn partitions_are_listed_at_either_layout_once() {
        on_both_stores(|archive, rt| {
            put(archive, rt, &legacy_manifest_path(&archive.root, "t", 0), &manifest(1, 0));
            put(archive, rt, &manifest_path(&archive.root, "t", 1), &manifest(1, 0));
            put(archive, rt, &legacy_manifest_path(&archive.root, "t", 1), &manifest(1, 0));
            put(archive, rt, &manifest_path(&archive.root, "t", 2), &manifest(1, 0));
            assert_eq!(rt.block_on(archive.list_partitions("t")).expect("list"), vec![0, 1, 2]);
            assert_eq!(rt.block_on(archive.list_partitions("other")).expect("list"), Vec::<i32>::new());
        });
    }

    #[test]
    fn an_old_manifest_of_another_topic_id_is_left_untouched() {
        on_both_stores(|archive: &Arc<Archive>, rt| {
            let (current, legacy) = paths(archive);
            put(archive, rt, &legacy, &manifest(1, 0));
            let err = rt.block_on(archive.open_partition("t", 0, "other-id", 0)).expect_err("foreign");
            assert!(matches!(err, ArchiveError::ForeignManifest { .. }), "{err}");
            assert!(exists(archive, rt, &legacy) && !exists(archive, rt, &current));
        });
    }
}
