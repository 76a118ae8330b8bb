//! RFC 9457 problem responses, the one error shape of the platform's REST contract.

use serde::Serialize;
use serde_json::json;

use crate::http::{Request, Response};

/// An error a handler returns; it becomes an `application/problem+json` response.
///
/// The constructors are the platform's catalogue: the same status always comes with the same
/// `type` and `title`, so clients can branch on `type` alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub status: u16,
    /// A short, stable slug that ends the problem's `type` URI, e.g. `not-found`.
    pub kind: String,
    pub title: String,
    pub detail: String,
    /// Which input fields are wrong and why, so a form can mark each one; sent as `errors`
    /// only when there are some.
    pub errors: Vec<FieldError>,
}

/// One wrong input field of a `validation` problem.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl Problem {
    /// A problem with every field chosen by the caller.
    pub fn new(status: u16, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind: kind.into(),
            title: title.into(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(400, "bad-request", "Bad request", detail)
    }

    /// The caller is not signed in (or no longer is).
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", "Unauthorized", detail)
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

    /// A 422 `validation` problem about one input field: the detail reads "`field` message"
    /// and `errors` lists the field, for clients that mark fields in a form.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut problem = Self::unprocessable(format!("`{field}` {message}"));
        problem.errors.push(FieldError {
            field: field.into(),
            message,
        });
        problem
    }

    /// Adds another wrong field, so one answer can name every field that needs fixing.
    pub fn and_field(mut self, field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let sentence = format!("`{field}` {message}");
        self.detail = match self.detail.is_empty() {
            true => sentence,
            false => format!("{}; {sentence}", self.detail),
        };
        self.errors.push(FieldError {
            field: field.into(),
            message,
        });
        self
    }

    /// A failure of the component itself: the host logs the detail, the client sees only that
    /// something went wrong, and the request's database transaction is rolled back.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(500, "internal", "Internal error", detail)
    }

    /// The JSON body the client receives.
    pub(crate) fn body(&self, request_id: &str) -> serde_json::Value {
        let mut body = json!({
            "type": format!("https://truevalue.dev/problems/{}", self.kind),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "request_id": request_id,
        });
        if !self.errors.is_empty() {
            body["errors"] = json!(self.errors);
        }
        body
    }

    pub(crate) fn into_response(self, request: &Request) -> Response {
        // The host logs the detail of a 5xx and shows the client only a generic problem.
        Response::new(self.status)
            .header("content-type", "application/problem+json")
            .body(self.body(request.request_id()).to_string())
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl std::error::Error for Problem {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_name_each_field_in_the_detail_and_in_errors() {
        let problem = Problem::field("email", "must be an email address")
            .and_field("name", "must be between 1 and 200 characters");
        assert_eq!(problem.status, 422);
        let body = problem.body("req-9");
        assert_eq!(body["type"], "https://truevalue.dev/problems/validation");
        assert_eq!(body["title"], "Invalid input");
        assert_eq!(body["status"], 422);
        assert_eq!(body["request_id"], "req-9");
        assert_eq!(
            body["detail"],
            "`email` must be an email address; `name` must be between 1 and 200 characters"
        );
        assert_eq!(
            body["errors"],
            json!([
                { "field": "email", "message": "must be an email address" },
                { "field": "name", "message": "must be between 1 and 200 characters" },
            ])
        );
    }

    #[test]
    fn a_problem_without_field_errors_keeps_the_five_fields() {
        let body = Problem::conflict("taken").body("req-1");
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 5, "{body}");
        for key in ["type", "title", "status", "detail", "request_id"] {
            assert!(keys.contains(&key), "{body}");
        }
    }
}
