//! Who the client is, by address: the connection's peer, or — only when that peer is one of
//! the operator's trusted proxies — the right-most address in `X-Forwarded-For` that is not
//! itself a trusted proxy. Everything left of it was written by the client and proves nothing.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The operator's load balancers and reverse proxies (`trusted_proxies`); empty: none, and
/// `X-Forwarded-For` is never read.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses addresses (`10.0.0.5`) and networks (`10.0.0.0/8`, `fd00::/8`).
    pub fn parse(entries: &[String]) -> anyhow::Result<Self> {
        entries
            .iter()
            .map(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "trusted_proxies: {entry:?} is not an address or network like 10.0.0.5 or 10.0.0.0/8"
                        )
                    })
            })
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        // Several headers read as one list, in order; each hop appends on the right.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        for hop in hops.iter().rev() {
            // An entry that is not an address was not written by a proxy we trust: stop at the
            // nearest hop we know.
            let Some(address) = parse_hop(hop.trim()) else {
                break;
            };
            client = address.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// `1.2.3.4`, `2001:db8::1`, or either with a port (`1.2.3.4:5678`, `[2001:db8::1]:5678`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The key a client's budget is counted under. An IPv6 host usually holds a whole /64, so the
/// budget is per /64: otherwise each of its addresses would get a fresh one.
pub fn budget_key(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("ip:{}/64", Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() {
        let none = TrustedProxies::default();
        let client = none.client(ip("198.51.100.7"), &headers(&["203.0.113.1"]));
        assert_eq!(client, ip("198.51.100.7"));
    }

    #[test]
    fn an_untrusted_peer_cannot_name_another_client() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let client = trusted.client(ip("198.51.100.7"), &headers(&["203.0.113.1"]));
        assert_eq!(client, ip("198.51.100.7"));
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8", "192.0.2.9"]);
        // The client wrote the first entry itself; the proxies appended the rest.
        let forwarded = headers(&["1.1.1.1, 203.0.113.5", "192.0.2.9"]);
        assert_eq!(
            trusted.client(ip("10.1.2.3"), &forwarded),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn garbage_in_the_header_stops_at_the_nearest_known_hop() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let forwarded = headers(&["203.0.113.5, not-an-ip, 10.0.0.2"]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &forwarded), ip("10.0.0.2"));
        assert_eq!(
            trusted.client(ip("10.1.2.3"), &headers(&[])),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn hops_with_ports_and_mapped_addresses_are_read_as_addresses() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let forwarded = headers(&["[2001:db8::1]:443"]);
        assert_eq!(
            trusted.client(ip("::ffff:10.0.0.1"), &forwarded),
            ip("2001:db8::1")
        );
        assert_eq!(
            trusted.client(ip("10.0.0.1"), &headers(&["203.0.113.5:8080"])),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn a_bad_entry_is_refused_naming_the_setting() {
        let error = TrustedProxies::parse(&["10.0.0.0/33".into()]).unwrap_err();
        assert!(error.to_string().contains("trusted_proxies"));
    }

    #[test]
    fn an_ipv6_host_gets_one_budget_for_its_whole_64() {
        assert_eq!(
            budget_key(ip("2001:db8:1:2:aaaa::1")),
            budget_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            budget_key(ip("2001:db8:1:2::1")),
            budget_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(budget_key(ip("192.0.2.1")), "ip:192.0.2.1");
    }
}
