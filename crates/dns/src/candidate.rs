//! What the locator returns: candidates to connect to, in order.

use std::fmt;
use std::net::SocketAddr;

/// How to talk to a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// TLS from the first byte. XMPP: XEP-0368 "direct TLS" (`_xmpps-server`). SIP: TLS over TCP
    /// (`SIPS+D2T`, `_sips._tcp`, `_sipfederationtls._tcp`).
    Tls,
    /// Plain TCP. XMPP: a normal RFC 6120 stream, upgraded with STARTTLS (`_xmpp-server`).
    /// SIP: `SIP+D2T`, `_sip._tcp`.
    Tcp,
    /// UDP (SIP only: `SIP+D2U`, `_sip._udp`).
    Udp,
}

impl Transport {
    /// The SIP default port for this transport (RFC 3261 §19.1.2): 5061 for TLS, 5060 otherwise.
    pub fn default_sip_port(self) -> u16 {
        match self {
            Self::Tls => 5061,
            Self::Tcp | Self::Udp => 5060,
        }
    }

    /// True when TLS starts at connect time (no STARTTLS).
    pub fn is_direct_tls(self) -> bool {
        self == Self::Tls
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tls => "tls",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// Where a candidate came from; for logs and for deciding how much to trust it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// An SRV record (possibly reached through NAPTR).
    Srv {
        /// The SRV owner name, e.g. `_xmpp-server._tcp.example.com`.
        record: String,
        /// SRV priority.
        priority: u16,
        /// SRV weight.
        weight: u16,
    },
    /// No SRV record: the domain's own A/AAAA records with the default port.
    AddressFallback,
    /// A static route from the configuration.
    Static,
    /// The domain is an IP address literal.
    IpLiteral,
}

/// One server to try, with its addresses already resolved.
///
/// A connector tries every candidate in order, and every address of a candidate, before giving
/// up: a peer that only tries the first SRV record fails whenever that one host is down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The host name to connect to (SRV target, static route host or the domain itself), lower
    /// case, no trailing dot. An IP address literal for IP routes.
    pub host: String,
    /// The port.
    pub port: u16,
    /// How to talk to it.
    pub transport: Transport,
    /// Where it came from.
    pub origin: Origin,
    /// The A and AAAA addresses of `host`, in the order the resolver gave them, never empty.
    pub addrs: Vec<SocketAddr>,
}

impl Candidate {
    /// True when TLS starts at connect time (XEP-0368 direct TLS, SIP over TLS).
    pub fn is_direct_tls(&self) -> bool {
        self.transport.is_direct_tls()
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({})", self.host, self.port, self.transport)
    }
}
