//! Fair execution: one component's endless loops do not hold back another component. The
//! test asserts an order of events, not a speed: with eight loops in flight (deadline 2 s), a
//! few hundred requests to another component are all answered before the first loop's 504.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::helpers::{Engine, Policy, Spawn};

const LOOPS: usize = 8;
const GREETINGS: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_component_is_served_while_endless_loops_run_to_their_deadline() {
    let hostile = Policy::new(
        "hostile",
        "hostile",
        "hostile",
        "capabilities = [\"database\"]\n[limits]\ntimeout_ms = 2000\nmax_instances = 16",
    );
    let greeter = Policy::new("greeter", "greeter", "greeter", "");
    let app = Spawn::new(Engine::Sqlite, vec![hostile, greeter])
        .config("rate_limit_per_minute = 100000")
        .start()
        .await;
    // Warm the greeter up: its first request compiles nothing, but opens the connections.
    assert_eq!(app.get("/greeter").await.status(), 200);

    let greeted = Arc::new(AtomicUsize::new(0));
    let loops: Vec<_> = (0..LOOPS)
        .map(|_| {
            let (client, url, greeted) = (
                app.client.clone(),
                app.url("/hostile/loop"),
                greeted.clone(),
            );
            tokio::spawn(async move {
                let response = client.get(url).send().await.unwrap();
                // How many greetings were answered when this loop was stopped.
                (response.status().as_u16(), greeted.load(Ordering::SeqCst))
            })
        })
        .collect();
    // The loops are running before the greetings start.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let greeters: Vec<_> = (0..8)
        .map(|_| {
            let (client, url, greeted) = (app.client.clone(), app.url("/greeter"), greeted.clone());
            tokio::spawn(async move {
                while greeted.load(Ordering::SeqCst) < GREETINGS {
                    let response = client.get(url.as_str()).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    greeted.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for greeter in greeters {
        greeter.await.unwrap();
    }
    for handle in loops {
        let (status, greeted_before) = handle.await.unwrap();
        assert_eq!(status, 504, "an endless loop ends at its deadline");
        assert!(
            greeted_before >= GREETINGS,
            "only {greeted_before} of {GREETINGS} greetings were answered before a loop's deadline"
        );
    }
}

/// A long runner that ends on an instance kept for reuse gives its long-running slot back when
/// its guest code stops, not when the instance next serves: otherwise the idle instance would
/// hold the slot, and the long runners still going would wait for it until their deadline.
/// As many long runners at once as the machine has cores: more than it has slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_runners_on_kept_instances_all_finish() {
    let hostile = Policy::new(
        "hostile",
        "hostile",
        "hostile",
        "capabilities = [\"database\"]\n[limits]\ntimeout_ms = 20000\ninstance_reuse = 100",
    );
    let app = Spawn::new(Engine::Sqlite, vec![hostile]).start().await;
    let runners = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Some 100 ms of guest code each on a 2-core machine: far past the free run of 20 ms.
    let spins: Vec<_> = (0..runners)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/hostile/spin?n=200000000"));
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    for spin in spins {
        assert_eq!(
            spin.await.unwrap(),
            200,
            "every long runner finishes before its deadline"
        );
    }
}
