//! The transaction user interface ([`SipHandler`]) and the default one ([`DefaultHandler`]).

use entente_sip_proto::{Method, Request, Response, ServerTxKey, StatusCode, TransportAddr};

use super::endpoint::{PeerInfo, SipHandle};

/// A new request, for the transaction user.
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    /// The server transaction to answer on ([`SipHandle::respond`]).
    pub key: ServerTxKey,
    /// The request, with `received`/`rport` added to its top Via (RFC 3261 §18.2.1).
    pub request: Request,
    /// Where it came from; for TLS, the names the peer's certificate is valid for. The
    /// federation layer checks the From domain against these.
    pub source: PeerInfo,
}

/// Other things a transaction user may want to know about server transactions.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ServerEvent {
    /// The ACK for a 2xx to an INVITE (`key`: the INVITE's transaction, if still known).
    Ack {
        key: Option<ServerTxKey>,
        request: Request,
        source: TransportAddr,
    },
    /// A CANCEL matched this INVITE while it was pending; the endpoint has already answered
    /// the CANCEL with `200` and the INVITE with `487` (§9.2).
    Cancelled { key: ServerTxKey, cancel: Request },
    /// Timer H (no ACK for our non-2xx final response to an INVITE) or Timer L (no ACK for
    /// our 2xx) fired.
    Timeout { key: ServerTxKey },
}

/// The transaction user: what the endpoint does with incoming requests.
///
/// Called from the endpoint task, so it must not block. Return `Some(response)` to answer at
/// once (no extra hop through a channel: the right thing for decisions that need no I/O), or
/// `None` and answer later with [`SipHandle::respond`] (clone the handle and spawn a task for
/// anything that awaits). An INVITE left unanswered gets `100 Trying` from the transaction
/// layer after 200 ms (§17.2.1).
pub trait SipHandler: Send + Sync + 'static {
    /// A new request (never ACK or CANCEL, which the transaction layer handles).
    fn on_request(&self, request: IncomingRequest, sip: &SipHandle) -> Option<Response>;

    /// ACKs for 2xx, cancelled INVITEs and server transaction timeouts. Ignored by default.
    fn on_event(&self, _event: ServerEvent) {}
}

/// Methods listed in `Allow`: RFC 3261's core methods we will serve, plus the ones SIP/SIMPLE
/// federation uses (RFC 3428 MESSAGE, RFC 6665 SUBSCRIBE/NOTIFY, RFC 6086 INFO).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY, INFO";

/// Body types listed in `Accept`: presence documents (RFC 3863), pager-mode IM text (RFC
/// 3428), typing notifications (RFC 3994), SDP for MSRP/IM sessions (RFC 4566), and
/// multipart/related for RLMI resource lists (RFC 4662).
pub const ACCEPT: &str = "application/pidf+xml, text/plain, application/im-iscomposing+xml, \
application/sdp, multipart/related";

/// Option tags listed in `Supported`: none. We implement no SIP extension with an option tag
/// yet (not 100rel, timer, replaces, eventlist nor outbound; answering CRLF keep-alives is
/// not RFC 5626 `outbound` support), and an empty Supported is valid (RFC 3261 §20.37 grammar:
/// `Supported = "Supported" HCOLON [option-tag *(COMMA option-tag)]`) and says exactly that.
pub const SUPPORTED: &str = "";

/// The reason phrase of the `403` for a domain that is not permitted.
pub const NOT_PERMITTED: &str = "Domain not permitted";

/// A transaction user that federates with nobody (the stack's own tests use it).
///
/// - `OPTIONS` (RFC 3261 §11): `200 OK` with `Allow`, `Accept` and `Supported`. Peers (Lync,
///   Skype for Business) use OPTIONS as a federation health check.
/// - Every other request: `403 Domain not permitted`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultHandler;

impl SipHandler for DefaultHandler {
    fn on_request(&self, incoming: IncomingRequest, _sip: &SipHandle) -> Option<Response> {
        Some(default_response(&incoming.request))
    }
}

/// The [`DefaultHandler`]'s answer to `request`.
pub fn default_response(request: &Request) -> Response {
    let tag = super::new_tag();
    if request.method == Method::Options {
        let mut r = request.response(StatusCode::OK, Some(&tag));
        r.headers.push("Allow", ALLOW);
        r.headers.push("Accept", ACCEPT);
        r.headers.push("Supported", SUPPORTED);
        r
    } else {
        let mut r = request.response(StatusCode::FORBIDDEN, Some(&tag));
        r.reason = NOT_PERMITTED.to_owned();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use entente_sip_proto::{parse, Message};

    fn req(method: &str) -> Request {
        let raw = format!(
            "{method} sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
             From: <sip:a@example.org>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: c1\r\n\
             CSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        match parse(raw.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn options_lists_capabilities() {
        let r = default_response(&req("OPTIONS"));
        assert_eq!(r.status, StatusCode::OK);
        let allow: Vec<Method> = r.headers.allow().unwrap();
        for m in [
            Method::Invite,
            Method::Options,
            Method::Subscribe,
            Method::Notify,
            Method::Message,
        ] {
            assert!(allow.contains(&m), "{m:?}");
        }
        assert!(r
            .headers
            .get("Accept")
            .unwrap()
            .contains("application/pidf+xml"));
        assert!(r.headers.contains("Supported"));
        assert!(r.headers.to().unwrap().tag().is_some());
        // What goes on the wire parses back with our own strict parser.
        let again = parse(&r.to_bytes()).unwrap();
        assert!(again.headers().contains("Supported"));
    }

    #[test]
    fn everything_else_is_forbidden() {
        for m in [
            "INVITE",
            "MESSAGE",
            "SUBSCRIBE",
            "NOTIFY",
            "BYE",
            "REGISTER",
            "FOO",
        ] {
            let r = default_response(&req(m));
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{m}");
            assert_eq!(r.reason, NOT_PERMITTED);
            assert!(r
                .to_bytes()
                .starts_with(b"SIP/2.0 403 Domain not permitted\r\n"));
        }
    }
}
