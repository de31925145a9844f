//! The metadata log on local disk: openraft's [`RaftLogStorage`].
//!
//! Layout under the store's folder (see docs/metadata-quorum.md):
//! - `log/<first index, 20 digits>.log`: segments of frames
//!   `[len: u32 LE][crc32c of payload: u32 LE][payload: JSON of one entry]`,
//!   appended and fsynced before openraft is told the entries are durable. A
//!   segment is closed once it passes [`SEGMENT_BYTES_MAX`].
//! - `vote.json`: the last vote, replaced atomically (write, fsync, rename,
//!   fsync the folder) before `save_vote` returns.
//! - `purged.json`: the id of the last purged entry, written the same way
//!   before any segment is deleted.
//!
//! Memory holds only an index (log id and file position per entry, ~48 bytes
//! each), never the entries: openraft purges the log behind each snapshot, so
//! the index stays bounded by its snapshot policy. Every file operation runs on
//! tokio's blocking pool, never on the caller's thread.
//!
//! Crash safety: an entry is acknowledged only after its segment is fsynced. At
//! open, a torn frame at the tail of the last segment (a crash mid-append) is
//! cut off; a bad frame anywhere else is corruption and fails the open.
//! Truncation deletes later segments from the highest down, then cuts the
//! segment that holds the truncation point, so a crash leaves a contiguous log.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use silt_tiering::checkpoint::{sync_dir, write_atomically};

use super::error::StoreError;
use super::MetadataTypeConfig;

/// A segment is closed, and the next append starts a new one, past this size.
pub const SEGMENT_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// The largest frame a segment may hold; a bigger length field is corruption.
pub const FRAME_BYTES_MAX: u32 = 64 * 1024 * 1024;
const FRAME_HEADER_BYTES: u64 = 8;

type C = MetadataTypeConfig;

/// Where one entry lives.
#[derive(Debug, Clone, Copy)]
struct Position {
    segment: u64,
    pos: u64,
    len: u32,
    log_id: LogId<u64>,
}

/// The blocking core: files and the in-memory index.
#[derive(Debug)]
struct LogFiles {
    dir: PathBuf,
    /// First index → open file and its length.
    segments: BTreeMap<u64, (File, u64)>,
    index: BTreeMap<u64, Position>,
    last_purged: Option<LogId<u64>>,
    vote: Option<Vote<u64>>,
}

/// The metadata log store. Cloning shares the same files (the clone serves as
/// openraft's log reader).
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogFiles>>,
}

impl LogStore {
    /// Opens (or creates) the log under `dir`, recovering a torn tail.
    pub async fn open(dir: PathBuf) -> Result<LogStore, StoreError> {
        let files = tokio::task::spawn_blocking(move || LogFiles::open(dir)).await.map_err(|e| StoreError::Blocking(e.to_string()))??;
        Ok(LogStore { inner: Arc::new(Mutex::new(files)) })
    }

    async fn blocking<T: Send + 'static>(&self, op: impl FnOnce(&mut LogFiles) -> Result<T, StoreError> + Send + 'static) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut files = inner.lock().map_err(|_| StoreError::Poisoned)?;
            op(&mut files)
        })
        .await
        .map_err(|e| StoreError::Blocking(e.to_string()))?
    }
}

impl LogFiles {
    fn open(dir: PathBuf) -> Result<LogFiles, StoreError> {
        let log_dir = dir.join("log");
        fs::create_dir_all(&log_dir).map_err(StoreError::io(&log_dir))?;
        let vote = read_json(&dir.join("vote.json"), "vote")?;
        let last_purged: Option<LogId<u64>> = read_json(&dir.join("purged.json"), "purged log id")?;
        let mut firsts = Vec::new();
        for item in fs::read_dir(&log_dir).map_err(StoreError::io(&log_dir))? {
            let item = item.map_err(StoreError::io(&log_dir))?;
            let name = item.file_name();
            let Some(first) = name.to_str().and_then(|n| n.strip_suffix(".log")).and_then(|n| n.parse::<u64>().ok()) else { continue };
            firsts.push(first);
        }
        firsts.sort_unstable();
        let mut files = LogFiles { dir, segments: BTreeMap::new(), index: BTreeMap::new(), last_purged, vote };
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            files.load_segment(first, i + 1 == count)?;
        }
        Ok(files)
    }

    fn segment_path(&self, first: u64) -> PathBuf {
        self.dir.join("log").join(format!("{first:020}.log"))
    }

    /// Reads a segment's frames into the index. In the last segment a torn or
    /// bad frame ends the log and is cut off; elsewhere it is corruption.
    fn load_segment(&mut self, first: u64, last: bool) -> Result<(), StoreError> {
        let path = self.segment_path(first);
        let mut file = OpenOptions::new().read(true).append(true).open(&path).map_err(StoreError::io(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(StoreError::io(&path))?;
        let mut pos = 0u64;
        while (pos as usize) < bytes.len() {
            match decode_frame(&bytes[pos as usize..]) {
                Ok((entry, len)) => {
                    let index = entry.log_id.index;
                    if self.last_purged.is_none_or(|p| index > p.index) {
                        if let Some(&last_index) = self.index.keys().next_back() {
                            if index != last_index + 1 {
                                return Err(StoreError::Corrupt { path, pos, reason: format!("entry {index} follows entry {last_index}") });
                            }
                        }
                        self.index.insert(index, Position { segment: first, pos, len, log_id: entry.log_id });
                    }
                    pos += FRAME_HEADER_BYTES + u64::from(len);
                }
                Err(reason) if last => {
                    tracing::warn!(path = %path.display(), pos, reason, "cutting a torn tail off the metadata log");
                    file.set_len(pos).map_err(StoreError::io(&path))?;
                    file.sync_all().map_err(StoreError::io(&path))?;
                    break;
                }
                Err(reason) => return Err(StoreError::Corrupt { path, pos, reason: reason.to_string() }),
            }
        }
        self.segments.insert(first, (file, pos));
        Ok(())
    }

    fn last_log_id(&self) -> Option<LogId<u64>> {
        self.index.values().next_back().map(|p| p.log_id).or(self.last_purged)
    }

    fn read(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry<C>>, StoreError> {
        let mut entries = Vec::new();
        for (index, p) in self.index.range(range) {
            let path = self.segment_path(p.segment);
            let (file, _) = self.segments.get(&p.segment).ok_or(StoreError::Missing { index: *index })?;
            let mut frame = vec![0u8; (FRAME_HEADER_BYTES + u64::from(p.len)) as usize];
            file.read_exact_at(&mut frame, p.pos).map_err(StoreError::io(&path))?;
            let (entry, _) = decode_frame(&frame).map_err(|reason| StoreError::Corrupt { path, pos: p.pos, reason: reason.to_string() })?;
            entries.push(entry);
        }
        Ok(entries)
    }

    fn append(&mut self, entries: Vec<Entry<C>>) -> Result<(), StoreError> {
        let mut touched = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            if let Some(&last) = self.index.keys().next_back() {
                if index != last + 1 {
                    return Err(StoreError::NotContiguous { index, last });
                }
            }
            let payload = serde_json::to_vec(&entry).map_err(StoreError::codec("log entry"))?;
            let len = u32::try_from(payload.len()).ok().filter(|l| *l <= FRAME_BYTES_MAX).ok_or(StoreError::EntryTooLarge { index, bytes: payload.len() })?;
            let segment = self.active_segment(index)?;
            let path = self.segment_path(segment);
            let (file, size) = self.segments.get_mut(&segment).ok_or(StoreError::Missing { index })?;
            let mut frame = Vec::with_capacity(payload.len() + FRAME_HEADER_BYTES as usize);
            frame.extend_from_slice(&len.to_le_bytes());
            frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            frame.extend_from_slice(&payload);
            file.write_all(&frame).map_err(StoreError::io(&path))?;
            self.index.insert(index, Position { segment, pos: *size, len, log_id: entry.log_id });
            *size += frame.len() as u64;
            if touched.last() != Some(&segment) {
                touched.push(segment);
            }
        }
        for segment in touched {
            let path = self.segment_path(segment);
            if let Some((file, _)) = self.segments.get(&segment) {
                file.sync_data().map_err(StoreError::io(&path))?;
            }
        }
        Ok(())
    }

    /// The segment the entry `index` goes to: the last one, or a new one when
    /// the last is full or there is none.
    fn active_segment(&mut self, index: u64) -> Result<u64, StoreError> {
        if let Some((&first, (file, size))) = self.segments.iter().next_back() {
            if *size < SEGMENT_BYTES_MAX {
                return Ok(first);
            }
            file.sync_data().map_err(StoreError::io(&self.segment_path(first)))?;
        }
        let path = self.segment_path(index);
        let file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(StoreError::io(&path))?;
        sync_dir(&self.dir.join("log"))?;
        self.segments.insert(index, (file, 0));
        Ok(index)
    }

    /// Removes the entries from `index` on.
    fn truncate(&mut self, index: u64) -> Result<(), StoreError> {
        let Some(cut) = self.index.get(&index).copied() else { return Ok(()) };
        let later: Vec<u64> = self.segments.range(cut.segment + 1..).map(|(first, _)| *first).rev().collect();
        for first in later {
            let path = self.segment_path(first);
            self.segments.remove(&first);
            fs::remove_file(&path).map_err(StoreError::io(&path))?;
        }
        sync_dir(&self.dir.join("log"))?;
        let path = self.segment_path(cut.segment);
        if let Some((file, size)) = self.segments.get_mut(&cut.segment) {
            file.set_len(cut.pos).map_err(StoreError::io(&path))?;
            file.sync_all().map_err(StoreError::io(&path))?;
            *size = cut.pos;
        }
        drop(self.index.split_off(&index));
        Ok(())
    }

    /// Forgets the entries up to and including `log_id`, deleting the segments
    /// that hold nothing newer (never the last one, which takes appends).
    fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(&log_id).map_err(StoreError::codec("purged log id"))?;
        write_atomically(&self.dir.join("purged.json"), &bytes)?;
        self.last_purged = Some(log_id);
        self.index = self.index.split_off(&(log_id.index + 1));
        let firsts: Vec<u64> = self.segments.keys().copied().collect();
        for pair in firsts.windows(2) {
            // Every entry of segment pair[0] is below pair[1].
            if pair[1] <= log_id.index + 1 {
                let path = self.segment_path(pair[0]);
                self.segments.remove(&pair[0]);
                fs::remove_file(&path).map_err(StoreError::io(&path))?;
            }
        }
        Ok(())
    }

    fn save_vote(&mut self, vote: Vote<u64>) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(&vote).map_err(StoreError::codec("vote"))?;
        write_atomically(&self.dir.join("vote.json"), &bytes)?;
        self.vote = Some(vote);
        Ok(())
    }
}

/// Decodes the frame at the start of `bytes`: the entry and its payload length.
fn decode_frame(bytes: &[u8]) -> Result<(Entry<C>, u32), &'static str> {
    let header = bytes.get(..FRAME_HEADER_BYTES as usize).ok_or("a frame header is cut short")?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > FRAME_BYTES_MAX {
        return Err("a frame length is over the limit");
    }
    let payload = bytes.get(FRAME_HEADER_BYTES as usize..FRAME_HEADER_BYTES as usize + len as usize).ok_or("a frame is cut short")?;
    if crc32c::crc32c(payload) != crc {
        return Err("a frame's checksum does not match");
    }
    let entry = serde_json::from_slice(payload).map_err(|_| "a frame does not hold a log entry")?;
    Ok((entry, len))
}

/// Reads a small JSON file, `None` if it does not exist.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &'static str) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(StoreError::codec(what)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io { path: path.to_owned(), source }),
    }
}

fn read_error(e: StoreError) -> StorageError<u64> {
    StorageIOError::read_logs(&e).into()
}

fn write_error(e: StoreError) -> StorageError<u64> {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<C> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(&mut self, range: RB) -> Result<Vec<Entry<C>>, StorageError<u64>> {
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        self.blocking(move |files| files.read(range)).await.map_err(read_error)
    }
}

impl RaftLogStorage<C> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<u64>> {
        let (last_purged_log_id, last_log_id) = self.blocking(|files| Ok((files.last_purged, files.last_log_id()))).await.map_err(read_error)?;
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let vote = *vote;
        self.blocking(move |files| files.save_vote(vote)).await.map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.blocking(|files| Ok(files.vote)).await.map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<C>> = entries.into_iter().collect();
        match self.blocking(move |files| files.append(entries)).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_error(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.blocking(move |files| files.truncate(log_id.index)).await.map_err(write_error)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.blocking(move |files| files.purge(log_id)).await.map_err(write_error)
    }
}
