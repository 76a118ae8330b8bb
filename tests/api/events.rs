//! The `events` capability: events commit with the request's writes, reach the bus once
//! committed (here the in-process bus, the default), survive a crash, and stay within the
//! topics the policy lists.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Engine, Policy, Spawn, TestApp, problem};
use crate::on_both_engines;

/// The publisher fixture names organizations its anonymous requests do not act for, which only
/// an operator-approved component may.
pub const TRUSTS_PUBLISHER: &str = "trusted_components = [\"publisher\"]";

pub fn publisher() -> Policy {
    Policy::new(
        "publisher",
        "publisher",
        "publisher",
        "capabilities = [\"database\", \"events\"]\nevents = [\"crm.thing.events\"]",
    )
}

/// One event as the bus holds it.
#[derive(Debug)]
pub struct Published {
    pub topic: String,
    pub key: String,
    pub attributes: Value,
    pub data: Value,
}

impl Published {
    pub fn id(&self) -> &str {
        self.attributes["id"].as_str().unwrap_or_default()
    }
}

/// Everything on the in-process bus, oldest first.
pub async fn on_the_bus(app: &TestApp) -> Vec<Published> {
    let path = app.data_dir.join("events.sqlite");
    let Ok(pool) = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", path.display())).await
    else {
        return Vec::new();
    };
    let rows: Vec<(String, String, String, String)> =
        sqlx::query_as("SELECT topic, key, attributes, data FROM events ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
    pool.close().await;
    rows.into_iter()
        .map(|(topic, key, attributes, data)| Published {
            topic,
            key,
            attributes: serde_json::from_str(&attributes).unwrap(),
            data: serde_json::from_str(&data).unwrap(),
        })
        .collect()
}

/// Waits until the bus holds at least `n` events, and returns them.
pub async fn wait_for_events(app: &TestApp, n: usize) -> Vec<Published> {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let events = on_the_bus(app).await;
        if events.len() >= n || Instant::now() > until {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn create(app: &TestApp, body: Value) -> reqwest::Response {
    app.post_json("/publisher/things", &body).await
}

async fn things(app: &TestApp) -> i64 {
    let body: Value = app.get("/publisher/things").await.json().await.unwrap();
    body["count"].as_i64().unwrap()
}

async fn committed_events_are_published_and_rolled_back_ones_are_not(engine: Engine) {
    let app = Spawn::new(engine, vec![publisher()])
        .config(TRUSTS_PUBLISHER)
        .start()
        .await;

    let failed = create(&app, json!({ "name": "lost", "count": 2, "fail": true })).await;
    assert_eq!(failed.status(), 500);
    let response = app
        .client
        .post(app.url("/publisher/things"))
        .header("user-agent", "events-test/1.0")
        .json(&json!({ "name": "kept", "org_id": "org-7" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let ids: Value = response.json().await.unwrap();
    assert_eq!(
        things(&app).await,
        1,
        "the failed request's writes rolled back"
    );

    let events = wait_for_events(&app, 1).await;
    // A marker after it: had the failed request's events been relayed, they would be here.
    assert_eq!(
        create(&app, json!({ "name": "marker" })).await.status(),
        201
    );
    let events_then = wait_for_events(&app, 2).await;
    assert_eq!(events_then.len(), 2, "{events_then:#?}");
    let event = &events[0];
    assert_eq!(event.id(), ids["ids"][0]);
    assert_eq!(event.topic, "crm.thing.events");
    assert_eq!(event.key, "org-7", "the organization's id keys its events");
    assert_eq!(event.data, json!({ "name": "kept" }));
    let attributes = &event.attributes;
    assert_eq!(attributes["specversion"], "1.0");
    assert_eq!(attributes["type"], "thing.created");
    assert_eq!(attributes["subject"], "kept");
    assert_eq!(attributes["source"], "/truevalue/publisher");
    assert_eq!(attributes["orgid"], "org-7");
    assert_eq!(attributes["requestid"], request_id.as_str());
    assert_eq!(attributes["useragent"], "events-test/1.0");
    assert!(attributes["clientip"].is_string(), "{attributes}");
    assert!(
        attributes["actorid"].is_null(),
        "an anonymous request has no actor"
    );
    let time = attributes["time"].as_str().unwrap();
    assert!(
        time.len() >= 20 && time.as_bytes()[10] == b'T',
        "RFC 3339: {time}"
    );
    assert!(
        events_then.iter().all(|e| e.data["name"] != "lost"),
        "{events_then:#?}"
    );
}
on_both_engines!(committed_events_are_published_and_rolled_back_ones_are_not);

async fn a_topic_or_event_the_policy_does_not_allow_is_refused(engine: Engine) {
    let app = Spawn::new(engine, vec![publisher()])
        .config(TRUSTS_PUBLISHER)
        .start()
        .await;
    let refused = create(&app, json!({ "topic": "auth.user.events" })).await;
    let body = problem(refused, 422).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("auth.user.events"),
        "{body}"
    );
    let refused = create(&app, json!({ "data": "x".repeat(70_000) })).await;
    let body = problem(refused, 422).await;
    assert!(body["detail"].as_str().unwrap().contains("64"), "{body}");

    assert_eq!(
        create(&app, json!({ "name": "marker" })).await.status(),
        201
    );
    let events = wait_for_events(&app, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events_then = on_the_bus(&app).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events_then.len(), 1, "{events_then:#?}");
    assert_eq!(events[0].data["name"], "marker");
}
on_both_engines!(a_topic_or_event_the_policy_does_not_allow_is_refused);

#[tokio::test]
async fn topics_need_the_events_capability_and_events_need_a_database() {
    let no_capability = Policy::new(
        "publisher",
        "publisher",
        "publisher",
        "capabilities = [\"database\"]\nevents = [\"crm.thing.events\"]",
    );
    let stderr = Spawn::new(Engine::Sqlite, vec![no_capability])
        .start_refused()
        .await;
    assert!(
        stderr.contains("does not grant \\\"events\\\"")
            || stderr.contains("does not grant \"events\""),
        "{stderr}"
    );

    let no_database = Policy::new(
        "publisher",
        "publisher",
        "publisher",
        "capabilities = [\"events\"]\nevents = [\"crm.thing.events\"]",
    );
    let stderr = Spawn::new(Engine::Sqlite, vec![no_database])
        .start_refused()
        .await;
    assert!(
        stderr.contains("needs \\\"database\\\"") || stderr.contains("needs \"database\""),
        "{stderr}"
    );

    let bad_topic = Policy::new(
        "publisher",
        "publisher",
        "publisher",
        "capabilities = [\"database\", \"events\"]\nevents = [\"crm.thing.events.dlq\"]",
    );
    let stderr = Spawn::new(Engine::Sqlite, vec![bad_topic])
        .start_refused()
        .await;
    assert!(stderr.contains("crm.thing.events.dlq"), "{stderr}");
}

/// Sends `body(n)` to the publisher at `url` for n = 0, 1, … until an answer is not 201 (the
/// host was killed); the ids of the events of every request answered 201.
pub async fn publish_until_refused(
    client: reqwest::Client,
    url: String,
    body: impl Fn(usize) -> Value,
) -> Vec<String> {
    let mut committed = Vec::new();
    for n in 0..5_000 {
        match client.post(&url).json(&body(n)).send().await {
            Ok(response) if response.status() == 201 => {
                let ids: Value = response.json().await.unwrap_or_default();
                committed.extend(
                    ids["ids"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|id| id.as_str().map(str::to_string)),
                );
            }
            _ => break,
        }
    }
    committed
}

/// SIGKILL while requests that publish are in flight: after the restart, every event of every
/// request that was answered 201 is on the bus, each once.
async fn no_committed_event_is_lost_in_a_crash(engine: Engine) {
    let mut app = Spawn::new(engine, vec![publisher()])
        .config(TRUSTS_PUBLISHER)
        .start()
        .await;
    let client = app.client.clone();
    let url = app.url("/publisher/things");
    let sender = tokio::spawn(publish_until_refused(
        client,
        url,
        |n| json!({ "name": format!("thing-{n}"), "count": 3 }),
    ));
    tokio::time::sleep(Duration::from_millis(700)).await;
    app.crash_and_restart().await;
    let committed = sender.await.unwrap();
    assert!(
        committed.len() >= 3,
        "some requests committed before the crash"
    );

    let until = Instant::now() + Duration::from_secs(20);
    let published = loop {
        let published: Vec<String> = on_the_bus(&app)
            .await
            .iter()
            .map(|e| e.id().to_string())
            .collect();
        if committed.iter().all(|id| published.contains(id)) || Instant::now() > until {
            break published;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let unique: BTreeSet<&String> = published.iter().collect();
    assert_eq!(unique.len(), published.len(), "each event once on the bus");
    let missing: Vec<&String> = committed.iter().filter(|id| !unique.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} committed events never reached the bus: {:?}",
        missing.len(),
        committed.len(),
        &missing[..missing.len().min(5)]
    );
}
on_both_engines!(no_committed_event_is_lost_in_a_crash);

/// The publisher subscribed to its own topic, and to the topic's dead letters.
pub fn subscriber() -> Policy {
    Policy::with_routes(
        "publisher",
        "publisher",
        "routes = [\"/publisher\"]\npublic_routes = [\"/publisher/things\", \"/publisher/received\"]\ninternal_routes = [\"/publisher/internal\"]",
        "capabilities = [\"database\", \"events\"]\nevents = [\"crm.thing.events\"]\n\
         [subscriptions]\n\"crm.thing.events\" = \"/publisher/internal/events\"",
    )
}

async fn received(app: &TestApp) -> Value {
    app.get("/publisher/received").await.json().await.unwrap()
}

/// Waits until the subscriber has recorded at least `n` events.
pub async fn wait_for_received(app: &TestApp, n: usize) -> Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let body = received(app).await;
        if body["events"].as_array().map_or(0, Vec::len) >= n || Instant::now() > until {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_subscriber_gets_each_event_in_order_with_its_origin(engine: Engine) {
    let app = Spawn::new(engine, vec![subscriber()])
        .config(TRUSTS_PUBLISHER)
        .start()
        .await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let response = create(&app, json!({ "name": format!("t{n}"), "org_id": "org-1" })).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        ids.push(body["ids"][0].clone());
    }
    let body = wait_for_received(&app, 5).await;
    let events = body["events"].as_array().unwrap();
    let got: Vec<&Value> = events.iter().map(|e| &e["id"]).collect();
    assert_eq!(
        got,
        ids.iter().collect::<Vec<_>>(),
        "each event once, in order"
    );
    assert_eq!(events[0]["type"], "thing.created");
    assert_eq!(events[0]["subject"], "t0");
    assert_eq!(events[0]["orgid"], "org-1");
    assert_eq!(events[0]["data"], json!({ "name": "t0" }));
    assert!(!events[0]["requestid"].as_str().unwrap().is_empty());
    // The subscription's route is internal: the gateway does not serve it.
    let outside = app
        .post_json("/publisher/internal/events", &json!({}))
        .await;
    assert_eq!(outside.status(), 404);
}
on_both_engines!(a_subscriber_gets_each_event_in_order_with_its_origin);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_event_is_retried_then_parked_on_the_dead_letter_topic_and_the_rest_go_on() {
    let app = Spawn::new(Engine::Sqlite, vec![subscriber()])
        .config(TRUSTS_PUBLISHER)
        .start()
        .await;
    let flaky = create(
        &app,
        json!({ "name": "flaky", "data": { "fail_times": 2 } }),
    )
    .await;
    let flaky: Value = flaky.json().await.unwrap();
    let poison = create(
        &app,
        json!({ "name": "poison", "data": { "fail_times": 99 } }),
    )
    .await;
    let poison: Value = poison.json().await.unwrap();
    let after = create(&app, json!({ "name": "after" })).await;
    assert_eq!(after.status(), 201);

    let body = wait_for_received(&app, 2).await;
    let names: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["flaky", "after"], "{body}");
    let flaky_id = flaky["ids"][0].as_str().unwrap();
    let poison_id = poison["ids"][0].as_str().unwrap();
    assert_eq!(
        body["attempts"][flaky_id], 3,
        "two refusals, then success: {body}"
    );
    assert_eq!(
        body["attempts"][poison_id], 4,
        "one try and three retries: {body}"
    );

    let parked = wait_for_events(&app, 4).await;
    let parked: Vec<&Published> = parked
        .iter()
        .filter(|e| e.topic == "crm.thing.events.dlq")
        .collect();
    assert_eq!(parked.len(), 1, "{parked:#?}");
    assert_eq!(parked[0].id(), poison_id);
    assert_eq!(parked[0].attributes["dlqconsumer"], "publisher");
    let error = parked[0].attributes["dlqerror"].as_str().unwrap();
    assert!(
        error.contains("409") && error.contains("attempt 4 refused"),
        "{error}"
    );
    assert_eq!(parked[0].data, json!({ "fail_times": 99 }));
}

/// A consumer's position survives a crash: after a restart, events handled before it are not
/// delivered again (the subscriber records each once anyway) and new ones arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_resumes_where_it_stood_after_a_crash() {
    let mut app = Spawn::new(Engine::Sqlite, vec![subscriber()])
        .config(TRUSTS_PUBLISHER)
        .start()
        .await;
    for n in 0..3 {
        assert_eq!(
            create(&app, json!({ "name": format!("before-{n}") }))
                .await
                .status(),
            201
        );
    }
    wait_for_received(&app, 3).await;
    // The position moves right after the subscriber answered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.crash_and_restart().await;
    for n in 0..2 {
        assert_eq!(
            create(&app, json!({ "name": format!("after-{n}") }))
                .await
                .status(),
            201
        );
    }
    let body = wait_for_received(&app, 5).await;
    assert_eq!(body["events"].as_array().unwrap().len(), 5, "{body}");
    let attempts = body["attempts"].as_object().unwrap();
    assert!(
        attempts.values().all(|n| n == 1),
        "no event handled before the crash was delivered again: {body}"
    );
}

/// A component the operator did not approve cannot write events into another organization's
/// trail (its audit chain, its analytics).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_approved_component_publishes_for_another_organization() {
    let app = Spawn::new(Engine::Sqlite, vec![publisher()]).start().await;
    let refused = create(&app, json!({ "name": "x", "org_id": "victim-org" })).await;
    let body = problem(refused, 422).await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("trusted_components"),
        "{body}"
    );
    assert_eq!(
        create(&app, json!({ "name": "marker" })).await.status(),
        201
    );
    let events = wait_for_events(&app, 1).await;
    assert!(events.iter().all(|e| e.key != "victim-org"), "{events:#?}");
}
