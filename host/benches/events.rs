//! `just bench`, events: how fast committed events travel from a component's outbox to the
//! audit log, through Kafka and, as the baseline measured in the same run, through the
//! in-process bus.
//!
//! The release host serves the `publisher` fixture (each request inserts rows and publishes an
//! event per row) and the `audit` component subscribed to the publisher's topic. For each bus:
//! - burst: 20 requests of 100 events each, then the time until the audit log holds all 2,000
//!   (relay → bus → consumer → audit handler, one entry of the hash chain each): events/s;
//! - paced: 200 single-event requests, 20 ms apart; for each event, the time from the
//!   publishing request's answer (its commit) until its entry is in the audit log, read by
//!   polling the audit component's SQLite file every 2 ms: p50 and p99.
//!
//! The Kafka half needs a broker at `TRUEVALUE_BENCH_KAFKA` (default 127.0.0.1:9092; `.ci/run`
//! starts tansu there) and is skipped, saying so, when none answers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{percentile, platform_with, wasm};

const BURST_REQUESTS: usize = 20;
const EVENTS_PER_REQUEST: usize = 100;
const PACED: usize = 200;
const PACE: Duration = Duration::from_millis(20);
const POLL: Duration = Duration::from_millis(2);

fn main() {
    common::runtime().block_on(run());
}

struct Figures {
    events_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn run() {
    let local = measure(None).await;
    report("in-process bus (baseline)", &local, None);
    let brokers =
        std::env::var("TRUEVALUE_BENCH_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into());
    if std::net::TcpStream::connect_timeout(&brokers.parse().unwrap(), Duration::from_secs(1))
        .is_err()
    {
        println!(
            "Kafka: no broker answers at {brokers}; skipped (start one, e.g. tansu as in .ci/run)"
        );
        return;
    }
    let kafka = measure(Some(&brokers)).await;
    report(&format!("Kafka at {brokers}"), &kafka, Some(&local));
}

fn report(name: &str, figures: &Figures, baseline: Option<&Figures>) {
    println!(
        "{name:<32} {:>8.0} events/s outbox → audit   publish → audit p50 {:>6.1} ms  p99 {:>6.1} ms",
        figures.events_per_second, figures.p50_ms, figures.p99_ms
    );
    if let Some(base) = baseline {
        println!(
            "{:<32} {:>8.2}× the in-process bus's events/s, p99 {:.2}× its p99",
            "",
            figures.events_per_second / base.events_per_second,
            figures.p99_ms / base.p99_ms
        );
    }
}

async fn measure(brokers: Option<&str>) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let topic = format!(
        "bench.{}.events",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let publisher = format!(
        "wasm = {:?}\nroutes = [\"/publisher\"]\npublic_routes = [\"/publisher\"]\n\
         capabilities = [\"database\", \"events\"]\nevents = [\"{topic}\"]\n[limits]\nmax_instances = 64\n",
        wasm("publisher")
    );
    let audit = format!(
        "wasm = {:?}\nroutes = [\"/audit\"]\norg_routes = [\"/audit/api\"]\ninternal_routes = [\"/audit/internal\"]\n\
         capabilities = [\"database\", \"events\"]\nevents = [\"audit.access.events\"]\nappend_only = [\"entries\"]\n\
         [subscriptions]\n\"{topic}\" = \"/audit/internal/events\"\n",
        wasm("audit")
    );
    let env: Vec<(&str, &str)> = brokers
        .map(|b| ("TRUEVALUE_KAFKA_BROKERS", b))
        .into_iter()
        .collect();
    let server = platform_with(
        dir.path(),
        &[("publisher", publisher), ("audit", audit)],
        &env,
    );
    let client = reqwest::Client::new();
    let url = format!("{}/publisher/things", server.1);
    let publish = {
        let (client, url, topic) = (client.clone(), url.clone(), topic.clone());
        move |count: usize| {
            let (client, url, topic) = (client.clone(), url.clone(), topic.clone());
            async move {
                let body = json!({ "name": "bench", "count": count, "topic": topic });
                let response = client.post(&url).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 201);
                let answered = Instant::now();
                let ids: Value = response.json().await.unwrap();
                let ids: Vec<String> = ids["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|id| id.as_str().unwrap().to_string())
                    .collect();
                (ids, answered)
            }
        }
    };
    let audit_db = dir.path().join("data/db/audit.sqlite");

    // Warm-up: the topic exists, the consumer runs, the audit file is there.
    let (warm, _) = publish(1).await;
    let mut seen = Seen::open(&audit_db).await;
    seen.wait_for(&warm).await;

    // Burst.
    let started = Instant::now();
    let requests: Vec<_> = (0..BURST_REQUESTS)
        .map(|_| tokio::spawn(publish(EVENTS_PER_REQUEST)))
        .collect();
    let mut burst = Vec::new();
    for request in requests {
        burst.extend(request.await.unwrap().0);
    }
    seen.wait_for(&burst).await;
    let events_per_second = burst.len() as f64 / started.elapsed().as_secs_f64();

    // Paced.
    let mut sender = Some(tokio::spawn({
        let publish = publish.clone();
        async move {
            let mut answered = Vec::new();
            for _ in 0..PACED {
                let (ids, at) = publish(1).await;
                answered.push((ids[0].clone(), at));
                tokio::time::sleep(PACE).await;
            }
            answered
        }
    }));
    let mut arrived = HashMap::new();
    let mut answered: HashMap<String, Instant> = HashMap::new();
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        for id in seen.new_ids().await {
            arrived.insert(id, Instant::now());
        }
        if let Some(done) = sender.take_if(|s| s.is_finished()) {
            answered = done.await.unwrap().into_iter().collect();
            continue;
        }
        if !answered.is_empty() && answered.keys().all(|id| arrived.contains_key(id)) {
            break;
        }
        assert!(
            Instant::now() < until,
            "the audit log never received every paced event"
        );
        tokio::time::sleep(POLL).await;
    }
    let mut latencies: Vec<u64> = answered
        .iter()
        .map(|(id, at)| arrived[id].saturating_duration_since(*at).as_micros() as u64)
        .collect();
    latencies.sort_unstable();
    drop(server);
    Figures {
        events_per_second,
        p50_ms: percentile(&latencies, 0.50) as f64 / 1000.0,
        p99_ms: percentile(&latencies, 0.99) as f64 / 1000.0,
    }
}

/// The audit log's entries as they arrive, read from the audit component's SQLite file.
struct Seen {
    pool: sqlx::SqlitePool,
    after: i64,
    ids: std::collections::HashSet<String>,
}

impl Seen {
    async fn open(path: &Path) -> Self {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let url = format!("sqlite://{}?mode=ro", path.display());
            if let Ok(pool) = sqlx::SqlitePool::connect(&url).await {
                return Self {
                    pool,
                    after: 0,
                    ids: Default::default(),
                };
            }
            assert!(
                Instant::now() < until,
                "no audit database at {}",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The ids of entries added since the last look.
    async fn new_ids(&mut self) -> Vec<String> {
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT rowid, id FROM entries WHERE rowid > $1 ORDER BY rowid")
                .bind(self.after)
                .fetch_all(&self.pool)
                .await
                .unwrap_or_default();
        if let Some((last, _)) = rows.last() {
            self.after = *last;
        }
        let ids: Vec<String> = rows.into_iter().map(|(_, id)| id).collect();
        self.ids.extend(ids.iter().cloned());
        ids
    }

    async fn wait_for(&mut self, ids: &[String]) {
        let until = Instant::now() + Duration::from_secs(120);
        while !ids.iter().all(|id| self.ids.contains(id)) {
            assert!(
                Instant::now() < until,
                "the audit log never received every event"
            );
            self.new_ids().await;
            tokio::time::sleep(POLL).await;
        }
    }
}
