//! Secrets the host generates when the configuration gives none: kept in the data directory,
//! readable by the host's user only, and never printed.

use std::path::Path;

use anyhow::Context;
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use sha2::Sha256;

/// The configured secret, or the one stored in `data_dir/file`, or a new random one stored
/// there (mode 0600). Also returns where it came from, to tell the operator.
pub fn load_or_generate(
    configured: Option<SecretString>,
    data_dir: &Path,
    file: &str,
) -> anyhow::Result<(SecretString, String)> {
    if let Some(secret) = configured {
        return Ok((secret, "the configuration".into()));
    }
    let path = data_dir.join(file);
    if path.is_file() {
        let secret = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return Ok((
            SecretString::from(secret.trim().to_string()),
            path.display().to_string(),
        ));
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    write_private(&path, &secret)?;
    Ok((SecretString::from(secret), path.display().to_string()))
}

/// Makes `data_dir` the host user's alone: everything the host creates from now on is mode
/// 0600 (files) or 0700 (folders) — SQLite files with their journals, deployed components, the
/// compile cache, generated secrets — and what an earlier version left readable to others in
/// the data directory is tightened the same way.
pub fn private_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    #[cfg(unix)]
    tighten(data_dir)?;
    Ok(())
}

/// Drops group and other permissions from `path` and, for a folder, from everything below it.
/// Symbolic links are left alone: the data directory's own files are what is tightened.
#[cfg(unix)]
fn tighten(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let metadata =
        std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if metadata.file_type().is_symlink() {
        return Ok(());
    }
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))
            .with_context(|| format!("making {} private", path.display()))?;
    }
    if metadata.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?
        {
            tighten(&entry?.path())?;
        }
    }
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// An HMAC-SHA256 keyed with `key`, ready for updates. HMAC takes keys of any length, so the
/// error branch of `new_from_slice` cannot happen; it falls back to an empty key rather than panic.
pub fn hmac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default()))
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = hmac(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}
