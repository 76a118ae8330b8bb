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
