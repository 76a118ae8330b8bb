//! Rate limit: `limit` requests per minute per client. Public routes (logins, registrations,
//! paths no component serves) and every request without a valid token count per client
//! address, so a token never buys a fresh budget for guessing passwords; the routes that need
//! a token count per user, so many users behind one address do not share a budget. GCRA (a
//! leaky bucket kept as one timestamp per client): a client may burst up to `limit` requests,
//! then gets one more every `60 s / limit`. Counted in Redis when configured, so every gateway
//! process shares one budget; in memory otherwise.

mod client;
mod memory;
mod redis;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub use client::TrustedProxies;
pub use memory::MemoryLimiter;
pub use redis::RedisLimiter;

use super::ClientIp;
use super::auth::Caller;
use super::problem::problem;
use crate::policy::Routes;

/// The window the limit is counted over.
pub const PERIOD: Duration = Duration::from_secs(60);

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Allowed; this many more requests would be allowed right now.
    Allowed { remaining: u64 },
    /// Refused; the next request is allowed after this long.
    Limited { retry_after: Duration },
}

/// Where the limiter keeps each client's state.
#[async_trait]
pub trait Limiter: Send + Sync {
    async fn check(&self, client: &str, limit: u64) -> anyhow::Result<Decision>;
}

/// GCRA on integer microseconds: `tat` is the client's theoretical arrival time. Shared by the
/// in-memory limiter; the Redis script computes the same.
pub fn gcra(tat: u64, now: u64, limit: u64) -> (Decision, Option<u64>) {
    let period = PERIOD.as_micros() as u64;
    let interval = period / limit.max(1);
    let new_tat = tat.max(now) + interval;
    let allow_at = new_tat.saturating_sub(period);
    if now < allow_at {
        return (
            Decision::Limited {
                retry_after: Duration::from_micros(allow_at - now),
            },
            None,
        );
    }
    let remaining = (period - (new_tat - now)) / interval;
    (Decision::Allowed { remaining }, Some(new_tat))
}

pub struct RateLimit {
    pub limiter: Arc<dyn Limiter>,
    pub limit: u64,
    /// Which routes are public, as the policies say.
    pub routes: Arc<Routes>,
    pub proxies: TrustedProxies,
}

/// Operations endpoints are for load balancers, not clients: not limited.
const EXEMPT: [&str; 2] = ["/healthz", "/readyz"];

/// What the rate limit decided for one request.
pub enum Counted {
    /// Not counted: an operations endpoint, or the limiter could not be reached.
    Exempt,
    /// Allowed, with this many more requests allowed right now.
    Allowed { remaining: u64 },
    /// Refused: the 429 problem to answer with.
    Refused(Response),
}

/// Counts the request against its client's budget. Also records the client's address as the
/// trusted proxies reveal it, for everything after the gateway (sessions, the signed hop).
pub async fn count(rate: &RateLimit, request: &mut Request) -> Counted {
    if EXEMPT.contains(&request.uri().path()) {
        return Counted::Exempt;
    }
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| rate.proxies.client(peer.ip(), request.headers()));
    let public = super::auth::is_public(&rate.routes.load(), request.uri().path());
    let client = match (request.extensions().get::<Caller>(), address) {
        (Some(Caller::User(claims)), _) if !public => format!("user:{}", claims.user_id),
        (_, Some(address)) => client::budget_key(address),
        (_, None) => "ip:unknown".to_string(),
    };
    if let Some(address) = address {
        request
            .extensions_mut()
            .insert(ClientIp(address.to_string()));
    }
    match rate.limiter.check(&client, rate.limit).await {
        Ok(Decision::Allowed { remaining }) => Counted::Allowed { remaining },
        Ok(Decision::Limited { retry_after }) => {
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            let mut response = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many requests",
                &format!(
                    "at most {} requests per minute; retry in {seconds} s",
                    rate.limit
                ),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            rate.stamp(&mut response, 0);
            Counted::Refused(response)
        }
        Err(error) => {
            // The limit protects the service; an unreachable Redis should not take it down.
            tracing::warn!("rate limit not checked, letting the request through: {error:#}");
            Counted::Exempt
        }
    }
}

impl RateLimit {
    /// The budget headers every counted response carries.
    pub fn stamp(&self, response: &mut Response, remaining: u64) {
        let headers = response.headers_mut();
        // Names from static strings: a `&str` name is parsed and copied at every request.
        headers.insert(
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from(self.limit),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from(remaining),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_client_bursts_up_to_the_limit_then_waits_one_interval() {
        let (mut tat, now) = (0, 1_000_000_000);
        for expected in (0..5).rev() {
            let (decision, next) = gcra(tat, now, 5);
            assert_eq!(
                decision,
                Decision::Allowed {
                    remaining: expected
                }
            );
            tat = next.unwrap();
        }
        let (decision, next) = gcra(tat, now, 5);
        assert_eq!(
            decision,
            Decision::Limited {
                retry_after: Duration::from_secs(12)
            }
        );
        assert_eq!(next, None, "a refused request costs nothing");
        let (decision, _) = gcra(tat, now + 12_000_000, 5);
        assert_eq!(decision, Decision::Allowed { remaining: 0 });
    }

    #[test]
    fn an_idle_client_gets_its_whole_burst_back() {
        let (_, tat) = gcra(0, 1_000_000, 100);
        let (decision, _) = gcra(tat.unwrap(), 1_000_000 + 60_000_000, 100);
        assert_eq!(decision, Decision::Allowed { remaining: 99 });
    }
}
