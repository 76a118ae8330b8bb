//! The `http` capability: outgoing HTTP through `wasi:http/outgoing-handler`, for webhooks and
//! payment providers. Every component links `wasi:http` (toolchains such as componentize-js
//! import it whether or not the code uses it), but a request leaves the host only when the
//! policy grants "http" and lists its host in `http_hosts`; anything else is answered with
//! `HTTP-request-denied` before a connection is opened, and the denial is logged.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::uri::{Authority, Scheme};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Whether `host` is an entry `http_hosts` may hold: a lower-case host name or IP address with
/// an optional port, and nothing else.
pub fn valid_host(host: &str) -> bool {
    let Ok(authority) = host.parse::<Authority>() else {
        return false;
    };
    host.chars()
        .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        && host
            .rsplit_once(':')
            .filter(|(name, _)| !name.is_empty() && (!name.starts_with('[') || name.ends_with(']')))
            .is_none_or(|(_, port)| port.parse::<u16>().is_ok_and(|n| n > 0))
        && !authority.host().is_empty()
        && host == host.to_ascii_lowercase()
        && authority.as_str() == host
}

/// What one request of a component may reach.
pub struct Outbound {
    component: Arc<str>,
    request_id: Arc<str>,
    /// `http_hosts` of the policy when it grants "http"; empty otherwise.
    allowed: Arc<BTreeSet<String>>,
}

impl Outbound {
    pub fn new(component: Arc<str>, request_id: Arc<str>, allowed: Arc<BTreeSet<String>>) -> Self {
        Self {
            component,
            request_id,
            allowed,
        }
    }

    /// Whether a request to `authority` over `scheme` may leave: its `host:port` is listed, or
    /// its host is and the port is the scheme's default.
    fn allows(&self, scheme: Option<&Scheme>, authority: Option<&Authority>) -> bool {
        let Some(authority) = authority else {
            return false;
        };
        let host = authority.host().to_ascii_lowercase();
        let default_port = match scheme.map(Scheme::as_str) {
            Some("http") => 80,
            _ => 443,
        };
        let port = authority.port_u16().unwrap_or(default_port);
        self.allowed.contains(&format!("{host}:{port}"))
            || (port == default_port && self.allowed.contains(&host))
    }
}

type Sent = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                axum::http::Response<WasiBody>,
                Box<dyn Future<Output = Result<(), Error>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: axum::http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        let uri = request.uri();
        if !self.allows(uri.scheme(), uri.authority()) {
            tracing::warn!(
                component = &*self.component,
                request_id = &*self.request_id,
                host = uri.authority().map(Authority::as_str).unwrap_or(""),
                "outgoing HTTP request denied: the host is not in the policy's `http_hosts`"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;

            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::{Outbound, valid_host};

    #[test]
    fn hosts_are_bare_lower_case_authorities() {
        for good in [
            "api.stripe.com",
            "10.0.0.7:8080",
            "localhost:9000",
            "[::1]:8443",
        ] {
            assert!(valid_host(good), "{good}");
        }
        for bad in [
            "",
            "https://api.stripe.com",
            "api.stripe.com/v1",
            "API.stripe.com",
            "user@api.stripe.com",
            "api.stripe.com:99999",
            "*.stripe.com",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn a_bare_host_allows_its_scheme_default_port_only() {
        let allowed = BTreeSet::from(["api.example.com".to_string(), "127.0.0.1:8080".to_string()]);
        let outbound = Outbound::new("plugin".into(), "r".into(), Arc::new(allowed));
        let allows = |uri: &str| {
            let uri: axum::http::Uri = uri.parse().unwrap();
            outbound.allows(uri.scheme(), uri.authority())
        };
        assert!(allows("https://api.example.com/v1"));
        assert!(allows("http://api.example.com/v1"));
        assert!(allows("https://API.example.com:443/"));
        assert!(!allows("https://api.example.com:8443/"));
        assert!(!allows("https://other.example.com/"));
        assert!(allows("http://127.0.0.1:8080/hook"));
        assert!(!allows("http://127.0.0.1:8081/hook"));
        assert!(!allows("http://127.0.0.1/hook"));
    }
}
