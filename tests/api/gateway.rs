//! The gateway as a client meets it: request ids, problems, body limits, operations endpoints.

use serde_json::json;

use crate::helpers::{Engine, HOSTILE_LIMITS, Policy, Spawn, TestApp, problem};

async fn app() -> TestApp {
    let hello = Policy::new(
        "hello",
        "hello",
        "hello",
        "capabilities = [\"database\", \"config\"]\n[config]\ngreeting = \"Welcome\"",
    );
    Spawn::new(Engine::Sqlite, vec![hello])
        .config("body_limit_bytes = 1024")
        .start()
        .await
}

#[tokio::test]
async fn a_component_serves_its_route_with_its_policy_config() {
    let app = app().await;
    let response = app.get("/hello?name=Ada").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["message"], "Welcome, Ada!");
}

#[tokio::test]
async fn a_sane_request_id_is_echoed_and_any_other_replaced() {
    let app = app().await;
    let sent = app
        .client
        .get(app.url("/hello"))
        .header("x-request-id", "client-id-42")
        .send()
        .await
        .unwrap();
    assert_eq!(sent.headers()["x-request-id"], "client-id-42");

    let insane = app
        .client
        .get(app.url("/hello"))
        .header("x-request-id", "a b <script>")
        .send()
        .await
        .unwrap();
    let replaced = insane.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(replaced, "a b <script>");
    assert!(
        uuid::Uuid::parse_str(&replaced).is_ok(),
        "a fresh UUID: {replaced}"
    );

    let none = app.get("/nowhere").await;
    assert!(
        none.headers().contains_key("x-request-id"),
        "errors carry one too"
    );
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = app().await;
    let body = problem(app.get("/nowhere/at/all").await, 404).await;
    assert!(body["detail"].as_str().unwrap().contains("/nowhere/at/all"));
    // A prefix only matches whole segments.
    problem(app.get("/hellothere").await, 404).await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem_and_changes_nothing() {
    let app = app().await;
    let big = json!({ "name": "x", "message": "m".repeat(2000) });
    let refused = app.post_json("/hello/guestbook", &big).await;
    assert_eq!(
        refused.headers()["connection"],
        "close",
        "the unread body ends the connection"
    );
    problem(refused, 413).await;

    // Without a Content-Length, streamed: the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..4).map(|_| Ok(vec![b'a'; 512])).collect();
    let streamed = app
        .client
        .post(app.url("/hello/guestbook"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    problem(streamed, 413).await;

    let list: serde_json::Value = app.get("/hello/guestbook").await.json().await.unwrap();
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn bad_input_is_a_4xx_problem_that_says_why() {
    let app = app().await;
    let response = app
        .client
        .post(app.url("/hello/guestbook"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    let body = problem(response, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("JSON"));
    let body = problem(
        app.post_json("/hello/guestbook", &json!({ "name": 7 }))
            .await,
        422,
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("string"),
        "{body}"
    );
    problem(
        app.post_json("/hello/guestbook", &json!({ "name": " ", "message": "" }))
            .await,
        422,
    )
    .await;
    problem(
        app.client
            .delete(app.url("/hello/guestbook"))
            .send()
            .await
            .unwrap(),
        405,
    )
    .await;
}

#[tokio::test]
async fn healthz_and_readyz_answer_on_the_embedded_default() {
    let app = app().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let ready: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["database"], "ok");
}

#[tokio::test]
async fn readyz_checks_a_configured_redis() {
    let greeter = Policy::new("greeter", "greeter", "greeter", "");
    let app = Spawn::new(Engine::Sqlite, vec![greeter])
        .env("TRUEVALUE_REDIS_URL", "redis://127.0.0.1:6379")
        .start()
        .await;
    let response = app.get("/readyz").await;
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["checks"]["cache"], "ok",
        "Redis must run at 127.0.0.1:6379 for this test: {body}"
    );
}

#[tokio::test]
async fn readyz_is_a_503_when_a_configured_backend_is_down() {
    let greeter = Policy::new("greeter", "greeter", "greeter", "");
    // Nothing listens on port 1 of loopback.
    let app = Spawn::new(Engine::Sqlite, vec![greeter])
        .env("TRUEVALUE_REDIS_URL", "redis://127.0.0.1:1")
        .env("TRUEVALUE_KAFKA_BROKERS", "127.0.0.1:1")
        .start()
        .await;
    let response = app.get("/readyz").await;
    assert!(response.headers().contains_key("retry-after"));
    let body = problem(response, 503).await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("cache") && detail.contains("broker"),
        "{detail}"
    );
    assert_eq!(app.get("/healthz").await.status(), 200, "still alive");
}

#[tokio::test]
async fn metrics_count_requests_latency_instances_and_traps() {
    let hostile = Policy::new("hostile", "hostile", "hostile", HOSTILE_LIMITS);
    let app = Spawn::new(Engine::Sqlite, vec![hostile]).start().await;
    assert_eq!(app.get("/hostile/counter").await.status(), 200);
    assert_eq!(app.get("/hostile/trap").await.status(), 500);

    let text = app.metrics().await;
    assert!(
        text.contains(r#"truevalue_requests_total{component="hostile",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"truevalue_requests_total{component="hostile",status="500"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"truevalue_request_duration_seconds_bucket{component="hostile",le="+Inf"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"truevalue_instances_live{component="hostile"} 0"#),
        "{text}"
    );
    assert!(
        text.contains(r#"truevalue_component_traps_total{component="hostile",kind="trap"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn browsers_on_configured_origins_get_cors_and_others_do_not() {
    let greeter = Policy::new("greeter", "greeter", "greeter", "");
    let app = Spawn::new(Engine::Sqlite, vec![greeter])
        .config("cors_origins = [\"https://app.example.com\"]")
        .start()
        .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/greeter"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let methods = allowed.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(methods.contains("POST"), "{methods}");

    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );

    let simple = app
        .client
        .get(app.url("/greeter"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        simple.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = simple.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        exposed.contains("x-request-id") && exposed.contains("x-ratelimit-remaining"),
        "{exposed}"
    );
}

#[tokio::test]
async fn an_invalid_cors_origin_stops_start_up() {
    let greeter = Policy::new("greeter", "greeter", "greeter", "");
    let stderr = Spawn::new(Engine::Sqlite, vec![greeter])
        .config("cors_origins = [\"app.example.com/path\"]")
        .start_refused()
        .await;
    assert!(stderr.contains("cors_origins"), "{stderr}");
}

/// The headers that carry the verified context between gateway and node are the host's alone:
/// in the default role a component never sees a client's values of them.
#[tokio::test]
async fn a_component_never_sees_context_headers_a_client_sent() {
    let vault = Policy::new(
        "vault",
        "vault",
        "vault",
        "capabilities = [\"cache\", \"crypto\", \"tokens\"]",
    );
    let app = Spawn::new(Engine::Sqlite, vec![vault])
        .config(crate::auth::TRUSTS_VAULT)
        .start()
        .await;
    let forged = [
        ("x-user-id", "admin"),
        ("x-org-id", "org-1"),
        ("X-User-Roles", "owner"),
        ("x-user-permissions", "*"),
        ("x-session-id", "s-1"),
        ("x-client-ip", "10.0.0.1"),
        ("x-gateway-signature", "00"),
        ("x-gateway-timestamp", "1"),
        ("X-Gateway-Anything", "yes"),
    ];
    let names: Vec<&str> = forged.iter().map(|(name, _)| *name).collect();
    let mut request = app.client.get(app.url(&format!(
        "/vault/headers?names={},x-custom",
        names.join(",")
    )));
    for (name, value) in forged {
        request = request.header(name, value);
    }
    let response = request.header("x-custom", "kept").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(seen["headers"], json!({ "x-custom": "kept" }), "{seen}");
}
