//! The Redis cache: entries shared by every host process, under the deployment's key prefix.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;

use super::{CacheStore, Error};
use crate::backends::RedisConnections;

/// KEYS[1]; ARGV: delta, ttl in ms (0: none). The TTL is set only when the key is created.
const INCREMENT: &str = r"
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created and tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return value
";

pub struct RedisCache {
    redis: RedisConnections,
    increment: redis::Script,
}

impl RedisCache {
    pub fn new(redis: RedisConnections) -> Self {
        Self {
            redis,
            increment: redis::Script::new(INCREMENT),
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, Error> {
        self.redis
            .connection()
            .await
            .map_err(|e| Error::Unavailable(format!("{e:#}")))
    }

    /// A wrong-type or non-integer value is the component's mistake; anything else means Redis
    /// is not answering, and the shared connection is reopened next time.
    async fn failed(&self, error: redis::RedisError) -> Error {
        if error.kind() == redis::ErrorKind::TypeError || error.code().is_some() {
            Error::Invalid(error.to_string())
        } else {
            self.redis.forget().await;
            Error::Unavailable(error.to_string())
        }
    }
}

fn millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

#[async_trait]
impl CacheStore for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let mut connection = self.connection().await?;
        match redis::cmd("GET")
            .arg(self.redis.key(key))
            .query_async(&mut connection)
            .await
        {
            Ok(value) => Ok(value),
            Err(e) => Err(self.failed(e).await),
        }
    }

    async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
        only_if_absent: bool,
    ) -> Result<bool, Error> {
        let mut command = redis::cmd("SET");
        command.arg(self.redis.key(key)).arg(value);
        if let Some(ttl) = ttl {
            command.arg("PX").arg(millis(ttl));
        }
        if only_if_absent {
            command.arg("NX");
        }
        let mut connection = self.connection().await?;
        match command.query_async::<Option<String>>(&mut connection).await {
            Ok(stored) => Ok(stored.is_some()),
            Err(e) => Err(self.failed(e).await),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool, Error> {
        let mut connection = self.connection().await?;
        match redis::cmd("DEL")
            .arg(self.redis.key(key))
            .query_async::<u64>(&mut connection)
            .await
        {
            Ok(removed) => Ok(removed > 0),
            Err(e) => Err(self.failed(e).await),
        }
    }

    async fn increment(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, Error> {
        let mut connection = self.connection().await?;
        let result = self
            .increment
            .key(self.redis.key(key))
            .arg(delta)
            .arg(ttl.map_or(0, millis))
            .invoke_async(&mut connection)
            .await;
        match result {
            Ok(value) => Ok(value),
            Err(e) => Err(self.failed(e).await),
        }
    }
}
