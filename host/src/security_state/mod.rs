//! The host's own security state: revoked sessions and the gateway signatures a node has
//! served. It lives apart from the components' cache, so no guest write can evict it: in
//! memory its own map, in Redis its own key prefix (`<redis_prefix>:host:`), outside every
//! component's namespace (`<redis_prefix>:cache:<component>:`).
//!
//! Every record has a TTL and is kept exactly that long: a revocation as long as the access
//! tokens it refuses can be unexpired, a replay mark for the signature window. Nothing is ever
//! dropped early to make room; a store that cannot take a record says so, and the caller fails
//! closed.

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

pub use memory::MemorySecurityState;
pub use redis::RedisSecurityState;

#[async_trait]
pub trait SecurityState: Send + Sync {
    /// Records `key` for `ttl`, replacing any earlier record.
    async fn record(&self, key: &str, ttl: Duration) -> anyhow::Result<()>;
    /// Records `key` for `ttl` unless it is recorded already; true when this call recorded it.
    /// Atomic, also across the hosts sharing a Redis.
    async fn record_once(&self, key: &str, ttl: Duration) -> anyhow::Result<bool>;
    /// Whether `key` is recorded and not expired.
    async fn recorded(&self, key: &str) -> anyhow::Result<bool>;
    /// Sets `key` to `value` for `ttl` unless it holds a larger value already (then only its
    /// TTL is extended). Atomic, also across the hosts sharing a Redis.
    async fn raise(&self, key: &str, value: u64, ttl: Duration) -> anyhow::Result<()>;
    /// The value `raise` stored under `key`, if not expired.
    async fn value(&self, key: &str) -> anyhow::Result<Option<u64>>;
}
