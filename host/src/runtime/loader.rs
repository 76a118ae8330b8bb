//! Turns `.wasm` bytes into a linked, checked component version: compile (or load the cached
//! artefact by digest), link what it imports but its policy does not grant to stand-ins that
//! refuse every call, pre-link, and read its manifest.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, ResourceType};

use super::compiler::Compiler;
use super::registry::Sandbox;
use crate::bindings::plugin::PluginPre;
use crate::bindings::{Service, ServicePre};
use crate::capabilities::database::Migration;
use crate::policy::{Capability, Policy};

/// One version of a component, ready to instantiate.
pub struct Loaded {
    pub version: String,
    pub digest: String,
    /// The trusted publisher who signed it; none when unsigned.
    pub signer: Option<String>,
    /// Interfaces it imports that its policy does not grant: linked to stand-ins whose every
    /// call fails the request, naming the interface.
    pub denied_imports: Vec<String>,
    pub loaded_at: OffsetDateTime,
    pub(crate) pre: Pre,
    pub(crate) migrations: Vec<Migration>,
}

/// A linked version, by the world it was built for.
pub(crate) enum Pre {
    /// `service`: the caller comes in the request.
    Service(ServicePre<super::State>),
    /// `plugin`: the caller is behind the `context` getters.
    Plugin(PluginPre<super::State>),
}

/// An instance of a version, by its world.
pub(crate) enum Instance {
    Service(Service),
    Plugin(crate::bindings::plugin::Plugin),
}

impl Pre {
    pub(crate) async fn instantiate(
        &self,
        store: &mut wasmtime::Store<super::State>,
    ) -> wasmtime::Result<Instance> {
        Ok(match self {
            Pre::Service(pre) => Instance::Service(pre.instantiate_async(store).await?),
            Pre::Plugin(pre) => Instance::Plugin(pre.instantiate_async(store).await?),
        })
    }
}

/// Reads a manifest export: the two worlds' manifests have the same shape but their own types.
macro_rules! read_manifest {
    ($manifest:expr, $store:expr, $dialect:expr) => {{
        let manifest = $manifest;
        let version = manifest
            .call_version(&mut *$store)
            .await
            .map_err(failed("calling manifest.version"))?;
        let migrations = manifest
            .call_migrations(&mut *$store, $dialect)
            .await
            .map_err(failed("calling manifest.migrations"))?;
        let migrations = migrations.into_iter().map(|m| Migration {
            id: m.id,
            name: m.name,
            sql: m.sql,
        });
        (version, migrations.collect())
    }};
}

impl Instance {
    /// The manifest's version and migrations.
    async fn manifest(
        &self,
        store: &mut wasmtime::Store<super::State>,
        dialect: crate::bindings::database::Dialect,
    ) -> anyhow::Result<(String, Vec<Migration>)> {
        Ok(match self {
            Instance::Service(instance) => {
                read_manifest!(instance.truevalue_platform_manifest(), store, dialect)
            }
            Instance::Plugin(instance) => {
                read_manifest!(instance.truevalue_platform_manifest(), store, dialect)
            }
        })
    }
}

/// The sha256 of the bytes, in hex: a version's identity.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where the compiled artefact of version `digest` is cached for this engine.
pub fn artefact_path(engine: &Engine, cache_dir: &Path, digest: &str) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    cache_dir.join(format!("{digest}-{:016x}.cwasm", hasher.finish()))
}

/// The artefact cached at `path`, when there is a usable one: loading it takes milliseconds.
pub fn cached(engine: &Engine, path: &Path) -> Option<Component> {
    if !path.is_file() {
        return None;
    }
    // SAFETY: the cache holds only artefacts this host serialized for an engine with the same
    // compatibility hash; a file that fails to load is compiled again.
    match unsafe { Component::deserialize_file(engine, path) } {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(path = %path.display(), "recompiling, cached artefact unusable: {e:#}");
            None
        }
    }
}

/// Compiles `bytes` and caches the artefact at `path` (see [`artefact_path`]).
pub fn compile(engine: &Engine, path: &Path, bytes: &[u8]) -> anyhow::Result<Component> {
    if is_core_module(bytes) {
        bail!("this is a core WebAssembly module, not a component: build it for wasm32-wasip2");
    }
    let component = Component::new(engine, bytes)
        .map_err(|e| anyhow::anyhow!("not a valid component: {e:#}"))?;
    if let Ok(serialized) = component.serialize() {
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let temp = path.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&temp, serialized)?;
                std::fs::rename(&temp, path)
            });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "could not cache the compiled component: {e}");
        }
    }
    Ok(component)
}

/// Deletes the oldest artefacts of `cache_dir` until it holds at most `max_bytes`, keeping
/// those of the digests `in_use`; and leftovers of interrupted writes. Returns how many went.
pub fn collect_cache(
    cache_dir: &Path,
    in_use: &std::collections::BTreeSet<String>,
    max_bytes: u64,
) -> usize {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return 0;
    };
    let mut removed = 0;
    let mut artefacts = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let (Some(name), Ok(metadata)) = (
            entry.file_name().to_str().map(str::to_string),
            entry.metadata(),
        ) else {
            continue;
        };
        let modified = metadata.modified().unwrap_or(std::time::UNIX_EPOCH);
        let stale = modified
            .elapsed()
            .is_ok_and(|age| age > std::time::Duration::from_secs(3600));
        if name.contains(".tmp") && stale {
            removed += usize::from(std::fs::remove_file(entry.path()).is_ok());
        } else if let Some(stem) = name.strip_suffix(".cwasm") {
            let digest = stem.split('-').next().unwrap_or_default().to_string();
            artefacts.push((modified, metadata.len(), digest, entry.path()));
        }
    }
    let mut total: u64 = artefacts.iter().map(|(_, size, _, _)| size).sum();
    artefacts.sort_by_key(|(modified, ..)| *modified);
    for (_, size, digest, path) in artefacts {
        if total <= max_bytes {
            break;
        }
        if !in_use.contains(&digest) && std::fs::remove_file(&path).is_ok() {
            total -= size;
            removed += 1;
        }
    }
    removed
}

/// A core module starts with version 1 in its preamble; a component with layer 1.
fn is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

/// WASI interfaces every component may import: stdio (into the host's log), clocks,
/// randomness, a filesystem with nothing in it, sockets that reach no address, and outgoing
/// HTTP that reaches only the policy's `http_hosts`.
const WASI_ALLOWED: [&str; 7] = [
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "wasi:http/",
];

/// How the host treats one import of a component under its policy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportStatus {
    /// A `truevalue:platform` interface the policy grants: linked to the capability.
    Granted,
    /// A `truevalue:platform` interface the policy does not grant: linked to a stand-in that
    /// refuses every call.
    Denied,
    /// A WASI interface every component gets (see [`WASI_ALLOWED`]).
    Wasi,
    /// Imported only for its types: nothing to call, nothing to grant.
    TypesOnly,
    /// Something this host does not offer: the component cannot load.
    Refused,
}

/// One import and how it is treated, with what to change where that applies.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Import {
    pub name: String,
    pub status: ImportStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// Classifies every import of `component` under `policy` (of the component `name`).
pub fn classify_imports(
    engine: &Engine,
    component: &Component,
    policy: &crate::policy::Policy,
    name: &str,
) -> Vec<Import> {
    let import = |import: &str, status, why: Option<String>| Import {
        name: import.to_string(),
        status,
        why,
    };
    let mut imports = Vec::new();
    for (import_name, item) in component.component_type().imports(engine) {
        if !callable(engine, &item.ty) {
            // An interface imported only for its types (say, `database.dialect` used by the
            // manifest) gives the component nothing to call, so it needs no grant.
            imports.push(import(import_name, ImportStatus::TypesOnly, None));
            continue;
        }
        let entry = if let Some(rest) = import_name.strip_prefix("truevalue:platform/") {
            let interface = rest.split('@').next().unwrap_or(rest);
            match Capability::from_interface(interface) {
                // The caller's context: what the request carries anyway, for every component.
                None if interface == "context" => import(import_name, ImportStatus::Granted, None),
                Some(capability) if policy.grants(capability) => {
                    import(import_name, ImportStatus::Granted, None)
                }
                Some(capability) if capability.is_trusted() => import(
                    import_name,
                    ImportStatus::Denied,
                    Some(format!(
                        "a trusted capability only operator-approved components may hold: \
                     it needs \"{interface}\" in `capabilities` in {} and \"{name}\" in `trusted_components` in the host config",
                        policy_file(policy),
                    )),
                ),
                Some(_) => import(
                    import_name,
                    ImportStatus::Denied,
                    Some(format!(
                        "its policy does not grant it: add \"{interface}\" to `capabilities` in {}",
                        policy_file(policy)
                    )),
                ),
                None => import(
                    import_name,
                    ImportStatus::Refused,
                    Some("this host does not offer it".into()),
                ),
            }
        } else if WASI_ALLOWED
            .iter()
            .any(|prefix| import_name.starts_with(prefix))
        {
            import(import_name, ImportStatus::Wasi, None)
        } else {
            import(
                import_name,
                ImportStatus::Refused,
                Some("components may not use it".into()),
            )
        };
        imports.push(entry);
    }
    imports
}

/// Checks every import against what the host offers, and returns the `truevalue:platform`
/// interfaces the policy does not grant (each with why); fails naming every import the host
/// does not offer at all.
pub fn check_imports(
    engine: &Engine,
    component: &Component,
    slot: &Sandbox,
) -> anyhow::Result<Vec<(String, String)>> {
    let imports = classify_imports(engine, component, &slot.policy, &slot.name);
    let problems: Vec<String> = imports
        .iter()
        .filter(|i| i.status == ImportStatus::Refused)
        .map(|i| {
            format!(
                "it imports `{}`, which {}",
                i.name,
                i.why.as_deref().unwrap_or("")
            )
        })
        .collect();
    if !problems.is_empty() {
        bail!(
            "component `{}` is refused: {}",
            slot.name,
            problems.join("; ")
        )
    }
    Ok(imports
        .into_iter()
        .filter(|i| i.status == ImportStatus::Denied)
        .map(|i| (i.name, i.why.unwrap_or_default()))
        .collect())
}

/// What the component lacks of the exports the host calls: `manifest`, and the entry point of
/// either world (`handler` for `service`, `endpoint` for `plugin`).
pub fn missing_exports(engine: &Engine, component: &Component) -> Vec<&'static str> {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let exported = |wanted: &str| {
        exports
            .iter()
            .any(|name| name.starts_with(&format!("truevalue:platform/{wanted}@")))
    };
    let mut missing = Vec::new();
    if !exported("handler") && !exported("endpoint") {
        missing.push("handler (service world) or endpoint (plugin world)");
    }
    if !exported("manifest") {
        missing.push("manifest");
    }
    missing
}

/// Where an operator changes `policy`'s grants: its file in the policies directory; for one
/// installed through the admin API, the policy it was installed with, installed again.
fn policy_file(policy: &Policy) -> String {
    match policy.installed {
        true => "its policy, then install it again (sign it again first if it is signed, \
                 uninstall it, install it with the new policy; its data stays)"
            .into(),
        false => policy.source.display().to_string(),
    }
}

/// Links each denied import to a stand-in: every function traps, naming the interface and the
/// grant it needs, so the request fails with a 500 and the log says why; nothing ungranted can
/// ever do anything. A toolchain that imports a whole world (componentize-py, componentize-js)
/// thus loads with only the grants the code uses.
fn link_stand_ins(
    engine: &Engine,
    linker: &mut Linker<super::State>,
    component: &Component,
    denied: &[(String, String)],
    name: &str,
) -> anyhow::Result<()> {
    for (import, item) in component.component_type().imports(engine) {
        let Some((_, why)) = denied.iter().find(|(denied, _)| denied == import) else {
            continue;
        };
        let ComponentItem::ComponentInstance(instance) = &item.ty else {
            continue;
        };
        let mut stand_in = linker.instance(import)?;
        for (export, ty) in instance.exports(engine) {
            match &ty.ty {
                ComponentItem::ComponentFunc(_) => {
                    let message = format!(
                        "component `{name}` called `{import}#{export}`, which it may not use: {why}"
                    );
                    stand_in.func_new(export, move |_, _, _, _| {
                        Err(wasmtime::Error::msg(message.clone()))
                    })?;
                }
                ComponentItem::Resource(_) => {
                    stand_in.resource(export, ResourceType::host::<()>(), |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Whether an import gives the component anything to call.
fn callable(engine: &Engine, item: &ComponentItem) -> bool {
    match item {
        ComponentItem::ComponentInstance(instance) => instance
            .exports(engine)
            .any(|(_, export)| callable(engine, &export.ty)),
        ComponentItem::Type(_) => false,
        _ => true,
    }
}

/// Compiles, checks and links `bytes` for `slot`, and reads the version's manifest.
pub async fn load(
    engine: &Engine,
    compiler: &Compiler,
    slot: &Sandbox,
    bytes: Arc<Vec<u8>>,
    signature: Option<&str>,
) -> anyhow::Result<Loaded> {
    let digest = digest(&bytes);
    // Checked first: an untrusted component is not even compiled.
    let signer = slot
        .signatures
        .check(&slot.name, &digest, &slot.policy.digest, signature)
        .map_err(anyhow::Error::msg)?;
    let component = compiler.compile(engine, bytes, &digest).await?;
    let denied = check_imports(engine, &component, slot)?;
    let linker = if denied.is_empty() {
        std::borrow::Cow::Borrowed(&slot.linker)
    } else {
        let mut linker = slot.linker.clone();
        link_stand_ins(engine, &mut linker, &component, &denied, &slot.name)?;
        tracing::warn!(
            component = %slot.name,
            denied = ?denied.iter().map(|(import, _)| import).collect::<Vec<_>>(),
            "the component imports interfaces its policy does not grant: every call to them fails"
        );
        std::borrow::Cow::Owned(linker)
    };
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| anyhow::anyhow!("component `{}` cannot be linked: {e:#}", slot.name))?;
    let pre = match ServicePre::new(pre.clone()) {
        Ok(pre) => Pre::Service(pre),
        Err(service) => Pre::Plugin(PluginPre::new(pre).map_err(|plugin| {
            anyhow::anyhow!(
                "component `{}` exports neither the service world ({service:#}) nor the plugin world ({plugin:#})",
                slot.name
            )
        })?),
    };

    let deadline = std::time::Instant::now() + slot.deadline();
    let mut store = slot.store(engine, "deploy", deadline, None, 0, None);
    let manifest = async {
        let instance = pre
            .instantiate(&mut store)
            .await
            .map_err(failed("instantiating to read the manifest"))?;
        instance.manifest(&mut store, slot.dialect).await
    };
    let (version, migrations) = tokio::time::timeout(slot.deadline(), manifest)
        .await
        .map_err(|_| {
            anyhow::anyhow!("the manifest did not answer within the policy's deadline")
        })??;
    if !migrations.is_empty() && !slot.policy.grants(Capability::Database) {
        bail!(
            "component `{}` ships migrations but its policy does not grant \"database\"",
            slot.name
        );
    }
    Ok(Loaded {
        version,
        digest,
        signer,
        denied_imports: denied.into_iter().map(|(import, _)| import).collect(),
        loaded_at: OffsetDateTime::now_utc(),
        pre,
        migrations,
    })
}

/// Wraps a wasmtime error with what the host was doing.
fn failed(doing: &'static str) -> impl FnOnce(wasmtime::Error) -> anyhow::Error {
    move |error| anyhow::anyhow!("{doing}: {error:#}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::collect_cache;

    #[test]
    fn the_cache_sheds_its_oldest_artefacts_but_never_one_in_use() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        // Oldest first: a (in use), b, c, d, each 100 bytes.
        for name in ["a", "b", "c", "d"] {
            std::fs::write(dir.path().join(format!("{name}-00ff.cwasm")), [0u8; 100])?;
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let in_use = BTreeSet::from(["a".to_string()]);
        assert_eq!(collect_cache(dir.path(), &in_use, 250), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        left.sort();
        assert_eq!(left, ["a-00ff.cwasm", "d-00ff.cwasm"]);
        assert_eq!(
            collect_cache(dir.path(), &in_use, 250),
            0,
            "within the bound now"
        );
        Ok(())
    }
}
