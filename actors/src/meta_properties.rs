//! The data directory's identity: `<data_dir>/meta.properties`, as Kafka
//! keeps it. It names the node that owns the directory and the cluster the
//! directory belongs to, so that a directory is never opened by another node
//! id, nor joined to another cluster, by mistake.
//!
//! Format (Java properties, as Kafka's KRaft `meta.properties` v1):
//!
//! ```text
//! #Written by silt
//! version=1
//! node.id=1
//! cluster.id=6sAjGhGeQZ2yWEyNjVrUZA
//! ```
//!
//! Rules, kept by [`resolve`]:
//! - the file is written before anything else in a fresh directory, so a
//!   directory holding data always has one (after the in-place upgrade below);
//! - a stored node id that differs from the configured one refuses the start
//!   (Kafka refuses it too: the directory's replicas belong to the stored id);
//! - the catalog's cluster id (`meta/catalog.json`) must equal the stored one;
//! - a directory written by a Silt without this file (its identity only in
//!   `catalog.json`) gains the file on first start, keeping its cluster id.

use std::path::{Path, PathBuf};

use crate::error::{Error, MetadataError};

/// The file's name in the data directory.
pub const FILE_NAME: &str = "meta.properties";
/// The version of the format Silt writes and reads (Kafka's KRaft v1).
pub const VERSION: u32 = 1;

/// A data directory's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaProperties {
    pub node_id: i32,
    pub cluster_id: String,
}

impl MetaProperties {
    /// The file's text.
    pub fn to_text(&self) -> String {
        format!("#Written by silt\nversion={VERSION}\nnode.id={}\ncluster.id={}\n", self.node_id, self.cluster_id)
    }

    /// Parses the file's text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<MetaProperties, Error> {
        let invalid = |reason: String| Error::from(MetadataError::InvalidMetaProperties { path: path.to_owned(), reason });
        let (mut version, mut node_id, mut cluster_id) = (None, None, None);
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!')) {
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(invalid(format!("line {line:?} is not key=value")));
            };
            let value = value.trim();
            match key.trim() {
                "version" => version = Some(value.parse::<u32>().map_err(|e| invalid(format!("version {value:?}: {e}")))?),
                "node.id" => node_id = Some(value.parse::<i32>().map_err(|e| invalid(format!("node.id {value:?}: {e}")))?),
                "cluster.id" if !value.is_empty() => cluster_id = Some(value.to_owned()),
                "cluster.id" => return Err(invalid("cluster.id is empty".into())),
                // Kafka writes other keys (directory.id); they are not Silt's to check.
                _ => {}
            }
        }
        match version {
            Some(VERSION) => {}
            Some(other) => return Err(invalid(format!("version {other} is not supported (only {VERSION})"))),
            None => return Err(invalid("version is missing".into())),
        }
        Ok(MetaProperties {
            node_id: node_id.ok_or_else(|| invalid("node.id is missing".into()))?,
            cluster_id: cluster_id.ok_or_else(|| invalid("cluster.id is missing".into()))?,
        })
    }
}

/// Where the file lives.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Reads the file, or `None` when the directory has none.
pub fn load(data_dir: &Path) -> Result<Option<MetaProperties>, Error> {
    let path = path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => MetaProperties::parse(&text, &path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MetadataError::io("read", path)(e)),
    }
}

/// Writes the file durably (blocking: call from a blocking thread).
pub fn save(data_dir: &Path, meta: &MetaProperties) -> Result<(), Error> {
    silt_tiering::checkpoint::write_atomically(&path(data_dir), meta.to_text().as_bytes())
        .map_err(|source| MetadataError::Write { what: "meta.properties", source }.into())
}

/// Settles the directory's identity at start, writing the file when it is
/// missing (see the module rules). `catalog_cluster_id` is the cluster id in
/// an existing `catalog.json`; `fresh_cluster_id` is used only when the
/// directory has neither.
pub fn resolve(data_dir: &Path, node_id: i32, catalog_cluster_id: Option<&str>, fresh_cluster_id: impl FnOnce() -> String) -> Result<MetaProperties, Error> {
    let stored = load(data_dir)?;
    let meta = match stored {
        Some(meta) => {
            if meta.node_id != node_id {
                return Err(MetadataError::OtherNode { path: data_dir.to_owned(), stored: meta.node_id, configured: node_id }.into());
            }
            meta
        }
        None => {
            let meta = MetaProperties { node_id, cluster_id: catalog_cluster_id.map_or_else(fresh_cluster_id, str::to_owned) };
            save(data_dir, &meta)?;
            if catalog_cluster_id.is_some() {
                tracing::info!(dir = %data_dir.display(), node_id, cluster_id = %meta.cluster_id, "wrote meta.properties for an existing data directory (upgrade in place)");
            }
            meta
        }
    };
    if let Some(catalog) = catalog_cluster_id.filter(|&c| c != meta.cluster_id) {
        return Err(MetadataError::ClusterMismatch { path: data_dir.to_owned(), meta_properties: meta.cluster_id, catalog: catalog.to_owned() }.into());
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_kafka_written_files() {
        let meta = MetaProperties { node_id: 3, cluster_id: "abc".into() };
        let path = Path::new("meta.properties");
        assert_eq!(MetaProperties::parse(&meta.to_text(), path).unwrap(), meta);
        let kafka = "#\n#Wed Dec 02 10:00:00 UTC 2026\nnode.id=1\ndirectory.id=xyz\nversion=1\ncluster.id=q1Sh-9_ISia_zwGINzRvyQ\n";
        assert_eq!(MetaProperties::parse(kafka, path).unwrap(), MetaProperties { node_id: 1, cluster_id: "q1Sh-9_ISia_zwGINzRvyQ".into() });
        for bad in [
            "version=1\nnode.id=1\n",
            "version=0\nnode.id=1\ncluster.id=a\n",
            "version=1\nnode.id=x\ncluster.id=a\n",
            "garbage\n",
            "version=1\nnode.id=1\ncluster.id=\n",
        ] {
            assert!(MetaProperties::parse(bad, path).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_fresh_directory_gets_a_file_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let meta = resolve(dir.path(), 7, None, || "fresh".into()).unwrap();
        assert_eq!(meta, MetaProperties { node_id: 7, cluster_id: "fresh".into() });
        assert_eq!(load(dir.path()).unwrap(), Some(meta.clone()));
        let again = resolve(dir.path(), 7, Some("fresh"), || unreachable!("the stored id is kept")).unwrap();
        assert_eq!(again, meta);
    }

    #[test]
    fn an_old_directory_is_upgraded_with_its_catalog_cluster_id() {
        let dir = tempfile::tempdir().unwrap();
        let meta = resolve(dir.path(), 0, Some("from-catalog"), || unreachable!("the catalog's id is kept")).unwrap();
        assert_eq!(meta.cluster_id, "from-catalog");
        assert_eq!(load(dir.path()).unwrap(), Some(meta));
    }

    #[test]
    fn another_node_id_or_cluster_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        resolve(dir.path(), 1, None, || "c1".into()).unwrap();
        let wrong_node = resolve(dir.path(), 2, Some("c1"), || "c2".into()).unwrap_err();
        assert!(wrong_node.to_string().contains("node id 1"), "{wrong_node}");
        let wrong_cluster = resolve(dir.path(), 1, Some("c2"), || "c2".into()).unwrap_err();
        assert!(wrong_cluster.to_string().contains("cluster"), "{wrong_cluster}");
    }
}
