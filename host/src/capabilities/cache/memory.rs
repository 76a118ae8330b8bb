//! The in-memory cache: one process's entries, for the embedded default.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{CacheStore, Error};

/// Past this many entries, expired ones are dropped, then arbitrary ones (a cache may evict).
const MAX_ENTRIES: usize = 100_000;

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

#[derive(Default)]
pub struct MemoryCache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl MemoryCache {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut HashMap<String, Entry>, Instant) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| Error::Unavailable("cache poisoned".into()))?;
        let now = Instant::now();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| e.live(now));
            while entries.len() >= MAX_ENTRIES {
                let Some(key) = entries.keys().next().cloned() else {
                    break;
                };
                entries.remove(&key);
            }
        }
        f(&mut entries, now)
    }
}

#[async_trait]
impl CacheStore for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.with(|entries, now| {
            Ok(entries
                .get(key)
                .filter(|e| e.live(now))
                .map(|e| e.value.clone()))
        })
    }

    async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        only_if_absent: bool,
    ) -> Result<bool, Error> {
        self.with(|entries, now| {
            if only_if_absent && entries.get(key).is_some_and(|e| e.live(now)) {
                return Ok(false);
            }
            entries.insert(
                key.to_string(),
                Entry {
                    value,
                    expires: ttl.map(|t| now + t),
                },
            );
            Ok(true)
        })
    }

    async fn delete(&self, key: &str) -> Result<bool, Error> {
        self.with(|entries, now| Ok(entries.remove(key).is_some_and(|e| e.live(now))))
    }

    async fn increment(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, Error> {
        self.with(|entries, now| {
            let current = match entries.get(key).filter(|e| e.live(now)) {
                Some(entry) => Some((parse(&entry.value)?, entry.expires)),
                None => None,
            };
            let (value, expires) = match current {
                Some((value, expires)) => (value, expires),
                None => (0, ttl.map(|t| now + t)),
            };
            let value = value
                .checked_add(delta)
                .ok_or_else(|| Error::Invalid("the counter would overflow".into()))?;
            entries.insert(
                key.to_string(),
                Entry {
                    value: value.to_string().into_bytes(),
                    expires,
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
