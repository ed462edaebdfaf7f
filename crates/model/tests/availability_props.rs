//! Property tests: wire round trips, and that an Offline or Invisible source never shows online.

use entente_model::availability::{
    decode, encode, map, Availability, Presence, Profile, Timestamp, Wire, XmppPresenceType,
};
use entente_model::pidf::PidfDocument;
use proptest::prelude::*;

fn any_profile() -> impl Strategy<Value = Profile> {
    proptest::sample::select(Profile::ALL.to_vec())
}

fn any_availability() -> impl Strategy<Value = Availability> {
    proptest::sample::select(Availability::ALL.to_vec())
}

fn any_time() -> impl Strategy<Value = Timestamp> {
    (Timestamp::MIN.unix()..=Timestamp::MAX.unix()).prop_map(Timestamp::from_unix)
}

/// Status texts: printable Unicode (XML cannot carry control characters), never blank, never
/// one of the texts a wire form reads as a state ("Idle" on XMPP, "Away" on AOL).
fn any_status() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[^\\p{C}]{1,24}".prop_filter("state-like or blank", |s| {
        let t = s.trim();
        !t.is_empty() && !t.eq_ignore_ascii_case("idle") && !t.eq_ignore_ascii_case("away")
    }))
}

fn any_presence() -> impl Strategy<Value = Presence> {
    (
        any_availability(),
        any_status(),
        proptest::option::of(any_time()),
        any::<i8>(),
    )
        .prop_map(|(availability, status, idle_since, priority)| Presence {
            availability,
            status,
            idle_since,
            priority,
        })
}

/// Encode for `profile`, through XML text for PIDF, and decode again.
fn round_trip(p: &Presence, profile: Profile) -> (Wire, Presence) {
    let wire = match encode(p, profile, "sip:alice@example.com") {
        Wire::Pidf(doc) => {
            Wire::Pidf(PidfDocument::parse(&doc.to_xml()).expect("our own PIDF parses"))
        }
        w => w,
    };
    let back = decode(&wire, profile);
    (wire, back)
}

/// What `profile`'s wire form can carry of `p` without loss (documented in the wire modules);
/// `None` when the state itself cannot be expressed.
fn expressible(p: &Presence, profile: Profile) -> Option<Presence> {
    use Availability::*;
    let mut want = p.clone();
    if profile.is_xmpp() {
        match p.availability {
            Busy | BeRightBack | Invisible => return None,
            Idle if p.idle_since.is_none() && p.status.is_some() => return None,
            Away => want.idle_since = None,
            Offline => want.idle_since = None,
            _ => {}
        }
    } else {
        want.priority = 0;
        if !p.availability.is_online() {
            want.idle_since = None;
        }
        match profile {
            Profile::Aol => {
                if !matches!(p.availability, Available | Away | Offline) {
                    return None;
                }
                want.idle_since = None;
            }
            Profile::Moc | Profile::Lync => {
                if matches!(p.availability, ExtendedAway | Invisible) {
                    return None;
                }
            }
            _ => {
                if p.availability == Invisible {
                    return None;
                }
            }
        }
    }
    Some(want)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every wire form gives back what it can express, exactly.
    #[test]
    fn wire_round_trips(p in any_presence(), profile in any_profile()) {
        if let Some(want) = expressible(&p, profile) {
            let (wire, back) = round_trip(&p, profile);
            prop_assert_eq!(back, want, "wire: {:?}", wire);
        }
    }

    /// Whatever comes out of the mapper survives the target's wire form, wherever the target
    /// can express it (the mapper only produces states the target can show).
    #[test]
    fn mapped_presence_survives_the_target_wire(
        p in any_presence(), from in any_profile(), to in any_profile()
    ) {
        let m = map(&p, from, to);
        prop_assert!(to.can_show(m.availability), "{} cannot show {:?}", to, m.availability);
        if let Some(want) = expressible(&m, to) {
            let (_, back) = round_trip(&m, to);
            prop_assert_eq!(back, want);
        }
    }

    /// An Offline or Invisible source never appears online anywhere: not after mapping, not on
    /// any wire form, not after decoding that wire form; and Invisible leaks no text or time.
    #[test]
    fn offline_and_invisible_never_online(
        p in any_presence(),
        hidden in prop_oneof![Just(Availability::Offline), Just(Availability::Invisible)],
        from in any_profile(),
        to in any_profile(),
    ) {
        let src = Presence { availability: hidden, ..p };
        // Through the source's own wire form first, as it would arrive.
        let arrived = decode(&encode(&src, from, "sip:a@example.com"), from);
        for canonical in [&src, &arrived] {
            let m = map(canonical, from, to);
            prop_assert_eq!(m.availability, Availability::Offline);
            prop_assert_eq!(m.idle_since, None);
            if hidden == Availability::Invisible {
                prop_assert_eq!(&m.status, &None);
            }
            let (wire, back) = round_trip(&m, to);
            prop_assert!(!back.availability.is_online());
            match &wire {
                Wire::Xmpp(x) => prop_assert_eq!(x.kind, XmppPresenceType::Unavailable),
                Wire::Pidf(doc) => prop_assert!(!doc.is_open()),
                _ => prop_assert!(false, "unknown wire form"),
            }
        }
    }

    /// Parsing arbitrary text as PIDF returns an error or a document, never panics.
    #[test]
    fn pidf_parser_never_panics(s in "\\PC{0,400}") {
        let _ = PidfDocument::parse(&s);
    }

    /// Nor does it panic on mangled versions of a real document.
    #[test]
    fn pidf_parser_survives_mangling(cut in 0usize..2000, insert in "[<>&;/=\"' a-z]{0,8}") {
        let p = Presence::new(Availability::Busy).with_status("x & y").with_idle_since(Timestamp::from_unix(0));
        let Wire::Pidf(doc) = encode(&p, Profile::Lync, "sip:a@example.com") else {
            return Err(TestCaseError::fail("lync is PIDF"));
        };
        let mut xml = doc.to_xml();
        let mut at = cut.min(xml.len());
        while !xml.is_char_boundary(at) {
            at -= 1;
        }
        xml.insert_str(at, &insert);
        if let Ok(doc) = PidfDocument::parse(&xml) {
            let _ = decode(&Wire::Pidf(doc), Profile::Lync);
        }
    }

    /// XEP-0082 timestamps print and parse back.
    #[test]
    fn timestamps_round_trip(t in any_time()) {
        prop_assert_eq!(t.to_string().parse::<Timestamp>(), Ok(t));
    }
}
