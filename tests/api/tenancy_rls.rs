//! Row-level isolation on PostgreSQL: on a tenant route (`org_routes`) the host binds the
//! request's transaction to the token's organization, and every table with an `org_id` column
//! shows and takes only that organization's rows — even to SQL that forgets `WHERE org_id`, and
//! whatever the component runs to get out of it.

use serde_json::{Value, json};

use crate::helpers::{Engine, Policy, Spawn, TestApp, mint_token};

const NOTES: &str =
    "CREATE TABLE notes (id SERIAL PRIMARY KEY, org_id TEXT NOT NULL, text TEXT NOT NULL)";

async fn app() -> TestApp {
    let vault = Policy::with_routes(
        "vault",
        "vault",
        "routes = [\"/vault\"]\npublic_routes = [\"/vault\"]",
        "capabilities = [\"cache\", \"crypto\", \"tokens\"]",
    );
    // One component, two routes into the same database: a tenant route and one outside any
    // organization.
    let console = Policy::with_routes(
        "notes",
        "sql_console",
        "routes = [\"/tenant\", \"/account\"]\norg_routes = [\"/tenant\"]",
        &format!("capabilities = [\"database\", \"config\"]\n[config]\nmigration_1 = {NOTES:?}"),
    );
    Spawn::new(Engine::Postgres, vec![vault, console])
        .config("trusted_components = [\"vault\"]")
        .start()
        .await
}

async fn token(app: &TestApp, user: &str, org: Option<&str>) -> String {
    let claims = json!({
        "user_id": user, "email": format!("{user}@example.com"), "org_id": org,
        "org_slug": org, "org_name": org, "roles": [], "permissions": [], "plan": "free",
        "session_id": format!("session-{user}"),
    });
    mint_token(app, &claims).await
}

/// Runs `statements` in one request to `route` with `token`; the status and one result per
/// statement.
async fn sql(app: &TestApp, route: &str, token: &str, statements: &[&str]) -> (u16, Vec<Value>) {
    let response = app
        .client
        .post(app.url(&format!("/{route}/sql")))
        .bearer_auth(token)
        .json(&json!({ "statements": statements }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["results"].as_array().cloned().unwrap_or_default(),
    )
}

async fn rows(app: &TestApp, route: &str, token: &str, statement: &str) -> Value {
    let (status, mut results) = sql(app, route, token, &[statement]).await;
    assert_eq!(status, 200);
    let result = results.remove(0);
    assert_eq!(result["ok"], true, "{statement}: {result}");
    result["rows"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unscoped_select_on_a_tenant_route_returns_only_the_callers_organization() {
    let mut app = app().await;
    let acme = token(&app, "alice", Some("org-acme")).await;
    let globex = token(&app, "bob", Some("org-globex")).await;

    let insert = "INSERT INTO notes (org_id, text) VALUES (%org, 'plans')";
    rows(&app, "tenant", &acme, &insert.replace("%org", "'org-acme'")).await;
    rows(
        &app,
        "tenant",
        &globex,
        &insert.replace("%org", "'org-globex'"),
    )
    .await;

    // The component forgets its WHERE org_id: each tenant still sees only its own rows.
    let all = "SELECT org_id, text FROM notes ORDER BY id";
    assert_eq!(
        rows(&app, "tenant", &acme, all).await,
        json!([["org-acme", "plans"]])
    );
    assert_eq!(
        rows(&app, "tenant", &globex, all).await,
        json!([["org-globex", "plans"]])
    );
    // Nor can it write into, change or delete another tenant's rows.
    let (_, results) = sql(
        &app,
        "tenant",
        &acme,
        &[&insert.replace("%org", "'org-globex'")],
    )
    .await;
    assert_eq!(results[0]["ok"], false, "{}", results[0]);
    rows(&app, "tenant", &acme, "UPDATE notes SET text = 'mine'").await;
    rows(
        &app,
        "tenant",
        &acme,
        "DELETE FROM notes WHERE text = 'plans'",
    )
    .await;
    assert_eq!(
        rows(&app, "tenant", &globex, all).await,
        json!([["org-globex", "plans"]])
    );

    // A token outside any organization is refused on a tenant route, not shown everything.
    let outside = token(&app, "carol", None).await;
    let response = app
        .client
        .post(app.url("/tenant/sql"))
        .bearer_auth(&outside)
        .json(&json!({ "statements": [all] }))
        .send()
        .await
        .unwrap();
    let problem = crate::helpers::problem(response, 403).await;
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("/no-organization"),
        "{problem}"
    );

    // A path the gateway would read otherwise than the component (an empty segment) is refused.
    for path in ["/tenant//sql", "//tenant/sql"] {
        let response = app
            .client
            .post(app.url(path))
            .bearer_auth(&outside)
            .json(&json!({ "statements": [all] }))
            .send()
            .await
            .unwrap();
        crate::helpers::problem(response, 400).await;
    }

    // Outside the tenant routes the component's own filters are all there is, as documented.
    assert_eq!(
        rows(&app, "account", &outside, all)
            .await
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A restart puts the same tables under the same policy.
    app.crash_and_restart().await;
    assert_eq!(
        rows(&app, "tenant", &globex, all).await,
        json!([["org-globex", "plans"]])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_cannot_lift_the_row_policy_or_rebind_its_transaction() {
    let app = app().await;
    let acme = token(&app, "alice", Some("org-acme")).await;
    let globex = token(&app, "bob", Some("org-globex")).await;
    rows(
        &app,
        "tenant",
        &globex,
        "INSERT INTO notes (org_id, text) VALUES ('org-globex', 'secret')",
    )
    .await;

    let attempts = [
        "ALTER TABLE notes NO FORCE ROW LEVEL SECURITY",
        "ALTER TABLE notes DISABLE ROW LEVEL SECURITY",
        "DROP POLICY truevalue_tenant ON notes",
        "CREATE POLICY open_door ON notes USING (true)",
        "ALTER TABLE notes OWNER TO CURRENT_USER",
        "TRUNCATE notes",
        "SELECT truevalue_host.bind_org('guessed key', 'org-globex')",
        "UPDATE truevalue_host.request_orgs SET org_id = 'org-globex'",
        "SELECT key FROM truevalue_host.binding_key",
    ];
    for attempt in attempts {
        let (_, results) = sql(&app, "tenant", &acme, &[attempt]).await;
        assert_eq!(
            results[0]["ok"], false,
            "{attempt} must fail: {}",
            results[0]
        );
    }
    // Settings a component may change do not move the binding either.
    let (_, results) = sql(
        &app,
        "tenant",
        &acme,
        &[
            "SET LOCAL truevalue.org_id = 'org-globex'",
            "SELECT set_config('truevalue.org_id', 'org-globex', true)",
            "SELECT org_id, text FROM notes",
        ],
    )
    .await;
    assert_eq!(results[2]["ok"], true, "{}", results[2]);
    assert_eq!(
        results[2]["rows"],
        json!([]),
        "acme sees none of globex's rows"
    );
    // Globex's row is still there, untouched.
    let all = "SELECT org_id, text FROM notes";
    assert_eq!(
        rows(&app, "tenant", &globex, all).await,
        json!([["org-globex", "secret"]])
    );
}
