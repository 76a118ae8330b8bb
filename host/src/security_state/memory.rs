//! The in-memory security state of one process, for the embedded default.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use async_trait::async_trait;

use super::SecurityState;

/// A hard ceiling (~100 MB of keys). Records are bounded by their TTLs, so this is reached
/// only under a flood; then new records are refused (revoking fails, a node answers 503) rather
/// than older ones forgotten.
const MAX_RECORDS: usize = 1_000_000;

/// Expired records are swept at most this often, so a sweep's cost is spread over the writes.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub struct MemorySecurityState {
    inner: Mutex<Inner>,
    max_records: usize,
}

struct Inner {
    /// Each key's expiry and value (`record` stores 0).
    records: HashMap<String, (Instant, u64)>,
    next_sweep: Instant,
}

impl Default for MemorySecurityState {
    fn default() -> Self {
        Self::with_ceiling(MAX_RECORDS)
    }
}

impl MemorySecurityState {
    fn with_ceiling(max_records: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                records: HashMap::new(),
                next_sweep: Instant::now(),
            }),
            max_records,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner, Instant) -> T) -> anyhow::Result<T> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| anyhow!("the security state is poisoned"))?;
        Ok(f(&mut inner, Instant::now()))
    }
}

impl Inner {
    fn live(&self, key: &str, now: Instant) -> bool {
        self.records.get(key).is_some_and(|&(until, _)| until > now)
    }

    /// Makes room for one more record by dropping expired ones only.
    fn room(&mut self, now: Instant, max: usize) -> anyhow::Result<()> {
        if now >= self.next_sweep || self.records.len() >= max {
            self.records.retain(|_, (until, _)| *until > now);
            self.next_sweep = now + SWEEP_EVERY;
        }
        if self.records.len() >= max {
            return Err(anyhow!(
                "the host's security state holds {max} unexpired records; refusing more"
            ));
        }
        Ok(())
    }

    fn insert(&mut self, key: &str, ttl: Duration, now: Instant, max: usize) -> anyhow::Result<()> {
        self.insert_value(key, 0, ttl, now, max)
    }

    fn insert_value(
        &mut self,
        key: &str,
        value: u64,
        ttl: Duration,
        now: Instant,
        max: usize,
    ) -> anyhow::Result<()> {
        if !self.records.contains_key(key) {
            self.room(now, max)?;
        }
        self.records.insert(key.to_string(), (now + ttl, value));
        Ok(())
    }
}

#[async_trait]
impl SecurityState for MemorySecurityState {
    async fn record(&self, key: &str, ttl: Duration) -> anyhow::Result<()> {
        self.with(|inner, now| inner.insert(key, ttl, now, self.max_records))?
    }

    async fn record_once(&self, key: &str, ttl: Duration) -> anyhow::Result<bool> {
        self.with(|inner, now| {
            if inner.live(key, now) {
                return Ok(false);
            }
            inner.insert(key, ttl, now, self.max_records).map(|()| true)
        })?
    }

    async fn recorded(&self, key: &str) -> anyhow::Result<bool> {
        self.with(|inner, now| inner.live(key, now))
    }

    async fn raise(&self, key: &str, value: u64, ttl: Duration) -> anyhow::Result<()> {
        self.with(|inner, now| {
            let value = match inner.records.get(key) {
                Some(&(until, held)) if until > now => held.max(value),
                _ => value,
            };
            inner.insert_value(key, value, ttl, now, self.max_records)
        })?
    }

    async fn value(&self, key: &str) -> anyhow::Result<Option<u64>> {
        self.with(|inner, now| match inner.records.get(key) {
            Some(&(until, value)) if until > now => Some(value),
            _ => None,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_full_store_refuses_new_records_and_keeps_the_old_ones() {
        let state = MemorySecurityState::with_ceiling(3);
        for key in ["a", "b", "c"] {
            state.record(key, MINUTE).await.unwrap();
        }
        assert!(state.record("d", MINUTE).await.is_err());
        assert!(state.record_once("d", MINUTE).await.is_err());
        for key in ["a", "b", "c"] {
            assert!(state.recorded(key).await.unwrap(), "{key} is kept");
        }
        // Renewing a record it holds needs no room.
        state.record("a", MINUTE).await.unwrap();
    }

    #[tokio::test]
    async fn expired_records_make_room_and_are_not_reported() {
        let state = MemorySecurityState::with_ceiling(2);
        state.record("old", Duration::from_millis(1)).await.unwrap();
        state.record("kept", MINUTE).await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!state.recorded("old").await.unwrap());
        state.record("new", MINUTE).await.unwrap();
        assert!(state.recorded("kept").await.unwrap());
        assert!(state.recorded("new").await.unwrap());
    }

    #[tokio::test]
    async fn raise_keeps_the_largest_value_until_it_expires() {
        let state = MemorySecurityState::default();
        assert_eq!(state.value("v").await.unwrap(), None);
        state.raise("v", 5, MINUTE).await.unwrap();
        state.raise("v", 3, MINUTE).await.unwrap();
        assert_eq!(state.value("v").await.unwrap(), Some(5));
        state.raise("v", 9, MINUTE).await.unwrap();
        assert_eq!(state.value("v").await.unwrap(), Some(9));
        state
            .raise("brief", 1, Duration::from_millis(1))
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(state.value("brief").await.unwrap(), None);
    }

    #[tokio::test]
    async fn record_once_is_true_only_the_first_time_within_the_ttl() {
        let state = MemorySecurityState::default();
        assert!(state.record_once("sig", MINUTE).await.unwrap());
        assert!(!state.record_once("sig", MINUTE).await.unwrap());
        state
            .record_once("brief", Duration::from_millis(1))
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(state.record_once("brief", MINUTE).await.unwrap());
    }
}
