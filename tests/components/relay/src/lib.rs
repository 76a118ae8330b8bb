//! Test fixture: the `services` capability over HTTP. `POST /relay/call` makes the call its
//! body describes and reports what came back; `/relay/internal/*` is what a callee serves.

use serde::Deserialize;
use serde_json::json;
use truevalue_sdk::prelude::*;
use truevalue_sdk::services::{self, CallError};

struct Relay;

#[derive(Deserialize)]
struct CallSpec {
    component: String,
    method: String,
    path: String,
    #[serde(default)]
    body: Option<serde_json::Value>,
    /// Touch the database before calling, so the request holds its transaction meanwhile.
    #[serde(default)]
    database: bool,
    /// Make the call this many times, one after the other (at least once); the answer is the
    /// last one's, or the first failure.
    #[serde(default)]
    times: u32,
}

impl App for Relay {
    fn router() -> Router {
        Router::new()
            .post("/relay/call", call)
            .post("/relay/rights-changed", |r| {
                let body: serde_json::Value = r.json()?;
                services::rights_changed(body["user_id"].as_str().unwrap_or_default())?;
                Ok(Response::no_content())
            })
            .get("/relay/declared", |_| {
                Response::json(200, &services::declared_permissions())
            })
            .get("/relay/internal/whoami", whoami)
            .post("/relay/internal/whoami", whoami)
            .post("/relay/internal/call", call)
            .get("/relay/internal/spin", |_| {
                loop {
                    std::hint::black_box(0);
                }
            })
    }
}

/// The context a callee sees.
fn whoami(request: &Request) -> Result<Response, Problem> {
    let c = request.context();
    Response::json(
        200,
        &json!({
            "caller": c.caller, "user_id": c.user_id, "org_id": c.org_id,
            "permissions": c.permissions, "request_id": c.request_id,
            "method": request.method(), "path": request.path(),
            "query": request.query("q"), "body": String::from_utf8_lossy(request.body()),
        }),
    )
}

fn call(request: &Request) -> Result<Response, Problem> {
    let spec: CallSpec = request.json()?;
    if spec.database {
        db::query("SELECT 1", &[])?;
    }
    let body = spec
        .body
        .map(|b| serde_json::to_vec(&b).unwrap_or_default())
        .unwrap_or_default();
    let mut made = 0;
    let mut outcome = services::call(&spec.component, &spec.method, &spec.path, &body);
    while outcome.is_ok() && made + 1 < spec.times {
        made += 1;
        outcome = services::call(&spec.component, &spec.method, &spec.path, &body);
    }
    let answer = match outcome {
        Ok(reply) => json!({
            "status": reply.status,
            "body": serde_json::from_slice::<serde_json::Value>(&reply.body)
                .unwrap_or_else(|_| String::from_utf8_lossy(&reply.body).into()),
        }),
        Err(error) => json!({
            "error": match error {
                CallError::NotAllowed => "not-allowed".to_string(),
                CallError::NotFound => "not-found".to_string(),
                CallError::Busy => "busy".to_string(),
                CallError::Failed(why) => format!("failed: {why}"),
            },
            "after": made,
        }),
    };
    Response::json(200, &answer)
}

truevalue_sdk::component!(Relay);
