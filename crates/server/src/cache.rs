//! A small map of per-user values read from the store, each trusted for a while.
//!
//! The hub caches block lists and presence rules per user. Another process (the CLI, another
//! cluster node) may change them in the store: the hub clears the cache when the store's change
//! counter moves, and every entry also expires after a TTL. The map is bounded, so a server that
//! sees many distinct users does not keep them all forever.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    ttl: Duration,
    max: usize,
    map: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    /// Entries live `ttl`; beyond `max` entries, expired ones are dropped at the next insert,
    /// and if none had expired, all are.
    pub fn new(ttl: Duration, max: usize) -> Self {
        TtlCache {
            ttl,
            max: max.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The value for `k` if it was read less than the TTL ago.
    pub fn get(&self, k: &K) -> Option<V> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(k)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    pub fn insert(&self, k: K, v: V) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.max && !map.contains_key(&k) {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= self.max {
                map.clear();
            }
        }
        map.insert(k, (Instant::now(), v));
    }

    pub fn remove(&self, k: &K) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(k);
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire() {
        let c = TtlCache::new(Duration::from_millis(30), 10);
        c.insert("a", 1);
        assert_eq!(c.get(&"a"), Some(1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get(&"a"), None);
    }

    #[test]
    fn bounded() {
        let c = TtlCache::new(Duration::from_secs(60), 3);
        for i in 0..3 {
            c.insert(i, i);
        }
        assert_eq!(c.len(), 3);
        // Replacing an entry keeps the others.
        c.insert(1, 10);
        assert_eq!(c.get(&1), Some(10));
        assert_eq!(c.len(), 3);
        // A fourth entry, none expired: the map starts over rather than grow.
        c.insert(3, 3);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&3), Some(3));
        assert_eq!(c.get(&0), None);
    }

    #[test]
    fn expired_entries_make_room_first() {
        let c = TtlCache::new(Duration::from_millis(30), 2);
        c.insert("old", 1);
        std::thread::sleep(Duration::from_millis(40));
        c.insert("new", 2);
        c.insert("newer", 3);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&"new"), Some(2));
        assert_eq!(c.get(&"newer"), Some(3));
        c.remove(&"new");
        assert_eq!(c.get(&"new"), None);
    }
}
