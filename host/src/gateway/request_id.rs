//! `X-Request-ID`: the client's value when it is sane, a new UUID v7 otherwise; set on the
//! request the component sees and echoed on every response, errors included.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being handled on this task, for problem documents.
pub fn current() -> String {
    CURRENT.try_with(Clone::clone).unwrap_or_default()
}

/// Runs `work` under the request id `id`: for the host's own requests, outside any client's.
pub async fn scope<F: std::future::Future>(id: String, work: F) -> F::Output {
    CURRENT.scope(id, work).await
}

/// A sane id: 1 to 128 characters of letters, digits and `-_.:`.
fn sane(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

pub async fn layer(mut request: Request, next: Next) -> Response {
    let (id, value) = assign(&mut request);
    echo(id, value, next.run(request)).await
}

/// The request's id: the client's when sane, else a new one; set on the request, and returned
/// with its header value for [`echo`].
pub fn assign(request: &mut Request) -> (String, HeaderValue) {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    // Sane ids are plain ASCII, so this always converts.
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    // A name from a static string, not parsed and copied from `HEADER` at every request.
    request
        .headers_mut()
        .insert(HeaderName::from_static(HEADER), value.clone());
    (id, value)
}

/// Runs `handled` under the request id `id` and echoes it on the response.
pub async fn echo(
    id: String,
    value: HeaderValue,
    handled: impl std::future::Future<Output = Response>,
) -> Response {
    let mut response = CURRENT.scope(id, handled).await;
    response
        .headers_mut()
        .insert(HeaderName::from_static(HEADER), value);
    response
}
