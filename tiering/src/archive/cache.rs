//! A bounded least-recently-used cache, weighed in bytes. Remote reads keep
//! decoded row groups and file footers here so that a consumer replaying
//! history, and the read-ahead running in front of it, fetch each object
//! range once.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

struct Entry<V> {
    value: Arc<V>,
    weight: u64,
    tick: u64,
}

struct Inner<K, V> {
    entries: HashMap<K, Entry<V>>,
    /// Entries by last use, oldest first.
    by_use: BTreeMap<u64, K>,
    weight: u64,
    tick: u64,
}

/// An LRU cache holding at most `capacity` bytes (by the weights given on insert).
pub struct Lru<K, V> {
    capacity: u64,
    inner: Mutex<Inner<K, V>>,
}

impl<K: Clone + Eq + Hash, V> Lru<K, V> {
    pub fn new(capacity: u64) -> Lru<K, V> {
        Lru { capacity, inner: Mutex::new(Inner { entries: HashMap::new(), by_use: BTreeMap::new(), weight: 0, tick: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        // The cache holds no invariant a panicking reader could break halfway.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.entries.get_mut(key)?;
        let old = std::mem::replace(&mut entry.tick, tick);
        let value = entry.value.clone();
        inner.by_use.remove(&old);
        inner.by_use.insert(tick, key.clone());
        Some(value)
    }

    pub fn contains(&self, key: &K) -> bool {
        self.lock().entries.contains_key(key)
    }

    /// Inserts a value, evicting the least recently used ones to make room.
    /// A value heavier than the whole cache is not kept.
    pub fn insert(&self, key: K, value: Arc<V>, weight: u64) {
        if weight > self.capacity {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.entries.remove(&key) {
            inner.by_use.remove(&old.tick);
            inner.weight -= old.weight;
        }
        while inner.weight + weight > self.capacity {
            let Some((_, oldest)) = inner.by_use.pop_first() else { break };
            if let Some(evicted) = inner.entries.remove(&oldest) {
                inner.weight -= evicted.weight;
            }
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.by_use.insert(tick, key.clone());
        inner.entries.insert(key, Entry { value, weight, tick });
        inner.weight += weight;
    }

    /// Bytes held.
    pub fn weight(&self) -> u64 {
        self.lock().weight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_within_the_budget() {
        let cache = Lru::new(100);
        cache.insert("a", Arc::new(1), 40);
        cache.insert("b", Arc::new(2), 40);
        assert_eq!(cache.get(&"a").as_deref(), Some(&1)); // a is now newer than b
        cache.insert("c", Arc::new(3), 40);
        assert!(cache.get(&"b").is_none(), "b was least recently used");
        assert!(cache.contains(&"a") && cache.contains(&"c"));
        assert_eq!(cache.weight(), 80);
        cache.insert("huge", Arc::new(4), 1_000);
        assert!(!cache.contains(&"huge"), "larger than the cache: not kept");
        cache.insert("a", Arc::new(5), 10);
        assert_eq!((cache.get(&"a").as_deref(), cache.weight()), (Some(&5), 50));
    }
}
