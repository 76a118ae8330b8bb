//! The signed hop between a gateway and a node (split deployment).
//!
//! The gateway signs each forwarded request with HMAC-SHA256 under the shared gateway secret,
//! over the timestamp, method, path with query, the verified context headers, every other header
//! it forwards (named in `X-Gateway-Signed-Headers`) and the body. Each field is length-prefixed
//! (`<len>:<value>|`), so no byte can move from one field to another without breaking the
//! signature. A node accepts a request only if the signature matches, the timestamp is within
//! 30 s of its clock, and it has not served the same MAC before; components on a node see only
//! the headers the signature covers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

pub const TIMESTAMP: &str = "x-gateway-timestamp";
pub const SIGNATURE: &str = "x-gateway-signature";
/// The forwarded headers the signature covers, comma-separated, in the order signed.
pub const SIGNED_HEADERS: &str = "x-gateway-signed-headers";
pub const USER_ID: &str = "x-user-id";
pub const ORG_ID: &str = "x-org-id";
pub const ROLES: &str = "x-user-roles";
pub const PERMISSIONS: &str = "x-user-permissions";
pub const SESSION_ID: &str = "x-session-id";
pub const CLIENT_IP: &str = "x-client-ip";
/// The context headers the signature covers, in order, after the request id.
pub const CONTEXT: [&str; 6] = [USER_ID, ORG_ID, ROLES, PERMISSIONS, SESSION_ID, CLIENT_IP];
/// How far a signed request's timestamp may be from the node's clock.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// An HMAC-SHA256 tag, as verified.
pub type Tag = [u8; 32];

/// Whether a request header belongs to the gateway → node hop alone. Only a gateway sets these,
/// after verifying the caller; a client's values are dropped in every role, so no component can
/// mistake them for the verified context.
pub fn reserved(name: &str) -> bool {
    // Compared without case, and without a lower-cased copy of every header of every request.
    name.as_bytes()
        .get(..PREFIX.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(PREFIX.as_bytes()))
        || CONTEXT
            .iter()
            .any(|reserved| reserved.eq_ignore_ascii_case(name))
}

/// The prefix of every header of the gateway → node hop.
const PREFIX: &str = "x-gateway-";

/// One forwarded header: its name (lower case) and every value, in the order sent.
pub type Header<'a> = (&'a str, Vec<&'a [u8]>);

/// What the signature covers.
pub struct Signed<'a> {
    pub timestamp: &'a str,
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub request_id: &'a str,
    /// The values of [`CONTEXT`], in order; empty when absent.
    pub context: [&'a str; 6],
    /// The other headers forwarded to the node, in the order [`SIGNED_HEADERS`] names them.
    pub headers: &'a [Header<'a>],
    pub body: &'a [u8],
}

fn field(mac: &mut Hmac<Sha256>, value: &[u8]) {
    mac.update(format!("{}:", value.len()).as_bytes());
    mac.update(value);
    mac.update(b"|");
}

impl Signed<'_> {
    fn mac(&self, secret: &SecretString) -> Hmac<Sha256> {
        let mut mac = crate::secrets::hmac(secret.expose_secret().as_bytes());
        let fields = [
            self.timestamp,
            self.method,
            self.path_and_query,
            self.request_id,
        ];
        for value in fields.iter().chain(self.context.iter()) {
            field(&mut mac, value.as_bytes());
        }
        field(&mut mac, self.headers.len().to_string().as_bytes());
        for (name, values) in self.headers {
            field(&mut mac, name.as_bytes());
            field(&mut mac, values.len().to_string().as_bytes());
            for value in values {
                field(&mut mac, value);
            }
        }
        mac.update(self.body);
        mac
    }

    /// The signature, in lower-case hex: the only spelling a node accepts.
    pub fn sign(&self, secret: &SecretString) -> String {
        hex::encode(self.mac(secret).finalize().into_bytes())
    }

    /// The tag `signature` carries, if it is right (compared in constant time) and spelt the one
    /// way [`Signed::sign`] spells it. One spelling per tag means one captured request cannot
    /// pass the replay check again re-cased.
    pub fn verify(&self, secret: &SecretString, signature: &str) -> Option<Tag> {
        let canonical = signature.len() == 64
            && signature
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let mut tag = [0u8; 32];
        if !canonical || hex::decode_to_slice(signature, &mut tag).is_err() {
            return None;
        }
        self.mac(secret).verify_slice(&tag).is_ok().then_some(tag)
    }
}

/// The replay-cache key of a verified request: derived from the tag's bytes, never from the
/// header's text, so no re-spelling of a signature counts as a new request.
pub fn replay_key(tag: &Tag) -> String {
    format!("gateway-signature:{}", hex::encode(tag))
}

/// Seconds since the epoch, as the timestamp header carries them.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether a timestamp is within [`MAX_AGE`] of now, either way.
pub fn fresh(timestamp: &str) -> bool {
    timestamp
        .parse::<u64>()
        .is_ok_and(|ts| now().abs_diff(ts) <= MAX_AGE.as_secs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn request<'a>(headers: &'a [Header<'a>]) -> Signed<'a> {
        Signed {
            timestamp: "1700000000",
            method: "POST",
            path_and_query: "/hello/guestbook",
            request_id: "r-1",
            context: ["user-1", "", "", "", "", "127.0.0.1"],
            headers,
            body: b"{}",
        }
    }

    fn secret() -> SecretString {
        SecretString::from("a gateway secret of at least 32 characters")
    }

    #[test]
    fn only_the_lower_case_spelling_of_a_signature_verifies() {
        let headers = [("user-agent", vec![&b"curl/8"[..]])];
        let signed = request(&headers);
        let signature = signed.sign(&secret());
        let tag = signed.verify(&secret(), &signature).unwrap();
        assert_eq!(replay_key(&tag), format!("gateway-signature:{signature}"));
        assert!(
            signed
                .verify(&secret(), &signature.to_uppercase())
                .is_none()
        );
        let mut mixed = signature.clone();
        mixed.replace_range(..1, &signature[..1].to_uppercase());
        if mixed != signature {
            assert!(signed.verify(&secret(), &mixed).is_none());
        }
        assert!(signed.verify(&secret(), &format!("{signature} ")).is_none());
    }

    #[test]
    fn the_signature_covers_forwarded_headers() {
        let headers = [
            ("content-type", vec![&b"application/json"[..]]),
            ("user-agent", vec![&b"curl/8"[..]]),
        ];
        let signature = request(&headers).sign(&secret());
        let altered = [
            ("content-type", vec![&b"text/plain"[..]]),
            ("user-agent", vec![&b"curl/8"[..]]),
        ];
        assert!(request(&altered).verify(&secret(), &signature).is_none());
        let dropped = [("user-agent", vec![&b"curl/8"[..]])];
        assert!(request(&dropped).verify(&secret(), &signature).is_none());
        // A value cannot move from one header into the next.
        let moved = [
            (
                "content-type",
                vec![&b"application/json"[..], &b"curl/8"[..]],
            ),
            ("user-agent", vec![]),
        ];
        assert!(request(&moved).verify(&secret(), &signature).is_none());
    }

    #[test]
    fn gateway_headers_are_reserved_whatever_their_case() {
        for name in ["X-User-Id", "x-org-id", "X-Gateway-Anything", "x-client-ip"] {
            assert!(reserved(name), "{name}");
        }
        assert!(!reserved("user-agent"));
    }
}
