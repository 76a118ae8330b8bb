//! Per-organization plugins: a component whose policy says `per_organization = true` serves an
//! organization only once that organization enabled it. The enablements belong to the `org`
//! component (`/org/api/organizations/{slug}/plugins`); the host asks it
//! (`GET /org/internal/plugins?org_id=…`, as the caller `@host`, which no component can be) and
//! keeps each organization's answer for [`FRESH_FOR`], so enabling or disabling takes effect
//! within that time. Fail closed: without an answer from `org`, no plugin is enabled.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::deliveries::host_context;
use super::{Outcome, Runtime};
use crate::bindings::handler::Request;

/// How long an organization's enabled plugins are taken as known.
pub const FRESH_FOR: Duration = Duration::from_secs(2);
/// The component that keeps the enablements.
const KEEPER: &str = "org";
/// The caller name the host uses: not a valid component name, so no component can pose as it.
pub const HOST_CALLER: &str = "@host";
/// Most organizations whose answers are kept at once.
const MAX_KEPT: usize = 10_000;

/// The plugins one organization enabled, and when `org` said so.
type Answer = (Instant, Arc<BTreeSet<String>>);

#[derive(Default)]
pub struct Enablements(Mutex<HashMap<String, Answer>>);

impl Runtime {
    /// Whether `org_id` enabled the plugin `component`.
    pub async fn enabled_for(self: &Arc<Self>, org_id: &str, component: &str) -> bool {
        let known = self.enablements.0.lock().ok().and_then(|kept| {
            kept.get(org_id)
                .filter(|(at, _)| at.elapsed() < FRESH_FOR)
                .map(|(_, enabled)| enabled.clone())
        });
        let enabled = match known {
            Some(enabled) => enabled,
            None => {
                let enabled = Arc::new(self.ask_keeper(org_id).await);
                if let Ok(mut kept) = self.enablements.0.lock() {
                    if kept.len() >= MAX_KEPT {
                        kept.retain(|_, (at, _)| at.elapsed() < FRESH_FOR);
                    }
                    kept.insert(org_id.to_string(), (Instant::now(), enabled.clone()));
                }
                enabled
            }
        };
        enabled.contains(component)
    }

    async fn ask_keeper(self: &Arc<Self>, org_id: &str) -> BTreeSet<String> {
        let Some(slot) = self.slot(KEEPER) else {
            return BTreeSet::new();
        };
        let request = Request {
            method: "GET".into(),
            path: "/org/internal/plugins".into(),
            query: format!("org_id={}", encode(org_id)),
            headers: Vec::new(),
            body: Vec::new(),
            context: host_context(uuid::Uuid::now_v7().to_string(), Some(HOST_CALLER)),
        };
        match self.handle(&slot, request, None).await {
            Outcome::Response { response, .. } if response.status == 200 => {
                #[derive(serde::Deserialize)]
                struct Enabled {
                    enabled: BTreeSet<String>,
                }
                match serde_json::from_slice::<Enabled>(&response.body) {
                    Ok(answer) => answer.enabled,
                    Err(error) => {
                        tracing::warn!(%error, "org answered the enabled plugins with something else");
                        BTreeSet::new()
                    }
                }
            }
            _ => {
                tracing::warn!(
                    org_id,
                    "org did not say which plugins are enabled; none are"
                );
                BTreeSet::new()
            }
        }
    }
}

/// `text` percent-encoded for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
