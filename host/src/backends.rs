//! Shared backends beyond the databases: Redis and the Kafka brokers, when configured.
//! Absent, the host keeps its cache in memory and has nothing to check. (No events are
//! published yet: the brokers are only checked, for `/readyz`.)

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use secrecy::ExposeSecret;
use tokio::sync::Mutex;

use crate::config::Config;

pub struct Backends {
    pub redis: Option<RedisConnections>,
    kafka: Option<Vec<String>>,
}

impl Backends {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let redis = match &config.redis_url {
            Some(url) => {
                let client = redis::Client::open(url.expose_secret())
                    .context("redis_url (TRUEVALUE_REDIS_URL) is invalid")?;
                Some(RedisConnections::new(client, &config.redis_prefix))
            }
            None => None,
        };
        let kafka = config
            .kafka_brokers
            .as_ref()
            .map(|b| b.split(',').map(str::to_string).collect());
        Ok(Self { redis, kafka })
    }

    /// Checks each configured backend; for `/readyz`.
    pub async fn check(&self) -> Vec<(&'static str, anyhow::Result<()>)> {
        let mut checks = Vec::new();
        if let Some(redis) = &self.redis {
            checks.push(("cache", ping_redis(redis).await));
        }
        if let Some(brokers) = &self.kafka {
            checks.push(("broker", reach_any(brokers).await));
        }
        checks
    }
}

async fn ping_redis(redis: &RedisConnections) -> anyhow::Result<()> {
    let mut connection = redis.connection().await?;
    let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut connection).await;
    if pong.is_err() {
        redis.forget().await;
    }
    pong.context("PING")?;
    Ok(())
}

/// A broker is reachable when one of the bootstrap addresses accepts a connection.
async fn reach_any(brokers: &[String]) -> anyhow::Result<()> {
    let mut last = anyhow::anyhow!("no brokers configured");
    for broker in brokers {
        match tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(broker),
        )
        .await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => last = anyhow::anyhow!("{broker}: {e}"),
            Err(_) => last = anyhow::anyhow!("{broker}: no answer within 1 s"),
        }
    }
    Err(last)
}

/// One multiplexed Redis connection shared by the whole process, opened on first use and
/// reopened after a failure; every key is under the configured prefix.
#[derive(Clone)]
pub struct RedisConnections {
    client: redis::Client,
    prefix: Arc<str>,
    current: Arc<Mutex<Option<MultiplexedConnection>>>,
}

impl RedisConnections {
    fn new(client: redis::Client, prefix: &str) -> Self {
        Self {
            client,
            prefix: prefix.into(),
            current: Arc::default(),
        }
    }

    pub async fn connection(&self) -> anyhow::Result<MultiplexedConnection> {
        let mut current = self.current.lock().await;
        if let Some(connection) = current.as_ref() {
            return Ok(connection.clone());
        }
        let connection = tokio::time::timeout(
            Duration::from_secs(2),
            self.client.get_multiplexed_async_connection(),
        )
        .await
        .context("connecting to Redis: no answer within 2 s")?
        .context("connecting to Redis")?;
        *current = Some(connection.clone());
        Ok(connection)
    }

    /// Drops the shared connection after an error, so the next call reconnects.
    pub async fn forget(&self) {
        *self.current.lock().await = None;
    }

    /// `suffix` under this deployment's prefix, so several deployments can share one Redis.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.prefix)
    }
}
