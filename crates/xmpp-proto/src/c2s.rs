//! Client-to-server stream negotiation, server side (RFC 6120 §4–§7).
//!
//! [`C2sStream`] is driven by the connection task: bytes in with [`C2sStream::receive`], bytes
//! out with [`C2sStream::take_output`], and decisions that need the outside world (a TLS
//! handshake, an account's keys, which resource to bind) come out as [`C2sEvent`]s that the
//! driver answers through the matching method. After binding, every stanza the client sends
//! comes out as [`C2sEvent::Stanza`] with its `from` stamped with the session's full JID
//! (RFC 6120 §8.1.2.1).

use std::collections::VecDeque;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use entente_model::jid::Jid;
use rand::RngCore;

use crate::element::{Element, NS_CLIENT};
use crate::framer::{Limits, StreamEvent, XmlStream};
use crate::scram::{ClientFirst, Credentials, ScramError, ScramHash, ScramServer};
use crate::stanza::{error_reply, iq_result, ErrorType};
use crate::StreamErrorCondition;

pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";

/// How this listener negotiates.
#[derive(Debug, Clone)]
pub struct C2sConfig {
    /// Hosted domains; the first is used when the client names none.
    pub domains: Vec<String>,
    /// STARTTLS is offered.
    pub tls_available: bool,
    /// STARTTLS must happen before authentication.
    pub tls_required: bool,
    pub limits: Limits,
    /// Failed authentication attempts before the stream is closed.
    pub max_auth_failures: u32,
}

/// Something the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum C2sEvent {
    /// Write out everything pending, then run the TLS handshake and call
    /// [`C2sStream::tls_established`].
    StartTls,
    /// Look up this account and call [`C2sStream::provide_credentials`].
    NeedCredentials { username: String },
    /// The client authenticated as this account (before binding).
    Authenticated { username: String },
    /// The client wants a resource bound; call [`C2sStream::bind_result`] with the full JID.
    BindRequest { resource: Option<String> },
    /// A stanza from the bound session, `from` already stamped.
    Stanza(Element),
    /// The stream is over (closed by either side, or after a stream error); after writing the
    /// pending output, close the connection.
    Closed { error: Option<StreamErrorCondition> },
}

enum Pending {
    Scram(ScramHash, ClientFirst),
    Plain { username: String, password: String },
}

enum State {
    /// Waiting for the client's stream header.
    Header,
    /// Header and features sent; waiting for STARTTLS, auth or (after auth) bind.
    Negotiating,
    /// `<proceed/>` sent; waiting for the driver's TLS handshake.
    TlsPending,
    /// Waiting for the driver to look up credentials. (Boxed, as is the SCRAM state: these
    /// variants are the largest, and every connection carries the enum for its whole life.)
    CredentialsPending(Box<Pending>),
    /// A SCRAM exchange waiting for the client-final message.
    ScramChallenge(Box<ScramServer>),
    /// A mechanism started without initial response; waiting for `<response>`.
    AwaitInitialResponse(&'static str),
    /// Waiting for the driver to decide on a resource.
    BindPending {
        iq: Element,
    },
    /// Bound: stanzas flow.
    Bound,
    Closed,
}

/// The server side of one client stream.
pub struct C2sStream {
    cfg: C2sConfig,
    state: State,
    xml: XmlStream,
    out: Vec<u8>,
    events: VecDeque<C2sEvent>,
    header_sent: bool,
    tls: bool,
    domain: Option<String>,
    user: Option<String>,
    jid: Option<Jid>,
    auth_failures: u32,
    stream_id: String,
    /// The account named in the SASL exchange under way.
    pending_user: Option<String>,
}

impl C2sStream {
    pub fn new(cfg: C2sConfig) -> C2sStream {
        let limits = cfg.limits;
        C2sStream {
            cfg,
            state: State::Header,
            xml: XmlStream::new(limits),
            out: Vec::new(),
            events: VecDeque::new(),
            header_sent: false,
            tls: false,
            domain: None,
            user: None,
            jid: None,
            auth_failures: 0,
            stream_id: new_id(),
            pending_user: None,
        }
    }

    /// The bound full JID, once bound.
    pub fn jid(&self) -> Option<&Jid> {
        self.jid.as_ref()
    }

    /// The authenticated account (localpart), once authenticated.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Bytes to write to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next event, if any. Once the queue is drained its buffer is freed: connections spend
    /// most of their life idle, and events come a few at a time.
    pub fn poll_event(&mut self) -> Option<C2sEvent> {
        let ev = self.events.pop_front();
        if ev.is_none() && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        ev
    }

    /// Feeds received bytes.
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
            self.handle(ev);
        }
        if let Err(e) = res {
            if !self.is_closed() {
                let cond = e.condition();
                self.stream_error(cond, Some(&e.to_string()));
            }
        }
    }

    /// The peer closed the connection without closing the stream.
    pub fn eof(&mut self) {
        if !self.is_closed() {
            self.state = State::Closed;
            self.events.push_back(C2sEvent::Closed { error: None });
        }
    }

    /// The TLS handshake finished: the stream restarts (RFC 6120 §5.4.3.3).
    pub fn tls_established(&mut self) {
        self.tls = true;
        self.restart();
    }

    /// The answer to [`C2sEvent::NeedCredentials`]: the account's keys, or `None` when there is
    /// no such account.
    pub fn provide_credentials(&mut self, creds: Option<Credentials>) {
        let pending = match std::mem::replace(&mut self.state, State::Negotiating) {
            State::CredentialsPending(p) => *p,
            other => {
                self.state = other;
                return;
            }
        };
        match (pending, creds) {
            (Pending::Scram(h, cf), Some(c)) => {
                let (srv, msg) = ScramServer::start(h, cf, c.keys(h).clone());
                self.write_sasl("challenge", Some(&msg));
                self.state = State::ScramChallenge(Box::new(srv));
            }
            (Pending::Scram(h, cf), None) => {
                // Unknown account: run the exchange against throw-away keys so the client cannot
                // tell "no such user" from "wrong password".
                let fake = Credentials::derive(&new_id(), 16);
                let (srv, msg) = ScramServer::start(h, cf, fake.keys(h).clone());
                self.write_sasl("challenge", Some(&msg));
                self.state = State::ScramChallenge(Box::new(srv));
            }
            (Pending::Plain { username, password }, Some(c)) => {
                if c.verify_password(&password) {
                    self.auth_success(username, None);
                } else {
                    self.auth_failure("not-authorized");
                }
            }
            (Pending::Plain { .. }, None) => self.auth_failure("not-authorized"),
        }
    }

    /// The answer to [`C2sEvent::BindRequest`]: the full JID bound, or an error condition
    /// (`bad-request`, `not-allowed`, `resource-constraint`).
    pub fn bind_result(&mut self, result: Result<Jid, &'static str>) {
        let iq = match std::mem::replace(&mut self.state, State::Negotiating) {
            State::BindPending { iq } => iq,
            other => {
                self.state = other;
                return;
            }
        };
        match result {
            Ok(jid) => {
                let bind = Element::new("bind", NS_BIND)
                    .child(Element::new("jid", NS_BIND).text(jid.to_string()));
                let mut r = iq_result(&iq, Some(bind));
                r.remove_attr("to");
                r.remove_attr("from");
                self.jid = Some(jid);
                self.state = State::Bound;
                self.write_stanza(&r);
            }
            Err(cond) => {
                let etype = if cond == "bad-request" {
                    ErrorType::Modify
                } else {
                    ErrorType::Cancel
                };
                if let Some(r) = error_reply(&iq, etype, cond, None) {
                    self.write_stanza(&r);
                }
            }
        }
    }

    /// Writes a stanza to the client.
    pub fn send_stanza(&mut self, stanza: &Element) {
        if !self.is_closed() {
            self.write_stanza(stanza);
        }
    }

    /// Writes raw, already serialized stanza bytes (a broadcast serialized once for many).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        if !self.is_closed() {
            self.out.extend_from_slice(bytes);
        }
    }

    /// Ends the stream with a stream error (e.g. `conflict`, `connection-timeout`,
    /// `system-shutdown`).
    pub fn close_with_error(&mut self, cond: StreamErrorCondition, text: Option<&str>) {
        if !self.is_closed() {
            self.stream_error(cond, text);
        }
    }

    /// Ends the stream cleanly.
    pub fn close(&mut self) {
        if !self.is_closed() {
            self.ensure_header();
            self.out.extend_from_slice(b"</stream:stream>");
            self.state = State::Closed;
            self.events.push_back(C2sEvent::Closed { error: None });
        }
    }

    // ---- internals, top-down ----

    fn handle(&mut self, ev: StreamEvent) {
        match ev {
            StreamEvent::Header(h) => self.on_header(h),
            StreamEvent::End => {
                self.ensure_header();
                self.out.extend_from_slice(b"</stream:stream>");
                self.state = State::Closed;
                self.events.push_back(C2sEvent::Closed { error: None });
            }
            StreamEvent::Stanza(el) => self.on_element(el),
        }
    }

    fn on_header(&mut self, h: Element) {
        if !matches!(self.state, State::Header) {
            self.stream_error(
                StreamErrorCondition::NotWellFormed,
                Some("unexpected stream header"),
            );
            return;
        }
        // RFC 6120 §4.7.5: version 1.0 or later is required for what we offer.
        let version_ok = h
            .get_attr("version")
            .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
            .is_some_and(|major| major >= 1);
        let to = h
            .get_attr("to")
            .map(|t| t.trim_end_matches('.').to_ascii_lowercase());
        let domain = match to {
            Some(d) => {
                if self.cfg.domains.contains(&d) {
                    Some(d)
                } else {
                    None
                }
            }
            None => self.cfg.domains.first().cloned(),
        };
        // After a restart the domain may not change.
        let domain = match (&self.domain, domain) {
            (Some(prev), Some(d)) if *prev != d => None,
            (_, d) => d,
        };
        self.domain = domain.clone();
        self.write_header();
        let Some(_) = domain else {
            self.stream_error(
                StreamErrorCondition::HostUnknown,
                Some("this server does not serve that domain"),
            );
            return;
        };
        if !version_ok {
            self.stream_error(
                StreamErrorCondition::UnsupportedVersion,
                Some("XMPP 1.0 is required"),
            );
            return;
        }
        self.state = State::Negotiating;
        self.write_features();
    }

    fn write_header(&mut self) {
        let from = self
            .domain
            .clone()
            .or_else(|| self.cfg.domains.first().cloned())
            .unwrap_or_default();
        let hdr = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='{}' from='{}' version='1.0' xml:lang='en'>",
            self.stream_id,
            crate::element::escape(&from)
        );
        self.out.extend_from_slice(hdr.as_bytes());
        self.header_sent = true;
    }

    fn ensure_header(&mut self) {
        if !self.header_sent {
            self.write_header();
        }
    }

    fn write_features(&mut self) {
        let mut f = String::from("<stream:features>");
        if self.user.is_none() {
            if self.cfg.tls_available && !self.tls {
                f.push_str("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>");
                if self.cfg.tls_required {
                    f.push_str("<required/>");
                }
                f.push_str("</starttls>");
            }
            if self.tls || !self.cfg.tls_required {
                f.push_str("<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism>");
                if self.tls {
                    f.push_str("<mechanism>PLAIN</mechanism>");
                }
                f.push_str("</mechanisms>");
            }
        } else {
            f.push_str("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>");
            // RFC 6121 §3.4: the server supports subscription pre-approval.
            f.push_str("<sub xmlns='urn:xmpp:features:pre-approval'/>");
        }
        f.push_str("</stream:features>");
        self.out.extend_from_slice(f.as_bytes());
    }

    fn on_element(&mut self, el: Element) {
        match std::mem::replace(&mut self.state, State::Negotiating) {
            State::Bound => {
                self.state = State::Bound;
                self.on_bound_stanza(el);
            }
            State::Negotiating => self.on_negotiation(el),
            State::ScramChallenge(srv) => {
                if el.is("response", NS_SASL) {
                    match decode_b64(&el.text_content()) {
                        Ok(data) => match srv.finish(&data) {
                            Ok(server_final) => {
                                let user = self.pending_user.take().unwrap_or_default();
                                self.auth_success(user, Some(server_final));
                            }
                            Err(ScramError::BadProof) | Err(ScramError::NonceMismatch) => {
                                self.pending_user = None;
                                self.auth_failure("not-authorized")
                            }
                            Err(_) => {
                                self.pending_user = None;
                                self.auth_failure("malformed-request")
                            }
                        },
                        Err(()) => self.auth_failure("incorrect-encoding"),
                    }
                } else if el.is("abort", NS_SASL) {
                    self.auth_failure("aborted");
                } else {
                    self.stream_error(
                        StreamErrorCondition::NotAuthorized,
                        Some("SASL exchange in progress"),
                    );
                }
            }
            State::AwaitInitialResponse(mech) => {
                if el.is("response", NS_SASL) {
                    match decode_b64(&el.text_content()) {
                        Ok(data) => self.start_mechanism(mech, data),
                        Err(()) => self.auth_failure("incorrect-encoding"),
                    }
                } else if el.is("abort", NS_SASL) {
                    self.auth_failure("aborted");
                } else {
                    self.stream_error(
                        StreamErrorCondition::NotAuthorized,
                        Some("SASL exchange in progress"),
                    );
                }
            }
            State::TlsPending | State::CredentialsPending(_) | State::BindPending { .. } => {
                // The client must wait for our answer; anything else is a protocol violation.
                self.stream_error(
                    StreamErrorCondition::PolicyViolation,
                    Some("data sent during a pending negotiation step"),
                );
            }
            State::Header | State::Closed => {}
        }
    }

    fn on_negotiation(&mut self, el: Element) {
        self.state = State::Negotiating;
        if el.is("starttls", NS_TLS) {
            if !self.cfg.tls_available || self.tls || self.user.is_some() {
                self.out.extend_from_slice(
                    b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>",
                );
                self.state = State::Closed;
                self.events.push_back(C2sEvent::Closed { error: None });
                return;
            }
            self.out
                .extend_from_slice(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
            self.state = State::TlsPending;
            self.events.push_back(C2sEvent::StartTls);
            return;
        }
        if el.is("auth", NS_SASL) {
            if self.user.is_some() {
                self.stream_error(
                    StreamErrorCondition::PolicyViolation,
                    Some("already authenticated"),
                );
                return;
            }
            let mech = el.get_attr("mechanism").unwrap_or("");
            let mech: &'static str = match mech {
                "SCRAM-SHA-256" => "SCRAM-SHA-256",
                "SCRAM-SHA-1" => "SCRAM-SHA-1",
                "PLAIN" => "PLAIN",
                _ => return self.auth_failure("invalid-mechanism"),
            };
            if !self.tls && (self.cfg.tls_required || mech == "PLAIN") {
                return self.auth_failure("encryption-required");
            }
            let text = el.text_content();
            if text.is_empty() {
                // No initial response: send an empty challenge (RFC 6120 §6.4.2).
                self.write_sasl("challenge", None);
                self.state = State::AwaitInitialResponse(mech);
                return;
            }
            match decode_b64(&text) {
                Ok(data) => self.start_mechanism(mech, data),
                Err(()) => self.auth_failure("incorrect-encoding"),
            }
            return;
        }
        if self.user.is_none() {
            if self.cfg.tls_required && !self.tls {
                self.stream_error(
                    StreamErrorCondition::PolicyViolation,
                    Some("STARTTLS is required"),
                );
            } else {
                self.stream_error(
                    StreamErrorCondition::NotAuthorized,
                    Some("authenticate first"),
                );
            }
            return;
        }
        // Authenticated, not bound: only resource binding is allowed.
        if el.is("iq", NS_CLIENT) && el.get_attr("type") == Some("set") {
            if let Some(bind) = el.find("bind", NS_BIND) {
                let resource = bind
                    .find("resource", NS_BIND)
                    .map(|r| r.text_content().trim().to_string())
                    .filter(|r| !r.is_empty());
                self.state = State::BindPending { iq: el };
                self.events.push_back(C2sEvent::BindRequest { resource });
                return;
            }
        }
        self.stream_error(
            StreamErrorCondition::NotAuthorized,
            Some("bind a resource first"),
        );
    }

    fn start_mechanism(&mut self, mech: &'static str, data: Vec<u8>) {
        match mech {
            "PLAIN" => {
                // authzid \0 authcid \0 password
                let mut parts = data.split(|b| *b == 0);
                let (Some(authz), Some(user), Some(pw), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return self.auth_failure("malformed-request");
                };
                let (Ok(authz), Ok(user), Ok(pw)) = (
                    std::str::from_utf8(authz),
                    std::str::from_utf8(user),
                    std::str::from_utf8(pw),
                ) else {
                    return self.auth_failure("malformed-request");
                };
                let Ok(user) = entente_model::jid::validate_username(user) else {
                    return self.auth_failure("not-authorized");
                };
                if !authz.is_empty() && !self.authzid_matches(authz, &user) {
                    return self.auth_failure("invalid-authzid");
                }
                self.pending_user = Some(user.clone());
                self.state = State::CredentialsPending(Box::new(Pending::Plain {
                    username: user.clone(),
                    password: pw.to_string(),
                }));
                self.events
                    .push_back(C2sEvent::NeedCredentials { username: user });
            }
            _ => {
                let h = if mech == "SCRAM-SHA-1" {
                    ScramHash::Sha1
                } else {
                    ScramHash::Sha256
                };
                let cf = match ClientFirst::parse(&data) {
                    Ok(cf) => cf,
                    Err(ScramError::ChannelBindingUnsupported) => {
                        return self.auth_failure("malformed-request")
                    }
                    Err(_) => return self.auth_failure("malformed-request"),
                };
                let Ok(user) = entente_model::jid::validate_username(&cf.username) else {
                    return self.auth_failure("not-authorized");
                };
                if let Some(a) = &cf.authzid {
                    if !self.authzid_matches(a, &user) {
                        return self.auth_failure("invalid-authzid");
                    }
                }
                self.pending_user = Some(user.clone());
                self.state = State::CredentialsPending(Box::new(Pending::Scram(h, cf)));
                self.events
                    .push_back(C2sEvent::NeedCredentials { username: user });
            }
        }
    }

    fn authzid_matches(&self, authzid: &str, user: &str) -> bool {
        let Ok(j) = Jid::parse(authzid) else {
            return false;
        };
        j.local() == Some(user) && Some(j.domain()) == self.domain.as_deref() && j.is_bare()
    }

    fn auth_success(&mut self, user: String, additional: Option<Vec<u8>>) {
        self.write_sasl("success", additional.as_deref());
        self.user = Some(user.clone());
        self.events
            .push_back(C2sEvent::Authenticated { username: user });
        self.restart();
    }

    fn auth_failure(&mut self, cond: &str) {
        self.pending_user = None;
        self.out.extend_from_slice(
            format!("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><{cond}/></failure>")
                .as_bytes(),
        );
        self.state = State::Negotiating;
        self.auth_failures += 1;
        if self.auth_failures >= self.cfg.max_auth_failures {
            self.stream_error(
                StreamErrorCondition::PolicyViolation,
                Some("too many failed authentication attempts"),
            );
        }
    }

    fn restart(&mut self) {
        self.xml = XmlStream::new(self.cfg.limits);
        self.header_sent = false;
        self.stream_id = new_id();
        self.state = State::Header;
    }

    fn on_bound_stanza(&mut self, mut el: Element) {
        let Some(jid) = self.jid.clone() else {
            return;
        };
        if el.ns != NS_CLIENT || !matches!(el.name.as_str(), "message" | "presence" | "iq") {
            if el.ns == NS_CLIENT {
                self.stream_error(StreamErrorCondition::UnsupportedStanzaType, None);
            } else {
                self.stream_error(StreamErrorCondition::InvalidNamespace, None);
            }
            return;
        }
        // Legacy session establishment (RFC 3921): answer and swallow.
        if el.name == "iq"
            && el.get_attr("type") == Some("set")
            && el.find("session", NS_SESSION).is_some()
        {
            let mut r = iq_result(&el, None);
            r.remove_attr("from");
            r.remove_attr("to");
            self.write_stanza(&r);
            return;
        }
        // RFC 6120 §8.1.2.1: the server stamps the full JID; a different `from` is an error.
        if let Some(f) = el.get_attr("from") {
            let ok = Jid::parse(f).is_ok_and(|j| j == jid || (j.is_bare() && j == jid.to_bare()));
            if !ok {
                self.stream_error(StreamErrorCondition::InvalidFrom, None);
                return;
            }
        }
        el.set_attr("from", jid.to_string());
        self.events.push_back(C2sEvent::Stanza(el));
    }

    fn write_sasl(&mut self, name: &str, data: Option<&[u8]>) {
        let body = match data {
            Some([]) => "=".to_string(),
            Some(d) => B64.encode(d),
            None => String::new(),
        };
        self.out.extend_from_slice(
            format!("<{name} xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{body}</{name}>").as_bytes(),
        );
    }

    fn write_stanza(&mut self, el: &Element) {
        self.out
            .extend_from_slice(el.to_stream_string(NS_CLIENT).as_bytes());
    }

    fn stream_error(&mut self, cond: StreamErrorCondition, text: Option<&str>) {
        self.ensure_header();
        self.out.extend_from_slice(cond.to_xml(text).as_bytes());
        self.state = State::Closed;
        self.events
            .push_back(C2sEvent::Closed { error: Some(cond) });
    }
}

fn decode_b64(s: &str) -> Result<Vec<u8>, ()> {
    let s = s.trim();
    if s == "=" {
        return Ok(Vec::new());
    }
    B64.decode(s).map_err(|_| ())
}

/// A random identifier for streams and stanzas.
pub fn new_id() -> String {
    let mut b = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
