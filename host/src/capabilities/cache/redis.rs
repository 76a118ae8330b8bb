//! The Redis cache: entries shared by every host process, under the deployment's key prefix.
//!
//! A component's entries are `<prefix>:cache:<component>:<key>`. Its quota is kept beside
//! them, outside every component's namespace, under `<prefix>:cache-quota:<component>:`: a
//! sorted set of its keys by expiry time, a hash of what each costs, and the byte total. Every
//! write runs as one Lua script that first forgets the component's expired entries, then checks
//! and updates these with the write, so the quota is exact across hosts and a component cannot
//! write around it.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;

use super::{COUNTER_BYTES, CacheStore, Error, Space};
use crate::backends::RedisConnections;

/// KEYS: entry, expiry index, costs, byte total. Sets `now` (ms, Redis's clock) and forgets the
/// entries that have expired (Redis drops the entries themselves).
const FORGET_EXPIRED: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
for _, member in ipairs(gone) do
  local cost = redis.call('HGET', KEYS[3], member)
  if cost then
    redis.call('DECRBY', KEYS[4], cost)
    redis.call('HDEL', KEYS[3], member)
  end
  redis.call('ZREM', KEYS[2], member)
end
";

/// Whether an entry of cost `cost` at ARGV[1] fits quota `max_entries`, `max_bytes`; returns the
/// cost of the entry it replaces (0 if none) or raises QUOTA.
const CHECK_QUOTA: &str = r"
local function admit(cost, max_entries, max_bytes)
  local old = redis.call('HGET', KEYS[3], ARGV[1])
  local count = redis.call('ZCARD', KEYS[2])
  local bytes = tonumber(redis.call('GET', KEYS[4]) or '0')
  if old then old = tonumber(old) else old = 0; count = count + 1 end
  if count > tonumber(max_entries) or bytes - old + cost > tonumber(max_bytes) then
    return nil
  end
  return old
end
local function track(cost, old, score)
  redis.call('ZADD', KEYS[2], score, ARGV[1])
  redis.call('HSET', KEYS[3], ARGV[1], cost)
  redis.call('INCRBY', KEYS[4], cost - old)
end
";

/// ARGV: key, value, ttl ms (0: none), only if absent (1/0), max entries, max bytes.
/// Returns 1 when stored, 0 when the key was present and only-if-absent was asked.
const SET: &str = r"
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local cost = #ARGV[1] + #ARGV[2]
local old = admit(cost, ARGV[5], ARGV[6])
if old == nil then return redis.error_reply('QUOTA the cache quota is used up') end
local score = '+inf'
if tonumber(ARGV[3]) > 0 then
  score = now + tonumber(ARGV[3])
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', score)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
track(cost, old, score)
return 1
";

/// ARGV: key. Returns how many entries were removed.
const DELETE: &str = r"
local removed = redis.call('DEL', KEYS[1])
local cost = redis.call('HGET', KEYS[3], ARGV[1])
if cost then
  redis.call('DECRBY', KEYS[4], cost)
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return removed
";

/// ARGV: key, delta, ttl ms (0: none), max entries, max bytes, counter cost. The TTL is set
/// only when the key is created.
const INCREMENT: &str = r"
local created = redis.call('EXISTS', KEYS[1]) == 0
local cost = #ARGV[1] + tonumber(ARGV[6])
local old = admit(cost, ARGV[4], ARGV[5])
if old == nil then return redis.error_reply('QUOTA the cache quota is used up') end
local value = redis.call('INCRBY', KEYS[1], ARGV[2])
if created and tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIREAT', KEYS[1], now + tonumber(ARGV[3]))
end
local at = redis.call('PEXPIRETIME', KEYS[1])
local score = '+inf'
if at >= 0 then score = at end
track(cost, old, score)
return value
";

/// Where a component's key lives, under the deployment prefix: always below `cache:`, which
/// no host key (`host:`, `cache-quota:`, `ratelimit:`) is.
pub(crate) fn component_key(component: &str, key: &str) -> String {
    format!("cache:{component}:{key}")
}

pub struct RedisCache {
    redis: RedisConnections,
    set: redis::Script,
    delete: redis::Script,
    increment: redis::Script,
}

impl RedisCache {
    pub fn new(redis: RedisConnections) -> Self {
        let script =
            |body: &str| redis::Script::new(&format!("{FORGET_EXPIRED}{CHECK_QUOTA}{body}"));
        Self {
            redis,
            set: script(SET),
            delete: script(DELETE),
            increment: script(INCREMENT),
        }
    }

    /// The entry and the three quota keys of `key` in `space`, in the scripts' order.
    fn keys(&self, space: &Space, key: &str) -> [String; 4] {
        let quota = |part: &str| {
            self.redis
                .key(&format!("cache-quota:{}:{part}", space.component))
        };
        [
            self.redis.key(&component_key(&space.component, key)),
            quota("expiry"),
            quota("costs"),
            quota("bytes"),
        ]
    }

    async fn connection(&self) -> Result<MultiplexedConnection, Error> {
        self.redis
            .connection()
            .await
            .map_err(|e| Error::Unavailable(format!("{e:#}")))
    }

    /// A quota refusal or a wrong-type / non-integer value is the component's doing; anything
    /// else means Redis is not answering, and the shared connection is reopened next time.
    async fn failed(&self, space: &Space, error: redis::RedisError) -> Error {
        if error.code() == Some("QUOTA") {
            space.full()
        } else if error.kind() == redis::ErrorKind::TypeError || error.code().is_some() {
            Error::Invalid(error.to_string())
        } else {
            self.redis.forget().await;
            Error::Unavailable(error.to_string())
        }
    }
}

fn millis(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |ttl| (ttl.as_millis() as u64).max(1))
}

#[async_trait]
impl CacheStore for RedisCache {
    async fn get(&self, space: &Space, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let mut connection = self.connection().await?;
        let [entry, ..] = self.keys(space, key);
        match redis::cmd("GET")
            .arg(entry)
            .query_async(&mut connection)
            .await
        {
            Ok(value) => Ok(value),
            Err(e) => Err(self.failed(space, e).await),
        }
    }

    async fn set(
        &self,
        space: &Space,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        only_if_absent: bool,
    ) -> Result<bool, Error> {
        let mut connection = self.connection().await?;
        let result = self
            .set
            .key(&self.keys(space, key)[..])
            .arg(key)
            .arg(value)
            .arg(millis(ttl))
            .arg(u8::from(only_if_absent))
            .arg(space.max_entries)
            .arg(space.max_bytes)
            .invoke_async::<i64>(&mut connection)
            .await;
        match result {
            Ok(stored) => Ok(stored == 1),
            Err(e) => Err(self.failed(space, e).await),
        }
    }

    async fn delete(&self, space: &Space, key: &str) -> Result<bool, Error> {
        let mut connection = self.connection().await?;
        let result = self
            .delete
            .key(&self.keys(space, key)[..])
            .arg(key)
            .invoke_async::<u64>(&mut connection)
            .await;
        match result {
            Ok(removed) => Ok(removed > 0),
            Err(e) => Err(self.failed(space, e).await),
        }
    }

    async fn increment(
        &self,
        space: &Space,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, Error> {
        let mut connection = self.connection().await?;
        let result = self
            .increment
            .key(&self.keys(space, key)[..])
            .arg(key)
            .arg(delta)
            .arg(millis(ttl))
            .arg(space.max_entries)
            .arg(space.max_bytes)
            .arg(COUNTER_BYTES)
            .invoke_async(&mut connection)
            .await;
        match result {
            Ok(value) => Ok(value),
            Err(e) => Err(self.failed(space, e).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::component_key;
    use crate::policy::valid_name;

    /// Every key a component can reach, for any name the policies accept (one called `host`
    /// included) and any key it picks, lies under `cache:`; none under the host's prefixes.
    #[test]
    fn no_component_key_can_name_a_host_key() {
        for component in ["host", "cache", "cache_quota", "ratelimit", "revoked"] {
            assert!(valid_name(component));
            for key in [
                "x",
                ":host:revoked-session:s",
                "../host:x",
                "host:revoked-session:s",
            ] {
                let reachable = component_key(component, key);
                assert!(reachable.starts_with("cache:"), "{reachable}");
                for host in [
                    "host:",
                    "cache-quota:",
                    "ratelimit:",
                    "revoked-session:",
                    "gateway-signature:",
                ] {
                    assert!(!reachable.starts_with(host), "{reachable}");
                }
            }
        }
    }
}
