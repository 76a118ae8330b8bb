//! The TrueValue guest SDK: write a component like a small web app.
//!
//! A component declares its routes, reads JSON bodies, answers with JSON or RFC 9457 problems,
//! and talks to its own database with typed rows. Everything here sits on the raw WIT bindings
//! of `truevalue:platform`, which stay available in [`bindings`] for anything the SDK lacks.
//!
//! What every service repeats is here once: the verified caller and permission checks
//! ([`Request::user`](http::Request::user), [`Request::org`](http::Request::org),
//! [`Request::require`](http::Request::require)), rows read with `#[derive(FromRow)]`, cursor
//! pagination ([`Page`]), the problem catalogue with field errors ([`Problem`]), database errors
//! that never show the engine's text to clients, and [`time`], [`id`] (UUID v7) and [`hex`].
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use truevalue_sdk::prelude::*;
//!
//! struct Contacts;
//!
//! impl App for Contacts {
//!     fn router() -> Router {
//!         Router::new().get("/contacts", list).post("/contacts", create)
//!     }
//!
//!     fn migrations(_dialect: Dialect) -> Vec<Migration> {
//!         vec![Migration {
//!             id: 1,
//!             name: "contacts",
//!             sql: "CREATE TABLE contacts (id TEXT PRIMARY KEY, org_id TEXT NOT NULL,
//!                   name TEXT NOT NULL, created_at BIGINT NOT NULL)",
//!         }]
//!     }
//! }
//!
//! #[derive(FromRow, Serialize)]
//! struct Contact {
//!     id: String,
//!     name: String,
//! }
//!
//! /// Newest last, a page at a time (`?limit=`, `?cursor=`).
//! fn list(req: &Request) -> Result<Response, Problem> {
//!     let caller = req.require("contacts:read")?;
//!     let page = Page::from_request(req)?;
//!     let rows: Vec<Contact> = db::query_as(
//!         "SELECT id, name FROM contacts WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3",
//!         &[caller.org_id.into(), page.after.clone().unwrap_or_default().into(), page.fetch().into()],
//!     )?;
//!     page.respond(rows, |contact| contact.id.clone())
//! }
//!
//! #[derive(Deserialize)]
//! struct NewContact {
//!     name: String,
//! }
//!
//! fn create(req: &Request) -> Result<Response, Problem> {
//!     let caller = req.require("contacts:write")?;
//!     let body: NewContact = req.json()?;
//!     let name = body.name.trim();
//!     if name.is_empty() {
//!         return Err(Problem::field("name", "must not be empty"));
//!     }
//!     // A v7 id sorts by creation time, so `ORDER BY id` lists contacts oldest first.
//!     let id = truevalue_sdk::id::new();
//!     db::execute(
//!         "INSERT INTO contacts (id, org_id, name, created_at) VALUES ($1, $2, $3, $4)",
//!         &[id.as_str().into(), caller.org_id.into(), name.into(), truevalue_sdk::time::now().into()],
//!     )
//!     .on_conflict(|| Problem::conflict("a contact with this id exists"))?;
//!     Response::json(201, &Contact { id, name: name.into() })
//! }
//!
//! truevalue_sdk::component!(Contacts);
//! ```

// The derive's code names the SDK as `::truevalue_sdk`, also inside this crate's own tests.
extern crate self as truevalue_sdk;

pub mod alloc;
pub mod auth;
pub mod config;
pub mod db;
pub mod email;
pub mod events;
pub mod hex;
pub mod http;
pub mod id;
pub mod log;
mod page;
mod problem;
mod router;
pub mod services;
pub mod time;

pub use page::Page;
pub use problem::{FieldError, Problem};
pub use router::Router;

#[cfg(all(
    feature = "allocator",
    target_family = "wasm",
    not(target_feature = "atomics")
))]
#[global_allocator]
static ALLOCATOR: alloc::Classes<std::alloc::System> = alloc::Classes::new(std::alloc::System);

/// The raw bindings generated from the WIT, for what the SDK does not wrap.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "service",
        pub_export_macro: true,
        default_bindings_module: "truevalue_sdk::bindings",
    });
}

/// What a component implements; [`component!`] exports it to the host.
pub trait App {
    /// The component's routes. Built once per instance, at its first request (an instance
    /// kept for reuse routes its later requests with the same router): no I/O.
    fn router() -> Router;

    /// Schema migrations for the engine the host runs on; none by default.
    fn migrations(_dialect: db::Dialect) -> Vec<db::Migration> {
        Vec::new()
    }
}

/// Everything a component usually needs.
///
/// `time`, `id` and `hex` are left out so they cannot clash with crates of those names: write
/// `truevalue_sdk::time::now()`.
pub mod prelude {
    pub use crate::auth::{OrgCaller, User, permission_matches};
    pub use crate::db::{self, Dialect, FromRow, Migration, OnConflict, Row, Value};
    pub use crate::http::{Request, Response};
    pub use crate::{App, FieldError, Page, Problem, Router, config, log, services};
    pub use truevalue_sdk_macros::FromRow;
}

/// Exports an [`App`] as the component's handler and manifest.
///
/// The manifest's version is the component crate's `CARGO_PKG_VERSION`.
#[macro_export]
macro_rules! component {
    ($app:ty) => {
        struct __TrueValueComponent;

        impl $crate::bindings::exports::truevalue::platform::handler::Guest for __TrueValueComponent {
            fn handle(
                request: $crate::bindings::exports::truevalue::platform::handler::Request,
            ) -> $crate::bindings::exports::truevalue::platform::handler::Response {
                $crate::__private::handle::<$app>(request)
            }
        }

        impl $crate::bindings::exports::truevalue::platform::manifest::Guest for __TrueValueComponent {
            fn version() -> String {
                env!("CARGO_PKG_VERSION").to_string()
            }

            fn migrations(
                dialect: $crate::bindings::truevalue::platform::database::Dialect,
            ) -> Vec<$crate::bindings::exports::truevalue::platform::manifest::Migration> {
                $crate::__private::migrations::<$app>(dialect)
            }
        }

        $crate::bindings::export!(__TrueValueComponent with_types_in $crate::bindings);
    };
}

#[doc(hidden)]
pub mod __private {
    use crate::bindings::exports::truevalue::platform::{handler, manifest};
    use crate::{App, db, http};

    thread_local! {
        /// The component's router (one `App` per component), built at the instance's first
        /// request.
        static ROUTER: std::cell::OnceCell<crate::Router> = const { std::cell::OnceCell::new() };
    }

    pub fn handle<A: App>(raw: handler::Request) -> handler::Response {
        let mut request = http::Request::from_raw(raw);
        let routed = ROUTER.with(|router| router.get_or_init(A::router).dispatch(&mut request));
        let response = match routed {
            Ok(response) => response,
            Err(problem) => problem.into_response(&request),
        };
        response.into_raw()
    }

    pub fn migrations<A: App>(dialect: db::Dialect) -> Vec<manifest::Migration> {
        A::migrations(dialect)
            .into_iter()
            .map(|m| manifest::Migration {
                id: m.id,
                name: m.name.into(),
                sql: m.sql.into(),
            })
            .collect()
    }
}
