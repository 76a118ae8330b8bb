//! Test fixture: runs whatever SQL the request body names, as a component would, and reports
//! what the host answered for each statement. Its migrations come from its policy's `[config]`
//! (`migration_1`, `migration_2`, … in id order), so one build serves every SQL test: what
//! must pass (triggers, CTEs, upserts) and what must be refused, in requests and migrations.
//!
//! `POST /<route>/sql` with `{"statements": ["…", …], "fail": false}` runs the statements in
//! order in the request's transaction and answers 200 with one result per statement; with
//! `"fail": true` it answers 500 afterwards, so the host rolls the request back.

use serde_json::{Value as Json, json};
use truevalue_sdk::prelude::*;

struct Console;

fn value_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        Value::Real(f) => json!(f),
        Value::Text(s) => json!(s),
        Value::Boolean(b) => json!(b),
        Value::Blob(b) => json!(b),
    }
}

fn run(sql: &str) -> Json {
    // The raw binding keeps the columns' order, which the tests compare.
    match truevalue_sdk::bindings::truevalue::platform::database::query(sql, &[]) {
        Ok(result) => {
            let rows: Vec<Json> = result
                .rows
                .iter()
                .map(|row| Json::Array(row.iter().map(value_json).collect()))
                .collect();
            json!({ "ok": true, "rows": rows })
        }
        Err(error) => {
            let (kind, message) = match &error {
                db::Error::AccessDenied(m) => ("access-denied", m.clone()),
                db::Error::Invalid(m) => ("invalid", m.clone()),
                db::Error::Constraint(m) => ("constraint", m.clone()),
                db::Error::Unavailable(m) => ("unavailable", m.clone()),
            };
            json!({ "ok": false, "kind": kind, "message": message })
        }
    }
}

impl App for Console {
    fn router() -> Router {
        Router::new().post("/{route}/sql", |request| {
            let body: Json = request.json()?;
            let statements = body["statements"]
                .as_array()
                .ok_or_else(|| Problem::bad_request("`statements` is a list of SQL strings"))?;
            let results: Vec<Json> = statements
                .iter()
                .map(|sql| run(sql.as_str().unwrap_or_default()))
                .collect();
            if body["fail"] == true {
                return Err(Problem::internal("failing after the statements, as asked"));
            }
            Response::json(200, &json!({ "results": results }))
        })
    }

    fn migrations(_dialect: Dialect) -> Vec<Migration> {
        (1..=9)
            .map_while(|id| {
                let sql = config::get(&format!("migration_{id}"))?;
                Some(Migration {
                    id,
                    name: Box::leak(format!("step {id}").into_boxed_str()),
                    sql: Box::leak(sql.into_boxed_str()),
                })
            })
            .collect()
    }
}

truevalue_sdk::component!(Console);
