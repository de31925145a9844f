//! The metadata state machine: openraft's [`RaftStateMachine`] over a
//! [`MetadataImage`], with snapshots on local disk.
//!
//! The image lives in memory (it is the cluster's metadata, bounded by its
//! brokers, topics and partitions) and is rebuilt at start from the latest
//! snapshot plus the log entries after it, which openraft replays. Nothing is
//! written per applied entry: only snapshots go to disk, as `snapshot.json`
//! (`[crc32c: u32 LE][JSON of meta and image]`), replaced atomically on the
//! blocking pool. Each applied batch publishes the new image on a watch
//! channel, for the replica manager to diff.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError, StorageIOError, StoredMembership};
use serde::{Deserialize, Serialize};
use silt_tiering::checkpoint::write_atomically;
use tokio::sync::watch;

use super::error::StoreError;
use super::image::MetadataImage;
use super::records::MetadataResponse;
use super::MetadataTypeConfig;

type C = MetadataTypeConfig;

const SNAPSHOT_FILE: &str = "snapshot.json";

/// What the state machine has applied, as one value a snapshot holds whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
    pub image: MetadataImage,
}

/// The snapshot file: openraft's metadata of the snapshot and the image.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<u64, BasicNode>,
    image: MetadataImage,
}

/// The state machine. Owned by openraft; readers follow the image through
/// [`StateMachineStore::subscribe`].
#[derive(Debug)]
pub struct StateMachineStore {
    dir: PathBuf,
    state: AppliedState,
    published: watch::Sender<Arc<AppliedState>>,
    snapshots_built: u64,
}

impl StateMachineStore {
    /// Opens the state machine under `dir`, starting from its snapshot if one
    /// exists.
    pub async fn open(dir: PathBuf) -> Result<StateMachineStore, StoreError> {
        let read_dir = dir.clone();
        let snapshot = on_blocking_pool(move || read_snapshot(&read_dir)).await?;
        let state = match snapshot {
            Some(file) => AppliedState { last_applied: file.meta.last_log_id, membership: file.meta.last_membership, image: file.image },
            None => AppliedState::default(),
        };
        let (published, _) = watch::channel(Arc::new(state.clone()));
        Ok(StateMachineStore { dir, state, published, snapshots_built: 0 })
    }

    /// The applied state now and at every later apply.
    pub fn subscribe(&self) -> watch::Receiver<Arc<AppliedState>> {
        self.published.subscribe()
    }

    fn publish(&self) {
        self.published.send_replace(Arc::new(self.state.clone()));
    }
}

/// Runs a snapshot file operation on tokio's blocking pool.
async fn on_blocking_pool<T: Send + 'static>(op: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(op).await.map_err(|e| StoreError::Blocking(e.to_string()))?
}

fn read_snapshot(dir: &std::path::Path) -> Result<Option<SnapshotFile>, StoreError> {
    let path = dir.join(SNAPSHOT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StoreError::Io { path, source }),
    };
    let corrupt = |reason: &str| StoreError::Corrupt { path: path.clone(), pos: 0, reason: reason.to_string() };
    let (crc, body) = bytes.split_at_checked(4).ok_or_else(|| corrupt("shorter than its checksum"))?;
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err(corrupt("the checksum does not match"));
    }
    serde_json::from_slice(body).map(Some).map_err(StoreError::codec("snapshot"))
}

fn write_snapshot(dir: &std::path::Path, file: &SnapshotFile) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
    let body = serde_json::to_vec(file).map_err(StoreError::codec("snapshot"))?;
    let mut bytes = Vec::with_capacity(body.len() + 4);
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    write_atomically(&dir.join(SNAPSHOT_FILE), &bytes)?;
    Ok(())
}

/// Builds a snapshot of the state as it was when the builder was made.
#[derive(Debug)]
pub struct SnapshotBuilder {
    dir: PathBuf,
    state: AppliedState,
    snapshot_id: String,
}

impl RaftSnapshotBuilder<C> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError<u64>> {
        let meta = SnapshotMeta { last_log_id: self.state.last_applied, last_membership: self.state.membership.clone(), snapshot_id: self.snapshot_id.clone() };
        let data = serde_json::to_vec(&self.state.image).map_err(|e| StorageIOError::write_snapshot(None, &StoreError::codec("image")(e)))?;
        let file = SnapshotFile { meta: meta.clone(), image: self.state.image.clone() };
        let dir = self.dir.clone();
        on_blocking_pool(move || write_snapshot(&dir, &file)).await.map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<C> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetadataResponse>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        for entry in entries {
            self.state.last_applied = Some(entry.log_id);
            let response = match &entry.payload {
                EntryPayload::Blank => MetadataResponse::Empty,
                EntryPayload::Normal(batch) => self.state.image.apply_batch(entry.log_id.index, batch),
                EntryPayload::Membership(membership) => {
                    self.state.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                    MetadataResponse::Empty
                }
            };
            responses.push(response);
        }
        self.publish();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        let last = self.state.last_applied.map_or_else(|| "none".to_string(), |id| format!("{}-{}", id.leader_id.term, id.index));
        SnapshotBuilder { dir: self.dir.clone(), state: self.state.clone(), snapshot_id: format!("{last}-{}", self.snapshots_built) }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta<u64, BasicNode>, snapshot: Box<Cursor<Vec<u8>>>) -> Result<(), StorageError<u64>> {
        let image: MetadataImage = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &StoreError::codec("snapshot image")(e)))?;
        let file = SnapshotFile { meta: meta.clone(), image: image.clone() };
        let dir = self.dir.clone();
        on_blocking_pool(move || write_snapshot(&dir, &file)).await.map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.state = AppliedState { last_applied: meta.last_log_id, membership: meta.last_membership.clone(), image };
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError<u64>> {
        let dir = self.dir.clone();
        let file = on_blocking_pool(move || read_snapshot(&dir)).await.map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let Some(file) = file else { return Ok(None) };
        let data = serde_json::to_vec(&file.image).map_err(|e| StorageIOError::read_snapshot(None, &StoreError::codec("image")(e)))?;
        Ok(Some(Snapshot { meta: file.meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
