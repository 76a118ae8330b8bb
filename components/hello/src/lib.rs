//! The example component: a greeting, and a guest book kept in the component's own database.
//!
//! `GET /hello` greets (the greeting comes from the policy's config); `POST /hello/guestbook`
//! signs the book with `{"name": "...", "message": "..."}`; `GET /hello/guestbook` lists it.

use serde::{Deserialize, Serialize};
use serde_json::json;
use truevalue_sdk::prelude::*;

struct Hello;

impl App for Hello {
    fn router() -> Router {
        Router::new()
            .get("/hello", greet)
            .get("/hello/guestbook", list_entries)
            .post("/hello/guestbook", sign)
    }

    fn migrations(_dialect: Dialect) -> Vec<Migration> {
        vec![Migration {
            id: 1,
            name: "guest book",
            sql: "CREATE TABLE entries (
                    id INTEGER PRIMARY KEY,
                    name TEXT NOT NULL,
                    message TEXT NOT NULL
                  )",
        }]
    }
}

fn greet(request: &Request) -> Result<Response, Problem> {
    let greeting = config::get("greeting").unwrap_or_else(|| "Hello".into());
    let name = request.query("name").unwrap_or_else(|| "world".into());
    Response::json(200, &json!({ "message": format!("{greeting}, {name}!") }))
}

#[derive(Deserialize)]
struct NewEntry {
    name: String,
    message: String,
}

#[derive(Serialize)]
struct Entry {
    id: i64,
    name: String,
    message: String,
}

impl FromRow for Entry {
    fn from_row(row: &Row) -> Result<Self, db::Error> {
        Ok(Self {
            id: row.get("id")?,
            name: row.get("name")?,
            message: row.get("message")?,
        })
    }
}

fn sign(request: &Request) -> Result<Response, Problem> {
    let entry: NewEntry = request.json()?;
    let name = entry.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Problem::unprocessable("`name` must be 1 to 100 characters"));
    }
    if entry.message.chars().count() > 1000 {
        return Err(Problem::unprocessable(
            "`message` must be at most 1000 characters",
        ));
    }
    let id = db::query_as::<Entry>(
        "INSERT INTO entries (id, name, message)
         VALUES ((SELECT COALESCE(MAX(id), 0) + 1 FROM entries), $1, $2)
         RETURNING id, name, message",
        &[name.into(), entry.message.as_str().into()],
    )?;
    let entry = id
        .into_iter()
        .next()
        .ok_or_else(|| Problem::internal("insert returned no row"))?;
    Ok(Response::json(201, &entry)?.header("location", format!("/hello/guestbook/{}", entry.id)))
}

fn list_entries(_request: &Request) -> Result<Response, Problem> {
    let items = db::query_as::<Entry>("SELECT id, name, message FROM entries ORDER BY id", &[])?;
    Response::json(200, &json!({ "items": items, "next_cursor": null }))
}

truevalue_sdk::component!(Hello);
