//! Test fixture: a component that misbehaves on request, to show that only its own request
//! pays: traps, endless loops, memory exhaustion, slow requests, and writes followed by failure.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;
use truevalue_sdk::prelude::*;

struct Hostile;

impl App for Hostile {
    fn router() -> Router {
        Router::new()
            .get("/hostile/trap", |_| panic!("a component bug"))
            .get("/hostile/loop", |_| {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            })
            .get("/hostile/spin", |request| {
                // `n` rounds of guest arithmetic, no host call among them, then an answer: a
                // request that runs long but ends.
                let rounds: u64 = request
                    .query("n")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1_000_000);
                let mut n: u64 = 0;
                for _ in 0..rounds {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
                Response::json(200, &json!({ "rounds": n }))
            })
            .get("/hostile/oom", |_| {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1024 * 1024]);
                    std::hint::black_box(&hoard);
                }
            })
            .get("/hostile/counter", |_| {
                // A fresh instance per request: this is always 1.
                static COUNT: AtomicU64 = AtomicU64::new(0);
                Response::json(
                    200,
                    &json!({ "count": COUNT.fetch_add(1, Ordering::SeqCst) + 1 }),
                )
            })
            .get("/hostile/sleep", |request| {
                let ms = request
                    .query("ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Response::json(200, &json!({ "slept_ms": ms }))
            })
            .post("/hostile/notes", |request| {
                let text = request.query("text").unwrap_or_default();
                db::execute("INSERT INTO notes (text) VALUES ($1)", &[text.into()])?;
                match request.query("then").as_deref() {
                    Some("trap") => panic!("failing after the write"),
                    Some("fail") => Err(Problem::internal("failing after the write")),
                    Some("loop") => loop {
                        std::hint::black_box(());
                    },
                    _ => Ok(Response::new(201)),
                }
            })
            .get("/hostile/notes", |_| {
                let rows = db::query("SELECT text FROM notes ORDER BY text", &[])?;
                let texts = rows
                    .iter()
                    .map(|r| r.get::<String>("text"))
                    .collect::<Result<Vec<_>, _>>()?;
                Response::json(200, &json!({ "items": texts }))
            })
    }

    fn migrations(_dialect: Dialect) -> Vec<Migration> {
        let mut migrations = vec![Migration {
            id: 1,
            name: "notes",
            sql: "CREATE TABLE notes (text TEXT NOT NULL)",
        }];
        if cfg!(feature = "backfill") {
            migrations.push(Migration {
                id: 2,
                name: "backfill",
                sql: "INSERT INTO notes (text) WITH RECURSIVE n(i) AS \
                      (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000) \
                      SELECT 'backfilled ' || i FROM n",
            });
        }
        migrations
    }
}

truevalue_sdk::component!(Hostile);
