//! The `cache` capability: a key-value cache namespaced per component, in Redis when configured
//! (shared by every host process) or in memory.

mod host;
mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use crate::bindings::cache::Error;
pub use host::CacheCtx;
pub use memory::MemoryCache;
pub use redis::RedisCache;

/// Where cache entries live. Keys arrive already namespaced by component.
#[async_trait]
pub trait CacheStore: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Stores the value; with `only_if_absent`, only when the key holds nothing. True if stored.
    async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        only_if_absent: bool,
    ) -> Result<bool, Error>;
    async fn delete(&self, key: &str) -> Result<bool, Error>;
    /// Adds `delta`; `ttl` applies when the key is created.
    async fn increment(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, Error>;
}
