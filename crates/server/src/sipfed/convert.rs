//! What crosses the XMPP ↔ SIP border: presence (RFC 7248 as updated by RFC 8048, through the
//! availability tables of `entente_model::availability`), instant messages and typing
//! notifications (RFC 7572, RFC 3994 ↔ XEP-0085), and addresses (RFC 7247 §5).

use entente_model::availability::{
    decode, encode, map, Presence, PresenceSet, Profile, Wire, XmppPresence,
};
use entente_model::jid::Jid;
use entente_model::pidf::PidfDocument;
use entente_model::sipaddr;
use entente_sip_proto::{SipUri, Uri};
use entente_xmpp_proto::element::NS_CLIENT;
use entente_xmpp_proto::Element;

use crate::presence_map;

/// XEP-0085 chat states.
pub const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";

/// A local user's presence stanza in canonical form, as our third-party XMPP clients mean it.
pub fn canonical_from_stanza(el: &Element) -> Presence {
    presence_map::fields(el).to_presence()
}

/// The aggregate of a user's resources (offline when there is none).
pub fn aggregate<'a>(resources: impl Iterator<Item = (&'a String, &'a Presence)>) -> Presence {
    let mut set = PresenceSet::new();
    for (r, p) in resources {
        set.update(r.clone(), p.clone());
    }
    if set.is_empty() {
        Presence::offline()
    } else {
        set.aggregate()
    }
}

/// The PIDF document (RFC 3863 with RPID, RFC 4480; for `lync`/`moc` with the availability
/// numbers those clients use) that a peer of `profile` gets for `presence`.
pub fn pidf_for_peer(presence: &Presence, profile: Profile, entity: &str) -> String {
    let mapped = map(presence, Profile::Xmpp, profile);
    match encode(&mapped, profile, entity) {
        Wire::Pidf(doc) => doc.to_xml(),
        // Configuration validation keeps XMPP profiles off SIP peers; be safe anyway.
        _ => match encode(&mapped, Profile::Simple, entity) {
            Wire::Pidf(doc) => doc.to_xml(),
            _ => String::new(),
        },
    }
}

/// A NOTIFY's PIDF body from a peer of `profile` as the presence stanza our clients see.
pub fn stanza_from_pidf(
    body: &str,
    profile: Profile,
    from: &Jid,
    to: &Jid,
) -> Result<Element, entente_model::pidf::PidfError> {
    let doc = PidfDocument::parse(body)?;
    let canonical = decode(&Wire::Pidf(doc), profile);
    let mapped = map(&canonical, profile, Profile::Xmpp);
    let x = XmppPresence::from_presence(&mapped);
    let mut el = Element::new("presence", NS_CLIENT)
        .attr("from", from.to_string())
        .attr("to", to.to_string());
    presence_map::apply(&mut el, &x);
    Ok(el)
}

/// An unavailable presence stanza from `from` to `to`, with an optional status.
pub fn unavailable(from: &Jid, to: &Jid, status: Option<&str>) -> Element {
    let mut el = Element::new("presence", NS_CLIENT)
        .attr("type", "unavailable")
        .attr("from", from.to_string())
        .attr("to", to.to_string());
    if let Some(s) = status {
        el = el.child(Element::new("status", NS_CLIENT).text(s));
    }
    el
}

/// A subscription-state presence (`subscribed`, `unsubscribed`, …) from `from` to `to`.
pub fn sub_presence(kind: &str, from: &Jid, to: &Jid, status: Option<&str>) -> Element {
    let mut el = Element::new("presence", NS_CLIENT)
        .attr("type", kind)
        .attr("from", from.to_string())
        .attr("to", to.to_string());
    if let Some(s) = status {
        el = el.child(Element::new("status", NS_CLIENT).text(s));
    }
    el
}

/// What an XMPP message to a SIP contact carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    pub body: Option<String>,
    /// The XEP-0085 chat state element's name, if any.
    pub chat_state: Option<String>,
}

/// Reads the body and chat state of a message stanza.
pub fn outbound_message(el: &Element) -> OutboundMessage {
    OutboundMessage {
        body: el
            .find("body", NS_CLIENT)
            .map(|b| b.text_content())
            .filter(|b| !b.is_empty()),
        chat_state: el
            .elements()
            .find(|c| c.ns == NS_CHATSTATES)
            .map(|c| c.name.clone()),
    }
}

/// A chat message from a SIP contact.
pub fn chat_message(from: &Jid, to: &Jid, body: &str) -> Element {
    Element::new("message", NS_CLIENT)
        .attr("type", "chat")
        .attr("from", from.to_string())
        .attr("to", to.to_string())
        .attr("id", entente_xmpp_proto::c2s::new_id())
        .child(Element::new("body", NS_CLIENT).text(body))
        .child(Element::new("active", NS_CHATSTATES))
}

/// A typing notification from a SIP contact (RFC 3994 `active` → XEP-0085 `composing`,
/// `idle` → `paused`).
pub fn chat_state_message(from: &Jid, to: &Jid, composing: bool) -> Element {
    Element::new("message", NS_CLIENT)
        .attr("type", "chat")
        .attr("from", from.to_string())
        .attr("to", to.to_string())
        .attr("id", entente_xmpp_proto::c2s::new_id())
        .child(Element::new(
            if composing { "composing" } else { "paused" },
            NS_CHATSTATES,
        ))
}

/// The text of a `text/html` body, tags removed and the common entities decoded: Lync and
/// some gateways send IM as HTML; our clients get plain text.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

/// The JID of a SIP address (`sip:`/`sips:` URI) from a peer, bare (no `;gr`). `aol`: map AOL
/// e-mail screen names. `None` for other schemes or addresses that make no JID.
pub fn jid_of_uri(uri: &Uri, aol: bool) -> Option<Jid> {
    let sip = uri.as_sip()?;
    jid_of_sip(sip, aol)
}

/// [`jid_of_uri`] for a SIP URI.
pub fn jid_of_sip(sip: &SipUri, aol: bool) -> Option<Jid> {
    let user = sip.user_decoded()?;
    let host = sip.host.to_string();
    sipaddr::jid_from_sip(&user, &host, None, aol)
        .ok()
        .map(|j| j.to_bare())
}

/// The contact's JID with the resource its Contact's GRUU names (RFC 5627 `;gr=`), when it has
/// one; the bare JID otherwise.
pub fn with_gruu_resource(bare: &Jid, contact: Option<&Uri>) -> Jid {
    contact
        .and_then(Uri::as_sip)
        .and_then(|u| u.params.value("gr"))
        .map(|gr| String::from_utf8_lossy(&entente_sip_proto::percent_decode(gr)).into_owned())
        .filter(|gr| !gr.is_empty())
        .and_then(|gr| bare.with_resource(&gr).ok())
        .unwrap_or_else(|| bare.clone())
}

/// The SIP URI of a JID: its address of record, with `;gr=` naming the resource of a full JID.
pub fn target_uri_of_jid(jid: &Jid, aol: bool) -> Option<String> {
    sipaddr::sip_from_jid(jid, aol).ok().map(|a| a.to_uri())
}

/// The SIP address-of-record URI of a JID (bare).
pub fn uri_of_jid(jid: &Jid, aol: bool) -> Option<String> {
    sipaddr::sip_from_jid(&jid.to_bare(), aol)
        .ok()
        .map(|a| a.aor())
}

#[cfg(test)]
mod tests {
    use super::*;
    use entente_model::availability::Availability;

    fn j(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    #[test]
    fn lync_busy_reaches_xmpp_as_away_busy_and_back() {
        // Table 1-1 note: Busy reaches a third-party XMPP client as Away with status "Busy".
        let doc = pidf_for_peer(
            &Presence::new(Availability::Busy),
            Profile::Lync,
            "sip:a@b.test",
        );
        assert!(doc.contains("6500"), "{doc}");
        let el = stanza_from_pidf(&doc, Profile::Lync, &j("a@b.test"), &j("u@x.test")).unwrap();
        let f = presence_map::fields(&el);
        assert_eq!(f.show, Some(entente_model::availability::XmppShow::Away));
        assert_eq!(f.status.as_deref(), Some("Busy"));
    }

    #[test]
    fn offline_pidf_is_unavailable() {
        let doc = pidf_for_peer(&Presence::offline(), Profile::Simple, "sip:a@b.test");
        let el = stanza_from_pidf(&doc, Profile::Simple, &j("a@b.test"), &j("u@x.test")).unwrap();
        assert_eq!(el.get_attr("type"), Some("unavailable"));
        assert!(
            stanza_from_pidf("<nope", Profile::Simple, &j("a@b.test"), &j("u@x.test")).is_err()
        );
    }

    #[test]
    fn aggregate_of_nothing_is_offline() {
        let none: Vec<(String, Presence)> = Vec::new();
        assert_eq!(
            aggregate(none.iter().map(|(a, b)| (a, b))).availability,
            Availability::Offline
        );
    }

    #[test]
    fn messages_and_chat_states() {
        let m = chat_message(&j("a@sip.test"), &j("u@x.test"), "hi");
        let o = outbound_message(&m);
        assert_eq!(o.body.as_deref(), Some("hi"));
        assert_eq!(o.chat_state.as_deref(), Some("active"));
        let c = chat_state_message(&j("a@sip.test"), &j("u@x.test"), true);
        assert_eq!(
            outbound_message(&c).chat_state.as_deref(),
            Some("composing")
        );
        assert_eq!(outbound_message(&c).body, None);
    }

    #[test]
    fn gruus_are_resources() {
        let bare = j("sam@simple.test");
        let c: Uri = "sip:sam@simple.test;gr=urn:uuid:f81d4fae".parse().unwrap();
        let full = with_gruu_resource(&bare, Some(&c));
        assert_eq!(full.to_string(), "sam@simple.test/urn:uuid:f81d4fae");
        assert_eq!(
            target_uri_of_jid(&full, false).as_deref(),
            Some("sip:sam@simple.test;gr=urn:uuid:f81d4fae")
        );
        let lync: Uri = "sip:sam@simple.test;opaque=user:epid:x;gruu"
            .parse()
            .unwrap();
        assert_eq!(with_gruu_resource(&bare, Some(&lync)), bare);
        assert_eq!(with_gruu_resource(&bare, None), bare);
    }

    #[test]
    fn html_bodies_become_text() {
        assert_eq!(html_to_text("<b>Hi</b> &amp; bye&lt;3"), "Hi & bye<3");
    }
}
