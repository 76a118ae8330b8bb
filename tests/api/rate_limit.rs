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

    // Errors count and carry the headers too; operations endpoints are not limited.
    assert_eq!(
        header(&app.get("/nowhere").await, "x-ratelimit-limit"),
        Some(5)
    );
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/metrics").await.status(), 200);
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
