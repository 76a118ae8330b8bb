//! `truevalue component new NAME --lang rust|python|js`, as a new plugin author runs it: the
//! directory it writes builds with its own build script and the language's toolchain, passes
//! `component check` under its own policy, and is installed into a running host with
//! `component install`, as the command prints next.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::auth::TRUSTS_VAULT;
use crate::helpers::{Engine, Spawn, mint_token, repo, vault};

fn truevalue(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_truevalue"))
        .arg("component")
        .args(args)
        .output()
        .expect("run truevalue");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// Writes the plugin `name` in `lang` under `dir`, builds it with its `build.sh`, checks it,
/// and answers its project directory.
fn new_and_build(dir: &Path, name: &str, lang: &str, env: &[(&str, String)]) -> PathBuf {
    let project = dir.join(name);
    let mut args = vec![
        "new",
        name,
        "--lang",
        lang,
        "--dir",
        project.to_str().unwrap(),
    ];
    let sdk = repo().join("components/sdk").display().to_string();
    if lang == "rust" {
        args.extend(["--sdk", &sdk]);
    }
    let (ok, out) = truevalue(&args);
    assert!(ok, "{out}");
    assert!(out.contains("build.sh"), "says what to run next: {out}");
    assert!(
        out.contains("component install"),
        "says how to install: {out}"
    );
    if lang == "js" {
        // The repository's install of the pinned toolchain, instead of a download per test.
        std::os::unix::fs::symlink(
            repo().join("sdk/js/node_modules"),
            project.join("node_modules"),
        )
        .unwrap();
    }
    let built = Command::new(project.join("build.sh"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run build.sh");
    assert!(
        built.status.success(),
        "{lang}: {}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let wasm = project.join(format!("{name}.wasm"));
    let policy_file = project.join(format!("{name}.toml"));
    let (ok, report) = truevalue(&[
        "check",
        wasm.to_str().unwrap(),
        "--policy",
        policy_file.to_str().unwrap(),
    ]);
    assert!(ok, "{report}");
    project
}

/// Installs the built plugin into a running host, and uses it.
async fn serves(project: PathBuf, name: &str) {
    let app = Spawn::new(Engine::Sqlite, vec![vault()])
        .config(TRUSTS_VAULT)
        .start()
        .await;
    let (wasm, policy) = (
        project.join(format!("{name}.wasm")),
        project.join(format!("{name}.toml")),
    );
    let (ok, out) = truevalue(&[
        "install",
        name,
        wasm.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--admin-url",
        &app.admin_address,
        "--token",
        &app.admin_token,
    ]);
    assert!(ok, "{out}");
    let hello: Value = app
        .get(&format!("/{name}/hello?name=Ada"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        hello["message"],
        format!("Hello from {name}, Ada!"),
        "{hello}"
    );
    let token = mint_token(
        &app,
        &json!({
            "user_id": "user-1", "email": "ada@example.com", "org_id": "org-1",
            "org_slug": "one", "org_name": "One", "roles": [], "session_id": "s-1",
            "permissions": [format!("{name}:read"), format!("{name}:write")], "plan": "free",
        }),
    )
    .await;
    let items = format!("/{name}/items");
    let created = app
        .client
        .post(app.url(&items))
        .bearer_auth(&token)
        .json(&json!({ "text": "first" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let invalid = app
        .client
        .post(app.url(&items))
        .bearer_auth(&token)
        .json(&json!({ "text": " " }))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 422);
    let listed: Value = app
        .client
        .get(app.url(&items))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["text"], "first", "{listed}");
    assert_eq!(app.get(&items).await.status(), 401, "a token is needed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_python_plugin_builds_checks_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let project = tokio::task::block_in_place(|| new_and_build(dir.path(), "notes", "python", &[]));
    serves(project, "notes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_javascript_plugin_builds_checks_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let project = tokio::task::block_in_place(|| new_and_build(dir.path(), "tasks", "js", &[]));
    serves(project, "tasks").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_rust_plugin_builds_checks_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    // Built once per machine and kept, like the host's own builds.
    let target = std::env::var("HOME")
        .map(|home| format!("{home}/.cache/truevalue/plugin-target"))
        .unwrap_or_else(|_| dir.path().join("target").display().to_string());
    let project = tokio::task::block_in_place(|| {
        new_and_build(dir.path(), "deals", "rust", &[("CARGO_TARGET_DIR", target)])
    });
    serves(project, "deals").await;
}

#[test]
fn a_bad_name_or_an_existing_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = truevalue(&["new", "Bad-Name", "--lang", "python", "--dir", "x"]);
    assert!(!ok && out.contains("cannot name a component"), "{out}");
    let (ok, out) = truevalue(&[
        "new",
        "notes",
        "--lang",
        "python",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!ok && out.contains("exists already"), "{out}");
}
