//! `truevalue component list|deploy|rollback`, as an operator runs them.

use std::process::Command;

use crate::helpers::{Engine, Policy, Spawn, wasm};

fn truevalue(app: &crate::helpers::TestApp, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_truevalue"))
        .arg("component")
        .args(args)
        .args(["--admin-url", &app.admin_address, "--data-dir"])
        .arg(&app.data_dir)
        .env_remove("TRUEVALUE_ADMIN_TOKEN")
        .output()
        .expect("run truevalue");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_deploy_and_roll_back_from_the_command_line() {
    let app = Spawn::new(
        Engine::Sqlite,
        vec![Policy::new("greeter", "greeter", "greeter", "")],
    )
    .start()
    .await;
    let app_ref = &app;

    let (ok, out, _) = tokio::task::block_in_place(|| truevalue(app_ref, &["list"]));
    assert!(
        ok && out.contains("\"greeter\"") && out.contains("1.0.0"),
        "{out}"
    );

    let v2 = wasm("greeter_v2").display().to_string();
    let (ok, out, err) =
        tokio::task::block_in_place(|| truevalue(app_ref, &["deploy", "greeter", &v2]));
    assert!(ok, "{out}{err}");
    let body: serde_json::Value = app.get("/greeter").await.json().await.unwrap();
    assert_eq!(body["version"], "v2");

    let (ok, _, _) = tokio::task::block_in_place(|| truevalue(app_ref, &["rollback", "greeter"]));
    assert!(ok);
    let body: serde_json::Value = app.get("/greeter").await.json().await.unwrap();
    assert_eq!(body["version"], "v1");

    let scratch = tempfile::tempdir().unwrap();
    let garbage = scratch.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm at all").unwrap();
    let garbage = garbage.display().to_string();
    let (ok, _, err) =
        tokio::task::block_in_place(|| truevalue(app_ref, &["deploy", "greeter", &garbage]));
    assert!(!ok, "a refused deploy exits non-zero");
    assert!(err.contains("not a valid component"), "and says why: {err}");
}
