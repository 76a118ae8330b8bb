//! Test fixture: a component that uses what it is granted to the full, to show that the host
//! bounds what it keeps for it: it fills the cache past any quota, floods the log, and answers
//! with more headers than a response may carry.

use serde_json::json;
use truevalue_sdk::bindings::truevalue::platform::cache;
use truevalue_sdk::prelude::*;

struct Hog;

fn number(request: &Request, name: &str, default: u64) -> u64 {
    request
        .query(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl App for Hog {
    fn router() -> Router {
        Router::new()
            .post("/hog/fill/{prefix}", |r| {
                // Writes `count` keys `<prefix>-<i>` of `size` bytes each, stopping at the first
                // refusal, and says how far it got.
                let (count, size) = (number(r, "count", 1000), number(r, "size", 1));
                let ttl = r.query("ttl_ms").and_then(|v| v.parse().ok());
                let value = vec![b'x'; size as usize];
                let prefix = r.param("prefix")?;
                let mut written = 0u64;
                let mut refused = None;
                for i in 0..count {
                    match cache::set(&format!("{prefix}-{i}"), &value, ttl) {
                        Ok(()) => written += 1,
                        Err(cache::Error::Invalid(m)) | Err(cache::Error::Unavailable(m)) => {
                            refused = Some(m);
                            break;
                        }
                    }
                }
                Response::json(200, &json!({ "written": written, "refused": refused }))
            })
            .get("/hog/cache/{key}", |r| {
                let value =
                    cache::get(r.param("key")?).map_err(|e| Problem::internal(format!("{e:?}")))?;
                Response::json(
                    200,
                    &json!({ "value": value.map(|v| String::from_utf8_lossy(&v).into_owned()) }),
                )
            })
            .post("/hog/log", |r| {
                // `times` messages of `bytes` bytes each, every line break included.
                let (bytes, times) = (number(r, "bytes", 1024), number(r, "times", 1));
                let message = "line\n".repeat(bytes as usize / 5 + 1);
                for _ in 0..times {
                    log::info(&message);
                }
                Ok(Response::no_content())
            })
            .get("/hog/headers", |r| {
                let mut response = Response::no_content();
                for i in 0..number(r, "count", 1) {
                    response = response.header(format!("x-hog-{i}"), "x");
                }
                Ok(response)
            })
    }
}

truevalue_sdk::component!(Hog);
