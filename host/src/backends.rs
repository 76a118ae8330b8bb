//! Shared backends beyond the databases: Redis and the Kafka brokers, when configured.
//! Absent, the host uses its in-memory and in-process equivalents and has nothing to check.

use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;

use crate::config::Config;

pub struct Backends {
    redis: Option<redis::Client>,
    kafka: Option<Vec<String>>,
}

impl Backends {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let redis = config
            .redis_url
            .as_ref()
            .map(|url| {
                redis::Client::open(url.expose_secret())
                    .context("redis_url (TRUEVALUE_REDIS_URL) is invalid")
            })
            .transpose()?;
        let kafka = config
            .kafka_brokers
            .as_ref()
            .map(|b| b.split(',').map(str::to_string).collect());
        Ok(Self { redis, kafka })
    }

    /// Checks each configured backend; for `/readyz`.
    pub async fn check(&self) -> Vec<(&'static str, anyhow::Result<()>)> {
        let mut checks = Vec::new();
        if let Some(client) = &self.redis {
            checks.push(("cache", ping_redis(client).await));
        }
        if let Some(brokers) = &self.kafka {
            checks.push(("broker", reach_any(brokers).await));
        }
        checks
    }
}

async fn ping_redis(client: &redis::Client) -> anyhow::Result<()> {
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    let _: String = redis::cmd("PING")
        .query_async(&mut connection)
        .await
        .context("PING")?;
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
