//! The Redis limiter: every gateway process shares each client's budget. The GCRA step runs as
//! one script on the Redis server's clock, so it is atomic and immune to clock skew between
//! gateways.

use std::time::Duration;

use async_trait::async_trait;

use super::{Decision, Limiter, PERIOD};
use crate::backends::RedisConnections;

/// KEYS[1]: the client's key. ARGV: limit, period in µs. Returns {allowed, value}: remaining
/// requests when allowed, microseconds to wait when not. Times are µs since the epoch, exact
/// in Lua's doubles.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local interval = math.max(1, math.floor(period / limit))
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if now < allow_at then return {0, allow_at - now} end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((period - (new_tat - now)) / interval)}
";

pub struct RedisLimiter {
    redis: RedisConnections,
    script: redis::Script,
}

impl RedisLimiter {
    pub fn new(redis: RedisConnections) -> Self {
        Self {
            redis,
            script: redis::Script::new(GCRA),
        }
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn check(&self, client: &str, limit: u64) -> anyhow::Result<Decision> {
        let mut connection = self.redis.connection().await?;
        let key = self.redis.key(&format!("ratelimit:{client}"));
        let result: Result<(u64, u64), _> = self
            .script
            .key(key)
            .arg(limit.max(1))
            .arg(PERIOD.as_micros() as u64)
            .invoke_async(&mut connection)
            .await;
        let (allowed, value) = match result {
            Ok(answer) => answer,
            Err(error) => {
                self.redis.forget().await;
                return Err(error.into());
            }
        };
        Ok(match allowed {
            1 => Decision::Allowed { remaining: value },
            _ => Decision::Limited {
                retry_after: Duration::from_micros(value),
            },
        })
    }
}
