//! The cleaner's offset map: key digest -> latest offset, in memory of a
//! fixed size (Kafka's `SkimpyOffsetMap`).
//!
//! Keys are not stored, only a 128-bit digest of each (two SipHash passes
//! with different prefixes): a collision would make the cleaner drop a record
//! whose key merely shares the digest, which at 128 bits does not happen in
//! practice (Kafka's MD5 digest makes the same bet). Open addressing with
//! linear probing; the map is "full" at [`LOAD_FACTOR_PERCENT`] of its slots,
//! and the cleaner then cleans only the dirty range it managed to map.

use std::hash::{DefaultHasher, Hash, Hasher};

/// Bytes one slot takes: the digest and the offset.
pub const SLOT_BYTES: usize = 16 + 8;
/// The share of slots the map fills before it reports itself full (Kafka's
/// `log.cleaner.io.buffer.load.factor` is 0.9).
pub const LOAD_FACTOR_PERCENT: usize = 90;
/// The smallest map: a handful of keys, so a tiny configured size still cleans.
pub const SLOTS_MIN: usize = 16;

/// A bounded map from key digests to the latest offset seen for the key.
/// Invariant: `used <= max_entries < slots.len()`, so a probe always ends.
#[derive(Debug)]
pub struct OffsetMap {
    /// The digest of each slot; 0 marks an empty slot (digests are made odd).
    digests: Vec<u128>,
    offsets: Vec<i64>,
    used: usize,
    max_entries: usize,
    latest_offset: Option<i64>,
}

fn digest(key: &[u8]) -> u128 {
    let half = |prefix: u8| {
        let mut h = DefaultHasher::new();
        prefix.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    ((u128::from(half(0x5a)) << 64) | u128::from(half(0xa5))) | 1
}

impl OffsetMap {
    /// A map that uses about `memory_bytes` of memory.
    pub fn with_memory(memory_bytes: usize) -> OffsetMap {
        let slots = (memory_bytes / SLOT_BYTES).max(SLOTS_MIN);
        let max_entries = (slots * LOAD_FACTOR_PERCENT / 100).min(slots - 1);
        OffsetMap { digests: vec![0; slots], offsets: vec![0; slots], used: 0, max_entries, latest_offset: None }
    }

    fn slot_of(&self, d: u128) -> usize {
        let mut at = (d % self.digests.len() as u128) as usize;
        while self.digests[at] != 0 && self.digests[at] != d {
            at = (at + 1) % self.digests.len();
        }
        at
    }

    /// Records `offset` as the latest for `key`. Offsets must be put in
    /// ascending order. Returns false (and changes nothing) when `key` is new
    /// and the map is full.
    pub fn put(&mut self, key: &[u8], offset: i64) -> bool {
        let d = digest(key);
        let at = self.slot_of(d);
        if self.digests[at] == 0 {
            if self.used >= self.max_entries {
                return false;
            }
            self.digests[at] = d;
            self.used += 1;
        }
        self.offsets[at] = offset;
        self.latest_offset = Some(self.latest_offset.map_or(offset, |o| o.max(offset)));
        true
    }

    /// The latest offset put for `key`.
    pub fn get(&self, key: &[u8]) -> Option<i64> {
        let at = self.slot_of(digest(key));
        (self.digests[at] != 0).then(|| self.offsets[at])
    }

    /// Keys in the map.
    pub fn len(&self) -> usize {
        self.used
    }
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }
    /// Keys that still fit before the map is full.
    pub fn room(&self) -> usize {
        self.max_entries - self.used
    }
    /// The largest offset put, if any.
    pub fn latest_offset(&self) -> Option<i64> {
        self.latest_offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_offset_per_key_and_refuses_when_full() {
        let mut map = OffsetMap::with_memory(0);
        assert_eq!(map.room(), SLOTS_MIN * LOAD_FACTOR_PERCENT / 100);
        let room = map.room();
        for i in 0..room {
            assert!(map.put(format!("k{i}").as_bytes(), i as i64));
        }
        assert!(!map.put(b"one too many", 1000), "full");
        assert!(map.put(b"k0", 2000), "an existing key is updated even when full");
        assert_eq!(map.get(b"k0"), Some(2000));
        assert_eq!(map.get(b"k1"), Some(1));
        assert_eq!(map.get(b"absent"), None);
        assert_eq!((map.len(), map.latest_offset()), (room, Some(2000)));
    }
}
