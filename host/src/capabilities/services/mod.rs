//! The `services` capability: a component calls another component's internal routes through
//! the host. The callee runs exactly as for a gateway request (a fresh instance, its own
//! policy's limits and transaction) and sees the original verified context plus the caller's
//! name. Calls stay in this process: every node serves every component.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::bindings::handler::{Request, RequestContext};
use crate::bindings::services::{CallError, Host, Reply};
use crate::capabilities::tokens::Tokens;
use crate::runtime::{Call, Failure, Outcome, Runtime};

/// How deep calls may nest (a calls b calls c …): enough for real chains, and a loop of calls
/// between components ends with an error long before it could exhaust anything.
pub const MAX_DEPTH: u8 = 4;

/// Most rights changes of one request recorded again after its commit (the first record of
/// each is made at once, whatever their number).
const MAX_CONFIRMED: usize = 10_000;

/// Methods a call may use.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

pub struct ServicesCtx {
    runtime: Weak<Runtime>,
    caller: Arc<str>,
    allowed: Arc<BTreeSet<String>>,
    tokens: Arc<Tokens>,
    /// The request this instance serves, as the callee will see it (minus `caller`).
    context: RequestContext,
    call: Call,
    /// The users whose rights changed in this request, recorded again once it committed.
    rights_changed: BTreeSet<String>,
    /// The client's `User-Agent`, passed on to callees (their events name it).
    user_agent: Option<String>,
    /// The component an unfinished call waits for.
    pending: Option<Arc<str>>,
}

impl ServicesCtx {
    pub fn new(
        runtime: Weak<Runtime>,
        caller: Arc<str>,
        allowed: Arc<BTreeSet<String>>,
        tokens: Arc<Tokens>,
        context: RequestContext,
        call: Call,
    ) -> Self {
        Self {
            runtime,
            caller,
            allowed,
            tokens,
            context,
            call,
            rights_changed: BTreeSet::new(),
            user_agent: None,
            pending: None,
        }
    }

    /// Passes the client's `User-Agent` on to the components this request calls.
    pub fn with_user_agent(mut self, user_agent: Option<String>) -> Self {
        self.user_agent = user_agent;
        self
    }

    /// The component an unfinished call of this request waits for, if one does.
    pub fn pending(&self) -> Option<&str> {
        self.pending.as_deref()
    }

    /// Records this request's rights changes once more, now that its transaction committed: a
    /// token minted by a request that read the old rights before the commit then carries an
    /// earlier time, and is refused too.
    pub async fn confirm_rights_changes(&mut self) {
        let Some(org_id) = &self.context.org_id else {
            return;
        };
        for user_id in std::mem::take(&mut self.rights_changed) {
            if let Err(error) = self.tokens.rights_changed(org_id, &user_id).await {
                tracing::error!(component = %self.caller, %error, "could not record a committed rights change");
            }
        }
    }
}

impl Host for ServicesCtx {
    async fn call(
        &mut self,
        component: String,
        method: String,
        path: String,
        body: Vec<u8>,
    ) -> wasmtime::Result<Result<Reply, CallError>> {
        if !self.allowed.contains(&component) {
            tracing::warn!(caller = %self.caller, callee = %component, "refused a call the policy does not list");
            return Ok(Err(CallError::NotAllowed));
        }
        let Some(runtime) = self.runtime.upgrade() else {
            return Ok(Err(CallError::Failed("the host is shutting down".into())));
        };
        let (path, query) = path.split_once('?').unwrap_or((&path, ""));
        let slot = match runtime.slot(&component) {
            Some(slot) if slot.sandbox.policy.is_internal(path) => slot.clone(),
            _ => return Ok(Err(CallError::NotFound)),
        };
        let method = method.to_ascii_uppercase();
        if !METHODS.contains(&method.as_str()) {
            return Ok(Err(CallError::Failed(format!(
                "method {method:?} is not one of {METHODS:?}"
            ))));
        }
        if self.call.depth >= MAX_DEPTH {
            return Ok(Err(CallError::Failed(format!(
                "calls nest at most {MAX_DEPTH} deep"
            ))));
        }
        if self.call.deadline <= Instant::now() {
            return Ok(Err(CallError::Failed(
                "the caller's deadline has passed".into(),
            )));
        }
        let mut headers = match body.is_empty() {
            true => Vec::new(),
            false => vec![("content-type".into(), "application/json".into())],
        };
        if let Some(user_agent) = &self.user_agent {
            headers.push(("user-agent".into(), user_agent.clone()));
        }
        let request = Request {
            method,
            path: path.to_string(),
            query: query.to_string(),
            headers,
            body,
            context: RequestContext {
                caller: Some(self.caller.to_string()),
                ..self.context.clone()
            },
        };
        let call = Call {
            depth: self.call.depth + 1,
            deadline: self.call.deadline,
            tenant: self.call.tenant.clone(),
        };
        // The callee's future holds this one's: boxed, since calls nest.
        self.pending = Some(slot.sandbox.name.clone());
        let outcome = Box::pin(runtime.run(&slot, request, call)).await;
        self.pending = None;
        Ok(match outcome {
            Outcome::Response { response, .. } => Ok(Reply {
                status: response.status,
                headers: response.headers,
                body: response.body,
            }),
            Outcome::Busy => Err(CallError::Busy),
            Outcome::Unavailable => Err(CallError::Failed(
                "it failed to load and serves nothing until a fixed version is deployed".into(),
            )),
            Outcome::Failed(failure) => {
                tracing::warn!(caller = %self.caller, callee = %component, kind = failure.kind(), "a call failed");
                Err(CallError::Failed(match failure {
                    Failure::Timeout => "timeout".into(),
                    Failure::OutOfMemory => "out of memory".into(),
                    Failure::Trap(_) => "trap".into(),
                    Failure::Commit(_) => "its transaction could not be committed".into(),
                }))
            }
        })
    }

    async fn declared_permissions(&mut self) -> wasmtime::Result<Vec<(String, Vec<String>)>> {
        let Some(runtime) = self.runtime.upgrade() else {
            return Ok(Vec::new());
        };
        Ok(runtime
            .policies()
            .iter()
            .filter(|policy| !policy.permissions.is_empty())
            .map(|policy| (policy.name.clone(), policy.permissions.clone()))
            .collect())
    }

    async fn plugins(&mut self) -> wasmtime::Result<Vec<String>> {
        let Some(runtime) = self.runtime.upgrade() else {
            return Ok(Vec::new());
        };
        Ok(runtime
            .policies()
            .iter()
            .filter(|policy| policy.per_organization)
            .map(|policy| policy.name.clone())
            .collect())
    }

    async fn rights_changed(&mut self, user_id: String) -> wasmtime::Result<Result<(), String>> {
        let Some(org_id) = &self.context.org_id else {
            return Ok(Err(
                "the request acts for no organization, so no rights in one can change".into(),
            ));
        };
        // Recorded now, so the caller fails (and rolls back) when the host cannot record it,
        // and again after the commit (`confirm_rights_changes`).
        let recorded = self.tokens.rights_changed(org_id, &user_id).await;
        if recorded.is_ok() && self.rights_changed.len() < MAX_CONFIRMED {
            self.rights_changed.insert(user_id);
        }
        Ok(recorded)
    }
}
