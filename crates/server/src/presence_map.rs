//! Presence crossing the XMPP federation border, rendered through the availability mapping
//! (`entente_model::availability`, the seed's tables 1-1 to 1-15).
//!
//! A foreign XMPP domain may be given a profile (`[[s2s.peer]] profile = "webex"`, `sametime`,
//! `fed-xmpp`, …). Presence from it is decoded from its wire form, mapped from that profile to
//! our third-party XMPP clients (`xmpp`), and encoded again; presence towards it is mapped from
//! `xmpp` to its profile. Without a profile, presence passes unchanged (a standard XMPP server's
//! clients see what ours see).

use entente_model::availability::{
    decode, encode, map, Profile, Timestamp, Wire, XmppPresence, XmppPresenceType, XmppShow,
};
use entente_xmpp_proto::element::{Node, NS_CLIENT};
use entente_xmpp_proto::stanza::NS_IDLE;
use entente_xmpp_proto::Element;

/// Whether a stanza is presence that carries availability (not a subscription or probe).
fn is_availability(el: &Element) -> bool {
    el.name == "presence" && matches!(el.get_attr("type"), None | Some("unavailable"))
}

/// The availability fields of a presence stanza.
pub fn fields(el: &Element) -> XmppPresence {
    let show = el
        .find("show", NS_CLIENT)
        .and_then(|s| match s.text_content().trim() {
            "away" => Some(XmppShow::Away),
            "chat" => Some(XmppShow::Chat),
            "dnd" => Some(XmppShow::Dnd),
            "xa" => Some(XmppShow::Xa),
            _ => None,
        });
    XmppPresence {
        kind: if el.get_attr("type") == Some("unavailable") {
            XmppPresenceType::Unavailable
        } else {
            XmppPresenceType::Available
        },
        show,
        status: el
            .find("status", NS_CLIENT)
            .map(|s| s.text_content())
            .filter(|s| !s.is_empty()),
        priority: el
            .find("priority", NS_CLIENT)
            .and_then(|p| p.text_content().trim().parse().ok())
            .unwrap_or(0),
        idle_since: el
            .find("idle", NS_IDLE)
            .and_then(|i| i.get_attr("since"))
            .and_then(|s| s.parse::<Timestamp>().ok()),
    }
}

/// Rewrites a presence stanza's availability fields, keeping everything else (caps, vCard
/// hashes, …).
pub fn apply(el: &mut Element, f: &XmppPresence) {
    el.remove_children("show", NS_CLIENT);
    el.remove_children("status", NS_CLIENT);
    el.remove_children("idle", NS_IDLE);
    match f.kind {
        XmppPresenceType::Unavailable => {
            el.set_attr("type", "unavailable");
        }
        _ => {
            el.remove_attr("type");
        }
    }
    let mut add = Vec::new();
    if let Some(show) = f.show {
        let v = match show {
            XmppShow::Away => "away",
            XmppShow::Chat => "chat",
            XmppShow::Dnd => "dnd",
            XmppShow::Xa => "xa",
            _ => "away",
        };
        add.push(Element::new("show", NS_CLIENT).text(v));
    }
    if let Some(st) = &f.status {
        add.push(Element::new("status", NS_CLIENT).text(st.clone()));
    }
    if let Some(since) = f.idle_since {
        add.push(Element::new("idle", NS_IDLE).attr("since", since.to_string()));
    }
    for (i, e) in add.into_iter().enumerate() {
        el.children.insert(i, Node::Element(e));
    }
}

/// Maps presence from a foreign profile to what our XMPP clients should see.
pub fn from_peer(el: &mut Element, peer: Profile) {
    convert(el, peer, Profile::Xmpp);
}

/// Maps a local user's presence to what a foreign profile's users should see.
pub fn to_peer(el: &mut Element, peer: Profile) {
    convert(el, Profile::Xmpp, peer);
}

fn convert(el: &mut Element, from: Profile, to: Profile) {
    if !is_availability(el) || from == to {
        return;
    }
    if !matches!(to.wire_kind(), entente_model::availability::WireKind::Xmpp)
        || !matches!(
            from.wire_kind(),
            entente_model::availability::WireKind::Xmpp
        )
    {
        // PIDF-speaking profiles are SIP peers; nothing to do on an XMPP stream.
        return;
    }
    let src = fields(el);
    let canonical = decode(&Wire::Xmpp(src.clone()), from);
    let mapped = map(&canonical, from, to);
    if let Wire::Xmpp(mut out) = encode(&mapped, to, "") {
        out.priority = src.priority;
        apply(el, &out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(show: Option<&str>, status: Option<&str>) -> Element {
        let mut p = Element::new("presence", NS_CLIENT).attr("from", "u@webex.example");
        if let Some(s) = show {
            p = p.child(Element::new("show", NS_CLIENT).text(s));
        }
        if let Some(s) = status {
            p = p.child(Element::new("status", NS_CLIENT).text(s));
        }
        p.child(Element::new("c", "http://jabber.org/protocol/caps").attr("node", "n"))
    }

    #[test]
    fn webex_meeting_is_available_in_a_meeting() {
        // Table 1-12: Webex "Away with status In a meeting" → XMPP "Available, In a meeting".
        let mut p = presence(Some("away"), Some("In a meeting"));
        from_peer(&mut p, Profile::Webex);
        let f = fields(&p);
        assert_eq!(f.show, None);
        assert_eq!(f.status.as_deref(), Some("In a meeting"));
        // Other children survive.
        assert!(p.find("c", "http://jabber.org/protocol/caps").is_some());
    }

    #[test]
    fn unprofiled_or_subscription_presence_is_untouched() {
        let mut p = presence(Some("dnd"), Some("x"));
        let before = p.clone();
        from_peer(&mut p, Profile::Xmpp);
        assert_eq!(p, before);
        let mut s = Element::new("presence", NS_CLIENT).attr("type", "subscribe");
        let before = s.clone();
        from_peer(&mut s, Profile::Webex);
        assert_eq!(s, before);
    }
}
