//! The in-memory cache: one process's entries, for the embedded default. Each component's
//! entries are kept in their own map with their own byte count, so the quota check is exact and
//! making room only ever drops the writing component's expired entries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{COUNTER_BYTES, CacheStore, Error, Space};

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
    /// What the entry counts against the quota.
    cost: u64,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

/// One component's entries.
#[derive(Default)]
struct Entries {
    map: HashMap<String, Entry>,
    bytes: u64,
}

impl Entries {
    fn live(&self, key: &str, now: Instant) -> Option<&Entry> {
        self.map.get(key).filter(|e| e.live(now))
    }

    fn fits(&self, space: &Space, key: &str, cost: u64) -> bool {
        let (count, bytes) = match self.map.get(key) {
            Some(old) => (self.map.len() as u64, self.bytes - old.cost),
            None => (self.map.len() as u64 + 1, self.bytes),
        };
        count <= space.max_entries && bytes + cost <= space.max_bytes
    }

    /// Whether an entry of `cost` at `key` fits the quota, dropping this component's expired
    /// entries first if it would not.
    fn admit(&mut self, space: &Space, key: &str, cost: u64, now: Instant) -> Result<(), Error> {
        if !self.fits(space, key, cost) {
            let mut freed = 0;
            self.map.retain(|_, e| {
                let keep = e.live(now);
                if !keep {
                    freed += e.cost;
                }
                keep
            });
            self.bytes -= freed;
        }
        match self.fits(space, key, cost) {
            true => Ok(()),
            false => Err(space.full()),
        }
    }

    fn put(&mut self, key: &str, entry: Entry) {
        self.bytes += entry.cost;
        if let Some(old) = self.map.insert(key.to_string(), entry) {
            self.bytes -= old.cost;
        }
    }

    fn remove(&mut self, key: &str) -> Option<Entry> {
        let old = self.map.remove(key)?;
        self.bytes -= old.cost;
        Some(old)
    }
}

#[derive(Default)]
pub struct MemoryCache {
    components: Mutex<HashMap<Arc<str>, Entries>>,
}

impl MemoryCache {
    fn with<T>(
        &self,
        space: &Space,
        f: impl FnOnce(&mut Entries, Instant) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut components = self
            .components
            .lock()
            .map_err(|_| Error::Unavailable("cache poisoned".into()))?;
        let entries = components.entry(space.component.clone()).or_default();
        f(entries, Instant::now())
    }
}

fn cost(key: &str, value_len: usize) -> u64 {
    (key.len() + value_len) as u64
}

#[async_trait]
impl CacheStore for MemoryCache {
    async fn get(&self, space: &Space, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.with(space, |entries, now| {
            if entries.map.get(key).is_some_and(|e| !e.live(now)) {
                entries.remove(key);
            }
            Ok(entries.live(key, now).map(|e| e.value.clone()))
        })
    }

    async fn set(
        &self,
        space: &Space,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        only_if_absent: bool,
    ) -> Result<bool, Error> {
        self.with(space, |entries, now| {
            if only_if_absent && entries.live(key, now).is_some() {
                return Ok(false);
            }
            let cost = cost(key, value.len());
            entries.admit(space, key, cost, now)?;
            entries.put(
                key,
                Entry {
                    value,
                    expires: ttl.map(|t| now + t),
                    cost,
                },
            );
            Ok(true)
        })
    }

    async fn delete(&self, space: &Space, key: &str) -> Result<bool, Error> {
        self.with(space, |entries, now| {
            Ok(entries.remove(key).is_some_and(|e| e.live(now)))
        })
    }

    async fn increment(
        &self,
        space: &Space,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, Error> {
        self.with(space, |entries, now| {
            let (value, expires) = match entries.live(key, now) {
                Some(entry) => (parse(&entry.value)?, entry.expires),
                None => (0, ttl.map(|t| now + t)),
            };
            let value = value
                .checked_add(delta)
                .ok_or_else(|| Error::Invalid("the counter would overflow".into()))?;
            let cost = key.len() as u64 + COUNTER_BYTES;
            entries.admit(space, key, cost, now)?;
            entries.put(
                key,
                Entry {
                    value: value.to_string().into_bytes(),
                    expires,
                    cost,
                },
            );
            Ok(value)
        })
    }
}

fn parse(value: &[u8]) -> Result<i64, Error> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Invalid("the value is not an integer".into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn space(component: &str, max_entries: u64, max_bytes: u64) -> Space {
        Space {
            component: component.into(),
            max_entries,
            max_bytes,
        }
    }

    fn quota_error(result: Result<bool, Error>) -> bool {
        matches!(result, Err(Error::Invalid(m)) if m.contains("quota"))
    }

    #[tokio::test]
    async fn a_component_past_its_quota_is_refused_and_others_keep_their_entries() {
        let cache = MemoryCache::default();
        let (greedy, other) = (space("greedy", 3, 1000), space("other", 3, 1000));
        cache
            .set(&other, "kept", b"v".to_vec(), None, false)
            .await
            .unwrap();
        for key in ["a", "b", "c"] {
            cache
                .set(&greedy, key, b"v".to_vec(), None, false)
                .await
                .unwrap();
        }
        assert!(quota_error(
            cache.set(&greedy, "d", b"v".to_vec(), None, false).await
        ));
        assert!(matches!(
            cache.increment(&greedy, "n", 1, None).await,
            Err(Error::Invalid(m)) if m.contains("quota")
        ));
        // Replacing one of its own entries needs no new room.
        cache
            .set(&greedy, "a", b"w".to_vec(), None, false)
            .await
            .unwrap();
        assert_eq!(
            cache.get(&other, "kept").await.unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(
            cache.get(&greedy, "kept").await.unwrap(),
            None,
            "namespaced"
        );
    }

    #[tokio::test]
    async fn bytes_count_keys_and_values_and_expired_entries_make_room() {
        let cache = MemoryCache::default();
        let s = space("c", 100, 10);
        cache.set(&s, "k", vec![0; 9], None, false).await.unwrap();
        assert!(quota_error(
            cache.set(&s, "j", vec![0; 1], None, false).await
        ));
        assert!(cache.delete(&s, "k").await.unwrap());
        cache
            .set(&s, "k", vec![0; 9], Some(Duration::from_millis(1)), false)
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        cache.set(&s, "j", vec![0; 9], None, false).await.unwrap();
    }
}
