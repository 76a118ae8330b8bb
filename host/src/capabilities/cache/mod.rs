//! The `cache` capability: a key-value cache namespaced per component, in Redis when configured
//! (shared by every host process) or in memory. Each component has a quota (entries and bytes,
//! from its policy's `[limits]`) that only its own writes use up: no component can push out
//! another's entries, and the host's own security state is not kept here at all
//! (`crate::security_state`).

mod host;
mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use crate::bindings::cache::Error;
pub use host::CacheCtx;
pub use memory::MemoryCache;
pub use redis::RedisCache;

/// A counter is charged as its key plus this many bytes (the longest `i64` in decimal).
pub const COUNTER_BYTES: u64 = 20;

/// One component's part of the cache: its namespace and its quota. An entry costs the bytes of
/// its key plus those of its value; an expired entry costs nothing.
#[derive(Debug, Clone)]
pub struct Space {
    pub component: Arc<str>,
    pub max_entries: u64,
    pub max_bytes: u64,
}

impl Space {
    /// The error a write past the quota gets.
    pub fn full(&self) -> Error {
        Error::Invalid(format!(
            "the cache quota of `{}` is used up ({} entries, {} bytes of keys and values); \
             delete entries, let them expire, or raise limits.cache_max_entries / \
             limits.cache_max_bytes in its policy",
            self.component, self.max_entries, self.max_bytes
        ))
    }
}

/// Where cache entries live. Keys arrive as the component chose them (already checked); the
/// store keeps each component's apart and enforces its quota.
#[async_trait]
pub trait CacheStore: Send + Sync {
    async fn get(&self, space: &Space, key: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Stores the value; with `only_if_absent`, only when the key holds nothing. True if stored.
    /// Past the quota (after dropping the component's expired entries): `space.full()`.
    async fn set(
        &self,
        space: &Space,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        only_if_absent: bool,
    ) -> Result<bool, Error>;
    async fn delete(&self, space: &Space, key: &str) -> Result<bool, Error>;
    /// Adds `delta`; `ttl` applies when the key is created. Charged as `COUNTER_BYTES`.
    async fn increment(
        &self,
        space: &Space,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, Error>;
}
