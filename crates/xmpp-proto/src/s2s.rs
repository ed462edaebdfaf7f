//! Server-to-server streams (RFC 6120), authenticated by SASL EXTERNAL over TLS or by Server
//! Dialback (XEP-0220, keys per XEP-0185).
//!
//! [`S2sOut`] is the initiating side of one stream from a local domain to a remote domain;
//! [`S2sIn`] the receiving side. Like [`crate::c2s::C2sStream`], both take bytes in and hand bytes
//! and events out; TLS handshakes, certificate checks and the dialback verification round-trip
//! are the driver's, requested through events.
//!
//! Security rules enforced here (RFC 6120 §13.x, XEP-0220 §4):
//! - a stanza on an inbound stream must carry `from` and `to`; its `from` domain must be one this
//!   stream authenticated (else `invalid-from`), its `to` one of ours (else `host-unknown`);
//! - TLS is required unless the driver allowed plain TCP for that peer domain;
//! - SASL EXTERNAL is accepted only for a domain the peer's certificate is valid for.

use std::collections::{HashSet, VecDeque};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::c2s::{new_id, NS_SASL, NS_TLS};
use crate::element::{escape, Element, NS_SERVER};
use crate::framer::{Limits, StreamEvent, XmlStream};
use crate::StreamErrorCondition;

pub const NS_DIALBACK: &str = "jabber:server:dialback";
pub const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";

/// Whether a peer domain must, may or must not use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    Required,
    Optional,
    Never,
}

/// How a stream was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    SaslExternal,
    Dialback,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::SaslExternal => "sasl-external",
            AuthMethod::Dialback => "dialback",
        }
    }
}

/// The dialback key of XEP-0185 §3:
/// `HMAC-SHA256(hex(SHA256(secret)), receiving + " " + originating + " " + stream_id)`, hex.
pub fn dialback_key(secret: &str, receiving: &str, originating: &str, stream_id: &str) -> String {
    let k = hex(&Sha256::digest(secret.as_bytes()));
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(k.as_bytes())
        .unwrap_or_else(|_| panic!("HMAC accepts keys of any length"));
    mac.update(format!("{receiving} {originating} {stream_id}").as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn header(from: &str, to: &str, id: Option<&str>) -> String {
    let mut h = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='{}' to='{}' version='1.0'",
        escape(from),
        escape(to)
    );
    if let Some(id) = id {
        h.push_str(&format!(" id='{}'", escape(id)));
    }
    h.push('>');
    h
}

// ---------------------------------------------------------------------------------------------
// Outbound
// ---------------------------------------------------------------------------------------------

/// What an outbound stream is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// Carry stanzas from `local` to `remote`.
    Traffic,
    /// Ask `remote`'s authoritative server whether `key` is valid for the inbound stream
    /// `stream_id` on which `remote` claimed to be itself (XEP-0220 §2.3).
    Verify { key: String, stream_id: String },
}

#[derive(Debug, Clone)]
pub struct S2sOutConfig {
    pub local: String,
    pub remote: String,
    pub tls: TlsPolicy,
    /// The connection is already TLS (XEP-0368 direct TLS).
    pub direct_tls: bool,
    /// We have a certificate to present, so SASL EXTERNAL may be tried.
    pub has_client_cert: bool,
    /// Our dialback secret.
    pub secret: String,
    pub purpose: Purpose,
    pub limits: Limits,
}

/// Events from an outbound stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum S2sOutEvent {
    /// Write pending output, run the TLS client handshake (checking the certificate for
    /// `remote`), then call [`S2sOut::tls_established`].
    StartTls,
    /// The stream is authenticated; stanzas may be sent.
    Ready(AuthMethod),
    /// The answer to a [`Purpose::Verify`] stream.
    Verified { valid: bool },
    /// The stream is over. `reason` says why when it failed.
    Closed { reason: Option<String> },
}

enum OutState {
    Header,
    Features,
    Proceed,
    TlsPending,
    Sasl,
    Dialback,
    Verify,
    Ready,
    Closed,
}

/// The initiating side of a server-to-server stream.
pub struct S2sOut {
    cfg: S2sOutConfig,
    state: OutState,
    xml: XmlStream,
    out: Vec<u8>,
    events: VecDeque<S2sOutEvent>,
    tls: bool,
    cert_ok: bool,
    stream_id: Option<String>,
    authenticated: bool,
    tried_sasl: bool,
}

impl S2sOut {
    /// Starts the stream: the header is ready to be written.
    pub fn new(cfg: S2sOutConfig) -> S2sOut {
        let tls = cfg.direct_tls;
        let mut s = S2sOut {
            xml: XmlStream::new(cfg.limits),
            cfg,
            state: OutState::Header,
            out: Vec::new(),
            events: VecDeque::new(),
            tls,
            cert_ok: false,
            stream_id: None,
            authenticated: false,
            tried_sasl: false,
        };
        s.send_header();
        s
    }

    /// For a direct-TLS connection: whether the peer's certificate is valid for `remote`.
    pub fn set_cert_ok(&mut self, ok: bool) {
        self.cert_ok = ok;
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    pub fn poll_event(&mut self) -> Option<S2sOutEvent> {
        self.events.pop_front()
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.state, OutState::Ready)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, OutState::Closed)
    }

    pub fn receive(&mut self, data: &[u8]) {
        if self.is_closed() {
            return;
        }
        let mut evs = Vec::new();
        let res = self.xml.feed(data, &mut evs);
        for ev in evs {
            if self.is_closed() {
                return;
            }
            match ev {
                StreamEvent::Header(h) => self.on_header(h),
                StreamEvent::Stanza(el) => self.on_element(el),
                StreamEvent::End => {
                    self.out.extend_from_slice(b"</stream:stream>");
                    self.fail("the peer closed the stream".to_string());
                }
            }
        }
        if let Err(e) = res {
            if !self.is_closed() {
                self.out
                    .extend_from_slice(e.condition().to_xml(Some(&e.to_string())).as_bytes());
                self.fail(format!("the peer sent bad XML: {e}"));
            }
        }
    }

    /// The connection ended.
    pub fn eof(&mut self) {
        if !self.is_closed() {
            self.fail("the connection was closed".to_string());
        }
    }

    /// The TLS handshake finished; `cert_ok` tells whether the peer's certificate is valid for
    /// the remote domain.
    pub fn tls_established(&mut self, cert_ok: bool) {
        self.tls = true;
        self.cert_ok = cert_ok;
        self.restart();
    }

    /// Queues a stanza (only once ready).
    pub fn send_stanza(&mut self, el: &Element) -> bool {
        if !self.is_ready() {
            return false;
        }
        self.out
            .extend_from_slice(el.to_stream_string(NS_SERVER).as_bytes());
        true
    }

    /// Closes the stream cleanly.
    pub fn close(&mut self) {
        if !self.is_closed() {
            self.out.extend_from_slice(b"</stream:stream>");
            self.state = OutState::Closed;
            self.events.push_back(S2sOutEvent::Closed { reason: None });
        }
    }

    fn send_header(&mut self) {
        let h = header(&self.cfg.local, &self.cfg.remote, None);
        self.out.extend_from_slice(h.as_bytes());
    }

    fn restart(&mut self) {
        self.xml = XmlStream::new(self.cfg.limits);
        self.stream_id = None;
        self.state = OutState::Header;
        self.send_header();
    }

    fn fail(&mut self, reason: String) {
        self.state = OutState::Closed;
        self.events.push_back(S2sOutEvent::Closed {
            reason: Some(reason),
        });
    }

    fn error_close(&mut self, cond: StreamErrorCondition, reason: String) {
        self.out.extend_from_slice(cond.to_xml(None).as_bytes());
        self.fail(reason);
    }

    fn on_header(&mut self, h: Element) {
        self.stream_id = h.get_attr("id").map(str::to_string);
        let has_version = h.get_attr("version").is_some();
        self.state = OutState::Features;
        if !has_version {
            // A pre-XMPP-1.0 peer (the seed's GoogleTalk case) sends no features: go straight
            // to dialback, which only a plain-TCP-allowed domain gets to.
            if self.cfg.tls == TlsPolicy::Required && !self.tls {
                return self.error_close(
                    StreamErrorCondition::PolicyViolation,
                    format!(
                        "TLS is required for {} but the peer does not support XMPP 1.0 streams",
                        self.cfg.remote
                    ),
                );
            }
            self.after_features(None);
        }
    }

    fn on_element(&mut self, el: Element) {
        if el.is("error", crate::framer::NS_STREAM) {
            let cond = el
                .elements()
                .find(|c| c.ns == "urn:ietf:params:xml:ns:xmpp-streams" && c.name != "text")
                .map(|c| c.name.clone())
                .unwrap_or_else(|| "undefined-condition".into());
            let text = el
                .elements()
                .find(|c| c.name == "text")
                .map(|t| format!(" ({})", t.text_content()))
                .unwrap_or_default();
            self.out.extend_from_slice(b"</stream:stream>");
            return self.fail(format!(
                "{} sent the stream error {cond}{text}",
                self.cfg.remote
            ));
        }
        match self.state {
            OutState::Features => {
                if el.is("features", crate::framer::NS_STREAM) {
                    self.after_features(Some(el));
                }
            }
            OutState::Proceed => {
                if el.is("proceed", NS_TLS) {
                    self.state = OutState::TlsPending;
                    self.events.push_back(S2sOutEvent::StartTls);
                } else {
                    self.out.extend_from_slice(b"</stream:stream>");
                    self.fail(format!("{} refused STARTTLS", self.cfg.remote));
                }
            }
            OutState::Sasl => {
                if el.is("success", NS_SASL) {
                    self.authenticated = true;
                    self.restart();
                } else if el.is("failure", NS_SASL) {
                    // Fall back to dialback on the same stream (XEP-0220 §2.1 allows it after a
                    // SASL failure).
                    self.state = OutState::Features;
                    self.start_dialback();
                }
            }
            OutState::Dialback => {
                if el.is("result", NS_DIALBACK) {
                    match el.get_attr("type") {
                        Some("valid") => {
                            self.state = OutState::Ready;
                            self.events
                                .push_back(S2sOutEvent::Ready(AuthMethod::Dialback));
                        }
                        Some("invalid") | Some("error") => {
                            self.out.extend_from_slice(b"</stream:stream>");
                            self.fail(format!(
                                "{} did not accept our dialback key",
                                self.cfg.remote
                            ));
                        }
                        _ => {}
                    }
                }
            }
            OutState::Verify => {
                if el.is("verify", NS_DIALBACK) {
                    let valid = el.get_attr("type") == Some("valid");
                    self.events.push_back(S2sOutEvent::Verified { valid });
                    self.close();
                }
            }
            OutState::Ready => {
                // Answers for other domains on a multiplexed stream, and the like: nothing to do.
            }
            OutState::Header | OutState::TlsPending | OutState::Closed => {}
        }
    }

    fn after_features(&mut self, features: Option<Element>) {
        let f = features.as_ref();
        let starttls = f.and_then(|f| f.find("starttls", NS_TLS)).is_some();
        if self.authenticated {
            self.state = OutState::Ready;
            self.events
                .push_back(S2sOutEvent::Ready(AuthMethod::SaslExternal));
            return;
        }
        if !self.tls {
            if starttls && self.cfg.tls != TlsPolicy::Never {
                self.out
                    .extend_from_slice(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
                self.state = OutState::Proceed;
                return;
            }
            if self.cfg.tls == TlsPolicy::Required {
                return self.error_close(
                    StreamErrorCondition::PolicyViolation,
                    format!(
                        "TLS is required for {} but it does not offer STARTTLS",
                        self.cfg.remote
                    ),
                );
            }
        }
        if let Purpose::Verify { key, stream_id } = &self.cfg.purpose {
            let v = format!(
                "<db:verify from='{}' to='{}' id='{}'>{}</db:verify>",
                escape(&self.cfg.local),
                escape(&self.cfg.remote),
                escape(stream_id),
                escape(key)
            );
            self.out.extend_from_slice(v.as_bytes());
            self.state = OutState::Verify;
            return;
        }
        let external = f
            .and_then(|f| f.find("mechanisms", NS_SASL))
            .map(|m| m.elements().any(|x| x.text_content().trim() == "EXTERNAL"))
            .unwrap_or(false);
        if self.tls && self.cert_ok && external && self.cfg.has_client_cert && !self.tried_sasl {
            self.tried_sasl = true;
            let authzid = B64.encode(self.cfg.local.as_bytes());
            self.out.extend_from_slice(
                format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{authzid}</auth>").as_bytes(),
            );
            self.state = OutState::Sasl;
            return;
        }
        self.start_dialback();
    }

    fn start_dialback(&mut self) {
        let Some(id) = self.stream_id.clone() else {
            return self.error_close(
                StreamErrorCondition::InvalidNamespace,
                format!(
                    "{} sent no stream id, so dialback is impossible",
                    self.cfg.remote
                ),
            );
        };
        let key = dialback_key(&self.cfg.secret, &self.cfg.remote, &self.cfg.local, &id);
        self.out.extend_from_slice(
            format!(
                "<db:result from='{}' to='{}'>{}</db:result>",
                escape(&self.cfg.local),
                escape(&self.cfg.remote),
                key
            )
            .as_bytes(),
        );
        self.state = OutState::Dialback;
    }
}

// ---------------------------------------------------------------------------------------------
// Inbound
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct S2sInConfig {
    /// Our domains.
    pub local_domains: Vec<String>,
    /// A certificate is available, so STARTTLS is offered.
    pub tls_available: bool,
    /// Peer domains allowed to stay on plain TCP (their policy is `never` or `optional`).
    pub plain_allowed: HashSet<String>,
    /// The connection is already TLS (direct-TLS port).
    pub direct_tls: bool,
    pub secret: String,
    pub limits: Limits,
}

/// Events from an inbound stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum S2sInEvent {
    /// Write pending output, run the TLS server handshake (asking for a client certificate),
    /// then call [`S2sIn::tls_established`].
    StartTls,
    /// The peer claims `originating` with a dialback key: verify it with that domain's
    /// authoritative server and call [`S2sIn::dialback_verified`].
    DialbackVerify {
        originating: String,
        receiving: String,
        key: String,
        stream_id: String,
    },
    /// A domain was authenticated on this stream.
    Authenticated {
        domain: String,
        method: AuthMethod,
    },
    /// A stanza whose addresses passed the checks.
    Stanza(Element),
    Closed {
        error: Option<StreamErrorCondition>,
    },
}

enum InState {
    Header,
    Open,
    TlsPending,
    Closed,
}

/// The receiving side of a server-to-server stream.
pub struct S2sIn {
    cfg: S2sInConfig,
    state: InState,
    xml: XmlStream,
    out: Vec<u8>,
    events: VecDeque<S2sInEvent>,
    tls: bool,
    /// Names the peer's client certificate is valid for.
    cert_names: Vec<String>,
    stream_id: String,
    local: Option<String>,
    peer_claim: Option<String>,
    /// Domains authenticated on this stream.
    authenticated: HashSet<String>,
    sasl_done: bool,
    /// The peer ended the stream with `</stream:stream>` (as opposed to a broken connection).
    peer_closed: bool,
    /// We sent `</stream:stream>` ([`S2sIn::close`]) and wait for the peer's: the output up to
    /// this length is what remains to be written, nothing after it ever is.
    closing_at: Option<usize>,
}

impl S2sIn {
    pub fn new(cfg: S2sInConfig) -> S2sIn {
        S2sIn {
            xml: XmlStream::new(cfg.limits),
            tls: cfg.direct_tls,
            cfg,
            state: InState::Header,
            out: Vec::new(),
            events: VecDeque::new(),
            cert_names: Vec::new(),
            stream_id: new_id(),
            local: None,
            peer_claim: None,
            authenticated: HashSet::new(),
            sasl_done: false,
            peer_closed: false,
            closing_at: None,
        }
    }

    /// For a direct-TLS connection: the names the client certificate is valid for.
    pub fn set_cert_names(&mut self, names: Vec<String>) {
        self.cert_names = names;
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        if let Some(n) = self.closing_at {
            // After our closing tag nothing may be sent (RFC 6120 §4.4).
            out.truncate(n);
            self.closing_at = Some(0);
        }
        out
    }

    pub fn poll_event(&mut self) -> Option<S2sInEvent> {
        self.events.pop_front()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, InState::Closed)
    }

    /// Whether [`S2sIn::close`] was called and the peer has not closed its side yet.
    pub fn is_closing(&self) -> bool {
        self.closing_at.is_some() && !self.is_closed()
    }

    /// Ends the stream gracefully (RFC 6120 §4.4): writes `</stream:stream>` and sends nothing
    /// more, but goes on processing what the peer sends (stanzas already on their way still
    /// come out as events) until the peer closes its stream too. The driver should give the
    /// peer a few seconds, then drop the connection.
    pub fn close(&mut self) {
        if self.is_closed() || self.closing_at.is_some() {
            return;
        }
        if !matches!(self.state, InState::Open) {
            // Nothing was negotiated: just end.
            self.ensure_header();
            self.out.extend_from_slice(b"</stream:stream>");
            self.state = InState::Closed;
            self.events.push_back(S2sInEvent::Closed { error: None });
            return;
        }
        self.out.extend_from_slice(b"</stream:stream>");
        self.closing_at = Some(self.out.len());
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The domain the peer named in its stream header, if any.
    pub fn peer_claim(&self) -> Option<&str> {
        self.peer_claim.as_deref()
    }

    /// Whether the peer closed the stream itself (`</stream:stream>`), rather than the
    /// connection breaking.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    pub fn authenticated_domains(&self) -> impl Iterator<Item = &String> {
        self.authenticated.iter()
    }

    pub fn receive(&mut self, data: &[u8]) {
        if self.is_closed() {
            return;
        }
        let mut evs = Vec::new();
        let res = self.xml.feed(data, &mut evs);
        for ev in evs {
            if self.is_closed() {
                return;
            }
            match ev {
                StreamEvent::Header(h) => self.on_header(h),
                StreamEvent::Stanza(el) => self.on_element(el),
                StreamEvent::End => {
                    self.ensure_header();
                    self.out.extend_from_slice(b"</stream:stream>");
                    self.state = InState::Closed;
                    self.peer_closed = true;
                    self.events.push_back(S2sInEvent::Closed { error: None });
                }
            }
        }
        if let Err(e) = res {
            if !self.is_closed() {
                self.stream_error(e.condition(), Some(&e.to_string()));
            }
        }
    }

    pub fn eof(&mut self) {
        if !self.is_closed() {
            self.state = InState::Closed;
            self.events.push_back(S2sInEvent::Closed { error: None });
        }
    }

    /// TLS is up; `cert_names` are the names the peer's client certificate is valid for (empty
    /// when it sent none or it did not verify).
    pub fn tls_established(&mut self, cert_names: Vec<String>) {
        self.tls = true;
        self.cert_names = cert_names;
        self.restart();
    }

    /// The answer to [`S2sInEvent::DialbackVerify`].
    pub fn dialback_verified(&mut self, originating: &str, receiving: &str, valid: bool) {
        if self.is_closed() {
            return;
        }
        let t = if valid { "valid" } else { "invalid" };
        self.out.extend_from_slice(
            format!(
                "<db:result from='{}' to='{}' type='{t}'/>",
                escape(receiving),
                escape(originating)
            )
            .as_bytes(),
        );
        if valid {
            self.authenticated.insert(originating.to_string());
            self.events.push_back(S2sInEvent::Authenticated {
                domain: originating.to_string(),
                method: AuthMethod::Dialback,
            });
        }
    }

    /// Ends the stream with an error.
    pub fn close_with_error(&mut self, cond: StreamErrorCondition, text: Option<&str>) {
        if !self.is_closed() {
            self.stream_error(cond, text);
        }
    }

    fn header_sent(&self) -> bool {
        self.local.is_some()
    }

    fn ensure_header(&mut self) {
        if !self.header_sent() {
            let from = self.cfg.local_domains.first().cloned().unwrap_or_default();
            self.write_header(&from, "");
        }
    }

    fn write_header(&mut self, from: &str, to: &str) {
        let mut h = header(from, to, Some(&self.stream_id));
        if to.is_empty() {
            h = h.replace(" to=''", "");
        }
        self.out.extend_from_slice(h.as_bytes());
        self.local = Some(from.to_string());
    }

    fn restart(&mut self) {
        self.xml = XmlStream::new(self.cfg.limits);
        self.stream_id = new_id();
        self.local = None;
        self.state = InState::Header;
    }

    fn stream_error(&mut self, cond: StreamErrorCondition, text: Option<&str>) {
        self.ensure_header();
        self.out.extend_from_slice(cond.to_xml(text).as_bytes());
        self.state = InState::Closed;
        self.events
            .push_back(S2sInEvent::Closed { error: Some(cond) });
    }

    fn tls_needed(&self) -> bool {
        !self.tls
            && !self
                .peer_claim
                .as_ref()
                .is_some_and(|d| self.cfg.plain_allowed.contains(d))
    }

    fn on_header(&mut self, h: Element) {
        let to = h
            .get_attr("to")
            .map(|t| t.trim_end_matches('.').to_ascii_lowercase());
        let from = h
            .get_attr("from")
            .map(|t| t.trim_end_matches('.').to_ascii_lowercase());
        if from.is_some() {
            self.peer_claim = from.clone();
        }
        let local = match to {
            Some(t) if self.cfg.local_domains.contains(&t) => t,
            Some(_) => {
                self.stream_error(
                    StreamErrorCondition::HostUnknown,
                    Some("this server does not serve that domain"),
                );
                return;
            }
            None => match self.cfg.local_domains.first() {
                Some(d) => d.clone(),
                None => return self.stream_error(StreamErrorCondition::HostUnknown, None),
            },
        };
        self.write_header(&local, from.as_deref().unwrap_or(""));
        self.state = InState::Open;
        if h.get_attr("version").is_none() {
            // Pre-1.0 peer: no features; dialback only, and only where plain TCP is allowed.
            if self.tls_needed() {
                self.stream_error(
                    StreamErrorCondition::PolicyViolation,
                    Some("TLS is required"),
                );
            }
            return;
        }
        let mut f = String::from("<stream:features>");
        if !self.tls && self.cfg.tls_available {
            f.push_str("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>");
            if self.tls_needed() {
                f.push_str("<required/>");
            }
            f.push_str("</starttls>");
        }
        if !self.tls_needed() {
            if self.tls && !self.sasl_done && !self.cert_names.is_empty() {
                f.push_str("<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms>");
            }
            f.push_str("<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>");
        }
        f.push_str("</stream:features>");
        self.out.extend_from_slice(f.as_bytes());
    }

    fn on_element(&mut self, el: Element) {
        if !matches!(self.state, InState::Open) {
            if matches!(self.state, InState::TlsPending) {
                self.stream_error(
                    StreamErrorCondition::PolicyViolation,
                    Some("data during the TLS negotiation"),
                );
            }
            return;
        }
        if el.is("starttls", NS_TLS) {
            if self.tls || !self.cfg.tls_available {
                self.out.extend_from_slice(
                    b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>",
                );
                self.state = InState::Closed;
                self.events.push_back(S2sInEvent::Closed { error: None });
                return;
            }
            self.out
                .extend_from_slice(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
            self.state = InState::TlsPending;
            self.events.push_back(S2sInEvent::StartTls);
            return;
        }
        if el.is("verify", NS_DIALBACK) {
            // The peer checks a key one of our outbound streams sent (XEP-0220 §2.4). This is
            // answered without authentication, but over TLS unless plain TCP is allowed.
            if self.tls_needed() {
                return self.stream_error(
                    StreamErrorCondition::PolicyViolation,
                    Some("STARTTLS first"),
                );
            }
            return self.answer_verify(&el);
        }
        if self.tls_needed() {
            return self.stream_error(
                StreamErrorCondition::PolicyViolation,
                Some("STARTTLS is required"),
            );
        }
        if el.is("auth", NS_SASL) {
            return self.sasl_external(&el);
        }
        if el.is("result", NS_DIALBACK) {
            let (Some(from), Some(to)) = (el.get_attr("from"), el.get_attr("to")) else {
                return self.stream_error(
                    StreamErrorCondition::ImproperAddressing,
                    Some("db:result needs from and to"),
                );
            };
            let from = from.to_ascii_lowercase();
            let to = to.to_ascii_lowercase();
            if !self.tls && !self.cfg.plain_allowed.contains(&from) {
                // The header's `from` got this stream past STARTTLS; a domain that must use TLS
                // cannot piggyback on it (a downgrade).
                return self.stream_error(
                    StreamErrorCondition::PolicyViolation,
                    Some("TLS is required for that domain"),
                );
            }
            if !self.cfg.local_domains.contains(&to) {
                // XEP-0220 §2.4.1 errors: an unknown receiving domain.
                self.out.extend_from_slice(
                    format!(
                        "<db:result from='{}' to='{}' type='error'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>",
                        escape(&to),
                        escape(&from)
                    )
                    .as_bytes(),
                );
                return;
            }
            if entente_model::jid::Jid::domain_only(&from).is_err() {
                return self.stream_error(
                    StreamErrorCondition::ImproperAddressing,
                    Some("bad domain in db:result"),
                );
            }
            let key = el.text_content().trim().to_string();
            self.events.push_back(S2sInEvent::DialbackVerify {
                originating: from,
                receiving: to,
                key,
                stream_id: self.stream_id.clone(),
            });
            return;
        }
        if el.ns != NS_SERVER {
            return self.stream_error(StreamErrorCondition::InvalidNamespace, None);
        }
        if !matches!(el.name.as_str(), "message" | "presence" | "iq") {
            return self.stream_error(StreamErrorCondition::UnsupportedStanzaType, None);
        }
        self.check_stanza(el);
    }

    fn answer_verify(&mut self, el: &Element) {
        let (Some(from), Some(to), Some(id)) =
            (el.get_attr("from"), el.get_attr("to"), el.get_attr("id"))
        else {
            return self.stream_error(
                StreamErrorCondition::ImproperAddressing,
                Some("db:verify needs from, to and id"),
            );
        };
        let to_l = to.to_ascii_lowercase();
        let from_l = from.to_ascii_lowercase();
        let valid = self.cfg.local_domains.contains(&to_l) && {
            let expect = dialback_key(&self.cfg.secret, &from_l, &to_l, id);
            ct_eq(&expect, el.text_content().trim())
        };
        let t = if valid { "valid" } else { "invalid" };
        self.out.extend_from_slice(
            format!(
                "<db:verify from='{}' to='{}' id='{}' type='{t}'/>",
                escape(to),
                escape(from),
                escape(id)
            )
            .as_bytes(),
        );
    }

    fn sasl_external(&mut self, el: &Element) {
        if el.get_attr("mechanism") != Some("EXTERNAL") || !self.tls || self.sasl_done {
            self.out.extend_from_slice(
                b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><invalid-mechanism/></failure>",
            );
            return;
        }
        let text = el.text_content();
        let text = text.trim();
        let authzid = if text.is_empty() || text == "=" {
            self.peer_claim.clone()
        } else {
            B64.decode(text)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .map(|s| s.to_ascii_lowercase())
        };
        let Some(domain) = authzid else {
            self.out.extend_from_slice(
                b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><malformed-request/></failure>",
            );
            return;
        };
        if !self
            .cert_names
            .iter()
            .any(|n| cert_name_matches(n, &domain))
        {
            self.out.extend_from_slice(
                b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>",
            );
            return;
        }
        self.out
            .extend_from_slice(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        self.sasl_done = true;
        self.authenticated.insert(domain.clone());
        self.events.push_back(S2sInEvent::Authenticated {
            domain,
            method: AuthMethod::SaslExternal,
        });
        let names = std::mem::take(&mut self.cert_names);
        self.restart();
        self.cert_names = names;
        self.tls = true;
    }

    fn check_stanza(&mut self, el: Element) {
        let (Some(from), Some(to)) = (el.get_attr("from"), el.get_attr("to")) else {
            return self.stream_error(
                StreamErrorCondition::ImproperAddressing,
                Some("a stanza needs from and to"),
            );
        };
        let (Ok(from), Ok(to)) = (
            entente_model::jid::Jid::parse(from),
            entente_model::jid::Jid::parse(to),
        ) else {
            return self.stream_error(
                StreamErrorCondition::ImproperAddressing,
                Some("malformed address"),
            );
        };
        if !self.authenticated.contains(from.domain()) {
            return self.stream_error(
                StreamErrorCondition::InvalidFrom,
                Some("that domain is not authenticated on this stream"),
            );
        }
        if !self.cfg.local_domains.iter().any(|d| d == to.domain()) {
            // No relaying between foreign domains.
            return self.stream_error(
                StreamErrorCondition::HostUnknown,
                Some("this server does not serve that domain"),
            );
        }
        self.events.push_back(S2sInEvent::Stanza(el));
    }
}

/// RFC 6125 matching of a certificate DNS name (possibly `*.` wildcard) against a domain.
pub fn cert_name_matches(name: &str, domain: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if let Some(rest) = name.strip_prefix("*.") {
        return domain
            .split_once('.')
            .is_some_and(|(label, parent)| !label.is_empty() && parent == rest);
    }
    name == domain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out_cfg(purpose: Purpose, tls: TlsPolicy) -> S2sOutConfig {
        S2sOutConfig {
            local: "a.test".into(),
            remote: "b.test".into(),
            tls,
            direct_tls: false,
            has_client_cert: true,
            secret: "s3cret".into(),
            purpose,
            limits: Limits::default(),
        }
    }

    fn in_cfg() -> S2sInConfig {
        S2sInConfig {
            local_domains: vec!["b.test".into()],
            tls_available: true,
            plain_allowed: HashSet::new(),
            direct_tls: false,
            secret: "other".into(),
            limits: Limits::default(),
        }
    }

    /// Shuttles bytes between the two sides until neither has output, answering TLS events
    /// as a driver would (TLS is simulated: both sides just restart).
    fn pump(
        o: &mut S2sOut,
        i: &mut S2sIn,
        cert_names: &[&str],
        cert_ok: bool,
    ) -> (Vec<S2sOutEvent>, Vec<S2sInEvent>) {
        let mut oe = Vec::new();
        let mut ie = Vec::new();
        for _ in 0..50 {
            let a = o.take_output();
            let b = i.take_output();
            if a.is_empty() && b.is_empty() {
                break;
            }
            i.receive(&a);
            o.receive(&b);
            while let Some(e) = i.poll_event() {
                if e == S2sInEvent::StartTls {
                    // Deliver the <proceed/> first, then both sides restart.
                    let b = i.take_output();
                    o.receive(&b);
                    while let Some(oev) = o.poll_event() {
                        if oev == S2sOutEvent::StartTls {
                            o.tls_established(cert_ok);
                        } else {
                            oe.push(oev);
                        }
                    }
                    i.tls_established(cert_names.iter().map(|s| s.to_string()).collect());
                } else {
                    ie.push(e);
                }
            }
            while let Some(e) = o.poll_event() {
                oe.push(e);
            }
        }
        (oe, ie)
    }

    #[test]
    fn sasl_external_with_a_valid_certificate() {
        let mut o = S2sOut::new(out_cfg(Purpose::Traffic, TlsPolicy::Required));
        let mut i = S2sIn::new(in_cfg());
        let (oe, ie) = pump(&mut o, &mut i, &["a.test"], true);
        assert!(
            oe.contains(&S2sOutEvent::Ready(AuthMethod::SaslExternal)),
            "{oe:?}"
        );
        assert!(ie.contains(&S2sInEvent::Authenticated {
            domain: "a.test".into(),
            method: AuthMethod::SaslExternal
        }));
        // Stanzas flow and are checked.
        let m = Element::new("message", NS_SERVER)
            .attr("from", "x@a.test")
            .attr("to", "y@b.test");
        assert!(o.send_stanza(&m));
        let bytes = o.take_output();
        i.receive(&bytes);
        assert!(matches!(i.poll_event(), Some(S2sInEvent::Stanza(_))));
    }

    #[test]
    fn graceful_close_of_an_inbound_stream() {
        let mut o = S2sOut::new(out_cfg(Purpose::Traffic, TlsPolicy::Required));
        let mut i = S2sIn::new(in_cfg());
        pump(&mut o, &mut i, &["a.test"], true);
        i.close();
        assert!(i.is_closing() && !i.is_closed());
        let closing = i.take_output();
        assert!(closing.ends_with(b"</stream:stream>"), "{closing:?}");
        // A stanza the peer sent before it saw our closing tag is still processed.
        let m = Element::new("message", NS_SERVER)
            .attr("from", "x@a.test")
            .attr("to", "y@b.test");
        assert!(o.send_stanza(&m));
        let bytes = o.take_output();
        i.receive(&bytes);
        assert!(matches!(i.poll_event(), Some(S2sInEvent::Stanza(_))));
        // Nothing is written after the closing tag, not even an answer to a bad element.
        i.receive(b"<db:verify/>");
        assert!(i.take_output().is_empty());
        // The peer sees the end, closes its side; the stream is over, cleanly.
        o.receive(&closing);
        assert!(o.is_closed());
        let end = o.take_output();
        assert!(end.ends_with(b"</stream:stream>"));
        let mut i = S2sIn::new(in_cfg());
        let mut o = S2sOut::new(out_cfg(Purpose::Traffic, TlsPolicy::Required));
        pump(&mut o, &mut i, &["a.test"], true);
        i.close();
        i.take_output();
        o.close();
        i.receive(&o.take_output());
        assert!(i.is_closed() && i.peer_closed());
        assert_eq!(i.poll_event(), Some(S2sInEvent::Closed { error: None }));
        assert!(i.take_output().is_empty());
    }

    #[test]
    fn dialback_when_the_certificate_does_not_authenticate() {
        let mut o = S2sOut::new(out_cfg(Purpose::Traffic, TlsPolicy::Required));
        let mut i = S2sIn::new(in_cfg());
        let (_, ie) = pump(&mut o, &mut i, &[], false);
        let Some(S2sInEvent::DialbackVerify {
            originating,
            receiving,
            key,
            stream_id,
        }) = ie
            .into_iter()
            .find(|e| matches!(e, S2sInEvent::DialbackVerify { .. }))
        else {
            panic!("no dialback request");
        };
        assert_eq!(
            (originating.as_str(), receiving.as_str()),
            ("a.test", "b.test")
        );
        // b.test's server verifies the key with a.test's authoritative server: a verify stream
        // from b.test to a.test, answered by an inbound stream on a.test holding a.test's secret.
        let mut vo = S2sOut::new(S2sOutConfig {
            local: "b.test".into(),
            remote: "a.test".into(),
            secret: "other".into(),
            ..out_cfg(
                Purpose::Verify {
                    key: key.clone(),
                    stream_id: stream_id.clone(),
                },
                TlsPolicy::Required,
            )
        });
        let mut vi = S2sIn::new(S2sInConfig {
            local_domains: vec!["a.test".into()],
            secret: "s3cret".into(),
            ..in_cfg()
        });
        let (voe, _) = pump(&mut vo, &mut vi, &[], false);
        assert!(
            voe.contains(&S2sOutEvent::Verified { valid: true }),
            "{voe:?}"
        );
        i.dialback_verified(&originating, &receiving, true);
        let (oe, _) = pump(&mut o, &mut i, &[], false);
        assert!(
            oe.contains(&S2sOutEvent::Ready(AuthMethod::Dialback)),
            "{oe:?}"
        );

        // A forged key does not verify.
        let mut vo = S2sOut::new(S2sOutConfig {
            local: "b.test".into(),
            remote: "a.test".into(),
            ..out_cfg(
                Purpose::Verify {
                    key: "00".into(),
                    stream_id,
                },
                TlsPolicy::Required,
            )
        });
        let mut vi = S2sIn::new(S2sInConfig {
            local_domains: vec!["a.test".into()],
            secret: "s3cret".into(),
            ..in_cfg()
        });
        let (voe, _) = pump(&mut vo, &mut vi, &[], false);
        assert!(
            voe.contains(&S2sOutEvent::Verified { valid: false }),
            "{voe:?}"
        );
    }

    #[test]
    fn spoofed_from_and_relay_are_refused() {
        let mut o = S2sOut::new(out_cfg(Purpose::Traffic, TlsPolicy::Required));
        let mut i = S2sIn::new(in_cfg());
        pump(&mut o, &mut i, &["a.test"], true);
        let m = Element::new("message", NS_SERVER)
            .attr("from", "x@evil.test")
            .attr("to", "y@b.test");
        o.send_stanza(&m);
        let bytes = o.take_output();
        i.receive(&bytes);
        assert_eq!(
            i.poll_event(),
            Some(S2sInEvent::Closed {
                error: Some(StreamErrorCondition::InvalidFrom)
            })
        );

        let mut o = S2sOut::new(out_cfg(Purpose::Traffic, TlsPolicy::Required));
        let mut i = S2sIn::new(in_cfg());
        pump(&mut o, &mut i, &["a.test"], true);
        let m = Element::new("message", NS_SERVER)
            .attr("from", "x@a.test")
            .attr("to", "y@c.test");
        o.send_stanza(&m);
        let bytes = o.take_output();
        i.receive(&bytes);
        assert_eq!(
            i.poll_event(),
            Some(S2sInEvent::Closed {
                error: Some(StreamErrorCondition::HostUnknown)
            })
        );
    }

    #[test]
    fn plain_tcp_only_where_allowed() {
        // Without TLS on offer and with policy Required, the initiator gives up.
        let mut o = S2sOut::new(out_cfg(Purpose::Traffic, TlsPolicy::Required));
        let mut i = S2sIn::new(S2sInConfig {
            tls_available: false,
            ..in_cfg()
        });
        let (oe, _) = pump(&mut o, &mut i, &[], false);
        assert!(
            matches!(oe.last(), Some(S2sOutEvent::Closed { reason: Some(r) }) if r.contains("TLS is required")),
            "{oe:?}"
        );
        // With policy Never on both sides, dialback over plain TCP.
        let mut o = S2sOut::new(out_cfg(Purpose::Traffic, TlsPolicy::Never));
        let mut i = S2sIn::new(S2sInConfig {
            plain_allowed: ["a.test".to_string()].into_iter().collect(),
            ..in_cfg()
        });
        let (_, ie) = pump(&mut o, &mut i, &[], false);
        assert!(
            ie.iter()
                .any(|e| matches!(e, S2sInEvent::DialbackVerify { .. })),
            "{ie:?}"
        );
    }

    #[test]
    fn plain_tcp_allowance_is_per_domain_not_per_stream() {
        // The header claims a plain-allowed domain, then dialback is asked for another one.
        let mut i = S2sIn::new(S2sInConfig {
            plain_allowed: ["legacy.test".to_string()].into_iter().collect(),
            ..in_cfg()
        });
        i.receive(b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='legacy.test' to='b.test' version='1.0'>");
        let _ = i.take_output();
        i.receive(b"<db:result from='a.test' to='b.test'>key</db:result>");
        assert_eq!(
            i.poll_event(),
            Some(S2sInEvent::Closed {
                error: Some(StreamErrorCondition::PolicyViolation)
            })
        );
        // The allowed domain itself may use dialback on plain TCP.
        let mut i = S2sIn::new(S2sInConfig {
            plain_allowed: ["legacy.test".to_string()].into_iter().collect(),
            ..in_cfg()
        });
        i.receive(b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='legacy.test' to='b.test' version='1.0'>");
        i.receive(b"<db:result from='legacy.test' to='b.test'>key</db:result>");
        assert!(matches!(
            i.poll_event(),
            Some(S2sInEvent::DialbackVerify { .. })
        ));
    }

    #[test]
    fn wildcard_names() {
        assert!(cert_name_matches("*.example.com", "xmpp.example.com"));
        assert!(!cert_name_matches("*.example.com", "example.com"));
        assert!(!cert_name_matches("*.example.com", "a.b.example.com"));
        assert!(cert_name_matches("Example.COM.", "example.com"));
    }
}
