//! Test fixture: queues emails through the `email` capability, then succeeds or fails, so
//! tests can check that only a successful request sends what it queued.
//!
//! `POST /mailer/send {to, subject, text, count?, fail?}` queues the message `count` times
//! (default 1) and answers 200 `{"queued": count}`, or 500 after queueing when `fail` is true.

use serde_json::json;
use truevalue_sdk::prelude::*;

struct Mailer;

impl App for Mailer {
    fn router() -> Router {
        Router::new().post("/mailer/send", |r| {
            let body: serde_json::Value = r.json()?;
            let text = |name: &str| body[name].as_str().unwrap_or_default().to_string();
            let count = body["count"].as_u64().unwrap_or(1);
            for _ in 0..count {
                truevalue_sdk::email::send(&text("to"), &text("subject"), &text("text"))?;
            }
            if body["fail"].as_bool().unwrap_or(false) {
                return Err(Problem::internal("asked to fail after queueing"));
            }
            Response::json(200, &json!({ "queued": count }))
        })
    }
}

truevalue_sdk::component!(Mailer);
