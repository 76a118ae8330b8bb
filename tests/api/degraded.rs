//! A component that fails to load is left out: the others serve, its routes answer 503,
//! `/readyz` and the admin API name it, and a deploy of a fixed version brings it back without
//! a restart.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{Engine, HOSTILE_LIMITS, Policy, Spawn, TestApp, problem, wasm};
use crate::on_both_engines;

fn greeter() -> Policy {
    Policy::new("greeter", "greeter", "greeter", "")
}

/// `name` at `/<route>`, loading `wasm` (a path, resolved against the policies directory).
fn policy_with_wasm(name: &str, wasm: &str, route: &str, extra: &str) -> Policy {
    Policy {
        name: name.into(),
        toml: format!(
            "wasm = {wasm:?}\nroutes = [\"/{route}\"]\npublic_routes = [\"/{route}\"]\n{extra}\n"
        ),
    }
}

fn component(list: &Value, name: &str) -> Value {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("`{name}` is listed: {list}"))
}

async fn readyz(app: &TestApp) -> Value {
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200, "a degraded host stays in rotation");
    response.json().await.unwrap()
}

async fn assert_unavailable(app: &TestApp, path: &str, name: &str) {
    let body = problem(app.get(path).await, 503).await;
    assert_eq!(
        body["type"], "https://truevalue.dev/problems/component-unavailable",
        "{body}"
    );
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(name) && detail.contains("failed to load"),
        "{body}"
    );
    assert!(
        !detail.contains("migration") && !detail.contains(".wasm"),
        "the client does not see the internal error: {body}"
    );
}

async fn assert_greeter_serves(app: &TestApp) {
    let response = app.get("/greeter").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["version"], "v1");
}

async fn a_failing_migration_leaves_its_component_out_until_a_fixed_deploy(engine: Engine) {
    let broken = Policy::new("broken", "bad_migration", "hostile", HOSTILE_LIMITS);
    let app = Spawn::new(engine, vec![greeter(), broken]).start().await;

    assert_greeter_serves(&app).await;
    assert_unavailable(&app, "/hostile/notes", "broken").await;

    let ready = readyz(&app).await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    let why = ready["components"]["broken"].as_str().unwrap();
    assert!(
        why.starts_with("failed to load: ") && why.contains("migration 3"),
        "{ready}"
    );
    assert!(ready["components"].get("greeter").is_none(), "{ready}");

    let list = app.components().await;
    let listed = component(&list, "broken");
    assert_eq!(listed["status"], "failed", "{listed}");
    assert!(
        listed["error"].as_str().unwrap().contains("migration 3"),
        "{listed}"
    );
    assert_eq!(listed["version"], Value::Null);
    assert_eq!(component(&list, "greeter")["status"], "serving");
    assert!(
        app.logs().contains("the component failed to load"),
        "logged: {}",
        app.logs()
    );

    // No version to roll back from or to.
    problem(
        app.admin(Method::POST, "/admin/components/broken/rollback")
            .send()
            .await
            .unwrap(),
        409,
    )
    .await;

    // The fixed version: the same routes, migrations that apply.
    let deployed = app.deploy("broken", "hostile").await;
    assert_eq!(deployed.status(), 200);
    let deployed: Value = deployed.json().await.unwrap();
    assert_eq!(deployed["status"], "serving", "{deployed}");
    assert_eq!(deployed["previous"], Value::Null, "{deployed}");

    let created = app
        .client
        .post(app.url("/hostile/notes?text=fixed"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let notes: Value = app.get("/hostile/notes").await.json().await.unwrap();
    assert_eq!(notes["items"], serde_json::json!(["fixed"]));

    let ready = readyz(&app).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(ready.get("components").is_none(), "{ready}");
    let listed = component(&app.components().await, "broken");
    assert_eq!(listed["status"], "serving", "{listed}");
    assert!(listed.get("error").is_none(), "{listed}");
    assert_greeter_serves(&app).await;
}
on_both_engines!(a_failing_migration_leaves_its_component_out_until_a_fixed_deploy);

#[tokio::test]
async fn missing_and_garbage_components_are_left_out_and_the_rest_serves() {
    let scratch = tempfile::tempdir().unwrap();
    let garbage = scratch.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not a component").unwrap();
    let policies = vec![
        greeter(),
        policy_with_wasm("missing", "missing.wasm", "hostile", HOSTILE_LIMITS),
        policy_with_wasm("garbage", garbage.to_str().unwrap(), "garbage", ""),
    ];
    let app = Spawn::new(Engine::Sqlite, policies).start().await;

    assert_greeter_serves(&app).await;
    assert_unavailable(&app, "/hostile/notes", "missing").await;
    assert_unavailable(&app, "/garbage", "garbage").await;

    let ready = readyz(&app).await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    let failed = ready["components"].as_object().unwrap();
    assert_eq!(failed.len(), 2, "{ready}");
    assert!(
        failed["missing"].as_str().unwrap().contains("missing.wasm"),
        "{ready}"
    );

    let list = app.components().await;
    for name in ["missing", "garbage"] {
        assert_eq!(component(&list, name)["status"], "failed", "{list}");
    }
    // The whole reason goes to the log.
    let logs = app.logs();
    for expected in ["missing.wasm", "not a valid component"] {
        assert!(logs.contains(expected), "the log names {expected}: {logs}");
    }

    let deployed = app.deploy("missing", "hostile").await;
    assert_eq!(deployed.status(), 200);
    let notes = app.get("/hostile/notes").await;
    assert_eq!(notes.status(), 200);
    let ready = readyz(&app).await;
    assert_eq!(ready["status"], "degraded", "one is still out: {ready}");
    assert!(ready["components"].get("missing").is_none(), "{ready}");
}

#[tokio::test]
async fn a_fixed_deploy_survives_a_restart() {
    let missing = policy_with_wasm("missing", "missing.wasm", "hostile", HOSTILE_LIMITS);
    let mut app = Spawn::new(Engine::Sqlite, vec![greeter(), missing])
        .start()
        .await;
    assert_eq!(app.deploy("missing", "hostile").await.status(), 200);
    assert!(wasm("hostile").is_file());

    app.crash_and_restart().await;

    assert_eq!(app.get("/hostile/notes").await.status(), 200);
    assert_eq!(readyz(&app).await["status"], "ready");
}
