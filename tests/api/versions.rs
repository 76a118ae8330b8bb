//! Kept versions: every version that served is listed, and an operator rolls back to a named
//! one — not a toggle between the last two — which survives a restart.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{Engine, Policy, Spawn, TestApp, problem, wasm};

fn digest_of(name: &str) -> String {
    hex::encode(Sha256::digest(std::fs::read(wasm(name)).unwrap()))
}

async fn version(app: &TestApp) -> String {
    let body: Value = app.get("/greeter").await.json().await.unwrap();
    body["version"].as_str().unwrap_or_default().to_string()
}

async fn rollback_to(app: &TestApp, digest: &str) -> reqwest::Response {
    app.admin(reqwest::Method::POST, "/admin/components/greeter/rollback")
        .json(&json!({ "digest": digest }))
        .send()
        .await
        .unwrap()
}

async fn versions(app: &TestApp) -> Vec<Value> {
    let response = app
        .admin(reqwest::Method::GET, "/admin/components/greeter/versions")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_rolls_back_to_a_named_version_and_it_survives_a_restart() {
    let mut app = Spawn::new(
        Engine::Sqlite,
        vec![Policy::new("greeter", "greeter", "greeter", "")],
    )
    .start()
    .await;
    let (v1, v2) = (digest_of("greeter"), digest_of("greeter_v2"));
    assert_eq!(app.deploy("greeter", "greeter_v2").await.status(), 200);

    let listed = versions(&app).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let find = |digest: &str| {
        listed
            .iter()
            .find(|v| v["digest"] == digest)
            .unwrap()
            .clone()
    };
    assert_eq!(find(&v2)["current"], true);
    assert_eq!(find(&v1)["previous"], true);
    assert!(find(&v1)["kept_at"].is_string() && find(&v1)["size"].as_u64().unwrap() > 0);

    // Named: twice to v1 stays on v1 (a toggle would swap back).
    for _ in 0..2 {
        let response = rollback_to(&app, &v1).await;
        assert_eq!(response.status(), 200);
        assert_eq!(version(&app).await, "v1");
    }
    let unknown = rollback_to(&app, &"0".repeat(64)).await;
    let body = problem(unknown, 404).await;
    assert!(
        body["detail"].as_str().unwrap().contains("versions"),
        "{body}"
    );
    let malformed = app
        .admin(reqwest::Method::POST, "/admin/components/greeter/rollback")
        .json(&json!({ "to": v2 }))
        .send()
        .await
        .unwrap();
    problem(malformed, 422).await;
    assert_eq!(version(&app).await, "v1", "refusals changed nothing");

    assert_eq!(rollback_to(&app, &v2).await.status(), 200);
    assert_eq!(version(&app).await, "v2");
    assert_eq!(rollback_to(&app, &v1).await.status(), 200);
    app.crash_and_restart().await;
    assert_eq!(version(&app).await, "v1", "the named version stays pinned");
    assert_eq!(versions(&app).await.len(), 2);

    // Named by the start of its digest, as `git` takes a short commit id: 8 digits or more.
    assert_eq!(rollback_to(&app, &v2[..8]).await.status(), 200);
    assert_eq!(version(&app).await, "v2");
    problem(rollback_to(&app, &v1[..7]).await, 404).await;
    assert_eq!(version(&app).await, "v2");
}

async fn rollback(app: &TestApp) -> reqwest::Response {
    app.admin(reqwest::Method::POST, "/admin/components/greeter/rollback")
        .send()
        .await
        .unwrap()
}

/// An upgrade ships a new `wasm` file for a component the operator never pinned: after the
/// restart, the version that ran before it is the one a rollback goes back to. And when the
/// shipped file does not load, the component is left out with that version still there to
/// roll back to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_upgrade_a_rollback_goes_back_to_the_version_that_ran_before() {
    let shipped = tempfile::tempdir().unwrap();
    let file = shipped.path().join("greeter.wasm");
    std::fs::copy(wasm("greeter"), &file).unwrap();
    let policy = Policy {
        name: "greeter".into(),
        toml: format!(
            "wasm = {:?}\nroutes = [\"/greeter\"]\npublic_routes = [\"/greeter\"]\n",
            file.display().to_string()
        ),
    };
    let mut app = Spawn::new(Engine::Sqlite, vec![policy]).start().await;
    let (v1, v2) = (digest_of("greeter"), digest_of("greeter_v2"));
    assert_eq!(version(&app).await, "v1");

    std::fs::copy(wasm("greeter_v2"), &file).unwrap();
    app.crash_and_restart().await;
    assert_eq!(version(&app).await, "v2", "the upgrade's file serves");
    let listed = versions(&app).await;
    let flags = |digest: &str| {
        let kept = listed.iter().find(|v| v["digest"] == digest).unwrap();
        (kept["current"].clone(), kept["previous"].clone())
    };
    assert_eq!(flags(&v2), (json!(true), json!(false)), "{listed:?}");
    assert_eq!(flags(&v1), (json!(false), json!(true)), "{listed:?}");
    assert_eq!(rollback(&app).await.status(), 200);
    assert_eq!(version(&app).await, "v1");

    // Back on the policy's file (v2), then an upgrade whose file is broken.
    let reset = app
        .admin(reqwest::Method::POST, "/admin/components/greeter/reset")
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    assert_eq!(version(&app).await, "v2");
    std::fs::write(&file, b"not a component").unwrap();
    app.crash_and_restart().await;
    problem(app.get("/greeter").await, 503).await;
    assert_eq!(rollback(&app).await.status(), 200);
    assert_eq!(
        version(&app).await,
        "v2",
        "the version that ran before the broken upgrade"
    );
}
