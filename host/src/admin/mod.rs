//! The admin listener, on its own address: the admin API behind a bearer token (list,
//! install and uninstall components, deploy a new version, roll back, reset to the policy's
//! file), and `/metrics` for
//! the operator's monitoring, which needs no token so a scraper never holds the power to deploy.

mod metrics;
mod process;

use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path as UrlPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::gateway::{ApiError, log_errors, request_id};
use crate::runtime::{ComponentInfo, DeployError, Install, Runtime};

/// Where `serve` keeps the token it generates when none is configured.
pub const TOKEN_FILE: &str = "admin-token";

/// Largest component the admin API accepts.
const MAX_COMPONENT_BYTES: usize = 256 * 1024 * 1024;

struct AdminState {
    runtime: Arc<Runtime>,
    token_digest: [u8; 32],
}

pub fn router(runtime: Arc<Runtime>, token: &SecretString, metrics: PrometheusHandle) -> Router {
    let scrape = metrics::Scrape {
        handle: metrics,
        runtime: Some(runtime.clone()),
    };
    let state = Arc::new(AdminState {
        runtime,
        token_digest: Sha256::digest(token.expose_secret().as_bytes()).into(),
    });
    let api = Router::new()
        .route("/admin/components", get(list).post(install))
        .route("/admin/components/{name}", put(deploy).delete(uninstall))
        .route("/admin/components/{name}/rollback", post(rollback))
        .route("/admin/components/{name}/versions", get(versions))
        .route("/admin/components/{name}/reset", post(reset))
        .layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
    finish(api.merge(metrics_route(scrape)))
}

/// A gateway's admin listener: it runs no components, so only `/metrics`.
pub fn metrics_only(metrics: PrometheusHandle) -> Router {
    finish(metrics_route(metrics::Scrape {
        handle: metrics,
        runtime: None,
    }))
}

fn metrics_route(scrape: metrics::Scrape) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .with_state(Arc::new(scrape))
}

fn finish(router: Router) -> Router {
    router
        .fallback(|| async { ApiError::NotFound("no such admin endpoint".into()) })
        .layer(middleware::from_fn(log_errors))
        .layer(middleware::from_fn(request_id::layer))
}

/// Compares digests of the presented and expected tokens in constant time, so neither the
/// token's content nor its length leaks through timing.
async fn authorize(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    if !bool::from(digest.ct_eq(&state.token_digest)) {
        return Err(ApiError::Unauthorized);
    }
    // A body declared past the limit is refused before any of it is read.
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_COMPONENT_BYTES) {
        return Err(ApiError::PayloadTooLarge(MAX_COMPONENT_BYTES));
    }
    Ok(next.run(request).await)
}

/// A body that could not be read: past [`MAX_COMPONENT_BYTES`] a 413 problem, as on the
/// public API; else `otherwise`.
fn unread_body(status: StatusCode, otherwise: impl FnOnce() -> ApiError) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(MAX_COMPONENT_BYTES),
        _ => otherwise(),
    }
}

/// The whole body, or why it could not be read.
fn read(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| unread_body(e.status(), || ApiError::BadBody(e.body_text())))
}

async fn list(State(state): State<Arc<AdminState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "items": state.runtime.components() }))
}

/// The header carrying a deploy's signature (`<publisher>:<hex>`, as in a `.wasm.sig` file).
pub const SIGNATURE_HEADER: &str = "x-component-signature";

async fn deploy(
    State(state): State<Arc<AdminState>>,
    UrlPath(name): UrlPath<String>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ComponentInfo>, ApiError> {
    let body = read(body)?;
    let signature = match headers.get(SIGNATURE_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(signature)) => Some(signature),
        Some(Err(_)) => {
            return Err(ApiError::Unprocessable(format!(
                "{SIGNATURE_HEADER} must be `<publisher>:<hex>`"
            )));
        }
    };
    if body.is_empty() {
        return Err(ApiError::Unprocessable(
            "the body must be the component's .wasm file".into(),
        ));
    }
    Ok(Json(
        state
            .runtime
            .deploy(&name, body.to_vec(), signature)
            .await
            .map_err(from_deploy)?,
    ))
}

/// Installs a new component: a `multipart/form-data` body with the parts `name`, `policy`
/// (the policy file's text), `wasm` (the component) and, when it is signed, `signature`.
async fn install(
    State(state): State<Arc<AdminState>>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<
    (
        StatusCode,
        [(header::HeaderName, String); 1],
        Json<ComponentInfo>,
    ),
    ApiError,
> {
    let mut form = form.map_err(|e| {
        ApiError::Unprocessable(format!(
            "the body must be a multipart/form-data form with the parts `name`, `policy`, `wasm` and, when signed, `signature`: {e}"
        ))
    })?;
    let unreadable = |e: axum::extract::multipart::MultipartError| {
        unread_body(e.status(), || {
            ApiError::Unprocessable(format!("the body is not a readable multipart form: {e}"))
        })
    };
    let (mut name, mut policy, mut wasm, mut signature) = (None, None, None, None);
    while let Some(part) = form.next_field().await.map_err(unreadable)? {
        let field = part.name().unwrap_or_default().to_string();
        let text = |bytes: Bytes| {
            String::from_utf8(bytes.to_vec()).map_err(|_| {
                ApiError::Unprocessable(format!("the part `{field}` must be UTF-8 text"))
            })
        };
        match field.as_str() {
            "name" => name = Some(text(part.bytes().await.map_err(unreadable)?)?),
            "policy" => policy = Some(text(part.bytes().await.map_err(unreadable)?)?),
            "signature" => signature = Some(text(part.bytes().await.map_err(unreadable)?)?),
            "wasm" => wasm = Some(part.bytes().await.map_err(unreadable)?),
            other => {
                return Err(ApiError::Unprocessable(format!(
                    "unknown part `{other}`: the form has `name`, `policy`, `wasm` and, when signed, `signature`"
                )));
            }
        }
    }
    let missing = |part: &str| ApiError::Unprocessable(format!("the form has no `{part}` part"));
    let name = name.ok_or_else(|| missing("name"))?.trim().to_string();
    let install = Install {
        policy: policy.ok_or_else(|| missing("policy"))?,
        wasm: wasm
            .filter(|wasm| !wasm.is_empty())
            .ok_or_else(|| missing("wasm"))?
            .to_vec(),
        signature: signature
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        name: name.clone(),
    };
    let info = state.runtime.install(install).await.map_err(from_deploy)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/admin/components/{name}"))],
        Json(info),
    ))
}

/// Uninstalls a component installed through the admin API.
async fn uninstall(
    State(state): State<Arc<AdminState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    state.runtime.uninstall(&name).await.map_err(from_deploy)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Without a body: back to the previous version. With `{"digest": "…"}`: back to that kept
/// version (see `versions`).
async fn rollback(
    State(state): State<Arc<AdminState>>,
    UrlPath(name): UrlPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ComponentInfo>, ApiError> {
    let body = read(body)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct To {
        digest: String,
    }
    let rolled = match body.is_empty() {
        true => state.runtime.rollback(&name).await,
        false => {
            let to: To = serde_json::from_slice(&body).map_err(|e| {
                ApiError::Unprocessable(format!(
                    "the body must be empty or {{\"digest\": \"<sha256 of a kept version>\"}}: {e}"
                ))
            })?;
            state.runtime.rollback_to(&name, &to.digest).await
        }
    };
    Ok(Json(rolled.map_err(from_deploy)?))
}

/// Every kept version of a component, newest first.
async fn versions(
    State(state): State<Arc<AdminState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let versions = state.runtime.versions(&name).map_err(from_deploy)?;
    Ok(Json(serde_json::json!({ "items": versions })))
}

/// Deploys the policy's `wasm` file again and unpins: see [`Runtime::reset`].
async fn reset(
    State(state): State<Arc<AdminState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<ComponentInfo>, ApiError> {
    Ok(Json(state.runtime.reset(&name).await.map_err(from_deploy)?))
}

fn from_deploy(error: DeployError) -> ApiError {
    match error {
        DeployError::UnknownComponent(_) => ApiError::NotFound(error.to_string()),
        DeployError::Exists(_) | DeployError::NotInstalled(..) => {
            ApiError::Conflict(error.to_string())
        }
        DeployError::Busy(_) => ApiError::CompileQueueFull(error.to_string()),
        DeployError::Refused(_) => ApiError::Unprocessable(error.to_string()),
        DeployError::NoPrevious(_) => ApiError::Conflict(error.to_string()),
        DeployError::UnknownVersion(..) => ApiError::NotFound(error.to_string()),
        DeployError::Unexpected(e) => ApiError::Unexpected(e),
    }
}

/// The admin token: configured, or read from the data directory, or generated there.
pub fn token(
    configured: Option<SecretString>,
    data_dir: &Path,
) -> anyhow::Result<(SecretString, String)> {
    crate::secrets::load_or_generate(configured, data_dir, TOKEN_FILE)
}
