//! Small crash-safe files: written to a temporary file, fsynced, renamed over
//! the old one, and the directory fsynced, so a reader sees the old or the new
//! content, never a torn mix.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::LogError;

/// Replaces `path` with `contents` atomically and durably.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), LogError> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(LogError::io(&tmp))?;
    file.write_all(contents).map_err(LogError::io(&tmp))?;
    file.sync_all().map_err(LogError::io(&tmp))?;
    fs::rename(&tmp, path).map_err(LogError::io(path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// fsyncs a directory so that renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(LogError::io(dir))
}

/// A single offset in a file (`log-start-offset`, `recovery-point`).
pub struct OffsetCheckpoint {
    path: PathBuf,
}

impl OffsetCheckpoint {
    pub fn new(path: PathBuf) -> Self {
        OffsetCheckpoint { path }
    }

    pub fn read(&self) -> Result<Option<i64>, LogError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => text.trim().parse::<i64>().map(Some).map_err(|e| LogError::CorruptCheckpoint { path: self.path.clone(), reason: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LogError::Io { path: self.path.clone(), source }),
        }
    }

    pub fn write(&self, offset: i64) -> Result<(), LogError> {
        write_atomically(&self.path, format!("{offset}\n").as_bytes())
    }
}

/// The leader epoch cache: for each leader epoch, the first offset written in
/// it. Replication uses it to find where a follower's log diverges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<(i32, i64)>,
}

impl LeaderEpochCache {
    const FILE_VERSION: u32 = 0;

    /// Records that `epoch` starts at `start_offset`, if it is newer than the latest.
    /// Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        match self.entries.last() {
            Some(&(latest, _)) if epoch <= latest => false,
            _ => {
                self.entries.push((epoch, start_offset));
                true
            }
        }
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// The end offset of `epoch` given the log end offset, as Kafka's
    /// `LeaderEpochFileCache.endOffsetFor` answers it (OffsetForLeaderEpoch):
    /// the latest epoch ends at `log_end_offset`; an older one ends where the
    /// next epoch starts and is answered with the largest known epoch at or
    /// below it, or with itself when it is older than every known epoch (its
    /// data is gone). `None` (Kafka's UNDEFINED_EPOCH and
    /// UNDEFINED_EPOCH_OFFSET) for -1 and for an epoch newer than all.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        if epoch < 0 {
            return None;
        }
        if self.latest_epoch() == Some(epoch) {
            return Some((epoch, log_end_offset));
        }
        let idx = self.entries.partition_point(|&(e, _)| e <= epoch);
        let &(_, next_start) = self.entries.get(idx)?;
        let found = if idx == 0 { epoch } else { self.entries[idx - 1].0 };
        Some((found, next_start))
    }

    /// Forgets epochs that start at or after `offset` (log truncated to `offset`).
    pub fn truncate_from(&mut self, offset: i64) {
        self.entries.retain(|&(_, start)| start < offset);
    }

    /// Keeps epochs covering offsets >= `offset`, clamping the first to `offset`.
    pub fn truncate_before(&mut self, offset: i64) {
        let idx = self.entries.partition_point(|&(_, start)| start <= offset);
        if idx > 1 {
            self.entries.drain(..idx - 1);
        }
        if let Some(first) = self.entries.first_mut() {
            first.1 = first.1.max(offset);
        }
    }

    pub fn write(&self, path: &Path) -> Result<(), LogError> {
        let mut text = format!("{}\n{}\n", Self::FILE_VERSION, self.entries.len());
        for (epoch, start) in &self.entries {
            text.push_str(&format!("{epoch} {start}\n"));
        }
        write_atomically(path, text.as_bytes())
    }

    pub fn read(path: &Path) -> Result<LeaderEpochCache, LogError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(LogError::Io { path: path.to_owned(), source }),
        };
        let corrupt = |reason: &str| LogError::CorruptCheckpoint { path: path.to_owned(), reason: reason.into() };
        let mut lines = text.lines();
        let version: u32 = lines.next().and_then(|l| l.trim().parse().ok()).ok_or_else(|| corrupt("missing version"))?;
        if version != Self::FILE_VERSION {
            return Err(corrupt("unknown version"));
        }
        let count: usize = lines.next().and_then(|l| l.trim().parse().ok()).ok_or_else(|| corrupt("missing count"))?;
        let mut cache = LeaderEpochCache::default();
        for line in lines.take(count) {
            let mut parts = line.split_whitespace();
            let epoch = parts.next().and_then(|p| p.parse().ok()).ok_or_else(|| corrupt("bad epoch"))?;
            let start = parts.next().and_then(|p| p.parse().ok()).ok_or_else(|| corrupt("bad start offset"))?;
            cache.entries.push((epoch, start));
        }
        if cache.entries.len() != count {
            return Err(corrupt("fewer entries than the count"));
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_cache_answers_end_offsets_and_truncates() {
        let mut cache = LeaderEpochCache::default();
        assert!(cache.assign(0, 0));
        assert!(!cache.assign(0, 5));
        assert!(cache.assign(2, 10));
        assert!(cache.assign(5, 30));
        assert_eq!(cache.end_offset_for(0, 50), Some((0, 10)));
        assert_eq!(cache.end_offset_for(1, 50), Some((0, 10)));
        assert_eq!(cache.end_offset_for(5, 50), Some((5, 50)));
        assert_eq!(cache.end_offset_for(-1, 50), None);
        assert_eq!(cache.end_offset_for(6, 50), None, "newer than every epoch");
        cache.truncate_from(30);
        assert_eq!(cache.latest_epoch(), Some(2));
        cache.truncate_before(12);
        assert_eq!(cache.end_offset_for(2, 40), Some((2, 40)));
        assert_eq!(cache.entries, vec![(2, 12)]);
        assert_eq!(cache.end_offset_for(1, 40), Some((1, 12)), "older than every epoch: its data is gone");
    }

    #[test]
    fn checkpoints_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = LeaderEpochCache::default();
        cache.assign(1, 0);
        cache.assign(3, 100);
        let path = dir.path().join("leader-epoch-checkpoint");
        cache.write(&path).unwrap();
        assert_eq!(LeaderEpochCache::read(&path).unwrap(), cache);
        let offset = OffsetCheckpoint::new(dir.path().join("log-start-offset"));
        assert_eq!(offset.read().unwrap(), None);
        offset.write(77).unwrap();
        assert_eq!(offset.read().unwrap(), Some(77));
        std::fs::write(dir.path().join("log-start-offset"), "garbage").unwrap();
        assert!(offset.read().is_err());
    }
}
