//! The registry: every component behind an atomic pointer. A deploy compiles, checks, migrates
//! and links off the request path, then swaps the pointer; requests already running keep the
//! version they started with, and the previous version stays for rollback. Deployed versions
//! are kept in the data directory (`deployed.rs`), so a restart comes back on the same versions.
//!
//! A component that fails to load at start-up (its `.wasm` missing or refused, a migration
//! failing) keeps its slot with no current version: the others serve, its routes answer 503,
//! and a deploy of a fixed version brings it in without a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::{ArcSwap, ArcSwapOption};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::{Mutex, Semaphore};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::add_to_linker_async;

use super::compiler::{Compiler, QueueFull};
use super::deployed::{DeployState, keep_version, read_state, read_version, write_state};
use super::invoke::{Call, KeptInstances};
use super::loader::{self, Loaded};
use super::state::{Bound, State, StoreLimits};
use crate::bindings;
use crate::bindings::handler::RequestContext;
use crate::capabilities::Capabilities;
use crate::capabilities::cache::{CacheCtx, Space};
use crate::capabilities::config::ConfigCtx;
use crate::capabilities::context::ContextCtx;
use crate::capabilities::crypto::CryptoCtx;
use crate::capabilities::database::{self, Backend, ComponentDb, DatabaseCtx, Dialect};
use crate::capabilities::email::EmailCtx;
use crate::capabilities::events::EventsCtx;
use crate::capabilities::http::Outbound;
use crate::capabilities::log::LogCtx;
use crate::capabilities::log::stdio::{GuestStream, Stdio};
use crate::capabilities::services::ServicesCtx;
use crate::capabilities::tokens::TokensCtx;
use crate::policy::{Capability, Policy, RouteTable, Routes};

/// What never changes between a component's versions: its policy, its linker (built from the
/// grants) and its database.
pub struct Sandbox {
    pub name: Arc<str>,
    pub policy: Arc<Policy>,
    pub(crate) linker: Linker<State>,
    pub(crate) db: Option<Arc<dyn ComponentDb>>,
    pub(crate) dialect: Dialect,
    config: Arc<BTreeMap<String, String>>,
    cache: CacheCtx,
    crypto: CryptoCtx,
    tokens: TokensCtx,
    /// The components this one may call (`services` in its policy; empty when not granted).
    services: Arc<BTreeSet<String>>,
    /// The topics this one may publish to (`events` in its policy; empty when not granted).
    topics: Arc<BTreeSet<String>>,
    /// The hosts this one may send HTTP requests to (`http_hosts`; empty when not granted).
    http_hosts: Arc<BTreeSet<String>>,
    /// Whose signatures its versions may carry, and whether one is required.
    pub(crate) signatures: Arc<crate::signatures::Signatures>,
    pub(crate) metrics: super::invoke::CallMetrics,
}

impl Sandbox {
    /// A fresh store for one request, with the policy's memory limit, ending at `deadline`.
    /// `services`: who the instance serves and how it may call other components; `None` for
    /// the throwaway instance that reads the manifest.
    pub(crate) fn store(
        &self,
        engine: &Engine,
        request_id: &str,
        deadline: Instant,
        tenant: Option<Arc<str>>,
        depth: u8,
        services: Option<ServicesCtx>,
    ) -> Store<State> {
        let stdio = Stdio::new(self.name.clone(), request_id.into());
        // Real clocks and randomness, fresh for every instance; sockets that reach no address
        // and resolve no name; stdout and stderr into the host's log.
        let wasi = WasiCtx::builder()
            .stdout(GuestStream {
                stdio: stdio.clone(),
                stderr: false,
            })
            .stderr(GuestStream {
                stdio: stdio.clone(),
                stderr: true,
            })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = State {
            wasi,
            table: Default::default(),
            http: Default::default(),
            stdio,
            limits: StoreLimits {
                max_memory: self.policy.limits.memory_mib as usize * 1024 * 1024,
                memory_exceeded: false,
            },
            slices: Default::default(),
            request: self.bound(request_id, deadline, tenant, depth, services),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limits);
        // Guest code hands its thread back to the executor at every epoch tick, and a long
        // runner waits for a slot (see `fairness`), so even endless loops never hold the
        // workers; the caller enforces the wall-clock deadline by dropping the call
        // (`tokio::time::timeout_at`).
        super::fairness::install(&mut store);
        store
    }

    /// Readies the store of a kept instance for its next request: every capability's state
    /// is new (the request's guest time starts with `fairness::restart`).
    pub(crate) fn rebind(
        &self,
        store: &mut Store<State>,
        request_id: &str,
        deadline: Instant,
        tenant: Option<Arc<str>>,
        depth: u8,
        services: ServicesCtx,
    ) {
        store.data_mut().stdio.serve(request_id.into());
        store.data_mut().request = self.bound(request_id, deadline, tenant, depth, Some(services));
    }

    fn bound(
        &self,
        request_id: &str,
        deadline: Instant,
        tenant: Option<Arc<str>>,
        depth: u8,
        services: Option<ServicesCtx>,
    ) -> Bound {
        let limits = &self.policy.limits;
        let request_id: Arc<str> = request_id.into();
        Bound {
            database: DatabaseCtx::new(
                self.db.clone(),
                self.dialect,
                database::Bounds {
                    deadline: Some(deadline),
                    max_rows: limits.max_result_rows,
                    max_bytes: limits.result_bytes(),
                    depth,
                },
                tenant,
            ),
            cache: self.cache.clone(),
            crypto: self.crypto.clone(),
            tokens: self.tokens.for_request(),
            config: ConfigCtx::new(self.config.clone()),
            log: LogCtx::new(self.name.clone(), request_id.clone()),
            services: services.unwrap_or_else(|| self.no_services(deadline)),
            email: EmailCtx::new(self.name.clone(), request_id.clone()),
            http: Outbound::new(self.name.clone(), request_id, self.http_hosts.clone()),
            context: Default::default(),
            events: EventsCtx::new(self.name.clone(), self.topics.clone(), self.policy.approved),
        }
    }

    /// For the manifest's throwaway instance: it serves no request, so it may call nobody.
    fn no_services(&self, deadline: Instant) -> ServicesCtx {
        ServicesCtx::new(
            Weak::new(),
            self.name.clone(),
            Arc::new(BTreeSet::new()),
            self.tokens.tokens().clone(),
            super::deliveries::host_context(String::new(), None),
            Call {
                depth: 0,
                deadline,
                tenant: None,
            },
        )
    }

    /// The `services` state of one request through this component.
    pub(crate) fn services(
        &self,
        runtime: &Arc<Runtime>,
        request: &bindings::handler::Request,
        call: Call,
    ) -> ServicesCtx {
        // Ungranted, the interface is not linked: the request's context need not be copied.
        if !self.policy.grants(Capability::Services) {
            return self.no_services(call.deadline);
        }
        ServicesCtx::new(
            Arc::downgrade(runtime),
            self.name.clone(),
            self.services.clone(),
            self.tokens.tokens().clone(),
            RequestContext {
                caller: None,
                ..request.context.clone()
            },
            call,
        )
        .with_user_agent(
            request
                .headers
                .iter()
                .find(|(name, _)| name == "user-agent")
                .map(|(_, value)| value.clone()),
        )
    }

    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.policy.limits.timeout_ms)
    }
}

/// One component: its sandbox and its versions.
pub struct Slot {
    pub sandbox: Sandbox,
    /// `None` only while the component failed to load and no deploy has fixed it yet.
    pub(crate) current: ArcSwapOption<Loaded>,
    previous: ArcSwapOption<Loaded>,
    /// Why the component has no current version: what failed at start-up, bounded.
    failure: ArcSwapOption<String>,
    pub(super) deploying: Mutex<()>,
    pin: ArcSwap<Pin>,
    pub(crate) permits: Arc<Semaphore>,
    /// Instances kept for reuse, when the policy allows it.
    pub(crate) kept: KeptInstances,
}

impl Slot {
    pub(super) fn new(
        sandbox: Sandbox,
        current: Option<Loaded>,
        previous: Option<Loaded>,
        failure: Option<String>,
        pin: Pin,
    ) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(sandbox.policy.limits.max_instances as usize)),
            sandbox,
            current: ArcSwapOption::new(current.map(Arc::new)),
            previous: ArcSwapOption::new(previous.map(Arc::new)),
            failure: ArcSwapOption::new(failure.map(Arc::new)),
            deploying: Mutex::new(()),
            pin: ArcSwap::from_pointee(pin),
            kept: KeptInstances::default(),
        }
    }

    /// Why the component serves nothing, when it failed to load; `None` while it serves.
    pub fn failure(&self) -> Option<Arc<String>> {
        match self.current.load().is_some() {
            true => None,
            false => self.failure.load_full(),
        }
    }
}

/// Whether the running version is pinned (by an admin deploy or rollback) or follows the
/// policy's `wasm` file, and that file's digest as read at start-up or at the last reset.
pub(super) struct Pin {
    pub pinned: bool,
    pub policy_digest: Option<String>,
}

/// What operators see of a component. A failed one has no version, digest or load time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentInfo {
    pub name: String,
    pub status: Status,
    /// Why it failed to load; only when `status` is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub version: Option<String>,
    pub digest: Option<String>,
    /// The trusted publisher who signed the running version; none when it is unsigned.
    #[serde(default)]
    pub signer: Option<String>,
    /// Interfaces the running version imports that its policy does not grant: linked to
    /// stand-ins, so every call to them fails the request.
    #[serde(default)]
    pub denied_imports: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub loaded_at: Option<OffsetDateTime>,
    pub routes: Vec<String>,
    pub previous: Option<PreviousVersion>,
    /// True when an admin deploy or rollback chose the running version: a restart loads it
    /// again instead of the policy's `wasm` file, until a reset.
    #[serde(default)]
    pub pinned: bool,
    /// The digest of the policy's `wasm` file, as read at start-up or at the last reset; none
    /// when the file could not be read.
    #[serde(default)]
    pub policy_digest: Option<String>,
    /// Installed through the admin API (so it can be uninstalled there), not from the
    /// policies directory.
    #[serde(default)]
    pub installed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It has a current version and serves its routes.
    Serving,
    /// It failed to load at start-up: its routes answer 503 until a deploy fixes it.
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreviousVersion {
    pub version: String,
    pub digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(
        "no component is named `{0}`; components come from the policies directory, or are installed with `POST /admin/components`"
    )]
    UnknownComponent(String),
    #[error("a component named `{0}` exists already; uninstall it first")]
    Exists(String),
    #[error(
        "`{0}` comes from the policies directory ({1}): remove its policy file there and restart the host to remove it"
    )]
    NotInstalled(String, String),
    #[error("{0:#}")]
    Refused(anyhow::Error),
    #[error("`{0}` has no previous version to roll back to")]
    NoPrevious(String),
    #[error("`{0}` has no kept version {1}; `GET /admin/components/{0}/versions` lists them")]
    UnknownVersion(String, String),
    #[error(transparent)]
    Busy(QueueFull),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl DeployError {
    /// A version that did not load: refused for what it is, or the compile queue was full.
    pub(super) fn from_load(error: anyhow::Error) -> Self {
        match error.downcast::<QueueFull>() {
            Ok(full) => DeployError::Busy(full),
            Err(error) => DeployError::Refused(error),
        }
    }
}

/// What the runtime is started with besides its engine, capabilities and policies.
pub struct Settings {
    pub data_dir: PathBuf,
    /// The compile cache, and its bound in bytes (see [`Runtime::collect_cache`]).
    pub cache_dir: PathBuf,
    pub cache_max_bytes: u64,
    /// Most deploys compiling or waiting to compile at once (see `compiler`).
    pub compile_queue: usize,
    /// Most instances of all components at once.
    pub max_instances: u32,
    /// The largest memory a policy may give an instance, for checking installed policies.
    pub max_memory_mib: u32,
    /// The components the operator approved for trusted capabilities.
    pub trusted_components: Vec<String>,
}

pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) capabilities: Capabilities,
    pub(super) compiler: Compiler,
    cache_max_bytes: u64,
    pub(super) store_dir: PathBuf,
    /// Every component by name; replaced whole when one is installed or uninstalled.
    pub(super) slots: ArcSwap<BTreeMap<String, Arc<Slot>>>,
    /// Which component serves which path: shared with the gateway, replaced with `slots`.
    pub(super) routes: Arc<Routes>,
    pub(super) installs: super::install::Installs,
    pub(crate) pool: Arc<Semaphore>,
    /// Instances done with whose drop (and place in `pool`) is still to come.
    pub(crate) retiring: Arc<AtomicUsize>,
    /// Which plugins each organization enabled, as `org` last said.
    pub(crate) enablements: super::plugins::Enablements,
}

impl Runtime {
    /// Loads every policy's component (or its deployed version), running migrations. A
    /// component whose version cannot be loaded or migrated is logged and left without a
    /// current version; only what no single component causes (its database cannot be opened,
    /// its linker cannot be built) stops start-up.
    pub async fn start(
        engine: Engine,
        capabilities: Capabilities,
        policies: Vec<Policy>,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        let store_dir = settings.data_dir.join("components");
        let compiler = Compiler::new(settings.cache_dir, settings.compile_queue);
        let mut slots = BTreeMap::new();
        for policy in policies {
            let name = policy.name.clone();
            let mut sandbox = sandbox(&engine, &capabilities, policy)
                .await
                .with_context(|| format!("loading component `{name}`"))?;
            let dir = store_dir.join(&name);
            register_metrics(&mut sandbox);
            let slot = match load_versions(&engine, &compiler, &sandbox, &dir).await {
                Ok((current, previous, pin)) => {
                    Slot::new(sandbox, Some(current), previous, None, pin)
                }
                Err(error) => {
                    tracing::error!(component = %name, error = %format!("{error:#}"), "the component failed to load: it is left out until a fixed version is deployed");
                    let pin = Pin {
                        pinned: false,
                        policy_digest: read_policy_wasm(&sandbox.policy)
                            .ok()
                            .map(|bytes| loader::digest(&bytes)),
                    };
                    // The version that ran before stays the one to roll back to.
                    let previous = previous_after_failure(&engine, &compiler, &sandbox, &dir).await;
                    Slot::new(
                        sandbox,
                        None,
                        previous,
                        Some(bounded(&format!("{error:#}"))),
                        pin,
                    )
                }
            };
            slots.insert(name, Arc::new(slot));
        }
        let policies: Vec<Arc<Policy>> = slots
            .values()
            .map(|slot| slot.sandbox.policy.clone())
            .collect();
        let routes = RouteTable::new(&policies);
        let runtime = Self {
            engine,
            capabilities,
            compiler,
            cache_max_bytes: settings.cache_max_bytes,
            installs: super::install::Installs::new(
                settings.data_dir.join(super::install::DIR),
                settings.max_memory_mib,
                settings.trusted_components,
            ),
            store_dir,
            slots: ArcSwap::from_pointee(slots),
            routes: Arc::new(ArcSwap::from_pointee(routes)),
            pool: Arc::new(Semaphore::new(settings.max_instances as usize)),
            retiring: Arc::default(),
            enablements: Default::default(),
        };
        runtime.collect_cache();
        runtime.note_left_out();
        Ok(runtime)
    }

    /// The component named `name`.
    pub fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots.load().get(name).cloned()
    }

    /// Which component serves which path, as the gateway reads it: it changes when a
    /// component is installed or uninstalled.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.clone()
    }

    /// Frees, every so often, the kept instances idle for `idle` or longer, for as long as the
    /// runtime exists.
    pub fn expire_kept(self: &Arc<Self>, idle: Duration) {
        let runtime = Arc::downgrade(self);
        let every = (idle / 4).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                let Some(runtime) = runtime.upgrade() else {
                    return;
                };
                for slot in runtime.slots.load().values() {
                    slot.kept.expire(idle);
                }
            }
        });
    }

    /// Drops one kept instance, of whichever component keeps some, to free its place in the
    /// instance pool; false when no component keeps any.
    pub(crate) fn evict_kept(&self) -> bool {
        self.slots.load().values().any(|slot| slot.kept.evict())
    }

    /// Which policy serves which path, for the gateway.
    pub fn policies(&self) -> Vec<Arc<Policy>> {
        self.slots
            .load()
            .values()
            .map(|slot| slot.sandbox.policy.clone())
            .collect()
    }

    pub fn components(&self) -> Vec<ComponentInfo> {
        self.slots.load().values().map(|slot| info(slot)).collect()
    }

    /// The components that failed to load and serve nothing, with why (bounded): those of
    /// the policies directory, and those installed through the admin API that start-up left
    /// out.
    pub fn failed(&self) -> Vec<(String, Arc<String>)> {
        let mut failed: Vec<(String, Arc<String>)> = self
            .slots
            .load()
            .iter()
            .filter_map(|(name, slot)| Some((name.clone(), slot.failure()?)))
            .collect();
        failed.extend(
            self.left_out()
                .into_iter()
                .map(|(name, why)| (name, Arc::new(bounded(&why)))),
        );
        failed
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.capabilities.database
    }

    /// Deploys `bytes` as the new version of `name` and pins it: a restart loads it again.
    /// Any failure leaves the running version as it was.
    /// `signature`: the publisher's signature line (see `signatures`), if the version is signed.
    pub async fn deploy(
        &self,
        name: &str,
        bytes: Vec<u8>,
        signature: Option<&str>,
    ) -> Result<ComponentInfo, DeployError> {
        let slot = self.known(name)?;
        let _deploying = slot.deploying.lock().await;
        let swapped = self.swap_in(&slot, bytes, signature, true).await;
        // A refused version's artefact is garbage now; a replaced one may be soon.
        self.collect_cache();
        swapped?;
        let info = info(&slot);
        tracing::info!(
            component = name,
            version = info.version.as_deref().unwrap_or_default(),
            digest = info.digest.as_deref().unwrap_or_default(),
            "deployed"
        );
        Ok(info)
    }

    /// Deploys the policy's `wasm` file again, through the same checks and migrations as a
    /// deploy, and clears the pin: from now on a restart loads the policy's file (whatever it
    /// then holds), until an admin deploy or rollback pins a version again.
    pub async fn reset(&self, name: &str) -> Result<ComponentInfo, DeployError> {
        let slot = self.known(name)?;
        let _deploying = slot.deploying.lock().await;
        let bytes = read_policy_wasm(&slot.sandbox.policy).map_err(DeployError::Refused)?;
        let signature = read_signature(&policy_signature_path(&slot.sandbox.policy));
        self.swap_in(&slot, bytes, signature.as_deref(), false)
            .await?;
        let info = info(&slot);
        tracing::info!(
            component = name,
            version = info.version.as_deref().unwrap_or_default(),
            digest = info.digest.as_deref().unwrap_or_default(),
            "reset to the policy's wasm file; it is followed again at start-up"
        );
        Ok(info)
    }

    /// Swaps the current and previous versions, and pins the one now running.
    pub async fn rollback(&self, name: &str) -> Result<ComponentInfo, DeployError> {
        let slot = self.known(name)?;
        let _deploying = slot.deploying.lock().await;
        let previous = slot
            .previous
            .load_full()
            .ok_or_else(|| DeployError::NoPrevious(name.into()))?;
        let current = slot.current.load_full();
        let dir = self.store_dir.join(name);
        write_state(
            &dir,
            &DeployState {
                current: previous.digest.clone(),
                previous: current.as_ref().map(|c| c.digest.clone()),
                pinned: true,
            },
        )?;
        slot.current.store(Some(previous));
        slot.previous.store(current);
        slot.kept.clear();
        slot.failure.store(None);
        slot.pin.rcu(|pin| Pin {
            pinned: true,
            policy_digest: pin.policy_digest.clone(),
        });
        let info = info(&slot);
        tracing::info!(
            component = name,
            version = info.version.as_deref().unwrap_or_default(),
            digest = info.digest.as_deref().unwrap_or_default(),
            "rolled back"
        );
        Ok(info)
    }

    /// Goes back to the kept version `digest` (any version that ever served, see
    /// [`Runtime::versions`]) and pins it; its signature, if any, is checked again.
    pub async fn rollback_to(
        &self,
        name: &str,
        digest: &str,
    ) -> Result<ComponentInfo, DeployError> {
        let slot = self.known(name)?;
        let _deploying = slot.deploying.lock().await;
        let dir = self.store_dir.join(name);
        let digest = &kept_digest(&dir, digest).map_err(|found| match found {
            0 => DeployError::UnknownVersion(name.into(), digest.into()),
            _ => DeployError::Refused(anyhow::anyhow!(
                "{digest} is the start of {found} kept versions' digests; give more of it"
            )),
        })?;
        let bytes = read_version(&dir, digest).map_err(DeployError::Refused)?;
        let signature = read_signature(&signature_path(&dir, digest));
        let swapped = self.swap_in(&slot, bytes, signature.as_deref(), true).await;
        self.collect_cache();
        swapped?;
        let info = info(&slot);
        tracing::info!(component = name, %digest, "rolled back to a named version");
        Ok(info)
    }

    /// Every version of `name` that ever served, kept by digest, newest first.
    pub fn versions(&self, name: &str) -> Result<Vec<KeptVersion>, DeployError> {
        let slot = self.known(name)?;
        let dir = self.store_dir.join(name);
        let current = slot.current.load().as_ref().map(|c| c.digest.clone());
        let previous = slot.previous.load().as_ref().map(|p| p.digest.clone());
        let mut versions: Vec<KeptVersion> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|entry| entry.ok())
                .filter_map(|entry| {
                    let name = entry.file_name().to_str()?.to_string();
                    let digest = name.strip_suffix(".wasm")?.to_string();
                    let metadata = entry.metadata().ok()?;
                    Some(KeptVersion {
                        current: current.as_deref() == Some(digest.as_str()),
                        previous: previous.as_deref() == Some(digest.as_str()),
                        signed: signature_path(&dir, &digest).is_file(),
                        size: metadata.len(),
                        kept_at: metadata.modified().ok().map(OffsetDateTime::from),
                        digest,
                    })
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        versions.sort_by(|a, b| b.kept_at.cmp(&a.kept_at).then(a.digest.cmp(&b.digest)));
        Ok(versions)
    }

    /// Keeps the compile cache within its bound: the oldest artefacts go first, never one of
    /// a version that is current or previous somewhere; leftovers of interrupted writes too.
    pub(crate) fn collect_cache(&self) {
        let in_use: BTreeSet<String> = self
            .slots
            .load()
            .values()
            .flat_map(|slot| {
                [
                    slot.current.load().as_ref().map(|c| c.digest.clone()),
                    slot.previous.load().as_ref().map(|p| p.digest.clone()),
                ]
            })
            .flatten()
            .collect();
        let (dir, most) = (
            self.compiler.cache_dir().to_path_buf(),
            self.cache_max_bytes,
        );
        tokio::task::spawn_blocking(move || {
            let removed = loader::collect_cache(&dir, &in_use, most);
            if removed > 0 {
                tracing::info!(removed, "compile cache collected");
            }
        });
    }

    fn known(&self, name: &str) -> Result<Arc<Slot>, DeployError> {
        self.slot(name)
            .ok_or_else(|| DeployError::UnknownComponent(name.into()))
    }

    /// The deploy path, under the slot's `deploying` lock: compile, check, keep, migrate,
    /// record, swap. `pinned`: whether a restart loads this version rather than the policy's
    /// file.
    async fn swap_in(
        &self,
        slot: &Slot,
        bytes: Vec<u8>,
        signature: Option<&str>,
        pinned: bool,
    ) -> Result<(), DeployError> {
        let bytes = Arc::new(bytes);
        let loaded = loader::load(
            &self.engine,
            &self.compiler,
            &slot.sandbox,
            bytes.clone(),
            signature,
        )
        .await
        .map_err(DeployError::from_load)?;
        // Everything that can refuse the version has run (compiling, checking the imports,
        // linking, instantiating and reading the manifest), and its bytes are kept, before the
        // migrations touch the database; they commit all together or not at all.
        let dir = self.store_dir.join(&*slot.sandbox.name);
        keep_version(&dir, &loaded.digest, &bytes)?;
        keep_signature(&dir, &loaded.digest, signature)?;
        migrate(&slot.sandbox, &loaded)
            .await
            .map_err(DeployError::Refused)?;
        // The running version deployed again changes only the pin: the previous one stays; a
        // component that failed to load has no current version, and keeps its previous one.
        let previous = match slot.current.load_full() {
            Some(current) if current.digest != loaded.digest => Some(current),
            _ => slot.previous.load_full(),
        };
        write_state(
            &dir,
            &DeployState {
                current: loaded.digest.clone(),
                previous: previous.as_ref().map(|p| p.digest.clone()),
                pinned,
            },
        )?;
        let policy_digest = match pinned {
            true => slot.pin.load().policy_digest.clone(),
            false => Some(loaded.digest.clone()),
        };
        slot.previous.store(previous);
        slot.current.store(Some(Arc::new(loaded)));
        slot.kept.clear();
        slot.failure.store(None);
        slot.pin.store(Arc::new(Pin {
            pinned,
            policy_digest,
        }));
        Ok(())
    }
}

/// What a component keeps across versions; no version is loaded yet.
async fn sandbox(
    engine: &Engine,
    capabilities: &Capabilities,
    policy: Policy,
) -> anyhow::Result<Sandbox> {
    let mut sandbox = sandbox_without_db(engine, capabilities, policy)?;
    open_db(&mut sandbox, capabilities).await?;
    watch_outbox(&sandbox, capabilities);
    Ok(sandbox)
}

/// Has the relay watch the component's outbox when it publishes events.
pub(super) fn watch_outbox(sandbox: &Sandbox, capabilities: &Capabilities) {
    if let Some(db) = &sandbox.db
        && !sandbox.topics.is_empty()
    {
        capabilities.events.watch(&sandbox.name, db.clone());
    }
}

/// Opens the component's database when its policy grants one (creating it the first time).
pub(super) async fn open_db(
    sandbox: &mut Sandbox,
    capabilities: &Capabilities,
) -> anyhow::Result<()> {
    let policy = &sandbox.policy;
    if !policy.grants(Capability::Database) {
        return Ok(());
    }
    let db = capabilities
        .database
        .open(
            &policy.name,
            policy.limits.max_instances,
            &policy.append_only,
        )
        .await?;
    sandbox.db = Some(db);
    Ok(())
}

/// The sandbox before its database is opened: enough to compile, check and link a version
/// and read its manifest, which touch no database.
pub(super) fn sandbox_without_db(
    engine: &Engine,
    capabilities: &Capabilities,
    policy: Policy,
) -> anyhow::Result<Sandbox> {
    let topics = match policy.grants(Capability::Events) {
        true => policy.events.clone(),
        false => BTreeSet::new(),
    };
    Ok(Sandbox {
        name: policy.name.as_str().into(),
        metrics: super::invoke::CallMetrics::unregistered(),
        linker: linker_for(engine, &policy)?,
        db: None,
        dialect: capabilities.database.dialect(),
        config: Arc::new(policy.config.clone()),
        cache: CacheCtx::new(
            policy
                .grants(Capability::Cache)
                .then(|| capabilities.cache.clone()),
            Space {
                component: policy.name.as_str().into(),
                max_entries: policy.limits.cache_max_entries,
                max_bytes: policy.limits.cache_max_bytes,
            },
        ),
        // Ungranted, the interface is not linked, so the shared keys are unreachable.
        tokens: TokensCtx::new(capabilities.tokens.clone()),
        services: Arc::new(match policy.grants(Capability::Services) {
            true => policy.services.clone(),
            false => BTreeSet::new(),
        }),
        topics: Arc::new(topics),
        http_hosts: Arc::new(match policy.grants(Capability::Http) {
            true => policy.http_hosts.clone(),
            false => BTreeSet::new(),
        }),
        signatures: capabilities.signatures.clone(),
        crypto: match policy.grants(Capability::Crypto) {
            true => capabilities.crypto.for_component(&policy.name),
            false => capabilities.crypto.ungranted(),
        },
        policy: Arc::new(policy),
    })
}

/// The component's current version (the deployed one, else the policy's `wasm`), migrated,
/// and its previous one when a deploy left one. A previous version that no longer loads is
/// dropped with a warning: it only mattered for a rollback.
async fn load_versions(
    engine: &Engine,
    compiler: &Compiler,
    sandbox: &Sandbox,
    dir: &Path,
) -> anyhow::Result<(Loaded, Option<Loaded>, Pin)> {
    let policy = &sandbox.policy;
    let state = read_state(dir)?;
    let from_policy = read_policy_wasm(policy);
    let (current_bytes, current_signature, pin) = match state.as_ref().filter(|state| state.pinned)
    {
        Some(state) => {
            let policy_digest = match &from_policy {
                Ok(bytes) => Some(loader::digest(bytes)),
                Err(error) => {
                    tracing::warn!(component = %policy.name, error = %format!("{error:#}"), "cannot read the policy's wasm file");
                    None
                }
            };
            if policy_digest.as_deref() != Some(state.current.as_str()) {
                warn_pinned(policy, &state.current, policy_digest.as_deref());
            }
            let pin = Pin {
                pinned: true,
                policy_digest,
            };
            let signature = read_signature(&signature_path(dir, &state.current));
            (read_version(dir, &state.current)?, signature, pin)
        }
        None => {
            let bytes = from_policy?;
            let pin = Pin {
                pinned: false,
                policy_digest: Some(loader::digest(&bytes)),
            };
            (bytes, read_signature(&policy_signature_path(policy)), pin)
        }
    };
    let current = loader::load(
        engine,
        compiler,
        sandbox,
        Arc::new(current_bytes.clone()),
        current_signature.as_deref(),
    )
    .await?;
    migrate(sandbox, &current).await?;
    // Every version that ever served is kept by digest, so a later deploy can roll back to
    // it even after a restart.
    keep_version(dir, &current.digest, &current_bytes)?;
    keep_signature(dir, &current.digest, current_signature.as_deref())?;
    let previous = previous_of(state.as_ref(), Some(&current.digest));
    // What runs now is recorded, so that the next start (or a rollback) knows what ran before.
    let recorded = state
        .as_ref()
        .is_some_and(|state| state.current == current.digest && state.previous == previous);
    if !recorded {
        let state = DeployState {
            current: current.digest.clone(),
            previous: previous.clone(),
            pinned: pin.pinned,
        };
        write_state(dir, &state)?;
    }
    let previous = match previous {
        Some(digest) => load_kept(engine, compiler, sandbox, dir, &digest).await,
        None => None,
    };
    Ok((current, previous, pin))
}

/// The digest of the one version kept in `dir` whose digest is `digest` or starts with it (at
/// least [`SHORT_DIGEST`] lowercase hex digits, as `git` takes a short commit id); else how
/// many there are (0 or several).
fn kept_digest(dir: &Path, digest: &str) -> Result<String, usize> {
    let hex = digest
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if !hex || !(SHORT_DIGEST..=64).contains(&digest.len()) {
        return Err(0);
    }
    let entries = std::fs::read_dir(dir).map_err(|_| 0usize)?;
    let found: Vec<String> = entries
        .filter_map(|entry| {
            let file = entry.ok()?.file_name().into_string().ok()?;
            let kept = file.strip_suffix(".wasm")?;
            (kept.len() == 64 && kept.starts_with(digest)).then(|| kept.to_string())
        })
        .collect();
    match <[String; 1]>::try_from(found) {
        Ok([one]) => Ok(one),
        Err(found) => Err(found.len()),
    }
}

/// The fewest hex digits of a digest a rollback takes.
const SHORT_DIGEST: usize = 8;

/// The version that ran before `current` (`None`: a version that cannot be read), by the
/// recorded state: its current one when `current` replaced it (a new `wasm` file shipped in an
/// upgrade, or one that failed to load), else its previous one.
fn previous_of(state: Option<&DeployState>, current: Option<&str>) -> Option<String> {
    let state = state?;
    match current {
        Some(current) if state.current == current => state.previous.clone(),
        _ => Some(state.current.clone()),
    }
}

/// The version to roll back to for a component whose current version failed to load at
/// start-up: the one that ran before, kept by digest.
async fn previous_after_failure(
    engine: &Engine,
    compiler: &Compiler,
    sandbox: &Sandbox,
    dir: &Path,
) -> Option<Loaded> {
    let state = read_state(dir).ok()??;
    let failed = match state.pinned {
        true => Some(state.current.clone()),
        false => read_policy_wasm(&sandbox.policy)
            .ok()
            .map(|bytes| loader::digest(&bytes)),
    };
    let digest = previous_of(Some(&state), failed.as_deref())?;
    load_kept(engine, compiler, sandbox, dir, &digest).await
}

/// A kept version, for a rollback; one that no longer loads is dropped with a warning.
async fn load_kept(
    engine: &Engine,
    compiler: &Compiler,
    sandbox: &Sandbox,
    dir: &Path,
    digest: &str,
) -> Option<Loaded> {
    let loaded = async {
        let bytes = read_version(dir, digest)?;
        let signature = read_signature(&signature_path(dir, digest));
        loader::load(
            engine,
            compiler,
            sandbox,
            Arc::new(bytes),
            signature.as_deref(),
        )
        .await
    };
    match loaded.await {
        Ok(previous) => Some(previous),
        Err(error) => {
            tracing::warn!(component = %sandbox.name, %digest, error = %format!("{error:#}"), "the previous version does not load: no rollback to it until the next deploy");
            None
        }
    }
}

/// A version kept in the data directory, as `GET /admin/components/{name}/versions` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct KeptVersion {
    pub digest: String,
    /// When it was first kept (deployed, or loaded from the policy's file).
    #[serde(with = "time::serde::rfc3339::option")]
    pub kept_at: Option<OffsetDateTime>,
    pub size: u64,
    pub current: bool,
    pub previous: bool,
    /// A signature is kept with it (checked whenever it loads).
    pub signed: bool,
}

/// Where a kept version's signature is kept: beside it, `<digest>.sig`.
fn signature_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join(format!("{digest}.sig"))
}

/// The signature beside the policy's `wasm` file: `<file>.wasm.sig`.
fn policy_signature_path(policy: &Policy) -> PathBuf {
    let mut path = policy.wasm.clone().into_os_string();
    path.push(".sig");
    PathBuf::from(path)
}

/// The signature line in `path`; none when there is no such file.
fn read_signature(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
}

/// Keeps a version's signature beside it, so that a restart can check it again.
pub(super) fn keep_signature(
    dir: &Path,
    digest: &str,
    signature: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(signature) = signature {
        let path = signature_path(dir, digest);
        std::fs::write(&path, signature)
            .with_context(|| format!("keeping the signature {}", path.display()))?;
    }
    Ok(())
}

/// Most characters of a load failure kept for `/readyz` and the admin API; the log has it all.
const MAX_FAILURE_CHARS: usize = 300;

fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_FAILURE_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

pub(super) fn info(slot: &Slot) -> ComponentInfo {
    let current = slot.current.load();
    let current = current.as_deref();
    let pin = slot.pin.load();
    ComponentInfo {
        name: slot.sandbox.name.to_string(),
        status: match current {
            Some(_) => Status::Serving,
            None => Status::Failed,
        },
        error: match current {
            Some(_) => None,
            None => slot
                .failure
                .load()
                .as_deref()
                .map(|f| format!("failed to load: {f}")),
        },
        version: current.map(|c| c.version.clone()),
        digest: current.map(|c| c.digest.clone()),
        signer: current.and_then(|c| c.signer.clone()),
        denied_imports: current
            .map(|c| c.denied_imports.clone())
            .unwrap_or_default(),
        loaded_at: current.map(|c| c.loaded_at),
        routes: slot.sandbox.policy.routes.clone(),
        previous: slot.previous.load().as_ref().map(|p| PreviousVersion {
            version: p.version.clone(),
            digest: p.digest.clone(),
        }),
        pinned: pin.pinned,
        policy_digest: pin.policy_digest.clone(),
        installed: slot.sandbox.policy.installed,
    }
}

/// A component's call and email metrics at zero, so the first scrape shows them: registered
/// once the component is known to exist (loaded at start-up, or its install passed).
pub(super) fn register_metrics(sandbox: &mut Sandbox) {
    sandbox.metrics = super::invoke::CallMetrics::register(&sandbox.name);
    if sandbox.policy.grants(Capability::Email) {
        crate::capabilities::email::register_metrics(&sandbox.name);
    }
}

/// The policy's `wasm` file.
fn read_policy_wasm(policy: &Policy) -> anyhow::Result<Vec<u8>> {
    std::fs::read(&policy.wasm).with_context(|| {
        format!(
            "reading {} (named by {}); build it with `just components`",
            policy.wasm.display(),
            policy.source.display()
        )
    })
}

/// A pinned version silently winning over a new file shipped in an upgrade is the surprise
/// this warning prevents.
fn warn_pinned(policy: &Policy, pinned: &str, policy_digest: Option<&str>) {
    tracing::warn!(
        component = %policy.name,
        pinned_digest = pinned,
        policy_digest = policy_digest.unwrap_or("unreadable"),
        wasm = %policy.wasm.display(),
        reset = %format!("POST /admin/components/{}/reset", policy.name),
        "a version deployed through the admin API is pinned and runs instead of the policy's wasm file; reset to follow the file again"
    );
}

/// The linker of one component: WASI without files, with sockets that reach nothing and
/// `wasi:http` that reaches only the policy's `http_hosts`, plus exactly the granted
/// capabilities (a trusted one only when the operator approved the component). What a version
/// imports beyond them is linked to refusing stand-ins when it loads (`loader`).
fn linker_for(engine: &Engine, policy: &Policy) -> anyhow::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    bindings::plugin::context::add_to_linker::<State, HasSelf<ContextCtx>>(&mut linker, |s| {
        &mut s.request.context
    })?;
    for capability in policy.capabilities.iter().filter(|c| policy.grants(**c)) {
        match capability {
            Capability::Database => {
                bindings::database::add_to_linker::<State, HasSelf<DatabaseCtx>>(
                    &mut linker,
                    |s| &mut s.request.database,
                )?
            }
            Capability::Cache => {
                bindings::cache::add_to_linker::<State, HasSelf<CacheCtx>>(&mut linker, |s| {
                    &mut s.request.cache
                })?
            }
            Capability::Crypto => {
                bindings::crypto::add_to_linker::<State, HasSelf<CryptoCtx>>(&mut linker, |s| {
                    &mut s.request.crypto
                })?
            }
            Capability::Tokens => {
                bindings::tokens::add_to_linker::<State, HasSelf<TokensCtx>>(&mut linker, |s| {
                    &mut s.request.tokens
                })?
            }
            Capability::Config => {
                bindings::config::add_to_linker::<State, HasSelf<ConfigCtx>>(&mut linker, |s| {
                    &mut s.request.config
                })?
            }
            Capability::Log => {
                bindings::log::add_to_linker::<State, HasSelf<LogCtx>>(&mut linker, |s| {
                    &mut s.request.log
                })?
            }
            Capability::Services => {
                bindings::services::add_to_linker::<State, HasSelf<ServicesCtx>>(
                    &mut linker,
                    |s| &mut s.request.services,
                )?
            }
            Capability::Email => {
                bindings::email::add_to_linker::<State, HasSelf<EmailCtx>>(&mut linker, |s| {
                    &mut s.request.email
                })?
            }
            Capability::Events => {
                bindings::events::add_to_linker::<State, HasSelf<EventsCtx>>(&mut linker, |s| {
                    &mut s.request.events
                })?
            }
            // Linked for every component above; the grant only opens `http_hosts`.
            Capability::Http => {}
        }
    }
    Ok(linker)
}

pub(super) async fn migrate(sandbox: &Sandbox, loaded: &Loaded) -> anyhow::Result<()> {
    let Some(db) = &sandbox.db else { return Ok(()) };
    let applied =
        database::apply_migrations(db.as_ref(), sandbox.dialect, &loaded.migrations).await?;
    if !applied.is_empty() {
        tracing::info!(component = %sandbox.name, ?applied, "applied migrations");
    }
    Ok(())
}
