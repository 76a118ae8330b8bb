//! What an operator sees and can do: metrics from the first scrape, and the way back from a
//! version pinned by an admin deploy to the policy's own `wasm` file.

use reqwest::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{Engine, Policy, Spawn, TestApp, problem, wasm};

async fn app() -> TestApp {
    Spawn::new(
        Engine::Sqlite,
        vec![Policy::new("greeter", "greeter", "greeter", "")],
    )
    .start()
    .await
}

fn sha256_of(name: &str) -> String {
    hex::encode(Sha256::digest(std::fs::read(wasm(name)).unwrap()))
}

fn greeter(list: &Value) -> Value {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "greeter")
        .cloned()
        .unwrap()
}

async fn served_version(app: &TestApp) -> String {
    let response = app.get("/greeter").await;
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The value of the one sample whose line starts with `prefix`.
fn value(metrics: &str, prefix: &str) -> f64 {
    let lines: Vec<&str> = metrics.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(
        lines.len(),
        1,
        "one sample starting {prefix:?} in:\n{metrics}"
    );
    lines[0].rsplit(' ').next().unwrap().parse().unwrap()
}

fn component_info(name: &str, version: &str, digest: &str) -> String {
    format!(
        "truevalue_component_info{{component=\"{name}\",version=\"{version}\",digest=\"{digest}\"}} 1"
    )
}

async fn reset(app: &TestApp, name: &str) -> reqwest::Response {
    app.admin(Method::POST, &format!("/admin/components/{name}/reset"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_first_scrape_shows_the_build_the_components_and_the_process() {
    let app = app().await;

    let metrics = app.metrics().await;

    let build = format!(
        "truevalue_build_info{{version=\"{}\"",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&metrics, &build), 1.0);
    assert!(
        metrics
            .lines()
            .any(|l| l == component_info("greeter", "1.0.0", &sha256_of("greeter"))),
        "{metrics}"
    );
    assert!(value(&metrics, "process_resident_memory_bytes ") > 1e6);
    assert!(value(&metrics, "process_open_fds ") >= 3.0);
    assert!(value(&metrics, "process_cpu_seconds_total ") >= 0.0);
    let started = value(&metrics, "process_start_time_seconds ");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "{started} vs {now}"
    );
    // Nothing was served yet, and the per-component series are there at zero.
    assert_eq!(
        value(
            &metrics,
            "truevalue_request_duration_seconds_count{component=\"greeter\"}"
        ),
        0.0
    );
    assert_eq!(
        value(
            &metrics,
            "truevalue_component_call_seconds_count{component=\"greeter\"}"
        ),
        0.0
    );
    assert_eq!(
        value(
            &metrics,
            "truevalue_component_traps_total{component=\"greeter\",kind=\"timeout\"}"
        ),
        0.0
    );
    assert_eq!(
        value(&metrics, "truevalue_instances_live{component=\"greeter\"}"),
        0.0
    );
}

#[tokio::test]
async fn a_deploy_and_a_rollback_replace_the_component_info_series() {
    let app = app().await;
    let (v1, v2) = (sha256_of("greeter"), sha256_of("greeter_v2"));
    let deployed: Value = app
        .deploy("greeter", "greeter_v2")
        .await
        .json()
        .await
        .unwrap();

    let metrics = app.metrics().await;
    let version = deployed["version"].as_str().unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == component_info("greeter", version, &v2)),
        "{metrics}"
    );
    assert!(
        !metrics.contains(&v1),
        "the old version's series is gone:\n{metrics}"
    );

    let response = app
        .admin(Method::POST, "/admin/components/greeter/rollback")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == component_info("greeter", "1.0.0", &v1))
    );
    assert!(!metrics.contains(&v2), "{metrics}");
}

#[tokio::test]
async fn the_component_list_says_whether_a_version_is_pinned() {
    let app = app().await;
    let listed = greeter(&app.components().await);
    assert_eq!(listed["pinned"], false);
    assert_eq!(listed["policy_digest"], sha256_of("greeter"));

    assert_eq!(app.deploy("greeter", "greeter_v2").await.status(), 200);

    let listed = greeter(&app.components().await);
    assert_eq!(listed["pinned"], true);
    assert_eq!(listed["digest"], sha256_of("greeter_v2"));
    assert_eq!(listed["policy_digest"], sha256_of("greeter"));
}

#[tokio::test]
async fn a_pinned_version_unlike_the_policys_file_is_warned_about_at_start() {
    let mut app = app().await;
    assert_eq!(app.deploy("greeter", "greeter_v2").await.status(), 200);

    app.crash_and_restart().await;

    assert_eq!(served_version(&app).await, "v2", "the pin still wins");
    let logs = app.logs();
    let warning = logs
        .lines()
        .find(|l| l.contains("WARN") && l.contains("pinned"))
        .unwrap_or_else(|| panic!("no warning about the pin in:\n{logs}"));
    assert!(warning.contains(&sha256_of("greeter_v2")), "{warning}");
    assert!(warning.contains(&sha256_of("greeter")), "{warning}");
    assert!(
        warning.contains("POST /admin/components/greeter/reset"),
        "{warning}"
    );
}

#[tokio::test]
async fn no_pin_warning_without_a_pin() {
    let mut app = app().await;
    app.crash_and_restart().await;
    assert!(!app.logs().contains("pinned"), "{}", app.logs());
}

#[tokio::test]
async fn a_reset_returns_to_the_policys_file_and_survives_a_restart() {
    let mut app = app().await;
    assert_eq!(app.deploy("greeter", "greeter_v2").await.status(), 200);
    assert_eq!(served_version(&app).await, "v2");

    let response = reset(&app, "greeter").await;

    assert_eq!(response.status(), 200);
    let info: Value = response.json().await.unwrap();
    assert_eq!(info["digest"], sha256_of("greeter"));
    assert_eq!(info["pinned"], false);
    assert_eq!(
        info["previous"]["digest"],
        sha256_of("greeter_v2"),
        "the pinned version stays to roll back to"
    );
    assert_eq!(served_version(&app).await, "v1");

    app.crash_and_restart().await;
    assert_eq!(
        served_version(&app).await,
        "v1",
        "the policy's file is followed"
    );
    let listed = greeter(&app.components().await);
    assert_eq!(listed["pinned"], false);
    assert_eq!(listed["previous"]["digest"], sha256_of("greeter_v2"));
    assert!(!app.logs().contains("pinned"), "{}", app.logs());
}

#[tokio::test]
async fn a_deploy_after_a_reset_pins_again() {
    let mut app = app().await;
    assert_eq!(app.deploy("greeter", "greeter_v2").await.status(), 200);
    assert_eq!(reset(&app, "greeter").await.status(), 200);

    assert_eq!(app.deploy("greeter", "greeter_v2").await.status(), 200);
    app.crash_and_restart().await;

    assert_eq!(served_version(&app).await, "v2");
    assert_eq!(greeter(&app.components().await)["pinned"], true);
}

#[tokio::test]
async fn a_reset_of_an_unknown_component_is_not_found() {
    let app = app().await;
    problem(reset(&app, "nobody").await, 404).await;
}

/// Operators profile a slow plugin with `perf`: with `perf_map = true` the host names every
/// compiled guest function in `/tmp/perf-<pid>.map`, and without it writes nothing there.
#[tokio::test]
async fn perf_map_names_the_guest_functions_for_perf_only_when_asked() {
    let mapped = Spawn::new(
        Engine::Sqlite,
        vec![Policy::new("wasi_py", "wasi_py", "wasi-py", "")],
    )
    .config("perf_map = true")
    .start()
    .await;
    let plain = app().await;
    assert_eq!(mapped.get("/wasi-py/now").await.status(), 200);
    assert_eq!(plain.get("/greeter").await.status(), 200);

    let map_of = |app: &TestApp| std::path::PathBuf::from(format!("/tmp/perf-{}.map", app.pid()));
    let map = std::fs::read_to_string(map_of(&mapped)).expect("the perf map");
    let _ = std::fs::remove_file(map_of(&mapped));
    // `perf`'s format, a line per function: `0x<start> <size hex> <name>`. The plugin's
    // interpreter loop, which every Python request runs, is named from the component.
    let named = map.lines().any(|line| {
        let fields: Vec<&str> = line.splitn(3, ' ').collect();
        fields.len() == 3
            && fields[0]
                .strip_prefix("0x")
                .is_some_and(|start| u64::from_str_radix(start, 16).is_ok_and(|a| a > 0))
            && u64::from_str_radix(fields[1], 16).is_ok_and(|size| size > 0)
            && fields[2].ends_with("::_PyEval_EvalFrameDefault")
    });
    assert!(named, "the interpreter loop is not named in the perf map");
    assert!(!map_of(&plain).exists(), "a perf map without perf_map");
}
