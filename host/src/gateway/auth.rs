//! Access tokens at the gateway, in two steps around the rate limit: `identify` verifies a
//! bearer token (algorithm, key, signature, expiry, issuer, audience, revocation) and records
//! who is calling, so the rate limit can count per user; `require` then refuses a request to a
//! route its policy does not make public unless a valid token was presented.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use super::problem::ApiError;
use crate::capabilities::tokens::{Claims, Error as TokenError, Tokens};
use crate::policy::RouteTable;

pub struct Auth {
    pub routes: Arc<RouteTable>,
    pub tokens: Arc<Tokens>,
}

/// Who is calling, as `identify` found out.
#[derive(Clone)]
pub enum Caller {
    Anonymous,
    User(Arc<Claims>),
    /// A token was presented and refused; why.
    Refused(String),
}

pub async fn identify(State(auth): State<Arc<Auth>>, mut request: Request, next: Next) -> Response {
    let bearer = request.headers().get(header::AUTHORIZATION).map(|value| {
        value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
    });
    let caller = match bearer {
        None => Caller::Anonymous,
        Some(None) => Caller::Refused("use `Authorization: Bearer <token>`".into()),
        Some(Some(token)) => match auth.tokens.verify(token).await {
            Ok(claims) => Caller::User(Arc::new(claims)),
            Err(TokenError::Expired) => Caller::Refused("the access token has expired".into()),
            Err(TokenError::Revoked) => Caller::Refused("the session was revoked".into()),
            Err(TokenError::Invalid(why)) => Caller::Refused(why),
        },
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

pub async fn require(
    State(auth): State<Arc<Auth>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let path = request.uri().path();
    // Paths no component serves answer 404 whoever asks; public routes need no token, and on
    // them a stale token is no reason to refuse: the caller is served as anonymous.
    let public = auth
        .routes
        .find(path)
        .is_none_or(|policy| policy.is_public(path));
    match request.extensions().get::<Caller>() {
        Some(Caller::User(_)) => {}
        _ if public => {}
        Some(Caller::Refused(why)) => return Err(ApiError::InvalidToken(why.clone())),
        Some(Caller::Anonymous) | None => return Err(ApiError::Unauthorized),
    }
    Ok(next.run(request).await)
}
