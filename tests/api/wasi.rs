//! WASI as plugins need it, through the `outbound` fixture: outgoing HTTP only to the policy's
//! `http_hosts`, sockets that reach nothing, stdout and stderr in the host's log with the
//! request id, fresh randomness and the real clock in every instance, and interfaces imported
//! without a grant linked to stand-ins that refuse every call.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::helpers::{Engine, Policy, Spawn, TestApp};

/// A local HTTP server that answers `got: <body>` and keeps every body it was sent.
struct Receiver {
    address: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

async fn receiver() -> Receiver {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    let app = axum::Router::new().fallback(move |body: String| {
        let kept = kept.clone();
        async move {
            kept.lock().unwrap().push(body.clone());
            format!("got: {body}")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { address, bodies }
}

fn outbound(extra: &str) -> Policy {
    Policy::new("outbound", "outbound", "outbound", extra)
}

async fn send(app: &TestApp, url: &str, body: &str) -> (u16, Value) {
    let response = app
        .post_json("/outbound/send", &json!({ "url": url, "body": body }))
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_http_reaches_only_the_hosts_the_policy_lists() {
    let (listed, other) = (receiver().await, receiver().await);
    let app = Spawn::new(
        Engine::Sqlite,
        vec![outbound(&format!(
            "capabilities = [\"http\"]\nhttp_hosts = [{:?}]",
            listed.address
        ))],
    )
    .start()
    .await;

    let (status, body) = send(&app, &format!("http://{}/hook", listed.address), "ping").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "status": 200, "body": "got: ping" }));
    assert_eq!(*listed.bodies.lock().unwrap(), ["ping"]);

    let (status, body) = send(&app, &format!("http://{}/hook", other.address), "leak").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("HttpRequestDenied"),
        "{body}"
    );
    assert!(other.bodies.lock().unwrap().is_empty(), "nothing left");
    assert!(
        app.logs().contains("outgoing HTTP request denied"),
        "{}",
        app.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_http_capability_no_request_leaves_and_no_socket_connects() {
    let target = receiver().await;
    let app = Spawn::new(Engine::Sqlite, vec![outbound("")]).start().await;

    let (status, body) = send(&app, &format!("http://{}/hook", target.address), "leak").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("HttpRequestDenied"),
        "{body}"
    );

    let connected: Value = app
        .post_json("/outbound/connect", &json!({ "addr": target.address }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(connected["connected"], false, "{connected}");
    assert!(target.bodies.lock().unwrap().is_empty());
}

#[tokio::test]
async fn http_hosts_need_the_capability_and_must_be_bare_hosts() {
    for (extra, says) in [
        (
            "http_hosts = [\"api.example.com\"]",
            "does not grant \\\"http\\\"",
        ),
        ("capabilities = [\"http\"]", "needs `http_hosts`"),
        (
            "capabilities = [\"http\"]\nhttp_hosts = [\"https://api.example.com/v1\"]",
            "no scheme, no path",
        ),
    ] {
        let stderr = Spawn::new(Engine::Sqlite, vec![outbound(extra)])
            .start_refused()
            .await;
        assert!(
            stderr.contains(says) || stderr.contains(&says.replace("\\\"", "\"")),
            "{extra}: {stderr}"
        );
    }
}

#[tokio::test]
async fn stdout_and_stderr_go_to_the_log_tagged_with_the_request() {
    let app = Spawn::new(Engine::Sqlite, vec![outbound("")]).start().await;
    let response = app
        .client
        .get(app.url("/outbound/print?text=plugin-says-hello"))
        .header("x-request-id", "print-request-7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    let mut logs = String::new();
    for _ in 0..50 {
        logs = app.logs();
        if logs.contains("plugin-says-hello (stderr)") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for text in ["plugin-says-hello", "plugin-says-hello (stderr)"] {
        let line = logs
            .lines()
            .find(|line| line.ends_with(text) || line.contains(&format!("{text} ")))
            .unwrap_or_else(|| panic!("no line with {text:?}: {logs}"));
        assert!(line.contains("print-request-7"), "{line}");
        assert!(line.contains("outbound"), "{line}");
    }
}

#[tokio::test]
async fn every_instance_gets_fresh_randomness_and_the_real_clock() {
    let app = Spawn::new(Engine::Sqlite, vec![outbound("")]).start().await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let body: Value = app.get("/outbound/random").await.json().await.unwrap();
        seen.insert(body["random"].as_u64().unwrap());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let told = Duration::from_millis(body["now_ms"].as_u64().unwrap());
        assert!(now.abs_diff(told) < Duration::from_secs(60), "{body}");
    }
    assert_eq!(
        seen.len(),
        5,
        "five requests, five random numbers: {seen:?}"
    );
}

#[tokio::test]
async fn an_ungranted_import_loads_but_every_call_to_it_fails_naming_the_grant() {
    let app = Spawn::new(Engine::Sqlite, vec![outbound("")]).start().await;
    let list = app.components().await;
    let info = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "outbound")
        .unwrap();
    let denied = info["denied_imports"].as_array().unwrap();
    assert!(
        denied
            .iter()
            .any(|d| d.as_str().unwrap().starts_with("truevalue:platform/cache")),
        "{info}"
    );

    assert_eq!(app.get("/outbound/cache").await.status(), 500);
    let logs = app.logs();
    assert!(logs.contains("truevalue:platform/cache"), "{logs}");
    assert!(
        logs.contains("add \\\"cache\\\"") || logs.contains("add \"cache\""),
        "{logs}"
    );

    // Granted, the same version reads the cache.
    let app = Spawn::new(Engine::Sqlite, vec![outbound("capabilities = [\"cache\"]")])
        .start()
        .await;
    assert_eq!(app.get("/outbound/cache").await.status(), 200);
}

/// A Python plugin, unmodified componentize-py output (`tests/plugins/wasi_py`, no
/// `--stub-wasi`): `random`, `uuid`, `time`, `datetime` and `os.urandom` work and differ in
/// every request, `print()` reaches the log, and sockets reach nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_plugin_gets_real_clocks_randomness_and_stdout_but_no_network() {
    let target = receiver().await;
    let policy = Policy::new("wasi_py", "wasi_py", "wasi-py", "");
    let app = Spawn::new(Engine::Sqlite, vec![policy]).start().await;

    let mut answers = Vec::new();
    for _ in 0..3 {
        let response = app.get("/wasi-py/now").await;
        assert_eq!(response.status(), 200);
        answers.push(response.json::<Value>().await.unwrap());
    }
    for field in ["random", "uuid", "urandom"] {
        let distinct: std::collections::BTreeSet<String> =
            answers.iter().map(|a| a[field].to_string()).collect();
        assert_eq!(
            distinct.len(),
            3,
            "{field} differs per request: {answers:?}"
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for answer in &answers {
        assert!(
            (answer["time"].as_f64().unwrap() - now).abs() < 60.0,
            "{answer}"
        );
        let year = &answer["datetime"].as_str().unwrap()[..4];
        assert!(year.parse::<u32>().unwrap() >= 2025, "{answer}");
    }
    assert!(app.logs().contains("wasi-py serving"), "{}", app.logs());

    let port = target.address.rsplit(':').next().unwrap();
    let socket: Value = app
        .get(&format!("/wasi-py/socket?port={port}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(socket["connected"], false, "{socket} {}", app.logs());
}
