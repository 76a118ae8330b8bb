//! A component that traps, loops, exhausts its memory or floods its instances costs one
//! request a 5xx (or a 503): never the host, never another component.

use crate::helpers::{Engine, HOSTILE_LIMITS, Policy, Spawn, TestApp, problem};

async fn app(hostile_limits: &str) -> TestApp {
    let hostile = Policy::new("hostile", "hostile", "hostile", hostile_limits);
    let greeter = Policy::new("greeter", "greeter", "greeter", "");
    Spawn::new(Engine::Sqlite, vec![hostile, greeter])
        .start()
        .await
}

#[tokio::test]
async fn a_trap_costs_one_request_a_500_and_the_next_is_served() {
    let app = app(HOSTILE_LIMITS).await;
    let body = problem(app.get("/hostile/trap").await, 500).await;
    assert!(
        !body["detail"].as_str().unwrap().contains("a component bug"),
        "the trap's detail stays in the log"
    );
    assert!(
        app.logs().contains("component `hostile` failed"),
        "the log has the detail"
    );
    assert_eq!(app.get("/hostile/counter").await.status(), 200);
    assert_eq!(app.get("/greeter").await.status(), 200);
}

#[tokio::test]
async fn endless_loops_are_stopped_at_the_deadline_and_never_hold_the_host() {
    let app = app("capabilities = [\"database\"]\n[limits]\ntimeout_ms = 3000").await;
    // More loops than the host has worker threads: each must still yield its thread.
    let loops = futures::future::join_all((0..3).map(|_| async {
        let response = app.get("/hostile/loop").await;
        (response, std::time::Instant::now())
    }));
    let others = async {
        app.wait_for_live_instances("hostile", 3).await;
        let response = app.get("/greeter").await;
        (response.status(), std::time::Instant::now())
    };
    let (looped, (other_status, other_done)) = tokio::join!(loops, others);
    assert_eq!(other_status, 200);
    let first_loop_done = looped.iter().map(|(_, done)| *done).min().unwrap();
    assert!(
        other_done < first_loop_done,
        "another component answered while every loop was still running"
    );
    for (response, _) in looped {
        problem(response, 504).await;
    }
    let logs = app.logs();
    assert!(
        logs.lines()
            .any(|line| line.contains("ran past its deadline")
                && line.contains("neither a database nor another component")),
        "the log says the component's own code held the request: {logs}"
    );
    assert_eq!(
        app.get("/hostile/counter").await.status(),
        200,
        "the component serves again"
    );
}

#[tokio::test]
async fn exhausting_memory_is_a_500_and_the_host_keeps_serving() {
    let app = app(HOSTILE_LIMITS).await;
    problem(app.get("/hostile/oom").await, 500).await;
    assert!(app.logs().contains("out of memory"), "the log says why");
    assert_eq!(app.get("/hostile/counter").await.status(), 200);
    assert_eq!(app.get("/greeter").await.status(), 200);
}

#[tokio::test]
async fn a_component_at_its_instance_limit_answers_503_with_retry_after() {
    let app =
        app("capabilities = [\"database\"]\n[limits]\nmax_instances = 1\ntimeout_ms = 5000").await;
    let busy = app.get("/hostile/sleep?ms=1500");
    let meanwhile = async {
        app.wait_for_live_instances("hostile", 1).await;
        let refused = app.get("/hostile/counter").await;
        let other = app.get("/greeter").await.status();
        (refused, other)
    };
    let (slept, (refused, other)) = tokio::join!(busy, meanwhile);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    problem(refused, 503).await;
    assert_eq!(other, 200, "other components are not affected");
    assert_eq!(
        slept.status(),
        200,
        "the request holding the instance completes"
    );
    assert_eq!(
        app.get("/hostile/counter").await.status(),
        200,
        "served again once the instance is free"
    );
}

#[tokio::test]
async fn no_state_survives_between_requests() {
    let app = app(HOSTILE_LIMITS).await;
    for _ in 0..3 {
        let body: serde_json::Value = app.get("/hostile/counter").await.json().await.unwrap();
        assert_eq!(body["count"], 1, "every request meets a fresh instance");
    }
}

#[tokio::test]
async fn a_component_5xx_keeps_its_status_but_not_its_detail() {
    let app = app(HOSTILE_LIMITS).await;
    let response = app
        .client
        .post(app.url("/hostile/notes?text=x&then=fail"))
        .send()
        .await
        .unwrap();
    let body = problem(response, 500).await;
    assert!(
        !body["detail"]
            .as_str()
            .unwrap()
            .contains("failing after the write")
    );
    assert!(
        app.logs().contains("failing after the write"),
        "the detail is in the log"
    );
}
