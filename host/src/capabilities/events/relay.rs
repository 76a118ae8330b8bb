//! The relay: moves committed events from the components' outboxes to the event bus, in the
//! order they were committed, and removes them from an outbox only once the bus acknowledged
//! them. A crash between the two publishes an event twice, never loses one; consumers tell
//! duplicates apart by the event id.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::Event;
use crate::capabilities::database::ComponentDb;

/// Where committed events go.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Publishes `events` in order; returns once the bus acknowledged every one of them.
    async fn publish(&self, events: &[Event]) -> anyhow::Result<()>;
    /// What the bus is, for the log.
    fn describe(&self) -> String;

    /// Starts delivering the events of `topics` to `component`, each to the route its policy
    /// names for the topic at the time.
    fn consume(
        self: Arc<Self>,
        component: String,
        topics: BTreeSet<String>,
        deliver: Arc<dyn super::Deliver>,
    ) -> anyhow::Result<()>;
}

/// Most events taken from one outbox at a time.
const BATCH: u32 = 200;
/// Most batches of one outbox per pass over all of them, so a busy component cannot hold back
/// the others' events.
const MAX_BATCHES_PER_PASS: usize = 10;
/// How often the outboxes are looked at without a wake-up: events committed by another host
/// sharing the database, or left behind by a crash.
const POLL: Duration = Duration::from_secs(1);
/// The longest wait between two attempts while the bus fails.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct Relay {
    bus: Arc<dyn Bus>,
    wake: Notify,
    /// The outbox of each component granted `events`, by name.
    outboxes: Mutex<BTreeMap<String, Arc<dyn ComponentDb>>>,
}

impl Relay {
    pub fn new(bus: Arc<dyn Bus>) -> Arc<Self> {
        Arc::new(Self {
            bus,
            wake: Notify::new(),
            outboxes: Mutex::new(BTreeMap::new()),
        })
    }

    /// Relays `component`'s outbox from now on (again after a deploy: the same database).
    /// The bus the events go to, for starting consumers.
    pub fn bus(&self) -> Arc<dyn Bus> {
        self.bus.clone()
    }

    pub fn watch(&self, component: &str, db: Arc<dyn ComponentDb>) {
        if let Ok(mut outboxes) = self.outboxes.lock() {
            outboxes.insert(component.to_string(), db);
        }
        self.wake.notify_one();
    }

    /// A request committed events: relay them now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Runs the relay until the process ends.
    pub fn start(self: &Arc<Self>) {
        tracing::info!(bus = %self.bus.describe(), "relaying committed events");
        let relay = self.clone();
        tokio::spawn(async move {
            let mut backoff = POLL;
            loop {
                match relay.drain().await {
                    Ok(true) => backoff = POLL,
                    Ok(false) => {
                        backoff = POLL;
                        tokio::select! {
                            () = relay.wake.notified() => {}
                            () = tokio::time::sleep(POLL) => {}
                        }
                    }
                    Err(error) => {
                        metrics::counter!("truevalue_events_relay_failures_total").increment(1);
                        tracing::warn!(error = %format!("{error:#}"), retry_in_ms = backoff.as_millis() as u64, "could not publish committed events; they stay in the outbox");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        });
    }

    /// Publishes up to [`MAX_BATCHES_PER_PASS`] batches of every outbox; whether some outbox
    /// may hold more.
    async fn drain(&self) -> anyhow::Result<bool> {
        let outboxes: Vec<(String, Arc<dyn ComponentDb>)> = match self.outboxes.lock() {
            Ok(outboxes) => outboxes
                .iter()
                .map(|(name, db)| (name.clone(), db.clone()))
                .collect(),
            Err(_) => return Ok(false),
        };
        // One outbox failing does not hold the others back; each pass takes a bounded share
        // of each.
        let (mut failed, mut more) = (None, false);
        for (component, db) in outboxes {
            for batch in 0..MAX_BATCHES_PER_PASS {
                match self.relay_batch(&component, db.as_ref()).await {
                    Ok(true) => more |= batch + 1 == MAX_BATCHES_PER_PASS,
                    Ok(false) => break,
                    Err(error) => {
                        failed = Some(error.context(format!("relaying {component}'s events")));
                        break;
                    }
                }
            }
        }
        failed.map_or(Ok(more), Err)
    }

    /// Relays one batch of `component`'s outbox; whether it was full (more may wait).
    async fn relay_batch(&self, component: &str, db: &dyn ComponentDb) -> anyhow::Result<bool> {
        let pending = db.outbox(BATCH).await?;
        if pending.is_empty() {
            return Ok(false);
        }
        let events: Vec<Event> = pending.iter().map(|(_, event)| event.clone()).collect();
        self.bus.publish(&events).await?;
        let sent: Vec<i64> = pending.iter().map(|(seq, _)| *seq).collect();
        db.outbox_sent(&sent).await?;
        for event in &events {
            metrics::counter!("truevalue_events_published_total", "component" => component.to_string(), "topic" => event.topic.clone())
                .increment(1);
        }
        Ok(pending.len() == BATCH as usize)
    }
}
