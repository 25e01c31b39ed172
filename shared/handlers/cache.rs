//! A bounded per-container map of facts that never change once they are
//! set (a conversation's room, a room's conversation), so a hot path need
//! not read them from the table again.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Entries kept per container; past that, the map starts over.
const CAPACITY: usize = 10_000;

pub struct Settled<K, V>(Mutex<HashMap<K, V>>);

impl<K, V> Default for Settled<K, V> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Settled<K, V> {
    pub fn get(&self, key: &K) -> Option<V> {
        self.0.lock().ok()?.get(key).cloned()
    }

    pub fn put(&self, key: &K, value: &V) {
        if let Ok(mut entries) = self.0.lock() {
            if entries.len() >= CAPACITY {
                entries.clear();
            }
            entries.insert(key.clone(), value.clone());
        }
    }
}
