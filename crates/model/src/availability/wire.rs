//! Encoders and decoders between [`Presence`] and each profile's wire form.
//!
//! * XMPP profiles (`xmpp`, `fed-xmpp`, `sametime`, `webex`): [`XmppPresence`], see its module.
//! * PIDF profiles: a [`PidfDocument`] in one of three flavours ([`PidfFlavor`]).
//!
//! # PIDF, flavour by flavour
//!
//! Every flavour writes one tuple `t0` whose `<basic>` is `open` for online states and `closed`
//! for Offline and Invisible, and the status text as a presence-level `<note>`. Then:
//!
//! | canonical      | RPID (`standard`, `microsoft`)          | MS number | AOL                  |
//! |----------------|------------------------------------------|-----------|----------------------|
//! | Available      | —                                        | 3500      | open                 |
//! | Busy           | `<rpid:busy/>`                           | 6500      | open + `<rpid:away/>`|
//! | Do Not Disturb | `<rpid:busy/>` (RPID has no DND)         | 9500      | open + `<rpid:away/>`|
//! | Be Right Back  | `<rpid:away/>`                           | 12500     | open + `<rpid:away/>`|
//! | Away           | `<rpid:away/>`                           | 15500     | open + `<rpid:away/>`|
//! | Extended Away  | `<rpid:away/>`                           | 15500     | open + `<rpid:away/>`|
//! | Idle           | `<rpid:user-input>idle</rpid:user-input>`| 5000      | open + `<rpid:away/>`|
//! | Invisible      | closed (written exactly as Offline)      | 18500     | closed               |
//! | Offline        | closed                                   | 18500     | closed               |
//!
//! A status text of exactly "In a meeting" adds `<rpid:meeting/>`; an idle time is written as
//! `last-input` on `<rpid:user-input>idle</rpid:user-input>`.
//!
//! * `standard` (rich clients and `simple`) also writes `<ent:availability>` with the exact
//!   canonical state, so Entente's own clients (and a federated Entente) lose nothing; other
//!   peers ignore it (RFC 3863 §4.1.1 lets a reader skip unknown extension elements). The
//!   decoder accepts `invisible` there (a local rich client publishing its own state), but the
//!   encoder never writes it: everything encoded here goes towards a watcher.
//! * `microsoft` (`moc`, `lync`) writes `<st:availability>` in the OCS/Lync `state` namespace
//!   inside `<dm:person>`. Real OCS/Lync put the number in msrtc category documents
//!   (`application/msrtc-event-categories+xml`, `<state xsi:type="aggregateState">`), and their
//!   PIDF output carries only basic, RPID activity and a note ([MS-PRES] §1.3.3). Our PIDF
//!   carries both the RPID activity (for any PIDF reader) and the number (for a reader that
//!   understands it); the decoder accepts either, and bare msrtc `state` documents too.
//! * `aol`: what the AOL SIP gateway is understood to send — basic open/closed, a `<note>` (the
//!   away message), and an away indication. *Inferred*, not verified against the gateway (it is
//!   long gone): we write the away indication as RFC 4480 `<rpid:away/>` and accept it in the
//!   RFC, the pre-RFC (`<ep:activity>away</ep:activity>`) and the bare-note ("Away") forms. AIM's
//!   Invisible reaches watchers as `closed`, indistinguishable from Offline (table 1-9 agrees).
//!
//! # Decoding PIDF (every flavour; first match wins)
//!
//! 1. `<ent:availability>` names the state exactly.
//! 2. A Microsoft availability number, by range: 0-4499 Available, 4500-5999 Idle
//!    ("Available-Idle"), 6000-8999 Busy (incl. "Busy-Idle"), 9000-11999 Do Not Disturb,
//!    12000-14999 Be Right Back, 15000-17999 Away, 18000+ Offline.
//! 3. No `open` tuple: Offline.
//! 4. RPID activities: `busy`/`on-the-phone` → Busy; `away`, `permanent-absence`, `vacation`,
//!    `holiday` → Away; then `<user-input>idle` → Idle; `meeting`/`appointment` alone →
//!    Available (with the note "In a meeting" when there is no note).
//! 5. For the `aol` profile, an open tuple whose only note is "Away" → Away.
//! 6. Otherwise Available.
//!
//! The status is the first note. Priority is not carried by PIDF (0 after decoding).

use super::profile::Profile;
use super::xmpp::XmppPresence;
use super::{clean_status, Availability, Presence, WireKind};
use crate::pidf::{Activity, Basic, PidfDocument, Tuple, UserInput};

/// The status text the tables use for meetings; RPID `<meeting/>` decodes to it.
pub const MEETING_STATUS: &str = "In a meeting";

/// Which PIDF dialect a profile is spoken to in (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PidfFlavor {
    /// RFC 3863 + RFC 4480, plus Entente's exact-state extension.
    Standard,
    /// Standard RPID plus the OCS/Lync availability number.
    Microsoft,
    /// AOL SIP gateway: basic, note, away.
    Aol,
}

/// A presence in a profile's wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Wire {
    /// XMPP fields.
    Xmpp(XmppPresence),
    /// A PIDF document (serialise with [`PidfDocument::to_xml`]).
    Pidf(PidfDocument),
}

/// Encodes `presence` for `profile`. `entity` is the presentity URI PIDF needs (`sip:`/`pres:`);
/// XMPP ignores it (addresses live in the stanza's `from`).
pub fn encode(presence: &Presence, profile: Profile, entity: &str) -> Wire {
    match profile.wire_kind() {
        WireKind::Xmpp => Wire::Xmpp(XmppPresence::from_presence(presence)),
        WireKind::Pidf(flavor) => Wire::Pidf(encode_pidf(presence, flavor, entity)),
    }
}

/// Decodes a wire form received from (or addressed to) `profile`.
pub fn decode(wire: &Wire, profile: Profile) -> Presence {
    match wire {
        Wire::Xmpp(x) => x.to_presence(),
        Wire::Pidf(doc) => decode_pidf(doc, profile),
    }
}

/// The Microsoft availability number Entente writes for a state.
pub fn ms_availability(state: Availability) -> u32 {
    match state {
        Availability::Available => 3500,
        Availability::Idle => 5000,
        Availability::Busy => 6500,
        Availability::DoNotDisturb => 9500,
        Availability::BeRightBack => 12500,
        Availability::Away | Availability::ExtendedAway => 15500,
        Availability::Invisible | Availability::Offline => 18500,
    }
}

/// The state a Microsoft availability number means (the ranges of the module documentation).
pub fn from_ms_availability(n: u32) -> Availability {
    match n {
        0..=4499 => Availability::Available,
        4500..=5999 => Availability::Idle,
        6000..=8999 => Availability::Busy,
        9000..=11999 => Availability::DoNotDisturb,
        12000..=14999 => Availability::BeRightBack,
        15000..=17999 => Availability::Away,
        _ => Availability::Offline,
    }
}

fn encode_pidf(p: &Presence, flavor: PidfFlavor, entity: &str) -> PidfDocument {
    use Availability::*;
    let online = p.availability.is_online();
    let mut doc = PidfDocument {
        entity: entity.to_owned(),
        tuples: vec![Tuple {
            id: "t0".to_owned(),
            basic: Some(if online { Basic::Open } else { Basic::Closed }),
            notes: Vec::new(),
        }],
        ..PidfDocument::default()
    };
    if p.availability != Invisible {
        doc.notes.extend(p.status.clone());
    }
    let activity = match (flavor, p.availability) {
        (_, Available | Invisible | Offline) => None,
        (PidfFlavor::Aol, _) => Some(Activity::Away),
        (_, Busy | DoNotDisturb) => Some(Activity::Busy),
        (_, BeRightBack | Away | ExtendedAway) => Some(Activity::Away),
        (_, Idle) => None,
    };
    doc.activities.extend(activity);
    if online
        && flavor != PidfFlavor::Aol
        && p.status
            .as_deref()
            .is_some_and(|s| s.trim().eq_ignore_ascii_case(MEETING_STATUS))
    {
        doc.activities.push(Activity::Meeting);
    }
    if online && flavor != PidfFlavor::Aol && (p.availability == Idle || p.idle_since.is_some()) {
        doc.user_input = Some(UserInput {
            idle: true,
            last_input: p.idle_since,
        });
    }
    match flavor {
        // Invisible is never written: what leaves Entente towards a watcher shows Offline.
        PidfFlavor::Standard => {
            doc.entente_state = Some(match p.availability {
                Invisible => Offline,
                a => a,
            })
        }
        PidfFlavor::Microsoft => doc.ms_availability = Some(ms_availability(p.availability)),
        PidfFlavor::Aol => {}
    }
    doc
}

fn decode_pidf(doc: &PidfDocument, profile: Profile) -> Presence {
    let has = |a: &Activity| doc.activities.contains(a);
    let idle = doc.user_input.filter(|u| u.idle);
    let note = doc.first_note().map(str::to_owned);
    let mut status = clean_status(note);
    let availability = if let Some(state) = doc.entente_state {
        state
    } else if let Some(n) = doc.ms_availability {
        from_ms_availability(n)
    } else if !doc.is_open() {
        Availability::Offline
    } else if has(&Activity::Busy) || has(&Activity::OnThePhone) {
        Availability::Busy
    } else if has(&Activity::Away)
        || has(&Activity::PermanentAbsence)
        || has(&Activity::Vacation)
        || has(&Activity::Holiday)
    {
        Availability::Away
    } else if idle.is_some() {
        Availability::Idle
    } else if profile == Profile::Aol
        && status
            .as_deref()
            .is_some_and(|s| s.trim().eq_ignore_ascii_case("away"))
    {
        status = None;
        Availability::Away
    } else {
        Availability::Available
    };
    if status.is_none()
        && availability.is_online()
        && (has(&Activity::Meeting) || has(&Activity::Appointment))
    {
        status = Some(MEETING_STATUS.to_owned());
    }
    if availability == Availability::Invisible {
        status = None;
    }
    Presence {
        availability,
        status,
        idle_since: if availability.is_online() {
            idle.and_then(|u| u.last_input)
        } else {
            None
        },
        priority: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::availability::Timestamp;

    fn via_xml(p: &Presence, profile: Profile) -> Presence {
        match encode(p, profile, "sip:alice@example.com") {
            Wire::Pidf(doc) => {
                let parsed = PidfDocument::parse(&doc.to_xml()).unwrap();
                decode(&Wire::Pidf(parsed), profile)
            }
            w => decode(&w, profile),
        }
    }

    #[test]
    fn ms_numbers_and_ranges() {
        for a in Availability::ALL {
            let back = from_ms_availability(ms_availability(a));
            let expect = match a {
                Availability::ExtendedAway => Availability::Away,
                Availability::Invisible => Availability::Offline,
                a => a,
            };
            assert_eq!(back, expect);
        }
        assert_eq!(from_ms_availability(3000), Availability::Available);
        assert_eq!(from_ms_availability(7800), Availability::Busy);
        assert_eq!(from_ms_availability(11999), Availability::DoNotDisturb);
        assert_eq!(from_ms_availability(u32::MAX), Availability::Offline);
    }

    #[test]
    fn foreign_rpid_without_extension() {
        let xml = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf"
            xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
            xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="pres:carol@sip.example">
            <tuple id="a"><status><basic>open</basic></status></tuple>
            <dm:person id="p"><rpid:activities><rpid:meeting/></rpid:activities>
            <rpid:user-input last-input="2026-11-03T08:00:00Z">idle</rpid:user-input></dm:person>
            </presence>"#;
        let doc = PidfDocument::parse(xml).unwrap();
        let p = decode(&Wire::Pidf(doc), Profile::Simple);
        assert_eq!(p.availability, Availability::Idle);
        assert_eq!(p.status.as_deref(), Some(MEETING_STATUS));
        assert_eq!(
            p.idle_since,
            "2026-11-03T08:00:00Z".parse::<Timestamp>().ok()
        );
    }

    #[test]
    fn aol_forms() {
        let open_note = |note: &str| {
            format!(
                r#"<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:aimuser@aol.com">
                <tuple id="1"><status><basic>open</basic></status></tuple><note>{note}</note></presence>"#
            )
        };
        let dec = |xml: &str| decode(&Wire::Pidf(PidfDocument::parse(xml).unwrap()), Profile::Aol);
        assert_eq!(dec(&open_note("Away")), Presence::new(Availability::Away));
        assert_eq!(
            dec(&open_note("Watching the game")),
            Presence::new(Availability::Available).with_status("Watching the game")
        );
        let away = via_xml(
            &Presence::new(Availability::Away).with_status("Gone fishing"),
            Profile::Aol,
        );
        assert_eq!(
            away,
            Presence::new(Availability::Away).with_status("Gone fishing")
        );
        assert_eq!(
            via_xml(&Presence::new(Availability::Invisible), Profile::Aol),
            Presence::offline()
        );
    }

    #[test]
    fn invisible_leaks_nothing() {
        let p = Presence::new(Availability::Invisible)
            .with_status("secret")
            .with_idle_since(Timestamp::from_unix(5));
        for profile in Profile::ALL {
            let w = encode(&p, profile, "sip:a@b");
            match &w {
                Wire::Xmpp(x) => {
                    assert_eq!(x.status, None);
                    assert_eq!(x.idle_since, None);
                }
                Wire::Pidf(d) => {
                    assert!(!d.to_xml().contains("secret"));
                    assert!(!d.is_open());
                }
            }
        }
    }
}
