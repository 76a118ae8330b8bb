//! The gateway's one error type: every error leaves as `application/problem+json` (RFC 9457)
//! carrying the request id. A 5xx says only that something went wrong; its detail is logged.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::request_id;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no component serves {0}")]
    NoRoute(String),
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body could not be read: {0}")]
    BadBody(String),
    #[error("the path has an empty, `.` or `..` segment")]
    BadPath,
    #[error("the request body did not arrive within {0} ms")]
    BodyTimeout(u64),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("invalid access token: {0}")]
    InvalidToken(String),
    #[error(
        "the caller's rights in the organization changed since the access token was minted; refresh it"
    )]
    RightsChanged,
    #[error("this route acts for an organization: switch to one first (POST /auth/switch-org)")]
    NoOrganization,
    #[error("refused: {0}")]
    GatewaySignature(String),
    #[error("no node could be reached: {0}")]
    NoNode(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("`{0}` is at its limit of concurrent requests; retry shortly")]
    Busy(String),
    /// The host compiles as many deploys as it queues; a deploy is refused until one is done.
    #[error("{0}")]
    CompileQueueFull(String),
    /// The component failed to load at start-up; why is in the log and the admin API.
    #[error("`{0}` failed to load and serves nothing until an operator deploys a fixed version")]
    ComponentUnavailable(String),
    /// A per-organization plugin, while `org` cannot say whether the caller's organization
    /// enabled it: it does not serve (fail closed), and the client is told to retry.
    #[error(
        "whether `{0}` is enabled for your organization cannot be told right now; retry shortly"
    )]
    EnablementUnknown(String),
    #[error("`{0}` did not answer within its deadline")]
    Timeout(String),
    #[error("not ready: {0}")]
    NotReady(String),
    /// The component failed (trap, out of memory, bad response); the detail is logged only.
    #[error("component `{component}` failed: {detail}")]
    ComponentFailed {
        component: String,
        status: StatusCode,
        detail: String,
    },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::NoRoute(_) | ApiError::NotFound(_) => {
                (StatusCode::NOT_FOUND, "not-found", "Not found")
            }
            ApiError::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            ApiError::BadBody(_) | ApiError::BadPath => {
                (StatusCode::BAD_REQUEST, "bad-request", "Bad request")
            }
            ApiError::BodyTimeout(_) => (
                StatusCode::REQUEST_TIMEOUT,
                "request-timeout",
                "Request timeout",
            ),
            ApiError::GatewaySignature(_) => (
                StatusCode::UNAUTHORIZED,
                "gateway-signature",
                "Unsigned or invalid",
            ),
            ApiError::NoNode(_) => (StatusCode::BAD_GATEWAY, "no-node", "No node reachable"),
            ApiError::Unauthorized | ApiError::InvalidToken(_) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
            }
            ApiError::RightsChanged => (StatusCode::UNAUTHORIZED, "rights-changed", "Unauthorized"),
            ApiError::NoOrganization => (StatusCode::FORBIDDEN, "no-organization", "Forbidden"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::Unprocessable(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid input",
            ),
            ApiError::Busy(_) | ApiError::CompileQueueFull(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Service overloaded",
            ),
            ApiError::ComponentUnavailable(_) | ApiError::EnablementUnknown(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "component-unavailable",
                "Component unavailable",
            ),
            ApiError::Timeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "component-timeout",
                "Component timed out",
            ),
            ApiError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready"),
            ApiError::ComponentFailed { status, .. } => {
                (*status, "component-failed", "Component failed")
            }
            ApiError::Unexpected(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }
}

/// A problem document as the contract defines it.
pub fn problem(status: StatusCode, kind: &str, title: &str, detail: &str) -> Response {
    let body = json!({
        "type": format!("https://truevalue.dev/problems/{kind}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "request_id": request_id::current(),
    });
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind, title) = self.parts();
        let detail = if status.is_server_error()
            && !matches!(
                self,
                ApiError::Busy(_)
                    | ApiError::CompileQueueFull(_)
                    | ApiError::Timeout(_)
                    | ApiError::NotReady(_)
                    | ApiError::ComponentUnavailable(_)
                    | ApiError::EnablementUnknown(_)
            ) {
            // The detail is for operators: the log middleware writes it with the request id.
            "Something went wrong on our side; quote the request id when reporting it.".to_string()
        } else {
            self.to_string()
        };
        let mut response = problem(status, kind, title, &detail);
        if status.is_server_error() {
            response
                .extensions_mut()
                .insert(ErrorDetail(self.to_string()));
        }
        match &self {
            ApiError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::InvalidToken(_) | ApiError::RightsChanged => {
                let challenge = HeaderValue::from_static("Bearer error=\"invalid_token\"");
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
            }
            _ => {}
        }
        if matches!(
            self,
            ApiError::PayloadTooLarge(_) | ApiError::BodyTimeout(_)
        ) {
            // The rest of the body is never read, so the connection cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let retry_after = match self {
            ApiError::Busy(_) | ApiError::NotReady(_) | ApiError::EnablementUnknown(_) => Some("1"),
            // A compilation takes seconds.
            ApiError::CompileQueueFull(_) => Some("5"),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
        }
        response
    }
}

/// The full story of a 5xx, for the log middleware.
#[derive(Clone)]
pub struct ErrorDetail(pub String);
