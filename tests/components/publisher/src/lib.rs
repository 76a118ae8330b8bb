//! Test fixture: records things in its database and publishes an event about each through the
//! `events` capability, then succeeds or fails, so tests can check that events commit with the
//! request's writes.
//!
//! - `POST /publisher/things {name, count?, fail?, topic?, org_id?, data?}` inserts `count`
//!   things (default 1) and publishes `thing.created` for each to `topic` (default
//!   `crm.thing.events`) with `data` (default `{"name": name}`), then answers 201
//!   `{"ids": [event ids]}`, or 500 after publishing when `fail` is true. A refused event is
//!   the capability's 422.
//! - `GET /publisher/things` answers `{"count": N}`.
//! - `POST /publisher/internal/events` consumes one event (CloudEvents HTTP binary binding):
//!   records the attempt, and when the data's `fail_times` is more than the attempts so far,
//!   answers 409 (committed, so attempts count); else records the event once by id, 204.
//! - `GET /publisher/received` answers `{"events": [{id, type, subject, orgid, requestid,
//!   data}]}` in the order received, and `{"attempts": {id: n}}`.

use serde_json::json;
use truevalue_sdk::prelude::*;

struct Publisher;

impl App for Publisher {
    fn router() -> Router {
        Router::new()
            .post("/publisher/things", |r| {
                let body: serde_json::Value = r.json()?;
                let name = body["name"].as_str().unwrap_or("thing").to_string();
                let topic = body["topic"].as_str().unwrap_or("crm.thing.events");
                let org = body["org_id"].as_str();
                let data = match &body["data"] {
                    serde_json::Value::Null => json!({ "name": name }),
                    data => data.clone(),
                };
                let mut ids = Vec::new();
                for _ in 0..body["count"].as_u64().unwrap_or(1) {
                    db::execute(
                        "INSERT INTO things (name) VALUES ($1)",
                        &[name.as_str().into()],
                    )?;
                    ids.push(truevalue_sdk::events::publish_for(
                        org,
                        topic,
                        "thing.created",
                        &name,
                        &data,
                    )?);
                }
                if body["fail"].as_bool().unwrap_or(false) {
                    return Err(Problem::internal("asked to fail after publishing"));
                }
                Response::json(201, &json!({ "ids": ids }))
            })
            .post("/publisher/internal/events", |r| {
                let header = |name: &str| r.header(name).unwrap_or_default().to_string();
                let id = header("ce-id");
                let data: serde_json::Value = r.json()?;
                db::execute(
                    "INSERT INTO attempts (id) VALUES ($1)",
                    &[id.as_str().into()],
                )?;
                let rows = db::query(
                    "SELECT COUNT(*) AS n FROM attempts WHERE id = $1",
                    &[id.as_str().into()],
                )?;
                let attempts: i64 = match rows.first() {
                    Some(row) => row.get("n")?,
                    None => 0,
                };
                if data["fail_times"].as_i64().unwrap_or(0) >= attempts {
                    return Err(Problem::conflict(format!("attempt {attempts} refused")));
                }
                db::execute(
                    "INSERT INTO received (id, type, subject, orgid, requestid, data) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                    &[
                        id.as_str().into(),
                        header("ce-type").as_str().into(),
                        header("ce-subject").as_str().into(),
                        header("ce-orgid").as_str().into(),
                        header("ce-requestid").as_str().into(),
                        data.to_string().as_str().into(),
                    ],
                )?;
                Ok(Response::no_content())
            })
            .get("/publisher/received", |_| {
                let rows = db::query(
                    "SELECT id, type, subject, orgid, requestid, data FROM received ORDER BY n",
                    &[],
                )?;
                let mut events = Vec::new();
                for row in &rows {
                    let text = |name: &str| row.get::<String>(name);
                    events.push(json!({
                        "id": text("id")?,
                        "type": text("type")?,
                        "subject": text("subject")?,
                        "orgid": text("orgid")?,
                        "requestid": text("requestid")?,
                        "data": serde_json::from_str::<serde_json::Value>(&text("data")?)
                            .unwrap_or_default(),
                    }));
                }
                let mut attempts = serde_json::Map::new();
                for row in db::query("SELECT id, COUNT(*) AS n FROM attempts GROUP BY id", &[])? {
                    attempts.insert(row.get::<String>("id")?, json!(row.get::<i64>("n")?));
                }
                Response::json(200, &json!({ "events": events, "attempts": attempts }))
            })
            .get("/publisher/things", |_| {
                let rows = db::query("SELECT COUNT(*) AS n FROM things", &[])?;
                let count: i64 = match rows.first() {
                    Some(row) => row.get("n")?,
                    None => 0,
                };
                Response::json(200, &json!({ "count": count }))
            })
    }

    fn migrations(dialect: Dialect) -> Vec<Migration> {
        vec![
            Migration {
                id: 1,
                name: "things",
                sql: "CREATE TABLE things (name TEXT NOT NULL)",
            },
            Migration {
                id: 2,
                name: "attempts",
                sql: "CREATE TABLE attempts (id TEXT NOT NULL)",
            },
            Migration {
                id: 3,
                name: "received",
                sql: match dialect {
                    Dialect::Postgres => {
                        "CREATE TABLE received (n BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, \
                         type TEXT NOT NULL, subject TEXT NOT NULL, orgid TEXT NOT NULL, \
                         requestid TEXT NOT NULL, data TEXT NOT NULL)"
                    }
                    _ => {
                        "CREATE TABLE received (n INTEGER PRIMARY KEY AUTOINCREMENT, \
                         id TEXT NOT NULL UNIQUE, type TEXT NOT NULL, subject TEXT NOT NULL, \
                         orgid TEXT NOT NULL, requestid TEXT NOT NULL, data TEXT NOT NULL)"
                    }
                },
            },
        ]
    }
}

truevalue_sdk::component!(Publisher);
