//! Mapping a canonical presence from one profile to another.
//!
//! # Order of decision
//!
//! 1. **Privacy.** An Invisible source is Offline to every target, with no status text and no
//!    idle time ([`Rule::InvisibleIsOffline`]). This overrides the seed tables where they say
//!    otherwise (1-2 and 1-6: CUPC 7.x Invisible → MOC/Lync "Away").
//! 2. **The tables.** The row for (source profile, source state, target profile) decides. A row
//!    with a source status ("In a meeting", "Idle") is chosen when the presence's status text
//!    equals it (trimmed, ASCII case-insensitive), in preference to the row without one. Status
//!    text: the row's literal if it names one; the source's own text if it says `(message)`;
//!    otherwise the source's text is kept — unless it was the qualifier that selected the row
//!    (then it was part of the state, not a message).
//! 3. **Fallback** where the tables are silent ([`Rule::Fallback`]):
//!    * Offline stays Offline (with its text).
//!    * A state the target profile can show ([`Profile::can_show`]) is kept as is. This is the
//!      RFC 7248/8048 baseline for XMPP ↔ SIP — availability ↔ `basic open`, unavailable ↔
//!      `closed`, `<status/>` ↔ `<note/>` — refined with the RPID correspondences `away`/`xa` ↔
//!      `<away/>` and `dnd` ↔ `<busy/>` that the wire module implements.
//!    * Otherwise the state is degraded: Busy → Away; Do Not Disturb → Busy, else Away; Be
//!      Right Back, Extended Away, Idle → Away (the direction every table takes: 1-1, 1-4, 1-5,
//!      1-8, 1-10, 1-15). When the source has no status text, the degraded presence carries the
//!      original state's name as its text, as the tables do for Busy → XMPP (note under 1-1
//!      and 1-5: Away with status "Busy").
//! 4. **Idle time** is carried when the target state is Idle or equals the source state;
//!    priority is always carried.
//!
//! An Offline or Invisible source therefore never maps to an online state; the property test
//! `offline_and_invisible_never_online` checks it across all profiles.

use super::table::{MappingRow, MappingTable, TargetStatus};
use super::{Availability, Presence, Profile};

/// Why a mapping came out as it did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// A row of the seed tables decided.
    Table(MappingRow),
    /// The privacy rule: Invisible is Offline. `overrides` names the table whose row said
    /// otherwise, if any did.
    InvisibleIsOffline {
        /// The overridden table, e.g. "1-2".
        overrides: Option<String>,
    },
    /// The tables are silent; a fallback rule decided.
    Fallback(FallbackRule),
}

/// The fallback rules (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FallbackRule {
    /// The target can show the state: kept.
    Native,
    /// The target cannot show `from`: degraded to the mapped state.
    Degraded {
        /// The source state that could not be shown.
        from: Availability,
    },
}

/// A mapped presence and the rule that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The presence to encode for the target.
    pub presence: Presence,
    /// Why.
    pub rule: Rule,
}

/// Maps `presence`, as set by a `from` user, to what a `to` watcher sees.
pub fn map(presence: &Presence, from: Profile, to: Profile) -> Presence {
    map_explained(presence, from, to).presence
}

/// [`map`], also saying which rule decided.
pub fn map_explained(presence: &Presence, from: Profile, to: Profile) -> Mapped {
    map_with(MappingTable::builtin(), presence, from, to)
}

pub(crate) fn map_with(
    table: &MappingTable,
    presence: &Presence,
    from: Profile,
    to: Profile,
) -> Mapped {
    let (state, status) = from.normalise(presence.availability, presence.status.as_deref());
    let row = table.lookup(from, to, state, status);

    if state == Availability::Invisible {
        return Mapped {
            presence: Presence {
                availability: Availability::Offline,
                status: None,
                idle_since: None,
                priority: presence.priority,
            },
            rule: Rule::InvisibleIsOffline {
                overrides: row
                    .filter(|r| r.target_state != Availability::Offline)
                    .map(|r| r.table.clone()),
            },
        };
    }

    let (target, text, rule) = match row {
        Some(row) => {
            let literal = match &row.target_status {
                TargetStatus::Literal(s) => Some(s.as_str()),
                _ => None,
            };
            let (target, literal) = to.normalise(row.target_state, literal);
            let text = match &row.target_status {
                TargetStatus::Literal(_) => literal.map(str::to_owned),
                TargetStatus::Message => presence.status.clone(),
                TargetStatus::Unspecified if row.source_key().1.is_some() => None,
                TargetStatus::Unspecified => status.map(str::to_owned),
            };
            (target, text, Rule::Table(row.clone()))
        }
        None => {
            let (target, rule) = fallback(state, to);
            let text = match (status, rule) {
                (Some(s), _) => Some(s.to_owned()),
                (None, FallbackRule::Degraded { from }) => Some(from.label().to_owned()),
                (None, _) => None,
            };
            (target, text, Rule::Fallback(rule))
        }
    };
    // Belt and braces: the tables never bring an offline source online, and nothing here may.
    let target = if state.is_online() {
        target
    } else {
        Availability::Offline
    };
    let idle_since = presence
        .idle_since
        .filter(|_| target.is_online() && (target == Availability::Idle || target == state));
    Mapped {
        presence: Presence {
            availability: target,
            status: text,
            idle_since,
            priority: presence.priority,
        },
        rule,
    }
}

/// The fallback for a state the tables do not cover.
fn fallback(state: Availability, to: Profile) -> (Availability, FallbackRule) {
    use Availability::*;
    if state == Offline || to.can_show(state) {
        return (state, FallbackRule::Native);
    }
    let chain: &[Availability] = match state {
        DoNotDisturb => &[Busy, Away],
        _ => &[Away],
    };
    let target = chain
        .iter()
        .copied()
        .find(|&a| to.can_show(a))
        .unwrap_or(Away);
    (target, FallbackRule::Degraded { from: state })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_reaches_xmpp_as_away_busy() {
        for from in [Profile::Moc, Profile::Lync] {
            for s in [Availability::Busy, Availability::DoNotDisturb] {
                let m = map(&Presence::new(s), from, Profile::Xmpp);
                assert_eq!(m, Presence::new(Availability::Away).with_status("Busy"));
            }
        }
    }

    #[test]
    fn invisible_overrides_table_1_2() {
        let m = map_explained(
            &Presence::new(Availability::Invisible).with_status("hidden"),
            Profile::Cupc7,
            Profile::Moc,
        );
        assert_eq!(m.presence, Presence::offline());
        assert_eq!(
            m.rule,
            Rule::InvisibleIsOffline {
                overrides: Some("1-2".into())
            }
        );
    }

    #[test]
    fn fallbacks() {
        // cupc8 Away -> moc: table 1-3 has no Away row.
        let m = map_explained(
            &Presence::new(Availability::Away),
            Profile::Cupc8,
            Profile::Moc,
        );
        assert_eq!(m.presence, Presence::new(Availability::Away));
        assert_eq!(m.rule, Rule::Fallback(FallbackRule::Native));
        // Do Not Disturb to a plain RPID peer: Busy, with the original name as text.
        let m = map(
            &Presence::new(Availability::DoNotDisturb),
            Profile::Xmpp,
            Profile::Simple,
        );
        assert_eq!(
            m,
            Presence::new(Availability::Busy).with_status("Do Not Disturb")
        );
        // Be Right Back to XMPP keeps the user's own text.
        let m = map(
            &Presence::new(Availability::BeRightBack).with_status("coffee"),
            Profile::Lync,
            Profile::Webex,
        );
        assert_eq!(m, Presence::new(Availability::Away).with_status("coffee"));
    }
}
