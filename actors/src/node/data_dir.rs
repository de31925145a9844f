//! The data directory at start: its lock, its identity (`meta.properties`),
//! the clean-shutdown marker, leftovers of interrupted deletions, and the
//! legacy `catalog.json` if this directory predates the metadata log.

use std::fs::File;

use super::{NodeOptions, CLEAN_SHUTDOWN_FILE, DELETED_SUFFIX, LOCK_FILE};
use crate::catalog::{self, CatalogState};
use crate::error::{Error, MetadataError};
use crate::meta_properties;

/// What [`prepare`] found.
pub(super) struct Prepared {
    pub lock: File,
    /// Whether the last shutdown was clean.
    pub clean: bool,
    pub cluster_id: String,
    /// The catalog of a directory written before the metadata log, to migrate.
    pub legacy_catalog: Option<CatalogState>,
}

/// Takes the data directory's lock, settles its identity (`meta.properties`,
/// written first in a fresh directory and added to one from before it
/// existed, with the catalog's cluster id), reads the clean-shutdown marker,
/// and removes leftovers of interrupted topic deletions. Blocking.
pub(super) fn prepare(options: &NodeOptions) -> Result<Prepared, Error> {
    let dir = &options.data_dir;
    std::fs::create_dir_all(dir).map_err(MetadataError::io("create data directory", dir))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = File::create(&lock_path).map_err(MetadataError::io("create the lock file", &lock_path))?;
    lock.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => MetadataError::Locked { path: dir.clone() }.into(),
        std::fs::TryLockError::Error(source) => Error::from(MetadataError::Io { action: "lock", path: lock_path.clone(), source }),
    })?;
    let marker = dir.join(CLEAN_SHUTDOWN_FILE);
    let clean = marker.exists();
    if clean {
        std::fs::remove_file(&marker).map_err(MetadataError::io("remove the clean-shutdown marker", &marker))?;
    }
    for entry in std::fs::read_dir(dir).map_err(MetadataError::io("list", dir))?.flatten() {
        if entry.file_name().to_string_lossy().ends_with(DELETED_SUFFIX) {
            if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(dir = %entry.path().display(), cause = %e, "could not remove a deleted partition");
            }
        }
    }
    let legacy_catalog = catalog::load(dir)?;
    let fresh_cluster_id = || CatalogState::new(options.cluster_id.clone()).cluster_id;
    let identity = meta_properties::resolve(dir, options.node_id, legacy_catalog.as_ref().map(|c| c.cluster_id.as_str()), fresh_cluster_id)?;
    if let Some(configured) = options.cluster_id.as_deref().filter(|&c| c != identity.cluster_id) {
        tracing::warn!(configured, stored = %identity.cluster_id, "node.cluster_id applies to a fresh data directory only; keeping the stored cluster id");
    }
    Ok(Prepared { lock, clean, cluster_id: identity.cluster_id, legacy_catalog })
}
