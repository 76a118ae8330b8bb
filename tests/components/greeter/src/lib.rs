//! Test fixture: answers with its version, so hot-swap tests can tell versions apart.
//! Built twice: plain (`v1`) and with `--features v2`.

use serde_json::json;
use truevalue_sdk::prelude::*;

const VERSION: &str = if cfg!(feature = "v2") { "v2" } else { "v1" };

struct Greeter;

impl App for Greeter {
    fn router() -> Router {
        Router::new()
            .get("/greeter", |_| {
                Response::json(200, &json!({ "version": VERSION }))
            })
            .get("/greeter/slow", |request| {
                // An in-flight request: holds its instance for `ms` milliseconds of wall time.
                let ms = request
                    .query("ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(500);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Response::json(200, &json!({ "version": VERSION }))
            })
    }
}

truevalue_sdk::component!(Greeter);
