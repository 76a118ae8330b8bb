//! `just bench`: what the sandbox costs.
//!
//! 1. Through the network: the release host serving the example component's `GET /hello`, and a
//!    native axum server doing the same work (read the name, format the greeting, encode JSON),
//!    each in its own process, driven by the same load generator in alternating rounds of the
//!    same run. Prints requests/s and latency percentiles of each and their ratios.
//!    The load generator is `wrk -t1 -c32` (Debian's `wrk`, which `.ci/run` installs): one C
//!    thread, so the servers get the rest of the machine. Without `wrk` on the `PATH` the
//!    bench's own generator (reqwest, 16 clients) drives them and says so; it takes about a
//!    core itself, and caps the native server near half of what `wrk` measures.
//!    The anchor, in the same rounds: `wasmtime serve` (the CLI of the wasmtime release the host
//!    embeds) serving the same greeting as a plain `wasi:http` component
//!    (`tests/components/http_hello`), a fresh instance per request — the runtime alone, without
//!    the gateway. Its binary is `TRUEVALUE_WASMTIME_SERVE`, or built once from crates.io into
//!    `~/.cache/truevalue/wasmtime-serve`; without it, the other two rows still print.
//! 2. In process: a fresh instance plus the handler call, through the runtime's own entry point,
//!    against the same logic called natively.
//!
//! The machines are shared and noisy: read the ratios, not the absolute figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::Query;
use serde_json::{Value, json};

use common::{Announces, Round, Server, median, repo, start, start_announced};

/// Connections of the built-in load generator; `wrk` runs with [`WRK_CONNECTIONS`].
const CONCURRENCY: usize = 16;
const WRK_CONNECTIONS: usize = 32;
const ROUND: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;
const CALLS: u32 = 20_000;
/// The anchor's wasmtime: the release the host embeds (`wasmtime` in the workspace Cargo.toml).
const WASMTIME: &str = "48.0.8";
/// What `wasmtime serve` needs (48.x does not compile it without `component-model-async`), with
/// the pooling allocator it defaults to, as the host uses one.
const WASMTIME_FEATURES: &str =
    "run,serve,component-model-async,cranelift,pooling-allocator,parallel-compilation";

fn main() {
    if std::env::args().any(|a| a == "--native-server") {
        return native_server();
    }
    let runtime = common::runtime();
    runtime.block_on(async {
        through_the_network().await;
        in_process().await;
    });
}

/// The work of the example component's greeting, natively.
fn greet(name: Option<&str>) -> Vec<u8> {
    let message = format!("{}, {}!", "Hello", name.unwrap_or("world"));
    serde_json::to_vec(&json!({ "message": message })).unwrap()
}

fn native_server() {
    let runtime = common::runtime();
    runtime.block_on(async {
        let app = axum::Router::new().route(
            "/hello",
            axum::routing::get(
                |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    let body: Value =
                        serde_json::from_slice(&greet(q.get("name").map(String::as_str))).unwrap();
                    Json(body)
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!(
            "gateway listening on http://{}",
            listener.local_addr().unwrap()
        );
        axum::serve(listener, app).await.unwrap();
    });
}

/// The host serving the example; `reuse`: how many requests one instance may serve.
fn platform(dir: &Path, reuse: u32) -> Server {
    common::platform(dir, &[("hello", common::hello_policy_reusing(true, reuse))])
}

/// Requests one kept instance serves in the "kept instance" row.
const REUSE: u32 = 10_000;

const GREETING: &[u8] = b"{\"message\":\"Hello, Ada!\"}";

/// A round of `GET /hello?name=Ada` against `url`: by `wrk` when it is installed, else by the
/// built-in generator.
async fn load(url: &str, wrk: bool) -> Round {
    let url = format!("{url}/hello?name=Ada");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    if wrk {
        // wrk counts statuses, not bodies: check the answer once per round.
        let body = client
            .get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&body[..], GREETING, "{url}");
        return common::wrk(&url, WRK_CONNECTIONS, ROUND);
    }
    common::load(&client, CONCURRENCY, ROUND, &url, "", GREETING).await
}

/// `wasmtime serve` on the `http_hello` fixture, a fresh instance per request, once its
/// greeting is checked; or why there is none.
async fn anchor() -> Result<(Server, String), String> {
    let component = repo().join("dist/components/http_hello.wasm");
    if !component.is_file() {
        return Err(format!(
            "{} is missing: run `just components`",
            component.display()
        ));
    }
    let wasmtime = wasmtime_serve()?;
    let version = Command::new(&wasmtime)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", wasmtime.display()))?;
    // `wasmtime 48.0.8 (<commit> <date>)`
    let version = String::from_utf8_lossy(&version.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or("?")
        .to_string();
    let mut command = Command::new(&wasmtime);
    command
        .args(["serve", "--addr", "127.0.0.1:0", "-S", "cli=y"])
        .args(["--max-instance-reuse-count", "1"])
        .arg(&component);
    let server = start_announced(command, Announces::Stderr("Serving HTTP on "))?;
    let response = reqwest::get(format!("{}/hello?name=Ada", server.1))
        .await
        .map_err(|e| format!("wasmtime serve does not answer: {e}"))?;
    let status = response.status();
    let content_type = response.headers().get("content-type").cloned();
    let body = response.bytes().await.unwrap_or_default();
    let json = content_type
        .as_ref()
        .is_some_and(|t| t == "application/json");
    if status != 200 || !json || body != GREETING {
        return Err(format!(
            "wasmtime serve answered {status} {content_type:?} {body:?}"
        ));
    }
    Ok((server, version))
}

/// The `wasmtime` binary to serve with: `TRUEVALUE_WASMTIME_SERVE`, or the one in the cache,
/// built there from crates.io when missing (in a target dir of its own).
fn wasmtime_serve() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("TRUEVALUE_WASMTIME_SERVE") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "TRUEVALUE_WASMTIME_SERVE={} is not a file",
                path.display()
            ))
        };
    }
    let cache =
        Path::new(&std::env::var_os("HOME").ok_or("HOME is not set")?).join(".cache/truevalue");
    let root = cache.join("wasmtime-serve");
    let binary = root.join("bin/wasmtime");
    if binary.is_file() {
        return Ok(binary);
    }
    println!(
        "Building the anchor, wasmtime-cli {WASMTIME} from crates.io, into {} (once; about 15 minutes on 2 cores)",
        root.display()
    );
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let version = format!("={WASMTIME}");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["install", "wasmtime-cli", "--version", &version, "--locked"])
        .args(["--no-default-features", "--features", WASMTIME_FEATURES])
        .arg("--root")
        .arg(&root)
        .env("CARGO_TARGET_DIR", cache.join("wasmtime-serve-target"))
        .current_dir(&cache)
        .status()
        .map_err(|e| format!("cannot run cargo install: {e}"))?;
    if !status.success() || !binary.is_file() {
        return Err(format!(
            "cargo install wasmtime-cli@{WASMTIME} failed ({status})"
        ));
    }
    Ok(binary)
}

async fn through_the_network() {
    let wrk = common::has_wrk();
    if !wrk {
        println!(
            "No `wrk` on the PATH (`apt-get install wrk`): the bench's own load generator drives the servers, and caps them"
        );
    }
    let anchor = anchor()
        .await
        .inspect_err(|why| println!("No wasmtime serve anchor: {why}"))
        .ok();
    let (dir, kept_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let host = platform(dir.path(), 1);
    let kept = platform(kept_dir.path(), REUSE);
    let mut native = Command::new(std::env::current_exe().unwrap());
    native.arg("--native-server");
    let native = start(native);

    // Warm them up (connection pools, the components' compiled code in the page cache).
    load(&native.1, wrk).await;
    load(&host.1, wrk).await;
    load(&kept.1, wrk).await;
    if let Some((anchor, _)) = &anchor {
        load(&anchor.1, wrk).await;
    }

    let (mut n, mut p, mut k, mut a) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        n.push(load(&native.1, wrk).await);
        p.push(load(&host.1, wrk).await);
        k.push(load(&kept.1, wrk).await);
        if let Some((anchor, _)) = &anchor {
            a.push(load(&anchor.1, wrk).await);
        }
    }
    let rps = |rounds: &[Round]| median(rounds.iter().map(|r| r.requests_per_second).collect());
    let p50 = |rounds: &[Round]| median(rounds.iter().map(|r| r.p50_us as f64).collect());
    let p99 = |rounds: &[Round]| median(rounds.iter().map(|r| r.p99_us as f64).collect());
    let generator = match wrk {
        true => format!("wrk -t1 -c{WRK_CONNECTIONS}"),
        false => format!("{CONCURRENCY} clients of the bench's own generator"),
    };
    println!("GET /hello, {generator}, {ROUNDS} alternating rounds of {ROUND:?} (medians):");
    let row = |label: &str, rounds: &[Round]| {
        println!(
            "  {label:<23} {:>9.0} req/s   p50 {:>6.0} µs   p99 {:>6.0} µs",
            rps(rounds),
            p50(rounds),
            p99(rounds)
        );
    };
    row("native axum handler", &n);
    row("gateway + fresh instance", &p);
    row("gateway + kept instance", &k);
    if let Some((_, version)) = &anchor {
        row(&format!("wasmtime serve {version}"), &a);
    }
    let ratio = |label: &str, rounds: &[Round], of: &[Round]| {
        println!(
            "  {label:<30}throughput {:.2}×   p50 {:.2}×   p99 {:.2}×",
            rps(rounds) / rps(of),
            p50(rounds) / p50(of),
            p99(rounds) / p99(of)
        );
    };
    println!("  (kept: `instance_reuse = {REUSE}`; wasmtime serve: a fresh instance per request)");
    ratio("fresh / native:", &p, &n);
    ratio("kept / native:", &k, &n);
    if anchor.is_some() {
        ratio("fresh / wasmtime serve:", &p, &a);
        ratio("kept / wasmtime serve:", &k, &a);
    }
    let verdict = |holds: bool| if holds { "holds" } else { "NOT MET" };
    for (label, rounds) in [("fresh", &p), ("kept", &k)] {
        let (of_native, p99_of_native) = (rps(rounds) / rps(&n), p99(rounds) / p99(&n));
        let of_anchor = match anchor.is_some() {
            true => format!(
                "{:.2}× wasmtime serve (target ≥ 4×: {})",
                rps(rounds) / rps(&a),
                verdict(rps(rounds) / rps(&a) >= 4.0)
            ),
            false => "no wasmtime serve anchor".to_string(),
        };
        println!(
            "  {label}: {of_native:.2}× native (target ≥ 0.5×: {}), p99 {p99_of_native:.2}× native (target ≤ 2×: {}), {of_anchor}",
            verdict(of_native >= 0.5),
            verdict(p99_of_native <= 2.0),
        );
    }
}

/// A runtime serving the example in this process, each instance serving up to `reuse` requests.
async fn runtime_in_process(
    dir: &Path,
    reuse: u32,
) -> (
    Arc<truevalue::runtime::Runtime>,
    Arc<truevalue::runtime::Slot>,
) {
    use truevalue::runtime::{Runtime, new_engine};

    let host_dir = dir.join("host");
    std::fs::create_dir_all(host_dir.join("policies")).unwrap();
    std::fs::write(
        host_dir.join("policies/hello.toml"),
        common::hello_policy_reusing(true, reuse),
    )
    .unwrap();
    let policies = truevalue::policy::load_dir(&host_dir.join("policies"), 64, &[]).unwrap();
    let engine = new_engine(64, 64, false).unwrap();
    let cache: Arc<dyn truevalue::capabilities::cache::CacheStore> =
        Arc::new(truevalue::capabilities::cache::MemoryCache::default());
    let secret: secrecy::SecretString = "bench secret key, 32 chars long!".to_string().into();
    let keys = [truevalue::capabilities::tokens::Tokens::derived_key(
        &secret,
    )];
    let capabilities = truevalue::capabilities::Capabilities {
        database: truevalue::capabilities::database::connect(None, &host_dir)
            .await
            .unwrap(),
        tokens: Arc::new(
            truevalue::capabilities::tokens::Tokens::new(
                &keys,
                Arc::new(truevalue::security_state::MemorySecurityState::default()),
            )
            .unwrap(),
        ),
        crypto: Arc::new(truevalue::capabilities::crypto::Crypto::new(secret)),
        cache,
        email: Arc::new(
            truevalue::capabilities::email::Mailer::from_settings(
                None,
                truevalue::config::DEFAULT_SMTP_FROM,
            )
            .unwrap(),
        ),
        signatures: Arc::new(truevalue::signatures::Signatures::none()),
        events: truevalue::capabilities::events::Relay::new(Arc::new(
            truevalue::capabilities::events::LocalBus::open(&host_dir)
                .await
                .unwrap(),
        )),
    };
    let runtime = Arc::new(
        Runtime::start(
            engine,
            capabilities,
            policies,
            truevalue::runtime::Settings {
                data_dir: host_dir.clone(),
                cache_dir: host_dir.join("cache"),
                cache_max_bytes: u64::MAX,
                compile_queue: 4,
                max_instances: 64,
                max_memory_mib: 64,
                trusted_components: Vec::new(),
            },
        )
        .await
        .unwrap(),
    );
    let slot = runtime.slot("hello").unwrap();
    (runtime, slot)
}

/// Microseconds per `GET /hello?name=Ada` through the runtime's entry point.
async fn per_call(dir: &Path, reuse: u32) -> f64 {
    use truevalue::bindings::handler::{Request, RequestContext};
    use truevalue::runtime::Outcome;

    let (runtime, slot) = runtime_in_process(dir, reuse).await;
    let request = Request {
        method: "GET".into(),
        path: "/hello".into(),
        query: "name=Ada".into(),
        headers: Vec::new(),
        body: Vec::new(),
        context: RequestContext {
            request_id: "bench".into(),
            user_id: None,
            org_id: None,
            roles: Vec::new(),
            permissions: Vec::new(),
            session_id: None,
            client_ip: None,
            caller: None,
        },
    };
    // On a worker of the runtime, as the gateway calls it: the instance a call is done with is
    // dropped on a task of its own, which a worker picks up next.
    tokio::spawn(async move {
        let call = async || match runtime.handle(&slot, request.clone(), None).await {
            Outcome::Response { response, .. } => assert_eq!(response.status, 200),
            Outcome::Busy => panic!("no instance to be had"),
            Outcome::Unavailable => panic!("the component is unavailable"),
            Outcome::Failed(failure) => panic!("the component failed: {failure:?}"),
        };
        for _ in 0..1000 {
            call().await;
        }
        let started = Instant::now();
        for _ in 0..CALLS {
            call().await;
        }
        started.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS)
    })
    .await
    .unwrap()
}

async fn in_process() {
    let (fresh_dir, kept_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fresh = per_call(fresh_dir.path(), 1).await;
    let kept = per_call(kept_dir.path(), REUSE).await;

    let started = Instant::now();
    for _ in 0..CALLS {
        std::hint::black_box(greet(std::hint::black_box(Some("Ada"))));
    }
    let native = started.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS);
    println!("In process, {CALLS} calls of the greeting:");
    println!("  fresh instance + call   {fresh:>8.2} µs per request");
    println!("  kept instance + call    {kept:>8.2} µs per request");
    println!("  native function call    {native:>8.2} µs per request");
    println!(
        "  ratio fresh / native    {:>8.1}×   kept / native {:.1}×",
        fresh / native,
        kept / native
    );
}
