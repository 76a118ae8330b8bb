//! The example plugins — contacts with deals, in Rust (`examples/contacts-rust`, on the SDK in
//! `components/sdk`), Python (`examples/contacts-python`, built by componentize-py with
//! `sdk/python`) and JavaScript (`examples/contacts-js`, built by componentize-js with `sdk/js`),
//! the last two by `just plugins` — loaded unmodified under their own policies: the Python and
//! JavaScript ones import the whole `plugin` world (and the JavaScript one `wasi:http`) and are
//! granted only `database`. The three share their schema, so each can replace another.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::auth::TRUSTS_VAULT;
use crate::helpers::{Engine, Policy, Spawn, TestApp, mint_token, repo, vault, wasm};
use crate::on_both_engines;

/// The example plugins: their directory under `examples/` and their file in `dist/components/`.
#[derive(Clone, Copy)]
pub enum Example {
    Rust,
    Python,
    JavaScript,
}

impl Example {
    pub(crate) fn dir(self) -> std::path::PathBuf {
        repo().join(match self {
            Example::Rust => "examples/contacts-rust",
            Example::Python => "examples/contacts-python",
            Example::JavaScript => "examples/contacts-js",
        })
    }

    pub(crate) fn wasm(self) -> std::path::PathBuf {
        wasm(match self {
            Example::Rust => "contacts",
            Example::Python => "contacts_py",
            Example::JavaScript => "contacts_js",
        })
    }
}

/// The example's own policy file, pointed at the built component.
pub fn contacts_policy(example: Example) -> Policy {
    let shipped = std::fs::read_to_string(example.dir().join("contacts.toml")).unwrap();
    let toml = shipped.replace(
        "wasm = \"contacts.wasm\"",
        &format!("wasm = {:?}", example.wasm().display().to_string()),
    );
    assert_ne!(toml, shipped, "the example names its wasm file");
    Policy {
        name: "contacts".into(),
        toml,
    }
}

async fn token(app: &TestApp, org: &str, permissions: &[&str]) -> String {
    let claims = json!({
        "user_id": format!("user-{org}"), "email": format!("{org}@example.com"),
        "org_id": format!("org-{org}"), "org_slug": org, "org_name": org, "roles": ["member"],
        "permissions": permissions, "plan": "free", "session_id": format!("session-{org}"),
    });
    mint_token(app, &claims).await
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn contacts_and_deals_stay_within_their_organization(engine: Engine, example: Example) {
    let app = Spawn::new(engine, vec![vault(), contacts_policy(example)])
        .config(TRUSTS_VAULT)
        .start()
        .await;
    let writer = token(&app, "acme", &["contacts:*"]).await;
    let reader = token(&app, "acme", &["contacts:read"]).await;
    let other = token(&app, "globex", &["contacts:*"]).await;
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;

    let (status, ada) = call(
        &app,
        post.clone(),
        "/contacts/api/contacts",
        &writer,
        Some(json!({ "name": "Ada Lovelace", "email": "Ada@Example.com" })),
    )
    .await;
    assert_eq!(status, 201, "{ada}");
    assert_eq!(ada["email"], "ada@example.com");
    let id = ada["id"].as_i64().unwrap();

    let (status, deal) = call(
        &app,
        post.clone(),
        &format!("/contacts/api/contacts/{id}/deals"),
        &writer,
        Some(json!({ "title": "Analytical engine", "amount_cents": 150_000 })),
    )
    .await;
    assert_eq!(status, 201, "{deal}");

    let (status, shown) = call(
        &app,
        get.clone(),
        &format!("/contacts/api/contacts/{id}"),
        &reader,
        None,
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["deals"][0]["title"], "Analytical engine");
    assert_eq!(shown["deals"][0]["amount_cents"], 150_000);

    // Another organization sees none of it.
    let (status, listed) = call(&app, get.clone(), "/contacts/api/contacts", &other, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["items"], json!([]));
    let (status, problem) = call(
        &app,
        get.clone(),
        &format!("/contacts/api/contacts/{id}"),
        &other,
        None,
    )
    .await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(problem["type"], "https://truevalue.dev/problems/not-found");
    assert!(problem["request_id"].is_string(), "{problem}");

    // Permissions, validation and conflicts answer problems, and change nothing.
    let (status, _) = call(
        &app,
        post.clone(),
        "/contacts/api/contacts",
        &reader,
        Some(json!({ "name": "Grace", "email": "grace@example.com" })),
    )
    .await;
    assert_eq!(status, 403);
    let (status, invalid) = call(
        &app,
        post.clone(),
        "/contacts/api/contacts",
        &writer,
        Some(json!({ "name": "", "email": "nope" })),
    )
    .await;
    assert_eq!(status, 422, "{invalid}");
    let fields: Vec<&str> = invalid["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["name", "email"], "{invalid}");
    let (status, _) = call(
        &app,
        post.clone(),
        "/contacts/api/contacts",
        &writer,
        Some(json!({ "name": "Ada again", "email": "ada@example.com" })),
    )
    .await;
    assert_eq!(status, 409);
    let (_, listed) = call(&app, get, "/contacts/api/contacts", &reader, None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");

    // `print()` and `console.log` reach the host's log, tagged with the plugin's name.
    let logs = app.logs();
    assert!(
        logs.lines().any(
            |line| line.contains(&format!("contact {id} created")) && line.contains("contacts")
        ),
        "{logs}"
    );
}

async fn rust(engine: Engine) {
    contacts_and_deals_stay_within_their_organization(engine, Example::Rust).await;
}
on_both_engines!(rust);

async fn python(engine: Engine) {
    contacts_and_deals_stay_within_their_organization(engine, Example::Python).await;
}
on_both_engines!(python);

async fn javascript(engine: Engine) {
    contacts_and_deals_stay_within_their_organization(engine, Example::JavaScript).await;
}
on_both_engines!(javascript);

async fn loads_with_only_its_grants_and_lists_the_rest_as_denied(example: Example) {
    let app = Spawn::new(Engine::Sqlite, vec![vault(), contacts_policy(example)])
        .config(TRUSTS_VAULT)
        .start()
        .await;
    let list = app.components().await;
    let contacts = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "contacts")
        .unwrap();
    assert_eq!(contacts["status"], "serving", "{contacts}");
    assert_eq!(contacts["version"], "1.0.0");
    let denied: Vec<&str> = contacts["denied_imports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d.as_str())
        .collect();
    for interface in ["tokens", "cache", "crypto", "services", "email", "events"] {
        assert!(
            denied
                .iter()
                .any(|d| d.starts_with(&format!("truevalue:platform/{interface}@"))),
            "{interface} is denied: {denied:?}"
        );
    }
    assert!(
        !denied.iter().any(|d| d.contains("/database@")),
        "database is granted: {denied:?}"
    );
}

#[tokio::test]
async fn the_python_plugin_loads_with_only_its_grants() {
    loads_with_only_its_grants_and_lists_the_rest_as_denied(Example::Python).await;
}

#[tokio::test]
async fn the_javascript_plugin_loads_with_only_its_grants() {
    loads_with_only_its_grants_and_lists_the_rest_as_denied(Example::JavaScript).await;
}

fn check(wasm_file: &std::path::Path, policy: &std::path::Path) -> (bool, Value, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_truevalue"))
        .args(["component", "check"])
        .arg(wasm_file)
        .arg("--policy")
        .arg(policy)
        .output()
        .expect("run truevalue");
    (
        output.status.success(),
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The entry for `interface` (any version) among the imports of a `component check` report.
fn import<'r>(report: &'r Value, interface: &str) -> Option<&'r Value> {
    report["imports"].as_array()?.iter().find(|i| {
        i["name"]
            .as_str()
            .is_some_and(|name| name.starts_with(&format!("{interface}@")))
    })
}

#[test]
fn component_check_reports_imports_grants_and_exports_without_a_host() {
    let policy = Example::Python.dir().join("contacts.toml");
    let (ok, report, stderr) = check(&Example::Python.wasm(), &policy);
    assert!(ok, "{report} {stderr}");
    assert_eq!(report["loads"], true, "{report}");
    assert_eq!(report["missing_exports"], json!([]), "{report}");
    let status = |interface: &str| {
        import(&report, interface)
            .map(|i| i["status"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{interface} is imported: {report}"))
    };
    assert_eq!(status("truevalue:platform/database"), "granted");
    assert_eq!(status("truevalue:platform/cache"), "denied");
    assert_eq!(status("truevalue:platform/tokens"), "denied");

    // Bad input: a policy with a problem, and a file that is no component, each exit non-zero
    // and say why.
    let scratch = tempfile::tempdir().unwrap();
    let bad_policy = scratch.path().join("contacts.toml");
    std::fs::write(&bad_policy, "wasm = \"x.wasm\"\nroutes = [\"nope\"]\n").unwrap();
    let (ok, report, _) = check(&Example::Python.wasm(), &bad_policy);
    assert!(!ok);
    assert_eq!(report["loads"], false, "{report}");
    assert!(
        !report["policy_problems"].as_array().unwrap().is_empty(),
        "{report}"
    );
    let garbage = scratch.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm").unwrap();
    let (ok, _, stderr) = check(&garbage, &policy);
    assert!(!ok);
    assert!(stderr.contains("not a valid component"), "{stderr}");
}

/// The operator swaps the plugin between its three languages at runtime, each version signed
/// by the publisher for the same policy, on a host that requires signatures; the data stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_versions_replace_each_other_across_languages_and_keep_the_data() {
    use crate::signatures::{keygen, sign};

    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "acme");
    let copy = |example: Example, name: &str| {
        let to = dir.path().join(name);
        std::fs::copy(example.wasm(), &to).unwrap();
        to
    };
    let python = copy(Example::Python, "contacts.wasm");
    let javascript = copy(Example::JavaScript, "contacts-js.wasm");
    let rust = copy(Example::Rust, "contacts-rust.wasm");
    let mut policy = contacts_policy(Example::Python);
    policy.toml = policy.toml.replace(
        &Example::Python.wasm().display().to_string(),
        &python.display().to_string(),
    );
    let vault_copy = dir.path().join("vault.wasm");
    std::fs::copy(wasm("vault"), &vault_copy).unwrap();
    let mut vault = vault();
    vault.toml = vault.toml.replace(
        &wasm("vault").display().to_string(),
        &vault_copy.display().to_string(),
    );
    for (file, policy) in [
        (&python, &policy),
        (&javascript, &policy),
        (&rust, &policy),
        (&vault_copy, &vault),
    ] {
        sign(dir.path(), file, policy, &key, "acme");
    }

    let app = Spawn::new(Engine::Sqlite, vec![vault, policy])
        .config(TRUSTS_VAULT)
        .config(&format!(
            "require_signatures = true\ntrusted_publishers = [{{ name = \"acme\", public_key = \"{public}\" }}]"
        ))
        .start()
        .await;
    let writer = token(&app, "acme", &["contacts:*"]).await;
    let (status, ada) = call(
        &app,
        reqwest::Method::POST,
        "/contacts/api/contacts",
        &writer,
        Some(json!({ "name": "Ada", "email": "ada@example.com" })),
    )
    .await;
    assert_eq!(status, 201, "{ada}");
    let contact = format!("/contacts/api/contacts/{}", ada["id"]);

    for file in [&javascript, &rust, &python] {
        let signature = std::fs::read_to_string(format!("{}.sig", file.display())).unwrap();
        let deployed = app
            .admin(reqwest::Method::PUT, "/admin/components/contacts")
            .header("x-component-signature", signature.trim())
            .body(std::fs::read(file).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(deployed.status(), 200, "{}", file.display());
        let report: Value = deployed.json().await.unwrap();
        assert_eq!(report["signer"], "acme", "{report}");
        let (status, shown) = call(&app, reqwest::Method::GET, &contact, &writer, None).await;
        assert_eq!(status, 200, "{}: {shown}", file.display());
        assert_eq!(shown["name"], "Ada", "{shown}");
    }

    // An unsigned build is refused and changes nothing.
    let unsigned = app
        .admin(reqwest::Method::PUT, "/admin/components/contacts")
        .body(std::fs::read(Example::JavaScript.wasm()).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 422);
    let (status, _) = call(&app, reqwest::Method::GET, &contact, &writer, None).await;
    assert_eq!(status, 200);
}

/// Installed as a per-organization plugin, the Python example serves only organizations whose
/// admin enabled it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_enables_the_python_plugin_for_itself_only() {
    use crate::plugins::admin_of_new_org;

    let mut plugin = contacts_policy(Example::Python);
    plugin.toml.push_str("per_organization = true\n");
    let mut policies = crate::org::tenancy_policies();
    policies.push(plugin);
    let app = Spawn::new(Engine::Sqlite, policies).start().await;
    let (acme, acme_slug) = admin_of_new_org(&app, "acme").await;
    let (globex, _) = admin_of_new_org(&app, "globex").await;
    let list = "/contacts/api/contacts";

    let (status, _) = call(&app, reqwest::Method::GET, list, &acme, None).await;
    assert_eq!(status, 404, "not enabled yet");
    let enabled = app
        .client
        .put(app.url(&format!(
            "/org/api/organizations/{acme_slug}/plugins/contacts"
        )))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap();
    assert_eq!(enabled.status(), 200);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut status = StatusCode::NOT_FOUND;
    while status != StatusCode::OK && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        status = call(&app, reqwest::Method::GET, list, &acme, None).await.0;
    }
    assert_eq!(status, 200, "enabled for acme");
    let (status, _) = call(&app, reqwest::Method::GET, list, &globex, None).await;
    assert_eq!(status, 404, "not for globex");
}

/// Both released worlds load side by side: the `greeter` fixture is built for `service` (the
/// first release, the caller in the request) and the Python example for `plugin` (the caller
/// behind `context`); each serves, and `component check` and the component list tell them apart
/// by what they export and import.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_of_both_released_worlds_serve_side_by_side() {
    let greeter = Policy::new("greeter", "greeter", "greeter", "");
    let app = Spawn::new(
        Engine::Sqlite,
        vec![vault(), greeter, contacts_policy(Example::Python)],
    )
    .config(TRUSTS_VAULT)
    .start()
    .await;
    assert_eq!(app.get("/greeter").await.status(), 200, "service world");
    let reader = token(&app, "acme", &["contacts:read"]).await;
    let (status, listed) = call(
        &app,
        reqwest::Method::GET,
        "/contacts/api/contacts",
        &reader,
        None,
    )
    .await;
    assert_eq!(status, 200, "plugin world: {listed}");

    let policy = Example::Python.dir().join("contacts.toml");
    let (_, report, _) = check(&Example::Python.wasm(), &policy);
    let context = import(&report, "truevalue:platform/context")
        .cloned()
        .unwrap_or_else(|| panic!("the plugin world imports context: {report}"));
    assert_eq!(context["status"], "granted", "{context}");
}
