//! `entente check-federation DOMAIN`: checks a foreign domain step by step, the way Entente
//! itself will reach it, and says what to fix. The tool an admin runs when federation does not
//! work.
//!
//! The domain's settings are the federation in effect (the file's with the admin API's changes,
//! a [`FederationView`]): its static routes, SIP transport, and the policy, shown as steps.
//!
//! XMPP: SRV look-up, TCP connect to each candidate, the stream header and features, STARTTLS,
//! the certificate (names, validity for the domain, expiry) and the features after TLS (SASL
//! EXTERNAL, dialback). SIP: RFC 3263 look-up, TCP connect, TLS and certificate, and an OPTIONS
//! request.

use std::sync::Arc;
use std::time::Duration;

use entente_dns::{Candidate, Locator, Transport};
use entente_xmpp_proto::framer::NS_STREAM;
use entente_xmpp_proto::{Element, Limits, StreamEvent, XmlStream};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{Config, PeerTls, SipPeerTransport};
use crate::federation::{same_domain, FederationView, RouteKind, Source};

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// One step of the check.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
    /// What to do about a warning or failure.
    pub fix: Option<String>,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = match self.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        write!(f, "[{v}] {}: {}", self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n       fix: {fix}")?;
        }
        Ok(())
    }
}

/// Which protocols to check.
#[derive(Debug, Clone, Copy)]
pub struct Which {
    pub xmpp: bool,
    pub sip: bool,
}

const STEP_TIMEOUT: Duration = Duration::from_secs(8);

/// Runs the checks against the federation in effect, `view` (the file's with the admin API's
/// changes, or the file's alone when the store cannot be read); `progress` sees each step as
/// it completes.
pub async fn check_federation(
    cfg: &Config,
    view: &FederationView,
    domain: &str,
    which: Which,
    mut progress: impl FnMut(&Step),
) -> anyhow::Result<Vec<Step>> {
    let mut lc = entente_dns::LocatorConfig::default();
    for n in &cfg.dns.nameservers {
        lc.nameservers.push(n.parse()?);
    }
    if let Some(t) = cfg.dns.timeout_secs {
        lc.query_timeout = Duration::from_secs(t.max(1));
    }
    // One locator per protocol, each with its peers' static routes, as the server has.
    let xmpp_locator = Locator::new(lc.clone())?;
    xmpp_locator.set_static_routes(view.routes(RouteKind::Xmpp));
    let sip_locator = Locator::new(lc)?;
    sip_locator.set_static_routes(view.routes(RouteKind::Sip));
    let roots = crate::tls::root_store(cfg.s2s.ca_file.as_deref(), cfg.s2s.system_roots)?;
    let mut steps = Vec::new();
    let mut push = |s: Step, steps: &mut Vec<Step>| {
        progress(&s);
        steps.push(s);
    };
    if which.xmpp {
        for s in xmpp_settings_steps(view, domain) {
            push(s, &mut steps);
        }
        for s in check_xmpp(cfg, &xmpp_locator, &roots, domain).await {
            push(s, &mut steps);
        }
    }
    if which.sip {
        let settings = sip_settings_step(view, domain);
        push(settings, &mut steps);
        let transports: &[Transport] = match view.sip_peer(domain).map(|p| p.transport) {
            Some(SipPeerTransport::Tcp) => &[Transport::Tcp],
            _ => &[Transport::Tls, Transport::Tcp],
        };
        for s in check_sip(cfg, &sip_locator, &roots, domain, transports).await {
            push(s, &mut steps);
        }
    }
    Ok(steps)
}

fn source_text(s: Source) -> &'static str {
    match s {
        Source::Config => "the configuration file",
        Source::Api => "the admin API",
    }
}

/// What the federation in effect says about XMPP with `domain`: its settings and the policy.
fn xmpp_settings_steps(view: &FederationView, domain: &str) -> Vec<Step> {
    let mut out = Vec::new();
    let entry = view
        .xmpp
        .iter()
        .find(|(p, _)| same_domain(&p.domain, domain));
    let removed = view.removed.iter().any(|d| same_domain(d, domain));
    out.push(match entry {
        Some((p, src)) => step(
            "XMPP settings",
            Verdict::Ok,
            format!(
                "from {}: tls {}, routes [{}], profile {}",
                source_text(*src),
                match p.tls {
                    PeerTls::Required => "required",
                    PeerTls::Optional => "optional",
                    PeerTls::Never => "never",
                },
                p.routes.join(", "),
                p.profile.as_deref().unwrap_or("(none)")
            ),
            None,
        ),
        None if removed => step(
            "XMPP settings",
            Verdict::Warn,
            "removed through the admin API: the file's [[s2s.peer]] entry is ignored; DNS only, TLS required",
            Some("`entente admin domains reset DOMAIN` brings the file's entry back"),
        ),
        None => step(
            "XMPP settings",
            Verdict::Ok,
            "no [[s2s.peer]] entry: found through DNS, TLS required",
            None,
        ),
    });
    if !view.allowed(domain) {
        out.push(step(
            "XMPP policy",
            Verdict::Warn,
            format!(
                "the federation policy ({}, from {}) does not permit {domain}: stanzas to and from it are refused",
                crate::federation::policy_name(view.policy),
                source_text(view.policy_source)
            ),
            Some("change the policy (`entente admin policy set`, or [s2s] policy/domains)"),
        ));
    }
    out
}

/// What the federation in effect says about SIP with `domain`.
fn sip_settings_step(view: &FederationView, domain: &str) -> Step {
    match view
        .sip
        .iter()
        .find(|(p, _)| same_domain(&p.domain, domain))
    {
        Some((p, src)) => step(
            "SIP settings",
            Verdict::Ok,
            format!(
                "from {}: profile {}, transport {}, routes [{}]",
                source_text(*src),
                p.profile,
                match p.transport {
                    SipPeerTransport::Tls => "tls",
                    SipPeerTransport::Tcp => "tcp",
                },
                p.routes.join(", ")
            ),
            None,
        ),
        None => step(
            "SIP settings",
            Verdict::Warn,
            format!("{domain} is not a SIP peer: Entente neither sends SIP to it nor accepts SIP from it"),
            Some("add a [[sip.peer]] entry, or `entente admin domains set DOMAIN --protocol sip`"),
        ),
    }
}

/// Our certificate and key, as federation presents them.
fn our_identity(cfg: &Config) -> anyhow::Result<crate::tls::Identity> {
    let paths = crate::tls::ensure_certificate(
        cfg.tls.cert.as_deref(),
        cfg.tls.key.as_deref(),
        &cfg.data_dir,
        &cfg.domain,
    )?;
    crate::tls::Identity::load(&paths)
}

fn step(
    name: impl Into<String>,
    verdict: Verdict,
    detail: impl Into<String>,
    fix: Option<&str>,
) -> Step {
    Step {
        name: name.into(),
        verdict,
        detail: detail.into(),
        fix: fix.map(str::to_string),
    }
}

async fn check_xmpp(
    cfg: &Config,
    locator: &Locator,
    roots: &Arc<rustls::RootCertStore>,
    domain: &str,
) -> Vec<Step> {
    let mut out = Vec::new();
    let cands = match locator.xmpp_server(domain).await {
        Ok(c) => {
            let list: Vec<String> = c.iter().map(|c| c.to_string()).collect();
            out.push(step(
                "XMPP DNS",
                Verdict::Ok,
                format!("{} candidate(s): {}", c.len(), list.join(", ")),
                None,
            ));
            c
        }
        Err(e) => {
            out.push(step(
                "XMPP DNS",
                Verdict::Fail,
                e.to_string(),
                Some("the domain must publish _xmpp-server._tcp SRV records (or an A record and listen on 5269); or add a route in [[s2s.peer]]"),
            ));
            return out;
        }
    };
    let mut reached = false;
    for cand in cands.iter().take(4) {
        for addr in cand.addrs.iter().take(2) {
            let name = format!("XMPP {cand} ({addr})");
            let tcp = match tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    out.push(step(
                        format!("{name} TCP"),
                        Verdict::Fail,
                        e.to_string(),
                        Some("check that the server runs and that firewalls let port through"),
                    ));
                    continue;
                }
                Err(_) => {
                    out.push(step(
                        format!("{name} TCP"),
                        Verdict::Fail,
                        "no answer",
                        Some("a firewall drops the connection, or the host is down"),
                    ));
                    continue;
                }
            };
            out.push(step(format!("{name} TCP"), Verdict::Ok, "connected", None));
            reached = true;
            match tokio::time::timeout(
                STEP_TIMEOUT * 2,
                xmpp_stream_steps(cfg, roots, domain, cand, tcp),
            )
            .await
            {
                Ok(steps) => out.extend(steps),
                Err(_) => out.push(step(
                    format!("{name} stream"),
                    Verdict::Fail,
                    "the server stopped answering",
                    None,
                )),
            }
        }
    }
    if !reached {
        out.push(step(
            "XMPP reachability",
            Verdict::Fail,
            format!("no server of {domain} could be reached"),
            None,
        ));
    }
    out
}

async fn read_until<S: AsyncRead + Unpin>(
    io: &mut S,
    xml: &mut XmlStream,
    want: impl Fn(&StreamEvent) -> bool,
) -> Result<Vec<StreamEvent>, String> {
    let mut buf = vec![0u8; 8192];
    let mut evs = Vec::new();
    loop {
        let n = io.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        xml.feed(&buf[..n], &mut evs).map_err(|e| e.to_string())?;
        if evs.iter().any(&want) {
            return Ok(evs);
        }
    }
}

fn stream_error_text(evs: &[StreamEvent]) -> Option<String> {
    evs.iter().find_map(|e| match e {
        StreamEvent::Stanza(el) if el.is("error", NS_STREAM) => Some(
            el.elements()
                .map(|c| {
                    if c.name == "text" {
                        c.text_content()
                    } else {
                        c.name.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(": "),
        ),
        _ => None,
    })
}

fn features_summary(f: &Element) -> String {
    let mut parts = Vec::new();
    if let Some(tls) = f.find("starttls", "urn:ietf:params:xml:ns:xmpp-tls") {
        parts.push(
            if tls
                .find("required", "urn:ietf:params:xml:ns:xmpp-tls")
                .is_some()
            {
                "STARTTLS (required)".to_string()
            } else {
                "STARTTLS".to_string()
            },
        );
    }
    if let Some(m) = f.find("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl") {
        let mechs: Vec<String> = m.elements().map(|x| x.text_content()).collect();
        parts.push(format!("SASL {}", mechs.join(" ")));
    }
    if f.find("dialback", "urn:xmpp:features:dialback").is_some() {
        parts.push("dialback".into());
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

async fn xmpp_stream_steps(
    cfg: &Config,
    roots: &Arc<rustls::RootCertStore>,
    domain: &str,
    cand: &Candidate,
    tcp: TcpStream,
) -> Vec<Step> {
    let mut out = Vec::new();
    let name = format!("XMPP {cand}");
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='{}' to='{}' version='1.0'>",
        entente_xmpp_proto::element::escape(&cfg.domain),
        entente_xmpp_proto::element::escape(domain)
    );
    let server_name = match ServerName::try_from(domain.to_string()) {
        Ok(n) => n,
        Err(e) => {
            out.push(step(&name, Verdict::Fail, format!("bad domain: {e}"), None));
            return out;
        }
    };
    let id = match our_identity(cfg) {
        Ok(i) => i,
        Err(e) => {
            out.push(step(
                &name,
                Verdict::Fail,
                format!("our own certificate: {e:#}"),
                None,
            ));
            return out;
        }
    };
    let (tls_cfg, slot) = match crate::tls::s2s_client_config(roots, &id, false) {
        Ok(x) => x,
        Err(e) => {
            out.push(step(
                &name,
                Verdict::Fail,
                format!("TLS set-up: {e:#}"),
                None,
            ));
            return out;
        }
    };
    let connector = tokio_rustls::TlsConnector::from(tls_cfg);
    let limits = Limits::default();
    if cand.is_direct_tls() {
        match connector.connect(server_name, tcp).await {
            Ok(mut tls) => {
                out.push(cert_step(
                    &name,
                    domain,
                    &slot,
                    tls.get_ref().1.peer_certificates(),
                ));
                out.extend(
                    features_step(&name, &mut tls, &header, limits, true)
                        .await
                        .1,
                );
            }
            Err(e) => out.push(step(
                format!("{name} TLS"),
                Verdict::Fail,
                e.to_string(),
                Some("the server must speak TLS on this port (XEP-0368)"),
            )),
        }
        return out;
    }
    let mut tcp = tcp;
    let (features, steps) = features_step(&name, &mut tcp, &header, limits, false).await;
    out.extend(steps);
    let Some(f) = features else { return out };
    if f.find("starttls", "urn:ietf:params:xml:ns:xmpp-tls")
        .is_none()
    {
        out.push(step(
            format!("{name} STARTTLS"),
            Verdict::Warn,
            "not offered",
            Some("Entente requires TLS unless [[s2s.peer]] tls = \"never\" is set for this domain"),
        ));
        return out;
    }
    if let Err(e) = tcp
        .write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await
    {
        out.push(step(
            format!("{name} STARTTLS"),
            Verdict::Fail,
            e.to_string(),
            None,
        ));
        return out;
    }
    let mut xml = XmlStream::new(limits);
    // The stream header was consumed by the earlier parser; a fresh one sees only children.
    let _ = xml.feed(
        b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
        &mut Vec::new(),
    );
    match read_until(&mut tcp, &mut xml, |e| matches!(e, StreamEvent::Stanza(_))).await {
        Ok(evs)
            if evs
                .iter()
                .any(|e| matches!(e, StreamEvent::Stanza(el) if el.name == "proceed")) => {}
        Ok(_) | Err(_) => {
            out.push(step(
                format!("{name} STARTTLS"),
                Verdict::Fail,
                "the server refused STARTTLS",
                None,
            ));
            return out;
        }
    }
    match connector.connect(server_name, tcp).await {
        Ok(mut tls) => {
            out.push(cert_step(&name, domain, &slot, tls.get_ref().1.peer_certificates()));
            let (_, steps) = features_step(&name, &mut tls, &header, limits, true).await;
            out.extend(steps);
        }
        Err(e) => out.push(step(format!("{name} TLS"), Verdict::Fail, e.to_string(), Some("the TLS handshake failed: protocol versions, ciphers or a broken certificate chain"))),
    }
    out
}

async fn features_step<S: AsyncRead + AsyncWrite + Unpin>(
    name: &str,
    io: &mut S,
    header: &str,
    limits: Limits,
    after_tls: bool,
) -> (Option<Element>, Vec<Step>) {
    let label = if after_tls {
        "features after TLS"
    } else {
        "stream features"
    };
    if let Err(e) = io.write_all(header.as_bytes()).await {
        return (
            None,
            vec![step(
                format!("{name} stream"),
                Verdict::Fail,
                e.to_string(),
                None,
            )],
        );
    }
    let mut xml = XmlStream::new(limits);
    let evs = match read_until(
        io,
        &mut xml,
        |e| matches!(e, StreamEvent::Stanza(el) if el.name == "features" || el.name == "error"),
    )
    .await
    {
        Ok(evs) => evs,
        Err(e) => {
            return (
                None,
                vec![step(format!("{name} stream"), Verdict::Fail, e, None)],
            )
        }
    };
    if let Some(t) = stream_error_text(&evs) {
        return (None, vec![step(format!("{name} stream"), Verdict::Fail, format!("stream error: {t}"), Some("the peer refused our stream; its logs say why (often: our domain is not permitted there)"))]);
    }
    let features = evs.into_iter().find_map(|e| match e {
        StreamEvent::Stanza(el) if el.name == "features" => Some(el),
        _ => None,
    });
    let Some(f) = features else {
        return (
            None,
            vec![step(
                format!("{name} {label}"),
                Verdict::Fail,
                "none received",
                None,
            )],
        );
    };
    let summary = features_summary(&f);
    let mut verdict = Verdict::Ok;
    let mut fix = None;
    if after_tls
        && f.find("dialback", "urn:xmpp:features:dialback").is_none()
        && !summary.contains("EXTERNAL")
    {
        verdict = Verdict::Warn;
        fix = Some("the peer offers neither SASL EXTERNAL nor dialback to us: it may require a certificate it trusts");
    }
    (
        Some(f),
        vec![step(format!("{name} {label}"), verdict, summary, fix)],
    )
}

fn cert_step(
    name: &str,
    domain: &str,
    slot: &Arc<std::sync::Mutex<Option<bool>>>,
    certs: Option<&[CertificateDer<'static>]>,
) -> Step {
    let valid = slot.lock().map(|g| *g == Some(true)).unwrap_or(false);
    let Some(ee) = certs.and_then(|c| c.first()) else {
        return step(
            format!("{name} certificate"),
            Verdict::Fail,
            "no certificate",
            None,
        );
    };
    let names: Vec<String> = webpki::EndEntityCert::try_from(ee)
        .map(|c| c.valid_dns_names().map(str::to_string).collect())
        .unwrap_or_default();
    let expiry = x509_parser::parse_x509_certificate(ee.as_ref())
        .ok()
        .map(|(_, c)| c.validity().not_after.timestamp());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = expiry.map(|t| (t - now) / 86_400);
    let mut detail = format!(
        "names: {}",
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    );
    if let Some(d) = days {
        detail.push_str(&format!("; expires in {d} days"));
    }
    if valid {
        if days.is_some_and(|d| d < 14) {
            return step(
                format!("{name} certificate"),
                Verdict::Warn,
                detail,
                Some("the certificate expires soon"),
            );
        }
        step(
            format!("{name} certificate"),
            Verdict::Ok,
            format!("valid for {domain}; {detail}"),
            None,
        )
    } else {
        step(
            format!("{name} certificate"),
            Verdict::Warn,
            format!("NOT valid for {domain} with our trust anchors; {detail}"),
            Some("the peer will be authenticated by dialback only; for certificate authentication it needs a certificate from a CA you trust (s2s.ca_file) naming the domain"),
        )
    }
}

async fn check_sip(
    cfg: &Config,
    locator: &Locator,
    roots: &Arc<rustls::RootCertStore>,
    domain: &str,
    transports: &[Transport],
) -> Vec<Step> {
    let mut out = Vec::new();
    let cands = match locator.sip_server(domain, transports).await {
        Ok(c) => {
            let list: Vec<String> = c.iter().map(|c| c.to_string()).collect();
            out.push(step(
                "SIP DNS",
                Verdict::Ok,
                format!("{} candidate(s): {}", c.len(), list.join(", ")),
                None,
            ));
            c
        }
        Err(e) => {
            out.push(step(
                "SIP DNS",
                Verdict::Fail,
                e.to_string(),
                Some("the domain must publish _sipfederationtls._tcp (or _sips._tcp) SRV records"),
            ));
            return out;
        }
    };
    let Some(cand) = cands.first() else {
        return out;
    };
    let Some(addr) = cand.addrs.first() else {
        return out;
    };
    let name = format!("SIP {cand} ({addr})");
    let tcp = match tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            out.push(step(
                format!("{name} TCP"),
                Verdict::Fail,
                e.to_string(),
                Some("check the firewall and that the SIP server listens"),
            ));
            return out;
        }
        Err(_) => {
            out.push(step(
                format!("{name} TCP"),
                Verdict::Fail,
                "no answer",
                Some("a firewall drops the connection"),
            ));
            return out;
        }
    };
    out.push(step(format!("{name} TCP"), Verdict::Ok, "connected", None));
    let local = tcp.local_addr().ok();
    let options = |transport: &str| {
        let branch = format!("z9hG4bK{}", entente_xmpp_proto::c2s::new_id());
        let via = local
            .map(|a| a.to_string())
            .unwrap_or_else(|| cfg.domain.clone());
        format!(
            "OPTIONS sip:{domain} SIP/2.0\r\nVia: SIP/2.0/{transport} {via};branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:check@{ours}>;tag={tag}\r\nTo: <sip:{domain}>\r\nCall-ID: {cid}@{ours}\r\nCSeq: 1 OPTIONS\r\nAccept: application/pidf+xml\r\nContent-Length: 0\r\n\r\n",
            ours = cfg.domain,
            tag = entente_xmpp_proto::c2s::new_id(),
            cid = entente_xmpp_proto::c2s::new_id(),
        )
    };
    if cand.transport == Transport::Tls {
        let id = match our_identity(cfg) {
            Ok(i) => i,
            Err(e) => {
                out.push(step(
                    &name,
                    Verdict::Fail,
                    format!("our own certificate: {e:#}"),
                    None,
                ));
                return out;
            }
        };
        let Ok((tls_cfg, slot)) = crate::tls::s2s_client_config(roots, &id, false) else {
            return out;
        };
        let Ok(sn) = ServerName::try_from(domain.to_string()) else {
            return out;
        };
        match tokio::time::timeout(
            STEP_TIMEOUT,
            tokio_rustls::TlsConnector::from(tls_cfg).connect(sn, tcp),
        )
        .await
        {
            Ok(Ok(mut tls)) => {
                out.push(cert_step(
                    &name,
                    domain,
                    &slot,
                    tls.get_ref().1.peer_certificates(),
                ));
                out.push(sip_options_step(&name, &mut tls, options("TLS")).await);
            }
            Ok(Err(e)) => out.push(step(
                format!("{name} TLS"),
                Verdict::Fail,
                e.to_string(),
                Some("SIP federation needs TLS (and mutual TLS for Lync/OCS/AOL peers)"),
            )),
            Err(_) => out.push(step(
                format!("{name} TLS"),
                Verdict::Fail,
                "handshake timed out",
                None,
            )),
        }
    } else {
        let mut tcp = tcp;
        out.push(sip_options_step(&name, &mut tcp, options("TCP")).await);
    }
    out
}

async fn sip_options_step<S: AsyncRead + AsyncWrite + Unpin>(
    name: &str,
    io: &mut S,
    req: String,
) -> Step {
    if let Err(e) = io.write_all(req.as_bytes()).await {
        return step(
            format!("{name} OPTIONS"),
            Verdict::Fail,
            e.to_string(),
            None,
        );
    }
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 4096];
    let read = tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            let n = io.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    let text = String::from_utf8_lossy(&buf);
    let status = text.lines().next().unwrap_or("").to_string();
    match read {
        Ok(Ok(())) if status.starts_with("SIP/2.0 ") => {
            let code: u16 = status.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0);
            if (200..300).contains(&code) {
                step(format!("{name} OPTIONS"), Verdict::Ok, status, None)
            } else {
                step(
                    format!("{name} OPTIONS"),
                    Verdict::Warn,
                    status,
                    Some("the peer answered, but refused our OPTIONS: our domain may not be permitted there"),
                )
            }
        }
        Ok(Ok(())) => step(
            format!("{name} OPTIONS"),
            Verdict::Fail,
            "no SIP response",
            None,
        ),
        Ok(Err(e)) => step(
            format!("{name} OPTIONS"),
            Verdict::Fail,
            e.to_string(),
            None,
        ),
        Err(_) => step(format!("{name} OPTIONS"), Verdict::Fail, "no answer", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(toml: &str) -> FederationView {
        FederationView::from_config(&Config::parse(toml).unwrap())
    }

    #[test]
    fn settings_steps_follow_the_view() {
        let v = view(
            r#"
[s2s]
policy = "allowlist"
domains = ["a.test"]
[[s2s.peer]]
domain = "a.test"
tls = "never"
routes = ["127.0.0.1:5269"]
[sip]
[[sip.peer]]
domain = "s.test"
transport = "tcp"
source_addrs = ["127.0.0.1"]
routes = ["tcp://127.0.0.1:5060"]
"#,
        );
        let a = xmpp_settings_steps(&v, "A.test.");
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].verdict, Verdict::Ok);
        assert!(
            a[0].detail
                .contains("from the configuration file: tls never, routes [127.0.0.1:5269]"),
            "{}",
            a[0].detail
        );
        let b = xmpp_settings_steps(&v, "b.test");
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(b[0].detail.starts_with("no [[s2s.peer]] entry"));
        assert_eq!(b[1].verdict, Verdict::Warn);
        assert!(b[1].detail.contains("allowlist"), "{}", b[1].detail);
        let s = sip_settings_step(&v, "s.test");
        assert_eq!(s.verdict, Verdict::Ok);
        assert!(s.detail.contains("transport tcp"), "{}", s.detail);
        assert_eq!(sip_settings_step(&v, "a.test").verdict, Verdict::Warn);
    }
}
