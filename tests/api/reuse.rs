//! Instance reuse (`limits.instance_reuse`): by default every request gets a fresh instance;
//! a policy may let an instance serve several requests, but only of one organization (or one
//! user in none, or anonymous requests), and an
//! instance that failed or belongs to a replaced version never serves again.

use serde_json::{Value, json};

use crate::auth::TRUSTS_VAULT;
use crate::helpers::{Engine, Policy, Spawn, TestApp, mint_token, vault};

fn greeter(reuse: u32) -> Policy {
    Policy::new(
        "greeter",
        "greeter",
        "greeter",
        &format!("[limits]\ninstance_reuse = {reuse}"),
    )
}

async fn start(reuse: u32) -> TestApp {
    Spawn::new(Engine::Sqlite, vec![greeter(reuse), vault()])
        .config(TRUSTS_VAULT)
        .start()
        .await
}

/// A token of a member of `org`, or of a user in no organization.
async fn token(app: &TestApp, org: Option<&str>) -> String {
    let name = org.unwrap_or("nobody");
    let claims = json!({
        "user_id": format!("user-of-{name}"), "email": "a@example.com", "org_id": org,
        "org_slug": org, "org_name": org, "roles": ["member"], "permissions": [],
        "plan": "free", "session_id": format!("s-{name}"),
    });
    mint_token(app, &claims).await
}

/// How many requests the instance that answered has served, this one included.
async fn served(app: &TestApp, token: Option<&str>, query: &str) -> (u16, u64) {
    let mut request = app.client.get(app.url(&format!("/greeter/served{query}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if status >= 500 {
        return (status, 0);
    }
    let body: Value = response.json().await.unwrap();
    (status, body["served"].as_u64().unwrap())
}

#[tokio::test]
async fn every_request_gets_a_fresh_instance_by_default() {
    let app = start(1).await;
    for _ in 0..3 {
        assert_eq!(served(&app, None, "").await, (200, 1));
    }
}

/// How many pages written by an earlier request the answering instance still sees written.
async fn pages_seen(app: &TestApp) -> u64 {
    let body: Value = app.get("/greeter/scatter").await.json().await.unwrap();
    body["seen"].as_u64().unwrap()
}

#[tokio::test]
async fn a_fresh_instance_sees_nothing_the_one_before_it_wrote_however_scattered() {
    // 104 pages, each a separate run: the host resets what an instance wrote in place, and
    // must reach every run, in the memory image and beyond it, or leave it to be faulted in
    // anew — never hand a written page to the next instance.
    let fresh = start(1).await;
    for _ in 0..20 {
        assert_eq!(pages_seen(&fresh).await, 0);
    }
    // The probe sees them when the instance is the same one.
    let kept = start(2).await;
    assert_eq!(pages_seen(&kept).await, 0);
    assert_eq!(pages_seen(&kept).await, 104);
    assert_eq!(
        pages_seen(&kept).await,
        0,
        "a new instance after two requests"
    );
}

#[tokio::test]
async fn a_kept_instance_serves_up_to_its_limit_and_only_its_organization() {
    let app = start(3).await;
    let (acme, globex) = (
        token(&app, Some("acme")).await,
        token(&app, Some("globex")).await,
    );
    let loner = token(&app, None).await;

    // Anonymous requests share one instance, three requests at most.
    let anonymous: Vec<u64> = in_order(&app, None, 4).await;
    assert_eq!(anonymous, [1, 2, 3, 1]);

    // Each organization has instances of its own: what one left in memory, no other sees.
    assert_eq!(served(&app, Some(&acme), "").await, (200, 1));
    assert_eq!(served(&app, Some(&acme), "").await, (200, 2));
    assert_eq!(served(&app, Some(&globex), "").await, (200, 1));
    assert_eq!(served(&app, None, "").await, (200, 2));
    assert_eq!(served(&app, Some(&acme), "").await, (200, 3));
    assert_eq!(served(&app, Some(&globex), "").await, (200, 2));

    // A signed-in user in no organization is a group of their own, apart from anonymous ones.
    assert_eq!(served(&app, Some(&loner), "").await, (200, 1));
    assert_eq!(served(&app, None, "").await, (200, 3));
}

#[tokio::test]
async fn an_instance_that_failed_or_was_replaced_is_not_used_again() {
    let app = start(100).await;
    assert_eq!(served(&app, None, "").await, (200, 1));
    assert_eq!(served(&app, None, "").await, (200, 2));
    // A 5xx answer rolls back, and its instance is discarded.
    assert_eq!(served(&app, None, "?fail").await.0, 500);
    assert_eq!(served(&app, None, "").await, (200, 1));
    assert_eq!(served(&app, None, "").await, (200, 2));

    // The idle instance is in the metrics until a deploy discards it.
    let kept = r#"truevalue_instances_kept{component="greeter"} "#;
    assert!(app.metrics().await.contains(&format!("{kept}1")));

    // A deploy: the next request runs the new version on a fresh instance.
    assert_eq!(app.deploy("greeter", "greeter_v2").await.status(), 200);
    assert!(app.metrics().await.contains(&format!("{kept}0")));
    let body: Value = app.get("/greeter/served").await.json().await.unwrap();
    assert_eq!(
        (body["version"].as_str(), body["served"].as_u64()),
        (Some("v2"), Some(1))
    );
}

#[tokio::test]
async fn a_policy_with_instance_reuse_zero_is_refused() {
    let refused = Spawn::new(Engine::Sqlite, vec![greeter(0)])
        .start_refused()
        .await;
    assert!(
        refused.contains("limits.instance_reuse must be between 1"),
        "{refused}"
    );
}

/// `n` anonymous requests, one after the other.
async fn in_order(app: &TestApp, token: Option<&str>, n: usize) -> Vec<u64> {
    let mut counts = Vec::new();
    for _ in 0..n {
        let (status, count) = served(app, token, "").await;
        assert_eq!(status, 200);
        counts.push(count);
    }
    counts
}

#[tokio::test]
async fn a_kept_instance_left_idle_is_freed() {
    let app = Spawn::new(Engine::Sqlite, vec![greeter(100)])
        .config("kept_idle_ms = 300")
        .start()
        .await;
    assert_eq!(served(&app, None, "").await, (200, 1));
    let kept = r#"truevalue_instances_kept{component="greeter"} "#;
    assert!(app.metrics().await.contains(&format!("{kept}1")));
    // Freed once idle past `kept_idle_ms`: the next request starts on a fresh instance.
    let mut freed = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if app.metrics().await.contains(&format!("{kept}0")) {
            freed = true;
            break;
        }
    }
    assert!(freed, "the idle instance was never freed");
    assert_eq!(served(&app, None, "").await, (200, 1));
}

#[tokio::test]
async fn a_config_with_kept_idle_ms_out_of_range_is_refused() {
    let refused = Spawn::new(Engine::Sqlite, vec![greeter(2)])
        .config("kept_idle_ms = 0")
        .start_refused()
        .await;
    assert!(
        refused.contains("kept_idle_ms must be between 100 and 3600000"),
        "{refused}"
    );
}

/// The greeter with its next instance made ahead (`limits.prestart`).
fn greeter_made_ahead(reuse: u32) -> Policy {
    Policy::new(
        "greeter",
        "greeter",
        "greeter",
        &format!("[limits]\ninstance_reuse = {reuse}\nprestart = true"),
    )
}

/// Whether `truevalue_instances_kept` of the greeter reads `n` within a few seconds.
async fn kept_reads(app: &TestApp, n: u32) -> bool {
    let kept = format!("truevalue_instances_kept{{component=\"greeter\"}} {n}\n");
    for _ in 0..50 {
        if app.metrics().await.contains(&kept) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn an_instance_made_ahead_has_served_no_one_and_serves_one_request() {
    let app = Spawn::new(Engine::Sqlite, vec![greeter_made_ahead(1)])
        .start()
        .await;
    assert_eq!(served(&app, None, "").await, (200, 1));
    // The next request's instance waits, made ahead.
    assert!(kept_reads(&app, 1).await, "no instance was made ahead");
    for _ in 0..10 {
        // Each request runs on an instance that served no one and sees nothing its
        // predecessor wrote, as with a fresh instance.
        assert_eq!(served(&app, None, "").await, (200, 1));
        assert_eq!(pages_seen(&app).await, 0);
    }
    // A deploy discards the one made for the version it replaces.
    assert_eq!(app.deploy("greeter", "greeter_v2").await.status(), 200);
    let body: Value = app.get("/greeter/served").await.json().await.unwrap();
    assert_eq!(
        (body["version"].as_str(), body["served"].as_u64()),
        (Some("v2"), Some(1))
    );
    assert!(
        kept_reads(&app, 1).await,
        "no instance of v2 was made ahead"
    );
    let body: Value = app.get("/greeter/served").await.json().await.unwrap();
    assert_eq!(body["version"].as_str(), Some("v2"));
}

#[tokio::test]
async fn with_instances_made_ahead_a_kept_instance_still_serves_only_its_organization() {
    let app = Spawn::new(Engine::Sqlite, vec![greeter_made_ahead(3), vault()])
        .config(TRUSTS_VAULT)
        .start()
        .await;
    let (acme, globex) = (
        token(&app, Some("acme")).await,
        token(&app, Some("globex")).await,
    );
    assert_eq!(in_order(&app, None, 4).await, [1, 2, 3, 1]);
    assert_eq!(served(&app, Some(&acme), "").await, (200, 1));
    assert_eq!(served(&app, Some(&acme), "").await, (200, 2));
    assert_eq!(served(&app, Some(&globex), "").await, (200, 1));
    assert_eq!(served(&app, Some(&acme), "").await, (200, 3));
    assert_eq!(served(&app, Some(&globex), "").await, (200, 2));
}
