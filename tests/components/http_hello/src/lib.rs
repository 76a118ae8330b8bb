//! Benchmark anchor: the example component's greeting as a plain `wasi:http/proxy` component,
//! for `wasmtime serve` (`host/benches/hello.rs`), so TrueValue can be read against the
//! runtime it embeds serving the same work.
//!
//! `GET /hello?name=Ada` answers 200 `{"message":"Hello, Ada!"}` as `application/json`, doing
//! what the `hello` component's greeting does: find the percent-decoded name in the query,
//! format the greeting, encode it as JSON. Any other path is an empty 404.

use serde_json::json;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct HttpHello;

impl wasip2::exports::http::incoming_handler::Guest for HttpHello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        if path != "/hello" {
            return respond(out, 404, &[]);
        }
        let name = query_value(query, "name").unwrap_or_else(|| "world".into());
        let body = serde_json::to_vec(&json!({ "message": format!("Hello, {name}!") }))
            .expect("a JSON object always encodes");
        respond(out, 200, &body);
    }
}

/// Sends `body` with its length, as JSON when there is one. A failure to send is a trap, which
/// `wasmtime serve` answers with a 500 that the benchmark reports.
fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let mut headers = vec![(
        "content-length".to_string(),
        body.len().to_string().into_bytes(),
    )];
    if !body.is_empty() {
        headers.push(("content-type".to_string(), b"application/json".to_vec()));
    }
    let response =
        OutgoingResponse::new(Fields::from_list(&headers).expect("the headers are valid"));
    response
        .set_status_code(status)
        .expect("the status code is valid");
    let outgoing = response.body().expect("the body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().expect("the stream is taken once");
    stream
        .blocking_write_and_flush(body)
        .expect("the client takes the body");
    drop(stream);
    OutgoingBody::finish(outgoing, None).expect("the body has its announced length");
}

/// The value of the first `name=` in `query`, percent-decoded as the SDK's `Request::query`.
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

/// `%XX` escapes and `+` decoded; an invalid escape is kept as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

wasip2::http::proxy::export!(HttpHello);
