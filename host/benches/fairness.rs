//! `just bench`: one tenant's endless loops against another component's throughput.
//!
//! The release host serves the example component and a component with an endless loop
//! (deadline 2 s). Rounds alternate: `GET /hello` under load alone, then the same load while
//! eight loop requests are kept in flight. Prints requests/s and p99 of each, their ratio, and
//! how late the loops' 504s came against their 2 s deadline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Round, median, wasm};

const CONCURRENCY: usize = 16;
const LOOPS: usize = 8;
const ROUND: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;
const DEADLINE: Duration = Duration::from_millis(2000);

fn main() {
    let runtime = common::runtime();
    runtime.block_on(run());
}

fn hostile_policy() -> String {
    format!(
        "wasm = {:?}\nroutes = [\"/hostile\"]\npublic_routes = [\"/hostile\"]\ncapabilities = [\"database\"]\n[limits]\ntimeout_ms = {}\nmax_instances = 64\n",
        wasm("hostile"),
        DEADLINE.as_millis()
    )
}

async fn hello_load(client: &reqwest::Client, url: &str) -> Round {
    let url = format!("{url}/hello?name=Ada");
    common::load(client, CONCURRENCY, ROUND, &url, "", b"{\"message\"").await
}

/// Keeps `LOOPS` endless-loop requests in flight until `stop`; returns how long each took to
/// come back (504 at the deadline).
async fn loops(client: reqwest::Client, url: String, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let workers: Vec<_> = (0..LOOPS)
        .map(|_| {
            let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut took = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let response = client
                        .get(format!("{url}/hostile/loop"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 504);
                    took.push(sent.elapsed());
                }
                took
            })
        })
        .collect();
    let mut took = Vec::new();
    for worker in workers {
        took.extend(worker.await.unwrap());
    }
    took
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let host = common::platform(
        dir.path(),
        &[
            ("hello", common::hello_policy(true)),
            ("hostile", hostile_policy()),
        ],
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY + LOOPS)
        .build()
        .unwrap();
    hello_load(&client, &host.1).await;

    let (mut alone, mut contended, mut deadlines) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        alone.push(hello_load(&client, &host.1).await);
        let stop = Arc::new(AtomicBool::new(false));
        let hogs = tokio::spawn(loops(client.clone(), host.1.clone(), stop.clone()));
        // Let the loops get going first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        contended.push(hello_load(&client, &host.1).await);
        stop.store(true, Ordering::Relaxed);
        deadlines.extend(hogs.await.unwrap());
    }
    let rps = |rounds: &[Round]| median(rounds.iter().map(|r| r.requests_per_second).collect());
    let p99 = |rounds: &[Round]| median(rounds.iter().map(|r| r.p99_us as f64).collect());
    let late: Vec<f64> = deadlines
        .iter()
        .map(|took| (took.as_secs_f64() / DEADLINE.as_secs_f64() - 1.0) * 100.0)
        .collect();
    let worst = late.iter().copied().fold(f64::MIN, f64::max);
    println!(
        "GET /hello, {CONCURRENCY} clients, {ROUNDS} alternating rounds of {ROUND:?} (medians), alone and with {LOOPS} endless loops in flight (deadline {DEADLINE:?}):"
    );
    println!(
        "  alone           {:>9.0} req/s   p99 {:>7.0} µs",
        rps(&alone),
        p99(&alone)
    );
    println!(
        "  with {LOOPS} loops    {:>9.0} req/s   p99 {:>7.0} µs",
        rps(&contended),
        p99(&contended)
    );
    println!(
        "  kept {:.2}× of its throughput (target ≥ 0.50×); p99 with loops {:.1} ms (target < 50 ms)",
        rps(&contended) / rps(&alone),
        p99(&contended) / 1000.0
    );
    println!(
        "  {} loop requests answered 504 after their deadline +{:.1} % (median), +{:.1} % (worst) (target ≤ 10 %)",
        late.len(),
        median(late.clone()),
        worst
    );
}
