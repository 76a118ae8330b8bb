//! What the admin API deployed, kept under `data_dir/components/<name>/`: every version that
//! ever served, by digest (`<digest>.wasm`), and `state.json` naming the current and previous
//! ones and whether the current one is pinned.
//!
//! A pinned version (an admin deploy or rollback) is loaded at start-up instead of the policy's
//! `wasm` file; an unpinned one (after `POST /admin/components/{name}/reset`) follows the
//! policy's file, so a new file shipped in an upgrade takes effect at the next start.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::loader;

/// Which versions were deployed, kept beside their `.wasm` files.
#[derive(Serialize, Deserialize)]
pub(super) struct DeployState {
    pub current: String,
    pub previous: Option<String>,
    /// Absent in files written before resets existed: those were all pins.
    #[serde(default = "pinned_by_default")]
    pub pinned: bool,
}

fn pinned_by_default() -> bool {
    true
}

pub(super) fn read_state(dir: &Path) -> anyhow::Result<Option<DeployState>> {
    let path = dir.join("state.json");
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub(super) fn write_state(dir: &Path, state: &DeployState) -> anyhow::Result<()> {
    write_atomic(&dir.join("state.json"), &serde_json::to_vec_pretty(state)?)
}

pub(super) fn read_version(dir: &Path, digest: &str) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(format!("{digest}.wasm"));
    let bytes = std::fs::read(&path)
        .with_context(|| format!("reading the deployed version {}", path.display()))?;
    anyhow::ensure!(
        loader::digest(&bytes) == digest,
        "{} does not match its digest",
        path.display()
    );
    Ok(bytes)
}

pub(super) fn keep_version(dir: &Path, digest: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(format!("{digest}.wasm"));
    if path.is_file() {
        Ok(())
    } else {
        write_atomic(&path, bytes)
    }
}

/// Writes through a temporary file and a rename, so a crash leaves the old file or the new one.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, bytes).with_context(|| format!("writing {}", temp.display()))?;
    std::fs::File::open(&temp)?.sync_all()?;
    std::fs::rename(&temp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
