//! Events through a real Kafka-API broker (`TRUEVALUE_TEST_KAFKA`, default 127.0.0.1:9092;
//! `.ci/run` starts one): read back with a standard client, in the CloudEvents binary binding.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value, json};

use crate::events::{TRUSTS_PUBLISHER, publish_until_refused};
use crate::helpers::{Engine, Policy, Spawn, TestApp, repo};

fn brokers() -> String {
    std::env::var("TRUEVALUE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A topic of this test run alone, so runs sharing a broker never see each other's events.
fn fresh_topic() -> String {
    format!(
        "test.{}.events",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn publisher(topic: &str) -> Policy {
    Policy::new(
        "publisher",
        "publisher",
        "publisher",
        &format!("capabilities = [\"database\", \"events\"]\nevents = [\"{topic}\"]"),
    )
}

/// The first `count` records of `topic`, read from its beginning with confluent-kafka.
fn read_topic(topic: &str, count: usize) -> Vec<Value> {
    let output = Command::new("python3")
        .arg(repo().join("tests/api/read_topic.py"))
        .args([&brokers(), topic, &count.to_string(), "30"])
        .output()
        .expect("run python3 tests/api/read_topic.py");
    assert!(
        output.status.success(),
        "reading {topic} failed (is `confluent-kafka` installed and the broker at {} up?): {}",
        brokers(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn kafka_app(engine: Engine, topic: &str) -> TestApp {
    Spawn::new(engine, vec![publisher(topic)])
        .config(TRUSTS_PUBLISHER)
        .env("TRUEVALUE_KAFKA_BROKERS", &brokers())
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_events_reach_kafka_as_cloudevents_keyed_by_organization() {
    let topic = fresh_topic();
    let app = kafka_app(Engine::Postgres, &topic).await;
    let body = |name: &str, org: &str, fail: bool| json!({ "name": name, "topic": topic, "org_id": org, "fail": fail });
    let mut ids = Vec::new();
    for (name, org) in [("a1", "org-a"), ("b1", "org-b"), ("a2", "org-a")] {
        let response = app
            .post_json("/publisher/things", &body(name, org, false))
            .await;
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.unwrap();
        ids.push(created["ids"][0].as_str().unwrap().to_string());
    }
    let failed = app
        .post_json("/publisher/things", &body("lost", "org-a", true))
        .await;
    assert_eq!(failed.status(), 500);
    let marker = app
        .post_json("/publisher/things", &body("a3", "org-a", false))
        .await;
    assert_eq!(marker.status(), 201);

    let records = read_topic(&topic, 4);
    assert_eq!(records.len(), 4, "{records:#?}");
    let values: Vec<Value> = records
        .iter()
        .map(|r| serde_json::from_str(r["value"].as_str().unwrap()).unwrap())
        .collect();
    assert!(
        values.iter().all(|v| v["name"] != "lost"),
        "a rolled-back request published nothing: {values:?}"
    );

    let first = records
        .iter()
        .find(|r| r["headers"]["ce_id"] == ids[0].as_str())
        .expect("the first event is on the topic");
    let headers: BTreeMap<String, String> =
        serde_json::from_value(first["headers"].clone()).unwrap();
    assert_eq!(first["key"], "org-a");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["ce_specversion"], "1.0");
    assert_eq!(headers["ce_type"], "thing.created");
    assert_eq!(headers["ce_source"], "/truevalue/publisher");
    assert_eq!(headers["ce_subject"], "a1");
    assert_eq!(headers["ce_orgid"], "org-a");
    assert!(headers.contains_key("ce_time") && headers.contains_key("ce_requestid"));
    assert_eq!(
        serde_json::from_str::<Value>(first["value"].as_str().unwrap()).unwrap(),
        json!({ "name": "a1" })
    );

    // One organization's events stay in order: on one partition, in commit order.
    let org_a: Vec<&Value> = records.iter().filter(|r| r["key"] == "org-a").collect();
    assert_eq!(org_a.len(), 3);
    assert!(
        org_a
            .iter()
            .all(|r| r["partition"] == org_a[0]["partition"])
    );
    let order: Vec<&str> = org_a
        .iter()
        .map(|r| r["headers"]["ce_subject"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["a1", "a2", "a3"]);
}

fn subscriber(topic: &str) -> Policy {
    Policy::with_routes(
        "publisher",
        "publisher",
        "routes = [\"/publisher\"]\npublic_routes = [\"/publisher/things\", \"/publisher/received\"]\ninternal_routes = [\"/publisher/internal\"]",
        &format!(
            "capabilities = [\"database\", \"events\"]\nevents = [\"{topic}\"]\n\
             [subscriptions]\n\"{topic}\" = \"/publisher/internal/events\""
        ),
    )
}

async fn received(app: &TestApp, n: usize) -> Value {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let body: Value = app.get("/publisher/received").await.json().await.unwrap();
        if body["events"].as_array().map_or(0, Vec::len) >= n || std::time::Instant::now() > until {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A component's consumer group reads the topic from Kafka; after a crash it goes on where it
/// stood, and an event handled before the crash is not handled twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_consumes_from_kafka_and_resumes_after_a_crash() {
    let topic = fresh_topic();
    let mut app = Spawn::new(Engine::Sqlite, vec![subscriber(&topic)])
        .config(TRUSTS_PUBLISHER)
        .env("TRUEVALUE_KAFKA_BROKERS", &brokers())
        .start()
        .await;
    let create = |name: String| json!({ "name": name, "topic": topic, "org_id": "org-k" });
    for n in 0..3 {
        let response = app
            .post_json("/publisher/things", &create(format!("before-{n}")))
            .await;
        assert_eq!(response.status(), 201);
    }
    let body = received(&app, 3).await;
    assert_eq!(body["events"].as_array().unwrap().len(), 3, "{body}");
    assert_eq!(body["events"][0]["subject"], "before-0");
    assert_eq!(body["events"][0]["orgid"], "org-k");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    app.crash_and_restart().await;
    for n in 0..2 {
        let response = app
            .post_json("/publisher/things", &create(format!("after-{n}")))
            .await;
        assert_eq!(response.status(), 201);
    }
    let body = received(&app, 5).await;
    let subjects: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        ["before-0", "before-1", "before-2", "after-0", "after-1"]
    );
    let attempts = body["attempts"].as_object().unwrap();
    assert!(attempts.values().all(|n| n == 1), "{body}");
}

/// With the broker unreachable, requests still succeed; their events wait in the outbox and
/// reach the broker once it is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_succeed_while_the_broker_is_down_and_their_events_follow() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let topic = fresh_topic();
    let app = Spawn::new(Engine::Postgres, vec![publisher(&topic)])
        .config(TRUSTS_PUBLISHER)
        .env("TRUEVALUE_KAFKA_BROKERS", &address)
        .start()
        .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let body = json!({ "name": format!("offline-{n}"), "topic": topic });
        let response = app.post_json("/publisher/things", &body).await;
        assert_eq!(
            response.status(),
            201,
            "the request does not wait for the broker"
        );
        let created: Value = response.json().await.unwrap();
        ids.push(created["ids"][0].as_str().unwrap().to_string());
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    let listener = format!("tcp://{address}");
    let mut broker = Command::new("tansu")
        .args([
            "broker",
            "--listener-url",
            &listener,
            "--advertised-listener-url",
            &listener,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start tansu (the Kafka-API broker `.ci/run` installs)");
    let records = tokio::task::spawn_blocking({
        let (address, topic) = (address.clone(), topic.clone());
        move || {
            let output = Command::new("python3")
                .arg(repo().join("tests/api/read_topic.py"))
                .args([&address, &topic, "3", "60"])
                .output()
                .expect("run read_topic.py");
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
    })
    .await
    .unwrap();
    let _ = broker.kill();
    let _ = broker.wait();
    let published: Vec<String> = records
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .map(|r| {
            r["headers"]["ce_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    for id in &ids {
        assert!(
            published.contains(id),
            "{id} not on the broker: {published:?}"
        );
    }
}

fn audited(topic: &str) -> Policy {
    Policy::with_routes(
        "audit",
        "audit",
        "routes = [\"/audit\"]\norg_routes = [\"/audit/api\"]\ninternal_routes = [\"/audit/internal\"]",
        &format!(
            "capabilities = [\"database\", \"events\"]\nevents = [\"audit.access.events\"]\n\
             append_only = [\"entries\"]\n[subscriptions]\n\"{topic}\" = \"/audit/internal/events\""
        ),
    )
}

/// The ids in the audit log, read from its SQLite file.
async fn audit_ids(app: &TestApp) -> Vec<String> {
    let path = app.data_dir.join("db/audit.sqlite");
    let Ok(pool) = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display())).await
    else {
        return Vec::new();
    };
    let ids = sqlx::query_scalar("SELECT id FROM entries")
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
    pool.close().await;
    ids
}

/// SIGKILL while requests that publish are in flight: after the restart every event of every
/// request answered 201 is on the topic (perhaps twice) and in the audit log exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loses_no_committed_event_on_the_way_to_kafka_and_the_audit_log() {
    let topic = fresh_topic();
    let mut app = Spawn::new(Engine::Sqlite, vec![publisher(&topic), audited(&topic)])
        .config(TRUSTS_PUBLISHER)
        .env("TRUEVALUE_KAFKA_BROKERS", &brokers())
        .start()
        .await;
    let (client, url) = (app.client.clone(), app.url("/publisher/things"));
    let sender = tokio::spawn({
        let topic = topic.clone();
        publish_until_refused(
            client,
            url,
            move |n| json!({ "name": format!("t{n}"), "count": 2, "topic": topic, "org_id": "org-c" }),
        )
    });
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    app.crash_and_restart().await;
    let committed = sender.await.unwrap();
    assert!(committed.len() >= 2, "requests committed before the crash");

    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let audited = loop {
        let ids = audit_ids(&app).await;
        if committed.iter().all(|id| ids.contains(id)) || std::time::Instant::now() > until {
            break ids;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let missing = committed.iter().filter(|id| !audited.contains(id)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} committed events never reached the audit log",
        committed.len()
    );
    let unique: std::collections::BTreeSet<&String> = audited.iter().collect();
    assert_eq!(
        unique.len(),
        audited.len(),
        "no event twice in the audit log"
    );

    // Duplicates are allowed on the wire: read until the topic goes quiet.
    let on_topic: std::collections::BTreeSet<String> = read_topic(&topic, usize::MAX)
        .iter()
        .map(|r| {
            r["headers"]["ce_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(
        committed.iter().all(|id| on_topic.contains(id)),
        "every committed event is on the topic"
    );
}
