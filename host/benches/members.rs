//! `just bench`, members: what the platform costs on the reference flow's read.
//!
//! The release host on the embedded default serves auth, org and permission with their shipped
//! policies. Through its REST API an admin creates an organization and invites 49 users, who
//! accept: 50 members. Then the same load generator drives, in alternating rounds of the same
//! run:
//! - the platform: `GET /org/api/organizations/{slug}/members` through the gateway (access token,
//!   org check), the org component and its two bulk internal calls, into auth
//!   (`POST /auth/internal/users`) and permission (`POST /permission/internal/roles-of`);
//! - a native axum server in its own process running the same SQL with sqlx on the SQLite files
//!   the host wrote (the organization, the page of members, their accounts, their roles) and
//!   building the same JSON. Before the rounds, both answers are checked to be equal.
//!
//! Prints requests/s and latency percentiles of each and their ratios. The machines are shared
//! and noisy: read the ratios, not the absolute figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use common::{Round, median, repo, start};

/// Members of the organization: the admin and 49 invitees, one default page.
const MEMBERS: usize = 50;
/// Setup requests in flight at once (registrations hash passwords: keep the machine busy, not
/// swamped).
const SETUP_CONCURRENCY: usize = 8;
const CONCURRENCY: usize = 16;
const ROUND: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;
const PASSWORD: &str = "correct horse battery staple";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--native-server") {
        return native_server(PathBuf::from(&args[at + 1]), args[at + 2].clone());
    }
    let runtime = common::runtime();
    runtime.block_on(run());
}

/// A shipped policy with its `wasm =` line pointing at the built component.
fn shipped(name: &str) -> String {
    let path = repo().join(format!("policies/{name}.toml"));
    let shipped = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} is missing: {e}", path.display()));
    shipped
        .lines()
        .map(|line| match line.starts_with("wasm =") {
            true => format!("wasm = {:?}", common::wasm(name)),
            false => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// The native server: the org component's `members::list`, auth's `users_by_id` and
// permission's `roles_of`, with their SQL, in one process.

struct Native {
    org: SqlitePool,
    auth: SqlitePool,
    permission: SqlitePool,
    /// What the platform takes from the verified access token.
    org_id: String,
}

/// A member as the org component shows it.
#[derive(Serialize)]
struct Member {
    user_id: String,
    email: Option<String>,
    name: Option<String>,
    status: String,
    roles: Vec<String>,
    joined_at: String,
    title: Option<String>,
    phone: Option<String>,
    time_zone: Option<String>,
}

/// `user_id, joined_at, title, phone, time_zone`, as the org component reads them.
type MemberRow = (String, i64, Option<String>, Option<String>, Option<String>);

struct Account {
    email: String,
    name: String,
    status: String,
}

/// The page size the component uses when the client does not say (`Page`'s default).
const PAGE_LIMIT: usize = 50;

/// `$from, $from+1, ...`, `n` of them.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rfc3339(unix_seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

impl Native {
    async fn members(&self, slug: &str) -> Result<Vec<u8>, sqlx::Error> {
        let org_id = self.org_id.as_str();
        // org: the token's organization, which the slug must name.
        let organization: Option<(String, String, String, i64)> = sqlx::query_as(
            "SELECT org_id, slug, name, created_at FROM organizations WHERE org_id = $1",
        )
        .bind(org_id)
        .fetch_optional(&self.org)
        .await?;
        if organization.is_none_or(|o| o.1 != slug) {
            return Err(sqlx::Error::RowNotFound);
        }
        // org: the first page of members, one extra row telling whether there is a next.
        let rows: Vec<MemberRow> = sqlx::query_as(
            "SELECT user_id, joined_at, title, phone, time_zone FROM members
                  WHERE org_id = $1 AND (joined_at > $2 OR (joined_at = $2 AND user_id > $3))
                  ORDER BY joined_at, user_id LIMIT $4",
        )
        .bind(org_id)
        .bind(i64::MIN)
        .bind("")
        .bind(PAGE_LIMIT as i64 + 1)
        .fetch_all(&self.org)
        .await?;
        // The benchmark's organization fits one page: no cursor to encode.
        if rows.len() > PAGE_LIMIT {
            return Err(sqlx::Error::Protocol("more than one page".into()));
        }
        let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();

        // auth: the accounts, 100 ids per query.
        let mut accounts = HashMap::new();
        for chunk in ids.chunks(100) {
            let sql = format!(
                "SELECT id, email, name, status FROM users WHERE id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query_as::<_, (String, String, String, String)>(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            for (id, email, name, status) in query.fetch_all(&self.auth).await? {
                accounts.insert(
                    id,
                    Account {
                        email,
                        name,
                        status,
                    },
                );
            }
        }

        // permission: each user's own roles, in the order of the ids.
        let mut held: Vec<(String, Vec<String>)> =
            ids.iter().map(|id| (id.to_string(), Vec::new())).collect();
        let sql = format!(
            "SELECT user_id, role FROM assignments WHERE org_id = $1 AND user_id IN ({})
             ORDER BY role",
            placeholders(2, ids.len())
        );
        let mut query = sqlx::query_as::<_, (String, String)>(&sql).bind(org_id);
        for id in &ids {
            query = query.bind(*id);
        }
        for (user_id, role) in query.fetch_all(&self.permission).await? {
            for (_, roles) in held.iter_mut().filter(|(id, _)| *id == user_id) {
                roles.push(role.clone());
            }
        }
        let mut roles: HashMap<String, Vec<String>> = held.into_iter().collect();

        let members: Vec<Member> = rows
            .into_iter()
            .map(|(user_id, joined_at, title, phone, time_zone)| {
                let account = accounts.remove(&user_id);
                Member {
                    roles: roles.remove(&user_id).unwrap_or_default(),
                    status: account
                        .as_ref()
                        .map_or_else(|| "unknown".to_string(), |a| a.status.clone()),
                    email: account.as_ref().map(|a| a.email.clone()),
                    name: account.map(|a| a.name),
                    joined_at: rfc3339(joined_at),
                    user_id,
                    title,
                    phone,
                    time_zone,
                }
            })
            .collect();
        Ok(serde_json::to_vec(&json!({ "items": members, "next_cursor": null })).unwrap())
    }
}

async fn pool(db_dir: &Path, component: &str) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(db_dir.join(format!("{component}.sqlite")))
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    // As many connections as the host gives a component.
    SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap()
}

fn native_server(db_dir: PathBuf, org_id: String) {
    let runtime = common::runtime();
    runtime.block_on(async {
        let native = Arc::new(Native {
            org: pool(&db_dir, "org").await,
            auth: pool(&db_dir, "auth").await,
            permission: pool(&db_dir, "permission").await,
            org_id,
        });
        let app = axum::Router::new()
            .route(
                "/org/api/organizations/{slug}/members",
                axum::routing::get(
                    |State(native): State<Arc<Native>>,
                     axum::extract::Path(slug): axum::extract::Path<String>| async move {
                        match native.members(&slug).await {
                            Ok(body) => {
                                ([(header::CONTENT_TYPE, "application/json")], body).into_response()
                            }
                            Err(sqlx::Error::RowNotFound) => StatusCode::NOT_FOUND.into_response(),
                            Err(error) => {
                                eprintln!("native members: {error}");
                                StatusCode::INTERNAL_SERVER_ERROR.into_response()
                            }
                        }
                    },
                ),
            )
            .with_state(native);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!(
            "gateway listening on http://{}",
            listener.local_addr().unwrap()
        );
        axum::serve(listener, app).await.unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Setup through the platform's REST API.

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// `POST path` with `token` (if not empty) and `body`; the answer's JSON (null if empty),
    /// after checking its status.
    async fn call(&self, path: &str, token: &str, body: &Value, status: u16) -> Value {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let got = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(got, status, "POST {path}: {text}");
        match text.is_empty() {
            true => Value::Null,
            false => serde_json::from_str(&text).unwrap(),
        }
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// Registers `email`; returns an access token not scoped to any organization.
    async fn sign_up(&self, email: &str, name: &str) -> String {
        let body = json!({ "email": email, "password": PASSWORD, "name": name });
        self.call("/auth/register", "", &body, 201).await;
        let body = json!({ "email": email, "password": PASSWORD });
        let pair = self.call("/auth/login", "", &body, 200).await;
        pair["access_token"].as_str().unwrap().to_string()
    }
}

/// The organization's slug and id, and its admin's access token for it.
async fn organization(client: &Client) -> (String, String, String) {
    let token = client.sign_up("admin@example.com", "Admin").await;
    let slug = "acme".to_string();
    let created = client
        .call(
            "/org/api/organizations",
            &token,
            &json!({ "name": "Acme Corp", "slug": slug }),
            201,
        )
        .await;
    let org_id = created["id"].as_str().unwrap().to_string();
    let pair = client
        .call(
            "/auth/switch-org",
            &token,
            &json!({ "org_slug": slug }),
            200,
        )
        .await;
    let admin = pair["access_token"].as_str().unwrap().to_string();
    (slug, org_id, admin)
}

/// Registers user `i`; the admin invites them as a member and they accept.
async fn join(client: &Client, slug: &str, admin: &str, i: usize) {
    let email = format!("member-{i}@example.com");
    let token = client.sign_up(&email, &format!("Member {i}")).await;
    let invite = client
        .call(
            &format!("/org/api/organizations/{slug}/invites"),
            admin,
            &json!({ "email": email, "role": "member" }),
            201,
        )
        .await;
    let accept = format!(
        "/org/api/invites/{}/accept",
        invite["token"].as_str().unwrap()
    );
    client.call(&accept, &token, &json!({}), 200).await;
}

// ---------------------------------------------------------------------------------------------
// Load

/// `CONCURRENCY` clients sending `GET url` (with `token` if not empty) for a round.
async fn load(url: &str, token: &str) -> Round {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONCURRENCY)
        .build()
        .unwrap();
    common::load(&client, CONCURRENCY, ROUND, url, token, b"{\"").await
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let host = common::platform(
        dir.path(),
        &[
            ("auth", shipped("auth")),
            ("org", shipped("org")),
            ("permission", shipped("permission")),
        ],
    );
    let client = Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(SETUP_CONCURRENCY)
            .build()
            .unwrap(),
        base: host.1.clone(),
    };

    let setup = Instant::now();
    let (slug, org_id, admin) = organization(&client).await;
    futures::stream::iter(1..MEMBERS)
        .map(|i| {
            let (client, slug, admin) = (&client, &slug, &admin);
            async move { join(client, slug, admin, i).await }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    let setup = setup.elapsed();

    let mut native = Command::new(std::env::current_exe().unwrap());
    native
        .arg("--native-server")
        .arg(dir.path().join("data/db"))
        .arg(&org_id);
    let native = start(native);

    let path = format!("/org/api/organizations/{slug}/members");
    let (platform_url, native_url) = (format!("{}{path}", host.1), format!("{}{path}", native.1));

    // Both answer the same.
    let through_platform = client.get(&path, &admin).await;
    let answered = reqwest::get(&native_url).await.unwrap();
    assert_eq!(answered.status(), 200);
    let natively: Value = answered.json().await.unwrap();
    let items = through_platform["items"].as_array().unwrap();
    assert_eq!(items.len(), MEMBERS, "{through_platform}");
    assert!(items.iter().all(|m| m["email"].is_string()));
    assert_eq!(
        items
            .iter()
            .filter(|m| m["roles"] == json!(["admin"]))
            .count(),
        1
    );
    assert_eq!(through_platform, natively, "the native answer differs");

    // Warm both up (connection pools, compiled code, SQLite's page cache).
    load(&native_url, "").await;
    load(&platform_url, &admin).await;

    let (mut n, mut p) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        n.push(load(&native_url, "").await);
        p.push(load(&platform_url, &admin).await);
    }
    report(&n, &p, setup);
    drop(native);
    drop(host);
}

fn report(n: &[Round], p: &[Round], setup: Duration) {
    let rps = |rounds: &[Round]| median(rounds.iter().map(|r| r.requests_per_second).collect());
    let p50 = |rounds: &[Round]| median(rounds.iter().map(|r| r.p50_us as f64).collect());
    let p99 = |rounds: &[Round]| median(rounds.iter().map(|r| r.p99_us as f64).collect());
    println!(
        "GET /org/api/organizations/{{slug}}/members, {MEMBERS} members (set up in {:.1} s), \
         {CONCURRENCY} concurrent clients, {ROUNDS} alternating rounds of {ROUND:?} (medians):",
        setup.as_secs_f64()
    );
    println!(
        "  native: same SQL with sqlx, same JSON     {:>8.0} req/s   p50 {:>6.0} µs   p99 {:>6.0} µs",
        rps(n),
        p50(n),
        p99(n)
    );
    println!(
        "  gateway + org + auth + permission (Wasm)  {:>8.0} req/s   p50 {:>6.0} µs   p99 {:>6.0} µs",
        rps(p),
        p50(p),
        p99(p)
    );
    println!(
        "  ratio platform/native:  throughput {:.2}×   p50 {:.2}×   p99 {:.2}×",
        rps(p) / rps(n),
        p50(p) / p50(n),
        p99(p) / p99(n)
    );
}
