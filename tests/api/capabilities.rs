//! The `cache` and `crypto` capabilities as a component uses them, through the `vault` fixture.

use std::time::Duration;

use hmac::Mac;
use serde_json::{Value, json};

use crate::auth::TRUSTS_VAULT;
use crate::helpers::{Engine, Spawn, TestApp, problem, vault};

async fn with_redis(prefix: &str) -> TestApp {
    Spawn::new(Engine::Sqlite, vec![vault()])
        .config(TRUSTS_VAULT)
        .config(&format!("redis_prefix = {prefix:?}"))
        .env("TRUEVALUE_REDIS_URL", "redis://127.0.0.1:6379")
        .start()
        .await
}

async fn put(app: &TestApp, key: &str, value: &str, ttl_ms: Option<u64>) {
    let query = ttl_ms.map(|t| format!("?ttl_ms={t}")).unwrap_or_default();
    let response = app
        .client
        .put(app.url(&format!("/vault/cache/{key}{query}")))
        .body(value.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
}

async fn get(app: &TestApp, key: &str) -> Option<String> {
    let response = app.get(&format!("/vault/cache/{key}")).await;
    match response.status().as_u16() {
        200 => Some(
            response.json::<Value>().await.unwrap()["value"]
                .as_str()
                .unwrap()
                .to_string(),
        ),
        404 => None,
        other => panic!("unexpected {other}"),
    }
}

async fn post(app: &TestApp, path: &str) -> Value {
    let response = app.client.post(app.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// What every cache backend must do for a component.
async fn cache_semantics(app: &TestApp) {
    put(app, "greeting", "hello", None).await;
    assert_eq!(
        get(app, "greeting").await.as_deref(),
        Some("hello"),
        "kept across requests and instances"
    );

    put(app, "brief", "soon gone", Some(300)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get(app, "brief").await, None, "expired");

    assert_eq!(post(app, "/vault/once/code-123456").await["first"], true);
    assert_eq!(
        post(app, "/vault/once/code-123456").await["first"],
        false,
        "a once-only marker holds"
    );

    for expected in 1..=3 {
        assert_eq!(
            post(app, "/vault/count/failures?ttl_ms=60000").await["value"],
            expected
        );
    }
    let removed = app
        .client
        .delete(app.url("/vault/cache/greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.json::<Value>().await.unwrap()["removed"], true);
    assert_eq!(get(app, "greeting").await, None);

    let long_key = "k".repeat(600);
    let refused = app
        .client
        .put(app.url(&format!("/vault/cache/{long_key}")))
        .body("x")
        .send()
        .await
        .unwrap();
    problem(refused, 422).await;
}

#[tokio::test]
async fn the_in_memory_cache_keeps_expires_and_counts() {
    let app = Spawn::new(Engine::Sqlite, vec![vault()])
        .config(TRUSTS_VAULT)
        .start()
        .await;
    cache_semantics(&app).await;
}

#[tokio::test]
async fn the_redis_cache_behaves_the_same_is_namespaced_and_shared_by_hosts() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let app = with_redis(&prefix).await;
    cache_semantics(&app).await;

    // In Redis the component's keys sit under the deployment prefix and its own namespace;
    // another component's key under the same name is invisible to it.
    let redis = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    put(&app, "shared", "from vault", None).await;
    let stored: Option<String> = redis::cmd("GET")
        .arg(format!("{prefix}:cache:vault:shared"))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("from vault"));
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:cache:other:secret"))
        .arg("x")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(get(&app, "secret").await, None);

    let second_host = with_redis(&prefix).await;
    assert_eq!(
        get(&second_host, "shared").await.as_deref(),
        Some("from vault"),
        "every host sees it"
    );
}

#[tokio::test]
async fn passwords_are_hashed_with_argon2id_owasp_parameters_and_verified() {
    let app = Spawn::new(Engine::Sqlite, vec![vault()])
        .config(TRUSTS_VAULT)
        .start()
        .await;
    let response = app
        .client
        .post(app.url("/vault/password/hash"))
        .body("correct horse battery staple")
        .send()
        .await
        .unwrap();
    let hash = response.json::<Value>().await.unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );

    let verify = |password: &'static str, hash: String| {
        app.client
            .post(app.url("/vault/password/verify"))
            .json(&json!({ "password": password, "hash": hash }))
            .send()
    };
    let valid =
        |r: reqwest::Response| async move { r.json::<Value>().await.unwrap()["valid"].clone() };
    assert_eq!(
        valid(
            verify("correct horse battery staple", hash.clone())
                .await
                .unwrap()
        )
        .await,
        true
    );
    assert_eq!(
        valid(
            verify("Correct horse battery staple", hash.clone())
                .await
                .unwrap()
        )
        .await,
        false
    );
    assert_eq!(
        valid(verify("anything", "not a phc string".into()).await.unwrap()).await,
        false
    );
}

#[tokio::test]
async fn hmacs_use_a_per_component_key_derived_from_the_host_secret() {
    let secret = "a deployment secret of at least thirty-two characters";
    let app = Spawn::new(Engine::Sqlite, vec![vault()])
        .config(TRUSTS_VAULT)
        .env("TRUEVALUE_SECRET_KEY", secret)
        .start()
        .await;
    let response = app
        .client
        .post(app.url("/vault/hmac"))
        .body("refresh-token-abc")
        .send()
        .await
        .unwrap();
    let hmac = response.json::<Value>().await.unwrap()["hmac"]
        .as_str()
        .unwrap()
        .to_string();

    let mut derive = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    derive.update(b"component key:vault");
    let key = derive.finalize().into_bytes();
    let mut expected = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    expected.update(b"refresh-token-abc");
    assert_eq!(hmac, hex::encode(expected.finalize().into_bytes()));
    assert!(!app.logs().contains(secret), "the secret is never logged");
}

#[tokio::test]
async fn a_generated_host_secret_survives_restarts() {
    let mut app = Spawn::new(Engine::Sqlite, vec![vault()])
        .config(TRUSTS_VAULT)
        .start()
        .await;
    let hmac = |app: &TestApp| {
        let request = app.client.post(app.url("/vault/hmac")).body("data");
        async move { request.send().await.unwrap().json::<Value>().await.unwrap()["hmac"].clone() }
    };
    let before = hmac(&app).await;
    app.crash_and_restart().await;
    assert_eq!(hmac(&app).await, before);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(app.data_dir.join("secret-key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn random_bytes_and_constant_time_comparison() {
    let app = Spawn::new(Engine::Sqlite, vec![vault()])
        .config(TRUSTS_VAULT)
        .start()
        .await;
    let random: Value = app.get("/vault/random").await.json().await.unwrap();
    assert_eq!(random["len"], 32);
    assert_ne!(random["a"], random["b"]);
    let equal = |a: &str, b: &str| {
        let request = app
            .client
            .post(app.url("/vault/equal"))
            .json(&json!({ "a": a, "b": b }))
            .send();
        async move { request.await.unwrap().json::<Value>().await.unwrap()["equal"].clone() }
    };
    assert_eq!(equal("same", "same").await, true);
    assert_eq!(equal("same", "sane").await, false);
    assert_eq!(equal("same", "same!").await, false);
}

#[tokio::test]
async fn oversized_passwords_claims_and_session_ids_are_refused_with_a_clear_reason() {
    let app = Spawn::new(Engine::Sqlite, vec![vault()])
        .config(TRUSTS_VAULT)
        .start()
        .await;
    let hash = |password: String| {
        app.client
            .post(app.url("/vault/password/hash"))
            .body(password)
            .send()
    };
    assert_eq!(hash("p".repeat(4096)).await.unwrap().status(), 200);
    problem(hash("p".repeat(4097)).await.unwrap(), 500).await;
    assert!(
        app.logs().contains("at most 4096 bytes"),
        "the log says why"
    );

    let verify = app
        .post_json(
            "/vault/password/verify",
            &json!({ "password": "p".repeat(5000), "hash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA" }),
        )
        .await;
    assert_eq!(verify.json::<Value>().await.unwrap()["valid"], false);

    let claims = |email: String| json!({ "user_id": "u", "email": email, "session_id": "s" });
    assert_eq!(
        app.post_json("/vault/tokens", &claims("a@example.com".into()))
            .await
            .status(),
        200
    );
    problem(
        app.post_json("/vault/tokens", &claims("e".repeat(9000)))
            .await,
        500,
    )
    .await;
    assert!(app.logs().contains("at most 8192"), "the log says why");

    let revoke = |id: String| {
        app.client
            .post(app.url(&format!("/vault/sessions/{id}/revoke")))
            .send()
    };
    assert_eq!(revoke("s".repeat(256)).await.unwrap().status(), 204);
    problem(revoke("s".repeat(257)).await.unwrap(), 500).await;
}
