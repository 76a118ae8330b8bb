//! Operators swap components while traffic flows: the admin API, deploy, rollback, refusals.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{Engine, HOSTILE_LIMITS, Policy, Spawn, TestApp, problem, wasm};
use crate::on_both_engines;

async fn app() -> TestApp {
    Spawn::new(
        Engine::Sqlite,
        vec![Policy::new("greeter", "greeter", "greeter", "")],
    )
    .start()
    .await
}

async fn version(app: &TestApp) -> String {
    let response = app.get("/greeter").await;
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string()
}

fn sha256_of(name: &str) -> String {
    hex::encode(Sha256::digest(std::fs::read(wasm(name)).unwrap()))
}

fn greeter_info(list: &Value) -> Value {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "greeter")
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn the_admin_api_refuses_a_missing_or_wrong_token() {
    let app = app().await;
    let url = format!("{}/admin/components", app.admin_address);
    problem(app.client.get(&url).send().await.unwrap(), 401).await;
    problem(
        app.client
            .get(&url)
            .bearer_auth("not-the-token")
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    let refused = app
        .client
        .put(format!("{url}/greeter"))
        .body(std::fs::read(wasm("greeter_v2")).unwrap())
        .send()
        .await;
    problem(refused.unwrap(), 401).await;
    assert_eq!(version(&app).await, "v1", "nothing was deployed");
}

#[tokio::test]
async fn components_are_listed_with_version_digest_and_load_time() {
    let app = app().await;
    let greeter = greeter_info(&app.components().await);
    assert_eq!(greeter["version"], "1.0.0");
    assert_eq!(greeter["digest"], sha256_of("greeter"));
    assert!(
        time::OffsetDateTime::parse(
            greeter["loaded_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );
    assert_eq!(greeter["previous"], Value::Null);
}

#[tokio::test]
async fn a_deploy_switches_new_requests_and_rollback_restores() {
    let app = app().await;
    let deployed: Value = app
        .deploy("greeter", "greeter_v2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(deployed["digest"], sha256_of("greeter_v2"));
    assert_eq!(deployed["previous"]["digest"], sha256_of("greeter"));
    assert_eq!(version(&app).await, "v2");

    let response = app
        .admin(Method::POST, "/admin/components/greeter/rollback")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(version(&app).await, "v1");
    assert_eq!(
        greeter_info(&app.components().await)["previous"]["digest"],
        sha256_of("greeter_v2")
    );
}

#[tokio::test]
async fn in_flight_requests_finish_on_the_version_they_started_on() {
    let app = app().await;
    let slow = app.get("/greeter/slow?ms=1500");
    let deploy = async {
        app.wait_for_live_instances("greeter", 1).await;
        assert_eq!(app.deploy("greeter", "greeter_v2").await.status(), 200);
        version(&app).await
    };
    let (slow, after) = tokio::join!(slow, deploy);
    assert_eq!(after, "v2", "new requests meet the new version at once");
    assert_eq!(
        slow.json::<Value>().await.unwrap()["version"],
        "v1",
        "the in-flight request kept its version"
    );
}

#[tokio::test]
async fn ten_swaps_under_continuous_traffic_fail_no_request() {
    let app = Arc::new(app().await);
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (app, stop, served, failed) =
                (app.clone(), stop.clone(), served.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match app.client.get(app.url("/greeter")).send().await {
                        Ok(r) if r.status() == 200 => served.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();

    for swap in 0..10 {
        let (file, expected) = if swap % 2 == 0 {
            ("greeter_v2", "v2")
        } else {
            ("greeter", "v1")
        };
        let before = served.load(Ordering::Relaxed);
        assert_eq!(
            app.deploy("greeter", file).await.status(),
            200,
            "swap {swap}"
        );
        assert_eq!(version(&app).await, expected, "swap {swap} took effect");
        // Let traffic run on this version before the next swap.
        while served.load(Ordering::Relaxed) < before + 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during the swaps"
    );
    assert!(served.load(Ordering::Relaxed) >= 200);
}

#[tokio::test]
async fn a_deploy_that_is_not_a_component_is_refused_and_changes_nothing() {
    let app = app().await;
    let before = greeter_info(&app.components().await);
    for (bytes, says) in [
        (b"definitely not wasm".to_vec(), "not a valid component"),
        (b"\0asm\x01\0\0\0".to_vec(), "not a component"),
    ] {
        let response = app
            .admin(Method::PUT, "/admin/components/greeter")
            .body(bytes)
            .send()
            .await
            .unwrap();
        let body = problem(response, 422).await;
        assert!(body["detail"].as_str().unwrap().contains(says), "{body}");
    }
    problem(
        app.admin(Method::PUT, "/admin/components/greeter")
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(greeter_info(&app.components().await), before);
    assert_eq!(version(&app).await, "v1");
}

#[tokio::test]
async fn a_deploy_with_ungranted_imports_says_so_and_every_call_to_them_fails() {
    let app = app().await;
    // `attacker` imports `log` and `database`; the greeter's policy grants neither.
    let deployed = app.deploy("greeter", "attacker").await;
    assert_eq!(deployed.status(), 200);
    let report: serde_json::Value = deployed.json().await.unwrap();
    let denied: Vec<&str> = report["denied_imports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d.as_str())
        .collect();
    assert!(
        denied
            .iter()
            .any(|d| d.starts_with("truevalue:platform/log"))
            && denied
                .iter()
                .any(|d| d.starts_with("truevalue:platform/database")),
        "{report}"
    );
    // Its first call, to `log`, is refused: the request fails and nothing else runs.
    assert_eq!(app.get("/greeter").await.status(), 500);
    let logs = app.logs();
    assert!(
        logs.contains("called `truevalue:platform/log"),
        "the log names the call: {logs}"
    );
    assert!(logs.contains("capabilities"), "and what to change: {logs}");
}

async fn a_deploy_whose_migration_fails_is_refused_and_changes_nothing(engine: Engine) {
    let app = Spawn::new(
        engine,
        vec![Policy::new("hostile", "hostile", "hostile", HOSTILE_LIMITS)],
    )
    .start()
    .await;
    assert_eq!(
        app.client
            .post(app.url("/hostile/notes?text=before"))
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let body = problem(app.deploy("hostile", "bad_migration").await, 422).await;
    assert!(
        body["detail"].as_str().unwrap().contains("migration 3"),
        "{body}"
    );
    let notes: Value = app.get("/hostile/notes").await.json().await.unwrap();
    assert_eq!(
        notes["items"],
        serde_json::json!(["before"]),
        "the running version still serves"
    );
    let hostile = app.components().await["items"][0].clone();
    assert_eq!(hostile["digest"], sha256_of("hostile"));
    assert_eq!(hostile["previous"], Value::Null);
}
on_both_engines!(a_deploy_whose_migration_fails_is_refused_and_changes_nothing);

#[tokio::test]
async fn deploying_to_an_unknown_component_or_rolling_back_too_far_is_a_clear_4xx() {
    let app = app().await;
    problem(app.deploy("nobody", "greeter_v2").await, 404).await;
    let response = app
        .admin(Method::POST, "/admin/components/greeter/rollback")
        .send()
        .await
        .unwrap();
    let body = problem(response, 409).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("no previous version")
    );
}

#[tokio::test]
async fn deployed_versions_survive_a_restart() {
    let mut app = app().await;
    assert_eq!(app.deploy("greeter", "greeter_v2").await.status(), 200);
    app.crash_and_restart().await;
    assert_eq!(version(&app).await, "v2");
    let response = app
        .admin(Method::POST, "/admin/components/greeter/rollback")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "the previous version is still there to roll back to"
    );
    assert_eq!(version(&app).await, "v1");
}

async fn a_deploy_migrates_many_rows_after_requests_were_served(engine: Engine) {
    let app = Spawn::new(
        engine,
        vec![Policy::new("hostile", "hostile", "hostile", HOSTILE_LIMITS)],
    )
    .start()
    .await;
    // Requests leave their connections in the pool; what bound them must not bind the host's
    // own statements on those connections afterwards.
    for i in 0..6 {
        let url = app.url(&format!("/hostile/notes?text=served-{i}"));
        let written = app.client.post(url).send().await.unwrap();
        assert_eq!(written.status(), 201);
        assert_eq!(app.get("/hostile/notes").await.status(), 200);
    }
    let deployed = app.deploy("hostile", "hostile_backfill").await;
    assert_eq!(
        deployed.status(),
        200,
        "the backfill migration ran: {}",
        deployed.text().await.unwrap()
    );
    assert_eq!(
        app.get("/hostile/counter").await.status(),
        200,
        "the new version serves"
    );
}
on_both_engines!(a_deploy_migrates_many_rows_after_requests_were_served);
