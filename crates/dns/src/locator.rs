//! The async side: DNS queries through hickory-resolver, then the procedures of RFC 6120 §3.2 /
//! XEP-0368 (XMPP) and RFC 3263 §4 (SIP) on top, with RFC 2782 ordering from [`crate::select`].

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use rand::rngs::StdRng;
use rand::SeedableRng;
use tracing::{debug, warn};

use crate::candidate::{Candidate, Origin, Transport};
use crate::config::{LocatorConfig, StaticRoute};
use crate::error::{worse, Error};
use crate::select::{normalize_host, rfc2782_order, SrvRecord};
use crate::stats::{LookupKind, LookupOutcome, LookupStats};

/// XMPP server-to-server default port (RFC 6120 §3.2.2), used when no SRV record exists.
pub const XMPP_SERVER_PORT: u16 = 5269;
/// Default port for a `tls://` static route without a port (XEP-0368 direct TLS, by custom).
pub const XMPP_SERVER_TLS_PORT: u16 = 5270;

/// SRV services tried for SIP when the domain has no usable NAPTR record, in this order within
/// each transport. `_sipfederationtls._tcp` is what Microsoft Lync/Skype for Business/Teams
/// federation publishes; it means SIP over TLS like `_sips._tcp`.
const SIP_SERVICES: [(&str, Transport); 4] = [
    ("_sipfederationtls._tcp", Transport::Tls),
    ("_sips._tcp", Transport::Tls),
    ("_sip._tcp", Transport::Tcp),
    ("_sip._udp", Transport::Udp),
];

/// Finds the servers of a federation peer domain.
///
/// One `Locator` is meant to be shared (behind an `Arc`) by every federation connector: the
/// resolver inside caches answers for their TTL.
pub struct Locator {
    resolver: TokioResolver,
    /// Replaced as a whole by [`Locator::set_static_routes`]; only locked in synchronous
    /// sections, never across an `.await`.
    static_routes: RwLock<HashMap<String, Vec<StaticRoute>>>,
    total_timeout: Duration,
    max_candidates: usize,
    /// Only locked in synchronous sections, never across an `.await`.
    rng: Mutex<StdRng>,
    /// Every DNS query is counted and timed here (see [`crate::stats`]).
    stats: Arc<LookupStats>,
}

impl std::fmt::Debug for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locator")
            .field("static_routes", &self.static_routes)
            .field("total_timeout", &self.total_timeout)
            .field("max_candidates", &self.max_candidates)
            .finish_non_exhaustive()
    }
}

/// The outcome of one SRV (or NAPTR) query, before any decision is taken.
#[derive(Debug)]
enum Found<T> {
    Records(T),
    /// SRV only: the RRset was made only of "." targets.
    Unavailable,
    /// NXDOMAIN (`nxdomain`) or NOERROR with no record of the type asked.
    Absent {
        nxdomain: bool,
    },
    Failed(Error),
}

/// A candidate whose addresses are not known yet.
#[derive(Debug)]
struct Pending {
    host: String,
    port: u16,
    transport: Transport,
    origin: Origin,
}

/// The protocol a call is for, where static routes and IP literals need it.
#[derive(Clone, Copy)]
enum Proto<'a> {
    Xmpp,
    Sip(&'a [Transport]),
}

impl Locator {
    /// Builds a locator. Reads the system resolver configuration when `config.nameservers` is
    /// empty.
    pub fn new(config: LocatorConfig) -> Result<Self, Error> {
        let mut builder = if config.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| Error::Config(e.to_string()))?
        } else {
            let servers = config
                .nameservers
                .iter()
                .map(|sa| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = sa.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = sa.port();
                    NameServerConfig::new(sa.ip(), true, vec![udp, tcp])
                })
                .collect();
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let opts = builder.options_mut();
        opts.timeout = config.query_timeout;
        opts.attempts = config.attempts;
        // Both families: a connector can then try IPv6 and IPv4 addresses of every target.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let resolver = builder.build().map_err(|e| Error::Config(e.to_string()))?;
        let rng = match config.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let static_routes = config
            .static_routes
            .into_iter()
            .map(|(d, r)| (normalize_host(&d), r))
            .collect();
        Ok(Self {
            resolver,
            static_routes: RwLock::new(static_routes),
            total_timeout: config.total_timeout,
            max_candidates: config.max_candidates.max(1),
            rng: Mutex::new(rng),
            stats: Arc::new(LookupStats::new()),
        })
    }

    /// Replaces every static route (the federation settings changed at run time). Look-ups
    /// already under way finish with the routes they started with.
    pub fn set_static_routes(&self, routes: HashMap<String, Vec<StaticRoute>>) {
        let routes = routes
            .into_iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(d, r)| (normalize_host(&d), r))
            .collect();
        *self
            .static_routes
            .write()
            .unwrap_or_else(|p| p.into_inner()) = routes;
    }

    /// The static routes of `domain` (normalized), if it has any.
    fn static_routes_of(&self, domain: &str) -> Option<Vec<StaticRoute>> {
        self.static_routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(domain)
            .cloned()
    }

    /// Counts this locator's look-ups in `stats` (shared with other locators) instead of its
    /// own counters.
    pub fn with_stats(mut self, stats: Arc<LookupStats>) -> Self {
        self.stats = stats;
        self
    }

    /// The counters of this locator's DNS look-ups.
    pub fn stats(&self) -> &Arc<LookupStats> {
        &self.stats
    }

    /// Locates the XMPP servers of `domain` for a server-to-server connection.
    ///
    /// 1. A static route for the domain wins; DNS is not asked about the domain.
    /// 2. An IP address literal as domain gives that address on port 5269.
    /// 3. `_xmpps-server._tcp` (direct TLS, XEP-0368) and `_xmpp-server._tcp` (STARTTLS,
    ///    RFC 6120 §3.2.1) are queried in parallel and their records mixed into one RFC 2782
    ///    ordering ("all priorities and weights are mixed", XEP-0368 §3).
    /// 4. If `_xmpp-server._tcp` is a lone "." (and `_xmpps-server._tcp` has no target), the
    ///    service is decidedly unavailable: [`Error::ServiceUnavailable`], no fallback.
    /// 5. If neither gives a target and neither failed, RFC 6120 §3.2.2's fallback: the domain's
    ///    own A/AAAA records on port 5269 with STARTTLS. A "." for `_xmpps-server` alone does not
    ///    stop this fallback: it speaks only for direct TLS.
    ///
    /// If a lookup times out or fails while the other gives targets, the targets are used; if
    /// nothing gives a target, the failure is returned rather than falling back, so a DNS outage
    /// is not mistaken for "no SRV record".
    pub async fn xmpp_server(&self, domain: &str) -> Result<Vec<Candidate>, Error> {
        let domain = normalize_host(domain);
        self.bounded(&domain, self.xmpp_inner(&domain)).await
    }

    /// Locates the SIP servers of `domain` per RFC 3263 §4.
    ///
    /// `transports` lists the transports the caller supports, most preferred first; empty means
    /// TLS, TCP, UDP.
    ///
    /// 1. A static route for the domain wins.
    /// 2. An IP address literal gives one candidate per transport on its default port.
    /// 3. NAPTR records of the domain with flag "S" and service `SIPS+D2T` (TLS), `SIP+D2T`
    ///    (TCP) or `SIP+D2U` (UDP), for the transports supported, in the domain's (order,
    ///    preference) order, each followed to its SRV RRset.
    /// 4. If that gives no target: SRV `_sipfederationtls._tcp`, `_sips._tcp` (TLS),
    ///    `_sip._tcp` (TCP), `_sip._udp` (UDP) for the transports supported, in the caller's
    ///    order of preference.
    /// 5. If no SRV exists either: the domain's A/AAAA records, one candidate per supported
    ///    transport, on port 5061 for TLS and 5060 otherwise.
    ///
    /// Each SRV RRset is ordered per RFC 2782 on its own, and the sets are concatenated.
    pub async fn sip_server(
        &self,
        domain: &str,
        transports: &[Transport],
    ) -> Result<Vec<Candidate>, Error> {
        let domain = normalize_host(domain);
        let mut prefs: Vec<Transport> = Vec::new();
        for t in transports {
            if !prefs.contains(t) {
                prefs.push(*t);
            }
        }
        if prefs.is_empty() {
            prefs = vec![Transport::Tls, Transport::Tcp, Transport::Udp];
        }
        self.bounded(&domain, self.sip_inner(&domain, &prefs)).await
    }

    /// Applies `total_timeout` to a whole procedure.
    async fn bounded(
        &self,
        domain: &str,
        fut: impl std::future::Future<Output = Result<Vec<Candidate>, Error>>,
    ) -> Result<Vec<Candidate>, Error> {
        if domain.is_empty() {
            return Err(Error::InvalidName {
                domain: domain.to_owned(),
            });
        }
        let result = match tokio::time::timeout(self.total_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                domain: domain.to_owned(),
            }),
        };
        match &result {
            Ok(c) => {
                debug!(domain, candidates = ?c.iter().map(ToString::to_string).collect::<Vec<_>>(), "located")
            }
            Err(e) => debug!(domain, error = %e, "location failed"),
        }
        result
    }

    async fn xmpp_inner(&self, domain: &str) -> Result<Vec<Candidate>, Error> {
        if let Some(routes) = self.static_routes_of(domain) {
            return self
                .resolve(domain, static_pending(&routes, Proto::Xmpp))
                .await;
        }
        if let Ok(ip) = domain.parse::<IpAddr>() {
            return Ok(vec![ip_candidate(ip, XMPP_SERVER_PORT, Transport::Tcp)]);
        }
        let tls_owner = format!("_xmpps-server._tcp.{domain}");
        let tcp_owner = format!("_xmpp-server._tcp.{domain}");
        let (tls, tcp) = tokio::join!(self.srv(&tls_owner, domain), self.srv(&tcp_owner, domain));
        let mut failure = None;
        let mut tagged: Vec<(SrvRecord, Transport, &str)> = Vec::new();
        let tcp_unavailable = matches!(tcp, Found::Unavailable);
        for (found, transport, owner) in [
            (tls, Transport::Tls, tls_owner.as_str()),
            (tcp, Transport::Tcp, tcp_owner.as_str()),
        ] {
            match found {
                Found::Records(recs) => {
                    tagged.extend(recs.into_iter().map(|r| (r, transport, owner)));
                }
                Found::Failed(e) => {
                    warn!(domain, owner, error = %e, "SRV lookup failed");
                    failure = Some(worse(failure, e));
                }
                Found::Unavailable | Found::Absent { .. } => {}
            }
        }
        if !tagged.is_empty() {
            let ordered = {
                let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                rfc2782_order(tagged, |(r, _, _)| (r.priority, r.weight), &mut *rng)
            };
            let pending = ordered
                .into_iter()
                .map(|(r, transport, owner)| srv_pending(r, transport, owner))
                .collect();
            return self.resolve(domain, pending).await;
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if tcp_unavailable {
            return Err(Error::ServiceUnavailable {
                domain: domain.to_owned(),
            });
        }
        self.fallback(domain, &[(XMPP_SERVER_PORT, Transport::Tcp)])
            .await
    }

    async fn sip_inner(&self, domain: &str, prefs: &[Transport]) -> Result<Vec<Candidate>, Error> {
        if let Some(routes) = self.static_routes_of(domain) {
            return self
                .resolve(domain, static_pending(&routes, Proto::Sip(prefs)))
                .await;
        }
        if let Ok(ip) = domain.parse::<IpAddr>() {
            return Ok(prefs
                .iter()
                .map(|t| ip_candidate(ip, t.default_sip_port(), *t))
                .collect());
        }
        let mut failure = None;
        let mut unavailable = false;
        let mut pending = Vec::new();

        // RFC 3263 §4.1: "the client performs a NAPTR query for the domain in the URI"; it
        // "discards any records that contain a service field it does not support" and follows
        // the rest "in order of the Order field, then the Preference field".
        let mut services: Vec<(String, Transport)> = Vec::new();
        match self.naptr(domain).await {
            Found::Records(list) => services = list,
            Found::Failed(e) => {
                warn!(domain, error = %e, "NAPTR lookup failed");
                failure = Some(e);
            }
            Found::Unavailable | Found::Absent { .. } => {}
        }
        services.retain(|(_, t)| prefs.contains(t));
        self.srv_sets(
            domain,
            &services,
            &mut pending,
            &mut unavailable,
            &mut failure,
        )
        .await;

        if pending.is_empty() {
            // RFC 3263 §4.1: "If no NAPTR records are found, the client constructs SRV queries
            // for those transport protocols it supports, and does a query for each." We also
            // get here when NAPTR records exist but none leads to a target we can use.
            let services: Vec<(String, Transport)> = prefs
                .iter()
                .flat_map(|t| SIP_SERVICES.iter().filter(move |(_, st)| st == t))
                .map(|(svc, t)| (format!("{svc}.{domain}"), *t))
                .collect();
            self.srv_sets(
                domain,
                &services,
                &mut pending,
                &mut unavailable,
                &mut failure,
            )
            .await;
        }
        if !pending.is_empty() {
            return self.resolve(domain, pending).await;
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if unavailable {
            return Err(Error::ServiceUnavailable {
                domain: domain.to_owned(),
            });
        }
        // RFC 3263 §4.2: "If no SRV records were found, the client SHOULD use TCP for a SIPS
        // URI, and UDP for a SIP URI" on the default port; we offer every supported transport
        // in the caller's order.
        let ports: Vec<(u16, Transport)> =
            prefs.iter().map(|t| (t.default_sip_port(), *t)).collect();
        self.fallback(domain, &ports).await
    }

    /// Queries the SRV RRsets `services` (owner, transport) in parallel and appends their
    /// targets, each set in RFC 2782 order, the sets in the order given.
    async fn srv_sets(
        &self,
        domain: &str,
        services: &[(String, Transport)],
        pending: &mut Vec<Pending>,
        unavailable: &mut bool,
        failure: &mut Option<Error>,
    ) {
        let results = join_all(services.iter().map(|(owner, _)| self.srv(owner, domain))).await;
        for ((owner, transport), found) in services.iter().zip(results) {
            match found {
                Found::Records(recs) => {
                    let ordered = {
                        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                        rfc2782_order(recs, |r| (r.priority, r.weight), &mut *rng)
                    };
                    pending.extend(
                        ordered
                            .into_iter()
                            .map(|r| srv_pending(r, *transport, owner)),
                    );
                }
                Found::Unavailable => *unavailable = true,
                Found::Absent { .. } => {}
                Found::Failed(e) => {
                    warn!(domain, owner, error = %e, "SRV lookup failed");
                    *failure = Some(worse(failure.take(), e));
                }
            }
        }
    }

    /// One SRV query. "." targets are removed; an RRset of only "." is `Unavailable`.
    async fn srv(&self, owner: &str, domain: &str) -> Found<Vec<SrvRecord>> {
        let name = match fqdn(owner) {
            Ok(n) => n,
            Err(_) => {
                return Found::Failed(Error::InvalidName {
                    domain: domain.to_owned(),
                })
            }
        };
        let started = Instant::now();
        let answer = self.resolver.lookup(name, RecordType::SRV).await;
        self.record(
            LookupKind::Srv,
            &answer,
            |l| l.answers().iter().any(|r| matches!(r.data, RData::SRV(_))),
            started,
        );
        match answer {
            Ok(lookup) => {
                let recs: Vec<SrvRecord> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(srv) => Some(SrvRecord::new(
                            srv.priority,
                            srv.weight,
                            srv.port,
                            srv.target.to_ascii(),
                        )),
                        _ => None,
                    })
                    .collect();
                if recs.is_empty() {
                    Found::Absent { nxdomain: false }
                } else if recs.iter().all(SrvRecord::is_unavailable) {
                    Found::Unavailable
                } else {
                    Found::Records(recs.into_iter().filter(|r| !r.is_unavailable()).collect())
                }
            }
            Err(e) => classify(&e, domain),
        }
    }

    /// The NAPTR query of RFC 3263 §4.1: returns (SRV owner, transport) in (order, preference)
    /// order, keeping only terminal "S" records with a SIP service we know.
    async fn naptr(&self, domain: &str) -> Found<Vec<(String, Transport)>> {
        let name = match fqdn(domain) {
            Ok(n) => n,
            Err(_) => {
                return Found::Failed(Error::InvalidName {
                    domain: domain.to_owned(),
                })
            }
        };
        let started = Instant::now();
        let answer = self.resolver.lookup(name, RecordType::NAPTR).await;
        self.record(
            LookupKind::Naptr,
            &answer,
            |l| {
                l.answers()
                    .iter()
                    .any(|r| matches!(r.data, RData::NAPTR(_)))
            },
            started,
        );
        match answer {
            Ok(lookup) => {
                let mut recs: Vec<(u16, u16, String, Transport)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::NAPTR(n) => {
                            let transport = match n.services.to_ascii_uppercase().as_slice() {
                                b"SIPS+D2T" => Transport::Tls,
                                b"SIP+D2T" => Transport::Tcp,
                                b"SIP+D2U" => Transport::Udp,
                                _ => return None,
                            };
                            // Only "S" (an SRV lookup follows) is used by RFC 3263.
                            if !n.flags.eq_ignore_ascii_case(b"s") || n.replacement.is_root() {
                                debug!(domain, ?n, "NAPTR record skipped");
                                return None;
                            }
                            Some((
                                n.order,
                                n.preference,
                                normalize_host(&n.replacement.to_ascii()),
                                transport,
                            ))
                        }
                        _ => None,
                    })
                    .collect();
                recs.sort_by_key(|(o, p, _, _)| (*o, *p));
                Found::Records(recs.into_iter().map(|(_, _, r, t)| (r, t)).collect())
            }
            Err(e) => classify(&e, domain),
        }
    }

    /// RFC 6120 §3.2.2 / RFC 3263 §4.2 fallback: the domain's own addresses.
    async fn fallback(
        &self,
        domain: &str,
        ports: &[(u16, Transport)],
    ) -> Result<Vec<Candidate>, Error> {
        let ips = match self.addresses(domain).await {
            Ok(ips) if !ips.is_empty() => ips,
            Ok(_) => {
                return Err(Error::NoRecords {
                    domain: domain.to_owned(),
                })
            }
            Err(e) => {
                return Err(match classify::<()>(&e, domain) {
                    Found::Absent { nxdomain: true } => Error::NxDomain {
                        domain: domain.to_owned(),
                    },
                    Found::Failed(e) => e,
                    _ => Error::NoRecords {
                        domain: domain.to_owned(),
                    },
                })
            }
        };
        Ok(ports
            .iter()
            .map(|(port, transport)| Candidate {
                host: domain.to_owned(),
                port: *port,
                transport: *transport,
                origin: Origin::AddressFallback,
                addrs: ips.iter().map(|ip| SocketAddr::new(*ip, *port)).collect(),
            })
            .collect())
    }

    /// A and AAAA of `host` (an IP literal resolves to itself).
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, NetError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = fqdn(host).map_err(|_| NetError::Message("invalid host name"))?;
        let started = Instant::now();
        let answer = self.resolver.lookup_ip(name).await;
        self.record(
            LookupKind::Address,
            &answer,
            |l| l.iter().next().is_some(),
            started,
        );
        Ok(answer?.iter().collect())
    }

    /// Counts one resolver answer: `has_records` tells whether a successful answer holds
    /// records of the type asked.
    fn record<T>(
        &self,
        kind: LookupKind,
        answer: &Result<T, NetError>,
        has_records: impl FnOnce(&T) -> bool,
        started: Instant,
    ) {
        let outcome = match answer {
            Ok(l) if has_records(l) => LookupOutcome::Ok,
            Ok(_) => LookupOutcome::NoRecords,
            Err(e) => outcome_of(e),
        };
        self.stats.record(kind, outcome, started.elapsed());
    }

    /// Resolves the addresses of every pending candidate (eagerly and in parallel, each distinct
    /// host once), drops those without addresses, and reports why when none is left.
    async fn resolve(&self, domain: &str, pending: Vec<Pending>) -> Result<Vec<Candidate>, Error> {
        let mut seen = HashSet::new();
        let mut pending: Vec<Pending> = pending
            .into_iter()
            .filter(|p| seen.insert((p.host.clone(), p.port, p.transport)))
            .collect();
        if pending.len() > self.max_candidates {
            debug!(
                domain,
                dropped = pending.len() - self.max_candidates,
                "too many candidates"
            );
            pending.truncate(self.max_candidates);
        }
        let mut hosts: Vec<String> = Vec::new();
        for p in &pending {
            if !hosts.contains(&p.host) {
                hosts.push(p.host.clone());
            }
        }
        let results = join_all(hosts.iter().map(|h| self.addresses(h))).await;
        let by_host: HashMap<String, Result<Vec<IpAddr>, NetError>> =
            hosts.into_iter().zip(results).collect();

        let mut failure = None;
        let mut unresolved = Vec::new();
        let mut out = Vec::new();
        for p in pending {
            match by_host.get(p.host.as_str()) {
                Some(Ok(ips)) if !ips.is_empty() => out.push(Candidate {
                    addrs: ips.iter().map(|ip| SocketAddr::new(*ip, p.port)).collect(),
                    host: p.host,
                    port: p.port,
                    transport: p.transport,
                    origin: p.origin,
                }),
                Some(Err(e)) => {
                    debug!(domain, host = p.host, error = %e, "target did not resolve");
                    if let Found::Failed(e) = classify::<()>(e, domain) {
                        failure = Some(worse(failure, e));
                    }
                    if !unresolved.contains(&p.host) {
                        unresolved.push(p.host);
                    }
                }
                _ => {
                    if !unresolved.contains(&p.host) {
                        unresolved.push(p.host);
                    }
                }
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        Err(failure.unwrap_or(Error::NoAddresses {
            domain: domain.to_owned(),
            hosts: unresolved,
        }))
    }
}

fn srv_pending(r: SrvRecord, transport: Transport, owner: &str) -> Pending {
    Pending {
        host: normalize_host(&r.target),
        port: r.port,
        transport,
        origin: Origin::Srv {
            record: owner.to_owned(),
            priority: r.priority,
            weight: r.weight,
        },
    }
}

fn ip_candidate(ip: IpAddr, port: u16, transport: Transport) -> Candidate {
    Candidate {
        host: ip.to_string(),
        port,
        transport,
        origin: Origin::IpLiteral,
        addrs: vec![SocketAddr::new(ip, port)],
    }
}

/// Static routes, in the order configured, with the protocol's defaults filled in. Routes whose
/// explicit transport the protocol (or the caller) does not support are skipped.
fn static_pending(routes: &[StaticRoute], proto: Proto<'_>) -> Vec<Pending> {
    routes
        .iter()
        .filter_map(|r| {
            let (transport, port) = match proto {
                Proto::Xmpp => {
                    let t = r.transport.unwrap_or(Transport::Tcp);
                    let default = match t {
                        Transport::Tls => XMPP_SERVER_TLS_PORT,
                        Transport::Tcp => XMPP_SERVER_PORT,
                        Transport::Udp => {
                            warn!(route = %r, "UDP static route ignored for XMPP");
                            return None;
                        }
                    };
                    (t, r.port.unwrap_or(default))
                }
                Proto::Sip(prefs) => {
                    // `prefs` is never empty: sip_server fills in the default list.
                    let t = r.transport.unwrap_or(*prefs.first()?);
                    if !prefs.contains(&t) {
                        return None;
                    }
                    (t, r.port.unwrap_or(t.default_sip_port()))
                }
            };
            Some(Pending {
                host: r.host.clone(),
                port,
                transport,
                origin: Origin::Static,
            })
        })
        .collect()
}

/// Parses a host or domain as a fully qualified DNS name (IDNs are converted to A-labels), so that
/// no search domain is ever appended.
fn fqdn(host: &str) -> Result<Name, ()> {
    let mut s = host.trim_end_matches('.').to_owned();
    if s.is_empty() {
        return Err(());
    }
    s.push('.');
    Name::from_utf8(&s).map_err(|_| ())
}

/// The metrics outcome of a resolver error (the same distinctions as [`classify`]).
fn outcome_of(e: &NetError) -> LookupOutcome {
    if e.is_nx_domain() {
        LookupOutcome::NxDomain
    } else if e.is_no_records_found() {
        LookupOutcome::NoRecords
    } else {
        match e {
            NetError::Timeout => LookupOutcome::Timeout,
            NetError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => LookupOutcome::Timeout,
            _ => LookupOutcome::Error,
        }
    }
}

/// Maps a resolver error onto what the procedures need to know.
fn classify<T>(e: &NetError, domain: &str) -> Found<T> {
    if e.is_nx_domain() {
        return Found::Absent { nxdomain: true };
    }
    if e.is_no_records_found() {
        return Found::Absent { nxdomain: false };
    }
    let domain = domain.to_owned();
    Found::Failed(match e {
        NetError::Timeout => Error::Timeout { domain },
        NetError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => Error::Timeout { domain },
        other => Error::ServerFailure {
            domain,
            detail: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_appends_root() {
        assert_eq!(fqdn("b.test").unwrap().to_ascii(), "b.test.");
        assert_eq!(fqdn("b.test.").unwrap().to_ascii(), "b.test.");
        assert!(fqdn("").is_err());
        assert!(fqdn(".").is_err());
    }

    #[test]
    fn static_pending_defaults() {
        let routes: Vec<StaticRoute> = ["h1", "tls://h2", "udp://h3:7"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let x = static_pending(&routes, Proto::Xmpp);
        assert_eq!(
            x.iter().map(|p| (p.port, p.transport)).collect::<Vec<_>>(),
            vec![(5269, Transport::Tcp), (5270, Transport::Tls)]
        );
        let s = static_pending(&routes, Proto::Sip(&[Transport::Tcp, Transport::Udp]));
        assert_eq!(
            s.iter().map(|p| (p.port, p.transport)).collect::<Vec<_>>(),
            vec![(5060, Transport::Tcp), (7, Transport::Udp)]
        );
    }

    #[tokio::test]
    async fn static_routes_are_replaced_at_run_time() {
        let mut c = LocatorConfig::default();
        c.nameservers.push("127.0.0.1:9".parse().unwrap());
        c.add_static_route("a.test", "127.0.0.5:5999".parse().unwrap());
        let l = Locator::new(c).unwrap();
        let ports = |r: Result<Vec<Candidate>, Error>| -> Vec<u16> {
            r.map(|c| c.iter().map(|c| c.port).collect())
                .unwrap_or_default()
        };
        assert_eq!(ports(l.xmpp_server("a.test").await), vec![5999]);
        let mut m = HashMap::new();
        m.insert(
            "B.Test.".to_string(),
            vec!["127.0.0.6:6000".parse().unwrap()],
        );
        m.insert("c.test".to_string(), vec![]);
        l.set_static_routes(m);
        assert_eq!(ports(l.xmpp_server("b.test").await), vec![6000]);
        assert_eq!(
            ports(l.sip_server("b.test", &[Transport::Tcp]).await),
            vec![6000]
        );
        assert!(l.static_routes_of("a.test").is_none());
        assert!(l.static_routes_of("c.test").is_none());
    }

    #[test]
    fn classify_timeout() {
        assert!(matches!(
            classify::<()>(&NetError::Timeout, "d"),
            Found::Failed(Error::Timeout { .. })
        ));
        assert!(matches!(
            classify::<()>(&NetError::Busy, "d"),
            Found::Failed(Error::ServerFailure { .. })
        ));
    }
}
