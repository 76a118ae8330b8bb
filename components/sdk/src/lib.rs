//! The TrueValue guest SDK: write a component like a small web app.
//!
//! A component declares its routes, reads JSON bodies, answers with JSON or RFC 9457 problems,
//! and talks to its own database with typed rows. Everything here sits on the raw WIT bindings
//! of `truevalue:platform`, which stay available in [`bindings`] for anything the SDK lacks.
//!
//! ```no_run
//! use truevalue_sdk::prelude::*;
//!
//! struct Hello;
//!
//! impl App for Hello {
//!     fn router() -> Router {
//!         Router::new().get("/hello/{name}", |req| {
//!             Response::json(200, &serde_json::json!({ "greeting": format!("Hello, {}!", req.param("name")?) }))
//!         })
//!     }
//! }
//!
//! truevalue_sdk::component!(Hello);
//! ```

pub mod config;
pub mod db;
pub mod http;
pub mod log;
mod problem;
mod router;

pub use problem::Problem;
pub use router::Router;

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
    /// The component's routes. Built once per request: keep it cheap (no I/O).
    fn router() -> Router;

    /// Schema migrations for the engine the host runs on; none by default.
    fn migrations(_dialect: db::Dialect) -> Vec<db::Migration> {
        Vec::new()
    }
}

/// Everything a component usually needs.
pub mod prelude {
    pub use crate::db::{self, Dialect, FromRow, Migration, Row, Value};
    pub use crate::http::{Request, Response};
    pub use crate::{App, Problem, Router, config, log};
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

    pub fn handle<A: App>(raw: handler::Request) -> handler::Response {
        let mut request = http::Request::from_raw(raw);
        let response = match A::router().dispatch(&mut request) {
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
