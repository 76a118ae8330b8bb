//! How the host hands a consumed event to a component: a CloudEvents HTTP request in the binary
//! binding — `POST` to the subscription's internal route, `ce-*` headers, the JSON data as the
//! body — run like any other request (its own instance, limits, deadline and transaction), with
//! no user, no organization and no caller. A 2xx answer accepts the event; 429 or 503 asks for
//! it again later without counting an attempt; anything else is a failed attempt.

use std::sync::Weak;

use async_trait::async_trait;

use super::{Outcome, Runtime};
use crate::bindings::handler::{Request, RequestContext};
use crate::capabilities::events::{CONTENT_TYPE, Deliver, Event, Refusal};

/// The context of a request the host makes on its own account: no user, no organization, no
/// client; `caller` names the host where a component must tell it apart.
pub(crate) fn host_context(request_id: String, caller: Option<&str>) -> RequestContext {
    RequestContext {
        request_id,
        user_id: None,
        org_id: None,
        roles: Vec::new(),
        permissions: Vec::new(),
        session_id: None,
        client_ip: None,
        caller: caller.map(str::to_string),
    }
}

/// Most bytes of a refusing answer kept as the error.
const MAX_ANSWER_BYTES: usize = 500;

pub struct Deliveries(pub Weak<Runtime>);

#[async_trait]
impl Deliver for Deliveries {
    async fn deliver(&self, component: &str, event: &Event) -> Result<(), Refusal> {
        let runtime = self
            .0
            .upgrade()
            .ok_or_else(|| Refusal::Unavailable("the host is stopping".into()))?;
        let slot = runtime
            .slot(component)
            .ok_or_else(|| Refusal::Unavailable(format!("{component} is not loaded")))?;
        // The route of the policy loaded now: a component installed again may route the topic
        // elsewhere, or no longer subscribe to it (its events then wait, as for an uninstall).
        let route = slot
            .sandbox
            .policy
            .subscriptions
            .get(&event.topic)
            .ok_or_else(|| {
                Refusal::Unavailable(format!("{component} does not subscribe to {}", event.topic))
            })?;
        let mut headers = vec![("content-type".to_string(), CONTENT_TYPE.to_string())];
        headers.extend(
            event
                .attributes
                .iter()
                .map(|(name, value)| (format!("ce-{name}"), value.clone())),
        );
        let request = Request {
            method: "POST".into(),
            path: route.clone(),
            query: String::new(),
            headers,
            body: event.data.clone().into_bytes(),
            context: host_context(uuid::Uuid::now_v7().to_string(), None),
        };
        match runtime.handle(&slot, request, None).await {
            Outcome::Response { response, .. } if (200..300).contains(&response.status) => Ok(()),
            // "Not now": the component asks to be tried again, the event is not at fault.
            Outcome::Response { response, .. } if matches!(response.status, 429 | 503) => Err(
                Refusal::Unavailable(format!("{component} answered {}", response.status)),
            ),
            Outcome::Response { response, .. } => {
                let body = &response.body[..response.body.len().min(MAX_ANSWER_BYTES)];
                Err(Refusal::Failed(format!(
                    "answered {}: {}",
                    response.status,
                    String::from_utf8_lossy(body)
                )))
            }
            Outcome::Busy => Err(Refusal::Unavailable(format!("{component} is busy"))),
            Outcome::Unavailable => {
                Err(Refusal::Unavailable(format!("{component} failed to load")))
            }
            Outcome::Failed(failure) => Err(Refusal::Failed(failure.kind().to_string())),
        }
    }
}
