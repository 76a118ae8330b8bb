//! Calls between components (`services`): internal routes reach only other components, the
//! callee sees the caller's name and the original verified context, and a policy decides whom
//! a component may call.

use serde_json::{Value, json};

use crate::helpers::{Engine, Policy, Spawn, TestApp, problem};
use crate::identity::auth_policy;

const PASSWORD: &str = "correct horse battery staple";

fn relay_policy() -> Policy {
    Policy::with_routes(
        "relay",
        "relay",
        "routes = [\"/relay\"]\npublic_routes = [\"/relay/call\", \"/relay/declared\"]\ninternal_routes = [\"/relay/internal\"]",
        "capabilities = [\"services\", \"database\"]\nservices = [\"relay\", \"nosuch\"]\npermissions = [\"contacts:read\", \"contacts:write\"]",
    )
}

async fn app() -> TestApp {
    let greeter = Policy::new("greeter", "greeter", "greeter", "");
    Spawn::new(Engine::Sqlite, vec![auth_policy(), relay_policy(), greeter])
        .start()
        .await
}

/// Registers a user and returns (user id, access token).
async fn sign_in(app: &TestApp) -> (String, String) {
    let email = format!("svc-{}@example.com", uuid::Uuid::new_v4().simple());
    let body = json!({ "email": email, "password": PASSWORD, "name": "Grace Hopper" });
    let registered: Value = app
        .post_json("/auth/register", &body)
        .await
        .json()
        .await
        .unwrap();
    let login = json!({ "email": email, "password": PASSWORD });
    let tokens: Value = app
        .post_json("/auth/login", &login)
        .await
        .json()
        .await
        .unwrap();
    (
        registered["id"].as_str().unwrap().into(),
        tokens["access_token"].as_str().unwrap().into(),
    )
}

async fn call(app: &TestApp, token: Option<&str>, spec: Value) -> Value {
    let mut request = app.client.post(app.url("/relay/call")).json(&spec);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_route_is_404_to_clients_and_served_to_components_with_the_callers_context() {
    let app = app().await;
    let (user_id, token) = sign_in(&app).await;

    problem(app.get("/relay/internal/whoami").await, 404).await;
    let with_token = app
        .client
        .post(app.url("/relay/internal/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    problem(with_token, 404).await;

    let spec = json!({
        "component": "relay", "method": "post", "path": "/relay/internal/whoami?q=x%20y",
        "body": { "hello": "there" },
    });
    let response = app
        .client
        .post(app.url("/relay/call"))
        .bearer_auth(&token)
        .header("x-request-id", "chain-of-calls-1")
        .json(&spec)
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    let seen = &answer["body"];
    assert_eq!(seen["caller"], "relay", "{seen}");
    assert_eq!(
        seen["user_id"],
        user_id.as_str(),
        "the user the gateway verified"
    );
    assert_eq!(seen["request_id"], "chain-of-calls-1");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/relay/internal/whoami");
    assert_eq!(seen["query"], "x y");
    assert_eq!(seen["body"], "{\"hello\":\"there\"}");

    // A request from the gateway has no caller, whatever headers the client sends.
    let spec = json!({ "component": "relay", "method": "GET", "path": "/relay/internal/whoami" });
    let anonymous = call(&app, None, spec).await;
    assert_eq!(anonymous["body"]["user_id"], Value::Null);
    assert_eq!(anonymous["body"]["caller"], "relay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_policy_does_not_allow_or_to_a_route_that_is_not_internal_is_refused() {
    let app = app().await;
    let refused = |component: &str, path: &str| json!({ "component": component, "method": "GET", "path": path });
    // Loaded, but not in relay's `services`.
    let answer = call(&app, None, refused("greeter", "/greeter")).await;
    assert_eq!(answer["error"], "not-allowed", "{answer}");
    let answer = call(&app, None, refused("auth", "/auth/me")).await;
    assert_eq!(answer["error"], "not-allowed", "{answer}");
    // Listed, but not loaded.
    let answer = call(&app, None, refused("nosuch", "/nosuch/internal")).await;
    assert_eq!(answer["error"], "not-found", "{answer}");
    // Allowed, but a public route is for clients, through the gateway.
    let answer = call(&app, None, refused("relay", "/relay/declared")).await;
    assert_eq!(answer["error"], "not-found", "{answer}");
    let answer = call(&app, None, refused("relay", "/relay/internalx")).await;
    assert_eq!(answer["error"], "not-found", "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_nest_at_most_four_deep() {
    let app = app().await;
    let mut spec =
        json!({ "component": "relay", "method": "GET", "path": "/relay/internal/whoami" });
    for _ in 0..5 {
        spec = json!({ "component": "relay", "method": "POST", "path": "/relay/internal/call", "body": spec });
    }
    let mut answer = call(&app, None, spec).await;
    let mut depth = 0;
    while answer.get("status").is_some() {
        answer = answer["body"].clone();
        depth += 1;
    }
    assert_eq!(depth, 4, "four calls answered: {answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("at most 4 deep"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_that_loops_times_out_the_chain_within_its_deadline_and_the_host_serves_on() {
    // The callee's deadline is its own policy's (1 s) within what is left of the caller's (5 s).
    let relay = Policy::with_routes(
        "relay",
        "relay",
        "routes = [\"/relay\"]\npublic_routes = [\"/relay/call\"]\ninternal_routes = [\"/relay/internal\"]",
        "capabilities = [\"services\", \"database\"]\nservices = [\"relay\"]\n[limits]\ntimeout_ms = 1000",
    );
    let app = Spawn::new(Engine::Sqlite, vec![relay]).start().await;
    let spec = json!({ "component": "relay", "method": "GET", "path": "/relay/internal/spin" });
    let response = app
        .client
        .post(app.url("/relay/call"))
        .json(&spec)
        .send()
        .await
        .unwrap();
    // The caller shares the callee's 1 s: it times out too, and the client gets the 504.
    problem(response, 504).await;
    // And the host serves on.
    let spec = json!({ "component": "relay", "method": "GET", "path": "/relay/internal/whoami" });
    assert_eq!(call(&app, None, spec).await["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_permissions_components_declare_are_listed_for_the_catalog() {
    let app = app().await;
    let declared: Value = app.get("/relay/declared").await.json().await.unwrap();
    assert_eq!(
        declared,
        json!([["relay", ["contacts:read", "contacts:write"]]])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_that_misuse_the_new_keys_are_refused_with_what_to_change() {
    let bad = Policy::with_routes(
        "relay",
        "relay",
        "routes = [\"/relay\"]\ninternal_routes = [\"/elsewhere\"]\norg_routes = [\"/relay/{org_slug}-x\"]",
        "services = [\"auth\"]\npermissions = [\"Contacts\"]",
    );
    let stderr = Spawn::new(Engine::Sqlite, vec![bad]).start_refused().await;
    for expected in [
        "internal route \"/elsewhere\" is not under any of `routes`",
        "org route \"/relay/{org_slug}-x\"",
        "does not grant \"services\"",
        "permission \"Contacts\" must be `resource:action`",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}

/// Requests that hold their transaction while they call back into their own component (org →
/// permission → org does): more of them than the pool has connections must not leave every
/// callee waiting for a connection until the deadline.
#[tokio::test]
async fn calls_back_into_a_busy_component_still_get_a_connection() {
    const OUTER: usize = 24;
    let relay = Policy::with_routes(
        "relay",
        "relay",
        "routes = [\"/relay\"]\npublic_routes = [\"/relay/call\"]\ninternal_routes = [\"/relay/internal\"]",
        // Instances enough for every level of every chain; the pool has 16 connections.
        "capabilities = [\"services\", \"database\"]\nservices = [\"relay\"]\n[limits]\nmax_instances = 80\ntimeout_ms = 3000",
    );
    let app = Spawn::new(Engine::Postgres, vec![relay])
        .config("rate_limit_per_minute = 100000")
        .start()
        .await;
    // Each chain holds a transaction at the gateway's level and another one level down.
    let spec = json!({
        "component": "relay", "method": "POST", "path": "/relay/internal/call", "database": true,
        "body": { "component": "relay", "method": "GET", "path": "/relay/internal/whoami", "database": true },
    });
    let chains: Vec<_> = (0..OUTER)
        .map(|_| {
            let (client, url, spec) = (app.client.clone(), app.url("/relay/call"), spec.clone());
            tokio::spawn(async move {
                let response = client.post(url).json(&spec).send().await.unwrap();
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap_or_default())
            })
        })
        .collect();
    for chain in chains {
        let (status, answer) = chain.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["status"], 200, "{answer}");
        assert_eq!(answer["body"]["status"], 200, "{answer}");
        assert_eq!(answer["body"]["body"]["caller"], "relay", "{answer}");
    }
}

#[tokio::test]
async fn many_calls_in_one_request_fit_a_small_instance_pool() {
    // Each callee's instance is dropped after its answer, off the caller's path; its place in
    // the host's pool comes back then, so a caller making call after call never runs the pool
    // dry however quickly the calls come.
    let app = Spawn::new(Engine::Sqlite, vec![relay_policy()])
        .config("max_instances = 4")
        .start()
        .await;
    let spec = json!({
        "component": "relay", "method": "GET", "path": "/relay/internal/whoami", "times": 40,
    });
    let answer = call(&app, None, spec).await;
    assert_eq!(answer["status"], 200, "{answer}");
    assert_eq!(answer["body"]["caller"], "relay", "{answer}");
}
