//! Installing and uninstalling at runtime: an operator installs a plugin with its policy
//! through the admin API or the CLI, and it serves at once — its permissions in the catalog —
//! and after restarts; bad installs are refused with what to fix and change nothing; an
//! uninstall takes it away at once and for good, keeping its data for a later install.
//! Compilation runs one at a time behind a bounded queue.

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::events::{TRUSTS_PUBLISHER, create, subscriber, wait_for_received};
use crate::example_plugins::Example;
use crate::helpers::{Engine, Policy, Spawn, TestApp, problem, wasm};
use crate::on_both_engines;
use crate::permission::{Person, get, json_of, organization, shipped};
use crate::signatures::{keygen, sign, truevalue};

/// The Python example's policy file as it ships (its `wasm` line names no file of this host).
fn contacts_policy() -> String {
    std::fs::read_to_string(Example::Python.dir().join("contacts.toml")).unwrap()
}

async fn install(
    app: &TestApp,
    name: &str,
    policy: &str,
    wasm: Vec<u8>,
    signature: Option<&str>,
) -> reqwest::Response {
    let mut form = reqwest::multipart::Form::new()
        .text("name", name.to_string())
        .text("policy", policy.to_string())
        .part("wasm", reqwest::multipart::Part::bytes(wasm));
    if let Some(signature) = signature {
        form = form.text("signature", signature.to_string());
    }
    app.admin(Method::POST, "/admin/components")
        .multipart(form)
        .send()
        .await
        .unwrap()
}

async fn uninstall(app: &TestApp, name: &str) -> reqwest::Response {
    app.admin(Method::DELETE, &format!("/admin/components/{name}"))
        .send()
        .await
        .unwrap()
}

async fn contacts(app: &TestApp, who: &Person) -> (StatusCode, Value) {
    let response = get(app, "/contacts/api/contacts", who).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn catalog(app: &TestApp, who: &Person) -> Vec<Value> {
    let body = json_of(get(app, "/permission/api/permissions", who).await, 200).await;
    body["items"].as_array().unwrap().clone()
}

fn component_names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

on_both_engines!(an_operator_installs_a_plugin_that_serves_at_once_and_after_restarts);
async fn an_operator_installs_a_plugin_that_serves_at_once_and_after_restarts(engine: Engine) {
    let mut app = Spawn::new(
        engine,
        vec![shipped("auth"), shipped("org"), shipped("permission")],
    )
    .start()
    .await;
    let (_, admin) = organization(&app).await;
    assert_eq!(contacts(&app, &admin).await.0, 404);
    let contacts_read = json!({ "permission": "contacts:read", "component": "contacts" });
    assert!(!catalog(&app, &admin).await.contains(&contacts_read));

    let python = std::fs::read(Example::Python.wasm()).unwrap();
    let response = install(&app, "contacts", &contacts_policy(), python.clone(), None).await;
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["location"].to_str().unwrap(),
        "/admin/components/contacts"
    );
    let info: Value = response.json().await.unwrap();
    assert_eq!(info["status"], "serving", "{info}");
    assert_eq!(info["routes"], json!(["/contacts"]));
    assert_eq!(info["installed"], true);

    // Served at once, its declared permissions in the catalog.
    let created = app
        .client
        .post(app.url("/contacts/api/contacts"))
        .bearer_auth(&admin.access)
        .json(&json!({ "name": "Ada Lovelace", "email": "ada@example.com" }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert!(catalog(&app, &admin).await.contains(&contacts_read));

    // Installing the same name again, or a route another component holds: 409 and 422.
    let again = install(&app, "contacts", &contacts_policy(), python.clone(), None).await;
    problem(again, 409).await;
    let clash = contacts_policy().replace("[\"/contacts\"]", "[\"/org\"]");
    let body = problem(
        install(&app, "crm", &clash, python.clone(), None).await,
        422,
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("\"/org\""),
        "{body}"
    );

    // A crash and restart: still installed, with its data.
    app.crash_and_restart().await;
    let (status, listed) = contacts(&app, &admin).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["items"][0]["name"], "Ada Lovelace");

    // Uninstalled: gone at once, from the catalog too, and after a restart.
    assert_eq!(uninstall(&app, "contacts").await.status(), 204);
    assert_eq!(contacts(&app, &admin).await.0, 404);
    assert!(!catalog(&app, &admin).await.contains(&contacts_read));
    assert!(!component_names(&app.components().await).contains(&"contacts".to_string()));
    problem(uninstall(&app, "contacts").await, 404).await;
    app.crash_and_restart().await;
    assert_eq!(contacts(&app, &admin).await.0, 404);

    // Installed again, in another language: the data stayed.
    let js = std::fs::read(Example::JavaScript.wasm()).unwrap();
    let response = install(&app, "contacts", &contacts_policy(), js, None).await;
    assert_eq!(response.status(), 201);
    let (status, listed) = contacts(&app, &admin).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["items"][0]["name"], "Ada Lovelace");

    // A component of the policies directory is not the admin API's to uninstall.
    let body = problem(uninstall(&app, "org").await, 409).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("policies directory"),
        "{body}"
    );
    assert_eq!(
        app.get("/org/api/organizations").await.status(),
        StatusCode::UNAUTHORIZED,
        "org still routes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_install_is_refused_with_what_to_fix_and_changes_nothing() {
    let app = Spawn::new(
        Engine::Sqlite,
        vec![Policy::new("greeter", "greeter", "greeter", "")],
    )
    .start()
    .await;
    let before = app.components().await;
    let greeter = std::fs::read(wasm("greeter")).unwrap();
    let policy = "routes = [\"/plugin\"]\npublic_routes = [\"/plugin\"]\n";

    let cases: [(&str, String, Vec<u8>, &str); 8] = [
        ("Bad-Name", policy.into(), greeter.clone(), "component name"),
        (
            "plugin",
            "routes = [\"/plugin\"\n".into(),
            greeter.clone(),
            "the policy of `plugin`: TOML parse error",
        ),
        (
            "plugin",
            "routes = [\"/plugin\"]\nmemory = 1\n".into(),
            greeter.clone(),
            "memory",
        ),
        (
            "plugin",
            "routes = [\"/greeter\"]\n".into(),
            greeter.clone(),
            "claimed by `greeter`",
        ),
        // The longest route wins: a plugin under another component's route would take over
        // that part of it (a login route, say, and every password sent to it).
        (
            "plugin",
            "routes = [\"/greeter/login\"]\npublic_routes = [\"/greeter/login\"]\n".into(),
            greeter.clone(),
            "lies under `greeter`'s route \"/greeter\"",
        ),
        // Gateways ask their nodes on /_truevalue: a route there would answer for the host.
        (
            "plugin",
            "routes = [\"/_truevalue/installed\"]\n".into(),
            greeter.clone(),
            "which the host keeps for itself",
        ),
        (
            "plugin",
            "routes = [\"plugin\"]\n".into(),
            greeter.clone(),
            "must be a path prefix",
        ),
        (
            "plugin",
            policy.into(),
            b"\0asm not really".to_vec(),
            "component",
        ),
    ];
    for (name, policy, bytes, says) in cases {
        let body = problem(install(&app, name, &policy, bytes, None).await, 422).await;
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{name} {policy:?}: {detail}");
    }
    // A form without a part, or not a form at all.
    let form = reqwest::multipart::Form::new()
        .text("name", "plugin")
        .text("policy", policy);
    let response = app
        .admin(Method::POST, "/admin/components")
        .multipart(form)
        .send()
        .await
        .unwrap();
    let body = problem(response, 422).await;
    assert!(
        body["detail"].as_str().unwrap().contains("`wasm`"),
        "{body}"
    );
    let response = app
        .admin(Method::POST, "/admin/components")
        .body(greeter.clone())
        .send()
        .await
        .unwrap();
    let body = problem(response, 422).await;
    assert!(
        body["detail"].as_str().unwrap().contains("multipart"),
        "{body}"
    );

    assert_eq!(
        app.components().await,
        before,
        "the refusals changed nothing"
    );
    assert_eq!(app.get("/plugin").await.status(), 404);
    assert!(!app.data_dir.join("installed/plugin.toml").exists());
}

/// An install refused once its database was opened (a migration failed) leaves no database
/// behind, and no refused install shows in `/metrics` as if the component existed; the fixed
/// version then installs as a first install would.
async fn a_refused_install_leaves_no_database_and_no_metrics(engine: Engine) {
    let app = Spawn::new(engine, Vec::new()).start().await;
    let policy = "routes = [\"/hostile\"]\ncapabilities = [\"database\"]\n";
    let broken = std::fs::read(wasm("bad_migration")).unwrap();
    let body = problem(install(&app, "hostile", policy, broken, None).await, 422).await;
    assert!(
        body["detail"].as_str().unwrap().contains("migration 3"),
        "{body}"
    );
    let garbage = b"\0asm not really".to_vec();
    problem(install(&app, "garbage", policy, garbage, None).await, 422).await;

    let metrics = app.metrics().await;
    for name in ["hostile", "garbage"] {
        let series = format!("component=\"{name}\"");
        assert!(!metrics.contains(&series), "{name} in /metrics:\n{metrics}");
    }
    assert!(
        !database_exists(&app, "hostile").await,
        "the refused install's database stays"
    );

    let fixed = std::fs::read(wasm("hostile")).unwrap();
    assert_eq!(
        install(&app, "hostile", policy, fixed, None).await.status(),
        StatusCode::CREATED
    );
    assert!(
        app.metrics()
            .await
            .contains("truevalue_instances_live{component=\"hostile\"}")
    );

    // Uninstalled, its database stays for a later install; a refused one does not take it.
    let response = app
        .admin(Method::DELETE, "/admin/components/hostile")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let broken = std::fs::read(wasm("bad_migration")).unwrap();
    problem(install(&app, "hostile", policy, broken, None).await, 422).await;
    assert!(
        database_exists(&app, "hostile").await,
        "the kept database was removed"
    );
}
on_both_engines!(a_refused_install_leaves_no_database_and_no_metrics);

/// Whether the component has a database: its SQLite file, or its PostgreSQL schema or role.
async fn database_exists(app: &TestApp, component: &str) -> bool {
    let Some(url) = &app.database_url else {
        return app.data_dir.join(format!("db/{component}.sqlite")).exists();
    };
    let database = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) \
         OR EXISTS (SELECT 1 FROM pg_roles WHERE rolname = current_database() || '_' || $1)",
    )
    .bind(component)
    .fetch_one(&database)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_installs_a_signed_plugin_and_uninstalls_it() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "acme");
    let app = Spawn::new(Engine::Sqlite, Vec::new())
    .config(&format!(
        "require_signatures = true\ntrusted_publishers = [{{ name = \"acme\", public_key = \"{public}\" }}]\n"
    ))
    .start()
    .await;
    let plugin = dir.path().join("greeter.wasm");
    std::fs::copy(wasm("greeter_v2"), &plugin).unwrap();
    let policy = Policy {
        name: "greeter".into(),
        toml: "routes = [\"/greeter\"]\npublic_routes = [\"/greeter\"]\n".into(),
    };
    let policy_file = dir.path().join("greeter.toml");
    std::fs::write(&policy_file, &policy.toml).unwrap();
    let admin = [
        "--admin-url",
        &app.admin_address,
        "--token",
        &app.admin_token,
    ];
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_truevalue"))
            .arg("component")
            .args(args)
            .args(admin)
            .output()
            .unwrap()
    };
    let install = [
        "install",
        "greeter",
        plugin.to_str().unwrap(),
        "--policy",
        policy_file.to_str().unwrap(),
    ];

    // Unsigned: refused, and the CLI says why.
    let refused = cli(&install);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unsigned"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(app.get("/greeter").await.status(), 404);

    // Signed with this policy by a trusted publisher: installed, the signer shown.
    sign(dir.path(), &plugin, &policy, &key, "acme");
    let installed = cli(&install);
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let info: Value = serde_json::from_slice(&installed.stdout).unwrap();
    assert_eq!(info["signer"], "acme", "{info}");
    let body: Value = app.get("/greeter").await.json().await.unwrap();
    assert_eq!(body["version"], "v2");

    let listed = truevalue(&[
        "list",
        "--admin-url",
        &app.admin_address,
        "--token",
        &app.admin_token,
    ]);
    assert!(listed.contains("\"greeter\""), "{listed}");
    assert!(cli(&["uninstall", "greeter"]).status.success());
    assert_eq!(app.get("/greeter").await.status(), 404);
}

/// A component installed again with its policy routing a topic elsewhere gets the topic's
/// events at the new route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinstalled_subscriber_gets_its_events_where_its_new_policy_routes_them() {
    let app = Spawn::new(Engine::Sqlite, vec![])
        .config(TRUSTS_PUBLISHER)
        .start()
        .await;
    let policy = subscriber().toml;
    let elsewhere = policy.replace(
        "\"/publisher/internal/events\"",
        "\"/publisher/internal/gone\"",
    );
    assert_ne!(elsewhere, policy);
    let publisher = std::fs::read(wasm("publisher")).unwrap();
    let first = install(&app, "publisher", &elsewhere, publisher.clone(), None).await;
    assert_eq!(first.status(), 201);
    assert_eq!(uninstall(&app, "publisher").await.status(), 204);
    let again = install(&app, "publisher", &policy, publisher, None).await;
    assert_eq!(again.status(), 201);

    let response = create(&app, json!({ "name": "t0", "org_id": "org-1" })).await;
    assert_eq!(response.status(), 201);
    let body = wait_for_received(&app, 1).await;
    assert_eq!(body["events"][0]["subject"], "t0", "{body}");
}

/// `wasm` made a version never compiled before: the same component with a custom section
/// holding `tag`, so its digest is new.
fn never_compiled(wasm: &Path, tag: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(wasm).unwrap();
    let name = b"truevalue-test";
    let payload_len = 1 + name.len() + tag.len();
    bytes.push(0);
    leb128(&mut bytes, payload_len);
    leb128(&mut bytes, name.len());
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(tag.as_bytes());
    bytes
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

async fn queued_compilations(app: &TestApp) -> u64 {
    app.metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix("truevalue_compile_queue "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_past_the_compile_queue_are_refused_and_cached_versions_never_wait() {
    let app = Spawn::new(
        Engine::Sqlite,
        vec![Policy::new("greeter", "greeter", "greeter", "")],
    )
    .config("compile_queue = 1")
    .start()
    .await;
    let tag = uuid::Uuid::new_v4().to_string();
    // A big component takes seconds to compile.
    let big = never_compiled(&Example::Python.wasm(), &tag);
    let first = {
        let (app_admin, token, big) = (
            app.admin_address.clone(),
            app.admin_token.clone(),
            big.clone(),
        );
        tokio::spawn(async move {
            let form = reqwest::multipart::Form::new()
                .text("name", "contacts")
                .text("policy", contacts_policy())
                .part("wasm", reqwest::multipart::Part::bytes(big));
            reqwest::Client::new()
                .post(format!("{app_admin}/admin/components"))
                .bearer_auth(token)
                .multipart(form)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    while queued_compilations(&app).await == 0 {
        assert!(
            !first.is_finished(),
            "the install ended before it was seen compiling"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The queue holds one: another version that needs compiling is refused for now.
    let other = never_compiled(&wasm("greeter_v2"), &tag);
    let response = app
        .admin(Method::PUT, "/admin/components/greeter")
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "5");
    let body = problem(response, 503).await;
    assert!(
        body["detail"].as_str().unwrap().contains("compiling"),
        "{body}"
    );
    // A version compiled before does not wait: the greeter's own, redeployed.
    let cached = app.deploy("greeter", "greeter").await;
    assert_eq!(cached.status(), 200);

    assert_eq!(first.await.unwrap(), 201);
    assert_eq!(queued_compilations(&app).await, 0);
    let retried = app
        .admin(Method::PUT, "/admin/components/greeter")
        .body(other)
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 200);
    let body: Value = app.get("/greeter").await.json().await.unwrap();
    assert_eq!(body["version"], "v2");
}

/// An installed component whose kept policy no longer passes at start-up (a policy file added to
/// the policies directory claims its route) is left out — and says so: `/readyz` names it with
/// why, and the operator can uninstall it through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installed_component_left_out_at_start_up_is_named_and_can_be_uninstalled() {
    let mut app = Spawn::new(
        Engine::Sqlite,
        vec![Policy::new("greeter", "greeter", "greeter", "")],
    )
    .start()
    .await;
    let policy = "routes = [\"/late\"]\npublic_routes = [\"/late\"]\n";
    let installed = install(
        &app,
        "late",
        policy,
        std::fs::read(wasm("greeter")).unwrap(),
        None,
    )
    .await;
    assert_eq!(installed.status(), 201);
    let other = format!(
        "wasm = {:?}\n{policy}",
        wasm("greeter").display().to_string()
    );
    std::fs::write(app.policies_dir().join("other.toml"), other).unwrap();
    app.crash_and_restart().await;

    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    let why = ready["components"]["late"].as_str().unwrap_or_default();
    assert!(
        why.contains("left out") && why.contains("`other`"),
        "{ready}"
    );

    assert_eq!(
        uninstall(&app, "late").await.status(),
        StatusCode::NO_CONTENT
    );
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(
        uninstall(&app, "late").await.status(),
        StatusCode::NOT_FOUND
    );
    app.crash_and_restart().await;
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "and stays uninstalled: {ready}");
}

/// Sends `head` to the admin listener, then 1 MiB chunks of a chunked body until the host
/// answers (or `chunks` are sent), and returns what it answered.
async fn admin_raw(app: &TestApp, head: &str, chunks: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.admin_address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "w".repeat(1 << 20));
    for _ in 0..chunks {
        // The host stops reading once the body is past its limit.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A deploy, rollback or install body past the admin API's limit (256 MiB) is a 413 problem,
/// whether its length is declared (refused before any of it is read) or streamed, and the
/// component serves on as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_body_past_the_limit_is_a_413_problem() {
    let app = Spawn::new(
        Engine::Sqlite,
        vec![Policy::new("greeter", "greeter", "greeter", "")],
    )
    .start()
    .await;
    let token = &app.admin_token;
    let declared = format!(
        "PUT /admin/components/greeter HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\nContent-Length: 300000000\r\n\r\n"
    );
    let streamed = |method: &str, path: &str, content_type: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
    };
    let form = "multipart/form-data; boundary=X";
    let cases = [
        (declared, 0),
        (
            streamed("PUT", "/admin/components/greeter", "application/wasm"),
            300,
        ),
        (
            streamed(
                "POST",
                "/admin/components/greeter/rollback",
                "application/json",
            ),
            300,
        ),
        (streamed("POST", "/admin/components", form), 300),
    ];
    for (head, chunks) in cases {
        let answer = admin_raw(&app, &head, chunks).await;
        let request_line = head.lines().next().unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "{request_line}: {answer}"
        );
        assert!(
            answer.contains("application/problem+json")
                && answer.contains("larger than the limit of 268435456 bytes"),
            "{request_line}: {answer}"
        );
    }
    assert_eq!(app.get("/greeter").await.status(), 200);
}
