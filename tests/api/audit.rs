//! The audit component: every event becomes an entry of its organization's hash chain,
//! readable and verifiable by that organization only; entries are append-only, reading them is
//! audited, and a row changed behind the platform's back breaks `verify` at that entry.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Engine, Policy, Spawn, TestApp, mint_token, vault};
use crate::on_both_engines;

fn publisher() -> Policy {
    Policy::new(
        "publisher",
        "publisher",
        "publisher",
        "capabilities = [\"database\", \"events\"]\nevents = [\"crm.thing.events\"]",
    )
}

fn audit() -> Policy {
    Policy::with_routes(
        "audit",
        "audit",
        "routes = [\"/audit\"]\norg_routes = [\"/audit/api\"]\ninternal_routes = [\"/audit/internal\"]",
        "capabilities = [\"database\", \"events\", \"log\"]\nevents = [\"audit.access.events\"]\n\
         append_only = [\"entries\"]\npermissions = [\"audit:read\"]\n\
         [subscriptions]\n\"crm.thing.events\" = \"/audit/internal/events\"\n\
         \"audit.access.events\" = \"/audit/internal/events\"",
    )
}

async fn start(engine: Engine) -> TestApp {
    Spawn::new(engine, vec![vault(), publisher(), audit()])
        .config("trusted_components = [\"vault\"]")
        .start()
        .await
}

async fn token(app: &TestApp, user: &str, org: &str, permissions: &[&str]) -> String {
    let claims = json!({
        "user_id": user, "email": format!("{user}@example.com"), "org_id": org,
        "org_slug": org, "org_name": org, "roles": [], "permissions": permissions,
        "plan": "free", "session_id": format!("session-{user}"),
    });
    mint_token(app, &claims).await
}

/// A thing created by `token`'s user, for the token's organization.
async fn create(app: &TestApp, token: &str, name: &str) {
    let response = app
        .client
        .post(app.url("/publisher/things"))
        .bearer_auth(token)
        .header("user-agent", "audit-test/1.0")
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

async fn get(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// The organization's entries with `action`, once there are at least `n`.
async fn entries(app: &TestApp, token: &str, action: &str, n: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let response = get(app, token, &format!("/audit/api/logs?action={action}")).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= n || Instant::now() > until {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn verify(app: &TestApp, token: &str) -> Value {
    let response = get(app, token, "/audit/api/verify").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn each_organization_reads_and_verifies_its_own_chain(engine: Engine) {
    let app = start(engine).await;
    let alice = token(&app, "alice", "org-a", &["audit:read"]).await;
    let bob = token(&app, "bob", "org-b", &["*"]).await;
    let carol = token(&app, "carol", "org-a", &["contacts:read"]).await;
    for name in ["one", "two", "three"] {
        create(&app, &alice, name).await;
    }
    create(&app, &bob, "other").await;

    let items = entries(&app, &alice, "thing.created", 3).await;
    let resources: Vec<&str> = items
        .iter()
        .map(|e| e["resource"].as_str().unwrap())
        .collect();
    assert_eq!(resources, ["one", "two", "three"], "oldest first");
    let first = &items[0];
    assert_eq!(first["org_id"], "org-a");
    assert_eq!(first["actor_id"], "alice");
    assert_eq!(first["action"], "thing.created");
    assert_eq!(first["user_agent"], "audit-test/1.0");
    assert_eq!(first["data"], json!({ "name": "one" }));
    assert!(
        first["id"].is_string() && first["time"].is_string() && first["request_id"].is_string()
    );
    assert!(first["ip"].is_string(), "{first}");

    let others = entries(&app, &bob, "thing.created", 1).await;
    assert_eq!(
        others.len(),
        1,
        "another organization's entries stay apart: {others:?}"
    );
    assert_eq!(others[0]["resource"], "other");

    let refused = get(&app, &carol, "/audit/api/logs").await;
    assert_eq!(refused.status(), 403, "reading the log takes audit:read");

    let filtered = get(&app, &alice, "/audit/api/logs?actor=nobody").await;
    let filtered: Value = filtered.json().await.unwrap();
    assert_eq!(filtered["items"], json!([]));
    let page = get(&app, &alice, "/audit/api/logs?action=thing.created&limit=2").await;
    let page: Value = page.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = get(
        &app,
        &alice,
        &format!("/audit/api/logs?action=thing.created&limit=2&cursor={cursor}"),
    )
    .await;
    let rest: Value = rest.json().await.unwrap();
    assert_eq!(rest["items"][0]["resource"], "three");

    // Reading the log is itself an entry, with who read it.
    let reads = entries(&app, &alice, "audit.logs.read", 1).await;
    assert_eq!(reads[0]["actor_id"], "alice");
    assert_eq!(reads[0]["source"], "/truevalue/audit");

    let report = verify(&app, &alice).await;
    assert_eq!(report["valid"], true, "{report}");
    assert!(report["entries"].as_i64().unwrap() >= 4, "{report}");

    let export = get(&app, &alice, "/audit/api/export").await;
    assert_eq!(export.headers()["content-type"], "application/x-ndjson");
    let text = export.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 4);
    assert!(lines.iter().all(|l| l["org_id"] == "org-a"));
    for pair in lines.windows(2) {
        assert_eq!(
            pair[1]["prev_hash"], pair[0]["hash"],
            "each line links to the one before"
        );
    }
}
on_both_engines!(each_organization_reads_and_verifies_its_own_chain);

/// Changes the `resource` of org-a's entry number `seq` behind the platform's back.
async fn tamper(app: &TestApp, engine: Engine, seq: i64) {
    match engine {
        Engine::Sqlite => {
            let path = app.data_dir.join("db/audit.sqlite");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            // The host's trigger refuses any update, so an intruder drops it first.
            let trigger: String = sqlx::query_scalar(
                "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name LIKE 'truevalue_append_only_entries_%' AND sql LIKE '%BEFORE UPDATE%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            sqlx::query(&format!("DROP TRIGGER \"{trigger}\""))
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query(
                "UPDATE entries SET resource = 'forged' WHERE org_id = 'org-a' AND seq = $1",
            )
            .bind(seq)
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(app.database_url.as_deref().unwrap())
                .await
                .unwrap();
            sqlx::query(
                "UPDATE audit.entries SET resource = 'forged' WHERE org_id = 'org-a' AND seq = $1",
            )
            .bind(seq)
            .execute(&pool)
            .await
            .unwrap();
        }
    }
}

async fn a_row_changed_in_the_database_breaks_verify_at_that_entry(engine: Engine) {
    let app = start(engine).await;
    let alice = token(&app, "alice", "org-a", &["audit:read"]).await;
    for name in ["one", "two", "three", "four"] {
        create(&app, &alice, name).await;
    }
    entries(&app, &alice, "thing.created", 4).await;
    assert_eq!(verify(&app, &alice).await["valid"], true);

    tamper(&app, engine, 2).await;
    let report = verify(&app, &alice).await;
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(report["first_broken"]["seq"], 2, "{report}");
    assert_eq!(
        report["first_broken"]["reason"], "its content does not match its hash",
        "{report}"
    );
}
on_both_engines!(a_row_changed_in_the_database_breaks_verify_at_that_entry);

async fn append_only_tables_take_inserts_and_refuse_updates_and_deletes(engine: Engine) {
    let console = Policy::new(
        "ledger",
        "sql_console",
        "ledger",
        "capabilities = [\"database\", \"config\"]\nappend_only = [\"lines\"]\n[config]\n\
         migration_1 = \"CREATE TABLE lines (n INTEGER PRIMARY KEY, org_id TEXT NOT NULL)\"",
    );
    let app = Spawn::new(engine, vec![console]).start().await;
    let run = |statement: &'static str| {
        let app = &app;
        async move {
            let response = app
                .post_json("/ledger/sql", &json!({ "statements": [statement] }))
                .await;
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            body["results"][0].clone()
        }
    };
    assert_eq!(
        run("INSERT INTO lines (n, org_id) VALUES (1, 'org-a')").await["ok"],
        true
    );
    for refused in ["UPDATE lines SET n = 2", "DELETE FROM lines"] {
        let result = run(refused).await;
        assert_eq!(result["ok"], false, "{refused}: {result}");
    }
    let rows = run("SELECT n FROM lines").await;
    assert_eq!(rows["rows"], json!([[1]]), "{rows}");
    if engine == Engine::Postgres {
        for refused in ["TRUNCATE lines", "DROP TABLE lines"] {
            let result = run(refused).await;
            assert_eq!(result["ok"], false, "{refused}: {result}");
        }
    } else {
        let result = run("DROP TRIGGER truevalue_append_only_lines_UPDATE").await;
        assert_eq!(
            result["ok"], false,
            "the host's triggers are out of reach: {result}"
        );
        let result = run("INSERT OR REPLACE INTO lines (n, org_id) VALUES (1, 'org-b')").await;
        assert_eq!(
            result["ok"], false,
            "a replace deletes, so it is refused: {result}"
        );
    }
}
on_both_engines!(append_only_tables_take_inserts_and_refuse_updates_and_deletes);
