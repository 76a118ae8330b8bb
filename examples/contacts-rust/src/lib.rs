//! Contacts with deals: a CRM plugin on the Rust SDK, the same plugin as the Python and
//! JavaScript examples (`examples/contacts-python`, `examples/contacts-js`).
//!
//! Every route is a tenant route: the host serves it only for a token scoped to an
//! organization, and every statement below is scoped by that organization's id.

use serde::{Deserialize, Serialize};
use serde_json::json;
use truevalue_sdk::prelude::*;

struct Contacts;

/// The same SQL as the Python and JavaScript examples: any of the three can replace another.
const SCHEMA: [&str; 2] = [
    "CREATE TABLE contacts (id INTEGER PRIMARY KEY, org_id TEXT NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL, UNIQUE (org_id, email))",
    "CREATE TABLE deals (id INTEGER PRIMARY KEY, org_id TEXT NOT NULL, contact_id INTEGER NOT NULL REFERENCES contacts (id), title TEXT NOT NULL, amount_cents INTEGER NOT NULL)",
];

const SCHEMA_POSTGRES: [&str; 2] = [
    "CREATE TABLE contacts (id BIGSERIAL PRIMARY KEY, org_id TEXT NOT NULL, name TEXT NOT NULL, email TEXT NOT NULL, UNIQUE (org_id, email))",
    "CREATE TABLE deals (id BIGSERIAL PRIMARY KEY, org_id TEXT NOT NULL, contact_id INTEGER NOT NULL REFERENCES contacts (id), title TEXT NOT NULL, amount_cents INTEGER NOT NULL)",
];

#[derive(Serialize, FromRow)]
struct Contact {
    id: i64,
    name: String,
    email: String,
}

#[derive(Serialize, FromRow)]
struct Deal {
    id: i64,
    title: String,
    amount_cents: i64,
}

#[derive(Deserialize)]
struct NewContact {
    name: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
struct NewDeal {
    title: Option<String>,
    amount_cents: Option<i64>,
}

impl App for Contacts {
    fn router() -> Router {
        Router::new()
            .get("/contacts/api/contacts", |r| {
                let caller = r.require("contacts:read")?;
                let items: Vec<Contact> = db::query_as(
                    "SELECT id, name, email FROM contacts WHERE org_id = $1 ORDER BY id",
                    &[caller.org_id.into()],
                )?;
                Response::json(200, &json!({ "items": items }))
            })
            .post("/contacts/api/contacts", |r| {
                let caller = r.require("contacts:write")?;
                let body: NewContact = r.json()?;
                let name = body.name.unwrap_or_default().trim().to_string();
                let email = body.email.unwrap_or_default().to_lowercase();
                let mut problem: Option<Problem> = None;
                if name.is_empty() || name.chars().count() > 200 {
                    problem = Some(Problem::field(
                        "name",
                        "must be between 1 and 200 characters",
                    ));
                }
                if !email.contains('@') {
                    problem = Some(
                        problem
                            .unwrap_or_else(|| Problem::unprocessable(""))
                            .and_field("email", "must be an email address"),
                    );
                }
                if let Some(problem) = problem {
                    return Err(problem);
                }
                let rows = db::query(
                    "INSERT INTO contacts (org_id, name, email) VALUES ($1, $2, $3) RETURNING id",
                    &[
                        caller.org_id.into(),
                        name.as_str().into(),
                        email.as_str().into(),
                    ],
                )
                .on_conflict(|| Problem::conflict(format!("a contact with the email {email} exists")))?;
                let id: i64 = match rows.first() {
                    Some(row) => row.get("id")?,
                    None => return Err(Problem::internal("the insert returned no id")),
                };
                println!("contact {id} created");
                Ok(Response::json(
                    201,
                    &Contact {
                        id,
                        name,
                        email,
                    },
                )?
                .header("location", format!("/contacts/api/contacts/{id}")))
            })
            .get("/contacts/api/contacts/{contact_id}", |r| {
                let caller = r.require("contacts:read")?;
                let contact = find(&caller.org_id, r.param("contact_id")?)?;
                let deals: Vec<Deal> = db::query_as(
                    "SELECT id, title, amount_cents FROM deals WHERE org_id = $1 AND contact_id = $2 ORDER BY id",
                    &[caller.org_id.as_str().into(), contact.id.into()],
                )?;
                Response::json(
                    200,
                    &json!({ "id": contact.id, "name": contact.name, "email": contact.email, "deals": deals }),
                )
            })
            .post("/contacts/api/contacts/{contact_id}/deals", |r| {
                let caller = r.require("contacts:write")?;
                let contact = find(&caller.org_id, r.param("contact_id")?)?;
                let body: NewDeal = r.json()?;
                let title = body.title.unwrap_or_default().trim().to_string();
                if title.is_empty() {
                    return Err(Problem::field("title", "must not be empty"));
                }
                let amount = match body.amount_cents {
                    Some(amount) if amount >= 0 => amount,
                    _ => {
                        return Err(Problem::field(
                            "amount_cents",
                            "must be a whole number of cents, 0 or more",
                        ));
                    }
                };
                let rows = db::query(
                    "INSERT INTO deals (org_id, contact_id, title, amount_cents) VALUES ($1, $2, $3, $4) RETURNING id",
                    &[
                        caller.org_id.as_str().into(),
                        contact.id.into(),
                        title.as_str().into(),
                        amount.into(),
                    ],
                )?;
                let id: i64 = match rows.first() {
                    Some(row) => row.get("id")?,
                    None => return Err(Problem::internal("the insert returned no id")),
                };
                Response::json(
                    201,
                    &Deal {
                        id,
                        title,
                        amount_cents: amount,
                    },
                )
            })
    }

    fn migrations(dialect: Dialect) -> Vec<Migration> {
        let schema = match dialect {
            Dialect::Postgres => SCHEMA_POSTGRES,
            _ => SCHEMA,
        };
        vec![
            Migration {
                id: 1,
                name: "migration 1",
                sql: schema[0],
            },
            Migration {
                id: 2,
                name: "migration 2",
                sql: schema[1],
            },
        ]
    }
}

/// The caller's organization's contact `id`; 404 for any other.
fn find(org_id: &str, id: &str) -> Result<Contact, Problem> {
    let not_found = || Problem::not_found(format!("no contact {id}"));
    let id: i64 = id.parse().map_err(|_| not_found())?;
    db::query_one(
        "SELECT id, name, email FROM contacts WHERE org_id = $1 AND id = $2",
        &[org_id.into(), id.into()],
    )?
    .ok_or_else(not_found)
}

truevalue_sdk::component!(Contacts);
