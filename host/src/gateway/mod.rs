//! The public gateway: axum routes for operations, everything else to the components, with
//! the gateway's concerns as layers composed here in one place.

pub mod auth;
mod dispatch;
pub use dispatch::{BodyRules, RequestMetrics};
pub mod forward;
pub mod node;
pub mod ops;
pub mod problem;
pub mod rate_limit;
pub mod request_id;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::{Layer, Service, ServiceExt};
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::backends::Backends;
use crate::policy::Routes;
use crate::runtime::Runtime;

pub use problem::ApiError;

/// The client's address: as the gateway found it (through its trusted proxies), or as a node
/// learned it from the gateway's signed `X-Client-Ip`.
#[derive(Clone)]
pub struct ClientIp(pub String);

/// The client's IP: as the gateway found it or signed it, else the connection's peer.
pub fn client_ip(extensions: &axum::http::Extensions) -> Option<String> {
    if let Some(ClientIp(ip)) = extensions.get::<ClientIp>() {
        return Some(ip.clone());
    }
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip().to_string())
}

/// Where requests go after the gateway's checks.
pub enum Upstream {
    /// The components in this process (`--role all` and `--role node`).
    Local(Arc<Runtime>),
    /// Nodes over the network, signed (`--role gateway`).
    Nodes(Arc<forward::Nodes>),
}

/// What every gateway handler shares.
pub struct AppState {
    pub upstream: Upstream,
    pub routes: Arc<Routes>,
    pub backends: Backends,
    pub body: dispatch::BodyRules,
    pub metrics: RequestMetrics,
}

fn base(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .fallback(dispatch::dispatch)
        .with_state(state)
}

/// The public gateway (`all` and `gateway` roles): the request id exists before anything else
/// runs or fails; CORS answers preflights; then the gateway's checks ([`checks`]) and the
/// routes.
pub fn router(
    state: Arc<AppState>,
    auth: Arc<auth::Auth>,
    rate: Arc<rate_limit::RateLimit>,
    cors: CorsLayer,
) -> Router {
    let checked = Checked {
        checks: Arc::new(Checks { auth, rate }),
        routes: base(state),
    };
    Router::new().fallback_service(Gateway {
        inner: cors.layer(checked),
    })
}

type Handled = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The gateway's concerns as one service around the routes, composed by hand: as a router's
/// layers, each would be cloned at every request (with every layer and route inside it) and
/// box a future of its own.
#[derive(Clone)]
struct Gateway {
    inner: Cors<Checked>,
}

impl Service<Request> for Gateway {
    type Response = Response;
    type Error = Infallible;
    type Future = Handled;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Handled {
        let (id, value) = request_id::assign(&mut request);
        let handled = self.inner.call(request);
        Box::pin(async move {
            let handled = async move {
                match handled.await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            };
            Ok(request_id::echo(id, value, handled).await)
        })
    }
}

/// The gateway's checks, then the routes.
#[derive(Clone)]
struct Checked {
    checks: Arc<Checks>,
    routes: Router,
}

impl Service<Request> for Checked {
    type Response = Response;
    type Error = Infallible;
    type Future = Handled;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Handled {
        let (checks, routes) = (self.checks.clone(), self.routes.clone());
        Box::pin(async move { Ok(self::checks(&checks, request, routes).await) })
    }
}

/// What the gateway's checks need.
pub struct Checks {
    auth: Arc<auth::Auth>,
    rate: Arc<rate_limit::RateLimit>,
}

/// The gateway's checks, in order: the caller is identified before the rate limit counts it,
/// and refused after (a refused token still spends its client's budget); then the route
/// runs, and the detail of a 5xx goes to the log.
async fn checks(checks: &Checks, mut request: Request, routes: Router) -> Response {
    let started = std::time::Instant::now();
    auth::identify(&checks.auth, &mut request).await;
    let remaining = match rate_limit::count(&checks.rate, &mut request).await {
        rate_limit::Counted::Refused(response) => return response,
        rate_limit::Counted::Allowed { remaining } => Some(remaining),
        rate_limit::Counted::Exempt => None,
    };
    let mut response = match auth::require(&checks.auth, &request) {
        Err(error) => error.into_response(),
        Ok(()) => {
            let (method, path) = (request.method().clone(), request.uri().path().to_string());
            let Ok(response) = routes.oneshot(request).await;
            log_error(&response, &method, &path);
            tracing::debug!(%method, %path, status = response.status().as_u16(), latency_us = started.elapsed().as_micros() as u64, "served");
            response
        }
    };
    if let Some(remaining) = remaining {
        checks.rate.stamp(&mut response, remaining);
    }
    response
}

/// A node (`node` role): serves only requests a gateway signed; tokens, rate limits and CORS
/// were the gateway's job.
pub fn node_router(state: Arc<AppState>, guard: Arc<node::NodeGuard>) -> Router {
    base(state.clone())
        .route(node::INSTALLED_PATH, get(node::installed).with_state(state))
        .layer(middleware::from_fn(log_errors))
        .layer(middleware::from_fn_with_state(guard, node::verify))
        .layer(TraceLayer::new_for_http())
        .layer(middleware::from_fn(request_id::layer))
}

/// Writes the detail of every 5xx to the log, with the request id; the client saw only a
/// generic problem.
pub async fn log_errors(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let response = next.run(request).await;
    log_error(&response, &method, &path);
    response
}

fn log_error(response: &Response, method: &Method, path: &str) {
    if let Some(problem::ErrorDetail(detail)) = response.extensions().get::<problem::ErrorDetail>()
    {
        tracing::error!(request_id = %request_id::current(), %method, %path, status = response.status().as_u16(), "{detail}");
    }
}

/// CORS for the configured origins: preflights are answered here, and responses expose the
/// headers a browser client needs (request id, rate limit, retry).
pub fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static(request_id::HEADER),
        ])
        .expose_headers([
            HeaderName::from_static(request_id::HEADER),
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            header::RETRY_AFTER,
        ])
        .max_age(std::time::Duration::from_secs(600))
}
