//! Test fixture: tries every way it knows to read or write another component's data, and
//! reports what the host answered to each attempt.

use serde_json::{Value as Json, json};
use truevalue_sdk::prelude::*;

struct Thief;

/// Each attempt: a name and the statements run in order; the last one's result is reported.
fn attempts(dialect: Dialect, victim_file: &str) -> Vec<(&'static str, Vec<String>)> {
    let mut attempts = vec![
        (
            "read the other schema",
            vec!["SELECT text FROM hostile.notes".to_string()],
        ),
        (
            "write the other schema",
            vec!["INSERT INTO hostile.notes (text) VALUES ('stolen')".into()],
        ),
        (
            "read the other table by name",
            vec!["SELECT text FROM notes".into()],
        ),
        (
            "hide a statement after another",
            vec!["SELECT 1; SELECT text FROM hostile.notes".into()],
        ),
        ("end the host's transaction", vec!["COMMIT".into()]),
    ];
    match dialect {
        Dialect::Sqlite => attempts.extend([
            ("attach the other file", vec![format!("ATTACH DATABASE '{victim_file}' AS victim")]),
            ("attach through a hidden statement", vec![format!("SELECT 1; ATTACH '{victim_file}' AS v")]),
            ("read through a pragma", vec!["PRAGMA database_list".into()]),
        ]),
        Dialect::Postgres => attempts.extend([
            ("reset the role", vec!["RESET ROLE".into()]),
            ("set another role", vec!["SET ROLE postgres".into()]),
            ("set the role by function, then read", vec![
                "SELECT set_config('role', 'postgres', true)".into(),
                "SELECT text FROM hostile.notes".into(),
            ]),
            ("read through a session role change", vec![
                "SELECT set_config('role', current_database() || '_hostile', true)".into(),
            ]),
            ("list the other schema's tables", vec![
                "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'hostile'".into(),
            ]),
        ]),
    }
    attempts
}

fn run(sql: &str) -> Json {
    match db::query(sql, &[]) {
        Ok(rows) => {
            // Counting rows of the catalogue is allowed; seeing a table there is not.
            let count = rows.first().and_then(|r| r.get::<i64>("n").ok());
            json!({ "ok": true, "rows": rows.len(), "n": count })
        }
        Err(error) => json!({ "ok": false, "error": format!("{error:?}") }),
    }
}

impl App for Thief {
    fn router() -> Router {
        Router::new().get("/thief", |request| {
            let victim_file = request.query("victim_file").unwrap_or_default();
            let mut report = serde_json::Map::new();
            for (name, statements) in attempts(db::dialect(), &victim_file) {
                let mut last = Json::Null;
                for sql in statements {
                    last = run(&sql);
                }
                report.insert(name.into(), last);
            }
            Response::json(200, &report)
        })
    }
}

truevalue_sdk::component!(Thief);
