//! The catalog of a data directory from before the metadata log: the topics
//! it hosted and the producer-id allocation high mark, in
//! `<data_dir>/meta/catalog.json`, with a copy of the cluster id.
//!
//! Read once: the first start of such a directory writes it into the metadata
//! log and renames it ([`crate::node::migration`]). Topic name rules live here too.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, MetadataError};
use crate::topic_config::TopicConfigs;

const CATALOG_VERSION: u32 = 1;
/// Producer ids are reserved this many at a time so that one catalog write
/// covers many InitProducerId requests.
pub const PRODUCER_ID_BLOCK: i64 = 1000;
/// Kafka's limit on topic name length.
pub const TOPIC_NAME_MAX_LEN: usize = 249;

/// One topic as the catalog stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    #[serde(default)]
    pub configs: TopicConfigs,
}

/// The catalog file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogState {
    pub version: u32,
    pub cluster_id: String,
    /// Producer ids below this are reserved (handed out or lost in a crash).
    pub producer_id_high_mark: i64,
    pub topics: Vec<TopicRecord>,
}

impl CatalogState {
    pub fn new(cluster_id: Option<String>) -> CatalogState {
        CatalogState {
            version: CATALOG_VERSION,
            cluster_id: cluster_id.unwrap_or_else(|| Uuid::new_v4().simple().to_string()[..22].to_owned()),
            producer_id_high_mark: 0,
            topics: Vec::new(),
        }
    }

    pub fn topic(&self, name: &str) -> Option<&TopicRecord> {
        self.topics.iter().find(|t| t.name == name)
    }

    pub fn topic_mut(&mut self, name: &str) -> Option<&mut TopicRecord> {
        self.topics.iter_mut().find(|t| t.name == name)
    }
}

/// Where the catalog lives.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("meta").join("catalog.json")
}

/// Reads the catalog, or `None` on a fresh data directory.
pub fn load(data_dir: &Path) -> Result<Option<CatalogState>, Error> {
    let path = path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let state: CatalogState = serde_json::from_slice(&bytes).map_err(|source| MetadataError::CorruptCatalog { path: path.clone(), source })?;
            if state.version != CATALOG_VERSION {
                return Err(MetadataError::UnknownCatalogVersion { path, version: state.version }.into());
            }
            Ok(Some(state))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MetadataError::io("read", path)(e)),
    }
}

/// Writes the catalog durably (blocking: call from a blocking thread).
pub fn save(data_dir: &Path, state: &CatalogState) -> Result<(), Error> {
    let path = path(data_dir);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(MetadataError::io("create", dir))?;
    }
    let bytes = serde_json::to_vec_pretty(state).expect("catalog serialises");
    silt_tiering::checkpoint::write_atomically(&path, &bytes).map_err(|source| MetadataError::Write { what: "the catalog", source }.into())
}

/// Checks a topic name against Kafka's rules.
pub fn validate_topic_name(name: &str) -> Result<(), Error> {
    let bad_char = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
    let reason = if name.is_empty() {
        Some("the name is empty".to_owned())
    } else if name == "." || name == ".." {
        Some("\".\" and \"..\" are not allowed".to_owned())
    } else if name.len() > TOPIC_NAME_MAX_LEN {
        Some(format!("longer than {TOPIC_NAME_MAX_LEN} characters"))
    } else {
        bad_char.map(|c| format!("character {c:?} is not allowed (only ASCII letters, digits, '.', '_' and '-')"))
    };
    match reason {
        Some(reason) => Err(Error::InvalidTopic { name: name.to_owned(), reason }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let mut state = CatalogState::new(None);
        state.topics.push(TopicRecord { name: "orders".into(), id: Uuid::new_v4(), partitions: 3, configs: TopicConfigs::default() });
        save(dir.path(), &state).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(state));
        std::fs::write(path(dir.path()), b"{").unwrap();
        assert!(load(dir.path()).is_err());
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }
}
