//! What a component's statements may cost the host: a query's result is bounded by the
//! policy (and never held whole before it is checked), and a statement still running when the
//! request's deadline passes is stopped, on both engines.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Engine, Policy, Spawn, TestApp};
use crate::on_both_engines;

fn hog(limits: &str) -> Policy {
    Policy::new(
        "hog",
        "db_hog",
        "hog",
        &format!("capabilities = [\"database\"]\n[limits]\n{limits}"),
    )
}

/// A line of `/proc/<pid>/status`, in KiB.
fn status_kib(app: &TestApp, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", app.pid())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// The host's CPU time so far (user + system), in clock ticks.
fn cpu_ticks(app: &TestApp) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", app.pid())).unwrap();
    // Fields after the command name, which is in parentheses: utime and stime are 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

async fn rows(app: &TestApp, n: u64, width: u64) -> Value {
    let response = app.get(&format!("/hog/rows?n={n}&width={width}")).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn a_huge_result_is_refused_before_the_host_holds_it(engine: Engine) {
    let app = Spawn::new(engine, vec![hog("memory_mib = 16\ntimeout_ms = 20000")])
        .start()
        .await;
    assert_eq!(rows(&app, 10, 10).await["rows"], 10, "the control works");
    let peak_before = status_kib(&app, "VmHWM");

    // A million rows of 100 characters: about 100 MB of values before any overhead, so
    // more than a 16 MiB instance could ever receive.
    let response = app.get("/hog/rows?n=1000000&width=100").await;
    // The kernel counts a process's pages per CPU and folds them in now and then, so the peak
    // it reports can read a little lower than a moment before: that is no growth.
    let grown_mib = status_kib(&app, "VmHWM").saturating_sub(peak_before) / 1024;
    assert!(
        grown_mib < 100,
        "the host's peak memory grew by {grown_mib} MiB for a result it refused"
    );
    assert_eq!(response.status(), 200);
    let refused: Value = response.json().await.unwrap();
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Invalid")
            && error.contains("exceeds the policy's limit of 16777216 bytes; page it with LIMIT"),
        "the component is told the limit: {refused}"
    );
    assert_eq!(
        rows(&app, 10, 10).await["rows"],
        10,
        "the host keeps serving"
    );
}
on_both_engines!(a_huge_result_is_refused_before_the_host_holds_it);

async fn a_result_is_bounded_by_the_policys_row_limit(engine: Engine) {
    let app = Spawn::new(engine, vec![hog("max_result_rows = 50")])
        .start()
        .await;
    assert_eq!(rows(&app, 50, 10).await["rows"], 50);
    let refused = rows(&app, 51, 10).await;
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("exceeds the policy's limit of 50 rows; page it with LIMIT"),
        "{refused}"
    );
}
on_both_engines!(a_result_is_bounded_by_the_policys_row_limit);

#[tokio::test]
async fn a_result_limit_above_the_memory_limit_is_refused() {
    let stderr = Spawn::new(
        Engine::Sqlite,
        vec![hog("memory_mib = 16\nmax_result_bytes = 16777217")],
    )
    .start_refused()
    .await;
    assert!(
        stderr.contains(
            "limits.max_result_bytes must be between 1 and the memory limit (16777216 bytes)"
        ),
        "{stderr}"
    );
}

/// Asks for a statement that never ends; the request's deadline answers 504, and the log says
/// what the request was waiting for.
async fn start_an_endless_statement(app: &TestApp) {
    let response = app.get("/hog/endless").await;
    assert_eq!(response.status(), 504);
    let logs = app.logs();
    assert!(
        logs.lines()
            .any(|line| line.contains("ran past its deadline")
                && line.contains("a database statement")),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stops_a_statement_past_the_deadline() {
    let app = Spawn::new(
        Engine::Sqlite,
        vec![hog("timeout_ms = 1000\nmax_instances = 4")],
    )
    .start()
    .await;
    start_an_endless_statement(&app).await;

    // The next write by the same component gets the write lock the endless statement held.
    let write = app.client.post(app.url("/hog/marks")).send().await.unwrap();
    assert_eq!(write.status(), 201, "{}", write.text().await.unwrap());

    // And nothing is left computing: the host's CPU time stands still while it is idle.
    let before = cpu_ticks(&app);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu_ticks(&app) - before;
    assert!(
        spent < 50,
        "the idle host used {spent} ticks of CPU in 2 s (200 is a core): a statement runs on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cancels_a_statement_past_the_deadline() {
    let app = Spawn::new(
        Engine::Postgres,
        vec![hog("timeout_ms = 1000\nmax_instances = 4")],
    )
    .start()
    .await;
    start_an_endless_statement(&app).await;

    let pool = sqlx::PgPool::connect(app.database_url.as_deref().unwrap())
        .await
        .unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let role = format!("{database}_hog");
    let mut active: i64 = -1;
    for _ in 0..100 {
        active = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND state = 'active'",
        )
        .bind(&role)
        .fetch_one(&pool)
        .await
        .unwrap();
        if active == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        active, 0,
        "the component's statement still runs after its 504"
    );
    let write = app.client.post(app.url("/hog/marks")).send().await.unwrap();
    assert_eq!(write.status(), 201, "the host keeps serving");
}
