//! A partition's manifest: the list of its archived segments, stored as
//! `_silt/topic=<topic>/partition=<n>/manifest.json` (apart from them: see
//! `layout`). It is the archive's index: reads find files
//! through it and never list the bucket, and a file is part of the archive
//! only once the manifest names it.
//!
//! Invariants: entries are in offset order and do not overlap; every entry's
//! file name is derived from its offsets (so re-uploading a segment after a
//! crash overwrites the same object instead of adding a duplicate);
//! `log_start_offset` never moves back.

use serde::{Deserialize, Serialize};

/// The manifest's layout version.
pub const MANIFEST_VERSION: u32 = 1;
/// The manifest's object name (within its partition's metadata prefix).
pub const MANIFEST_FILE: &str = "manifest.json";

/// One archived segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedSegment {
    /// The object name within the partition's prefix.
    pub file: String,
    pub base_offset: i64,
    pub last_offset: i64,
    /// Smallest and largest record timestamp (ms); -1 when it holds no records.
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// Size of the Parquet object.
    pub size_bytes: u64,
    /// Size of the record batches the segment held on local disk (what
    /// `retention.bytes` counts).
    pub segment_bytes: u64,
    pub rows: u64,
    /// When the upload completed (ms since the epoch).
    pub archived_at_ms: i64,
}

impl ArchivedSegment {
    pub fn next_offset(&self) -> i64 {
        self.last_offset + 1
    }
}

/// The object name of a segment: both offsets zero-padded to 20 digits, so
/// names sort in offset order.
pub fn file_name(base_offset: i64, last_offset: i64) -> String {
    format!("{base_offset:020}-{last_offset:020}.parquet")
}

/// The archived part of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub topic: String,
    pub partition: i32,
    /// The topic's id: a recreated topic of the same name must not adopt the
    /// old topic's archive.
    pub topic_id: String,
    /// Offsets below this are deleted (retention, DeleteRecords) even if a
    /// listed file still holds them.
    pub log_start_offset: i64,
    pub segments: Vec<ArchivedSegment>,
    /// Files dropped from `segments` whose deletion is not yet confirmed;
    /// retried when the partition next opens.
    #[serde(default)]
    pub deleting: Vec<String>,
    /// The leader epoch of the writer that saved this manifest. A writer with
    /// an older epoch (a deposed leader) never overwrites it. Manifests
    /// written before clusters existed have none: they read as -1.
    #[serde(default = "no_epoch")]
    pub leader_epoch: i32,
}

fn no_epoch() -> i32 {
    -1
}

impl Manifest {
    pub fn new(topic: &str, partition: i32, topic_id: &str) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            topic: topic.to_owned(),
            partition,
            topic_id: topic_id.to_owned(),
            log_start_offset: 0,
            segments: Vec::new(),
            deleting: Vec::new(),
            leader_epoch: -1,
        }
    }

    /// The first offset the archive can serve, if it holds any.
    pub fn start_offset(&self) -> Option<i64> {
        let first = self.segments.first()?;
        Some(first.base_offset.max(self.log_start_offset))
    }

    /// One past the last archived offset: where the next upload continues.
    /// Once retention has emptied the archive, its start offset (so that
    /// segments deleted from the archive are not uploaded again).
    pub fn end_offset(&self) -> Option<i64> {
        match self.segments.last() {
            Some(last) => Some(last.next_offset()),
            None => (self.log_start_offset > 0).then_some(self.log_start_offset),
        }
    }

    /// The segment holding `offset`, or else the first one after it (offsets
    /// can be missing between segments when retention removed an unarchived
    /// local segment). `None` past the end.
    pub fn find(&self, offset: i64) -> Option<&ArchivedSegment> {
        let at = self.segments.partition_point(|s| s.last_offset < offset);
        self.segments.get(at)
    }

    /// Adds a newly uploaded segment. Refuses one that overlaps what is
    /// already listed (a bug in the caller, or a stale upload after a restart).
    pub fn push(&mut self, segment: ArchivedSegment) -> Result<(), String> {
        if let Some(last) = self.segments.last() {
            if segment.base_offset <= last.last_offset {
                return Err(format!("segment {}..={} overlaps the archive, which ends at {}", segment.base_offset, segment.last_offset, last.last_offset));
            }
        }
        self.segments.push(segment);
        Ok(())
    }

    /// Moves the start forward and drops the segments wholly below it,
    /// returning them (their files are deleted after the manifest is saved).
    pub fn advance_start(&mut self, offset: i64) -> Vec<ArchivedSegment> {
        if offset <= self.log_start_offset {
            return Vec::new();
        }
        self.log_start_offset = offset;
        let keep_from = self.segments.partition_point(|s| s.next_offset() <= offset);
        self.segments.drain(..keep_from).collect()
    }

    /// Bytes of record batches archived at or past `from_offset` (sizes come
    /// from a stored file: the sum saturates rather than overflow).
    pub fn segment_bytes_from(&self, from_offset: i64) -> u64 {
        self.segments.iter().filter(|s| s.base_offset >= from_offset).fold(0, |sum, s| sum.saturating_add(s.segment_bytes))
    }

    /// Bytes of the archived files (saturating, like [`Manifest::segment_bytes_from`]).
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().fold(0, |sum, s| sum.saturating_add(s.size_bytes))
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest serialises")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Manifest, String> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if manifest.version != MANIFEST_VERSION {
            return Err(format!("unsupported manifest version {}", manifest.version));
        }
        if manifest.log_start_offset < 0 {
            return Err(format!("log start offset {} is negative", manifest.log_start_offset));
        }
        for s in &manifest.segments {
            // The last offset must leave room for the next one (`next_offset`).
            if s.base_offset < 0 || s.last_offset < s.base_offset || s.last_offset == i64::MAX {
                return Err(format!("segment {} cannot run from offset {} to {}", s.file, s.base_offset, s.last_offset));
            }
            if s.file != file_name(s.base_offset, s.last_offset) {
                return Err(format!("segment {} is not named after its offsets {}..={}", s.file, s.base_offset, s.last_offset));
            }
        }
        if manifest.segments.windows(2).any(|w| w[1].base_offset <= w[0].last_offset) {
            return Err("segments overlap or are out of order".into());
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: i64, last: i64) -> ArchivedSegment {
        ArchivedSegment {
            file: file_name(base, last),
            base_offset: base,
            last_offset: last,
            min_timestamp: base,
            max_timestamp: last,
            size_bytes: 10,
            segment_bytes: 100,
            rows: (last - base + 1) as u64,
            archived_at_ms: 0,
        }
    }

    #[test]
    fn finds_segments_and_refuses_overlaps() {
        let mut m = Manifest::new("t", 0, "id");
        assert_eq!((m.start_offset(), m.end_offset()), (None, None));
        m.push(seg(0, 9)).unwrap();
        m.push(seg(10, 19)).unwrap();
        m.push(seg(30, 39)).unwrap(); // a gap left by local retention
        assert!(m.push(seg(35, 50)).is_err());
        assert_eq!(m.find(5).unwrap().base_offset, 0);
        assert_eq!(m.find(19).unwrap().base_offset, 10);
        assert_eq!(m.find(25).unwrap().base_offset, 30, "the next segment after a gap");
        assert!(m.find(40).is_none());
        assert_eq!(m.end_offset(), Some(40));
    }

    #[test]
    fn advancing_the_start_drops_whole_segments_only() {
        let mut m = Manifest::new("t", 0, "id");
        for b in (0..50).step_by(10) {
            m.push(seg(b, b + 9)).unwrap();
        }
        let dropped = m.advance_start(25);
        assert_eq!(dropped.iter().map(|s| s.base_offset).collect::<Vec<_>>(), vec![0, 10]);
        assert_eq!(m.start_offset(), Some(25));
        assert!(m.advance_start(5).is_empty(), "the start never moves back");
        assert_eq!(m.segment_bytes_from(30), 200);
        let all = m.advance_start(50);
        assert_eq!(all.len(), 3);
        assert_eq!((m.start_offset(), m.end_offset()), (None, Some(50)), "an emptied archive remembers its end");
    }

    #[test]
    fn json_round_trips_and_rejects_damage() {
        let mut m = Manifest::new("t", 2, "id");
        m.push(seg(0, 9)).unwrap();
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        assert!(Manifest::from_json(b"{not json").is_err());
        let mut bad = m.clone();
        bad.segments.push(seg(5, 20));
        assert!(Manifest::from_json(&bad.to_json()).is_err());
        assert_eq!(file_name(1, 22), "00000000000000000001-00000000000000000022.parquet");
    }

    /// Found by running hand-made manifests through the `manifest` fuzz target
    /// (fuzz/fuzz_targets/manifest.rs): a last offset of i64::MAX overflowed
    /// `next_offset`, and file sizes near u64::MAX overflowed the size sums.
    #[test]
    fn offsets_and_names_a_segment_cannot_have_are_refused() {
        let with = |segments: Vec<ArchivedSegment>| {
            let mut m = Manifest::new("t", 0, "id");
            m.segments = segments;
            Manifest::from_json(&m.to_json())
        };
        let mut to_the_end = seg(0, 9);
        (to_the_end.last_offset, to_the_end.file) = (i64::MAX, file_name(0, i64::MAX));
        let err = with(vec![to_the_end]).unwrap_err();
        assert!(err.contains("cannot run from offset 0 to 9223372036854775807"), "{err}");
        let mut backwards = seg(0, 9);
        (backwards.base_offset, backwards.last_offset, backwards.file) = (5, 1, file_name(5, 1));
        assert!(with(vec![backwards]).unwrap_err().contains("cannot run from offset 5 to 1"));
        assert!(with(vec![seg(-3, 1)]).unwrap_err().contains("cannot run from offset -3"));
        let mut renamed = seg(0, 9);
        renamed.file = "../../elsewhere.parquet".into();
        assert!(with(vec![renamed]).unwrap_err().contains("not named after its offsets"));
        let mut m = Manifest::new("t", 0, "id");
        m.log_start_offset = -1;
        assert!(Manifest::from_json(&m.to_json()).unwrap_err().contains("negative"));
    }

    #[test]
    fn sizes_near_the_limit_saturate() {
        let mut m = Manifest::new("t", 0, "id");
        for b in [0, 10] {
            let mut s = seg(b, b + 9);
            (s.size_bytes, s.segment_bytes) = (u64::MAX, u64::MAX);
            m.push(s).unwrap();
        }
        let m = Manifest::from_json(&m.to_json()).unwrap();
        assert_eq!((m.size_bytes(), m.segment_bytes_from(0)), (u64::MAX, u64::MAX));
    }

    #[test]
    fn a_manifest_without_an_epoch_reads_as_epoch_minus_one() {
        let m = Manifest::new("t", 0, "id");
        let mut json: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        json.as_object_mut().unwrap().remove("leader_epoch");
        let old = Manifest::from_json(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(old.leader_epoch, -1);
        assert_eq!(old, m);
    }
}
