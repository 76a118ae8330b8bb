//! Per-organization plugins: a component whose policy says `per_organization = true` serves an
//! organization only once that organization enabled it. The enablements belong to the `org`
//! component (`/org/api/organizations/{slug}/plugins`); the host asks it
//! (`GET /org/internal/plugins?org_id=…`, as the caller `@host`, which no component can be) and
//! keeps each organization's answer for [`FRESH_FOR`], so enabling or disabling takes effect
//! within that time. The requests of one organization arriving together wait for one question.
//! Fail closed: while `org` cannot answer (overloaded, failing, not loaded), no plugin serves,
//! and the caller is told to retry ([`NoAnswer`]); no such failure is kept as an answer.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

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

/// The plugins one organization enabled, once `org` said so; asked since `since`.
struct Answer {
    since: Instant,
    enabled: Arc<OnceCell<BTreeSet<String>>>,
}

#[derive(Default)]
pub struct Enablements(Mutex<HashMap<String, Answer>>);

/// `org` could not say which plugins an organization enabled.
#[derive(Debug)]
pub struct NoAnswer;

impl Runtime {
    /// Whether `org_id` enabled the plugin `component`; [`NoAnswer`] while `org` cannot say.
    pub async fn enabled_for(
        self: &Arc<Self>,
        org_id: &str,
        component: &str,
    ) -> Result<bool, NoAnswer> {
        let enabled = {
            let Ok(mut kept) = self.enablements.0.lock() else {
                return Err(NoAnswer);
            };
            match kept.get(org_id) {
                Some(answer) if answer.since.elapsed() < FRESH_FOR => answer.enabled.clone(),
                _ => {
                    if kept.len() >= MAX_KEPT {
                        kept.retain(|_, answer| answer.since.elapsed() < FRESH_FOR);
                    }
                    let enabled = Arc::new(OnceCell::new());
                    let since = Instant::now();
                    let answer = Answer {
                        since,
                        enabled: enabled.clone(),
                    };
                    kept.insert(org_id.to_string(), answer);
                    enabled
                }
            }
        };
        // One question at a time per organization; after a failed one, the next caller asks.
        let enabled = enabled.get_or_try_init(|| self.ask_keeper(org_id)).await?;
        Ok(enabled.contains(component))
    }

    async fn ask_keeper(self: &Arc<Self>, org_id: &str) -> Result<BTreeSet<String>, NoAnswer> {
        // A host without `org` has no enablements: no plugin is enabled anywhere.
        let Some(slot) = self.slot(KEEPER) else {
            return Ok(BTreeSet::new());
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
                serde_json::from_slice::<Enabled>(&response.body)
                    .map(|answer| answer.enabled)
                    .map_err(|error| {
                        tracing::warn!(%error, "org answered the enabled plugins with something else");
                        NoAnswer
                    })
            }
            outcome => {
                let why = match outcome {
                    Outcome::Response { response, .. } => format!("answered {}", response.status),
                    Outcome::Busy => "busy".into(),
                    Outcome::Unavailable => "not loaded".into(),
                    Outcome::Failed(failure) => failure.kind().to_string(),
                };
                tracing::warn!(
                    org_id,
                    why,
                    "org did not say which plugins are enabled; none serve until it does"
                );
                Err(NoAnswer)
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
