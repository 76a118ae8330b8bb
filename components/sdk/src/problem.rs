//! RFC 9457 problem responses, the one error shape of the platform's REST contract.

use serde_json::json;

use crate::http::{Request, Response};

/// An error a handler returns; it becomes an `application/problem+json` response.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub status: u16,
    /// A short, stable slug that ends the problem's `type` URI, e.g. `not-found`.
    pub kind: String,
    pub title: String,
    pub detail: String,
}

impl Problem {
    /// A problem with every field chosen by the caller.
    pub fn new(status: u16, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind: kind.into(),
            title: title.into(),
            detail: detail.into(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(400, "bad-request", "Bad request", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(403, "forbidden", "Forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, "not-found", "Not found", detail)
    }

    pub fn method_not_allowed(detail: impl Into<String>) -> Self {
        Self::new(405, "method-not-allowed", "Method not allowed", detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(409, "conflict", "Conflict", detail)
    }

    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(422, "validation", "Invalid input", detail)
    }

    /// A failure of the component itself: the host logs the detail, the client sees only that
    /// something went wrong, and the request's database transaction is rolled back.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(500, "internal", "Internal error", detail)
    }

    pub(crate) fn into_response(self, request: &Request) -> Response {
        // The host logs the detail of a 5xx and shows the client only a generic problem.
        let body = json!({
            "type": format!("https://truevalue.dev/problems/{}", self.kind),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "request_id": request.request_id(),
        });
        Response::new(self.status)
            .header("content-type", "application/problem+json")
            .body(body.to_string())
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl std::error::Error for Problem {}
