//! Test fixture: exposes the `cache` and `crypto` capabilities over HTTP, so tests can check
//! what a component can do with them (and that keys stay in the host).

use serde_json::json;
use truevalue_sdk::bindings::truevalue::platform::{cache, crypto, tokens};
use truevalue_sdk::prelude::*;

struct Vault;

fn cache_error(error: cache::Error) -> Problem {
    match error {
        cache::Error::Invalid(m) => Problem::unprocessable(m),
        cache::Error::Unavailable(m) => Problem::new(503, "unavailable", "Cache unavailable", m),
    }
}

fn ttl(request: &Request) -> Option<u64> {
    request.query("ttl_ms").and_then(|v| v.parse().ok())
}

impl App for Vault {
    fn router() -> Router {
        Router::new()
            .get("/vault/cache/{key}", |r| {
                let value = cache::get(r.param("key")?).map_err(cache_error)?;
                match value {
                    Some(bytes) => {
                        Response::json(200, &json!({ "value": String::from_utf8_lossy(&bytes) }))
                    }
                    None => Err(Problem::not_found("no such key")),
                }
            })
            .put("/vault/cache/{key}", |r| {
                cache::set(r.param("key")?, r.body(), ttl(r)).map_err(cache_error)?;
                Ok(Response::no_content())
            })
            .post("/vault/once/{key}", |r| {
                let stored =
                    cache::set_if_absent(r.param("key")?, b"used", ttl(r)).map_err(cache_error)?;
                Response::json(200, &json!({ "first": stored }))
            })
            .delete("/vault/cache/{key}", |r| {
                let removed = cache::delete(r.param("key")?).map_err(cache_error)?;
                Response::json(200, &json!({ "removed": removed }))
            })
            .post("/vault/count/{key}", |r| {
                let value = cache::increment(r.param("key")?, 1, ttl(r)).map_err(cache_error)?;
                Response::json(200, &json!({ "value": value }))
            })
            .post("/vault/password/hash", |r| {
                let hash = crypto::hash_password(&String::from_utf8_lossy(r.body()));
                Response::json(200, &json!({ "hash": hash }))
            })
            .post("/vault/password/verify", |r| {
                let body: serde_json::Value = r.json()?;
                let (password, hash) = (
                    body["password"].as_str().unwrap_or(""),
                    body["hash"].as_str().unwrap_or(""),
                );
                Response::json(
                    200,
                    &json!({ "valid": crypto::verify_password(password, hash) }),
                )
            })
            .get("/vault/random", |_| {
                let (a, b) = (crypto::random_bytes(32), crypto::random_bytes(32));
                Response::json(200, &json!({ "a": hex(&a), "b": hex(&b), "len": a.len() }))
            })
            .post("/vault/hmac", |r| {
                Response::json(200, &json!({ "hmac": hex(&crypto::hmac_sha256(r.body())) }))
            })
            .post("/vault/tokens", |r| {
                // Test only: mints a token for whatever claims the body names.
                let body: serde_json::Value = r.json()?;
                let list = |name: &str| -> Vec<String> {
                    body[name].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default()
                };
                let text = |name: &str| body[name].as_str().map(String::from);
                let token = tokens::mint_access(&tokens::Claims {
                    user_id: text("user_id").unwrap_or_default(),
                    email: text("email").unwrap_or_default(),
                    org_id: text("org_id"),
                    org_slug: text("org_slug"),
                    org_name: text("org_name"),
                    roles: list("roles"),
                    permissions: list("permissions"),
                    plan: text("plan"),
                    session_id: text("session_id").unwrap_or_default(),
                });
                Response::json(200, &json!({ "token": token.token, "expires_in": token.expires_in }))
            })
            .post("/vault/sessions/{id}/revoke", |r| {
                tokens::revoke_session(r.param("id")?).map_err(Problem::internal)?;
                Ok(Response::no_content())
            })
            .get("/vault/headers", echo_headers)
            .post("/vault/headers", echo_headers)
            .get("/private/me", |r| {
                let c = r.context();
                Response::json(200, &json!({
                    "user_id": c.user_id, "org_id": c.org_id, "roles": c.roles, "permissions": c.permissions,
                    "session_id": c.session_id, "client_ip": c.client_ip,
                }))
            })
            .post("/vault/equal", |r| {
                let body: serde_json::Value = r.json()?;
                let (a, b) = (
                    body["a"].as_str().unwrap_or(""),
                    body["b"].as_str().unwrap_or(""),
                );
                Response::json(
                    200,
                    &json!({ "equal": crypto::constant_time_equal(a.as_bytes(), b.as_bytes()) }),
                )
            })
    }
}

/// Test only: the request headers named in `?names=a,b`, as the component received them.
fn echo_headers(r: &Request) -> Result<Response, Problem> {
    let names = r.query("names").unwrap_or_default();
    let seen: serde_json::Map<String, serde_json::Value> = names
        .split(',')
        .filter_map(|name| Some((name.to_string(), json!(r.header(name)?))))
        .collect();
    Response::json(200, &json!({ "headers": seen }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

truevalue_sdk::component!(Vault);
