//! Events about what changed (the `events` capability; grant it with
//! `capabilities = ["database", "events"]` and the topics with `events = ["org.member.events"]`
//! in the component's policy).
//!
//! [`publish`] checks the event and queues it; the host writes it into an outbox in the
//! request's own transaction, so it is published exactly when the request's writes commit —
//! never for a request that fails, never lost for one that succeeded. The host adds the id,
//! source, time, and who caused it (actor, request id, client IP, user agent). See
//! `wit/events.wit`.
//!
//! ```no_run
//! # use truevalue_sdk::prelude::*;
//! # fn added(org_id: &str, user_id: &str) -> Result<(), Problem> {
//! // … the membership row is inserted in this request's transaction …
//! truevalue_sdk::events::publish(
//!     "org.member.events",
//!     "member.added",
//!     user_id,
//!     &serde_json::json!({ "user_id": user_id, "role": "member" }),
//! )?;
//! # Ok(()) }
//! ```

use crate::Problem;
use crate::bindings::truevalue::platform::events as raw;

/// Queues an event of the organization the request acts for (none outside one); returns its
/// id. A topic the policy does not list, a malformed type or subject, data over 64 KiB, or a
/// 101st event in one request is a 422 `validation` problem saying what is wrong.
pub fn publish(
    topic: &str,
    kind: &str,
    subject: &str,
    data: &impl serde::Serialize,
) -> Result<String, Problem> {
    publish_for(None, topic, kind, subject, data)
}

/// As [`publish`], for the organization `org_id` — one the request changes without acting
/// for it yet, such as the organization it just created.
pub fn publish_for(
    org_id: Option<&str>,
    topic: &str,
    kind: &str,
    subject: &str,
    data: &impl serde::Serialize,
) -> Result<String, Problem> {
    let data = serde_json::to_string(data)
        .map_err(|e| Problem::internal(format!("event data is not JSON: {e}")))?;
    raw::publish(&raw::Event {
        topic: topic.into(),
        type_: kind.into(),
        subject: subject.into(),
        data,
        org_id: org_id.map(str::to_string),
    })
    .map_err(Problem::unprocessable)
}
