//! Rate limits as a client meets them: the budget in the headers, 429 past it, and one budget
//! across gateway processes that share Redis.

use crate::helpers::{Engine, Policy, Spawn, TestApp, problem};

fn greeter() -> Policy {
    Policy::new("greeter", "greeter", "greeter", "")
}

fn header(response: &reqwest::Response, name: &str) -> Option<u64> {
    response.headers().get(name)?.to_str().ok()?.parse().ok()
}

async fn spend(app: &TestApp) -> reqwest::Response {
    app.get("/greeter").await
}

#[tokio::test]
async fn every_response_shows_the_budget_and_past_it_a_429_says_when_to_retry() {
    let app = Spawn::new(Engine::Sqlite, vec![greeter()])
        .config("rate_limit_per_minute = 5")
        .start()
        .await;
    for remaining in (0..5).rev() {
        let response = spend(&app).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-ratelimit-limit"), Some(5));
        assert_eq!(header(&response, "x-ratelimit-remaining"), Some(remaining));
    }
    let refused = spend(&app).await;
    let retry_after = header(&refused, "retry-after").expect("Retry-After");
    assert!(
        (1..=12).contains(&retry_after),
        "one request frees up every 12 s: {retry_after}"
    );
    assert_eq!(header(&refused, "x-ratelimit-remaining"), Some(0));
    problem(refused, 429).await;

    // Errors count and carry the headers too; health checks are not limited.
    assert_eq!(
        header(&app.get("/nowhere").await, "x-ratelimit-limit"),
        Some(5)
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn gateways_sharing_redis_share_one_budget_per_client() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let config = format!("rate_limit_per_minute = 5\nredis_prefix = {prefix:?}");
    let start = || {
        Spawn::new(Engine::Sqlite, vec![greeter()])
            .config(&config)
            .env("TRUEVALUE_REDIS_URL", "redis://127.0.0.1:6379")
            .start()
    };
    let (first, second) = (start().await, start().await);
    for app in [&first, &second, &first, &second, &first] {
        assert_eq!(spend(app).await.status(), 200);
    }
    problem(spend(&second).await, 429).await;
    problem(spend(&first).await, 429).await;

    // Another deployment on the same Redis (another prefix) has its own budget.
    let other = Spawn::new(Engine::Sqlite, vec![greeter()])
        .config(&format!(
            "rate_limit_per_minute = 5\nredis_prefix = \"{prefix}-other\""
        ))
        .env("TRUEVALUE_REDIS_URL", "redis://127.0.0.1:6379")
        .start()
        .await;
    assert_eq!(spend(&other).await.status(), 200);
}

const PASSWORD: &str = "correct horse battery staple";

async fn login(
    app: &TestApp,
    email: &str,
    password: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/auth/login"))
        .json(&serde_json::json!({ "email": email, "password": password }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_token_buys_no_fresh_budget_for_logins() {
    let app = Spawn::new(Engine::Sqlite, vec![crate::identity::auth_policy()])
        .config("rate_limit_per_minute = 3")
        .start()
        .await;
    let email = format!("user-{}@example.com", uuid::Uuid::new_v4().simple());
    let registered = app
        .post_json(
            "/auth/register",
            &serde_json::json!({ "email": email, "password": PASSWORD, "name": "Ada" }),
        )
        .await;
    assert_eq!(registered.status(), 201);
    let signed_in = login(&app, &email, PASSWORD, None).await;
    assert_eq!(signed_in.status(), 200);
    let token = signed_in.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        login(&app, &email, "a wrong guess", None).await.status(),
        401
    );
    problem(login(&app, &email, "another guess", None).await, 429).await;

    // The address's budget for logins is spent; a valid token does not open another.
    problem(login(&app, &email, PASSWORD, Some(&token)).await, 429).await;

    // Routes that need the token count per user: colleagues behind one address are not
    // refused because someone there guessed passwords.
    let me = app
        .client
        .get(app.url("/auth/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
}

async fn forwarded(app: &TestApp, path: &str, forwarded_for: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_buys_no_fresh_budget() {
    let app = Spawn::new(Engine::Sqlite, vec![greeter()])
        .config("rate_limit_per_minute = 2")
        .start()
        .await;
    assert_eq!(
        forwarded(&app, "/greeter", "203.0.113.1").await.status(),
        200
    );
    assert_eq!(
        forwarded(&app, "/greeter", "203.0.113.2").await.status(),
        200
    );
    problem(forwarded(&app, "/greeter", "203.0.113.3").await, 429).await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    let vault = Policy::with_routes(
        "vault",
        "vault",
        "routes = [\"/vault\", \"/private\"]\npublic_routes = [\"/vault\"]",
        "capabilities = [\"cache\", \"crypto\", \"tokens\"]",
    );
    // The tests connect from 127.0.0.1: here it plays the load balancer.
    let app = Spawn::new(Engine::Sqlite, vec![vault])
        .config(crate::auth::TRUSTS_VAULT)
        .config("rate_limit_per_minute = 2\ntrusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]")
        .start()
        .await;
    let client = "203.0.113.7";
    assert_eq!(forwarded(&app, "/vault/random", client).await.status(), 200);
    assert_eq!(forwarded(&app, "/vault/random", client).await.status(), 200);
    problem(forwarded(&app, "/vault/random", client).await, 429).await;
    // What the client writes itself stands left of what the proxies append: ignored.
    let spoofed = format!("198.51.100.1, {client}, 10.0.0.2");
    problem(forwarded(&app, "/vault/random", &spoofed).await, 429).await;

    // Another client behind the same proxy has its own budget, and components see its address.
    let other = "203.0.113.8";
    let minted = app
        .client
        .post(app.url("/vault/tokens"))
        .header("x-forwarded-for", other)
        .json(&serde_json::json!({ "user_id": "user-1", "session_id": "s-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 200);
    let token = minted.json::<serde_json::Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let me = app
        .client
        .get(app.url("/private/me"))
        .header("x-forwarded-for", other)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(
        me.json::<serde_json::Value>().await.unwrap()["client_ip"],
        other
    );
}
