//! `spawn_app()`: the real `truevalue` binary on random ports, with its own data directory and,
//! for PostgreSQL, its own fresh database. Dropping the app kills the process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The repository root, where `dist/components/` holds the built components.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A built component; `just components` (run by `just test`) puts them there.
pub fn wasm(name: &str) -> PathBuf {
    let path = repo().join("dist/components").join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run `just components` (or `just test`)",
        path.display()
    );
    path
}

/// The database engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The server the PostgreSQL tests use; override with `TRUEVALUE_TEST_POSTGRES`.
fn postgres_admin_url() -> String {
    std::env::var("TRUEVALUE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database on the test server, dropped with its roles by [`TestApp`]'s drop.
pub async fn fresh_postgres_database() -> String {
    let admin_url = postgres_admin_url();
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {admin_url} ({e}). Start it (e.g. `pg_ctlcluster 15 main start`, \
             or `docker compose up postgres`), or point TRUEVALUE_TEST_POSTGRES at one."
        )
    });
    let name = format!("tvt_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create database");
    let base = admin_url
        .rsplit_once('/')
        .map(|(base, _)| base.to_string())
        .expect("url has a database");
    format!("{base}/{name}")
}

/// A policy for a test: which component file, which grants and limits.
#[derive(Clone)]
pub struct Policy {
    pub name: String,
    pub toml: String,
}

impl Policy {
    /// `name` served from `dist/components/<wasm>.wasm` at `/<route>`, public (no token
    /// needed), with extra TOML lines.
    pub fn new(name: &str, wasm_name: &str, route: &str, extra: &str) -> Self {
        let routes = format!("routes = [\"/{route}\"]\npublic_routes = [\"/{route}\"]");
        Self::with_routes(name, wasm_name, &routes, extra)
    }

    /// `routes`: the policy's TOML lines naming its routes and public routes.
    pub fn with_routes(name: &str, wasm_name: &str, routes: &str, extra: &str) -> Self {
        let toml = format!(
            "wasm = {:?}\n{routes}\n{extra}\n",
            wasm(wasm_name).display().to_string()
        );
        Self {
            name: name.into(),
            toml,
        }
    }
}

/// The vault fixture at `/vault`: it mints whatever claims it is sent, so the host must trust
/// it (`crate::auth::TRUSTS_VAULT`).
pub fn vault() -> Policy {
    Policy::new(
        "vault",
        "vault",
        "vault",
        "capabilities = [\"cache\", \"crypto\", \"tokens\"]",
    )
}

/// An access token for `claims`, minted by the vault fixture.
pub async fn mint_token(app: &TestApp, claims: &Value) -> String {
    let response = app.post_json("/vault/tokens", claims).await;
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// How much of the host's log a failed test prints.
const FAILURE_LOG_LINES: usize = 200;

pub struct TestApp {
    pub address: String,
    pub admin_address: String,
    pub admin_token: String,
    pub data_dir: PathBuf,
    pub client: reqwest::Client,
    pub database_url: Option<String>,
    env: Vec<(String, String)>,
    child: Child,
    stderr: PathBuf,
    dir: tempfile::TempDir,
}

/// How to start an app.
pub struct Spawn {
    pub engine: Engine,
    pub policies: Vec<Policy>,
    pub config: String,
    pub env: Vec<(String, String)>,
}

impl Spawn {
    pub fn new(engine: Engine, policies: Vec<Policy>) -> Self {
        Self {
            engine,
            policies,
            config: String::new(),
            env: Vec::new(),
        }
    }

    pub fn config(mut self, toml: &str) -> Self {
        self.config.push_str(toml);
        self.config.push('\n');
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub async fn start(self) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = match self.engine {
            Engine::Sqlite => None,
            Engine::Postgres => Some(fresh_postgres_database().await),
        };
        TestApp::start_in(dir, self, database_url)
            .await
            .expect("the host starts")
    }

    /// Starts the binary and expects it to refuse; returns what it printed on stderr.
    pub async fn start_refused(self) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        match TestApp::start_in(dir, self, None).await {
            Ok(_) => panic!("the host started but should have refused"),
            Err(stderr) => stderr,
        }
    }
}

/// One line of the policies shared by most tests.
pub const HOSTILE_LIMITS: &str = "capabilities = [\"database\"]\n[limits]\nmemory_mib = 16\ntimeout_ms = 1000\nmax_instances = 4";

impl TestApp {
    async fn start_in(
        dir: tempfile::TempDir,
        spawn: Spawn,
        database_url: Option<String>,
    ) -> Result<Self, String> {
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies).expect("policies dir");
        for policy in &spawn.policies {
            std::fs::write(policies.join(format!("{}.toml", policy.name)), &policy.toml)
                .expect("write policy");
        }
        let cache = repo().join("target/test-cache");
        let mut extra = spawn.config.clone();
        if !extra.contains("rate_limit_per_minute") {
            // Tests send many requests from one address; the rate-limit tests set their own.
            extra.push_str("rate_limit_per_minute = 1000000\n");
        }
        if !extra.contains("max_instances") {
            extra.push_str("max_instances = 64\n");
        }
        std::fs::write(
            dir.path().join("config.toml"),
            format!("cache_dir = {:?}\n{}", cache.display().to_string(), extra),
        )
        .expect("write config");
        let data_dir = dir.path().join("data");
        let (child, stderr, address, admin_address) =
            launch(dir.path(), &data_dir, database_url.as_deref(), &spawn.env).await?;
        let admin_token = spawn
            .env
            .iter()
            .find(|(k, v)| k == "TRUEVALUE_ADMIN_TOKEN" && !v.is_empty())
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| {
                // A gateway-role process has no admin API and no token.
                std::fs::read_to_string(data_dir.join("admin-token"))
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            });
        Ok(Self {
            address,
            admin_address,
            admin_token,
            data_dir,
            client: reqwest::Client::new(),
            database_url,
            env: spawn.env,
            child,
            stderr,
            dir,
        })
    }

    /// Kills the process (SIGKILL: a crash, nothing flushed) and starts it again on the same
    /// data directory, policies and database.
    pub async fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, stderr, address, admin_address) = launch(
            self.dir.path(),
            &self.data_dir,
            self.database_url.as_deref(),
            &self.env,
        )
        .await
        .expect("restart");
        self.child = child;
        self.stderr = stderr;
        self.address = address;
        self.admin_address = admin_address;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.admin_address))
            .bearer_auth(&self.admin_token)
    }

    pub async fn deploy(&self, name: &str, wasm_name: &str) -> reqwest::Response {
        let bytes = std::fs::read(wasm(wasm_name)).expect("read wasm");
        self.admin(reqwest::Method::PUT, &format!("/admin/components/{name}"))
            .body(bytes)
            .send()
            .await
            .expect("deploy")
    }

    pub async fn components(&self) -> Value {
        let response = self
            .admin(reqwest::Method::GET, "/admin/components")
            .send()
            .await
            .expect("list");
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }

    /// The host process, to read its memory and CPU time from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the host wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // A failed test shows what the host logged: the test's own output is printed with
            // the failure, and the temporary directory holding the log goes with the app.
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            let tail = &lines[lines.len().saturating_sub(FAILURE_LOG_LINES)..];
            eprintln!(
                "--- the host's log ({} of {} lines) ---\n{}",
                tail.len(),
                lines.len(),
                tail.join("\n")
            );
        }
        if let Some(url) = self.database_url.take() {
            // Drop the test's database and the component roles made for it.
            let name = url.rsplit('/').next().unwrap_or_default().to_string();
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let Ok(admin) = sqlx::PgPool::connect(&postgres_admin_url()).await else {
                        return;
                    };
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                    let roles: Vec<String> = sqlx::query_scalar(
                        "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)",
                    )
                    .bind(format!("{name}_"))
                    .fetch_all(&admin)
                    .await
                    .unwrap_or_default();
                    for role in roles {
                        let _ = sqlx::query(&format!("DROP ROLE IF EXISTS \"{role}\""))
                            .execute(&admin)
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Starts the binary; returns the process, its stderr file and the two addresses it bound,
/// or what it printed on stderr if it stopped instead.
async fn launch(
    dir: &Path,
    data_dir: &Path,
    database_url: Option<&str>,
    env: &[(String, String)],
) -> Result<(Child, PathBuf, String, String), String> {
    let stderr_path = dir.join(format!("stderr-{}.log", uuid::Uuid::new_v4()));
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_truevalue"));
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--policies")
        .arg(dir.join("policies"))
        .arg("--config")
        .arg(dir.join("config.toml"))
        .env_remove("TRUEVALUE_DATABASE_URL")
        .env_remove("TRUEVALUE_REDIS_URL")
        .env_remove("TRUEVALUE_KAFKA_BROKERS")
        .env_remove("TRUEVALUE_ADMIN_TOKEN")
        .env_remove("TRUEVALUE_SMTP_URL")
        .env_remove("TRUEVALUE_SMTP_FROM")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(stderr);
    if let Some(url) = database_url {
        command.env("TRUEVALUE_DATABASE_URL", url);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn truevalue");
    let stdout = child.stdout.take().expect("stdout");

    // The host prints the addresses it bound once it is ready to serve.
    let lines = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stdout);
        let mut found = (None, None);
        let mut line = String::new();
        while found.0.is_none() || found.1.is_none() {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            // The whole URL: a listener serving TLS prints https://.
            let address = line
                .split_whitespace()
                .find(|word| word.starts_with("http://") || word.starts_with("https://"))
                .map(str::to_string);
            if line.starts_with("gateway listening") {
                found.0 = address;
            } else if line.starts_with("admin API") {
                // A gateway serves no admin API: an empty address says so.
                found.1 = Some(address.unwrap_or_default());
            }
        }
        found
    });
    match tokio::time::timeout(Duration::from_secs(120), lines).await {
        Ok(Ok((Some(a), Some(b)))) => Ok((
            child,
            stderr_path,
            a,
            if b.is_empty() { "http://".into() } else { b },
        )),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err(std::fs::read_to_string(&stderr_path).unwrap_or_default())
        }
    }
}

/// A problem document: checks the content type and the fields every problem carries.
pub async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(content_type, "application/problem+json");
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status);
    assert!(
        body["type"].as_str().is_some_and(|t| !t.is_empty()),
        "problem has a type: {body}"
    );
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "problem has a title: {body}"
    );
    assert_eq!(
        body["request_id"],
        request_id.as_str(),
        "problem carries the response's request id"
    );
    body
}

/// Runs a test body once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_engines {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Engine::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Engine::Postgres).await;
            }
        }
    };
}

impl TestApp {
    /// The policies directory the host reads at start-up.
    pub fn policies_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    /// The Prometheus text, from the admin listener (the public port does not serve it).
    pub async fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.admin_address))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200, "the admin listener serves /metrics");
        response.text().await.unwrap_or_default()
    }

    /// Waits until `component` has `n` live instances, as `/metrics` reports them: a request
    /// is then surely in flight.
    pub async fn wait_for_live_instances(&self, component: &str, n: u32) {
        let line = format!("truevalue_instances_live{{component=\"{component}\"}} {n}");
        for _ in 0..500 {
            if self.metrics().await.lines().any(|l| l == line) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{component} never had {n} live instances");
    }
}
