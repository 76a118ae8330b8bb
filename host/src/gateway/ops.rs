//! Operations endpoints of the host: `/healthz` and `/readyz` on the public port for load
//! balancers. `/metrics` is served by the admin listener only (it names components and their
//! traffic): see `admin::metrics`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::problem::ApiError;
use super::{AppState, Upstream};

/// Alive: the process answers.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready: every configured backend answers within two seconds (else 503). A component that
/// failed to load does not make the host unready: the others serve, so a load balancer should
/// keep sending traffic; the answer is then a 200 with `status: degraded` and the failed
/// components under `components`, each with why (bounded).
pub async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    const WITHIN: Duration = Duration::from_secs(2);
    let upstream = async {
        match &state.upstream {
            Upstream::Local(runtime) => ("database", runtime.backend().ping().await),
            Upstream::Nodes(nodes) => ("nodes", nodes.ready().await),
        }
    };
    let database = tokio::time::timeout(WITHIN, upstream);
    let backends = tokio::time::timeout(WITHIN, state.backends.check());
    let (database, backends) = tokio::join!(database, backends);

    let mut checks = serde_json::Map::new();
    let mut failures = Vec::new();
    let (name, result) =
        database.unwrap_or_else(|_| ("upstream", Err(anyhow::anyhow!("no answer within 2 s"))));
    record(&mut checks, &mut failures, name, result);
    for (name, result) in backends
        .unwrap_or_else(|_| vec![("cache/broker", Err(anyhow::anyhow!("no answer within 2 s")))])
    {
        record(&mut checks, &mut failures, name, result);
    }
    let failed = match &state.upstream {
        Upstream::Local(runtime) => runtime.failed(),
        Upstream::Nodes(_) => Vec::new(),
    };
    if !failures.is_empty() {
        Err(ApiError::NotReady(failures.join("; ")))
    } else if failed.is_empty() {
        Ok(Json(json!({ "status": "ready", "checks": checks })))
    } else {
        let components: serde_json::Map<String, Value> = failed
            .into_iter()
            .map(|(name, why)| (name, json!(format!("failed to load: {why}"))))
            .collect();
        Ok(Json(
            json!({ "status": "degraded", "checks": checks, "components": components }),
        ))
    }
}

fn record(
    checks: &mut serde_json::Map<String, Value>,
    failures: &mut Vec<String>,
    name: &str,
    result: anyhow::Result<()>,
) {
    match result {
        Ok(()) => {
            checks.insert(name.into(), json!("ok"));
        }
        Err(e) => {
            checks.insert(name.into(), json!("unreachable"));
            failures.push(format!("{name}: {e:#}"));
        }
    }
}
