//! The signed hop between a gateway and a node (split deployment).
//!
//! The gateway signs each forwarded request with HMAC-SHA256 under the shared gateway secret,
//! over the timestamp, method, path with query, the verified context headers and the body.
//! Each field is length-prefixed (`<len>:<value>|`), so no byte can move from one field to
//! another without breaking the signature. A node accepts a request only if the signature
//! matches, the timestamp is within 30 s of its clock, and it has not seen the signature before.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

pub const TIMESTAMP: &str = "x-gateway-timestamp";
pub const SIGNATURE: &str = "x-gateway-signature";
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

/// What the signature covers.
pub struct Signed<'a> {
    pub timestamp: &'a str,
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub request_id: &'a str,
    /// The values of [`CONTEXT`], in order; empty when absent.
    pub context: [&'a str; 6],
    pub body: &'a [u8],
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
        for field in fields.iter().chain(self.context.iter()) {
            mac.update(format!("{}:{field}|", field.len()).as_bytes());
        }
        mac.update(self.body);
        mac
    }

    /// The signature, in hex.
    pub fn sign(&self, secret: &SecretString) -> String {
        hex::encode(self.mac(secret).finalize().into_bytes())
    }

    /// Whether `signature` (hex) is right, compared in constant time.
    pub fn verify(&self, secret: &SecretString, signature: &str) -> bool {
        hex::decode(signature).is_ok_and(|bytes| self.mac(secret).verify_slice(&bytes).is_ok())
    }
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
