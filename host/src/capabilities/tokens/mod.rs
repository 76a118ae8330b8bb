//! The `tokens` capability and the gateway's token checks share this: the host's signing keys,
//! minting and verifying access tokens, and the revocation list (in the host's security state,
//! which no component's cache writes can reach or evict).
//!
//! HS256 only, pinned: a token naming any other algorithm (`none` included) is refused, as is
//! one without a `kid` the host knows. Several keys verify, one signs, so keys can rotate.

mod host;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub use crate::bindings::tokens::{AccessToken, Claims, Error};
use crate::security_state::SecurityState;
pub use host::TokensCtx;

pub const ISSUER: &str = "truevalue-auth";
pub const AUDIENCE: &str = "truevalue-platform";
/// Access tokens live 15 minutes; a revocation needs to be remembered that long.
pub const ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// Clock difference tolerated between hosts when checking `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 5;
/// Most bytes of text in the claims of one minted token: a token travels in a header of every
/// request, and the gateway decodes it each time.
pub const MAX_CLAIMS_BYTES: usize = 8 * 1024;
/// Longest token verified; longer ones are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest session id that can be revoked.
pub const MAX_SESSION_ID_BYTES: usize = 256;

/// The JWT payload, as API.md names the claims.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    sub: String,
    email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    org_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    org_slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    org_name: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plan: Option<String>,
    session_id: String,
    /// Rights-as-of: when the request that minted the token began (Unix milliseconds). A rights
    /// change recorded at or after it refuses the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rat: Option<u64>,
    iss: String,
    aud: String,
    exp: u64,
    iat: u64,
    nbf: u64,
}

/// One key: its id and its HS256 secret.
pub struct Key {
    pub kid: String,
    pub secret: SecretString,
}

pub struct Tokens {
    signing: (String, EncodingKey),
    verifying: HashMap<String, DecodingKey>,
    validation: Validation,
    revocations: Arc<dyn SecurityState>,
}

impl Tokens {
    /// `keys[0]` signs; all of them verify.
    pub fn new(keys: &[Key], revocations: Arc<dyn SecurityState>) -> anyhow::Result<Self> {
        let first = keys
            .first()
            .ok_or_else(|| anyhow::anyhow!("no token keys"))?;
        let signing = (
            first.kid.clone(),
            EncodingKey::from_secret(first.secret.expose_secret().as_bytes()),
        );
        let verifying = keys
            .iter()
            .map(|k| {
                (
                    k.kid.clone(),
                    DecodingKey::from_secret(k.secret.expose_secret().as_bytes()),
                )
            })
            .collect();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        Ok(Self {
            signing,
            verifying,
            validation,
            revocations,
        })
    }

    /// The key every host derives from the shared host secret when no keys are configured.
    pub fn derived_key(secret: &SecretString) -> Key {
        let key =
            crate::secrets::hmac_sha256(secret.expose_secret().as_bytes(), b"access token key");
        Key {
            kid: "derived-1".into(),
            secret: SecretString::from(hex::encode(key)),
        }
    }

    /// Refuses claims over `MAX_CLAIMS_BYTES` of text.
    /// `rights_as_of`: when the minting request began, in Unix milliseconds.
    pub fn mint(&self, claims: Claims, rights_as_of: u64) -> anyhow::Result<AccessToken> {
        let size = claims_bytes(&claims);
        if size > MAX_CLAIMS_BYTES {
            anyhow::bail!(
                "the claims are {size} bytes of text; a token carries at most {MAX_CLAIMS_BYTES}"
            );
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let payload = Payload {
            sub: claims.user_id,
            email: claims.email,
            org_id: claims.org_id,
            org_slug: claims.org_slug,
            org_name: claims.org_name,
            roles: claims.roles,
            permissions: claims.permissions,
            plan: claims.plan,
            session_id: claims.session_id,
            rat: Some(rights_as_of),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            exp: now + ACCESS_TTL.as_secs(),
            iat: now,
            nbf: now,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.signing.0.clone());
        let token = jsonwebtoken::encode(&header, &payload, &self.signing.1)?;
        Ok(AccessToken {
            token,
            expires_in: ACCESS_TTL.as_secs() as u32,
        })
    }

    /// Verifies signature, algorithm, `kid`, `exp`, `nbf`, `iss`, `aud`, then revocation.
    pub async fn verify(&self, token: &str) -> Result<Claims, Error> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Error::Invalid(format!(
                "the token is over {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| Error::Invalid(format!("malformed: {e}")))?;
        if header.alg != Algorithm::HS256 {
            return Err(Error::Invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| Error::Invalid("the token names no key (kid)".into()))?;
        let key = self
            .verifying
            .get(&kid)
            .ok_or_else(|| Error::Invalid(format!("unknown key {kid:?}")))?;
        let data = jsonwebtoken::decode::<Payload>(token, key, &self.validation).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Error::Expired,
                _ => Error::Invalid(e.to_string()),
            }
        })?;
        let payload = data.claims;
        match self
            .revocations
            .recorded(&revocation_key(&payload.session_id))
            .await
        {
            Ok(false) => {}
            Ok(true) => return Err(Error::Revoked),
            // Fail closed: a token whose session cannot be checked is not accepted.
            Err(_) => return Err(Error::Invalid("the revocation list cannot be read".into())),
        }
        if let Some(org_id) = &payload.org_id {
            let minted = payload.rat.unwrap_or(payload.iat.saturating_mul(1000));
            match self
                .revocations
                .value(&rights_key(org_id, &payload.sub))
                .await
            {
                Ok(Some(changed)) if changed >= minted => return Err(Error::RightsChanged),
                Ok(_) => {}
                Err(_) => return Err(Error::Invalid("the rights changes cannot be read".into())),
            }
        }
        Ok(Claims {
            user_id: payload.sub,
            email: payload.email,
            org_id: payload.org_id,
            org_slug: payload.org_slug,
            org_name: payload.org_name,
            roles: payload.roles,
            permissions: payload.permissions,
            plan: payload.plan,
            session_id: payload.session_id,
        })
    }

    /// Remembered as long as a token of the session can still be unexpired.
    pub async fn revoke(&self, session_id: &str) -> Result<(), String> {
        if session_id.is_empty() || session_id.len() > MAX_SESSION_ID_BYTES {
            return Err(format!("a session id is 1 to {MAX_SESSION_ID_BYTES} bytes"));
        }
        let ttl = ACCESS_TTL + Duration::from_secs(LEEWAY_SECONDS);
        self.revocations
            .record(&revocation_key(session_id), ttl)
            .await
            .map_err(|e| format!("{e:#}"))
    }

    /// Records that `user_id`'s rights in `org_id` changed now: their tokens for that
    /// organization minted before stop being accepted. Kept as long as such a token can be
    /// unexpired.
    pub async fn rights_changed(&self, org_id: &str, user_id: &str) -> Result<(), String> {
        if [org_id, user_id]
            .iter()
            .any(|id| id.is_empty() || id.len() > MAX_SESSION_ID_BYTES)
        {
            return Err(format!(
                "a user or organization id is 1 to {MAX_SESSION_ID_BYTES} bytes"
            ));
        }
        let ttl = ACCESS_TTL + Duration::from_secs(LEEWAY_SECONDS);
        self.revocations
            .raise(&rights_key(org_id, user_id), change_ms(), ttl)
            .await
            .map_err(|e| format!("{e:#}"))
    }
}

/// Unix time in milliseconds, never earlier than a time this process handed out before: the
/// wall clock may step back (NTP, a virtual machine's clock), and a token minted after a rights
/// change must never carry an earlier time than the change.
pub fn now_ms() -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let previous = LAST_MS.fetch_max(wall, Ordering::SeqCst);
    wall.max(previous)
}

/// The latest time [`now_ms`] handed out.
static LAST_MS: AtomicU64 = AtomicU64::new(0);

/// The time of a rights change: every request that starts after this call gets a later time,
/// even within the same millisecond, so a token it mints is not taken for one minted before.
fn change_ms() -> u64 {
    let at = now_ms();
    LAST_MS.fetch_max(at + 1, Ordering::SeqCst);
    at
}

fn rights_key(org_id: &str, user_id: &str) -> String {
    format!("rights-changed:{org_id}:{user_id}")
}

/// The same name the previous release used (it reads it there too during an upgrade).
fn revocation_key(session_id: &str) -> String {
    format!("revoked-session:{session_id}")
}

fn claims_bytes(claims: &Claims) -> usize {
    let optional = [
        &claims.org_id,
        &claims.org_slug,
        &claims.org_name,
        &claims.plan,
    ];
    [&claims.user_id, &claims.email, &claims.session_id]
        .iter()
        .map(|s| s.len())
        .chain(optional.iter().map(|s| s.as_ref().map_or(0, String::len)))
        // An empty entry still costs its place in the list.
        .chain(
            claims
                .roles
                .iter()
                .chain(&claims.permissions)
                .map(|s| s.len() + 1),
        )
        .sum()
}
