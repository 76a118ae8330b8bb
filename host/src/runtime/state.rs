//! What a store holds: WASI (no files, no network, no environment), the store's limits, and
//! each granted capability's state for the request the instance serves now. An instance kept
//! for reuse gets a new [`Bound`] for each request; the rest stays with the instance.

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capabilities::cache::CacheCtx;
use crate::capabilities::config::ConfigCtx;
use crate::capabilities::context::ContextCtx;
use crate::capabilities::crypto::CryptoCtx;
use crate::capabilities::database::DatabaseCtx;
use crate::capabilities::email::EmailCtx;
use crate::capabilities::events::EventsCtx;
use crate::capabilities::http::Outbound;
use crate::capabilities::log::LogCtx;
use crate::capabilities::log::stdio::Stdio;
use crate::capabilities::services::ServicesCtx;
use crate::capabilities::tokens::TokensCtx;

pub struct State {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) http: WasiHttpCtx,
    /// Where the guest's stdout and stderr go: the host's log, tagged with the request.
    pub(crate) stdio: Stdio,
    pub(crate) limits: StoreLimits,
    /// The guest time of the request being served (see `fairness`).
    pub(crate) slices: super::fairness::Slices,
    /// The capabilities' state for the request being served.
    pub request: Bound,
}

/// Each granted capability's state for one request: who it serves, its transaction, its
/// deadline, what it queued.
pub struct Bound {
    pub database: DatabaseCtx,
    pub cache: CacheCtx,
    pub crypto: CryptoCtx,
    pub tokens: TokensCtx,
    pub config: ConfigCtx,
    pub log: LogCtx,
    pub services: ServicesCtx,
    pub email: EmailCtx,
    pub events: EventsCtx,
    /// Where this request's outgoing HTTP may go.
    pub http: Outbound,
    /// The verified caller, for a `plugin` world component's `context` getters.
    pub context: ContextCtx,
}

impl Bound {
    /// What the request was waiting for, if a database or a call to another component had not
    /// answered yet: a request that runs past its deadline says where it was.
    pub fn waiting_for(&self) -> Option<String> {
        match (self.services.pending(), self.database.pending()) {
            (Some(callee), _) => Some(format!("a call to `{callee}`")),
            (None, Some(what)) => Some(what.to_string()),
            (None, None) => None,
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.request.http,
        }
    }
}

/// The store's limiter: caps linear memory at the policy's limit and remembers a refusal, so
/// an out-of-memory can be told apart from other traps.
pub struct StoreLimits {
    pub(crate) max_memory: usize,
    pub(crate) memory_exceeded: bool,
}

/// Table growth is tiny next to memory; this only stops a runaway.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for StoreLimits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.memory_exceeded = true;
            wasmtime::bail!(
                "out of memory: the policy allows {} MiB",
                self.max_memory / (1024 * 1024)
            );
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
