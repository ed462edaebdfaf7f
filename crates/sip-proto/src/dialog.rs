//! Dialogs (RFC 3261 §12) and their SUBSCRIBE/NOTIFY usages (RFC 6665), sans-IO.
//!
//! A [`Dialog`] is plain state: the TU keeps dialogs in a map keyed by [`DialogId`] (built
//! from an incoming request with [`DialogId::for_request`] or response with
//! [`DialogId::for_response`]), feeds them the in-dialog requests and responses it sees
//! ([`Dialog::handle_request`], [`Dialog::handle_response`]) and asks them to build requests
//! ([`Dialog::request`], [`Dialog::ack`]) which it then hands to the
//! [`TransactionLayer`](crate::TransactionLayer), addressed to [`Dialog::next_hop`]. No timer
//! lives here: subscription refreshes are scheduled by the TU with the same `now`-driven
//! style.
//!
//! # Verbatim headers
//!
//! The route set is kept as the raw Record-Route elements that arrived, and the local and
//! remote addresses as the raw From/To values (tags included), so unknown parameters survive
//! byte for byte: Lync/Skype for Business puts `ms-route-sig`, `ms-key-info` and `opaque`
//! state into its Record-Routes and `epid` into From/To, and rejects requests that lose them.
//! Each element is parsed once, to validate it and to read the URI that routing needs.

use std::fmt;

use crate::error::ParseError;
use crate::header::{HeaderName, Headers};
use crate::message::{Request, Response};
use crate::method::{Method, StatusCode};
use crate::scan::split_list;
use crate::typed::{HeaderValue, NameAddr};
use crate::uri::{SipUri, Uri};

/// Identifies a dialog from our side: Call-ID, our tag, the peer's tag (§12).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl DialogId {
    /// The dialog an incoming request belongs to, as its UAS sees it: local tag from To,
    /// remote tag from From. `None` if either tag or the Call-ID is missing (an out-of-dialog
    /// request).
    pub fn for_request(request: &Request) -> Option<DialogId> {
        Some(DialogId {
            call_id: request.headers.call_id()?.to_owned(),
            local_tag: request.headers.to().ok()?.tag()?.to_owned(),
            remote_tag: request.headers.from().ok()?.tag()?.to_owned(),
        })
    }

    /// The dialog an incoming response belongs to, as the UAC sees it: local tag from From,
    /// remote tag from To.
    pub fn for_response(response: &Response) -> Option<DialogId> {
        Some(DialogId {
            call_id: response.headers.call_id()?.to_owned(),
            local_tag: response.headers.from().ok()?.tag()?.to_owned(),
            remote_tag: response.headers.to().ok()?.tag()?.to_owned(),
        })
    }
}

impl fmt::Display for DialogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{};l={};r={}",
            self.call_id, self.local_tag, self.remote_tag
        )
    }
}

/// Early (created by a provisional response) or confirmed (by a 2xx, or a NOTIFY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialogState {
    Early,
    Confirmed,
}

/// Which side created the dialog's initial request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// We sent the dialog-creating request.
    Uac,
    /// We received it.
    Uas,
}

/// One element of a route set: the raw text as received and its parsed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    raw: String,
    addr: NameAddr,
}

impl RouteEntry {
    /// Parses one `name-addr` (a Record-Route or Route element), keeping its text.
    pub fn parse(raw: &str) -> Result<RouteEntry, ParseError> {
        let raw = raw.trim_matches([' ', '\t']);
        let addr = NameAddr::parse_value(raw, &HeaderName::RecordRoute)?;
        Ok(RouteEntry {
            raw: raw.to_owned(),
            addr,
        })
    }

    /// The element exactly as received.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The URI.
    pub fn uri(&self) -> &Uri {
        &self.addr.uri
    }

    /// Whether the URI has `lr` (a loose router, RFC 3261 §16.12).
    pub fn is_loose(&self) -> bool {
        self.addr.uri.as_sip().is_some_and(SipUri::is_loose_route)
    }
}

/// Why a dialog could not be created or a message not applied to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    /// This request/response pair does not create a dialog (wrong method, a `100`, a
    /// failure response, a provisional response without To tag...).
    #[error("message does not create a dialog")]
    NotDialogCreating,
    /// A tag needed for the dialog id is missing.
    #[error("missing tag")]
    MissingTag,
    /// No Call-ID.
    #[error("missing Call-ID")]
    MissingCallId,
    /// No usable Contact where one is required (a 2xx, a target refresh request).
    #[error("missing or wildcard Contact")]
    MissingContact,
    /// A header the dialog needs is malformed.
    #[error("bad header: {0}")]
    BadHeader(#[from] ParseError),
    /// §12.2.2: the request's CSeq is lower than the remote sequence number.
    #[error("CSeq {received} is lower than {remote}")]
    OutOfOrder { received: u32, remote: u32 },
    /// The message belongs to another dialog.
    #[error("message does not belong to this dialog")]
    WrongDialog,
}

impl DialogError {
    /// The status to answer an in-dialog request with when it is rejected for this reason:
    /// `500` for an out-of-order CSeq (§12.2.2), `481` for a wrong dialog, `400` otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            DialogError::OutOfOrder { .. } => StatusCode::SERVER_INTERNAL_ERROR,
            DialogError::WrongDialog => StatusCode::CALL_DOES_NOT_EXIST,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The state of one dialog (§12.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    id: DialogId,
    role: Role,
    state: DialogState,
    /// Our From (as UAC) / To (as UAS) value, raw, with our tag.
    local: String,
    /// The peer's address, raw, with its tag.
    remote: String,
    local_seq: Option<u32>,
    remote_seq: Option<u32>,
    remote_target: Uri,
    route_set: Vec<RouteEntry>,
    local_contact: Option<String>,
    secure: bool,
}

/// Methods that create dialogs (INVITE, RFC 6665 SUBSCRIBE, RFC 3515 REFER).
fn creates_dialog(method: &Method) -> bool {
    matches!(method, Method::Invite | Method::Subscribe | Method::Refer)
}

/// Target refresh requests (§12.2, RFC 3311 UPDATE, RFC 6665 §4.1.2.3/§4.2.2.2
/// SUBSCRIBE and NOTIFY).
fn is_target_refresh(method: &Method) -> bool {
    matches!(
        method,
        Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer
    )
}

/// Every Record-Route element, in order, raw.
fn record_route_entries(headers: &Headers) -> Result<Vec<RouteEntry>, ParseError> {
    let mut out = Vec::new();
    for value in headers.all(HeaderName::RecordRoute) {
        let items = split_list(value)
            .map_err(|_| ParseError::UnterminatedQuote(HeaderName::RecordRoute))?;
        for item in items {
            out.push(RouteEntry::parse(item)?);
        }
    }
    Ok(out)
}

/// The first Contact URI.
fn contact_uri(headers: &Headers) -> Result<Option<Uri>, ParseError> {
    Ok(headers
        .contacts()?
        .first()
        .and_then(|c| c.address())
        .map(|a| a.uri.clone()))
}

fn raw(headers: &Headers, name: HeaderName) -> Result<String, DialogError> {
    headers
        .get(&name)
        .map(str::to_owned)
        .ok_or(DialogError::BadHeader(ParseError::MissingHeader(name)))
}

impl Dialog {
    /// The UAC side (§12.1.2): our dialog-creating `request` and a response to it — a 2xx
    /// (confirmed), or a 101-199 with a To tag (early). The route set is the response's
    /// Record-Route reversed, the remote target its Contact.
    pub fn uac(request: &Request, response: &Response) -> Result<Dialog, DialogError> {
        let status = response.status;
        if !creates_dialog(&request.method)
            || status == StatusCode::TRYING
            || !(status.is_provisional() || status.is_success())
            || (status.is_provisional() && request.method != Method::Invite)
        {
            return Err(DialogError::NotDialogCreating);
        }
        let call_id = request
            .headers
            .call_id()
            .ok_or(DialogError::MissingCallId)?
            .to_owned();
        let local_tag = request
            .headers
            .from()?
            .tag()
            .ok_or(DialogError::MissingTag)?
            .to_owned();
        let remote_tag = response
            .headers
            .to()?
            .tag()
            .ok_or(if status.is_provisional() {
                DialogError::NotDialogCreating
            } else {
                DialogError::MissingTag
            })?
            .to_owned();
        let mut route_set = record_route_entries(&response.headers)?;
        route_set.reverse();
        let remote_target = match contact_uri(&response.headers)? {
            Some(u) => u,
            // A provisional response without Contact: keep the Request-URI until the 2xx.
            None if status.is_provisional() => request.uri.clone(),
            None => return Err(DialogError::MissingContact),
        };
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag,
                remote_tag,
            },
            role: Role::Uac,
            state: if status.is_success() {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            local: raw(&request.headers, HeaderName::From)?,
            remote: raw(&response.headers, HeaderName::To)?,
            local_seq: Some(request.headers.cseq()?.seq),
            remote_seq: None,
            remote_target,
            route_set,
            local_contact: request.headers.get(HeaderName::Contact).map(str::to_owned),
            secure: matches!(&request.uri, Uri::Sip(u) if u.secure),
        })
    }

    /// The subscriber's side when a NOTIFY arrives before (or instead of) the 2xx to our
    /// SUBSCRIBE (RFC 6665 §4.1.2.4): the NOTIFY creates the dialog, and since it is a
    /// request the route set is its Record-Route in order (as for a UAS, §12.1.1).
    pub fn uac_from_notify(subscribe: &Request, notify: &Request) -> Result<Dialog, DialogError> {
        if subscribe.method != Method::Subscribe && subscribe.method != Method::Refer
            || notify.method != Method::Notify
        {
            return Err(DialogError::NotDialogCreating);
        }
        let call_id = subscribe
            .headers
            .call_id()
            .ok_or(DialogError::MissingCallId)?;
        let local_tag = subscribe
            .headers
            .from()?
            .tag()
            .ok_or(DialogError::MissingTag)?
            .to_owned();
        if notify.headers.call_id() != Some(call_id)
            || notify.headers.to()?.tag() != Some(local_tag.as_str())
        {
            return Err(DialogError::WrongDialog);
        }
        let remote_tag = notify
            .headers
            .from()?
            .tag()
            .ok_or(DialogError::MissingTag)?
            .to_owned();
        let remote_target = contact_uri(&notify.headers)?.ok_or(DialogError::MissingContact)?;
        Ok(Dialog {
            id: DialogId {
                call_id: call_id.to_owned(),
                local_tag,
                remote_tag,
            },
            role: Role::Uac,
            state: DialogState::Confirmed,
            local: raw(&subscribe.headers, HeaderName::From)?,
            remote: raw(&notify.headers, HeaderName::From)?,
            local_seq: Some(subscribe.headers.cseq()?.seq),
            remote_seq: Some(notify.headers.cseq()?.seq),
            remote_target,
            route_set: record_route_entries(&notify.headers)?,
            local_contact: subscribe
                .headers
                .get(HeaderName::Contact)
                .map(str::to_owned),
            secure: matches!(&subscribe.uri, Uri::Sip(u) if u.secure),
        })
    }

    /// The UAS side (§12.1.1): a dialog-creating `request` we received and our `response`
    /// (a 2xx: confirmed; a 101-199 with our To tag: early). The route set is the request's
    /// Record-Route in order, the remote target its Contact.
    pub fn uas(request: &Request, response: &Response) -> Result<Dialog, DialogError> {
        let status = response.status;
        if !creates_dialog(&request.method)
            || status == StatusCode::TRYING
            || !(status.is_provisional() || status.is_success())
        {
            return Err(DialogError::NotDialogCreating);
        }
        let call_id = request
            .headers
            .call_id()
            .ok_or(DialogError::MissingCallId)?
            .to_owned();
        let remote_tag = request
            .headers
            .from()?
            .tag()
            .ok_or(DialogError::MissingTag)?
            .to_owned();
        let local_tag = response
            .headers
            .to()?
            .tag()
            .ok_or(DialogError::MissingTag)?
            .to_owned();
        let remote_target = contact_uri(&request.headers)?.ok_or(DialogError::MissingContact)?;
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag,
                remote_tag,
            },
            role: Role::Uas,
            state: if status.is_success() {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            local: raw(&response.headers, HeaderName::To)?,
            remote: raw(&request.headers, HeaderName::From)?,
            local_seq: None,
            remote_seq: Some(request.headers.cseq()?.seq),
            remote_target,
            route_set: record_route_entries(&request.headers)?,
            local_contact: response.headers.get(HeaderName::Contact).map(str::to_owned),
            secure: matches!(&request.uri, Uri::Sip(u) if u.secure),
        })
    }

    /// The dialog id.
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// Who sent the dialog-creating request.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Early or confirmed.
    pub fn state(&self) -> DialogState {
        self.state
    }

    /// Our local sequence number (the CSeq of the last request we built).
    pub fn local_seq(&self) -> Option<u32> {
        self.local_seq
    }

    /// The highest CSeq seen from the peer.
    pub fn remote_seq(&self) -> Option<u32> {
        self.remote_seq
    }

    /// Where in-dialog requests are addressed (the peer's Contact).
    pub fn remote_target(&self) -> &Uri {
        &self.remote_target
    }

    /// The route set, in the order requests will carry it.
    pub fn route_set(&self) -> &[RouteEntry] {
        &self.route_set
    }

    /// Our From/To value, raw, with our tag.
    pub fn local_header(&self) -> &str {
        &self.local
    }

    /// The peer's From/To value, raw, with its tag.
    pub fn remote_header(&self) -> &str {
        &self.remote
    }

    /// Whether the dialog was created by a `sips:` request.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// Sets the Contact value (raw) put into our target refresh requests.
    pub fn set_local_contact(&mut self, contact: impl Into<String>) {
        self.local_contact = Some(contact.into());
    }

    /// The UAS sent a 2xx on an early dialog: it is now confirmed.
    pub fn confirm(&mut self) {
        self.state = DialogState::Confirmed;
    }

    /// Applies an in-dialog request we received (§12.2.2): checks the remote CSeq (a lower
    /// one is [`DialogError::OutOfOrder`], answer `500`), records it, and for a target
    /// refresh takes the new Contact as remote target. ACK and CANCEL carry the CSeq of the
    /// request they refer to and are not checked.
    pub fn handle_request(&mut self, request: &Request) -> Result<(), DialogError> {
        if DialogId::for_request(request).as_ref() != Some(&self.id) {
            return Err(DialogError::WrongDialog);
        }
        if matches!(request.method, Method::Ack | Method::Cancel) {
            return Ok(());
        }
        let seq = request.headers.cseq()?.seq;
        if let Some(remote) = self.remote_seq {
            if seq < remote {
                return Err(DialogError::OutOfOrder {
                    received: seq,
                    remote,
                });
            }
        }
        if is_target_refresh(&request.method) {
            if let Some(uri) = contact_uri(&request.headers)? {
                self.remote_target = uri;
            }
        }
        self.remote_seq = Some(seq);
        Ok(())
    }

    /// Applies a response to one of our in-dialog requests (or, for an early UAC dialog, to
    /// the dialog-creating INVITE): a 2xx confirms an early dialog, recomputing its route
    /// set from the 2xx (§13.2.2.4), and a 2xx to a target refresh updates the remote
    /// target (§12.2.1.2).
    pub fn handle_response(&mut self, response: &Response) -> Result<(), DialogError> {
        if DialogId::for_response(response).as_ref() != Some(&self.id) {
            return Err(DialogError::WrongDialog);
        }
        let method = response.headers.cseq()?.method;
        if !response.status.is_success() {
            return Ok(());
        }
        if self.state == DialogState::Early && self.role == Role::Uac && creates_dialog(&method) {
            let mut route_set = record_route_entries(&response.headers)?;
            route_set.reverse();
            self.route_set = route_set;
            self.remote = raw(&response.headers, HeaderName::To)?;
            self.state = DialogState::Confirmed;
        }
        if is_target_refresh(&method) {
            if let Some(uri) = contact_uri(&response.headers)? {
                self.remote_target = uri;
            }
        }
        Ok(())
    }

    /// Builds an in-dialog request (§12.2.1.1) with the next local CSeq: To, From, Call-ID,
    /// CSeq, Max-Forwards, our Contact for target refreshes, and Request-URI plus Route per
    /// the route set: loose routing (§16.12, first route has `lr`) keeps the remote target as
    /// Request-URI and sends the route set verbatim; a strict router becomes the
    /// Request-URI and the remote target is appended as the last Route. No Via: the
    /// transaction layer adds it. Use [`Dialog::ack`] for ACK; CANCEL is built by the
    /// transaction layer.
    pub fn request(&mut self, method: Method) -> Request {
        let seq = self.local_seq.map_or(1, |s| s.saturating_add(1));
        self.local_seq = Some(seq);
        self.build(method, seq)
    }

    /// The ACK for a 2xx to the INVITE whose CSeq number was `invite_seq` (§13.2.2.4).
    pub fn ack(&self, invite_seq: u32) -> Request {
        self.build(Method::Ack, invite_seq)
    }

    /// The URI to resolve (RFC 3263) to find where in-dialog requests go: the first route,
    /// or the remote target when the route set is empty.
    pub fn next_hop(&self) -> &Uri {
        self.route_set
            .first()
            .map_or(&self.remote_target, RouteEntry::uri)
    }

    fn build(&self, method: Method, seq: u32) -> Request {
        let (uri, routes): (Uri, Vec<String>) = match self.route_set.split_first() {
            None => (self.remote_target.clone(), Vec::new()),
            Some((first, _)) if first.is_loose() => (
                self.remote_target.clone(),
                self.route_set.iter().map(|r| r.raw.clone()).collect(),
            ),
            Some((first, rest)) => {
                // §12.2.1.1 strict routing: the first route's URI, without the parameters
                // and headers a Request-URI may not carry, becomes the Request-URI.
                let mut uri = first.uri().clone();
                if let Uri::Sip(u) = &mut uri {
                    u.headers.clear();
                    u.params.remove("method");
                }
                let mut routes: Vec<String> = rest.iter().map(|r| r.raw.clone()).collect();
                routes.push(format!("<{}>", self.remote_target));
                (uri, routes)
            }
        };
        let mut req = Request::new(method.clone(), uri);
        req.headers.push("Max-Forwards", "70");
        for r in routes {
            req.headers.push("Route", r);
        }
        req.headers.push("From", self.local.clone());
        req.headers.push("To", self.remote.clone());
        req.headers.push("Call-ID", self.id.call_id.clone());
        req.headers.push("CSeq", format!("{seq} {method}"));
        if is_target_refresh(&method) {
            if let Some(c) = &self.local_contact {
                req.headers.push("Contact", c.clone());
            }
        }
        req
    }
}

/// A dialog's state as plain strings and numbers, for persisting it across restarts (RFC 6665
/// subscriptions and IM sessions outlive a process; the seed's "two hours without presence
/// after a restart" is what happens when they do not). [`Dialog::snapshot`] takes one,
/// [`Dialog::restore`] parses it back, validating every header as on first receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DialogSnapshot {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// `true` when we sent the dialog-creating request.
    pub uac: bool,
    /// `false` for an early dialog.
    pub confirmed: bool,
    /// Our From/To value, raw, with our tag.
    pub local: String,
    /// The peer's From/To value, raw, with its tag.
    pub remote: String,
    pub local_seq: Option<u32>,
    pub remote_seq: Option<u32>,
    /// The remote target URI.
    pub remote_target: String,
    /// The route set, raw elements in order.
    pub route_set: Vec<String>,
    /// Our Contact value, raw.
    pub local_contact: Option<String>,
    pub secure: bool,
}

impl Dialog {
    /// The dialog's state, for storage.
    pub fn snapshot(&self) -> DialogSnapshot {
        DialogSnapshot {
            call_id: self.id.call_id.clone(),
            local_tag: self.id.local_tag.clone(),
            remote_tag: self.id.remote_tag.clone(),
            uac: self.role == Role::Uac,
            confirmed: self.state == DialogState::Confirmed,
            local: self.local.clone(),
            remote: self.remote.clone(),
            local_seq: self.local_seq,
            remote_seq: self.remote_seq,
            remote_target: self.remote_target.to_string(),
            route_set: self.route_set.iter().map(|r| r.raw.clone()).collect(),
            local_contact: self.local_contact.clone(),
            secure: self.secure,
        }
    }

    /// A dialog from a stored [`DialogSnapshot`]. Fails if the remote target or a route does
    /// not parse (a corrupted or foreign row).
    pub fn restore(s: DialogSnapshot) -> Result<Dialog, DialogError> {
        let remote_target: Uri = s
            .remote_target
            .parse()
            .map_err(|_| ParseError::BadHeader(HeaderName::Contact))?;
        let route_set = s
            .route_set
            .iter()
            .map(|r| RouteEntry::parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Dialog {
            id: DialogId {
                call_id: s.call_id,
                local_tag: s.local_tag,
                remote_tag: s.remote_tag,
            },
            role: if s.uac { Role::Uac } else { Role::Uas },
            state: if s.confirmed {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            local: s.local,
            remote: s.remote,
            local_seq: s.local_seq,
            remote_seq: s.remote_seq,
            remote_target,
            route_set,
            local_contact: s.local_contact,
            secure: s.secure,
        })
    }
}

/// Record-routes `request` through us (§16.6 step 4) when we are the domain's edge proxy:
/// inserts `Record-Route: <uri;lr>` above any existing Record-Route, so that in-dialog
/// requests come back through us. `uri` usually carries our host, port and `transport`.
pub fn add_record_route(request: &mut Request, mut uri: SipUri) {
    if !uri.is_loose_route() {
        uri.params.set("lr", None);
    }
    request
        .headers
        .push_front("Record-Route", format!("<{uri}>"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::parser::parse;

    fn req(raw: &[u8]) -> Request {
        match parse(raw).unwrap() {
            Message::Request(r) => r,
            _ => panic!(),
        }
    }

    const RR1: &str =
        "<sip:pool01.contoso.com:5061;transport=tls;opaque=state:T;lr>;tag=A0B1C2D3E4F5";
    const RR2: &str = "<sip:edge.contoso.com:5061;transport=tls;epid=0f1e2d3c4b;lr;ms-key-info=jQAAAAEAAAA;ms-route-sig=ga2oW-yJ3Sx8-BwA>;tag=9F8E7D6C";

    fn lync_invite() -> Request {
        req(include_bytes!("../tests/fixtures/lync_invite_im.sip"))
    }

    /// The UAS's 200: Record-Route copied (§12.1.1), a Contact, our tag.
    fn ok_for(invite: &Request, tag: &str, contact: &str) -> Response {
        let mut ok = invite.response(StatusCode::OK, Some(tag));
        for rr in invite.headers.all(HeaderName::RecordRoute) {
            ok.headers.push("Record-Route", rr);
        }
        ok.headers.push("Contact", contact);
        ok
    }

    #[test]
    fn invite_200_dialogs_keep_lync_route_sets_byte_for_byte() {
        let invite = lync_invite();
        let ok = ok_for(&invite, "bob-77", "<sip:bob@192.0.2.20:5061;transport=tls>");

        let mut uas = Dialog::uas(&invite, &ok).unwrap();
        assert_eq!(uas.role(), Role::Uas);
        assert_eq!(uas.state(), DialogState::Confirmed);
        assert_eq!(uas.id().local_tag, "bob-77");
        assert_eq!(uas.id().remote_tag, "1c2b3a4d5e");
        let raws: Vec<_> = uas.route_set().iter().map(RouteEntry::raw).collect();
        assert_eq!(raws, [RR1, RR2], "UAS: Record-Route order");
        assert_eq!(uas.remote_seq(), Some(1));
        assert_eq!(uas.local_seq(), None);

        let mut uac = Dialog::uac(&invite, &ok).unwrap();
        assert_eq!(uac.state(), DialogState::Confirmed);
        let raws: Vec<_> = uac.route_set().iter().map(RouteEntry::raw).collect();
        assert_eq!(raws, [RR2, RR1], "UAC: reversed");
        assert_eq!(uac.id().local_tag, uas.id().remote_tag);
        assert_eq!(uac.id().remote_tag, uas.id().local_tag);
        assert_eq!(DialogId::for_response(&ok).as_ref(), Some(uac.id()));
        assert_eq!(DialogId::for_request(&invite), None);

        // BYE from the caller: loose routing, Route verbatim, Request-URI = remote target.
        let bye = uac.request(Method::Bye);
        assert_eq!(bye.uri.to_string(), "sip:bob@192.0.2.20:5061;transport=tls");
        let wire = String::from_utf8(bye.to_bytes().to_vec()).unwrap();
        assert!(
            wire.contains(&format!("Route: {RR2}\r\nRoute: {RR1}\r\n")),
            "{wire}"
        );
        assert!(wire.contains("From: <sip:alice@contoso.com>;tag=1c2b3a4d5e;epid=01010101af\r\n"));
        assert!(wire.contains("To: <sip:bob@fabrikam.com>;tag=bob-77\r\n"));
        assert!(wire.contains("CSeq: 2 BYE\r\n"));
        assert_eq!(uac.next_hop(), uac.route_set()[0].uri());
        // The callee sees it as its own: in dialog, in order.
        let mut bye = bye;
        bye.headers
            .push_front("Via", "SIP/2.0/TLS 192.168.0.10:51234;branch=z9hG4bKbye");
        let bye = req(&bye.to_bytes());
        assert_eq!(DialogId::for_request(&bye).as_ref(), Some(uas.id()));
        uas.handle_request(&bye).unwrap();
        assert_eq!(uas.remote_seq(), Some(2));

        // A request from the callee: route set as received, Lync opaque Contact as target.
        let msg = uas.request(Method::Message);
        assert_eq!(
            msg.uri.to_string(),
            "sip:alice@contoso.com;opaque=user:epid:abcDEF123xyz_AA;gruu"
        );
        let routes: Vec<_> = msg.headers.all("Route").collect();
        assert_eq!(routes, [RR1, RR2]);
        assert_eq!(msg.headers.get("CSeq"), Some("1 MESSAGE"));
        assert!(
            msg.headers.get("Contact").is_none(),
            "MESSAGE is no target refresh"
        );
    }

    #[test]
    fn snapshots_restore_the_same_dialog() {
        let invite = lync_invite();
        let ok = ok_for(&invite, "bob-77", "<sip:bob@192.0.2.20:5061;transport=tls>");
        for mut d in [
            Dialog::uas(&invite, &ok).unwrap(),
            Dialog::uac(&invite, &ok).unwrap(),
        ] {
            d.set_local_contact("<sip:bob@fabrikam.com;transport=tls>");
            let _ = d.request(Method::Message);
            let back = Dialog::restore(d.snapshot()).unwrap();
            assert_eq!(back, d);
            // The restored dialog goes on numbering where the original stopped.
            let mut a = d.clone();
            let mut b = back;
            assert_eq!(
                a.request(Method::Bye).to_bytes(),
                b.request(Method::Bye).to_bytes()
            );
        }
        let mut bad = Dialog::uas(&invite, &ok).unwrap().snapshot();
        bad.remote_target = "not a uri".into();
        assert!(Dialog::restore(bad).is_err());
        let mut bad = Dialog::uas(&invite, &ok).unwrap().snapshot();
        bad.route_set.push("<<<".into());
        assert!(Dialog::restore(bad).is_err());
    }

    #[test]
    fn strict_router_becomes_the_request_uri() {
        let mut invite = lync_invite();
        invite.headers.remove(HeaderName::RecordRoute);
        invite
            .headers
            .push("Record-Route", "<sip:strict.example.com;maddr=192.0.2.7>");
        invite
            .headers
            .push("Record-Route", "<sip:loose.example.com;lr>");
        let ok = ok_for(&invite, "b", "<sip:bob@192.0.2.20>");
        // As the callee, the first route is the strict one.
        let mut uas = Dialog::uas(&invite, &ok).unwrap();
        assert!(!uas.route_set()[0].is_loose());
        let bye = uas.request(Method::Bye);
        assert_eq!(
            bye.uri.to_string(),
            "sip:strict.example.com;maddr=192.0.2.7"
        );
        let routes: Vec<_> = bye.headers.all("Route").collect();
        assert_eq!(
            routes,
            [
                "<sip:loose.example.com;lr>",
                "<sip:alice@contoso.com;opaque=user:epid:abcDEF123xyz_AA;gruu>"
            ]
        );
        // No route set: straight to the remote target, no Route.
        invite.headers.remove(HeaderName::RecordRoute);
        let ok = ok_for(&invite, "b", "<sip:bob@192.0.2.20>");
        let mut uac = Dialog::uac(&invite, &ok).unwrap();
        let bye = uac.request(Method::Bye);
        assert_eq!(bye.uri.to_string(), "sip:bob@192.0.2.20");
        assert!(!bye.headers.contains("Route"));
        assert_eq!(uac.next_hop().to_string(), "sip:bob@192.0.2.20");
    }

    #[test]
    fn cseq_rules_and_target_refresh() {
        let invite = lync_invite();
        let ok = ok_for(&invite, "b", "<sip:bob@192.0.2.20>");
        let mut uac = Dialog::uac(&invite, &ok).unwrap();
        let mut uas = Dialog::uas(&invite, &ok).unwrap();
        assert_eq!(uac.local_seq(), Some(1));
        let ack = uac.ack(1);
        assert_eq!(ack.headers.get("CSeq"), Some("1 ACK"));
        assert_eq!(uac.local_seq(), Some(1), "ACK does not use a new CSeq");
        uas.handle_request(&ack).unwrap();

        // re-INVITE with a new Contact: target refresh.
        uac.set_local_contact("<sip:alice@198.51.100.1:5061;transport=tls>");
        let reinvite = uac.request(Method::Invite);
        assert_eq!(reinvite.headers.get("CSeq"), Some("2 INVITE"));
        assert_eq!(
            reinvite.headers.get("Contact"),
            Some("<sip:alice@198.51.100.1:5061;transport=tls>")
        );
        uas.handle_request(&reinvite).unwrap();
        assert_eq!(
            uas.remote_target().to_string(),
            "sip:alice@198.51.100.1:5061;transport=tls"
        );
        // A 2xx to it updates the caller's target too.
        let ok2 = ok_for(&reinvite, "b", "<sip:bob@192.0.2.21>");
        uac.handle_response(&ok2).unwrap();
        assert_eq!(uac.remote_target().to_string(), "sip:bob@192.0.2.21");

        let info = uac.request(Method::Info);
        let late = uac.request(Method::Info);
        assert_eq!(late.headers.get("CSeq"), Some("4 INFO"));
        uas.handle_request(&late).unwrap();
        // A lower CSeq is out of order: 500 (§12.2.2).
        let err = uas.handle_request(&info).unwrap_err();
        assert_eq!(
            err,
            DialogError::OutOfOrder {
                received: 3,
                remote: 4
            }
        );
        assert_eq!(err.status(), StatusCode::SERVER_INTERNAL_ERROR);
        assert_eq!(uas.remote_seq(), Some(4));
        // Another dialog's request: 481.
        let mut other = info.clone();
        other.headers.set("Call-ID", "other");
        assert_eq!(
            uas.handle_request(&other).unwrap_err().status(),
            StatusCode::CALL_DOES_NOT_EXIST
        );
    }

    #[test]
    fn early_dialog_from_180_then_confirmed_by_200() {
        let invite = lync_invite();
        let mut ringing = invite.response(StatusCode::RINGING, Some("b"));
        ringing.headers.push("Record-Route", RR1);
        ringing.headers.push("Contact", "<sip:bob@192.0.2.20>");
        let mut d = Dialog::uac(&invite, &ringing).unwrap();
        assert_eq!(d.state(), DialogState::Early);
        assert_eq!(d.route_set().len(), 1);
        // 100 and a 180 without To tag create nothing; nor does a 486.
        let trying = invite.response(StatusCode::TRYING, None);
        assert_eq!(
            Dialog::uac(&invite, &trying),
            Err(DialogError::NotDialogCreating)
        );
        let untagged = invite.response(StatusCode::RINGING, None);
        assert_eq!(
            Dialog::uac(&invite, &untagged),
            Err(DialogError::NotDialogCreating)
        );
        let busy = invite.response(StatusCode::new(486).unwrap(), Some("b"));
        assert_eq!(
            Dialog::uac(&invite, &busy),
            Err(DialogError::NotDialogCreating)
        );

        let ok = ok_for(&invite, "b", "<sip:bob@192.0.2.22>");
        d.handle_response(&ok).unwrap();
        assert_eq!(d.state(), DialogState::Confirmed);
        let raws: Vec<_> = d.route_set().iter().map(RouteEntry::raw).collect();
        assert_eq!(raws, [RR2, RR1], "recomputed from the 2xx");
        assert_eq!(d.remote_target().to_string(), "sip:bob@192.0.2.22");

        // UAS side: early on the 180, confirmed when it sends the 2xx.
        let mut uas = Dialog::uas(&invite, &ringing).unwrap();
        assert_eq!(uas.state(), DialogState::Early);
        uas.confirm();
        assert_eq!(uas.state(), DialogState::Confirmed);
    }

    #[test]
    fn subscribe_notify_dialogs() {
        let subscribe = req(include_bytes!("../tests/fixtures/lync_subscribe.sip"));
        let mut sub_ok = subscribe.response(StatusCode::OK, Some("ntf-1"));
        sub_ok.headers.push("Record-Route", RR1);
        sub_ok
            .headers
            .push("Contact", "<sip:pool01.contoso.com:5061;transport=tls>");
        sub_ok.headers.push("Expires", "3600");

        // The notifier's dialog, and its first NOTIFY (CSeq 1, Contact as target refresh).
        let mut notifier = Dialog::uas(&subscribe, &sub_ok).unwrap();
        notifier.set_local_contact("<sip:pool01.contoso.com:5061;transport=tls>");
        let mut notify = notifier.request(Method::Notify);
        notify.headers.push("Event", "presence");
        notify
            .headers
            .push("Subscription-State", "active;expires=3600");
        // The network adds what the 200 carried (the proxy record-routes the NOTIFY too).
        notify.headers.push("Record-Route", RR1);
        assert_eq!(notify.headers.get("CSeq"), Some("1 NOTIFY"));
        assert_eq!(
            notify.uri.to_string(),
            "sip:alice@contoso.com;opaque=user:epid:abcDEF123xyz_AA;gruu"
        );

        // The NOTIFY overtakes the 200: it creates the subscriber's dialog (RFC 6665).
        let mut subscriber = Dialog::uac_from_notify(&subscribe, &notify).unwrap();
        assert_eq!(subscriber.state(), DialogState::Confirmed);
        assert_eq!(subscriber.remote_seq(), Some(1));
        assert_eq!(subscriber.route_set()[0].raw(), RR1);
        assert_eq!(
            DialogId::for_request(&notify).as_ref(),
            Some(subscriber.id())
        );
        // Then the 200 arrives and belongs to the same dialog.
        assert_eq!(
            DialogId::for_response(&sub_ok).as_ref(),
            Some(subscriber.id())
        );
        subscriber.handle_response(&sub_ok).unwrap();
        // The same dialog also results from the 200 alone.
        let from_ok = Dialog::uac(&subscribe, &sub_ok).unwrap();
        assert_eq!(from_ok.id(), subscriber.id());
        assert_eq!(from_ok.remote_target(), subscriber.remote_target());

        // Refresh SUBSCRIBE in dialog: CSeq 2, Contact, From with epid.
        let refresh = subscriber.request(Method::Subscribe);
        assert_eq!(refresh.headers.get("CSeq"), Some("2 SUBSCRIBE"));
        assert!(refresh
            .headers
            .get("From")
            .unwrap()
            .ends_with(";tag=8a2c3b4d5e;epid=01010101af"));
        assert!(refresh.headers.contains("Contact"));
        notifier.handle_request(&refresh).unwrap();
        assert_eq!(notifier.remote_seq(), Some(2));
        // Next NOTIFY has CSeq 2 and is in order at the subscriber.
        let notify2 = notifier.request(Method::Notify);
        subscriber.handle_request(&notify2).unwrap();
        assert_eq!(subscriber.remote_seq(), Some(2));
        assert_eq!(
            subscriber
                .handle_request(&notify)
                .unwrap_err()
                .status()
                .code(),
            500
        );
        // A NOTIFY for another subscription does not create this dialog.
        let mut stranger = notify.clone();
        stranger
            .headers
            .set("To", "<sip:alice@contoso.com>;tag=zzz");
        assert_eq!(
            Dialog::uac_from_notify(&subscribe, &stranger),
            Err(DialogError::WrongDialog)
        );
    }

    #[test]
    fn record_route_helper_adds_lr_on_top() {
        let mut invite = lync_invite();
        let uri: Uri = "sip:edge.entente.example:5061;transport=tls"
            .parse()
            .unwrap();
        let Uri::Sip(uri) = uri else { panic!() };
        add_record_route(&mut invite, uri);
        let rrs = invite.headers.record_routes().unwrap();
        assert_eq!(rrs.len(), 3);
        assert_eq!(
            rrs[0].uri.to_string(),
            "sip:edge.entente.example:5061;transport=tls;lr"
        );
        let entries = record_route_entries(&invite.headers).unwrap();
        assert_eq!(entries[1].raw(), RR1);
        assert!(entries.iter().all(RouteEntry::is_loose));
    }

    /// INVITE, 200, ACK, BYE, 200 between two transaction layers on the simulated network,
    /// with the dialogs built from what actually crossed the wire.
    #[test]
    fn call_over_the_transaction_layer() {
        use crate::test_util::{request, Pair};
        use crate::transaction::Event;
        let mut p = Pair::new(false);
        let (now, dest) = (p.now, p.b.addr);
        let invite = request(Method::Invite, "call-e2e");
        let ikey = p.a.layer.send_request(invite, dest, false, now).unwrap();
        p.drive();
        let Some((
            _,
            Event::Request {
                key, request: inv, ..
            },
        )) = p.b.events.pop()
        else {
            panic!()
        };
        let mut ok = inv.response(StatusCode::OK, Some("bob-e2e"));
        ok.headers.push("Contact", "<sip:bob@192.0.2.2:5060>");
        let mut uas = Dialog::uas(&inv, &ok).unwrap();
        p.b.layer.respond(key, ok, now).unwrap();
        p.drive();
        let Some((_, Event::Response { key: k, response })) = p.a.events.pop() else {
            panic!()
        };
        assert_eq!(k, ikey);
        let sent_invite = p.a.layer.client_request(ikey).unwrap().clone();
        let mut uac = Dialog::uac(&sent_invite, &response).unwrap();
        let ack = uac.ack(1);
        p.a.layer.send_ack(ack, dest);
        p.drive();
        let Some((
            _,
            Event::Ack {
                key: Some(acked),
                request: ack,
                ..
            },
        )) = p.b.events.pop()
        else {
            panic!()
        };
        assert_eq!(acked, key);
        uas.handle_request(&ack).unwrap();
        // Ten minutes of talk, then BYE.
        p.run_for(std::time::Duration::from_secs(600));
        let bye = uac.request(Method::Bye);
        let bkey = p.a.layer.send_request(bye, dest, false, p.now).unwrap();
        p.drive();
        let Some((
            _,
            Event::Request {
                key, request: bye, ..
            },
        )) =
            p.b.events
                .iter()
                .rev()
                .find(|(_, e)| matches!(e, Event::Request { .. }))
                .cloned()
        else {
            panic!()
        };
        uas.handle_request(&bye).unwrap();
        let now = p.now;
        p.b.layer
            .respond(key, bye.response(StatusCode::OK, None), now)
            .unwrap();
        p.drive();
        assert!(p.a.events.iter().any(|(_, e)| matches!(e,
            Event::Response { key, response } if *key == bkey && response.status == StatusCode::OK)));
        p.run_to_quiescence();
        assert_eq!(p.a.layer.counts(), (0, 0));
        assert_eq!(p.b.layer.counts(), (0, 0));
    }
}
