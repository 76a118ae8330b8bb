//! One request through one component: a permit, a fresh instance (or, where the policy allows
//! reuse, one kept from an earlier request of the same organization), the handler under the
//! policy's deadline and memory limit, then commit or roll back the request's transaction —
//! and, once it committed, hand the emails it queued to the mailer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::Store;

use super::loader::{Instance, Loaded, Pre};
use super::registry::{Runtime, Slot};
use super::state::State;
use crate::bindings::handler::{Request, Response};
use crate::capabilities::database::Error as DbError;

/// Most headers a component's response may carry (common clients take 100 in all, and the
/// host adds its own), and most bytes of names and values in all.
/// Its body needs no bound of its own: it was in the component's memory, under its limit.
const MAX_RESPONSE_HEADERS: usize = 64;
const MAX_RESPONSE_HEADER_BYTES: usize = 64 * 1024;

/// Longest a request waits for the place of an instance still being dropped before it is
/// refused as busy: a drop takes microseconds once its task runs.
const PLACE_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

/// What the gateway needs besides the request itself.
pub struct RequestMeta {
    pub request_id: String,
}

/// Where a request stands in a chain of calls between components.
#[derive(Debug, Clone)]
pub struct Call {
    /// 0 for a request from the gateway, 1 for a call it makes, and so on.
    pub depth: u8,
    /// When the outermost request's time is up; a callee never runs past it.
    pub deadline: Instant,
    /// The organization the request's database transactions are bound to (a tenant route);
    /// calls it makes are bound to the same one.
    pub tenant: Option<Arc<str>>,
}

/// How a request through a component ended.
pub enum Outcome {
    /// The handler answered; below 500 its transaction was committed.
    Response { response: Response, version: String },
    /// No instance could be had right now: the component or the host is at its limit.
    Busy,
    /// The component failed to load and no fixed version was deployed yet: nothing to run.
    Unavailable,
    /// The component failed; its transaction was rolled back.
    Failed(Failure),
}

#[derive(Debug)]
pub enum Failure {
    /// Past the policy's deadline.
    Timeout,
    /// The component asked for more memory than its policy allows.
    OutOfMemory,
    /// A trap (panic, unreachable, …) or an instantiation failure.
    Trap(String),
    /// The handler answered but its transaction could not be committed.
    Commit(String),
}

impl Failure {
    /// Every `kind` label the traps counter can carry, in the order of [`Failure::index`].
    const KINDS: [&'static str; 4] = ["timeout", "out_of_memory", "trap", "commit"];

    fn index(&self) -> usize {
        match self {
            Failure::Timeout => 0,
            Failure::OutOfMemory => 1,
            Failure::Trap(_) => 2,
            Failure::Commit(_) => 3,
        }
    }

    pub fn kind(&self) -> &'static str {
        Self::KINDS[self.index()]
    }
}

/// A component's call metrics, looked up once when its sandbox is built (a lookup by labels
/// costs allocations and a hash per request), and at zero from then on, so a scrape shows
/// them before its first call.
pub(crate) struct CallMetrics {
    live: metrics::Gauge,
    /// Instances kept for reuse, idle.
    kept: metrics::Gauge,
    seconds: metrics::Histogram,
    traps: [metrics::Counter; Failure::KINDS.len()],
}

impl CallMetrics {
    /// Metrics that record nothing, for a component not yet loaded: a refused install or
    /// deploy must leave no series in `/metrics` for a component that does not exist.
    pub(crate) fn unregistered() -> Self {
        Self {
            live: metrics::Gauge::noop(),
            kept: metrics::Gauge::noop(),
            seconds: metrics::Histogram::noop(),
            traps: Failure::KINDS.map(|_| metrics::Counter::noop()),
        }
    }

    pub(crate) fn register(component: &str) -> Self {
        let live =
            metrics::gauge!("truevalue_instances_live", "component" => component.to_string());
        live.set(0.0);
        let kept =
            metrics::gauge!("truevalue_instances_kept", "component" => component.to_string());
        kept.set(0.0);
        let traps = Failure::KINDS.map(|kind| {
            let counter = metrics::counter!("truevalue_component_traps_total", "component" => component.to_string(), "kind" => kind);
            counter.increment(0);
            counter
        });
        Self {
            live,
            kept,
            seconds: metrics::histogram!("truevalue_component_call_seconds", "component" => component.to_string()),
            traps,
        }
    }

    fn trap(&self, failure: &Failure) -> &metrics::Counter {
        &self.traps[failure.index()]
    }
}

/// Counts an instance in a gauge while it exists (live, or kept idle).
struct Counted(metrics::Gauge);

impl Counted {
    fn new(gauge: &metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl Runtime {
    /// A request from the gateway; `tenant`: the organization a tenant route is bound to.
    pub async fn handle(
        self: &Arc<Self>,
        slot: &Slot,
        request: Request,
        tenant: Option<Arc<str>>,
    ) -> Outcome {
        let call = Call {
            depth: 0,
            deadline: Instant::now() + slot.sandbox.deadline(),
            tenant,
        };
        self.run(slot, request, call).await
    }

    /// A request from the gateway or another component, ending by `call.deadline` at the latest.
    pub async fn run(self: &Arc<Self>, slot: &Slot, request: Request, call: Call) -> Outcome {
        // In-flight requests keep the version they started on, whatever a deploy swaps in.
        let Some(version) = slot.current.load_full() else {
            return Outcome::Unavailable;
        };
        let sandbox = &slot.sandbox;
        let Ok(_permit) = slot.permits.clone().try_acquire_owned() else {
            return Outcome::Busy;
        };
        let reuse = sandbox.policy.limits.instance_reuse;
        let audience = (reuse > 1).then(|| Audience::of(&request));
        let prestart = sandbox.policy.limits.prestart;
        let kept = match reuse > 1 || prestart {
            true => slot.kept.take(&version, audience.as_ref()),
            false => None,
        };
        // The next request's instance is made while this one runs.
        if prestart {
            self.prestart(&sandbox.name);
        }
        let start = match kept {
            Some(kept) => Start::Kept(kept),
            None => match self.free_place().await {
                Some(place) => Start::Fresh(place),
                None => return Outcome::Busy,
            },
        };
        let _live = Counted::new(&sandbox.metrics.live);
        let started = Instant::now();

        let deadline = call.deadline.min(started + sandbox.deadline());
        let call = Call { deadline, ..call };
        let (tenant, depth) = (call.tenant.clone(), call.depth);
        let services = sandbox.services(self, &request, call);
        let request_id = &request.context.request_id;
        let (mut store, instance, served, pool) = match start {
            Start::Kept(mut kept) => {
                sandbox.rebind(
                    &mut kept.store,
                    request_id,
                    deadline,
                    tenant,
                    depth,
                    services,
                );
                (kept.store, Some(kept.instance), kept.served, kept.pool)
            }
            Start::Fresh(pool) => {
                let store = sandbox.store(
                    &self.engine,
                    request_id,
                    deadline,
                    tenant,
                    depth,
                    Some(services),
                );
                (store, None, 0, pool)
            }
        };
        store.data_mut().request.events.serve(&request);
        let long_running = super::fairness::restart(&mut store);
        // Boxed: the instantiation's future is large, and every layer above would move it.
        let result = tokio::time::timeout_at(
            deadline.into(),
            super::fairness::OffWorker::new(
                Box::pin(call_handler(&version.pre, &mut store, instance, &request)),
                long_running,
            ),
        )
        .await;
        // Events join the request's transaction: they commit with its writes or not at all.
        let (events, overflow) = match store.data_mut().request.events.take() {
            Ok(events) => (events, None),
            Err(overflow) => (Vec::new(), Some(overflow)),
        };
        let outboxed = match &result {
            Ok(Ok((response, _))) if response.status < 500 && !events.is_empty() => {
                let database = &mut store.data_mut().request.database;
                database
                    .outbox(&sandbox.name, &events)
                    .await
                    .map_err(describe)
            }
            _ => Ok(()),
        }
        .and(overflow.map_or(Ok(()), Err));
        let transaction = store.data_mut().request.database.take_transaction();
        let (outcome, instance) = match result {
            Ok(Ok((response, instance))) => {
                // A 5xx answer rolls back: the transaction is dropped uncommitted.
                let answered = response.status < 500;
                let committed = match (outboxed, transaction) {
                    (Err(e), _) => Err(Failure::Commit(e)),
                    (Ok(()), Some(transaction)) if answered => transaction
                        .commit()
                        .await
                        .map_err(|e| Failure::Commit(describe(e))),
                    _ => Ok(()),
                };
                if committed.is_ok() && answered && !events.is_empty() {
                    self.capabilities.events.wake();
                }
                match committed {
                    Ok(()) => (
                        Outcome::Response {
                            response,
                            version: version.version.clone(),
                        },
                        answered.then_some(instance),
                    ),
                    Err(failure) => (Outcome::Failed(failure), None),
                }
            }
            Ok(Err(error)) => (Outcome::Failed(classify(&error, &store)), None),
            Err(_elapsed) => {
                let waiting = store.data().request.waiting_for();
                tracing::warn!(
                    component = %sandbox.name,
                    request_id = %request.context.request_id,
                    waiting_for = waiting.as_deref().unwrap_or("neither a database nor another component"),
                    "the request ran past its deadline"
                );
                (Outcome::Failed(Failure::Timeout), None)
            }
        };
        // Emails follow the transaction: only a request that answered below 500 and committed
        // sends what it queued, so no email announces a change that was rolled back.
        let emails = store.data_mut().request.email.take();
        match &outcome {
            Outcome::Response { response, .. } if response.status < 500 => {
                self.capabilities.email.dispatch(emails);
                store
                    .data_mut()
                    .request
                    .services
                    .confirm_rights_changes()
                    .await;
            }
            _ if !emails.messages.is_empty() => tracing::info!(
                component = %sandbox.name,
                request_id = %request.context.request_id,
                dropped = emails.messages.len(),
                "the request did not succeed, so the emails it queued are not sent"
            ),
            _ => {}
        }
        // Only an instance that answered below 500 and committed is kept: after a trap or a
        // timeout its memory may be anywhere in between.
        match (instance, audience) {
            (Some(instance), Some(audience)) if served + 1 < reuse => slot.kept.put(
                Kept::new(
                    version.clone(),
                    audience,
                    store,
                    instance,
                    served + 1,
                    pool,
                    &sandbox.metrics,
                ),
                sandbox.policy.limits.max_instances as usize,
            ),
            _ => self.retire(store, pool),
        }
        sandbox
            .metrics
            .seconds
            .record(started.elapsed().as_secs_f64());
        if let Outcome::Failed(failure) = &outcome {
            sandbox.metrics.trap(failure).increment(1);
        }
        outcome
    }

    /// Instantiates `component` ahead of its next request, on a task of its own, unless an
    /// instance is ready or being readied already, or the host's instance pool is full (a
    /// request's instance never waits for one made ahead).
    fn prestart(self: &Arc<Self>, component: &str) {
        let Some(slot) = self.slot(component) else {
            return;
        };
        if !slot.kept.begin_prestart() {
            return;
        }
        let runtime = self.clone();
        tokio::spawn(async move {
            if let Some(ready) = runtime.instantiate_ahead(&slot).await {
                slot.kept
                    .put(ready, slot.sandbox.policy.limits.max_instances as usize);
            }
            slot.kept.end_prestart();
        });
    }

    /// A new instance of the slot's current version, for no request yet; `None` when the pool
    /// has no free place or the instantiation fails (the next request instantiates as usual,
    /// and reports the failure).
    async fn instantiate_ahead(&self, slot: &Slot) -> Option<Kept> {
        let version = slot.current.load_full()?;
        let place = self.pool.clone().try_acquire_owned().ok()?;
        let sandbox = &slot.sandbox;
        let deadline = Instant::now() + sandbox.deadline();
        let mut store = sandbox.store(&self.engine, "prestart", deadline, None, 0, None);
        let instantiated = tokio::time::timeout_at(
            deadline.into(),
            Box::pin(version.pre.instantiate(&mut store)),
        )
        .await;
        let Ok(Ok(instance)) = instantiated else {
            self.retire(store, place);
            return None;
        };
        Some(Kept::new(
            version,
            Audience::Anyone,
            store,
            instance,
            0,
            place,
            &sandbox.metrics,
        ))
    }

    /// A place in the host's instance pool ([`Runtime::pool_place`]); while instances done with
    /// are still to be dropped, waits for their places, for [`PLACE_WAIT`] at most: their drops
    /// run on tasks of their own, which a caller that never yields (a guest making call after
    /// call) would keep waiting.
    async fn free_place(&self) -> Option<OwnedSemaphorePermit> {
        let until = Instant::now() + PLACE_WAIT;
        loop {
            if let Some(place) = self.pool_place() {
                return Some(place);
            }
            if self.retiring.load(Ordering::Acquire) == 0 || Instant::now() >= until {
                return None;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Drops a store that is done with, off the answer's path: dropping it resets its
    /// instance's memory for the next one (a big guest's written pages copied back from its
    /// image), which the client need not wait for. The instance's place in the pool is given
    /// back only then, so the pool never holds more instances than it has places.
    fn retire(&self, store: Store<State>, place: OwnedSemaphorePermit) {
        let retiring = self.retiring.clone();
        retiring.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            drop(store);
            drop(place);
            retiring.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// A place in the host's instance pool; when every place is taken, a kept instance gives
    /// its place up first.
    fn pool_place(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(place) = self.pool.clone().try_acquire_owned() {
            return Some(place);
        }
        while self.evict_kept() {
            if let Ok(place) = self.pool.clone().try_acquire_owned() {
                return Some(place);
            }
        }
        None
    }
}

/// How a request's instance comes to be.
enum Start {
    /// Kept from an earlier request.
    Kept(Kept),
    /// Instantiated for this request, in this place of the instance pool.
    Fresh(OwnedSemaphorePermit),
}

/// Instantiates the component unless an instance is given (a kept one), and calls its handler:
/// the request as it is for the `service` world; for the `plugin` world, without the caller,
/// which its `context` getters answer.
async fn call_handler(
    pre: &Pre,
    store: &mut Store<State>,
    instance: Option<Instance>,
    request: &Request,
) -> wasmtime::Result<(Response, Instance)> {
    let instance = match instance {
        Some(instance) => instance,
        None => pre.instantiate(&mut *store).await?,
    };
    let response = match &instance {
        Instance::Service(service) => {
            service
                .truevalue_platform_handler()
                .call_handle(&mut *store, request)
                .await?
        }
        Instance::Plugin(plugin) => {
            use crate::bindings::plugin::endpoint;

            store.data_mut().request.context =
                crate::capabilities::context::ContextCtx(Some(request.context.clone()));
            let request = endpoint::Request {
                method: request.method.clone(),
                path: request.path.clone(),
                query: request.query.clone(),
                headers: request.headers.clone(),
                body: request.body.clone(),
            };
            let response = plugin
                .truevalue_platform_endpoint()
                .call_handle(&mut *store, &request)
                .await?;
            Response {
                status: response.status,
                headers: response.headers,
                body: response.body,
            }
        }
    };
    let bytes: usize = response
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    if response.headers.len() > MAX_RESPONSE_HEADERS || bytes > MAX_RESPONSE_HEADER_BYTES {
        wasmtime::bail!(
            "the response has {} headers of {bytes} bytes; at most {MAX_RESPONSE_HEADERS} headers of {MAX_RESPONSE_HEADER_BYTES} bytes",
            response.headers.len()
        );
    }
    Ok((response, instance))
}

/// An instance kept for its component's next request (`limits.instance_reuse` above 1).
pub(crate) struct Kept {
    version: Arc<Loaded>,
    /// Whom it served; it serves no one else.
    audience: Audience,
    store: Store<State>,
    instance: Instance,
    served: u32,
    /// Its place in the host's instance pool, held while it is kept.
    pool: OwnedSemaphorePermit,
    /// In `truevalue_instances_kept` while it is kept.
    _counted: Counted,
    /// When it was put back after its last request.
    idle_since: Instant,
}

impl Kept {
    /// `instance` (in its `store`) kept from now on for `audience`, counted in `metrics`.
    fn new(
        version: Arc<Loaded>,
        audience: Audience,
        store: Store<State>,
        instance: Instance,
        served: u32,
        pool: OwnedSemaphorePermit,
        metrics: &CallMetrics,
    ) -> Self {
        Self {
            version,
            audience,
            store,
            instance,
            served,
            pool,
            _counted: Counted::new(&metrics.kept),
            idle_since: Instant::now(),
        }
    }
}

/// Whom a kept instance may serve: the requests of one organization; a signed-in user without
/// one is a group of their own, and anonymous requests are another. An instance made ahead
/// (`limits.prestart`) has served no one, and may serve anyone.
#[derive(PartialEq, Eq)]
enum Audience {
    Organization(String),
    User(String),
    Anonymous,
    Anyone,
}

impl Audience {
    fn of(request: &Request) -> Self {
        let context = &request.context;
        match (&context.org_id, &context.user_id) {
            (Some(org), _) => Audience::Organization(org.clone()),
            (None, Some(user)) => Audience::User(user.clone()),
            (None, None) => Audience::Anonymous,
        }
    }
}

/// A component's kept instances, most recently used last, and whether one is being made
/// ahead of a request.
#[derive(Default)]
pub(crate) struct KeptInstances(Mutex<Vec<Kept>>, AtomicBool);

impl KeptInstances {
    /// The most recently used instance of `version` that served `audience` (when the policy
    /// reuses instances), else one made ahead that served no one. Instances of other versions
    /// (a deploy swapped them out) are dropped on the way.
    fn take(&self, version: &Arc<Loaded>, audience: Option<&Audience>) -> Option<Kept> {
        let (found, stale) = {
            let mut kept = self.0.lock().ok()?;
            let stale: Vec<Kept> = kept
                .extract_if(.., |k| !Arc::ptr_eq(&k.version, version))
                .collect();
            let found = audience
                .and_then(|audience| kept.iter().rposition(|k| k.audience == *audience))
                .or_else(|| kept.iter().rposition(|k| k.audience == Audience::Anyone))
                .map(|at| kept.remove(at));
            (found, stale)
        };
        // Dropped outside the lock: freeing an instance takes microseconds.
        drop(stale);
        found
    }

    /// Keeps `instance` unless `most` are kept already.
    fn put(&self, instance: Kept, most: usize) {
        let refused = match self.0.lock() {
            Ok(mut kept) if kept.len() < most => {
                kept.push(instance);
                None
            }
            _ => Some(instance),
        };
        drop(refused);
    }

    /// Claims the making of an instance ahead of a request: false when one is being made, or
    /// one is ready.
    fn begin_prestart(&self) -> bool {
        let ready = self.0.lock().map_or(true, |kept| {
            kept.iter().any(|k| k.audience == Audience::Anyone)
        });
        !ready && !self.1.swap(true, Ordering::AcqRel)
    }

    fn end_prestart(&self) {
        self.1.store(false, Ordering::Release);
    }

    /// Drops the least recently used instance; false when none is kept.
    pub(crate) fn evict(&self) -> bool {
        let evicted = match self.0.lock() {
            Ok(mut kept) if !kept.is_empty() => Some(kept.remove(0)),
            _ => None,
        };
        evicted.is_some()
    }

    /// Drops the instances idle for `idle` or longer.
    pub(crate) fn expire(&self, idle: std::time::Duration) {
        self.discard(|k| k.idle_since.elapsed() >= idle);
    }

    /// Drops every kept instance (a new version was deployed).
    pub(crate) fn clear(&self) {
        self.discard(|_| true);
    }

    fn discard(&self, which: impl FnMut(&mut Kept) -> bool) {
        let discarded: Vec<Kept> = match self.0.lock() {
            Ok(mut kept) => kept.extract_if(.., which).collect(),
            Err(_) => Vec::new(),
        };
        // Dropped outside the lock: freeing an instance takes microseconds.
        drop(discarded);
    }
}

fn classify(error: &wasmtime::Error, store: &Store<State>) -> Failure {
    if store.data().limits.memory_exceeded {
        Failure::OutOfMemory
    } else {
        Failure::Trap(format!("{error:#}"))
    }
}

fn describe(error: DbError) -> String {
    crate::capabilities::database::describe(error).to_string()
}
