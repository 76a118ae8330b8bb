//! Access tokens at the gateway: public and protected routes, the verified caller as the
//! component's context, JWT attacks, revocation, per-user rate limits, key rotation.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::Mac;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{Engine, Policy, Spawn, TestApp, mint_token, problem};

const SECRET: &str = "the deployment's host secret, at least 32 characters";

/// The vault fixture mints tokens, a trusted capability: the operator approves it.
pub const TRUSTS_VAULT: &str = "trusted_components = [\"auth\", \"vault\"]";

fn vault() -> Policy {
    Policy::with_routes(
        "vault",
        "vault",
        "routes = [\"/vault\", \"/private\"]\npublic_routes = [\"/vault\"]",
        "capabilities = [\"cache\", \"crypto\", \"tokens\"]",
    )
}

async fn app_with(config: &str) -> TestApp {
    Spawn::new(Engine::Sqlite, vec![vault()])
        .env("TRUEVALUE_SECRET_KEY", SECRET)
        .config(TRUSTS_VAULT)
        .config(config)
        .start()
        .await
}

async fn mint(app: &TestApp, user: &str, session: &str) -> String {
    let claims = json!({
        "user_id": user, "email": format!("{user}@example.com"), "org_id": "org-1", "org_slug": "acme",
        "org_name": "Acme", "roles": ["manager"], "permissions": ["contacts:read", "contacts:write"],
        "plan": "pro", "session_id": session,
    });
    mint_token(app, &claims).await
}

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.client
        .get(app.url("/private/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// The key the host derives from its secret, as the host encodes it (hex of an HMAC).
fn derived_key() -> Vec<u8> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(b"access token key");
    hex::encode(mac.finalize().into_bytes()).into_bytes()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(edit: impl FnOnce(&mut Value)) -> Value {
    let now = now();
    let mut claims = json!({
        "sub": "user-1", "email": "a@example.com", "roles": ["admin"], "permissions": ["*"],
        "session_id": "s-1", "iss": "truevalue-auth", "aud": "truevalue-platform",
        "exp": now + 600, "iat": now, "nbf": now,
    });
    edit(&mut claims);
    claims
}

fn forge(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &[u8]) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(key)).unwrap()
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn protected_routes_need_a_token_and_public_ones_do_not() {
    let app = app_with("").await;
    let refused = app.get("/private/me").await;
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    problem(refused, 401).await;
    assert_eq!(app.get("/vault/random").await.status(), 200);
    // A stale token does not make a public route fail.
    let public = app
        .client
        .get(app.url("/vault/random"))
        .bearer_auth("stale.token.here")
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 200);
}

#[tokio::test]
async fn a_valid_token_becomes_the_components_request_context() {
    let app = app_with("").await;
    let token = mint(&app, "user-42", "session-1").await;
    let response = me(&app, &token).await;
    assert_eq!(response.status(), 200);
    let context: Value = response.json().await.unwrap();
    assert_eq!(context["user_id"], "user-42");
    assert_eq!(context["org_id"], "org-1");
    assert_eq!(context["roles"], json!(["manager"]));
    assert_eq!(context["session_id"], "session-1");
    assert_eq!(context["client_ip"], "127.0.0.1");
    assert_eq!(
        context["permissions"],
        json!(["contacts:read", "contacts:write"])
    );

    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    assert!(header.kid.is_some());
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.set_audience(&["truevalue-platform"]);
    validation.set_issuer(&["truevalue-auth"]);
    let decoded = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(&derived_key()),
        &validation,
    )
    .unwrap();
    let claims = decoded.claims;
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        900,
        "15 minutes"
    );
    for name in [
        "sub",
        "email",
        "org_id",
        "org_slug",
        "org_name",
        "roles",
        "permissions",
        "plan",
        "session_id",
    ] {
        assert!(
            claims.get(name).is_some(),
            "claim {name} is present: {claims}"
        );
    }
}

#[tokio::test]
async fn forged_tampered_and_stale_tokens_are_refused() {
    let app = app_with("").await;
    let key = derived_key();
    // The control: a token forged correctly with the real key is accepted, so every refusal
    // below is for the one thing each case changes.
    let control = forge(Algorithm::HS256, Some("derived-1"), &claims(|_| {}), &key);
    assert_eq!(me(&app, &control).await.status(), 200);

    let valid = mint(&app, "user-1", "s-1").await;
    let parts: Vec<&str> = valid.split('.').collect();
    let raised = base64url(
        claims(|c| c["roles"] = json!(["owner"]))
            .to_string()
            .as_bytes(),
    );
    let none_header = base64url(br#"{"alg":"none","typ":"JWT","kid":"derived-1"}"#);
    let payload = base64url(claims(|_| {}).to_string().as_bytes());
    let now = now() as i64;

    let attacks: Vec<(&str, String)> = vec![
        ("alg none", format!("{none_header}.{payload}.")),
        (
            "another algorithm",
            forge(Algorithm::HS512, Some("derived-1"), &claims(|_| {}), &key),
        ),
        (
            "tampered payload",
            format!("{}.{raised}.{}", parts[0], parts[2]),
        ),
        (
            "expired",
            forge(
                Algorithm::HS256,
                Some("derived-1"),
                &claims(|c| {
                    c["exp"] = json!(now - 3600);
                    c["iat"] = json!(now - 4500);
                    c["nbf"] = json!(now - 4500)
                }),
                &key,
            ),
        ),
        (
            "not yet valid",
            forge(
                Algorithm::HS256,
                Some("derived-1"),
                &claims(|c| c["nbf"] = json!(now + 3600)),
                &key,
            ),
        ),
        (
            "wrong audience",
            forge(
                Algorithm::HS256,
                Some("derived-1"),
                &claims(|c| c["aud"] = json!("someone-else")),
                &key,
            ),
        ),
        (
            "wrong issuer",
            forge(
                Algorithm::HS256,
                Some("derived-1"),
                &claims(|c| c["iss"] = json!("evil-auth")),
                &key,
            ),
        ),
        (
            "unknown kid",
            forge(Algorithm::HS256, Some("retired-key"), &claims(|_| {}), &key),
        ),
        (
            "no kid",
            forge(Algorithm::HS256, None, &claims(|_| {}), &key),
        ),
        (
            "another key",
            forge(
                Algorithm::HS256,
                Some("derived-1"),
                &claims(|_| {}),
                b"not the host's key at all, 32 bytes",
            ),
        ),
        ("garbage", "abc.def.ghi".into()),
    ];
    for (attack, token) in attacks {
        let response = me(&app, &token).await;
        assert_eq!(response.status(), 401, "{attack} must be refused");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(challenge.contains("invalid_token"), "{attack}: {challenge}");
        problem(response, 401).await;
    }
}

#[tokio::test]
async fn a_revoked_session_is_refused_on_the_next_request() {
    let app = app_with("").await;
    let (first, second) = (
        mint(&app, "user-1", "s-1").await,
        mint(&app, "user-1", "s-2").await,
    );
    assert_eq!(me(&app, &first).await.status(), 200);
    let revoked = app
        .client
        .post(app.url("/vault/sessions/s-1/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let body = problem(me(&app, &first).await, 401).await;
    assert!(
        body["detail"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    assert_eq!(
        me(&app, &second).await.status(),
        200,
        "other sessions are untouched"
    );
}

#[tokio::test]
async fn revocations_reach_every_gateway_sharing_redis() {
    let config = format!("redis_prefix = \"test-{}\"", uuid::Uuid::new_v4().simple());
    let start = || {
        Spawn::new(Engine::Sqlite, vec![vault()])
            .env("TRUEVALUE_SECRET_KEY", SECRET)
            .env("TRUEVALUE_REDIS_URL", "redis://127.0.0.1:6379")
            .config(TRUSTS_VAULT)
            .config(&config)
            .start()
    };
    let (first, second) = (start().await, start().await);
    let token = mint(&first, "user-1", "s-shared").await;
    assert_eq!(
        me(&second, &token).await.status(),
        200,
        "hosts sharing the secret accept each other's tokens"
    );
    assert_eq!(
        first
            .client
            .post(first.url("/vault/sessions/s-shared/revoke"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    problem(me(&second, &token).await, 401).await;
}

#[tokio::test]
async fn authenticated_clients_are_rate_limited_per_user() {
    let app = app_with("rate_limit_per_minute = 3").await;
    let (alice, bob) = (
        mint(&app, "alice", "s-a").await,
        mint(&app, "bob", "s-b").await,
    );
    for _ in 0..3 {
        assert_eq!(me(&app, &alice).await.status(), 200);
    }
    problem(me(&app, &alice).await, 429).await;
    assert_eq!(
        me(&app, &bob).await.status(),
        200,
        "the same address, another user: another budget"
    );
}

#[tokio::test]
async fn keys_rotate_the_first_signs_and_every_listed_key_verifies() {
    let (new, old) = (
        "the new signing secret, 32 chars or more",
        "the old signing secret, 32 chars or more",
    );
    let app = app_with(&format!(
        "token_keys = [{{ kid = \"k2\", secret = {new:?} }}, {{ kid = \"k1\", secret = {old:?} }}]"
    ))
    .await;
    let minted = mint(&app, "user-1", "s-1").await;
    assert_eq!(
        jsonwebtoken::decode_header(&minted).unwrap().kid.as_deref(),
        Some("k2")
    );
    let from_old_key = forge(
        Algorithm::HS256,
        Some("k1"),
        &claims(|_| {}),
        old.as_bytes(),
    );
    assert_eq!(
        me(&app, &from_old_key).await.status(),
        200,
        "tokens of the previous key still work"
    );
    let wrong_pairing = forge(
        Algorithm::HS256,
        Some("k2"),
        &claims(|_| {}),
        old.as_bytes(),
    );
    problem(me(&app, &wrong_pairing).await, 401).await;
}
