//! Test fixture: answers with its version, so hot-swap tests can tell versions apart.
//! Built twice: plain (`v1`) and with `--features v2`.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use serde_json::json;
use truevalue_sdk::prelude::*;

const VERSION: &str = if cfg!(feature = "v2") { "v2" } else { "v1" };

/// Requests this instance has served: what a guest keeps in its memory between requests.
static SERVED: AtomicU64 = AtomicU64::new(0);

/// One byte at the start of its own 8 KiB: written, each is a separate run of written pages
/// with an unwritten page after it.
#[repr(align(8192))]
struct Page(AtomicU8);

/// Zero at start (no bytes in the memory image) and initialised from the memory image: more
/// separate written runs, together, than the host's memory reset reports per scan.
static ZEROED: [Page; 64] = [const { Page(AtomicU8::new(0)) }; 64];
static IMAGED: [Page; 40] = [const { Page(AtomicU8::new(7)) }; 40];

struct Greeter;

impl App for Greeter {
    fn router() -> Router {
        Router::new()
            .get("/greeter", |_| {
                Response::json(200, &json!({ "version": VERSION }))
            })
            .get("/greeter/served", |request| {
                // This request included; `?fail` answers 500 after counting it.
                let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
                let status = if request.query("fail").is_some() {
                    500
                } else {
                    200
                };
                Response::json(
                    status,
                    &json!({
                        "served": served,
                        "version": VERSION,
                        "org": request.context().org_id,
                    }),
                )
            })
            .get("/greeter/scatter", |_| {
                // How many of the pages a previous request wrote this instance still sees
                // written; then writes them all.
                let seen = ZEROED
                    .iter()
                    .filter(|page| page.0.swap(1, Ordering::Relaxed) != 0)
                    .count()
                    + IMAGED
                        .iter()
                        .filter(|page| page.0.swap(0, Ordering::Relaxed) != 7)
                        .count();
                Response::json(200, &json!({ "seen": seen, "version": VERSION }))
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
