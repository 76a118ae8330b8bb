//! What component SQL may do, enforced by the engines themselves: ordinary SQL (triggers, CTEs,
//! upserts) passes in migrations and requests on both engines; reaching another component, the
//! host's records, its files or the catalogs is refused, however the statement is dressed up.

use serde_json::{Value, json};

use crate::helpers::{Engine, Policy, Spawn, TestApp};
use crate::on_both_engines;

/// The `sql_console` fixture as `name`, served at `/name`, with these migrations.
fn console(name: &str, migrations: &[&str]) -> Policy {
    let mut extra = String::from("capabilities = [\"database\", \"config\"]\n[config]\n");
    for (i, sql) in migrations.iter().enumerate() {
        extra.push_str(&format!("migration_{} = {:?}\n", i + 1, sql));
    }
    Policy::new(name, "sql_console", name, &extra)
}

/// Runs `statements` in one request of `name`; one result per statement.
async fn sql(app: &TestApp, name: &str, statements: &[&str]) -> Vec<Value> {
    let response = app
        .post_json(
            &format!("/{name}/sql"),
            &json!({ "statements": statements }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["results"].as_array().unwrap().clone()
}

/// Runs each statement in a request of its own (on PostgreSQL, a failed statement ends the
/// transaction for those after it).
async fn each(app: &TestApp, name: &str, statements: &[&str]) -> Vec<Value> {
    let mut results = Vec::new();
    for statement in statements {
        results.push(sql(app, name, &[statement]).await.remove(0));
    }
    results
}

/// The rows of one statement that must succeed.
async fn rows(app: &TestApp, name: &str, statement: &str) -> Value {
    let result = sql(app, name, &[statement]).await.remove(0);
    assert_eq!(result["ok"], true, "{statement}: {result}");
    result["rows"].clone()
}

fn assert_refused(statement: &str, result: &Value) {
    assert_eq!(
        result["kind"], "access-denied",
        "{statement} must be refused as access-denied: {result}"
    );
}

const NOTES: &str = "CREATE TABLE notes (text TEXT NOT NULL);
CREATE TABLE counts (k TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO counts (k, n) VALUES ('notes', 0)";

/// A trigger whose body has several statements and a `CASE … END`.
fn trigger_migration(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite => {
            "CREATE TRIGGER count_notes AFTER INSERT ON notes
BEGIN
  UPDATE counts SET n = n + CASE WHEN new.text = '' THEN 0 ELSE 1 END WHERE k = 'notes';
  UPDATE counts SET n = n WHERE k = 'notes';
END"
        }
        Engine::Postgres => {
            "CREATE FUNCTION count_notes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE counts SET n = n + CASE WHEN NEW.text = '' THEN 0 ELSE 1 END WHERE k = 'notes';
  RETURN NEW;
END $$;
CREATE TRIGGER count_notes AFTER INSERT ON notes FOR EACH ROW EXECUTE FUNCTION count_notes()"
        }
    }
}

async fn triggers_ctes_and_upserts_pass_in_migrations_and_requests(engine: Engine) {
    let app = Spawn::new(
        engine,
        vec![console("app", &[NOTES, trigger_migration(engine)])],
    )
    .start()
    .await;

    // The trigger from the migration fires.
    rows(&app, "app", "INSERT INTO notes (text) VALUES ('first')").await;
    assert_eq!(
        rows(&app, "app", "SELECT n FROM counts WHERE k = 'notes'").await,
        json!([[1]])
    );

    // A trigger (or a function with a body of statements) created in a request.
    let in_request = match engine {
        Engine::Sqlite => {
            "CREATE TRIGGER shout BEFORE INSERT ON notes WHEN new.text = 'quiet' BEGIN SELECT RAISE(ABORT, 'say it louder'); END"
        }
        Engine::Postgres => {
            "CREATE FUNCTION shout(t TEXT) RETURNS TEXT LANGUAGE sql BEGIN ATOMIC SELECT upper(t); END"
        }
    };
    let results = sql(&app, "app", &[in_request]).await;
    assert_eq!(results[0]["ok"], true, "{in_request}: {results:?}");

    let cte = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) \
               SELECT CAST(sum(n) AS BIGINT) FROM r";
    assert_eq!(rows(&app, "app", cte).await, json!([[6]]));
    let upsert =
        "INSERT INTO counts (k, n) VALUES ('x', 1) ON CONFLICT (k) DO UPDATE SET n = counts.n + 1";
    rows(&app, "app", upsert).await;
    rows(&app, "app", upsert).await;
    let writing_cte = "WITH moved AS (UPDATE counts SET n = n * 10 WHERE k = 'x' RETURNING n) \
                       SELECT n FROM moved";
    match engine {
        // SQLite's CTEs only read; PostgreSQL's may write.
        Engine::Sqlite => rows(&app, "app", "UPDATE counts SET n = n * 10 WHERE k = 'x'").await,
        Engine::Postgres => rows(&app, "app", writing_cte).await,
    };
    assert_eq!(
        rows(&app, "app", "SELECT n FROM counts WHERE k = 'x'").await,
        json!([[20]])
    );
}
on_both_engines!(triggers_ctes_and_upserts_pass_in_migrations_and_requests);

#[tokio::test]
async fn sqlite_refuses_what_reaches_past_the_components_own_tables() {
    let app = Spawn::new(
        Engine::Sqlite,
        vec![console("victim", &[NOTES]), console("thief", &[NOTES])],
    )
    .start()
    .await;
    rows(&app, "victim", "INSERT INTO notes (text) VALUES ('secret')").await;
    let victim_file = app.data_dir.join("db/victim.sqlite").display().to_string();
    let attach = format!("ATTACH DATABASE '{victim_file}' AS v");
    let refused = [
        // The host's file paths.
        "SELECT file FROM pragma_database_list",
        "SELECT * FROM pragma_database_list()",
        "PRAGMA database_list",
        // Other files.
        attach.as_str(),
        "VACUUM INTO '/tmp/stolen.sqlite'",
        // The host's migration records, directly or through a view or a trigger.
        "SELECT id FROM truevalue_migrations",
        "INSERT INTO truevalue_migrations (id, name, checksum, applied_at) VALUES (99, 'x', 'x', 'x')",
        "DELETE FROM truevalue_migrations",
        "DROP TABLE truevalue_migrations",
        "CREATE TRIGGER forge AFTER INSERT ON truevalue_migrations BEGIN SELECT 1; END",
        // The host's transaction, and state that would outlive the request.
        "COMMIT",
        "SAVEPOINT s",
        "CREATE TEMP TABLE kept (x INT)",
        "SELECT load_extension('/tmp/evil')",
    ];
    let results = each(&app, "thief", &refused).await;
    for (statement, result) in refused.iter().zip(&results) {
        assert_refused(statement, result);
    }

    // SQLite checks a view or trigger body when a statement uses it, with the guest's rules.
    let results = sql(
        &app,
        "thief",
        &[
            "CREATE VIEW records AS SELECT * FROM truevalue_migrations",
            "SELECT * FROM records",
            "CREATE TRIGGER wipe AFTER INSERT ON notes BEGIN DELETE FROM truevalue_migrations; END",
            "INSERT INTO notes (text) VALUES ('x')",
        ],
    )
    .await;
    assert_refused("reading the records through a view", &results[1]);
    assert_refused("a trigger deleting the records", &results[3]);

    // The records are whole: a restart applies nothing twice, and the victim's data is there.
    let records = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        app.data_dir.join("db/thief.sqlite").display()
    ))
    .await
    .unwrap();
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM truevalue_migrations")
        .fetch_one(&records)
        .await
        .unwrap();
    assert_eq!(recorded, 1);
    assert_eq!(
        rows(&app, "victim", "SELECT text FROM notes").await,
        json!([["secret"]])
    );
}

#[tokio::test]
async fn postgres_a_grant_cannot_open_one_components_data_to_another() {
    let app = Spawn::new(
        Engine::Postgres,
        vec![console("victim", &[NOTES]), console("thief", &[NOTES])],
    )
    .start()
    .await;
    rows(&app, "victim", "INSERT INTO notes (text) VALUES ('secret')").await;

    // The component tries, with every means it has, to open its schema to everyone.
    each(
        &app,
        "victim",
        &[
            "DO $$ BEGIN EXECUTE 'GRANT USAGE ON SCHEMA victim TO PUBLIC'; END $$",
            "DO $$ BEGIN EXECUTE 'GRANT ALL ON ALL TABLES IN SCHEMA victim TO PUBLIC'; END $$",
            "GRANT SELECT ON notes TO PUBLIC",
            "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC",
            "DO $$ BEGIN EXECUTE 'ALTER SCHEMA victim OWNER TO ' || quote_ident(current_user); END $$",
        ],
    )
    .await;

    let refused = [
        "SELECT text FROM victim.notes",
        "DO $$ BEGIN PERFORM text FROM victim.notes; END $$",
        "DO $$ BEGIN EXECUTE 'SET ROLE ' || quote_ident(current_database() || '_victim'); END $$",
        "SELECT set_config('role', current_database() || '_victim', true)",
        "CREATE TEMP TABLE kept (x INT)",
    ];
    let results = each(&app, "thief", &refused).await;
    for (statement, result) in refused.iter().zip(&results) {
        assert_refused(statement, result);
    }
    assert_eq!(
        rows(&app, "victim", "SELECT text FROM notes").await,
        json!([["secret"]])
    );
}

#[tokio::test]
async fn postgres_catalogs_do_not_list_other_components() {
    let app = Spawn::new(
        Engine::Postgres,
        vec![console("victim", &[NOTES]), console("thief", &[NOTES])],
    )
    .start()
    .await;
    rows(&app, "victim", "INSERT INTO notes (text) VALUES ('secret')").await;
    let refused = [
        "SELECT nspname FROM pg_namespace",
        "SELECT relname FROM pg_class WHERE relnamespace = to_regnamespace('victim')",
        "SELECT attname FROM pg_attribute WHERE attname = 'text'",
        "SELECT table_name FROM information_schema.tables",
        "SELECT column_name FROM information_schema.columns",
        "SELECT schemaname, relname, n_live_tup FROM pg_stat_all_tables",
        "SELECT relname FROM pg_stat_user_tables",
        "SELECT pg_stat_get_live_tuples(CAST(16384 AS oid))",
        "SELECT datname FROM pg_database",
        "SELECT rolname FROM pg_roles",
        "SELECT usename FROM pg_stat_activity",
        "SELECT pg_get_userbyid(CAST(10 AS oid))",
    ];
    let results = each(&app, "thief", &refused).await;
    for (statement, result) in refused.iter().zip(&results) {
        assert_refused(statement, result);
    }
    // What the component needs still works.
    assert_eq!(
        rows(&app, "thief", "SELECT CAST(count(*) AS BIGINT) FROM notes").await,
        json!([[0]])
    );
}

async fn the_hosts_migration_records_are_out_of_reach(engine: Engine) {
    let mut app = Spawn::new(engine, vec![console("app", &[NOTES])])
        .start()
        .await;
    // Where the records used to be within reach: gone (PostgreSQL) or refused (SQLite).
    let results = each(&app, "app", &["DELETE FROM truevalue_migrations"]).await;
    assert_eq!(results[0]["ok"], false, "{results:?}");
    let refused: &[&str] = match engine {
        Engine::Sqlite => &[
            "SELECT * FROM truevalue_migrations",
            "UPDATE truevalue_migrations SET checksum = 'x'",
        ],
        Engine::Postgres => &[
            "SELECT * FROM truevalue_host.migrations",
            "DELETE FROM truevalue_host.migrations",
            "SELECT truevalue_host.record_migration('guess', 2, 'x', 'x', 'x')",
            "SHOW data_directory",
        ],
    };
    let results = each(&app, "app", refused).await;
    for (statement, result) in refused.iter().zip(&results) {
        assert_refused(statement, result);
    }
    // A restart finds the records whole: the migration is not applied again.
    rows(&app, "app", "INSERT INTO notes (text) VALUES ('kept')").await;
    app.crash_and_restart().await;
    assert_eq!(
        rows(&app, "app", "SELECT text FROM notes").await,
        json!([["kept"]])
    );
}
on_both_engines!(the_hosts_migration_records_are_out_of_reach);

/// A database written by an earlier host: the schema belonged to the component's role and the
/// records lived inside it.
#[tokio::test]
async fn postgres_an_earlier_layout_is_upgraded_in_place() {
    let mut app = Spawn::new(Engine::Postgres, vec![console("app", &[NOTES])])
        .start()
        .await;
    rows(&app, "app", "INSERT INTO notes (text) VALUES ('kept')").await;
    let admin = sqlx::PgPool::connect(app.database_url.as_deref().unwrap())
        .await
        .unwrap();
    for statement in [
        "ALTER SCHEMA app OWNER TO \"{role}\"",
        "CREATE TABLE app.truevalue_migrations (id BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TEXT NOT NULL)",
        "INSERT INTO app.truevalue_migrations SELECT id, name, checksum, applied_at FROM truevalue_host.migrations WHERE component = 'app'",
        "ALTER TABLE app.truevalue_migrations OWNER TO \"{role}\"",
        "DELETE FROM truevalue_host.migrations",
    ] {
        let database: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&admin)
            .await
            .unwrap();
        let statement = statement.replace("{role}", &format!("{database}_app"));
        sqlx::query(&statement).execute(&admin).await.unwrap();
    }

    app.crash_and_restart().await;
    assert_eq!(
        rows(&app, "app", "SELECT text FROM notes").await,
        json!([["kept"]])
    );
    let (owner, legacy, recorded): (String, bool, i64) = sqlx::query_as(
        "SELECT nspowner::regrole::text, to_regclass('app.truevalue_migrations') IS NOT NULL, \
         (SELECT count(*) FROM truevalue_host.migrations WHERE component = 'app') \
         FROM pg_namespace WHERE nspname = 'app'",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(owner, "postgres", "the schema now belongs to the host");
    assert!(!legacy, "the records left the component's schema");
    assert_eq!(recorded, 1);
}

async fn a_deploy_whose_later_migration_fails_applies_none(engine: Engine) {
    let hostile = Policy::new(
        "hostile",
        "hostile",
        "hostile",
        crate::helpers::HOSTILE_LIMITS,
    );
    let app = Spawn::new(engine, vec![hostile]).start().await;
    let response = app.deploy("hostile", "bad_migration").await;
    assert_eq!(response.status(), 422);
    let detail = response.json::<Value>().await.unwrap()["detail"].clone();
    assert!(detail.as_str().unwrap().contains("migration 3"), "{detail}");

    // Migration 2 succeeded on its own, but not alone: it is not applied.
    let half_exists = match engine {
        Engine::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&format!(
                "sqlite://{}",
                app.data_dir.join("db/hostile.sqlite").display()
            ))
            .await
            .unwrap();
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sqlite_master WHERE name = 'half'")
                .fetch_one(&pool)
                .await
                .unwrap()
                > 0
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(app.database_url.as_deref().unwrap())
                .await
                .unwrap();
            sqlx::query_scalar::<_, bool>("SELECT to_regclass('hostile.half') IS NOT NULL")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert!(
        !half_exists,
        "the earlier migration of the failed deploy was rolled back"
    );
    let response = app
        .client
        .post(app.url("/hostile/notes?text=after"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "the running version still serves");
}
on_both_engines!(a_deploy_whose_later_migration_fails_applies_none);
