//! Access tokens at the gateway, in two steps around the rate limit: `identify` verifies a
//! bearer token (algorithm, key, signature, expiry, issuer, audience, revocation) and records
//! who is calling, so the rate limit can count per user; `require` then refuses a request to a
//! route its policy does not make public unless a valid token was presented. A refusal says
//! why in fixed words only: nothing from the presented token is echoed back.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::header;

use super::problem::ApiError;
use crate::capabilities::tokens::{Claims, Error as TokenError, Tokens};
use crate::policy::{RouteTable, Routes};

pub struct Auth {
    pub routes: Arc<Routes>,
    pub tokens: Arc<Tokens>,
}

/// Who is calling, as `identify` found out.
#[derive(Clone)]
pub enum Caller {
    Anonymous,
    User(Arc<Claims>),
    /// A token was presented and refused; why, in fixed words (never the token's content).
    Refused(&'static str),
    /// The token is valid, but the bearer's rights in its organization changed since it was
    /// minted: a refresh gets the current ones.
    RightsChanged,
}

/// At most 200 characters of `text`, with line breaks and quotes escaped.
fn bounded(text: &str) -> String {
    const MAX: usize = 200;
    let mut escaped = text.chars().flat_map(char::escape_debug);
    let mut out: String = escaped.by_ref().take(MAX).collect();
    if escaped.next().is_some() {
        out.push('…');
    }
    out
}

/// Verifies the bearer token, if any, and records the caller in the request's extensions.
pub async fn identify(auth: &Auth, request: &mut Request) {
    let bearer = request.headers().get(header::AUTHORIZATION).map(|value| {
        value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
    });
    let caller = match bearer {
        None => Caller::Anonymous,
        Some(None) => Caller::Refused("use `Authorization: Bearer <token>`"),
        Some(Some(token)) => match auth.tokens.verify(token).await {
            Ok(claims) => Caller::User(Arc::new(claims)),
            Err(TokenError::Expired) => Caller::Refused("the access token has expired"),
            Err(TokenError::Revoked) => Caller::Refused("the session was revoked"),
            Err(TokenError::RightsChanged) => Caller::RightsChanged,
            Err(TokenError::Invalid(why)) => {
                // The detail may quote the token (its `kid`, a parser's view of it): operators
                // get a bounded excerpt, the client a fixed answer.
                tracing::debug!(detail = %bounded(&why), "access token refused");
                Caller::Refused("the access token is not valid")
            }
        },
    };
    request.extensions_mut().insert(caller);
}

/// Whether `path` is served without a token: a public route of its policy, or a path no
/// component serves (it answers 404 whoever asks).
/// Whether every segment of `path` is a name: no `//`, `.` or `..` (a trailing `/` is fine).
fn plain_path(path: &str) -> bool {
    let inner = path.strip_suffix('/').unwrap_or(path);
    inner
        .split('/')
        .skip(1)
        .all(|segment| !matches!(segment, "" | "." | ".."))
}

pub fn is_public(routes: &RouteTable, path: &str) -> bool {
    routes
        .find(path)
        .is_none_or(|policy| policy.is_public(path))
}

/// Refuses a request its caller may not make: a path that is not plain, an internal route, a
/// protected route without a valid token, a tenant route of another organization.
pub fn require(auth: &Auth, request: &Request) -> Result<(), ApiError> {
    let path = request.uri().path();
    // Components route by non-empty segments: a path the gateway would read differently (an
    // empty, `.` or `..` segment) could slip past the checks below, so none is served.
    if !plain_path(path) {
        return Err(ApiError::BadPath);
    }
    let routes = auth.routes.load();
    let policy = routes.find(path);
    // Internal routes answer only other components (through `services`): to a client they do
    // not exist.
    if policy.is_some_and(|policy| policy.is_internal(path)) {
        return Err(ApiError::NoRoute(path.into()));
    }
    // Public routes need no token, and on them a stale token is no reason to refuse: the
    // caller is served as anonymous.
    let public = is_public(&routes, path);
    let caller = request.extensions().get::<Caller>();
    match caller {
        Some(Caller::User(_)) => {}
        _ if public => {}
        Some(Caller::Refused(why)) => return Err(ApiError::InvalidToken((*why).into())),
        Some(Caller::RightsChanged) => return Err(ApiError::RightsChanged),
        Some(Caller::Anonymous) | None => return Err(ApiError::Unauthorized),
    }
    // Tenant routes serve only tokens scoped to an organization, and one with a slug only that
    // organization's: another tenant learns nothing, not even that the slug is taken.
    if let Some(route) = policy.and_then(|policy| policy.org_route(path)) {
        let claims = match caller {
            Some(Caller::User(claims)) => Some(claims),
            _ => None,
        };
        let org_slug = claims.and_then(|claims| claims.org_slug.as_deref());
        let org_id = claims.and_then(|claims| claims.org_id.as_deref());
        match route.slug {
            Some(slug) if org_slug != Some(slug) || org_id.is_none() => {
                return Err(ApiError::NoRoute(path.into()));
            }
            None if org_id.is_none() => return Err(ApiError::NoOrganization),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{bounded, plain_path};

    #[test]
    fn paths_with_empty_or_dot_segments_are_not_plain() {
        for path in [
            "/",
            "/org",
            "/org/api/organizations/acme/",
            "/hello/a.b",
            "/x/..y",
        ] {
            assert!(plain_path(path), "{path}");
        }
        for path in [
            "//org",
            "/org//api",
            "/org/api//",
            "/org/./api",
            "/org/../auth/internal",
            "/..",
        ] {
            assert!(!plain_path(path), "{path}");
        }
    }

    #[test]
    fn a_logged_detail_is_bounded_and_cannot_forge_log_lines() {
        let detail = format!("unknown key \"{}\"\nlevel=error", "k".repeat(100_000));
        let logged = bounded(&detail);
        assert!(logged.chars().count() <= 201, "{}", logged.len());
        assert!(!bounded("a\nb").contains('\n'));
    }
}
