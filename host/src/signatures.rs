//! Signed components. A publisher signs, with an ed25519 key, what makes a component what it is
//! on a host: its name, the sha256 of its `.wasm` and the sha256 of its policy file. The host
//! trusts the publishers' public keys its config lists (`trusted_publishers`); with
//! `require_signatures = true` it loads nothing else. A signature that is given is always
//! checked, required or not: a mis-signed component is refused.
//!
//! A signature travels as one line, `<publisher>:<128 hex digits>`: in `<file>.wasm.sig` beside
//! the `.wasm` (written by `truevalue component sign`, read at start-up and by
//! `truevalue component deploy`), and in the admin API's `X-Component-Signature` header.

use anyhow::Context;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// A publisher the operator trusts, from the host config.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrustedPublisher {
    /// The name a signature carries and the component list shows.
    pub name: String,
    /// The ed25519 public key, 64 hex digits (as `truevalue component keygen` prints it).
    pub public_key: String,
}

/// The trusted keys and whether a signature is required.
#[derive(Debug)]
pub struct Signatures {
    publishers: Vec<(String, VerifyingKey)>,
    required: bool,
}

/// What a signature covers.
fn message(component: &str, wasm_digest: &str, policy_digest: &str) -> Vec<u8> {
    format!(
        "truevalue component signature v1\ncomponent {component}\nwasm sha256 {wasm_digest}\npolicy sha256 {policy_digest}\n"
    )
    .into_bytes()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn key_bytes<const N: usize>(hex_text: &str, what: &str) -> anyhow::Result<[u8; N]> {
    let bytes = hex::decode(hex_text.trim()).with_context(|| format!("{what} is not hex"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{what} must be {} hex digits", N * 2))
}

impl Signatures {
    pub fn new(publishers: &[TrustedPublisher], required: bool) -> anyhow::Result<Self> {
        let publishers = publishers
            .iter()
            .map(|p| {
                anyhow::ensure!(
                    valid_name(&p.name),
                    "trusted_publishers: name {:?} must be 1-64 letters, digits or -_.",
                    p.name
                );
                let bytes = key_bytes::<32>(&p.public_key, "trusted_publishers.public_key")?;
                let key = VerifyingKey::from_bytes(&bytes).with_context(|| {
                    format!(
                        "the public key of publisher {} is not an ed25519 key",
                        p.name
                    )
                })?;
                Ok((p.name.clone(), key))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(
            !required || !publishers.is_empty(),
            "require_signatures is on but trusted_publishers is empty: no component could load"
        );
        Ok(Self {
            publishers,
            required,
        })
    }

    /// No trusted publisher, nothing required.
    pub fn none() -> Self {
        Self {
            publishers: Vec::new(),
            required: false,
        }
    }

    /// The publisher who signed component `component` (its wasm and policy digests) with
    /// `signature`; none for an unsigned one the host accepts. Refused, saying why: unsigned
    /// when required, malformed, by an untrusted publisher, or not matching.
    pub fn check(
        &self,
        component: &str,
        wasm_digest: &str,
        policy_digest: &str,
        signature: Option<&str>,
    ) -> Result<Option<String>, String> {
        let Some(signature) = signature.map(str::trim).filter(|s| !s.is_empty()) else {
            return match self.required {
                true => Err(format!(
                    "`{component}` is unsigned and this host requires signatures (require_signatures): sign it with `truevalue component sign`"
                )),
                false => Ok(None),
            };
        };
        let (signer, hex_signature) = signature
            .split_once(':')
            .ok_or("a signature must read `<publisher>:<128 hex digits>`")?;
        let bytes = key_bytes::<64>(hex_signature, "the signature").map_err(|e| e.to_string())?;
        let key = self
            .publishers
            .iter()
            .find(|(name, _)| name == signer)
            .map(|(_, key)| key)
            .ok_or_else(|| {
                format!("`{component}` is signed by `{signer}`, whom this host does not trust (trusted_publishers)")
            })?;
        key.verify_strict(
            &message(component, wasm_digest, policy_digest),
            &Signature::from_bytes(&bytes),
        )
        .map_err(|_| {
            format!(
                "the signature by `{signer}` does not match `{component}`: it was made for other bytes, another policy or another component"
            )
        })?;
        Ok(Some(signer.to_string()))
    }
}

/// A new key pair: (private key, public key), each as hex.
pub fn generate() -> (String, String) {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    (
        hex::encode(key.to_bytes()),
        hex::encode(key.verifying_key().to_bytes()),
    )
}

/// The signature line of `component` by `signer` with the private key `private_hex`.
pub fn sign(
    private_hex: &str,
    signer: &str,
    component: &str,
    wasm_digest: &str,
    policy_digest: &str,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        valid_name(signer),
        "the publisher name must be 1-64 letters, digits or -_."
    );
    let key = SigningKey::from_bytes(&key_bytes::<32>(private_hex, "the private key")?);
    let signature = key.sign(&message(component, wasm_digest, policy_digest));
    Ok(format!("{signer}:{}", hex::encode(signature.to_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusting(public: &str, required: bool) -> Signatures {
        let publisher = TrustedPublisher {
            name: "acme".into(),
            public_key: public.into(),
        };
        Signatures::new(&[publisher], required).unwrap_or_else(|_| Signatures::none())
    }

    #[test]
    fn a_signature_holds_only_for_its_component_bytes_policy_and_publisher() {
        let (private, public) = generate();
        let signatures = trusting(&public, true);
        let line = sign(&private, "acme", "crm", "aa", "bb").unwrap_or_default();
        assert_eq!(
            signatures.check("crm", "aa", "bb", Some(&line)),
            Ok(Some("acme".into()))
        );
        for (component, wasm, policy) in [
            ("crm", "ab", "bb"),
            ("crm", "aa", "bc"),
            ("crx", "aa", "bb"),
        ] {
            assert!(
                signatures
                    .check(component, wasm, policy, Some(&line))
                    .is_err()
            );
        }
        let (other, _) = generate();
        let forged = sign(&other, "acme", "crm", "aa", "bb").unwrap_or_default();
        assert!(signatures.check("crm", "aa", "bb", Some(&forged)).is_err());
        let stranger = sign(&private, "globex", "crm", "aa", "bb").unwrap_or_default();
        let error = signatures
            .check("crm", "aa", "bb", Some(&stranger))
            .err()
            .unwrap_or_default();
        assert!(error.contains("does not trust"), "{error}");
        assert!(
            signatures
                .check("crm", "aa", "bb", Some("acme:zz"))
                .is_err()
        );
    }

    #[test]
    fn unsigned_components_load_only_where_signatures_are_not_required() {
        let (_, public) = generate();
        assert_eq!(
            trusting(&public, false).check("crm", "aa", "bb", None),
            Ok(None)
        );
        let error = trusting(&public, true)
            .check("crm", "aa", "bb", None)
            .err()
            .unwrap_or_default();
        assert!(error.contains("unsigned"), "{error}");
        assert!(Signatures::new(&[], true).is_err());
    }
}
