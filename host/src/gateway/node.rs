//! Node role: only signed requests from a gateway are served. A request that is unsigned,
//! altered (any signed header or the body), older than 30 s, or seen before is refused, and
//! components see only the headers the gateway signed.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use secrecy::SecretString;

use super::auth::Caller;
use super::problem::ApiError;
use super::request_id;
use crate::capabilities::tokens::Claims;
use crate::security_state::SecurityState;
use crate::signing::{self, Signed};

pub struct NodeGuard {
    pub secret: SecretString,
    /// Signature tags seen in the last minute, to refuse replays.
    pub seen: Arc<dyn SecurityState>,
    pub body: super::dispatch::BodyRules,
}

fn header<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

pub async fn verify(
    State(guard): State<Arc<NodeGuard>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if ["/healthz", "/readyz"].contains(&request.uri().path()) {
        return Ok(next.run(request).await);
    }
    let refused = |why: &str| ApiError::GatewaySignature(why.to_string());
    let timestamp = header(&request, signing::TIMESTAMP).to_string();
    let signature = header(&request, signing::SIGNATURE).to_string();
    if timestamp.is_empty() || signature.is_empty() {
        return Err(refused("the request is not signed by a gateway"));
    }
    if !signing::fresh(&timestamp) {
        return Err(refused("the signature is older than 30 s"));
    }
    let context = signing::CONTEXT.map(|name| header(&request, name).to_string());
    let request_id = header(&request, request_id::HEADER).to_string();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let method = request.method().as_str().to_string();

    let names: Vec<String> = header(&request, signing::SIGNED_HEADERS)
        .split(',')
        .filter(|name| !name.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    if names.iter().any(|name| signing::reserved(name)) {
        return Err(refused("the signed headers name a reserved header"));
    }

    let (mut parts, body) = request.into_parts();
    let body = super::dispatch::read_body(&parts, body, guard.body).await?;
    let tag = {
        let headers = forwarded(&parts.headers, &names);
        Signed {
            timestamp: &timestamp,
            method: &method,
            path_and_query: &path_and_query,
            request_id: &request_id,
            context: context.each_ref().map(String::as_str),
            headers: &headers,
            body: &body,
        }
        .verify(&guard.secret, &signature)
    };
    let Some(tag) = tag else {
        return Err(refused("the signature does not match the request"));
    };
    keep_signed(&mut parts.headers, &names);
    let ttl = signing::MAX_AGE * 2 + Duration::from_secs(1);
    match guard
        .seen
        .record_once(&signing::replay_key(&tag), ttl)
        .await
    {
        Ok(true) => {}
        Ok(false) => return Err(refused("the request was already served (replay)")),
        Err(_) => {
            return Err(ApiError::NotReady(
                "the replay cache cannot be reached".into(),
            ));
        }
    }

    let [user, org, roles, permissions, session, client_ip] = context;
    let split = |list: &str| {
        list.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let caller = match user.is_empty() {
        true => Caller::Anonymous,
        false => Caller::User(Arc::new(Claims {
            user_id: user,
            email: String::new(),
            org_id: (!org.is_empty()).then_some(org),
            org_slug: None,
            org_name: None,
            roles: split(&roles),
            permissions: split(&permissions),
            plan: None,
            session_id: session,
        })),
    };
    parts.extensions.insert(caller);
    if !client_ip.is_empty() {
        parts.extensions.insert(super::ClientIp(client_ip));
    }
    Ok(next.run(Request::from_parts(parts, Body::from(body))).await)
}

/// The values of the headers the gateway says it signed, in its order.
fn forwarded<'a>(headers: &'a HeaderMap, names: &'a [String]) -> Vec<signing::Header<'a>> {
    names
        .iter()
        .map(|name| {
            let values = headers
                .get_all(name.as_str())
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            (name.as_str(), values)
        })
        .collect()
}

/// Drops every header the signature does not cover, so nothing added on the way reaches a
/// component. The context headers stay for the caller built below; the dispatcher never hands
/// them to components. `content-length` framed the signed body.
fn keep_signed(headers: &mut HeaderMap, names: &[String]) {
    let unsigned: Vec<_> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            !(names.iter().any(|n| n == name)
                || signing::reserved(name)
                || name == super::request_id::HEADER
                || name == "content-length")
        })
        .cloned()
        .collect();
    for name in unsigned {
        headers.remove(name);
    }
}

/// Where a gateway asks a node which components were installed on it (signed, as every
/// request to a node): their names and routes, so that the gateway routes to them without
/// a restart.
pub const INSTALLED_PATH: &str = "/_truevalue/installed";

/// The components installed on this node through the admin API, with their routes.
pub async fn installed(
    State(state): State<Arc<super::AppState>>,
) -> axum::Json<Vec<crate::policy::Routing>> {
    let installed = match &state.upstream {
        super::Upstream::Local(runtime) => runtime
            .policies()
            .iter()
            .filter(|policy| policy.installed)
            .map(|policy| crate::policy::Routing::of(policy))
            .collect(),
        super::Upstream::Nodes(_) => Vec::new(),
    };
    axum::Json(installed)
}
