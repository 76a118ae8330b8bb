//! Components installed and uninstalled while the host runs, through the admin API. An
//! installed component's policy and the version it came with are kept in
//! `<data_dir>/installed/` (`<name>.toml`, `<name>.wasm`, `<name>.wasm.sig`), which start-up
//! reads after the policies directory, so an install survives restarts; its later versions are
//! kept like any component's. Uninstalling takes it out of routing and out of that directory;
//! its database and the versions it ran stay, so installing it again finds its data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use super::deployed::{DeployState, keep_version, write_atomic, write_state};
use super::registry::{
    Pin, Sandbox, Slot, info, keep_signature, migrate, open_db, register_metrics,
    sandbox_without_db, watch_outbox,
};
use super::{ComponentInfo, Deliveries, DeployError, Runtime, loader};
use crate::policy::{self, Capability, Policy, RouteTable};

/// The directory under the data directory that keeps installed components.
pub const DIR: &str = "installed";

pub struct Installs {
    dir: PathBuf,
    max_memory_mib: u32,
    trusted: Vec<String>,
    /// One install or uninstall at a time: each replaces the whole set of components.
    changing: tokio::sync::Mutex<()>,
    /// The topics whose events are being consumed for each component: consumers are started
    /// once per component and topic, and outlive an uninstall (its events wait, see `uninstall`).
    consuming: std::sync::Mutex<BTreeSet<(String, String)>>,
    /// Installed components that start-up left out, with why (see [`Runtime::left_out`]):
    /// found once at start-up; an uninstall or install of one takes it off.
    left_out: std::sync::Mutex<Vec<(String, String)>>,
}

impl Installs {
    pub fn new(dir: PathBuf, max_memory_mib: u32, trusted: Vec<String>) -> Self {
        Self {
            dir,
            max_memory_mib,
            trusted,
            changing: Default::default(),
            consuming: Default::default(),
            left_out: Default::default(),
        }
    }
}

/// A component to install, as the admin API received it.
pub struct Install {
    pub name: String,
    /// The policy file's text, as `truevalue component sign` signed it.
    pub policy: String,
    pub wasm: Vec<u8>,
    /// The publisher's signature line, when the version is signed.
    pub signature: Option<String>,
}

impl Runtime {
    /// Installs a new component with its policy, checked as the policies directory's files
    /// are, and its first version, through the same checks and migrations as a deploy; then
    /// routes to it. Nothing is kept or routed unless all of it passed.
    pub async fn install(self: &Arc<Self>, install: Install) -> Result<ComponentInfo, DeployError> {
        let _changing = self.installs.changing.lock().await;
        let name = install.name;
        if !policy::valid_name(&name) {
            return Err(DeployError::Refused(anyhow::anyhow!(
                "`{name}` is not a component name: [a-z][a-z0-9_]*, at most 32 characters"
            )));
        }
        if self.slot(&name).is_some() {
            return Err(DeployError::Exists(name));
        }
        let source = self.installs.dir.join(format!("{name}.toml"));
        // Problems name the policy as the operator sent it, not the file it will be kept in.
        let sent = std::path::PathBuf::from(format!("the policy of `{name}`"));
        let parsed = policy::parse(&install.policy, &name, &sent).map_err(DeployError::Refused)?;
        let mut policy = policy::check_installed(
            parsed,
            &self.policies(),
            self.installs.max_memory_mib,
            &self.installs.trusted,
        )
        .map_err(|problems| {
            DeployError::Refused(anyhow::anyhow!(
                "invalid policy:\n  - {}",
                problems.join("\n  - ")
            ))
        })?;
        policy.wasm = source.with_extension("wasm");
        policy.source = source.clone();

        // The version is compiled, checked, linked and its manifest read before the database
        // is opened: a refused install leaves nothing behind but its compiled artefact.
        let mut sandbox = sandbox_without_db(&self.engine, &self.capabilities, policy)
            .map_err(DeployError::Refused)?;
        let bytes = Arc::new(install.wasm);
        let signature = install.signature.as_deref();
        let loaded = loader::load(
            &self.engine,
            &self.compiler,
            &sandbox,
            bytes.clone(),
            signature,
        )
        .await
        .map_err(DeployError::from_load)?;
        // A database this install makes is removed again if the install goes no further: a
        // refused install leaves no database behind (one kept from an uninstalled component of
        // the same name stays, with its data).
        let created = sandbox.policy.grants(Capability::Database)
            && !self.capabilities.database.exists(&name).await?;
        let kept: Result<(), DeployError> = async {
            open_db(&mut sandbox, &self.capabilities).await?;
            migrate(&sandbox, &loaded)
                .await
                .map_err(DeployError::Refused)?;

            let versions = self.store_dir.join(&name);
            keep_version(&versions, &loaded.digest, &bytes)?;
            keep_signature(&versions, &loaded.digest, signature)?;
            write_state(
                &versions,
                &DeployState {
                    current: loaded.digest.clone(),
                    previous: None,
                    pinned: false,
                },
            )?;
            // The policy last: start-up installs what has a policy file here, so a crash before
            // this line leaves the component uninstalled, and after it installed whole.
            std::fs::create_dir_all(&self.installs.dir)
                .with_context(|| format!("creating {}", self.installs.dir.display()))?;
            write_atomic(&sandbox.policy.wasm, &bytes)?;
            let signature_file = self.installs.dir.join(format!("{name}.wasm.sig"));
            match signature {
                Some(signature) => write_atomic(&signature_file, signature.as_bytes())?,
                None => remove(&signature_file)?,
            }
            write_atomic(&source, install.policy.as_bytes())?;
            Ok(())
        }
        .await;
        if let Err(error) = kept {
            if created {
                self.discard_database(&mut sandbox).await;
            }
            return Err(error);
        }
        watch_outbox(&sandbox, &self.capabilities);

        register_metrics(&mut sandbox);
        let pin = Pin {
            pinned: false,
            policy_digest: Some(loaded.digest.clone()),
        };
        let slot = Arc::new(Slot::new(sandbox, Some(loaded), None, None, pin));
        self.replace_slots(|slots| {
            slots.insert(name.clone(), slot.clone());
        });
        self.no_longer_left_out(&name);
        self.consume_events(&slot.sandbox.policy)?;
        let info = info(&slot);
        tracing::info!(
            component = %name,
            version = info.version.as_deref().unwrap_or_default(),
            digest = info.digest.as_deref().unwrap_or_default(),
            routes = ?info.routes,
            "installed"
        );
        Ok(info)
    }

    /// Closes and removes the database an install made before it was refused.
    async fn discard_database(&self, sandbox: &mut Sandbox) {
        if let Some(db) = sandbox.db.take() {
            db.close().await;
        }
        if let Err(error) = self.capabilities.database.discard(&sandbox.name).await {
            tracing::warn!(component = %sandbox.name, error = %format!("{error:#}"), "could not remove the database of a refused install");
        }
    }

    /// Uninstalls a component installed through the admin API: its routes answer 404 from now
    /// on (requests already running finish), and a restart does not bring it back. Its
    /// database and kept versions stay; events to it wait for it to be installed again.
    pub async fn uninstall(&self, name: &str) -> Result<(), DeployError> {
        let _changing = self.installs.changing.lock().await;
        let Some(slot) = self.slot(name) else {
            // One that start-up left out has nothing running: only its files go.
            let source = self.installs.dir.join(format!("{name}.toml"));
            if !policy::valid_name(name) || !source.is_file() {
                return Err(DeployError::UnknownComponent(name.into()));
            }
            remove(&source)?;
            remove(&source.with_extension("wasm"))?;
            remove(&self.installs.dir.join(format!("{name}.wasm.sig")))?;
            self.no_longer_left_out(name);
            tracing::info!(component = %name, "uninstalled (it was left out at start-up); its database and kept versions stay");
            return Ok(());
        };
        let policy = &slot.sandbox.policy;
        if !policy.installed {
            return Err(DeployError::NotInstalled(
                name.into(),
                policy.source.display().to_string(),
            ));
        }
        // A deploy of it finishes first.
        let _deploying = slot.deploying.lock().await;
        // The policy first: from here a crash leaves it uninstalled.
        remove(&policy.source)?;
        remove(&policy.wasm)?;
        remove(&self.installs.dir.join(format!("{name}.wasm.sig")))?;
        self.replace_slots(|slots| {
            slots.remove(name);
        });
        slot.kept.clear();
        self.collect_cache();
        tracing::info!(component = %name, "uninstalled; its database and kept versions stay");
        Ok(())
    }

    /// Components installed through the admin API that start-up left out, with why: their kept
    /// policy no longer passes the checks (a policy file now claims their name or a route, or
    /// the host's configuration changed). They serve nothing until uninstalled or installed
    /// again.
    pub(crate) fn left_out(&self) -> Vec<(String, String)> {
        self.installs
            .left_out
            .lock()
            .map(|left_out| left_out.clone())
            .unwrap_or_default()
    }

    /// Finds the installed components that start-up left out; once, at the end of start-up.
    pub(super) fn note_left_out(&self) {
        let found = self.find_left_out();
        if let Ok(mut left_out) = self.installs.left_out.lock() {
            *left_out = found;
        }
    }

    /// Takes `name` off the components left out at start-up: it was uninstalled or installed.
    fn no_longer_left_out(&self, name: &str) {
        if let Ok(mut left_out) = self.installs.left_out.lock() {
            left_out.retain(|(left, _)| left != name);
        }
    }

    fn find_left_out(&self) -> Vec<(String, String)> {
        let Ok(paths) = policy::toml_files(&self.installs.dir) else {
            return Vec::new();
        };
        let others = self.policies();
        paths
            .into_iter()
            .filter_map(|path| {
                let name = path.file_stem()?.to_str()?.to_string();
                if self.slot(&name).is_some() {
                    return None;
                }
                let problems = match policy::load_file(&path) {
                    Err(error) => format!("{error:#}"),
                    Ok(kept) => match policy::check_installed(
                        kept,
                        &others,
                        self.installs.max_memory_mib,
                        &self.installs.trusted,
                    ) {
                        Err(problems) => problems.join("; "),
                        Ok(_) => "it passes the checks now: a restart loads it".into(),
                    },
                };
                let why = format!(
                    "installed, but left out at start-up: {problems}; uninstall it, or install it again"
                );
                Some((name, why))
            })
            .collect()
    }

    /// Starts consuming the topics `policy` subscribes to, for those not consumed yet.
    pub fn consume_events(self: &Arc<Self>, policy: &Policy) -> anyhow::Result<()> {
        let new: BTreeSet<String> = {
            let Ok(mut consuming) = self.installs.consuming.lock() else {
                anyhow::bail!("the consumers' register is poisoned");
            };
            policy
                .subscriptions
                .keys()
                .filter(|topic| consuming.insert((policy.name.clone(), (*topic).clone())))
                .cloned()
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        self.capabilities.events.bus().consume(
            policy.name.clone(),
            new,
            Arc::new(Deliveries(Arc::downgrade(self))),
        )
    }

    /// Changes the set of components, and the route table with it.
    fn replace_slots(&self, change: impl Fn(&mut BTreeMap<String, Arc<Slot>>)) {
        self.slots.rcu(|slots| {
            let mut slots = BTreeMap::clone(slots);
            change(&mut slots);
            slots
        });
        self.routes
            .store(Arc::new(RouteTable::new(&self.policies())));
    }
}

/// Removes a file that may not exist.
fn remove(path: &std::path::Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}
