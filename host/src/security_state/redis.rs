//! The security state in Redis, shared by every host of the deployment, under
//! `<redis_prefix>:host:`. A component's cache keys are all under `<redis_prefix>:cache:`, so
//! none can name, overwrite or delete these. Redis must not evict them either: README says
//! which eviction policy keeps them.

use std::time::Duration;

use async_trait::async_trait;

use super::SecurityState;
use crate::backends::RedisConnections;

pub struct RedisSecurityState {
    redis: RedisConnections,
}

impl RedisSecurityState {
    pub fn new(redis: RedisConnections) -> Self {
        Self { redis }
    }

    fn key(&self, key: &str) -> String {
        self.redis.key(&format!("host:{key}"))
    }

    /// Where the previous release kept the record (directly under the prefix, also outside
    /// every component's namespace). Read and written as well, so that hosts of both releases
    /// agree on revocations during a rolling upgrade and none revoked before it comes back.
    fn previous_key(&self, key: &str) -> String {
        self.redis.key(key)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        command: impl FnOnce() -> redis::Pipeline,
    ) -> anyhow::Result<T> {
        let mut connection = self.redis.connection().await?;
        match command().query_async::<T>(&mut connection).await {
            Ok(value) => Ok(value),
            Err(e) => {
                if e.code().is_none() {
                    self.redis.forget().await;
                }
                Err(anyhow::anyhow!("Redis: {e}"))
            }
        }
    }
}

/// Keeps the larger of the stored value and ARGV[1], and renews the TTL (ARGV[2] ms).
const RAISE: &str = "local held = tonumber(redis.call('GET', KEYS[1]) or '0') \
    local value = math.max(held, tonumber(ARGV[1])) \
    redis.call('SET', KEYS[1], string.format('%d', value), 'PX', ARGV[2]) return 1";

fn millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

#[async_trait]
impl SecurityState for RedisSecurityState {
    async fn record(&self, key: &str, ttl: Duration) -> anyhow::Result<()> {
        let ttl = millis(ttl);
        self.run::<()>(|| {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("SET")
                .arg(self.key(key))
                .arg(1)
                .arg("PX")
                .arg(ttl)
                .ignore()
                .cmd("SET")
                .arg(self.previous_key(key))
                .arg(1)
                .arg("PX")
                .arg(ttl)
                .ignore();
            pipe
        })
        .await
    }

    async fn record_once(&self, key: &str, ttl: Duration) -> anyhow::Result<bool> {
        let ttl = millis(ttl);
        let (stored,): (Option<String>,) = self
            .run(|| {
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(self.key(key))
                    .arg(1)
                    .arg("PX")
                    .arg(ttl)
                    .arg("NX");
                pipe
            })
            .await?;
        Ok(stored.is_some())
    }

    async fn raise(&self, key: &str, value: u64, ttl: Duration) -> anyhow::Result<()> {
        let ttl = millis(ttl);
        self.run::<()>(|| {
            let mut pipe = redis::pipe();
            pipe.cmd("EVAL")
                .arg(RAISE)
                .arg(1)
                .arg(self.key(key))
                .arg(value)
                .arg(ttl)
                .ignore();
            pipe
        })
        .await
    }

    async fn value(&self, key: &str) -> anyhow::Result<Option<u64>> {
        let (value,): (Option<u64>,) = self
            .run(|| {
                let mut pipe = redis::pipe();
                pipe.cmd("GET").arg(self.key(key));
                pipe
            })
            .await?;
        Ok(value)
    }

    async fn recorded(&self, key: &str) -> anyhow::Result<bool> {
        let (found,): (u64,) = self
            .run(|| {
                let mut pipe = redis::pipe();
                pipe.cmd("EXISTS")
                    .arg(self.key(key))
                    .arg(self.previous_key(key));
                pipe
            })
            .await?;
        Ok(found > 0)
    }
}
