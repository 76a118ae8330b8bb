//! `just bench`, logins: what signing in costs, and whether it starves everyone else.
//!
//! The release host on the embedded default serves the auth component (its shipped policy) and
//! the example greeting behind an access token. In one run:
//! 1. Baseline: Argon2id verifications per second (the host's parameters) in this process, one
//!    thread per core — the machine's ceiling for password logins.
//! 2. Logins per second and refreshes per second, clients flat out over HTTP.
//! 3. Latency of a light authenticated `GET /hello`, alone and while logins run flat out, in
//!    alternating rounds.
//!
//! The machines are shared and noisy: read the ratios, not the absolute figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use serde_json::{Value, json};

use common::{median, percentile, repo};

/// Clients logging in (or refreshing) at once.
const CLIENTS: usize = 8;
/// Clients of the light GET.
const READERS: usize = 4;
const ROUND: Duration = Duration::from_secs(5);
const ROUNDS: usize = 3;
const PASSWORD: &str = "correct horse battery staple";

fn main() {
    let runtime = common::runtime();
    runtime.block_on(run());
}

fn auth_policy() -> String {
    let shipped = std::fs::read_to_string(repo().join("policies/auth.toml")).unwrap();
    shipped
        .lines()
        .map(|line| match line.starts_with("wasm =") {
            true => format!("wasm = {:?}", common::wasm("auth")),
            false => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Argon2id verifications per second with one thread per core.
fn argon2_baseline() -> f64 {
    let params = Params::new(19_456, 2, 1, None).unwrap();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = argon2::password_hash::SaltString::from_b64("c2FsdHNhbHRzYWx0c2FsdA").unwrap();
    let phc = argon2
        .hash_password(PASSWORD.as_bytes(), &salt)
        .unwrap()
        .to_string();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = Instant::now();
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            let (argon2, phc) = (argon2.clone(), phc.clone());
            std::thread::spawn(move || {
                let hash = PasswordHash::new(&phc).unwrap();
                let mut done = 0u64;
                while started.elapsed() < ROUND {
                    argon2.verify_password(PASSWORD.as_bytes(), &hash).unwrap();
                    done += 1;
                }
                done
            })
        })
        .collect();
    let done: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    done as f64 / started.elapsed().as_secs_f64()
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn login(&self, email: &str) -> Value {
        let response = self
            .post(
                "/auth/login",
                &json!({ "email": email, "password": PASSWORD }),
            )
            .await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

/// Runs `CLIENTS` loops of `step` for a round; returns completed steps per second.
async fn flat_out<F, Fut>(step: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (step, done) = (step.clone(), done.clone());
            tokio::spawn(async move {
                while started.elapsed() < ROUND {
                    step(i).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Latencies (µs, sorted) of `GET /hello` with an access token, `READERS` clients, until `stop`.
async fn light_reads(client: Arc<Client>, token: String, stop: Arc<AtomicBool>) -> Vec<u64> {
    let started = Instant::now();
    let workers: Vec<_> = (0..READERS)
        .map(|_| {
            let (client, token, stop) = (client.clone(), token.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < ROUND {
                    let sent = Instant::now();
                    let response = client
                        .http
                        .get(format!("{}/hello", client.base))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    response.bytes().await.unwrap();
                    latencies.push(sent.elapsed().as_micros() as u64);
                    // A light client: a request every 10 ms, not a load of its own.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    latencies.sort_unstable();
    latencies
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let host = common::platform(
        dir.path(),
        &[
            ("auth", auth_policy()),
            ("hello", common::hello_policy(false)),
        ],
    );
    let client = Arc::new(Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(CLIENTS + READERS)
            .build()
            .unwrap(),
        base: host.1.clone(),
    });
    let emails: Vec<String> = (0..CLIENTS)
        .map(|i| format!("bench-{i}@example.com"))
        .collect();
    for email in &emails {
        let body = json!({ "email": email, "password": PASSWORD, "name": "Bench" });
        assert_eq!(client.post("/auth/register", &body).await.status(), 201);
    }
    let emails = Arc::new(emails);

    let argon2 = argon2_baseline();

    let login = {
        let (client, emails) = (client.clone(), emails.clone());
        move |i: usize| {
            let (client, emails) = (client.clone(), emails.clone());
            async move {
                client.login(&emails[i]).await;
            }
        }
    };
    let logins = flat_out(login.clone()).await;

    let mut tokens = Vec::new();
    for email in emails.iter() {
        tokens.push(
            client.login(email).await["refresh_token"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let tokens = Arc::new(
        tokens
            .into_iter()
            .map(tokio::sync::Mutex::new)
            .collect::<Vec<_>>(),
    );
    let refreshes = flat_out({
        let client = client.clone();
        move |i: usize| {
            let (client, tokens) = (client.clone(), tokens.clone());
            async move {
                let mut token = tokens[i].lock().await;
                let response = client
                    .post("/auth/refresh", &json!({ "refresh_token": *token }))
                    .await;
                assert_eq!(response.status(), 200);
                let pair: Value = response.json().await.unwrap();
                *token = pair["refresh_token"].as_str().unwrap().to_string();
            }
        }
    })
    .await;

    let access = client.login(&emails[0]).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Alternating rounds, alone and under load; the medians of each round's percentiles.
    let (mut alone, mut loaded, mut meanwhile) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let quiet = Arc::new(AtomicBool::new(false));
        alone.push(light_reads(client.clone(), access.clone(), quiet).await);
        let stop = Arc::new(AtomicBool::new(false));
        let readers = tokio::spawn(light_reads(client.clone(), access.clone(), stop.clone()));
        meanwhile.push(flat_out(login.clone()).await);
        stop.store(true, Ordering::Relaxed);
        loaded.push(readers.await.unwrap());
    }
    let at = |rounds: &[Vec<u64>], q: f64| {
        median(rounds.iter().map(|r| percentile(r, q) as f64).collect())
    };
    let logins_meanwhile = median(meanwhile);

    println!("Logins on the embedded default, {CLIENTS} clients flat out, rounds of {ROUND:?}:");
    println!(
        "  Argon2id verifications in process, one thread per core {argon2:>8.1} /s (baseline)"
    );
    println!(
        "  POST /auth/login                                        {logins:>8.1} /s   {:.2}× baseline",
        logins / argon2
    );
    println!(
        "  POST /auth/refresh                                      {refreshes:>8.1} /s   {:.1}× baseline",
        refreshes / argon2
    );
    let (p50, p99) = (at(&alone, 0.5), at(&alone, 0.99));
    let (p50_loaded, p99_loaded) = (at(&loaded, 0.5), at(&loaded, 0.99));
    println!(
        "Authenticated GET /hello, {READERS} light clients, {ROUNDS} alternating rounds (medians):"
    );
    println!("  alone                      p50 {p50:>7.0} µs   p99 {p99:>7.0} µs");
    println!(
        "  while logins run flat out  p50 {p50_loaded:>7.0} µs   p99 {p99_loaded:>7.0} µs   ({logins_meanwhile:.1} logins/s)"
    );
    println!(
        "  ratio loaded/alone         p50 {:.2}×   p99 {:.2}×",
        p50_loaded / p50,
        p99_loaded / p99
    );
}
