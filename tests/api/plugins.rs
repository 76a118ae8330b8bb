//! Per-organization plugins: installed by the operator (`per_organization = true`), enabled by
//! an organization's admin; requests from any other organization, or from none, get 404.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Engine, Policy, Spawn, TestApp, mint_token, problem, vault};
use crate::on_both_engines;
use crate::org::{shipped, tenancy_policies};

const PASSWORD: &str = "correct horse battery staple";
/// How long the host keeps an organization's enabled plugins (`runtime::plugins::FRESH_FOR`).
const FRESH_FOR: Duration = Duration::from_secs(2);

fn plugin() -> Policy {
    Policy::new("greeter", "greeter", "greeter", "per_organization = true")
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path));
    if !token.is_empty() {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// A new user with an organization of their own: (token for the organization, slug).
pub(crate) async fn admin_of_new_org(app: &TestApp, name: &str) -> (String, String) {
    let email = format!("{name}-{}@example.com", uuid::Uuid::new_v4().simple());
    let post = reqwest::Method::POST;
    let registered = send(
        app,
        post.clone(),
        "/auth/register",
        "",
        Some(json!({ "email": email, "password": PASSWORD, "name": name })),
    )
    .await;
    assert_eq!(registered.status(), 201);
    let pair: Value = send(
        app,
        post.clone(),
        "/auth/login",
        "",
        Some(json!({ "email": email, "password": PASSWORD })),
    )
    .await
    .json()
    .await
    .unwrap();
    let token = pair["access_token"].as_str().unwrap().to_string();
    let slug = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let created = send(
        app,
        post.clone(),
        "/org/api/organizations",
        &token,
        Some(json!({ "name": name, "slug": slug })),
    )
    .await;
    assert_eq!(created.status(), 201);
    let pair: Value = send(
        app,
        post,
        "/auth/login",
        "",
        Some(json!({ "email": email, "password": PASSWORD, "org_slug": slug })),
    )
    .await
    .json()
    .await
    .unwrap();
    (pair["access_token"].as_str().unwrap().to_string(), slug)
}

/// The status of `GET /greeter` with `token`, once it is `expected` (enablement is seen within
/// a couple of seconds) or after 10 s.
async fn greeter_status(app: &TestApp, token: &str, expected: u16) -> u16 {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let status = send(app, reqwest::Method::GET, "/greeter", token, None)
            .await
            .status()
            .as_u16();
        if status == expected || Instant::now() > until {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn an_organizations_admin_enables_a_plugin_for_that_organization_only(engine: Engine) {
    let mut policies = tenancy_policies();
    policies.push(plugin());
    let app = Spawn::new(engine, policies).start().await;
    let (acme, acme_slug) = admin_of_new_org(&app, "acme").await;
    let (globex, _) = admin_of_new_org(&app, "globex").await;

    assert_eq!(
        send(&app, reqwest::Method::GET, "/greeter", "", None)
            .await
            .status(),
        404,
        "no organization"
    );
    assert_eq!(
        send(&app, reqwest::Method::GET, "/greeter", &acme, None)
            .await
            .status(),
        404,
        "not enabled yet"
    );

    let plugins = format!("/org/api/organizations/{acme_slug}/plugins");
    let listed: Value = send(&app, reqwest::Method::GET, &plugins, &acme, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["items"],
        json!([{ "name": "greeter", "enabled": false }])
    );

    let enabled = send(
        &app,
        reqwest::Method::PUT,
        &format!("{plugins}/greeter"),
        &acme,
        None,
    )
    .await;
    assert_eq!(enabled.status(), 200);
    assert_eq!(greeter_status(&app, &acme, 200).await, 200);
    assert_eq!(
        send(&app, reqwest::Method::GET, "/greeter", &globex, None)
            .await
            .status(),
        404,
        "another organization"
    );
    let listed: Value = send(&app, reqwest::Method::GET, &plugins, &acme, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["enabled"], true, "{listed}");
    assert!(listed["items"][0]["enabled_by"].is_string());

    let unknown = send(
        &app,
        reqwest::Method::PUT,
        &format!("{plugins}/nothing"),
        &acme,
        None,
    )
    .await;
    problem(unknown, 404).await;

    let disabled = send(
        &app,
        reqwest::Method::DELETE,
        &format!("{plugins}/greeter"),
        &acme,
        None,
    )
    .await;
    assert_eq!(disabled.status(), 204);
    assert_eq!(greeter_status(&app, &acme, 404).await, 404);
}
on_both_engines!(an_organizations_admin_enables_a_plugin_for_that_organization_only);

/// While `org` cannot say which plugins an organization enabled (here: it failed to load), a
/// plugin serves no one and says so honestly: 503 with `Retry-After`, not a 404 that tells the
/// client it does not exist. The failure is not kept as an answer: once an operator deploys a
/// working `org`, the next request is answered from it.
#[tokio::test]
async fn while_org_cannot_answer_a_plugin_is_unavailable_not_missing() {
    let scratch = tempfile::tempdir().unwrap();
    let garbage = scratch.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not a component").unwrap();
    let mut org = shipped("org", str::to_string);
    let garbage_line = format!("wasm = {:?}", garbage.display().to_string());
    org.toml = org
        .toml
        .lines()
        .map(|line| match line.starts_with("wasm =") {
            true => garbage_line.clone(),
            false => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let app = Spawn::new(Engine::Sqlite, vec![org, vault(), plugin()])
        .config("trusted_components = [\"vault\"]")
        .start()
        .await;
    let claims = json!({
        "user_id": "user-ada", "email": "ada@example.com", "org_id": "org-acme",
        "org_slug": "acme", "org_name": "Acme", "roles": ["admin"], "permissions": [],
        "plan": "free", "session_id": "",
    });
    let token = mint_token(&app, &claims).await;

    for _ in 0..3 {
        let refused = send(&app, reqwest::Method::GET, "/greeter", &token, None).await;
        assert_eq!(refused.headers()["retry-after"], "1");
        let body = problem(refused, 503).await;
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("`greeter`") && detail.contains("retry"),
            "{body}"
        );
    }

    assert_eq!(app.deploy("org", "org").await.status(), 200);
    assert_eq!(
        send(&app, reqwest::Method::GET, "/greeter", &token, None)
            .await
            .status(),
        404,
        "org answers now: not enabled for this organization"
    );
}

/// How many calls the org component has served, from `/metrics`.
async fn org_calls(app: &TestApp) -> f64 {
    let metrics = app.metrics().await;
    let prefix = "truevalue_component_call_seconds_count{component=\"org\"} ";
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(prefix)?.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix}in {metrics}"))
}

/// An organization's plugin requests arriving together wait for one question to org: a burst
/// of them does not become a burst on org.
#[tokio::test]
async fn an_organizations_requests_arriving_together_ask_org_once() {
    let mut policies = tenancy_policies();
    policies.push(plugin());
    let app = Spawn::new(Engine::Sqlite, policies).start().await;
    let (acme, slug) = admin_of_new_org(&app, "acme").await;
    let enabled = send(
        &app,
        reqwest::Method::PUT,
        &format!("/org/api/organizations/{slug}/plugins/greeter"),
        &acme,
        None,
    )
    .await;
    assert_eq!(enabled.status(), 200);

    // Sixteen connections open first, so that the requests arrive together rather than one
    // connection's set-up after another.
    let open = (0..16).map(|_| app.client.get(app.url("/healthz")).send());
    for response in futures::future::join_all(open).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    // Three bursts, each once the answer before is stale: requests that happened to arrive one
    // after another would ask once without waiting for each other.
    for round in 0..3 {
        if round > 0 {
            tokio::time::sleep(FRESH_FOR + Duration::from_millis(100)).await;
        }
        let before = org_calls(&app).await;
        let burst = (0..16).map(|_| send(&app, reqwest::Method::GET, "/greeter", &acme, None));
        for response in futures::future::join_all(burst).await {
            assert_eq!(response.status(), 200);
        }
        let asked = org_calls(&app).await - before;
        // One question; two if the burst outlived the answer's freshness on a slow machine.
        assert!(
            (1.0..=2.0).contains(&asked),
            "16 requests asked org {asked} times"
        );
    }
}
