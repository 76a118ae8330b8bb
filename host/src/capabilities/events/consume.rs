//! Consumers: a component lists the topics it subscribes to in its policy, each with an
//! internal route, and the host delivers every event there as a CloudEvents HTTP request in the
//! binary binding (`ce-*` headers, the data as a JSON body), one at a time per topic, in order.
//!
//! A 2xx answer is success: only then does the consumer's position move past the event (its
//! offset is committed), so delivery is at least once. Anything else is retried after 0.1, 1
//! and 5 s; an event still refused then is parked on `<topic>.dlq` with the error, and the
//! consumer goes on. While the component is busy or not loaded, the event waits and no attempt
//! is counted.

use std::time::Duration;

use async_trait::async_trait;

use super::{Bus, Event};

/// Waits between the attempts at one event.
pub const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_secs(1),
    Duration::from_secs(5),
];
/// Wait before another try while the component cannot take the event at all.
const UNAVAILABLE_WAIT: Duration = Duration::from_millis(500);
/// Longest error kept on a parked event.
const MAX_ERROR_BYTES: usize = 1000;

/// Why one delivery did not succeed.
pub enum Refusal {
    /// The component handled the event and failed (an answer other than 2xx, a trap, a
    /// timeout): an attempt.
    Failed(String),
    /// The component could not take it (busy, not loaded): not the event's fault.
    Unavailable(String),
}

/// Hands one event to a component's route.
#[async_trait]
pub trait Deliver: Send + Sync {
    async fn deliver(&self, component: &str, event: &Event) -> Result<(), Refusal>;
}

/// Delivers `event` until the component accepts it, or parks it on the dead-letter topic after
/// the last retry; while the dead-letter topic cannot be written (the bus is down), tries that
/// again every second. Only then may the caller move past the event.
pub async fn deliver_or_park(deliver: &dyn Deliver, bus: &dyn Bus, component: &str, event: &Event) {
    let mut attempts = 0;
    let error = loop {
        match deliver.deliver(component, event).await {
            Ok(()) => return,
            Err(Refusal::Unavailable(why)) => {
                tracing::debug!(%component, topic = %event.topic, %why, "waiting to deliver an event");
                tokio::time::sleep(UNAVAILABLE_WAIT).await;
            }
            Err(Refusal::Failed(error)) => match RETRY_DELAYS.get(attempts) {
                Some(delay) => {
                    attempts += 1;
                    tracing::info!(%component, topic = %event.topic, id = %event.id(), attempt = attempts, %error, "an event was refused; retrying");
                    tokio::time::sleep(*delay).await;
                }
                None => break error,
            },
        }
    };
    tracing::warn!(%component, topic = %event.topic, id = %event.id(), %error, "an event kept failing; parked on the dead-letter topic");
    let parked = dead_letter(event, component, &error);
    while let Err(error) = bus.publish(std::slice::from_ref(&parked)).await {
        tracing::warn!(%component, topic = %parked.topic, error = %format!("{error:#}"), "cannot park an event; trying again");
        tokio::time::sleep(UNAVAILABLE_WAIT * 2).await;
    }
    metrics::counter!("truevalue_events_dead_lettered_total", "component" => component.to_string(), "topic" => event.topic.clone())
        .increment(1);
}

/// `event` for `<topic>.dlq`, with the consumer that gave up on it and its last error.
fn dead_letter(event: &Event, component: &str, error: &str) -> Event {
    let mut parked = event.clone();
    parked.topic = format!("{}.dlq", event.topic);
    parked
        .attributes
        .insert("dlqconsumer".into(), component.to_string());
    parked.attributes.insert(
        "dlqerror".into(),
        super::cut(error, MAX_ERROR_BYTES).to_string(),
    );
    parked
}
