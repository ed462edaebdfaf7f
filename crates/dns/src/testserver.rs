//! A test DNS server: an in-process authoritative `hickory-server` on a loopback address (UDP and
//! TCP on the same port) serving an in-memory zone. Feature `test-server`.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use entente_dns::testserver::{parse_zone, TestDns, ZoneRecord};
//! let dns = TestDns::start(
//!     "127.0.0.1:0".parse().unwrap(),
//!     [
//!         ZoneRecord::srv("_xmpp-server._tcp.b.test", 10, 50, 5269, "xmpp1.b.test"),
//!         ZoneRecord::a("xmpp1.b.test", "127.0.0.2".parse().unwrap()),
//!     ],
//! )
//! .await?;
//! // Point a Locator at dns.addr(); more records can be added while it runs:
//! dns.add(parse_zone("xmpp2.b.test. A 127.0.0.3").unwrap().remove(0)).await?;
//! # Ok(()) }
//! ```
//!
//! # Zone text
//!
//! One record a line: `name [ttl] [IN] TYPE rdata`, with `;` or `#` starting a comment. Names are
//! always absolute (a missing trailing dot is added). Types and rdata:
//!
//! ```text
//! _xmpp-server._tcp.b.test.  SRV   10 50 5269 xmpp1.b.test.
//! xmpp1.b.test.              A     127.0.0.2
//! xmpp1.b.test.              AAAA  ::1
//! alias.b.test.              CNAME xmpp1.b.test.
//! sip.test.                  NAPTR 10 50 "s" "SIPS+D2T" "" _sips._tcp.sip.test.
//! ```
//!
//! The zone is the root zone, so any name can be served; names not listed get NXDOMAIN. TTLs
//! default to 0 so that resolvers do not cache across a test's changes.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, NAPTR, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

/// One record of the test zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneRecord {
    /// Owner name (absolute; the trailing dot is optional).
    pub name: String,
    /// Time to live, seconds.
    pub ttl: u32,
    /// The data.
    pub data: ZoneData,
}

/// Record data the test server knows.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZoneData {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// Alias.
    Cname(String),
    /// Service record (RFC 2782).
    Srv {
        /// Priority.
        priority: u16,
        /// Weight.
        weight: u16,
        /// Port.
        port: u16,
        /// Target, "." for "no service".
        target: String,
    },
    /// Naming authority pointer (RFC 3403), as RFC 3263 uses it.
    Naptr {
        /// Order.
        order: u16,
        /// Preference.
        preference: u16,
        /// Flags, e.g. "s".
        flags: String,
        /// Services, e.g. "SIPS+D2T".
        services: String,
        /// Regexp (usually empty).
        regexp: String,
        /// Replacement name.
        replacement: String,
    },
}

impl ZoneRecord {
    /// An A record.
    pub fn a(name: &str, ip: Ipv4Addr) -> Self {
        Self::new(name, ZoneData::A(ip))
    }
    /// An AAAA record.
    pub fn aaaa(name: &str, ip: Ipv6Addr) -> Self {
        Self::new(name, ZoneData::Aaaa(ip))
    }
    /// A CNAME record.
    pub fn cname(name: &str, target: &str) -> Self {
        Self::new(name, ZoneData::Cname(target.to_owned()))
    }
    /// An SRV record.
    pub fn srv(name: &str, priority: u16, weight: u16, port: u16, target: &str) -> Self {
        Self::new(
            name,
            ZoneData::Srv {
                priority,
                weight,
                port,
                target: target.to_owned(),
            },
        )
    }
    /// A NAPTR record.
    pub fn naptr(
        name: &str,
        order: u16,
        preference: u16,
        flags: &str,
        services: &str,
        regexp: &str,
        replacement: &str,
    ) -> Self {
        Self::new(
            name,
            ZoneData::Naptr {
                order,
                preference,
                flags: flags.to_owned(),
                services: services.to_owned(),
                regexp: regexp.to_owned(),
                replacement: replacement.to_owned(),
            },
        )
    }

    fn new(name: &str, data: ZoneData) -> Self {
        Self {
            name: name.to_owned(),
            ttl: 0,
            data,
        }
    }

    /// Converts to a hickory record.
    fn to_record(&self) -> Result<Record, String> {
        let name = abs_name(&self.name)?;
        let data = match &self.data {
            ZoneData::A(ip) => RData::A(A(*ip)),
            ZoneData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
            ZoneData::Cname(t) => RData::CNAME(CNAME(abs_name(t)?)),
            ZoneData::Srv {
                priority,
                weight,
                port,
                target,
            } => RData::SRV(SRV::new(*priority, *weight, *port, abs_name(target)?)),
            ZoneData::Naptr {
                order,
                preference,
                flags,
                services,
                regexp,
                replacement,
            } => RData::NAPTR(NAPTR::new(
                *order,
                *preference,
                flags.as_bytes().into(),
                services.as_bytes().into(),
                regexp.as_bytes().into(),
                abs_name(replacement)?,
            )),
        };
        Ok(Record::from_rdata(name, self.ttl, data))
    }
}

impl fmt::Display for ZoneRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dot = |s: &str| {
            if s.ends_with('.') {
                s.to_owned()
            } else {
                format!("{s}.")
            }
        };
        write!(f, "{} {} ", dot(&self.name), self.ttl)?;
        match &self.data {
            ZoneData::A(ip) => write!(f, "A {ip}"),
            ZoneData::Aaaa(ip) => write!(f, "AAAA {ip}"),
            ZoneData::Cname(t) => write!(f, "CNAME {}", dot(t)),
            ZoneData::Srv {
                priority,
                weight,
                port,
                target,
            } => write!(f, "SRV {priority} {weight} {port} {}", dot(target)),
            ZoneData::Naptr {
                order,
                preference,
                flags,
                services,
                regexp,
                replacement,
            } => write!(
                f,
                "NAPTR {order} {preference} {flags:?} {services:?} {regexp:?} {}",
                dot(replacement)
            ),
        }
    }
}

fn abs_name(s: &str) -> Result<Name, String> {
    let t = s.trim();
    let t = if t.ends_with('.') {
        t.to_owned()
    } else {
        format!("{t}.")
    };
    Name::from_utf8(&t).map_err(|e| format!("bad name {s:?}: {e}"))
}

/// A zone text line that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("zone line {line}: {message}")]
pub struct ZoneError {
    /// 1-based line number (1 for a single record parsed with `FromStr`).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses zone text (see the module documentation) into records.
pub fn parse_zone(text: &str) -> Result<Vec<ZoneRecord>, ZoneError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let tokens = tokenize(line).map_err(|message| ZoneError {
            line: i + 1,
            message,
        })?;
        if tokens.is_empty() {
            continue;
        }
        out.push(parse_tokens(&tokens).map_err(|message| ZoneError {
            line: i + 1,
            message,
        })?);
    }
    Ok(out)
}

impl FromStr for ZoneRecord {
    type Err = ZoneError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut recs = parse_zone(s)?;
        match recs.len() {
            1 => Ok(recs.remove(0)),
            n => Err(ZoneError {
                line: 1,
                message: format!("expected one record, found {n}"),
            }),
        }
    }
}

/// Splits a line into tokens; `"..."` is one token (with `\"` and `\\` escapes), a `;` or `#`
/// outside quotes starts a comment.
fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == ';' || c == '#' {
            break;
        } else if c == '"' {
            chars.next();
            let mut tok = String::new();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted string".into()),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e) => tok.push(e),
                        None => return Err("dangling backslash".into()),
                    },
                    Some(ch) => tok.push(ch),
                }
            }
            tokens.push(tok);
        } else {
            let mut tok = String::new();
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() || ch == ';' || ch == '"' {
                    break;
                }
                tok.push(ch);
                chars.next();
            }
            tokens.push(tok);
        }
    }
    Ok(tokens)
}

fn parse_tokens(tokens: &[String]) -> Result<ZoneRecord, String> {
    let mut it = tokens.iter().map(String::as_str).peekable();
    let name = it.next().ok_or("empty line")?.to_owned();
    let mut ttl = 0u32;
    if let Some(t) = it.peek() {
        if let Ok(n) = t.parse::<u32>() {
            ttl = n;
            it.next();
        }
    }
    if it.peek().is_some_and(|c| c.eq_ignore_ascii_case("IN")) {
        it.next();
    }
    let rtype = it.next().ok_or("missing record type")?.to_ascii_uppercase();
    let rest: Vec<&str> = it.collect();
    let want = |n: usize| {
        if rest.len() == n {
            Ok(())
        } else {
            Err(format!(
                "{rtype} takes {n} fields, found {}: {rest:?}",
                rest.len()
            ))
        }
    };
    let num = |s: &str, what: &str| {
        s.parse::<u16>()
            .map_err(|_| format!("bad {what} {s:?} in {rtype}"))
    };
    let data = match rtype.as_str() {
        "A" => {
            want(1)?;
            ZoneData::A(
                rest[0]
                    .parse()
                    .map_err(|_| format!("bad IPv4 {:?}", rest[0]))?,
            )
        }
        "AAAA" => {
            want(1)?;
            ZoneData::Aaaa(
                rest[0]
                    .parse()
                    .map_err(|_| format!("bad IPv6 {:?}", rest[0]))?,
            )
        }
        "CNAME" => {
            want(1)?;
            ZoneData::Cname(rest[0].to_owned())
        }
        "SRV" => {
            want(4)?;
            ZoneData::Srv {
                priority: num(rest[0], "priority")?,
                weight: num(rest[1], "weight")?,
                port: num(rest[2], "port")?,
                target: rest[3].to_owned(),
            }
        }
        "NAPTR" => {
            want(6)?;
            ZoneData::Naptr {
                order: num(rest[0], "order")?,
                preference: num(rest[1], "preference")?,
                flags: rest[2].to_owned(),
                services: rest[3].to_owned(),
                regexp: rest[4].to_owned(),
                replacement: rest[5].to_owned(),
            }
        }
        other => return Err(format!("unsupported record type {other}")),
    };
    let rec = ZoneRecord { name, ttl, data };
    // Validate names now rather than when the server starts.
    rec.to_record()?;
    Ok(rec)
}

/// A running test DNS server. Dropping it stops the server.
pub struct TestDns {
    addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    server: Server<Catalog>,
}

impl fmt::Debug for TestDns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDns").field("addr", &self.addr).finish()
    }
}

impl TestDns {
    /// Starts serving `records` on `addr` over UDP and TCP. `addr` must be a loopback address;
    /// port 0 picks a free port (the same for UDP and TCP), see [`TestDns::addr`].
    pub async fn start(
        addr: SocketAddr,
        records: impl IntoIterator<Item = ZoneRecord>,
    ) -> io::Result<Self> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("test DNS server binds loopback addresses only, not {addr}"),
            ));
        }
        let mut zone =
            InMemoryZoneHandler::empty(Name::root(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_ascii("ns.test.").map_err(invalid)?,
            Name::from_ascii("hostmaster.test.").map_err(invalid)?,
            1,
            3600,
            600,
            86400,
            0,
        );
        zone.upsert_mut(Record::from_rdata(Name::root(), 0, RData::SOA(soa)), 1);
        for r in records {
            let record = r.to_record().map_err(invalid)?;
            if !zone.upsert_mut(record, 1) {
                return Err(invalid(format!("record rejected: {r}")));
            }
        }
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        let handler: Arc<dyn ZoneHandler> = zone.clone();
        catalog.upsert(LowerName::from(Name::root()), vec![handler]);

        let (udp, tcp) = bind_pair(addr).await?;
        let addr = udp.local_addr()?;
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 32);
        tracing::debug!(%addr, "test DNS server started");
        Ok(Self { addr, zone, server })
    }

    /// The address served (UDP and TCP), with the real port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds (or, for CNAME, replaces) a record while the server runs.
    pub async fn add(&self, record: ZoneRecord) -> io::Result<()> {
        let r = record.to_record().map_err(invalid)?;
        if self.zone.upsert(r, 1).await {
            Ok(())
        } else {
            Err(invalid(format!("record rejected: {record}")))
        }
    }

    /// Stops the server and waits for its tasks to end.
    pub async fn shutdown(mut self) {
        // The result only says whether a task had failed; nothing to do about it here.
        let _ = self.server.shutdown_gracefully().await;
    }
}

fn invalid(e: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

/// Binds UDP and TCP on the same port. With port 0 the UDP port is chosen by the OS and TCP may
/// find it taken, so a few ports are tried.
async fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).await?;
        let mut tcp_addr = addr;
        tcp_addr.set_port(udp.local_addr()?.port());
        match TcpListener::bind(tcp_addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_example_zone() {
        let text = r#"
; a comment
_xmpp-server._tcp.b.test. SRV 10 50 5269 xmpp1.b.test.
xmpp1.b.test. 300 IN A 127.0.0.2   # trailing comment
xmpp1.b.test AAAA ::1
alias.b.test. cname xmpp1.b.test.
sip.test. NAPTR 10 50 "s" "SIPS+D2T" "" _sips._tcp.sip.test.
"#;
        let recs = parse_zone(text).unwrap();
        assert_eq!(recs.len(), 5);
        assert_eq!(
            recs[0],
            ZoneRecord::srv("_xmpp-server._tcp.b.test.", 10, 50, 5269, "xmpp1.b.test.")
        );
        assert_eq!(recs[1].ttl, 300);
        assert_eq!(recs[1].data, ZoneData::A(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(recs[3].data, ZoneData::Cname("xmpp1.b.test.".into()));
        assert_eq!(
            recs[4].data,
            ZoneData::Naptr {
                order: 10,
                preference: 50,
                flags: "s".into(),
                services: "SIPS+D2T".into(),
                regexp: String::new(),
                replacement: "_sips._tcp.sip.test.".into()
            }
        );
    }

    #[test]
    fn display_round_trips() {
        let recs = [
            ZoneRecord::srv("_x._tcp.b.test", 1, 2, 3, "."),
            ZoneRecord::naptr("s.test", 1, 2, "s", "SIP+D2U", "", "_sip._udp.s.test"),
            ZoneRecord::aaaa("h.test", Ipv6Addr::LOCALHOST),
        ];
        for r in recs {
            let back: ZoneRecord = r.to_string().parse().unwrap();
            assert_eq!(back.to_string(), r.to_string());
            assert_eq!(back.to_record(), r.to_record());
        }
    }

    #[test]
    fn parse_errors_name_the_line() {
        let e = parse_zone("a.test. A 1.2.3.4\nb.test. A nope\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(parse_zone("x. SRV 1 2 3").is_err());
        assert!(parse_zone("x. MX 1 y.").is_err());
        assert!(parse_zone("x. NAPTR 1 2 \"s").is_err());
        assert!(parse_zone("x. TXT hi").is_err());
    }

    #[tokio::test]
    async fn refuses_non_loopback() {
        let e = TestDns::start("0.0.0.0:0".parse().unwrap(), [])
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
