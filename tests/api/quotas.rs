//! What a component can make the host keep for it is bounded: its cache quota, the host's own
//! security state out of its reach, its log volume, its response headers. Through the `hog`
//! fixture, which uses every grant to the full, next to the `vault` fixture.

use serde_json::{Value, json};

use crate::auth::TRUSTS_VAULT;
use crate::helpers::{Engine, Policy, Spawn, TestApp, mint_token, problem};

const REDIS: &str = "redis://127.0.0.1:6379";

fn vault() -> Policy {
    Policy::with_routes(
        "vault",
        "vault",
        "routes = [\"/vault\", \"/private\"]\npublic_routes = [\"/vault\"]",
        "capabilities = [\"cache\", \"crypto\", \"tokens\"]",
    )
}

/// The hog with these extra `[limits]` lines.
fn hog(limits: &str) -> Policy {
    Policy::new(
        "hog",
        "hog",
        "hog",
        &format!("capabilities = [\"cache\", \"log\"]\n[limits]\ntimeout_ms = 60000\n{limits}"),
    )
}

fn spawn(limits: &str) -> Spawn {
    Spawn::new(Engine::Sqlite, vec![vault(), hog(limits)]).config(TRUSTS_VAULT)
}

fn with_redis(spawn: Spawn, prefix: &str) -> Spawn {
    spawn
        .config(&format!("redis_prefix = {prefix:?}"))
        .env("TRUEVALUE_REDIS_URL", REDIS)
}

fn redis_prefix() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis is not reachable at {REDIS} ({e}); start it (`redis-server --daemonize yes`)"
            )
        })
}

async fn mint(app: &TestApp, session: &str) -> String {
    let claims =
        json!({ "user_id": "user-1", "email": "user-1@example.com", "session_id": session });
    mint_token(app, &claims).await
}

async fn me(app: &TestApp, token: &str) -> u16 {
    app.client
        .get(app.url("/private/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn revoke(app: &TestApp, session: &str) {
    let response = app
        .client
        .post(app.url(&format!("/vault/sessions/{session}/revoke")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

/// Revokes `count` sessions; returns their tokens, each refused now.
async fn revoked_tokens(app: &TestApp, count: usize) -> Vec<String> {
    let mut tokens = Vec::new();
    for i in 0..count {
        let token = mint(app, &format!("s-{i}")).await;
        revoke(app, &format!("s-{i}")).await;
        let refused = app
            .client
            .get(app.url("/private/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let body = problem(refused, 401).await;
        assert!(
            body["detail"].as_str().unwrap().contains("revoked"),
            "{body}"
        );
        tokens.push(token);
    }
    tokens
}

/// The hog writes `count` keys `<prefix>-<i>` of `size` bytes; how many were stored, and why
/// it stopped if it did.
async fn fill(
    app: &TestApp,
    prefix: &str,
    count: u64,
    size: u64,
    ttl_ms: Option<u64>,
) -> (u64, Option<String>) {
    let ttl = ttl_ms.map(|t| format!("&ttl_ms={t}")).unwrap_or_default();
    let response = app
        .client
        .post(app.url(&format!(
            "/hog/fill/{prefix}?count={count}&size={size}{ttl}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    (
        body["written"].as_u64().unwrap(),
        body["refused"].as_str().map(str::to_string),
    )
}

async fn vault_put(app: &TestApp, key: &str, value: &str) -> reqwest::Response {
    app.client
        .put(app.url(&format!("/vault/cache/{key}")))
        .body(value.to_string())
        .send()
        .await
        .unwrap()
}

async fn vault_get(app: &TestApp, key: &str) -> Option<String> {
    let response = app.get(&format!("/vault/cache/{key}")).await;
    match response.status().as_u16() {
        200 => response.json::<Value>().await.unwrap()["value"]
            .as_str()
            .map(str::to_string),
        404 => None,
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn filling_the_in_memory_cache_far_past_100000_keys_evicts_no_revocation_and_no_other_component()
 {
    let app = spawn("cache_max_entries = 1000000").start().await;
    let revoked = revoked_tokens(&app, 5).await;
    let live = mint(&app, "still-fine").await;
    assert_eq!(vault_put(&app, "kept", "mine").await.status(), 204);

    for round in 0..3 {
        let (written, refused) = fill(&app, &format!("r{round}"), 100_000, 1, None).await;
        assert_eq!((written, refused), (100_000, None));
    }

    for token in &revoked {
        assert_eq!(
            me(&app, token).await,
            401,
            "a revoked session stays revoked"
        );
    }
    assert_eq!(me(&app, &live).await, 200);
    assert_eq!(
        vault_get(&app, "kept").await.as_deref(),
        Some("mine"),
        "another component's entry is never evicted for the hog"
    );
}

/// The hog hits its entry quota and its byte quota exactly; the vault's cache keeps working.
async fn quotas_hold(app: &TestApp) {
    assert_eq!(vault_put(app, "before", "v").await.status(), 204);

    let (written, refused) = fill(app, "e", 5000, 1, None).await;
    assert_eq!(written, 1000, "cache_max_entries = 1000");
    let refused = refused.expect("refused past the quota");
    assert!(refused.contains("quota"), "{refused}");

    assert_eq!(vault_put(app, "after", "v").await.status(), 204);
    assert_eq!(vault_get(app, "before").await.as_deref(), Some("v"));
    assert_eq!(vault_get(app, "after").await.as_deref(), Some("v"));
}

/// With `cache_max_bytes = 100000`, values of 1000 bytes under keys `b-<i>`: exactly as many
/// as fit, counting key and value bytes.
async fn byte_quota_holds(app: &TestApp) {
    let (mut used, mut fit) = (0, 0);
    while used + format!("b-{fit}").len() + 1000 <= 100_000 {
        used += format!("b-{fit}").len() + 1000;
        fit += 1;
    }
    let (written, refused) = fill(app, "b", 1000, 1000, None).await;
    assert_eq!(written, fit as u64);
    assert!(refused.unwrap().contains("quota"));
}

#[tokio::test]
async fn a_component_past_its_in_memory_quota_is_refused_and_others_keep_working() {
    let app = spawn("cache_max_entries = 1000").start().await;
    let revoked = revoked_tokens(&app, 1).await;
    quotas_hold(&app).await;
    assert_eq!(me(&app, &revoked[0]).await, 401);

    let app = spawn("cache_max_bytes = 100000").start().await;
    byte_quota_holds(&app).await;
}

#[tokio::test]
async fn a_component_past_its_redis_quota_is_refused_and_cannot_touch_revocations() {
    let prefix = redis_prefix();
    let app = with_redis(spawn("cache_max_entries = 1000"), &prefix)
        .start()
        .await;
    let revoked = revoked_tokens(&app, 3).await;

    // The host's state lies under its own prefix, outside every component's namespace, and
    // lives as long as the tokens it refuses.
    let mut redis = redis().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}:host:revoked-session:s-0"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((900_000..=905_000).contains(&ttl), "ttl {ttl}");

    quotas_hold(&app).await;
    // A second host sharing the Redis sees the same books: the quota is the component's, not
    // one process's.
    let second = with_redis(spawn("cache_max_entries = 1000"), &prefix)
        .start()
        .await;
    let (written, refused) = fill(&second, "more", 10, 1, None).await;
    assert_eq!(written, 0);
    assert!(refused.unwrap().contains("quota"));
    for token in &revoked {
        assert_eq!(me(&app, token).await, 401);
        assert_eq!(me(&second, token).await, 401);
    }

    let app = with_redis(spawn("cache_max_bytes = 100000"), &redis_prefix())
        .start()
        .await;
    byte_quota_holds(&app).await;
}

#[tokio::test]
async fn redis_quota_books_follow_overwrites_and_expiry() {
    let prefix = redis_prefix();
    let app = with_redis(spawn("cache_max_entries = 3"), &prefix)
        .start()
        .await;
    assert_eq!(fill(&app, "k", 3, 1, Some(300)).await, (3, None));
    // Overwriting its own keys takes no new room.
    assert_eq!(fill(&app, "k", 3, 1, Some(300)).await, (3, None));
    assert_eq!(fill(&app, "x", 1, 1, None).await.0, 0);
    // Expired keys give their room back.
    let mut stored = 0;
    for _ in 0..50 {
        stored = fill(&app, "x", 1, 1, None).await.0;
        if stored == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(stored, 1, "room comes back once the entries expire");
    let mut redis = redis().await;
    let costs: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("{prefix}:cache-quota:hog:costs"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        costs,
        ["x-0"],
        "the books, outside the component's namespace"
    );
}

#[tokio::test]
async fn revocations_stored_by_the_previous_release_still_refuse_their_tokens() {
    let prefix = redis_prefix();
    let app = with_redis(
        Spawn::new(Engine::Sqlite, vec![vault()]).config(TRUSTS_VAULT),
        &prefix,
    )
    .start()
    .await;
    let token = mint(&app, "before-upgrade").await;
    assert_eq!(me(&app, &token).await, 200);
    // Where the previous release kept a revocation.
    let mut redis = redis().await;
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:revoked-session:before-upgrade"))
        .arg("revoked")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(me(&app, &token).await, 401);
}

#[tokio::test]
async fn an_oversized_log_flood_is_cut_and_capped_and_the_request_is_fine() {
    let app = spawn("").start().await;
    let before = app.logs().len();
    let response = app
        .client
        .post(app.url("/hog/log?bytes=1048576&times=200"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(app.get("/hog/cache/anything").await.status(), 200);

    let logs = app.logs()[before..].to_string();
    assert!(logs.contains("… [cut: "), "a cut message says so");
    assert!(
        logs.contains("further messages are dropped"),
        "a capped request says so"
    );
    // 200 MiB asked for; one request's 64 KiB (plus each line's tags) written.
    assert!(logs.len() < 100 * 1024, "{} bytes logged", logs.len());
    assert!(
        !logs.lines().any(|line| line.starts_with("line")),
        "line breaks in a message cannot start log lines"
    );
}

#[tokio::test]
async fn a_response_with_more_than_64_headers_is_refused() {
    let app = spawn("").start().await;
    assert_eq!(app.get("/hog/headers?count=64").await.status(), 204);
    problem(app.get("/hog/headers?count=65").await, 500).await;
    assert!(app.logs().contains("at most 64 headers"));
}
