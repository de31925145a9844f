//! Replaying one partition of `__consumer_offsets` into the groups it
//! holds: what a coordinator does when it gains leadership of the partition
//! (Kafka's `GroupMetadataManager.loadGroupsAndOffsets`).

use std::collections::BTreeMap;
use std::time::Duration;

use super::offsets::{Offsets, OffsetsRecord, StoredGroup};
use crate::error::Error;
use crate::partition::Read;
use crate::PartitionHandle;

/// Bytes per read while loading the offsets topic.
const LOAD_READ_BYTES: usize = 4 * 1024 * 1024;
/// How long loading waits for an offsets partition's log to open.
const LOAD_OPEN_TIMEOUT: Duration = Duration::from_secs(120);

/// The groups of one offsets partition: stored metadata and committed offsets.
pub type LoadedGroups = BTreeMap<String, (Option<StoredGroup>, Offsets)>;

/// Reads `partition` up to its high watermark; the last record of a key wins.
pub async fn load(partition: &PartitionHandle) -> Result<LoadedGroups, Error> {
    let mut groups: LoadedGroups = BTreeMap::new();
    let mut offset = partition.watermarks().log_start_offset;
    // Wait for the partition's log to open (it publishes its watermarks then).
    let mut opened = partition.watermarks.clone();
    let deadline = tokio::time::Instant::now() + LOAD_OPEN_TIMEOUT;
    let mut end = loop {
        match partition.ask(crate::partition::ListOffset(crate::partition::OffsetSpec::Latest)).await {
            Ok(Some((end, _))) => break end,
            Ok(None) => break 0,
            Err(e @ Error::Unavailable(..)) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(Error::Unavailable(..)) => {
                if tokio::time::timeout(Duration::from_secs(1), opened.changed()).await.is_ok_and(|r| r.is_err()) {
                    return Err(Error::Unavailable(partition.tp.to_string(), "closed while loading groups".into()));
                }
            }
            Err(e) => return Err(e),
        }
    };
    offset = offset.max(partition.watermarks().log_start_offset);
    while offset < end {
        let read = partition.ask(Read { offset, max_bytes: LOAD_READ_BYTES }).await?;
        end = read.high_watermark;
        let Some(records) = read.records else { break };
        let decoded = silt_tiering::batch::decode_key_values(&records).map_err(|e| Error::Log(silt_tiering::LogError::InvalidBatch(e)))?;
        let Some(last) = decoded.last() else { break };
        offset = last.offset + 1;
        for kv in decoded {
            let Some(key) = kv.key else { continue };
            match OffsetsRecord::decode(&key, kv.value.as_deref()) {
                Ok(Some(OffsetsRecord::Offset { group, tp, committed })) => {
                    let entry = groups.entry(group).or_default();
                    match committed {
                        Some(c) => {
                            entry.1.insert(tp, c);
                        }
                        None => {
                            entry.1.remove(&tp);
                        }
                    }
                }
                Ok(Some(OffsetsRecord::Group { group, value })) => match value {
                    Some(v) => groups.entry(group).or_default().0 = Some(v),
                    None => {
                        groups.remove(&group);
                    }
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(partition = %partition.tp, offset = kv.offset, cause = %e, "skipping an undecodable offsets record"),
            }
        }
    }
    groups.retain(|_, (stored, offsets)| stored.is_some() || !offsets.is_empty());
    Ok(groups)
}
