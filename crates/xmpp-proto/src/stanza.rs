//! Stanza helpers: kinds, error replies (RFC 6120 §8.3) and common namespaces.

use crate::element::{Element, NS_CLIENT};

pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const NS_ROSTER: &str = "jabber:iq:roster";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const NS_VERSION: &str = "jabber:iq:version";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_BLOCKING: &str = "urn:xmpp:blocking";
pub const NS_BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
pub const NS_DELAY: &str = "urn:xmpp:delay";
pub const NS_OFFLINE: &str = "msgoffline";
pub const NS_IDLE: &str = "urn:xmpp:idle:1";
pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";

/// The three stanza kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message,
    Presence,
    Iq,
}

impl Kind {
    pub fn of(e: &Element) -> Option<Kind> {
        if e.ns != NS_CLIENT && e.ns != crate::element::NS_SERVER {
            return None;
        }
        match e.name.as_str() {
            "message" => Some(Kind::Message),
            "presence" => Some(Kind::Presence),
            "iq" => Some(Kind::Iq),
            _ => None,
        }
    }
}

/// Error type attribute (RFC 6120 §8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// Builds an `<error/>` child.
pub fn error_element(etype: ErrorType, condition: &str, text: Option<&str>) -> Element {
    let mut err = Element::new("error", NS_CLIENT)
        .attr("type", etype.as_str())
        .child(Element::new(condition, NS_STANZAS));
    if let Some(t) = text {
        err = err.child(Element::new("text", NS_STANZAS).text(t));
    }
    err
}

/// Turns a stanza into its error reply (RFC 6120 §8.3.1): addresses swapped, type `error`, the
/// original payload kept, an `<error/>` child added. Returns `None` for a stanza that is itself an
/// error (errors are never answered with errors).
pub fn error_reply(
    stanza: &Element,
    etype: ErrorType,
    condition: &str,
    text: Option<&str>,
) -> Option<Element> {
    if stanza.get_attr("type") == Some("error") {
        return None;
    }
    let mut e = stanza.clone();
    let from = e.remove_attr("from");
    let to = e.remove_attr("to");
    if let Some(f) = from {
        e.set_attr("to", f);
    }
    if let Some(t) = to {
        e.set_attr("from", t);
    }
    e.set_attr("type", "error");
    if Kind::of(stanza) == Some(Kind::Iq) {
        // An IQ error carries no payload requirement; keep it small.
        e.children.clear();
    }
    e.children.push(crate::element::Node::Element(error_element(
        etype, condition, text,
    )));
    Some(e)
}

/// An IQ result for `iq`, with an optional payload.
pub fn iq_result(iq: &Element, payload: Option<Element>) -> Element {
    let mut r = Element::new("iq", NS_CLIENT).attr("type", "result");
    if let Some(id) = iq.get_attr("id") {
        r.set_attr("id", id);
    }
    if let Some(f) = iq.get_attr("from") {
        r.set_attr("to", f);
    }
    if let Some(t) = iq.get_attr("to") {
        r.set_attr("from", t);
    }
    if let Some(p) = payload {
        r = r.child(p);
    }
    r
}

/// The first child element of an IQ (its payload).
pub fn iq_payload(iq: &Element) -> Option<&Element> {
    iq.elements().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reply_swaps_addresses() {
        let m = Element::new("message", NS_CLIENT)
            .attr("from", "a@x/r")
            .attr("to", "b@y")
            .child(Element::new("body", NS_CLIENT).text("hi"));
        let r = error_reply(&m, ErrorType::Cancel, "service-unavailable", Some("no")).unwrap();
        assert_eq!(r.get_attr("to"), Some("a@x/r"));
        assert_eq!(r.get_attr("from"), Some("b@y"));
        assert_eq!(r.get_attr("type"), Some("error"));
        assert!(r
            .find("error", NS_CLIENT)
            .unwrap()
            .find("service-unavailable", NS_STANZAS)
            .is_some());
        assert!(error_reply(&r, ErrorType::Cancel, "x", None).is_none());
    }
}
