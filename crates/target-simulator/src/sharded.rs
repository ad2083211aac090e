//! A map from profile to state split into independently locked shards, so that
//! concurrent requests for different profiles rarely wait for each other.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::store::ProfileKey;

/// Enough shards that two to a few dozen worker threads seldom meet on one lock.
const SHARDS: usize = 64;

/// `HashMap<ProfileKey, V>` behind [`SHARDS`] mutexes chosen by the key's hash.
#[derive(Debug)]
pub(crate) struct Sharded<V> {
    shards: Box<[Mutex<HashMap<ProfileKey, V>>]>,
    hasher: RandomState,
}

impl<V> Sharded<V> {
    /// An empty map.
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// The locked shard that holds `key`. A panic while a shard was held cannot leave a
    /// map half-written in a way that matters here, so poisoning is ignored.
    pub(crate) fn shard(&self, key: &ProfileKey) -> MutexGuard<'_, HashMap<ProfileKey, V>> {
        let index = (self.hasher.hash_one(key) as usize) % self.shards.len();
        lock(&self.shards[index])
    }

    /// Calls `visit` on every entry, one shard locked at a time.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&ProfileKey, &V)) {
        for shard in self.shards.iter() {
            for (key, value) in lock(shard).iter() {
                visit(key, value);
            }
        }
    }

    /// Removes every entry.
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            lock(shard).clear();
        }
    }
}

/// Locks `mutex`, ignoring poisoning (see [`Sharded::shard`]).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
