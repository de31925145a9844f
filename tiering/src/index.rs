//! Sparse indexes of one segment, kept in memory and written beside the
//! segment when it is sealed.
//!
//! The offset index maps a batch's base offset (relative to the segment) to its
//! byte position; the time index maps the segment's running max timestamp to
//! the base offset of the batch where it was reached. Both hold one entry per
//! `index.interval.bytes` of log, so lookups land on an entry and scan forward
//! over batch headers.

use std::path::Path;

use crate::error::LogError;

/// Offset index: `(relative base offset, byte position)`, ascending in both.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

/// Time index: `(max timestamp so far, relative base offset)`, ascending in both.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl OffsetIndex {
    pub fn append(&mut self, relative_offset: u32, position: u32) {
        if let Some(&(last_offset, last_position)) = self.entries.last() {
            assert!(relative_offset > last_offset, "offset index must ascend");
            assert!(position > last_position, "offset index positions must ascend");
        }
        self.entries.push((relative_offset, position));
    }

    /// The position of the last indexed batch starting at or before `relative_offset`.
    pub fn lookup(&self, relative_offset: u32) -> u32 {
        let idx = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        if idx == 0 {
            0
        } else {
            self.entries[idx - 1].1
        }
    }

    /// Drops entries at or past `position` (after a truncation).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|&(_, p)| p < position);
        self.entries.truncate(keep);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn write_to(&self, path: &Path) -> Result<(), LogError> {
        let mut buf = Vec::with_capacity(self.entries.len() * 8);
        for &(o, p) in &self.entries {
            buf.extend_from_slice(&o.to_be_bytes());
            buf.extend_from_slice(&p.to_be_bytes());
        }
        crate::checkpoint::write_atomically(path, &buf)
    }

    /// Loads an index file; `None` if it is absent or not a sane index for a
    /// segment of `segment_size` bytes (the caller then rebuilds it).
    pub fn read_from(path: &Path, segment_size: u64) -> Option<OffsetIndex> {
        let bytes = std::fs::read(path).ok()?;
        if bytes.len() % 8 != 0 {
            return None;
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(8) {
            let o = u32::from_be_bytes(chunk[0..4].try_into().ok()?);
            let p = u32::from_be_bytes(chunk[4..8].try_into().ok()?);
            if u64::from(p) >= segment_size.max(1) {
                return None;
            }
            if let Some(&(lo, lp)) = index.entries.last() {
                if o <= lo || p <= lp {
                    return None;
                }
            }
            index.entries.push((o, p));
        }
        Some(index)
    }
}

impl TimeIndex {
    pub fn append(&mut self, max_timestamp: i64, relative_offset: u32) {
        if let Some(&(last_ts, last_offset)) = self.entries.last() {
            if max_timestamp <= last_ts {
                return;
            }
            assert!(relative_offset > last_offset, "time index offsets must ascend");
        }
        self.entries.push((max_timestamp, relative_offset));
    }

    /// The relative offset from which a scan for the first batch with max
    /// timestamp >= `timestamp` may start: every batch before it is older.
    pub fn lookup(&self, timestamp: i64) -> u32 {
        let idx = self.entries.partition_point(|&(t, _)| t < timestamp);
        if idx == 0 {
            0
        } else {
            self.entries[idx - 1].1
        }
    }

    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    pub fn write_to(&self, path: &Path) -> Result<(), LogError> {
        let mut buf = Vec::with_capacity(self.entries.len() * 12);
        for &(t, o) in &self.entries {
            buf.extend_from_slice(&t.to_be_bytes());
            buf.extend_from_slice(&o.to_be_bytes());
        }
        crate::checkpoint::write_atomically(path, &buf)
    }

    pub fn read_from(path: &Path) -> Option<TimeIndex> {
        let bytes = std::fs::read(path).ok()?;
        if bytes.len() % 12 != 0 {
            return None;
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(12) {
            let t = i64::from_be_bytes(chunk[0..8].try_into().ok()?);
            let o = u32::from_be_bytes(chunk[8..12].try_into().ok()?);
            if let Some(&(lt, lo)) = index.entries.last() {
                if t <= lt || o <= lo {
                    return None;
                }
            }
            index.entries.push((t, o));
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_the_floor_entry() {
        let mut index = OffsetIndex::default();
        index.append(0, 0);
        index.append(10, 4096);
        index.append(20, 8192);
        assert_eq!(index.lookup(0), 0);
        assert_eq!(index.lookup(15), 4096);
        assert_eq!(index.lookup(20), 8192);
        assert_eq!(index.lookup(1000), 8192);
        index.truncate_to_position(8192);
        assert_eq!(index.lookup(1000), 4096);
    }

    #[test]
    fn time_lookup_starts_before_the_target() {
        let mut index = TimeIndex::default();
        index.append(100, 0);
        index.append(200, 10);
        index.append(150, 15); // not increasing: ignored
        index.append(300, 20);
        assert_eq!(index.lookup(50), 0);
        assert_eq!(index.lookup(200), 0);
        assert_eq!(index.lookup(201), 10);
        assert_eq!(index.lookup(10_000), 20);
    }

    #[test]
    fn indexes_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut offsets = OffsetIndex::default();
        offsets.append(0, 0);
        offsets.append(7, 5000);
        let path = dir.path().join("x.index");
        offsets.write_to(&path).unwrap();
        assert_eq!(OffsetIndex::read_from(&path, 6000), Some(offsets.clone()));
        assert_eq!(OffsetIndex::read_from(&path, 4000), None, "entry past the segment end");
        let mut times = TimeIndex::default();
        times.append(5, 0);
        times.append(9, 3);
        let path = dir.path().join("x.timeindex");
        times.write_to(&path).unwrap();
        assert_eq!(TimeIndex::read_from(&path), Some(times));
    }
}
