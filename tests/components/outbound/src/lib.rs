//! Test fixture: what a plugin reaches beyond the platform's own interfaces — outgoing HTTP,
//! sockets, stdout and stderr, randomness and clocks — and a call to an interface its policy
//! does not grant.
//!
//! - `POST /outbound/send {url, body}` POSTs `body` to `url` through `wasi:http` and answers
//!   200 `{"status": N, "body": "..."}`, or 200 `{"error": "..."}` when the request failed
//!   (a denied host is `HttpRequestDenied`).
//! - `POST /outbound/connect {addr}` opens a TCP connection with `std::net` (wasi:sockets) and
//!   answers 200 `{"connected": bool, "error": "..."}`.
//! - `GET /outbound/print?text=T` writes `T` to stdout and `T (stderr)` to stderr, 204.
//! - `GET /outbound/random` answers `{"random": u64, "now_ms": wall clock}`.
//! - `GET /outbound/cache` reads the cache, which the tests' policy does not grant.

use serde_json::json;
use truevalue_sdk::prelude::*;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

struct Outbound;

impl App for Outbound {
    fn router() -> Router {
        Router::new()
            .post("/outbound/send", |r| {
                let body: serde_json::Value = r.json()?;
                let url = body["url"].as_str().unwrap_or_default();
                let payload = body["body"].as_str().unwrap_or_default();
                match post(url, payload.as_bytes()) {
                    Ok((status, answer)) => Response::json(
                        200,
                        &json!({ "status": status, "body": String::from_utf8_lossy(&answer) }),
                    ),
                    Err(error) => Response::json(200, &json!({ "error": error })),
                }
            })
            .post("/outbound/connect", |r| {
                let body: serde_json::Value = r.json()?;
                let addr = body["addr"].as_str().unwrap_or_default();
                let answer = match std::net::TcpStream::connect(addr) {
                    Ok(_) => json!({ "connected": true }),
                    Err(error) => json!({ "connected": false, "error": error.to_string() }),
                };
                Response::json(200, &answer)
            })
            .get("/outbound/print", |r| {
                let text = r.query("text").unwrap_or_default();
                println!("{text}");
                eprintln!("{text} (stderr)");
                Ok(Response::no_content())
            })
            .get("/outbound/random", |_| {
                let now = wasip2::clocks::wall_clock::now();
                Response::json(
                    200,
                    &json!({
                        "random": wasip2::random::random::get_random_u64(),
                        "now_ms": now.seconds * 1000 + u64::from(now.nanoseconds / 1_000_000),
                    }),
                )
            })
            .get("/outbound/cache", |_| {
                let value = truevalue_sdk::bindings::truevalue::platform::cache::get("key");
                Response::json(200, &json!({ "found": format!("{value:?}") }))
            })
    }
}

/// POSTs `body` to `url` (`http://` or `https://`), answering the status and body.
fn post(url: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = url.split_once("://").ok_or("the URL has no scheme")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let request = OutgoingRequest::new(Fields::new());
    let scheme = if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let path = if path.is_empty() { "/" } else { path };
    request
        .set_method(&Method::Post)
        .and_then(|()| request.set_scheme(Some(&scheme)))
        .and_then(|()| request.set_authority(Some(authority)))
        .and_then(|()| request.set_path_with_query(Some(path)))
        .map_err(|()| "the URL is not valid".to_string())?;
    let outgoing = request.body().map_err(|()| "no request body")?;
    let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    // A refused request closes the body: its reason is the response's error, read below.
    let written = match outgoing.write() {
        Ok(stream) => stream
            .blocking_write_and_flush(body)
            .map_err(|e| format!("{e:?}")),
        Err(()) => Err("no body stream".into()),
    };
    let finished = OutgoingBody::finish(outgoing, None).map_err(|e| format!("{e:?}"));
    future.subscribe().block();
    let response = future
        .get()
        .ok_or("no response")?
        .map_err(|()| "the response was taken")?
        .map_err(|e| format!("{e:?}"))?;
    written?;
    finished?;
    let status = response.status();
    let incoming = response.consume().map_err(|()| "no response body")?;
    let mut answer = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| "no response stream")?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => answer.extend(chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(format!("{e:?}")),
            }
        }
    }
    Ok((status, answer))
}

truevalue_sdk::component!(Outbound);
