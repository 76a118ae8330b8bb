//! Hands a request to the component whose route prefix matches, and turns its answer (or
//! its failure) into an HTTP response.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::auth::Caller;
use super::problem::ApiError;
use super::request_id;
use super::{AppState, Upstream};
use crate::bindings::handler::{Request as WasmRequest, RequestContext};
use crate::runtime::{Failure, Outcome, Runtime};

/// Each component's request metrics, looked up once: a lookup by labels costs allocations and
/// a hash per request. Registered at zero for the components known at start-up, so a scrape
/// shows them before the first request; a component installed later gets its own at its
/// first request. `truevalue_requests_total` appears per status as statuses occur (its set
/// is open).
#[derive(Default)]
pub struct RequestMetrics(ArcSwap<BTreeMap<String, Arc<ComponentRequests>>>);

struct ComponentRequests {
    duration: metrics::Histogram,
    by_status: RwLock<HashMap<u16, metrics::Counter>>,
}

impl ComponentRequests {
    fn new(component: &str) -> Arc<Self> {
        Arc::new(Self {
            duration: metrics::histogram!("truevalue_request_duration_seconds", "component" => component.to_string()),
            by_status: RwLock::default(),
        })
    }
}

impl RequestMetrics {
    pub fn new<'a>(components: impl IntoIterator<Item = &'a str>) -> Self {
        Self(ArcSwap::from_pointee(
            components
                .into_iter()
                .map(|component| (component.to_string(), ComponentRequests::new(component)))
                .collect(),
        ))
    }

    fn record(&self, component: &str, status: StatusCode, elapsed: std::time::Duration) {
        if let Some(requests) = self.0.load().get(component) {
            return requests.record(component, status, elapsed);
        }
        let requests = ComponentRequests::new(component);
        self.0.rcu(|all| {
            let mut all = BTreeMap::clone(all);
            all.entry(component.to_string())
                .or_insert_with(|| requests.clone());
            all
        });
        requests.record(component, status, elapsed);
    }
}

impl ComponentRequests {
    fn record(&self, component: &str, status: StatusCode, elapsed: std::time::Duration) {
        self.duration.record(elapsed.as_secs_f64());
        let code = status.as_u16();
        let known = self
            .by_status
            .read()
            .ok()
            .and_then(|counters| counters.get(&code).cloned());
        let counter = known.unwrap_or_else(|| {
            let counter = metrics::counter!("truevalue_requests_total", "component" => component.to_string(), "status" => status.as_str().to_string());
            if let Ok(mut counters) = self.by_status.write() {
                counters.insert(code, counter.clone());
            }
            counter
        });
        counter.increment(1);
    }
}

/// Headers a component never sees: credentials stay with the host, hop-by-hop headers with
/// the connection.
pub(super) const HIDDEN: [&str; 9] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers a component may not set on its response.
const RESERVED: [&str; 5] = [
    "connection",
    "transfer-encoding",
    "content-length",
    "x-request-id",
    "set-cookie",
];

pub async fn dispatch(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let policy = state
        .routes
        .load()
        .find(path)
        .ok_or_else(|| ApiError::NoRoute(path.to_string()))?
        .clone();
    let started = std::time::Instant::now();
    let body = read_body(&parts, body, state.body).await?;
    // Boxed: the component's future is large, and each layer of the gateway would move it.
    let result = match &state.upstream {
        Upstream::Local(runtime) => {
            // On a tenant route the request's transactions are bound to the token's organization.
            let tenant = match (policy.org_route(path), parts.extensions.get::<Caller>()) {
                (Some(_), Some(Caller::User(claims))) => claims.org_id.as_deref().map(Arc::from),
                _ => None,
            };
            Box::pin(local(runtime, &policy.name, parts, body, tenant)).await
        }
        Upstream::Nodes(nodes) => Box::pin(nodes.forward(parts, body)).await,
    };
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.status(),
    };
    state
        .metrics
        .record(&policy.name, status, started.elapsed());
    result
}

/// What a request's body may cost: its size, and how long a client may take to send it once
/// the headers are in. A connection with a request in flight is never closed as idle, so
/// without the timeout a client trickling a body (or sending none after `Content-Length`)
/// would hold its connection for ever.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules {
    pub limit: usize,
    pub timeout: std::time::Duration,
}

/// The whole body, refused with 413 past the limit (declared or streamed) and 408 when it
/// does not arrive in time.
pub async fn read_body(parts: &Parts, body: Body, rules: BodyRules) -> Result<Bytes, ApiError> {
    let limit = rules.limit;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let collected = tokio::time::timeout(rules.timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ApiError::BodyTimeout(rules.timeout.as_millis() as u64))?
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::BadBody(e.to_string())
            }
        })?;
    Ok(collected.to_bytes())
}

/// Runs the request through the component in this process.
async fn local(
    runtime: &Arc<Runtime>,
    component: &str,
    parts: Parts,
    body: Bytes,
    tenant: Option<Arc<str>>,
) -> Result<Response, ApiError> {
    let slot = runtime
        .slot(component)
        .ok_or_else(|| ApiError::NoRoute(parts.uri.path().into()))?;
    // A plugin exists only for the organizations that enabled it.
    if slot.sandbox.policy.per_organization {
        let org_id = match parts.extensions.get::<Caller>() {
            Some(Caller::User(claims)) => claims.org_id.clone(),
            _ => None,
        };
        let enabled = match org_id {
            Some(org_id) => runtime
                .enabled_for(&org_id, component)
                .await
                .map_err(|_| ApiError::EnablementUnknown(component.to_string()))?,
            None => false,
        };
        if !enabled {
            return Err(ApiError::NoRoute(parts.uri.path().into()));
        }
    }
    let headers = parts
        .headers
        .iter()
        // The verified context reaches a component as `context`, never as headers a client
        // could have sent.
        .filter(|(name, _)| {
            !HIDDEN.contains(&name.as_str()) && !crate::signing::reserved(name.as_str())
        })
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect();
    let wasm_request = WasmRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers,
        body: body.to_vec(),
        context: context(
            parts.extensions.get::<Caller>(),
            super::client_ip(&parts.extensions),
        ),
    };
    match runtime.handle(&slot, wasm_request, tenant).await {
        Outcome::Response { response, .. } => into_http(component, response),
        Outcome::Busy => Err(ApiError::Busy(component.to_string())),
        Outcome::Unavailable => Err(ApiError::ComponentUnavailable(component.to_string())),
        Outcome::Failed(Failure::Timeout) => Err(ApiError::Timeout(component.to_string())),
        Outcome::Failed(failure) => Err(ApiError::ComponentFailed {
            component: component.to_string(),
            status: match failure {
                Failure::Commit(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            detail: match failure {
                Failure::OutOfMemory => "out of memory".into(),
                Failure::Trap(detail) | Failure::Commit(detail) => detail,
                Failure::Timeout => "timeout".into(),
            },
        }),
    }
}

/// The component's response as HTTP. A 5xx keeps its status but its body is replaced: the
/// component's detail goes to the log, not to the client.
fn into_http(
    component: &str,
    response: crate::bindings::handler::Response,
) -> Result<Response, ApiError> {
    let status = StatusCode::from_u16(response.status)
        .ok()
        .filter(|s| !s.is_informational())
        .ok_or_else(|| ApiError::ComponentFailed {
            component: component.to_string(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
            detail: format!("answered with an invalid status {}", response.status),
        })?;
    if status.is_server_error() {
        return Err(ApiError::ComponentFailed {
            component: component.to_string(),
            status,
            detail: String::from_utf8_lossy(&response.body)
                .chars()
                .take(2000)
                .collect(),
        });
    }
    let mut http = Body::from(response.body).into_response();
    *http.status_mut() = status;
    for (name, value) in response.headers {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .ok()
            .zip(HeaderValue::from_str(&value).ok());
        match parsed {
            Some((name, value)) if !RESERVED.contains(&name.as_str()) => {
                http.headers_mut().append(name, value);
            }
            _ => {
                tracing::warn!(component, header = %name, "dropped a response header the component may not set")
            }
        }
    }
    Ok(http)
}

/// The verified caller as the component sees it; anonymous unless `identify` verified a token.
fn context(caller: Option<&Caller>, client_ip: Option<String>) -> RequestContext {
    let request_id = request_id::current();
    match caller {
        Some(Caller::User(claims)) => RequestContext {
            request_id,
            user_id: Some(claims.user_id.clone()),
            org_id: claims.org_id.clone(),
            roles: claims.roles.clone(),
            permissions: claims.permissions.clone(),
            session_id: Some(claims.session_id.clone()).filter(|id| !id.is_empty()),
            client_ip,
            caller: None,
        },
        _ => RequestContext {
            request_id,
            user_id: None,
            org_id: None,
            roles: Vec::new(),
            permissions: Vec::new(),
            session_id: None,
            client_ip,
            caller: None,
        },
    }
}
