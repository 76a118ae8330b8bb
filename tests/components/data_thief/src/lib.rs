//! Test fixture: tries the ways it knows to read or write another component's data (the
//! `hostile` component's `notes`), one attempt per request, and reports what the host answered.
//! `own data` is the control: reading its own table must work.

use serde_json::{Value as Json, json};
use truevalue_sdk::prelude::*;

struct Thief;

/// Each attempt: a name and the statements run in order; the last one's result is reported.
fn attempts(dialect: Dialect, victim_file: &str) -> Vec<(&'static str, Vec<String>)> {
    let mut attempts = vec![
        (
            "own data",
            vec!["SELECT count(*) AS n FROM loot".to_string()],
        ),
        (
            "read the other schema",
            vec!["SELECT text FROM hostile.notes".into()],
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
            ("attach behind a quoted name", vec![format!("SELECT [a'b]; ATTACH '{victim_file}' AS v")]),
            ("list attached databases", vec!["PRAGMA database_list".into()]),
        ]),
        Dialect::Postgres => attempts.extend([
            ("reset the role", vec!["RESET ROLE".into(), "SELECT text FROM hostile.notes".into()]),
            ("set another role", vec!["SET ROLE postgres".into()]),
            ("set the role by function", vec!["SELECT set_config('role', 'postgres', true)".into()]),
            (
                "take the other component's role",
                vec!["SELECT set_config('role', current_database() || '_hostile', true)".into()],
            ),
            ("read the host's tables", vec!["SELECT password FROM truevalue_host.component_roles".into()]),
            (
                "see the other schema's tables",
                vec!["SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'hostile'".into()],
            ),
        ]),
    }
    attempts
}

fn run(sql: &str) -> Json {
    match db::query(sql, &[]) {
        Ok(rows) => {
            let n = rows.first().and_then(|r| r.get::<i64>("n").ok());
            json!({ "ok": true, "rows": rows.len(), "n": n })
        }
        Err(error) => json!({ "ok": false, "error": format!("{error:?}") }),
    }
}

impl App for Thief {
    fn router() -> Router {
        Router::new()
            .get("/thief", |_| {
                let names: Vec<&str> = attempts(db::dialect(), "")
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect();
                Response::json(200, &names)
            })
            .get("/thief/attempt", |request| {
                let name = request.query("name").unwrap_or_default();
                let victim_file = request.query("victim_file").unwrap_or_default();
                let (_, statements) = attempts(db::dialect(), &victim_file)
                    .into_iter()
                    .find(|(n, _)| *n == name)
                    .ok_or_else(|| Problem::not_found(format!("no attempt named {name:?}")))?;
                let mut last = Json::Null;
                for sql in statements {
                    last = run(&sql);
                }
                Response::json(200, &last)
            })
    }

    fn migrations(_dialect: Dialect) -> Vec<Migration> {
        vec![Migration {
            id: 1,
            name: "loot",
            sql: "CREATE TABLE loot (text TEXT)",
        }]
    }
}

truevalue_sdk::component!(Thief);
