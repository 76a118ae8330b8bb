//! The example component: a greeting, and a guest book kept in the component's own database.
//!
//! `GET /hello` greets (the greeting comes from the policy's config); `POST /hello/guestbook`
//! signs the book with `{"name": "...", "message": "..."}`; `GET /hello/guestbook` lists it
//! oldest first, a page at a time (`?limit=`, `?cursor=`).

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

    fn migrations(dialect: Dialect) -> Vec<Migration> {
        vec![
            Migration {
                id: 1,
                name: "guest book",
                sql: "CREATE TABLE entries (
                        id INTEGER PRIMARY KEY,
                        name TEXT NOT NULL,
                        message TEXT NOT NULL
                      )",
            },
            Migration {
                id: 2,
                name: "guest book keyed by UUID v7",
                sql: match dialect {
                    Dialect::Sqlite => GUESTBOOK_SQLITE,
                    Dialect::Postgres => GUESTBOOK_POSTGRES,
                },
            },
        ]
    }
}

// Entries get UUID v7 ids, made by the component: two parallel signatures can no longer pick
// the same next number, and the ids sort in the order the book was signed. Entries signed
// before keep their order: their numbers become UUIDs with time zero, which sort before every
// new id.
const GUESTBOOK_SQLITE: &str = "
CREATE TABLE guestbook (id TEXT PRIMARY KEY, name TEXT NOT NULL, message TEXT NOT NULL);
INSERT INTO guestbook (id, name, message)
    SELECT printf('00000000-0000-7000-8000-%012d', id), name, message FROM entries;
DROP TABLE entries";

const GUESTBOOK_POSTGRES: &str = "
CREATE TABLE guestbook (id TEXT PRIMARY KEY, name TEXT NOT NULL, message TEXT NOT NULL);
INSERT INTO guestbook (id, name, message)
    SELECT '00000000-0000-7000-8000-' || lpad(id::text, 12, '0'), name, message FROM entries;
DROP TABLE entries";

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

#[derive(Serialize, FromRow)]
struct Entry {
    id: String,
    name: String,
    message: String,
}

fn sign(request: &Request) -> Result<Response, Problem> {
    let entry: NewEntry = request.json()?;
    let name = entry.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Problem::field("name", "must be 1 to 100 characters"));
    }
    if entry.message.chars().count() > 1000 {
        return Err(Problem::field("message", "must be at most 1000 characters"));
    }
    let entry = Entry {
        id: truevalue_sdk::id::new(),
        name: name.into(),
        message: entry.message,
    };
    db::execute(
        "INSERT INTO guestbook (id, name, message) VALUES ($1, $2, $3)",
        &[
            entry.id.as_str().into(),
            entry.name.as_str().into(),
            entry.message.as_str().into(),
        ],
    )?;
    Ok(Response::json(201, &entry)?.header("location", format!("/hello/guestbook/{}", entry.id)))
}

fn list_entries(request: &Request) -> Result<Response, Problem> {
    let page = Page::from_request(request)?;
    let entries: Vec<Entry> = db::query_as(
        "SELECT id, name, message FROM guestbook WHERE id > $1 ORDER BY id LIMIT $2",
        &[
            page.after.clone().unwrap_or_default().into(),
            page.fetch().into(),
        ],
    )?;
    page.respond(entries, |entry| entry.id.clone())
}

truevalue_sdk::component!(Hello);
