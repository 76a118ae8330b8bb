//! `just bench`, plugins: the per-request cost of the example plugin — contacts with deals —
//! written in Rust, Python (componentize-py) and JavaScript (componentize-js), against a native
//! handler, in one run.
//!
//! Each build runs in its own release host on the embedded default with the example's own
//! policy (a fresh instance per request); the Python and JavaScript builds run twice more: with
//! `prestart = true` (each request's fresh instance made ahead of it), and with
//! `instance_reuse = 64` (an instance serves up to 64 requests of one organization). One contact
//! with one deal is created through the REST API; then the same load generator drives, in
//! alternating rounds, `GET /contacts/api/contacts/{id}` (access token, tenant route, two
//! queries, JSON) on each, and a native axum server answering the same JSON from memory. At
//! concurrency 1 the p50 latency is one request's cost end to end, and the server process's CPU
//! time per request what it costs the machine; at 16, throughput. Prints each and the
//! differences and ratios to the Rust plugin. The machines are shared and noisy:
//! read the ratios, not the absolute figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use common::{Round, Server, median, repo, start};

const ROUND: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;
/// How long the Python plugin is loaded while a version compiles (a compile takes longer).
const COMPILING: Duration = Duration::from_secs(3);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--native-server") {
        return native_server(args[at + 1].clone());
    }
    let runtime = common::runtime();
    runtime.block_on(run());
}

/// A native server answering `body` to `GET /contacts/api/contacts/{id}`.
fn native_server(body: String) {
    let runtime = common::runtime();
    runtime.block_on(async move {
        let body: Value = serde_json::from_str(&body).unwrap();
        let app = axum::Router::new().route(
            "/contacts/api/contacts/{id}",
            axum::routing::get(move || {
                let body = body.clone();
                async move { axum::Json(body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!(
            "gateway listening on http://{}",
            listener.local_addr().unwrap()
        );
        axum::serve(listener, app).await.unwrap();
    });
}

/// The example's policy, pointed at `wasm`, with `limits` (lines of its `[limits]` table), and
/// the vault that mints the bench's token.
fn policies(wasm: &str, limits: &str) -> Vec<(&'static str, String)> {
    let shipped = std::fs::read_to_string(repo().join("examples/contacts-python/contacts.toml"))
        .expect("the example's policy");
    let contacts = shipped.replace(
        "wasm = \"contacts.wasm\"",
        &format!("wasm = {:?}", common::wasm(wasm)),
    );
    let contacts = format!("{contacts}\n[limits]\nmax_instances = 256\n{limits}\n");
    let vault = format!(
        "wasm = {:?}\nroutes = [\"/vault\"]\npublic_routes = [\"/vault\"]\ncapabilities = [\"cache\", \"crypto\", \"tokens\"]\n",
        common::wasm("vault")
    );
    vec![("contacts", contacts), ("vault", vault)]
}

struct Target {
    name: &'static str,
    /// The host's admin API and the file of its token; none for the native server.
    admin: Option<(String, std::path::PathBuf)>,
    /// Kept running until the end of the bench.
    server: Server,
    url: String,
    token: String,
    /// At concurrency 1 and 16, and the server's CPU per request at 1, in µs.
    rounds: Vec<(Round, Round, f64)>,
}

/// A host serving `wasm` as the contacts plugin, with one contact and its deal: its URL to load
/// and the token to load it with, and the contact's JSON.
async fn plugin(
    client: &reqwest::Client,
    dir: &Path,
    name: &'static str,
    wasm: &str,
    limits: &str,
) -> (Target, Value) {
    let admin_address = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|free| free.local_addr())
        .unwrap()
        .to_string();
    let server = common::platform_configured(
        &dir.join(name),
        &policies(wasm, limits),
        &[],
        "trusted_components = [\"vault\"]",
        &admin_address,
    );
    // The host writes its token once it listens: read when needed.
    let admin = Some((
        format!("http://{admin_address}"),
        dir.join(name).join("data/admin-token"),
    ));
    // Signed in with `token`, when there is one.
    let post = |path: String, token: Option<&str>, body: Value| {
        let request = client.post(format!("{}{path}", server.1)).json(&body);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    let claims = json!({
        "user_id": "user-bench", "email": "bench@example.com", "org_id": "org-bench",
        "org_slug": "bench", "org_name": "bench", "roles": ["member"],
        "permissions": ["contacts:*"], "plan": "free", "session_id": "session-bench",
    });
    let minted: Value = post("/vault/tokens".into(), None, claims)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["token"].as_str().expect("a token").to_string();
    let contact = json!({ "name": "Ada Lovelace", "email": "ada@example.com" });
    let created: Value = post("/contacts/api/contacts".into(), Some(&token), contact)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = &created["id"];
    let deal = json!({ "title": "Analytical engine", "amount_cents": 150000 });
    let deal = post(
        format!("/contacts/api/contacts/{id}/deals"),
        Some(&token),
        deal,
    )
    .await
    .unwrap();
    assert_eq!(deal.status(), 201, "{name}");
    let url = format!("{}/contacts/api/contacts/{id}", server.1);
    let shown: Value = client
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let target = Target {
        name,
        admin,
        server,
        url,
        token,
        rounds: Vec::new(),
    };
    (target, shown)
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut targets = Vec::new();
    let mut answers = Vec::new();
    for (name, wasm, limits) in [
        ("Rust plugin", "contacts", ""),
        ("Python plugin", "contacts_py", ""),
        ("JavaScript plugin", "contacts_js", ""),
        ("Python, made ahead", "contacts_py", "prestart = true"),
        ("JavaScript, made ahead", "contacts_js", "prestart = true"),
        ("Python, reused ×64", "contacts_py", "instance_reuse = 64"),
        (
            "JavaScript, reused ×64",
            "contacts_js",
            "instance_reuse = 64",
        ),
    ] {
        let (target, shown) = plugin(&client, dir.path(), name, wasm, limits).await;
        answers.push(shown);
        targets.push(target);
    }
    assert!(
        answers.windows(2).all(|pair| pair[0] == pair[1]),
        "the three plugins answer the same: {answers:?}"
    );
    let mut native = Command::new(std::env::current_exe().unwrap());
    native.arg("--native-server").arg(answers[0].to_string());
    let native = start(native);
    let native_url = format!("{}/contacts/api/contacts/{}", native.1, answers[0]["id"]);
    targets.push(Target {
        name: "native handler",
        admin: None,
        url: native_url,
        server: native,
        token: String::new(),
        rounds: Vec::new(),
    });

    // Warm up every target (compiled code, pools, connections).
    for target in &targets {
        common::load(
            &client,
            4,
            Duration::from_millis(500),
            &target.url,
            &target.token,
            b"{",
        )
        .await;
    }
    for _ in 0..ROUNDS {
        for target in &mut targets {
            let cpu = target.server.cpu_seconds();
            let serial = common::load(&client, 1, ROUND, &target.url, &target.token, b"{").await;
            let cpu = (target.server.cpu_seconds() - cpu) * 1e6 / serial.requests as f64;
            let loaded = common::load(&client, 16, ROUND, &target.url, &target.token, b"{").await;
            target.rounds.push((serial, loaded, cpu));
        }
    }

    let figures: Vec<(&str, f64, f64, f64, f64)> = targets
        .iter()
        .map(|t| {
            let p50 = median(t.rounds.iter().map(|(s, _, _)| s.p50_us as f64).collect());
            let cpu = median(t.rounds.iter().map(|(_, _, cpu)| *cpu).collect());
            let rps = median(
                t.rounds
                    .iter()
                    .map(|(_, l, _)| l.requests_per_second)
                    .collect(),
            );
            let p99 = median(t.rounds.iter().map(|(_, l, _)| l.p99_us as f64).collect());
            (t.name, p50, cpu, rps, p99)
        })
        .collect();
    let (_, rust_p50, rust_cpu, rust_rps, _) = figures[0];
    println!(
        "\nplugins: GET /contacts/api/contacts/{{id}} (token, tenant route, 2 queries), median of {ROUNDS} rounds of {}s",
        ROUND.as_secs()
    );
    println!(
        "{:<24} {:>12} {:>14} {:>14} {:>14} {:>12} {:>12} {:>14}",
        "",
        "p50 @1 (µs)",
        "vs Rust (µs)",
        "CPU/req @1",
        "vs Rust (µs)",
        "req/s @16",
        "vs Rust",
        "p99 @16 (µs)"
    );
    for (name, p50, cpu, rps, p99) in &figures {
        println!(
            "{name:<24} {p50:>12.0} {:>+14.0} {cpu:>14.0} {:>+14.0} {rps:>12.0} {:>11.2}x {p99:>14.0}",
            p50 - rust_p50,
            cpu - rust_cpu,
            rps / rust_rps
        );
    }
    println!(
        "(CPU/req: the server process's user and system time per request at concurrency 1, in µs)"
    );

    // Deploys into the Python plugin's host: a version never compiled, then versions whose
    // compiled artefact the host keeps (target: a cached version deploys in under 0.3 s).
    let (admin, token_file) = targets[1].admin.clone().expect("a host");
    let token = std::fs::read_to_string(token_file)
        .unwrap()
        .trim()
        .to_string();
    let deploy = |wasm: &'static str| {
        let (client, admin, token) = (client.clone(), admin.clone(), token.clone());
        async move {
            let started = std::time::Instant::now();
            let deployed = client
                .put(format!("{admin}/admin/components/contacts"))
                .bearer_auth(token)
                .body(std::fs::read(common::wasm(wasm)).unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(deployed.status(), 200, "deploying {wasm}");
            started.elapsed().as_secs_f64()
        }
    };
    // The Python plugin's host keeps serving under load (16 clients) while that version
    // compiles: one compile at a time, at a lower priority than the serving threads.
    let deploying = tokio::spawn(deploy("contacts_js"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let python = &targets[1];
    let during = common::load(&client, 16, COMPILING, &python.url, &python.token, b"{").await;
    let uncompiled = deploying.await.unwrap();
    let (_, _, _, idle_rps, idle_p99) = figures[1];
    println!(
        "serving while a version compiles: Python plugin {:.0} req/s @16 ({:.2}x of its {idle_rps:.0} idle), p99 {} µs (idle {idle_p99:.0})",
        during.requests_per_second,
        during.requests_per_second / idle_rps,
        during.p99_us
    );
    let mut cached = Vec::new();
    for wasm in [
        "contacts_py",
        "contacts_js",
        "contacts_py",
        "contacts_js",
        "contacts_py",
    ] {
        cached.push(deploy(wasm).await);
    }
    println!(
        "deploy into a running host: a version never compiled (JavaScript) {uncompiled:.2} s; a cached version {:.3} s (median of {}; target < 0.3 s)",
        median(cached.clone()),
        cached.len()
    );
    drop(targets);
}
