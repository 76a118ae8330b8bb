//! The in-memory limiter: one process's budget, for the embedded default.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::{Decision, Limiter, PERIOD, gcra};

/// Clients idle for a whole period are forgotten once the table grows past this.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Default)]
pub struct MemoryLimiter {
    clients: Mutex<HashMap<String, u64>>,
}

#[async_trait]
impl Limiter for MemoryLimiter {
    async fn check(&self, client: &str, limit: u64) -> anyhow::Result<Decision> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64;
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| anyhow::anyhow!("rate limit table poisoned"))?;
        if clients.len() > PRUNE_ABOVE {
            clients.retain(|_, tat| *tat + PERIOD.as_micros() as u64 > now);
        }
        let tat = clients.get(client).copied().unwrap_or(0);
        let (decision, new_tat) = gcra(tat, now, limit);
        if let Some(new_tat) = new_tat {
            clients.insert(client.to_string(), new_tat);
        }
        Ok(decision)
    }
}
