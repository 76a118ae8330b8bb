//! What the benchmarks share: the release host (or another server) in its own process.

// Each benchmark uses a part of this.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A server process, its address, and the file its log goes to (the host's); killed on drop.
pub struct Server(Child, pub String, Option<PathBuf>);

impl Server {
    /// CPU time the process has used so far (user and system, all threads), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id()))
            .expect("the server's /proc/<pid>/stat");
        // After the command name in parentheses: state is field 3, utime 14 and stime 15, in
        // clock ticks of USER_HZ (100 on Linux).
        let fields: Vec<&str> = stat[stat.rfind(')').expect("a stat line") + 2..]
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }
}

/// Lines of a host's log a failed bench prints.
const LOG_TAIL: usize = 50;

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        // The bench failed while this server ran: its log tells why, and goes with the
        // bench's temporary directory.
        if std::thread::panicking()
            && let Some(log) = &self.2
        {
            eprintln!("{}", log_tail(log));
        }
    }
}

/// The last [`LOG_TAIL`] lines of the log at `path`, headed by where it was.
fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    format!(
        "the last lines of the host's log ({}):\n{}",
        path.display(),
        lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
    )
}

/// How the host (and the benches' native servers, which copy it) announce their URL.
const GATEWAY_ANNOUNCES: Announces = Announces::Stdout("gateway listening on ");

/// Starts `command` and waits until it prints `gateway listening on <url>`.
pub fn start(command: Command) -> Server {
    start_announced(command, GATEWAY_ANNOUNCES).unwrap_or_else(|e| panic!("{e}"))
}

/// Where a server prints the line that ends with the URL it listens on.
pub enum Announces {
    /// `gateway listening on <url>`, say; stderr is the bench's own unless the command says
    /// otherwise.
    Stdout(&'static str),
    /// `Serving HTTP on <url>/`, as `wasmtime serve` does; stdout is the bench's own.
    Stderr(&'static str),
}

/// Starts `command` and waits until it announces its URL (without a trailing `/`); when it
/// stops first, says so with what it had printed on the stream read.
pub fn start_announced(mut command: Command, announces: Announces) -> Result<Server, String> {
    let prefix = match announces {
        Announces::Stdout(prefix) => {
            command.stdout(Stdio::piped());
            prefix
        }
        Announces::Stderr(prefix) => {
            command.stdout(Stdio::inherit()).stderr(Stdio::piped());
            prefix
        }
    };
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
    let output: Box<dyn Read + Send> = match (child.stdout.take(), child.stderr.take()) {
        (Some(stdout), _) => Box::new(stdout),
        (None, Some(stderr)) => Box::new(stderr),
        (None, None) => unreachable!("one stream is piped"),
    };
    let mut server = Server(child, String::new(), None);
    let mut reader = BufReader::new(output);
    let (mut line, mut printed) = (String::new(), String::new());
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if let Some(address) = line.strip_prefix(prefix) {
            server.1 = address
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_string();
            // Keep draining the stream so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in reader.lines() {});
            return Ok(server);
        }
        printed.push_str(&line);
        line.clear();
    }
    Err(format!(
        "the server stopped before listening{}{}",
        if printed.is_empty() { "" } else { ":\n" },
        printed.trim_end()
    ))
}

/// The release host on the embedded default, serving `policies` (file stem, TOML), with the
/// rate limit in the path, as in production, and a budget the load cannot spend.
pub fn platform(dir: &Path, policies: &[(&str, String)]) -> Server {
    platform_with(dir, policies, &[])
}

/// [`platform`] with environment variables set for the host (`TRUEVALUE_KAFKA_BROKERS`, …).
pub fn platform_with(dir: &Path, policies: &[(&str, String)], env: &[(&str, &str)]) -> Server {
    platform_configured(dir, policies, env, "", "127.0.0.1:0")
}

/// [`platform_with`] with more lines for the host's config file (`trusted_components`, …) and
/// the admin API's address.
pub fn platform_configured(
    dir: &Path,
    policies: &[(&str, String)],
    env: &[(&str, &str)],
    config: &str,
    admin_listen: &str,
) -> Server {
    let policy_dir = dir.join("policies");
    std::fs::create_dir_all(&policy_dir).unwrap();
    for (name, toml) in policies {
        std::fs::write(policy_dir.join(format!("{name}.toml")), toml).unwrap();
    }
    let config_file = dir.join("config.toml");
    std::fs::write(
        &config_file,
        format!("rate_limit_per_minute = 1000000\n{config}\n"),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_truevalue"));
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            admin_listen,
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .arg("--policies")
        .arg(&policy_dir)
        .arg("--config")
        .arg(&config_file)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied());
    // Into a file, not among the bench's figures: some benches provoke what the host warns of
    // (the fairness bench's endless loops end in 504s). A failed bench prints its end.
    let log = dir.join("host.log");
    command.stderr(std::fs::File::create(&log).unwrap());
    let mut server = start_announced(command, GATEWAY_ANNOUNCES)
        .unwrap_or_else(|e| panic!("{e}\n{}", log_tail(&log)));
    server.2 = Some(log);
    server
}

/// The path of a built component.
pub fn wasm(name: &str) -> String {
    let path = repo().join(format!("dist/components/{name}.wasm"));
    assert!(path.is_file(), "run `just components` first");
    path.display().to_string()
}

/// The `hello` example's policy; `public` serves it without an access token.
pub fn hello_policy(public: bool) -> String {
    hello_policy_reusing(public, 1)
}

/// The example's policy with each instance serving up to `reuse` requests.
pub fn hello_policy_reusing(public: bool, reuse: u32) -> String {
    let public_routes = if public { "[\"/hello\"]" } else { "[]" };
    format!(
        "wasm = {:?}\nroutes = [\"/hello\"]\npublic_routes = {public_routes}\ncapabilities = [\"database\", \"config\"]\n[limits]\nmax_instances = 256\ninstance_reuse = {reuse}\n[config]\ngreeting = \"Hello\"\n",
        wasm("hello")
    )
}

/// Latency percentile `q` (0..1) of sorted samples.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// A multi-threaded tokio runtime with every driver, as each bench and its native servers use.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// What one round of load measured.
pub struct Round {
    pub requests: u64,
    pub requests_per_second: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// `concurrency` clients sending `GET url` (with `token` as a bearer when not empty) for
/// `round`; every answer must be a 200 whose body starts with `body_prefix`.
pub async fn load(
    client: &reqwest::Client,
    concurrency: usize,
    round: std::time::Duration,
    url: &str,
    token: &str,
    body_prefix: &'static [u8],
) -> Round {
    use std::sync::Arc;
    use std::time::Instant;

    let (url, token) = (Arc::new(url.to_string()), Arc::new(token.to_string()));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while started.elapsed() < round {
                    let sent = Instant::now();
                    let mut request = client.get(url.as_str());
                    if !token.is_empty() {
                        request = request.bearer_auth(token.as_str());
                    }
                    let response = request.send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    let body = response.bytes().await.unwrap();
                    assert!(body.starts_with(body_prefix), "{body:?}");
                    latencies.push(sent.elapsed().as_micros() as u64);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Round {
        requests: latencies.len() as u64,
        requests_per_second: latencies.len() as f64 / elapsed,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
    }
}

/// Whether `wrk` is on the `PATH`.
pub fn has_wrk() -> bool {
    Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A round of `GET url` by `wrk -t1` with `connections` connections for `round`; every answer
/// must be a 2xx (wrk counts statuses, not bodies: check one body before).
pub fn wrk(url: &str, connections: usize, round: std::time::Duration) -> Round {
    let output = Command::new("wrk")
        .args(["-t1", "--latency"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", round.as_secs().max(1)))
        .arg(url)
        .output()
        .expect("wrk runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {report}");
    assert!(
        !report.contains("Non-2xx") && !report.contains("Socket errors"),
        "wrk saw failures: {report}"
    );
    let line = |label: &str| {
        report
            .lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(label))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no `{label}` in wrk's report: {report}"))
            .to_string()
    };
    let requests = report
        .lines()
        .find_map(|line| line.trim().split_once(" requests in "))
        .and_then(|(count, _)| count.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's report: {report}"));
    Round {
        requests,
        requests_per_second: line("Requests/sec:").parse().expect("requests/s"),
        p50_us: wrk_micros(&line("50%")),
        p99_us: wrk_micros(&line("99%")),
    }
}

/// A latency as wrk prints it (`258.00us`, `1.95ms`, `2.00s`) in microseconds.
fn wrk_micros(value: &str) -> u64 {
    let (number, scale) = if let Some(n) = value.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1e6)
    } else {
        panic!("a latency of wrk: {value}")
    };
    (number.parse::<f64>().expect("a number") * scale).round() as u64
}
