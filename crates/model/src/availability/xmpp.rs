//! The XMPP wire form of a presence, as plain fields (RFC 6121 §4.7, XEP-0319).
//!
//! The XMPP protocol crate turns an [`XmppPresence`] into `<presence/>` XML and back; this module
//! only decides the fields.
//!
//! Encoding (canonical → XMPP):
//!
//! | canonical      | `type`        | `<show/>` | `<status/>`                         |
//! |----------------|---------------|-----------|-------------------------------------|
//! | Available      | (available)   | none      | text                                |
//! | Busy           | (available)   | `dnd`     | text (XMPP has no Busy; see below)  |
//! | Do Not Disturb | (available)   | `dnd`     | text                                |
//! | Be Right Back  | (available)   | `away`    | text                                |
//! | Away           | (available)   | `away`    | text                                |
//! | Extended Away  | (available)   | `xa`      | text                                |
//! | Idle           | (available)   | `away`    | text, or "Idle" when there is none  |
//! | Invisible      | `unavailable` | none      | none (nothing may leak)             |
//! | Offline        | `unavailable` | none      | text                                |
//!
//! XEP-0319 `<idle since=…/>` is sent whenever `idle_since` is known, except on Away and Be
//! Right Back (`away` plus an idle time reads as Idle). Busy → `dnd` follows the
//! common RPID `busy` ↔ XMPP `dnd` correspondence; the *mapping* rarely lets Busy reach XMPP
//! (the seed tables turn it into Away + "Busy").
//!
//! Decoding (XMPP → canonical): `unavailable` → Offline; no `<show/>` or `chat` → Available;
//! `dnd` → Do Not Disturb; `xa` → Extended Away; `away` → Idle when an XEP-0319 time is present
//! or the status is exactly "Idle" (the tables' own way of writing Idle on XMPP), else Away. On
//! Idle the marker text "Idle" is dropped. Hence what XMPP cannot round-trip: Busy (→ Do Not
//! Disturb), Be Right Back (→ Away), Idle with a text but no time (→ Away), the idle time of
//! Away, Invisible (→ Offline).

use super::profile::IDLE_STATUS;
use super::{clean_status, Availability, Presence, Timestamp};

/// `<presence/>` type: only the two that carry availability (subscription types are elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum XmppPresenceType {
    /// No `type` attribute.
    Available,
    /// `type='unavailable'`.
    Unavailable,
}

/// `<show/>` values (RFC 6121 §4.7.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum XmppShow {
    /// `away`.
    Away,
    /// `chat`.
    Chat,
    /// `dnd`.
    Dnd,
    /// `xa`.
    Xa,
}

impl XmppShow {
    /// The element text.
    pub fn as_str(self) -> &'static str {
        match self {
            XmppShow::Away => "away",
            XmppShow::Chat => "chat",
            XmppShow::Dnd => "dnd",
            XmppShow::Xa => "xa",
        }
    }

    /// Parses the element text; anything else is `None` (RFC 6121 allows only these four).
    pub fn parse(s: &str) -> Option<XmppShow> {
        match s.trim() {
            "away" => Some(XmppShow::Away),
            "chat" => Some(XmppShow::Chat),
            "dnd" => Some(XmppShow::Dnd),
            "xa" => Some(XmppShow::Xa),
            _ => None,
        }
    }
}

/// The availability-bearing fields of an XMPP `<presence/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmppPresence {
    /// Available or unavailable.
    pub kind: XmppPresenceType,
    /// `<show/>`; `None` means plain available.
    pub show: Option<XmppShow>,
    /// `<status/>` (one language; the XML crate picks which `xml:lang`).
    pub status: Option<String>,
    /// `<priority/>`.
    pub priority: i8,
    /// XEP-0319 `<idle xmlns='urn:xmpp:idle:1' since=…/>`.
    pub idle_since: Option<Timestamp>,
}

impl XmppPresence {
    /// Encodes a canonical presence (see the module table).
    pub fn from_presence(p: &Presence) -> XmppPresence {
        use Availability::*;
        let (kind, show) = match p.availability {
            Available => (XmppPresenceType::Available, None),
            Busy | DoNotDisturb => (XmppPresenceType::Available, Some(XmppShow::Dnd)),
            BeRightBack | Away | Idle => (XmppPresenceType::Available, Some(XmppShow::Away)),
            ExtendedAway => (XmppPresenceType::Available, Some(XmppShow::Xa)),
            Invisible | Offline => (XmppPresenceType::Unavailable, None),
        };
        let status = match p.availability {
            Invisible => None,
            Idle if p.status.is_none() && p.idle_since.is_none() => Some(IDLE_STATUS.to_owned()),
            _ => p.status.clone(),
        };
        XmppPresence {
            kind,
            show,
            status,
            priority: p.priority,
            // On `away`, an idle time *means* Idle; so only Idle carries it there.
            idle_since: match (p.availability, show) {
                (Availability::Idle, _) => p.idle_since,
                (_, Some(XmppShow::Away)) => None,
                (a, _) if a.is_online() => p.idle_since,
                _ => None,
            },
        }
    }

    /// Decodes into a canonical presence (see the module documentation).
    pub fn to_presence(&self) -> Presence {
        let status = clean_status(self.status.clone());
        let is_idle_marker = status
            .as_deref()
            .is_some_and(|s| s.trim().eq_ignore_ascii_case(IDLE_STATUS));
        let availability = match (self.kind, self.show) {
            (XmppPresenceType::Unavailable, _) => Availability::Offline,
            (_, None | Some(XmppShow::Chat)) => Availability::Available,
            (_, Some(XmppShow::Dnd)) => Availability::DoNotDisturb,
            (_, Some(XmppShow::Xa)) => Availability::ExtendedAway,
            (_, Some(XmppShow::Away)) if self.idle_since.is_some() || is_idle_marker => {
                Availability::Idle
            }
            (_, Some(XmppShow::Away)) => Availability::Away,
        };
        let status = if availability == Availability::Idle && is_idle_marker {
            None
        } else {
            status
        };
        Presence {
            availability,
            status,
            idle_since: if availability == Availability::Offline {
                None
            } else {
                self.idle_since
            },
            priority: self.priority,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_marker_and_xep_0319() {
        let t = Timestamp::from_unix(1_000);
        let x = XmppPresence::from_presence(&Presence::new(Availability::Idle));
        assert_eq!(
            (x.show, x.status.as_deref()),
            (Some(XmppShow::Away), Some("Idle"))
        );
        assert_eq!(x.to_presence(), Presence::new(Availability::Idle));
        let p = Presence::new(Availability::Idle)
            .with_idle_since(t)
            .with_status("zzz");
        let x = XmppPresence::from_presence(&p);
        assert_eq!((x.idle_since, x.status.as_deref()), (Some(t), Some("zzz")));
        assert_eq!(x.to_presence(), p);
        let x = XmppPresence::from_presence(&Presence::new(Availability::Away).with_idle_since(t));
        assert_eq!(x.idle_since, None);
        let chat = XmppPresence {
            kind: XmppPresenceType::Available,
            show: XmppShow::parse("chat"),
            status: Some("  ".into()),
            priority: -1,
            idle_since: None,
        };
        assert_eq!(
            chat.to_presence(),
            Presence::new(Availability::Available).with_priority(-1)
        );
    }
}
