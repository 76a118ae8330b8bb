//! Calls to other components' internal routes, through the host (the `services` capability).
//!
//! The callee sees this request's verified context and this component's name as its caller;
//! see `wit/services.wit`.
//!
//! ```no_run
//! # use truevalue_sdk::prelude::*;
//! # fn f() -> Result<(), Problem> {
//! #[derive(serde::Deserialize)]
//! struct Person { id: String, email: String }
//! let people: Vec<Person> = services::call_json("auth", "POST", "/auth/internal/users",
//!     &serde_json::json!({ "ids": ["u1", "u2"] }))?;
//! # Ok(()) }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Problem;
use crate::bindings::truevalue::platform::services as raw;
use crate::http::Request;

pub use raw::{CallError, Reply};

/// Calls `method path` on `component` with `body`, and returns the callee's answer whatever
/// its status.
pub fn call(component: &str, method: &str, path: &str, body: &[u8]) -> Result<Reply, CallError> {
    raw::call(component, method, path, body)
}

/// Calls with a JSON body and reads a JSON answer. A 2xx answer is parsed into `T`; any other
/// answer, or a failed call, becomes a problem: the callee's 4xx problem is passed on as it is
/// (its status, type and detail), anything else is a 502 whose detail names the callee only.
pub fn call_json<T: DeserializeOwned>(
    component: &str,
    method: &str,
    path: &str,
    body: &impl Serialize,
) -> Result<T, Problem> {
    let body = serde_json::to_vec(body)
        .map_err(|e| Problem::internal(format!("could not encode a call to {component}: {e}")))?;
    let reply = call(component, method, path, &body).map_err(|e| failed(component, &e))?;
    parse(component, reply)
}

/// Like [`call_json`] without a body (a `GET`).
pub fn get_json<T: DeserializeOwned>(component: &str, path: &str) -> Result<T, Problem> {
    let reply = call(component, "GET", path, &[]).map_err(|e| failed(component, &e))?;
    parse(component, reply)
}

fn parse<T: DeserializeOwned>(component: &str, reply: Reply) -> Result<T, Problem> {
    if (200..300).contains(&reply.status) {
        return serde_json::from_slice(&reply.body).map_err(|e| {
            Problem::internal(format!("{component} answered with unexpected JSON: {e}"))
        });
    }
    if (400..500).contains(&reply.status) {
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(default)]
            r#type: String,
            #[serde(default)]
            title: String,
            #[serde(default)]
            detail: String,
        }
        if let Ok(answer) = serde_json::from_slice::<Answer>(&reply.body) {
            let kind = answer.r#type.rsplit('/').next().unwrap_or_default();
            return Err(Problem::new(
                reply.status,
                kind,
                &answer.title,
                answer.detail,
            ));
        }
    }
    Err(bad_gateway(component))
}

fn failed(component: &str, error: &CallError) -> Problem {
    match error {
        CallError::Busy => Problem::new(
            503,
            "busy",
            "Service unavailable",
            format!("{component} is busy; try again shortly"),
        ),
        CallError::NotAllowed | CallError::NotFound => Problem::internal(format!(
            "this component may not call {component} there ({error:?})"
        )),
        CallError::Failed(_) => bad_gateway(component),
    }
}

fn bad_gateway(component: &str) -> Problem {
    Problem::new(
        502,
        "bad-gateway",
        "Bad gateway",
        format!("{component} did not answer as expected"),
    )
}

/// The permissions each loaded component declares in its policy, by component.
pub fn declared_permissions() -> Vec<(String, Vec<String>)> {
    raw::declared_permissions()
}

/// The components installed as per-organization plugins, which an organization must enable.
pub fn plugins() -> Vec<String> {
    raw::plugins()
}

/// Tells the gateways that `user_id`'s rights in the caller's organization changed: their
/// access tokens minted before now stop working (401 `rights-changed`) and a refresh mints new
/// claims. Call it after a role change or a removal, when the change is written.
pub fn rights_changed(user_id: &str) -> Result<(), Problem> {
    raw::rights_changed(user_id)
        .map_err(|e| Problem::internal(format!("could not record a rights change: {e}")))
}

impl Request {
    /// The component that called this route through `services`, or `None` on a request from
    /// the gateway.
    pub fn caller(&self) -> Option<&str> {
        self.context().caller.as_deref()
    }

    /// The calling component's name; 404 unless this request came through `services` from one
    /// of `allowed` — an internal route answers nobody else.
    pub fn require_caller(&self, allowed: &[&str]) -> Result<&str, Problem> {
        match self.caller() {
            Some(caller) if allowed.contains(&caller) => Ok(caller),
            _ => Err(Problem::not_found("no such route")),
        }
    }
}
