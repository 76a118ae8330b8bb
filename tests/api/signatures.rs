//! Signed components: a publisher makes a key and signs a component with its policy from the
//! command line; a host that requires signatures loads and deploys only what a trusted
//! publisher signed, shows who signed it, and refuses the rest with a 422 that says why.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::helpers::{Engine, Policy, Spawn, TestApp, problem, wasm};

/// `truevalue component <args>`; panics with its output when it fails.
pub(crate) fn truevalue(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_truevalue"))
        .arg("component")
        .args(args)
        .env_remove("TRUEVALUE_ADMIN_TOKEN")
        .output()
        .expect("run truevalue");
    assert!(
        output.status.success(),
        "truevalue component {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A publisher's key pair made by `component keygen`: (private key file, public key).
pub(crate) fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.key"));
    let public = truevalue(&["keygen", "--out", key.to_str().unwrap()]);
    (key, public.trim().to_string())
}

/// `file` (a built component) copied into `dir`, where its signature will be written.
fn copy(dir: &Path, file: &str) -> PathBuf {
    let to = dir.join(format!("{file}.wasm"));
    std::fs::copy(wasm(file), &to).unwrap();
    to
}

/// Signs `wasm` for the component whose policy text is `policy`.
pub(crate) fn sign(dir: &Path, wasm: &Path, policy: &Policy, key: &Path, publisher: &str) {
    let policy_file = dir.join(format!("{}.toml", policy.name));
    std::fs::write(&policy_file, &policy.toml).unwrap();
    truevalue(&[
        "sign",
        wasm.to_str().unwrap(),
        "--policy",
        policy_file.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--publisher",
        publisher,
    ]);
}

fn greeter(wasm: &Path) -> Policy {
    let routes = "routes = [\"/greeter\"]\npublic_routes = [\"/greeter\"]";
    Policy {
        name: "greeter".into(),
        toml: format!("wasm = {:?}\n{routes}\n", wasm.display().to_string()),
    }
}

async fn deploy(app: &TestApp, wasm: &Path, signature: Option<String>) -> reqwest::Response {
    let mut request = app
        .admin(reqwest::Method::PUT, "/admin/components/greeter")
        .body(std::fs::read(wasm).unwrap());
    if let Some(signature) = signature {
        request = request.header("x-component-signature", signature.trim());
    }
    request.send().await.unwrap()
}

fn signature_of(wasm: &Path) -> String {
    std::fs::read_to_string(format!("{}.sig", wasm.display())).unwrap()
}

async fn greeter_info(app: &TestApp) -> Value {
    let list = app.components().await;
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "greeter")
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_requiring_signatures_loads_and_deploys_only_what_a_trusted_publisher_signed() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "acme");
    let (stranger_key, _) = keygen(dir.path(), "stranger");
    let v1 = copy(dir.path(), "greeter");
    let policy = greeter(&v1);
    sign(dir.path(), &v1, &policy, &key, "acme");
    // A second component, unsigned: left out at start-up, like any that fails to load.
    let unsigned = Policy::new("hostile", "hostile", "hostile", "");

    let mut app = Spawn::new(Engine::Sqlite, vec![policy.clone(), unsigned])
        .config(&format!(
            "require_signatures = true\ntrusted_publishers = [{{ name = \"acme\", public_key = \"{public}\" }}]\n"
        ))
        .start()
        .await;
    assert_eq!(app.get("/greeter").await.status(), 200);
    let info = greeter_info(&app).await;
    assert_eq!(info["signer"], "acme", "{info}");
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    let why = ready["components"]["hostile"].as_str().unwrap_or_default();
    assert!(why.contains("unsigned"), "{ready}");

    // Unsigned, signed by someone the host does not trust, or signed for other bytes: 422.
    let v2 = copy(dir.path(), "greeter_v2");
    let body = problem(deploy(&app, &v2, None).await, 422).await;
    assert!(
        body["detail"].as_str().unwrap().contains("unsigned"),
        "{body}"
    );
    sign(dir.path(), &v2, &policy, &stranger_key, "stranger");
    let body = problem(deploy(&app, &v2, Some(signature_of(&v2))).await, 422).await;
    assert!(
        body["detail"].as_str().unwrap().contains("does not trust"),
        "{body}"
    );
    let body = problem(deploy(&app, &v2, Some(signature_of(&v1))).await, 422).await;
    assert!(
        body["detail"].as_str().unwrap().contains("does not match"),
        "{body}"
    );
    assert_eq!(
        greeter_info(&app).await["digest"],
        info["digest"],
        "nothing changed"
    );

    // Signed by acme: deployed, through the command line, which sends `<file>.sig` along.
    sign(dir.path(), &v2, &policy, &key, "acme");
    truevalue(&[
        "deploy",
        "greeter",
        v2.to_str().unwrap(),
        "--admin-url",
        &app.admin_address,
        "--token",
        &app.admin_token,
    ]);
    let info = greeter_info(&app).await;
    assert_eq!(info["signer"], "acme");
    assert_ne!(info["digest"], Value::Null);
    let served: Value = app.get("/greeter").await.json().await.unwrap();
    assert_eq!(served["version"], "v2");

    // The deployed version's signature is kept with it and checked again at the restart.
    app.crash_and_restart().await;
    let served: Value = app.get("/greeter").await.json().await.unwrap();
    assert_eq!(served["version"], "v2");
    assert_eq!(greeter_info(&app).await["signer"], "acme");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_is_checked_even_where_none_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keygen(dir.path(), "acme");
    let v1 = copy(dir.path(), "greeter");
    let policy = greeter(&v1);
    let app = Spawn::new(Engine::Sqlite, vec![policy.clone()])
        .start()
        .await;
    assert_eq!(greeter_info(&app).await["signer"], Value::Null);

    let v2 = copy(dir.path(), "greeter_v2");
    sign(dir.path(), &v2, &policy, &key, "acme");
    // The host trusts no publisher: a signature it cannot check is refused, not ignored.
    let body = problem(deploy(&app, &v2, Some(signature_of(&v2))).await, 422).await;
    assert!(
        body["detail"].as_str().unwrap().contains("does not trust"),
        "{body}"
    );
    assert_eq!(
        deploy(&app, &v2, None).await.status(),
        200,
        "unsigned is fine here"
    );
}
