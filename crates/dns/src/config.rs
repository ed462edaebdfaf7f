//! Locator settings and static routes.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use crate::candidate::Transport;
use crate::select::normalize_host;

/// Settings of a [`Locator`](crate::Locator).
///
/// Fields are public and there is a `Default`, so `LocatorConfig { nameservers: vec![..],
/// ..Default::default() }` works.
#[derive(Clone, Debug)]
pub struct LocatorConfig {
    /// Name servers to ask, each over UDP and TCP on the given port. Empty: the system
    /// configuration (`/etc/resolv.conf`). Tests and private networks use their own, e.g.
    /// `127.0.0.1:5353`.
    pub nameservers: Vec<SocketAddr>,
    /// Per-domain routes checked before DNS, keyed by domain (case and trailing dot do not
    /// matter). The routes of a domain are tried in the order listed. Shared by XMPP and SIP: a
    /// server that needs different routes per protocol builds one locator per protocol.
    pub static_routes: HashMap<String, Vec<StaticRoute>>,
    /// Time allowed for one DNS query attempt. Default 5 s.
    pub query_timeout: Duration,
    /// Query attempts per name server before giving up. Default 2.
    pub attempts: usize,
    /// Bound on one whole `xmpp_server`/`sip_server` call (all its queries). Default 15 s.
    pub total_timeout: Duration,
    /// At most this many candidates are returned (and resolved): a hostile zone could list
    /// thousands of SRV targets. Default 16.
    pub max_candidates: usize,
    /// Seed for the RFC 2782 weighted shuffle; `None` seeds from the OS. Tests set it.
    pub rng_seed: Option<u64>,
}

impl Default for LocatorConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            static_routes: HashMap::new(),
            query_timeout: Duration::from_secs(5),
            attempts: 2,
            total_timeout: Duration::from_secs(15),
            max_candidates: 16,
            rng_seed: None,
        }
    }
}

impl LocatorConfig {
    /// Adds a static route for `domain` (after any routes it already has).
    pub fn add_static_route(&mut self, domain: &str, route: StaticRoute) -> &mut Self {
        self.static_routes
            .entry(normalize_host(domain))
            .or_default()
            .push(route);
        self
    }
}

/// A configured next hop for a domain: `host:port`, with an optional transport.
///
/// Text form: `[scheme://]host[:port]` where scheme is `tls`, `tcp` or `udp`, host a name, an
/// IPv4 address or a bracketed IPv6 address. Examples: `xmpp.b.test:5269`, `127.0.0.2`,
/// `tls://[::1]:5270`, `udp://sip.b.test:5060`.
///
/// Without a scheme the protocol default applies: STARTTLS over TCP for XMPP, the caller's first
/// preferred transport for SIP. Without a port: 5269 for XMPP (5270 for `tls://`), the SIP
/// default port of the transport.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StaticRoute {
    /// Host name (lower case, no trailing dot) or IP literal (without brackets).
    pub host: String,
    /// Port, if given.
    pub port: Option<u16>,
    /// Transport, if given.
    pub transport: Option<Transport>,
}

impl StaticRoute {
    /// A route to `host:port` with the protocol's default transport.
    pub fn new(host: impl AsRef<str>, port: u16) -> Self {
        Self {
            host: normalize_host(host.as_ref()),
            port: Some(port),
            transport: None,
        }
    }

    /// Sets the transport.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = Some(transport);
        self
    }

    /// The host as an IP address, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for StaticRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(t) = self.transport {
            write!(f, "{t}://")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// A static route string that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid static route {input:?}: {reason}")]
pub struct StaticRouteError {
    /// The text given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The longest static route accepted, in bytes.
pub const MAX_ROUTE_LEN: usize = 1000;

impl FromStr for StaticRoute {
    type Err = StaticRouteError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| StaticRouteError {
            input: input.to_owned(),
            reason,
        };
        if input.len() > MAX_ROUTE_LEN {
            return Err(err("longer than 1000 characters"));
        }
        let s = input.trim();
        let (transport, rest) = match s.split_once("://") {
            Some((scheme, rest)) => {
                let t = match scheme.to_ascii_lowercase().as_str() {
                    "tls" => Transport::Tls,
                    "tcp" => Transport::Tcp,
                    "udp" => Transport::Udp,
                    _ => return Err(err("unknown scheme (expected tls, tcp or udp)")),
                };
                (Some(t), rest)
            }
            None => (None, s),
        };
        let (host, port) = if let Some(after) = rest.strip_prefix('[') {
            let (h, tail) = after.split_once(']').ok_or(err("missing ']'"))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err("bracketed host is not an IPv6 address"));
            }
            let port = match tail {
                "" => None,
                t => Some(t.strip_prefix(':').ok_or(err("junk after ']'"))?),
            };
            (h, port)
        } else if rest.parse::<std::net::Ipv6Addr>().is_ok() {
            (rest, None)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let port = match port {
            Some(p) => Some(p.parse::<u16>().map_err(|_| err("bad port"))?),
            None => None,
        };
        let host = normalize_host(host);
        if host.is_empty()
            || host.contains(['/', ' ', '[', ']'])
            || (host.contains(':') && host.parse::<IpAddr>().is_err())
        {
            return Err(err("bad host"));
        }
        Ok(Self {
            host,
            port,
            transport,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_long() {
        let long = format!("{}:5269", "a".repeat(MAX_ROUTE_LEN));
        assert!(long.parse::<StaticRoute>().is_err());
        let fits = format!("{}:5269", "a".repeat(MAX_ROUTE_LEN - 5));
        assert!(fits.parse::<StaticRoute>().is_ok());
    }

    #[test]
    fn parse_forms() {
        let r: StaticRoute = "xmpp.B.test.:5269".parse().unwrap();
        assert_eq!(r, StaticRoute::new("xmpp.b.test", 5269));
        let r: StaticRoute = "127.0.0.2".parse().unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.transport),
            ("127.0.0.2", None, None)
        );
        let r: StaticRoute = "tls://[::1]:5270".parse().unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.transport),
            ("::1", Some(5270), Some(Transport::Tls))
        );
        assert_eq!(r.to_string(), "tls://[::1]:5270");
        let r: StaticRoute = "::1".parse().unwrap();
        assert_eq!(r.ip(), Some("::1".parse().unwrap()));
        let r: StaticRoute = "UDP://sip.b.test:5060".parse().unwrap();
        assert_eq!(r.transport, Some(Transport::Udp));
    }

    #[test]
    fn parse_errors() {
        for bad in [
            "",
            "h:99999",
            "sctp://h:1",
            "[::1",
            "[x]:1",
            "a:b:c",
            "h:",
            "[::1]x",
        ] {
            assert!(bad.parse::<StaticRoute>().is_err(), "{bad}");
        }
    }

    #[test]
    fn add_static_route_normalises_domain() {
        let mut c = LocatorConfig::default();
        c.add_static_route("B.Test.", StaticRoute::new("h", 1));
        assert!(c.static_routes.contains_key("b.test"));
    }
}
