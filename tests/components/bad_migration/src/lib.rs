//! Test fixture: serves the hostile component's routes but ships two new migrations, the first
//! sound and the second failing, so its deploy must be refused and leave the running version and
//! the database untouched (the sound one not applied either).

use truevalue_sdk::prelude::*;

struct BadMigration;

impl App for BadMigration {
    fn router() -> Router {
        Router::new().get("/hostile/notes", |_| Ok(Response::new(418)))
    }

    fn migrations(_dialect: Dialect) -> Vec<Migration> {
        vec![
            Migration {
                id: 1,
                name: "notes",
                sql: "CREATE TABLE notes (text TEXT NOT NULL)",
            },
            Migration {
                id: 2,
                name: "half",
                sql: "CREATE TABLE half (x INT)",
            },
            Migration {
                id: 3,
                name: "broken",
                sql: "CREATE TABLE broken (",
            },
        ]
    }
}

truevalue_sdk::component!(BadMigration);
