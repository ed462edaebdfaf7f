//! Every row of `data/availability-mappings.tsv` (tables 1-1..1-15 of the seed document), run
//! through the real encoders and decoders:
//!
//! source presence → encode(source profile) → [PIDF: XML text → parse] → decode → map →
//! encode(target profile) → [PIDF: XML text → parse] → decode → compare with the row.
//!
//! One test per seed table; each asserts how many rows it ran so that no row is skipped.

use entente_model::availability::{
    decode, encode, map, map_explained, Availability, MappingRow, MappingTable, Presence, Profile,
    Rule, TargetStatus, Timestamp, Wire, XmppPresenceType, XmppShow,
};
use entente_model::pidf::PidfDocument;

const FREE_TEXT: &str = "Working from home";

fn idle_time() -> Timestamp {
    "2026-11-03T08:15:00Z".parse().unwrap()
}

/// Serialises a PIDF wire form and parses it back, as the network would.
fn through_text(wire: Wire) -> Wire {
    match wire {
        Wire::Pidf(doc) => {
            let xml = doc.to_xml();
            Wire::Pidf(PidfDocument::parse(&xml).unwrap_or_else(|e| panic!("{e}: {xml}")))
        }
        other => other,
    }
}

/// What the source client puts on the wire for `p`. Entente's encoders never write Invisible
/// (they write towards watchers); a rich client publishing Invisible sends Entente's
/// extension, built here by hand.
fn source_wire(p: &Presence, profile: Profile) -> Wire {
    let wire = encode(p, profile, "sip:source@example.com");
    match wire {
        Wire::Pidf(mut doc)
            if p.availability == Availability::Invisible && doc.entente_state.is_some() =>
        {
            doc.entente_state = Some(Availability::Invisible);
            Wire::Pidf(doc)
        }
        w => w,
    }
}

fn source_presence(row: &MappingRow) -> Presence {
    let mut p = Presence::new(row.source_state);
    p.status = row.source_status.clone();
    if p.status.is_none() && row.target_status == TargetStatus::Message {
        p.status = Some(FREE_TEXT.to_owned());
    }
    if row.source_state == Availability::Idle {
        p.idle_since = Some(idle_time());
    }
    p
}

/// Runs one row; returns a description of the mismatch, if any.
fn run_row(row: &MappingRow) -> Result<(), String> {
    let ctx = format!(
        "table {} {} {:?}/{:?} -> {} {:?}/{:?}",
        row.table,
        row.source,
        row.source_state,
        row.source_status,
        row.target,
        row.target_state,
        row.target_status
    );
    let src = source_presence(row);
    let wire_in = through_text(source_wire(&src, row.source));
    let decoded = decode(&wire_in, row.source);

    // The source wire form carries the source state (AOL's Invisible reaches us as closed).
    let expected_source =
        if row.source == Profile::Aol && src.availability == Availability::Invisible {
            Availability::Offline
        } else if row.source.is_xmpp()
            && src.availability == Availability::Away
            && src.status.as_deref() == Some("Idle")
        {
            Availability::Idle
        } else {
            src.availability
        };
    if decoded.availability != expected_source {
        return Err(format!("{ctx}: source decoded as {decoded:?}"));
    }

    let mapped = map(&decoded, row.source, row.target);
    let wire_out = through_text(encode(&mapped, row.target, "sip:watcher@example.net"));
    let seen = decode(&wire_out, row.target);

    let literal = match &row.target_status {
        TargetStatus::Literal(s) => Some(s.as_str()),
        _ => None,
    };
    // XMPP writes Idle as "Away with status Idle" (tables 1-13, 1-15): same thing on the wire.
    let (mut want_state, literal) = if row.target.is_xmpp()
        && matches!(row.target_state, Availability::Away | Availability::Idle)
        && literal == Some("Idle")
    {
        (Availability::Idle, None)
    } else {
        (row.target_state, literal)
    };
    let mut want_status = match &row.target_status {
        TargetStatus::Literal(_) => literal.map(str::to_owned),
        TargetStatus::Message => src.status.clone(),
        _ => None,
    };
    // Privacy rule: Invisible is Offline everywhere, overriding tables 1-2 and 1-6.
    if src.availability == Availability::Invisible {
        want_state = Availability::Offline;
        want_status = None;
    }
    if seen.availability != want_state || seen.status != want_status {
        return Err(format!(
            "{ctx}: watcher sees {:?}/{:?}, want {want_state:?}/{want_status:?} (wire {wire_out:?})",
            seen.availability, seen.status
        ));
    }
    // The idle time survives wherever the target shows Idle and the source knew it.
    if want_state == Availability::Idle
        && src.idle_since.is_some()
        && seen.idle_since != src.idle_since
    {
        return Err(format!("{ctx}: idle time lost: {seen:?}"));
    }
    Ok(())
}

fn run_table(table: &str, expected_rows: usize) {
    let rows: Vec<&MappingRow> = MappingTable::builtin()
        .rows()
        .iter()
        .filter(|r| r.table == table)
        .collect();
    assert_eq!(rows.len(), expected_rows, "rows of table {table}");
    let failures: Vec<String> = rows.iter().filter_map(|r| run_row(r).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

macro_rules! table_tests {
    ($($name:ident => $table:literal, $rows:literal;)*) => {
        $(#[test] fn $name() { run_table($table, $rows); })*

        #[test]
        fn every_row_is_covered() {
            let total: usize = 0 $(+ $rows)*;
            assert_eq!(total, MappingTable::builtin().rows().len());
            assert_eq!(total, 192);
        }
    };
}

table_tests! {
    table_1_1 => "1-1", 18;
    table_1_2 => "1-2", 5;
    table_1_3 => "1-3", 4;
    table_1_4 => "1-4", 5;
    table_1_5 => "1-5", 18;
    table_1_6 => "1-6", 5;
    table_1_7 => "1-7", 4;
    table_1_8 => "1-8", 5;
    table_1_9 => "1-9", 8;
    table_1_10 => "1-10", 10;
    table_1_11 => "1-11", 15;
    table_1_12 => "1-12", 15;
    table_1_13 => "1-13", 25;
    table_1_14 => "1-14", 25;
    table_1_15 => "1-15", 30;
}

/// The note under tables 1-1 and 1-5: MOC/Lync Busy and Do Not Disturb reach a third-party
/// XMPP client as `<show>away</show>` with status "Busy" — checked on the XMPP fields
/// themselves, from PIDF text as OCS/Lync would send it, and whatever note the user had set.
#[test]
fn note_busy_and_dnd_reach_xmpp_as_away_busy() {
    for (from, number) in [
        (Profile::Moc, 6500),
        (Profile::Moc, 9500),
        (Profile::Lync, 6500),
        (Profile::Lync, 9500),
        (Profile::Lync, 7000),  // inside the Busy range
        (Profile::Lync, 11000), // inside the Do Not Disturb range
    ] {
        for note in ["", "<note>In a call</note>"] {
            let xml = format!(
                r#"<?xml version="1.0"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
          xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
          xmlns:st="http://schemas.microsoft.com/2006/09/sip/state"
          entity="sip:bob@lync.example">
  <tuple id="x"><status><basic>open</basic></status></tuple>{note}
  <dm:person id="p"><st:availability>{number}</st:availability></dm:person>
</presence>"#
            );
            let doc = PidfDocument::parse(&xml).unwrap();
            let canonical = decode(&Wire::Pidf(doc), from);
            let mapped = map_explained(&canonical, from, Profile::Xmpp);
            assert!(
                matches!(&mapped.rule, Rule::Table(r) if r.table == if from == Profile::Moc { "1-1" } else { "1-5" })
            );
            let Wire::Xmpp(x) = encode(&mapped.presence, Profile::Xmpp, "") else {
                panic!("xmpp profile must encode to XMPP");
            };
            assert_eq!(x.kind, XmppPresenceType::Available, "{from} {number}");
            assert_eq!(x.show, Some(XmppShow::Away), "{from} {number}");
            assert_eq!(x.status.as_deref(), Some("Busy"), "{from} {number}");
        }
    }
}

/// The invisible rows of tables 1-2 and 1-6 are the only cells the privacy rule overrides.
#[test]
fn privacy_overrides_exactly_the_invisible_to_away_cells() {
    let overridden: Vec<String> = MappingTable::builtin()
        .rows()
        .iter()
        .filter_map(|r| {
            let p = Presence::new(r.source_state);
            match map_explained(&p, r.source, r.target).rule {
                Rule::InvisibleIsOffline { overrides: Some(t) } => {
                    Some(format!("{t} {} -> {}", r.source, r.target))
                }
                _ => None,
            }
        })
        .collect();
    assert_eq!(overridden, ["1-2 cupc7 -> moc", "1-6 cupc7 -> lync"]);
}

/// Where a row says `(message)`, the source's own text arrives; where it names a literal, the
/// literal wins over the user's text; elsewhere the user's text is kept.
#[test]
fn status_text_rules() {
    let t = "Back at 3";
    let m = map(
        &Presence::new(Availability::Away).with_status(t),
        Profile::Sametime,
        Profile::Cupc8,
    );
    assert_eq!(m, Presence::new(Availability::Away).with_status(t));
    let m = map(
        &Presence::new(Availability::Busy).with_status(t),
        Profile::Lync,
        Profile::Xmpp,
    );
    assert_eq!(m.status.as_deref(), Some("Busy"));
    let m = map(
        &Presence::new(Availability::Away).with_status(t),
        Profile::Lync,
        Profile::Cupc7,
    );
    assert_eq!(m, Presence::new(Availability::Away).with_status(t));
    // Webex "Away, In a meeting" → XMPP Available "In a meeting" (table 1-12), the qualifier
    // matched case-insensitively.
    let m = map(
        &Presence::new(Availability::Away).with_status("in a MEETING"),
        Profile::Webex,
        Profile::Xmpp,
    );
    assert_eq!(
        m,
        Presence::new(Availability::Available).with_status("In a meeting")
    );
}
