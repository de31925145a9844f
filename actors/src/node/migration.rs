//! In-place upgrade of a data directory from before the metadata log: its
//! `meta/catalog.json` (topics with ids, partition counts and config
//! overrides; the producer-id high mark) becomes records of the one-voter
//! quorum on first start, then the file is renamed `catalog.json.migrated`
//! and never read again.
//!
//! The migration is idempotent, so a crash half way is finished by the next
//! start: a topic already in the image (same id) is skipped, and producer ids
//! are handed out only up to the old high mark. Only after every record is
//! committed is the catalog renamed.

use std::path::Path;

use super::admin::{expect_applied, topic_batch};
use super::placement::NewPartition;
use crate::catalog::{self, CatalogState};
use crate::error::{Error, MetadataError};
use crate::metadata::quorum::records::PRODUCER_ID_BLOCK_MAX;
use crate::metadata::quorum::{BrokerId, MetadataBatch, MetadataRecord};
use crate::metadata::MetadataStore;

/// The name the catalog is given once migrated.
pub const MIGRATED_SUFFIX: &str = ".migrated";

fn failed(reason: impl Into<String>) -> Error {
    MetadataError::Migration { reason: reason.into() }.into()
}

/// Writes `catalog`'s topics and producer-id high mark into the metadata log,
/// every partition on `node` alone (a pre-cluster directory is a single
/// node's), then renames the catalog file.
pub(super) async fn migrate(store: &MetadataStore, node: BrokerId, broker_epoch: u64, data_dir: &Path, catalog: CatalogState) -> Result<(), Error> {
    for topic in &catalog.topics {
        let image = store.image().borrow().image.clone();
        if image.topics.contains_key(&topic.id) {
            continue;
        }
        if image.topic_ids.contains_key(&topic.name) {
            return Err(failed(format!("topic {} exists in the metadata log with another id", topic.name)));
        }
        let count = usize::try_from(topic.partitions).map_err(|_| failed(format!("topic {} has {} partitions", topic.name, topic.partitions)))?;
        let replicas = vec![NewPartition { replicas: vec![node], isr: vec![node], leader: node }; count];
        let batch = topic_batch(&topic.name, topic.id, &replicas, &topic.configs);
        expect_applied(store.propose(batch).await?)?;
        tracing::info!(topic = %topic.name, partitions = topic.partitions, "topic migrated from catalog.json");
    }
    loop {
        let next = store.image().borrow().image.next_producer_id;
        let missing = catalog.producer_id_high_mark.saturating_sub(next);
        if missing <= 0 {
            break;
        }
        let block_size = missing.min(PRODUCER_ID_BLOCK_MAX);
        expect_applied(store.propose(MetadataBatch::one(MetadataRecord::ProducerIds { broker_id: node, broker_epoch, block_size })).await?)?;
    }
    let from = catalog::path(data_dir);
    let mut to = from.clone().into_os_string();
    to.push(MIGRATED_SUFFIX);
    tokio::task::spawn_blocking(move || {
        std::fs::rename(&from, &to).map_err(MetadataError::io("rename the migrated catalog", &from))?;
        if let Some(parent) = from.parent() {
            std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(MetadataError::io("sync", parent))?;
        }
        Ok::<(), Error>(())
    })
    .await
    .map_err(|source| MetadataError::Task { source })??;
    tracing::info!(topics = catalog.topics.len(), producer_id_high_mark = catalog.producer_id_high_mark, "catalog.json migrated into the metadata log");
    Ok(())
}
