//! Turns `.wasm` bytes into a linked, checked component version: compile (or load the cached
//! artefact by digest), refuse ungranted imports by name, pre-link, and read its manifest.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

use super::registry::Sandbox;
use crate::bindings::ServicePre;
use crate::capabilities::database::Migration;
use crate::policy::Capability;

/// One version of a component, ready to instantiate.
pub struct Loaded {
    pub version: String,
    pub digest: String,
    /// The trusted publisher who signed it; none when unsigned.
    pub signer: Option<String>,
    pub loaded_at: OffsetDateTime,
    pub(crate) pre: ServicePre<super::State>,
    pub(crate) migrations: Vec<Migration>,
}

/// The sha256 of the bytes, in hex: a version's identity.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Compiles `bytes`, reusing the artefact cached under `cache_dir` when the engine matches.
pub fn compile(
    engine: &Engine,
    cache_dir: &Path,
    bytes: &[u8],
    digest: &str,
) -> anyhow::Result<Component> {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let path = cache_dir.join(format!("{digest}-{:016x}.cwasm", hasher.finish()));
    if path.is_file() {
        // SAFETY: the cache holds only artefacts this host serialized for an engine with the
        // same compatibility hash; a file that fails to load is recompiled below.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "recompiling, cached artefact unusable: {e:#}")
            }
        }
    }
    if is_core_module(bytes) {
        bail!("this is a core WebAssembly module, not a component: build it for wasm32-wasip2");
    }
    let component = Component::new(engine, bytes)
        .map_err(|e| anyhow::anyhow!("not a valid component: {e:#}"))?;
    if let Ok(serialized) = component.serialize() {
        let written = std::fs::create_dir_all(cache_dir).and_then(|()| {
            let temp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&temp, serialized)?;
            std::fs::rename(&temp, &path)
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

/// WASI interfaces every component may import: stdio, clocks, randomness, and a filesystem
/// with nothing in it. Sockets and outgoing HTTP are not offered.
const WASI_ALLOWED: [&str; 5] = [
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
];

/// Checks every import against the policy; fails naming all that are not granted.
pub fn check_imports(engine: &Engine, component: &Component, slot: &Sandbox) -> anyhow::Result<()> {
    let policy = &slot.policy;
    let mut problems = Vec::new();
    for (name, item) in component.component_type().imports(engine) {
        if !callable(engine, &item.ty) {
            // An interface imported only for its types (say, `database.dialect` used by the
            // manifest) gives the component nothing to call, so it needs no grant.
            continue;
        }
        if let Some(rest) = name.strip_prefix("truevalue:platform/") {
            let interface = rest.split('@').next().unwrap_or(rest);
            match Capability::from_interface(interface) {
                Some(capability) if policy.grants(capability) => {}
                Some(capability) if capability.is_trusted() => problems.push(format!(
                    "it imports `{name}`, a trusted capability only operator-approved components may hold: \
                     it needs \"{interface}\" in `capabilities` in {} and \"{}\" in `trusted_components` in the host config",
                    policy.source.display(),
                    slot.name
                )),
                Some(_) => problems.push(format!(
                    "it imports `{name}`, which its policy does not grant: add \"{interface}\" to `capabilities` in {}",
                    policy.source.display()
                )),
                None => problems.push(format!("it imports `{name}`, which this host does not offer")),
            }
        } else if !WASI_ALLOWED.iter().any(|prefix| name.starts_with(prefix)) {
            problems.push(format!("it imports `{name}`, which components may not use"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "component `{}` is refused: {}",
            slot.name,
            problems.join("; ")
        )
    }
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
    cache_dir: &Path,
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
    let component = {
        let (engine, cache_dir, digest) = (engine.clone(), cache_dir.to_path_buf(), digest.clone());
        tokio::task::spawn_blocking(move || compile(&engine, &cache_dir, &bytes, &digest))
            .await
            .context("the compiler task failed")??
    };
    check_imports(engine, &component, slot)?;
    let pre = slot
        .linker
        .instantiate_pre(&component)
        .map_err(|e| anyhow::anyhow!("component `{}` cannot be linked: {e:#}", slot.name))?;
    let pre = ServicePre::new(pre).map_err(|e| {
        anyhow::anyhow!(
            "component `{}` does not export the service world: {e:#}",
            slot.name
        )
    })?;

    let deadline = std::time::Instant::now() + slot.deadline();
    let mut store = slot.store(engine, "deploy", deadline, None, 0, None);
    let manifest = async {
        let instance = pre
            .instantiate_async(&mut store)
            .await
            .map_err(failed("instantiating to read the manifest"))?;
        let manifest = instance.truevalue_platform_manifest();
        let version = manifest
            .call_version(&mut store)
            .await
            .map_err(failed("calling manifest.version"))?;
        let migrations = manifest
            .call_migrations(&mut store, slot.dialect)
            .await
            .map_err(failed("calling manifest.migrations"))?;
        anyhow::Ok((version, migrations))
    };
    let (version, migrations) = tokio::time::timeout(slot.deadline(), manifest)
        .await
        .map_err(|_| {
            anyhow::anyhow!("the manifest did not answer within the policy's deadline")
        })??;
    let migrations = migrations
        .into_iter()
        .map(|m| Migration {
            id: m.id,
            name: m.name,
            sql: m.sql,
        })
        .collect::<Vec<_>>();
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
