//! The `events` capability: a component queues CloudEvents during a request; the host writes
//! them into an outbox in the request's own transaction when it commits, and the [`Relay`]
//! hands the outbox to the event bus — Kafka when brokers are configured, else the in-process
//! bus — removing each event only once the bus acknowledged it.
//!
//! What an event says about its origin (actor, organization by default, request id, client IP,
//! user agent, source, time) comes from the verified request, never from the component.

mod bus;
mod consume;
mod kafka;
mod relay;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use bus::LocalBus;
pub use consume::{Deliver, Refusal};
pub use kafka::KafkaBus;
pub use relay::{Bus, Relay};

use crate::bindings::events::{Event as Published, Host};
use crate::bindings::handler::Request;

/// Most events one request may queue.
pub const MAX_PER_REQUEST: usize = 100;
/// Largest `data` of one event, in bytes.
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// Longest subject, in characters.
const MAX_SUBJECT_CHARS: usize = 200;
/// Longest type, in bytes.
const MAX_TYPE_BYTES: usize = 100;
/// Longest topic, in bytes.
const MAX_TOPIC_BYTES: usize = 200;
/// Longest user agent kept on an event, in bytes.
const MAX_USER_AGENT_BYTES: usize = 512;
/// The content type of every event's data.
pub const CONTENT_TYPE: &str = "application/json";

/// Whether `topic` may be named in a policy: `[a-z0-9._-]`, not a dead-letter topic.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_BYTES
        && !topic.ends_with(".dlq")
        && topic
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// One CloudEvent as the outbox and the buses carry it: the Kafka binary binding's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub topic: String,
    /// The partition key: the organization's id, or empty outside any organization.
    pub key: String,
    /// The CloudEvents attributes and extensions, by name (`id`, `type`, `orgid`, …), without
    /// `datacontenttype`, which is always [`CONTENT_TYPE`].
    pub attributes: BTreeMap<String, String>,
    /// The JSON data.
    pub data: String,
}

impl Event {
    pub fn id(&self) -> &str {
        self.attributes.get("id").map_or("", String::as_str)
    }

    /// The attributes as JSON, as the outbox stores them.
    pub fn attributes_json(&self) -> String {
        serde_json::to_string(&self.attributes).unwrap_or_else(|_| "{}".into())
    }

    /// An event read back from the outbox.
    fn from_parts(topic: String, key: String, attributes: &str, data: String) -> Self {
        Self {
            topic,
            key,
            attributes: serde_json::from_str(attributes).unwrap_or_default(),
            data,
        }
    }

    /// Events read back as `(place, topic, key, attributes, data)` rows, with their places.
    pub fn from_rows(rows: Vec<StoredRow>) -> Vec<(i64, Event)> {
        rows.into_iter()
            .map(|(place, topic, key, attributes, data)| {
                (place, Event::from_parts(topic, key, &attributes, data))
            })
            .collect()
    }
}

/// An event as the outbox and the in-process log store it: its place, topic, key, attributes
/// (JSON) and data.
pub type StoredRow = (i64, String, String, String, String);

/// The verified request an event comes from.
#[derive(Debug, Clone, Default)]
struct Origin {
    request_id: String,
    actor_id: Option<String>,
    org_id: Option<String>,
    client_ip: Option<String>,
    user_agent: Option<String>,
}

/// Per-request state of the capability: what the component may publish to and what it queued.
pub struct EventsCtx {
    component: Arc<str>,
    topics: Arc<BTreeSet<String>>,
    /// The operator approved the component (`trusted_components`): it may publish for an
    /// organization other than the request's (the one it just created, an invite's).
    any_org: bool,
    origin: Origin,
    queued: Vec<Event>,
    /// The request queued more than [`MAX_PER_REQUEST`]: nothing it queued is published.
    overflowed: bool,
}

impl EventsCtx {
    pub fn new(component: Arc<str>, topics: Arc<BTreeSet<String>>, any_org: bool) -> Self {
        Self {
            component,
            topics,
            any_org,
            origin: Origin::default(),
            queued: Vec::new(),
            overflowed: false,
        }
    }

    /// Binds the capability to the request the instance serves.
    pub fn serve(&mut self, request: &Request) {
        if self.topics.is_empty() {
            return;
        }
        let context = &request.context;
        let user_agent = request
            .headers
            .iter()
            .find(|(name, _)| name == "user-agent")
            .map(|(_, value)| cut(value, MAX_USER_AGENT_BYTES).to_string());
        self.origin = Origin {
            request_id: context.request_id.clone(),
            actor_id: context.user_id.clone(),
            org_id: context.org_id.clone(),
            client_ip: context.client_ip.clone(),
            user_agent,
        };
    }

    /// Takes what the request queued, for the outbox; refused when the request went past
    /// [`MAX_PER_REQUEST`], so that its writes roll back rather than commit without their
    /// events.
    pub fn take(&mut self) -> Result<Vec<Event>, String> {
        match self.overflowed {
            true => Err(format!(
                "the request published more than {MAX_PER_REQUEST} events"
            )),
            false => Ok(std::mem::take(&mut self.queued)),
        }
    }

    fn queue(&mut self, published: Published) -> Result<String, String> {
        if self.overflowed || self.queued.len() >= MAX_PER_REQUEST {
            self.overflowed = true;
            self.queued.clear();
            return Err(format!(
                "a request may publish at most {MAX_PER_REQUEST} events; none of this request's events will be published"
            ));
        }
        if !self.topics.contains(&published.topic) {
            return Err(format!(
                "the policy does not list topic {:?} under `events`",
                published.topic
            ));
        }
        let valid_type = !published.type_.is_empty()
            && published.type_.len() <= MAX_TYPE_BYTES
            && published
                .type_
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !valid_type {
            return Err(format!(
                "type {:?} must be 1-{MAX_TYPE_BYTES} characters of [a-z0-9._-], like \"member.added\"",
                published.type_
            ));
        }
        if published.subject.chars().count() > MAX_SUBJECT_CHARS
            || published.subject.chars().any(char::is_control)
        {
            return Err(format!(
                "the subject must be at most {MAX_SUBJECT_CHARS} characters, without control characters"
            ));
        }
        if published.data.len() > MAX_DATA_BYTES {
            return Err(format!(
                "data is {} bytes; an event carries at most {} KiB",
                published.data.len(),
                MAX_DATA_BYTES / 1024
            ));
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&published.data) {
            return Err(format!("data must be a JSON document: {e}"));
        }
        let named = published.org_id.filter(|org| !org.is_empty());
        if let Some(named) = &named
            && self.origin.org_id.as_ref() != Some(named)
            && !self.any_org
        {
            return Err(format!(
                "only components the operator lists in `trusted_components` may publish for an organization other than the request's ({named:?})"
            ));
        }
        let org_id = named.or_else(|| self.origin.org_id.clone());
        if org_id
            .as_deref()
            .is_some_and(|org| org.len() > 100 || org.chars().any(char::is_control))
        {
            return Err("org-id must be at most 100 characters, without control characters".into());
        }
        let id = uuid::Uuid::now_v7().to_string();
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let origin = &self.origin;
        let mut attributes = BTreeMap::from([
            ("specversion".to_string(), "1.0".to_string()),
            ("id".to_string(), id.clone()),
            (
                "source".to_string(),
                format!("/truevalue/{}", self.component),
            ),
            ("type".to_string(), published.type_),
            ("time".to_string(), time),
            ("requestid".to_string(), origin.request_id.clone()),
        ]);
        let optional = [
            ("subject", Some(published.subject).filter(|s| !s.is_empty())),
            ("orgid", org_id.clone()),
            ("actorid", origin.actor_id.clone()),
            ("clientip", origin.client_ip.clone()),
            ("useragent", origin.user_agent.clone()),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                attributes.insert(name.to_string(), value);
            }
        }
        self.queued.push(Event {
            topic: published.topic,
            key: org_id.unwrap_or_default(),
            attributes,
            data: published.data,
        });
        Ok(id)
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Host for EventsCtx {
    async fn publish(&mut self, event: Published) -> wasmtime::Result<Result<String, String>> {
        Ok(self.queue(event))
    }
}

#[cfg(test)]
mod tests;
