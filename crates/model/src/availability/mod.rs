//! Canonical presence and the availability mapping between systems.
//!
//! # Design
//!
//! Every presence that enters Entente is *decoded* from its wire form into one canonical
//! [`Presence`]; every presence that leaves is *mapped* for the watcher's [`Profile`] and *encoded*
//! into that profile's wire form:
//!
//! ```text
//!  wire (source) --decode(from)--> Presence --map(from, to)--> Presence --encode(to)--> wire (target)
//! ```
//!
//! * [`Availability`] is the union of every state any profile has (Available, Busy, Do Not
//!   Disturb, Be Right Back, Away, Extended Away, Idle, Invisible, Offline). "In a meeting" is not a
//!   state of its own: the seed tables express it as Available or Away *with the status text*
//!   "In a meeting", and so does the canonical model (RPID `<meeting/>` decodes to that text).
//! * [`Profile`] names a kind of client or peer (`xmpp`, `cupc7`, `moc`, `fed-cupc8`, ...). Which
//!   profile a foreign domain or a local client has is configuration, decided elsewhere.
//! * The mapping is data: [`MappingTable::builtin`] parses the transcription of tables 1-1..1-15
//!   (`data/availability-mappings.tsv`, embedded with `include_str!`) at first use. Where the
//!   tables are silent, the fallback rules of [`map()`] decide; they are listed in
//!   `docs/availability-mapping.md` and in [`Rule`].
//! * Wire forms: [`XmppPresence`] (a plain struct; the XMPP crate turns it into XML) and PIDF
//!   ([`crate::pidf::PidfDocument`], RFC 3863 + RFC 4480, with the Microsoft availability number
//!   for `moc`/`lync` and AOL's basic-plus-note form for `aol`). See [`wire`].
//!
//! # Privacy rule
//!
//! An [`Availability::Invisible`] or [`Availability::Offline`] source is shown as Offline to every
//! target, always. This *overrides* two cells of the seed tables (1-2 and 1-6: CUPC 7.x Invisible
//! → Microsoft client "Away"), which would reveal an invisible user as online; the TSV keeps
//! those rows as transcribed and the mapper reports [`Rule::InvisibleIsOffline`] for them.

mod map;
mod matrix;
mod profile;
mod table;
mod time;
pub mod wire;
mod xmpp;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

pub use map::{map, map_explained, FallbackRule, Mapped, Rule};
pub use matrix::render_matrix;
pub use profile::{Profile, UnknownProfile, WireKind};
pub use table::{MappingRow, MappingTable, TableError, TargetStatus};
pub use time::{Timestamp, TimestampError};
pub use wire::{decode, encode, PidfFlavor, Wire};
pub use xmpp::{XmppPresence, XmppPresenceType, XmppShow};

/// The availability part of a presence: every state any profile has.
///
/// Ordered from most to least available (the order [`PresenceSet::aggregate`] uses to break
/// priority ties).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Availability {
    /// Online and reachable (XMPP no `<show/>` or `chat`; PIDF `open`; MS 3500).
    Available,
    /// Busy, e.g. on a call or in a meeting (CUPC 8.x, MOC/Lync 6500, RPID `<busy/>`).
    Busy,
    /// Do not disturb (XMPP `dnd`; MOC/Lync 9500).
    DoNotDisturb,
    /// Be right back (MOC/Lync 12500).
    BeRightBack,
    /// Away (XMPP `away`; MOC/Lync 15500; RPID `<away/>`).
    Away,
    /// Extended away (XMPP `xa`).
    ExtendedAway,
    /// Idle: no user input for a while (XEP-0319; RPID `<user-input>idle</user-input>`).
    Idle,
    /// Online but hidden: a state a user *sets*, never one a watcher sees.
    Invisible,
    /// Not online.
    Offline,
}

impl Availability {
    /// Every state, most available first.
    pub const ALL: [Availability; 9] = [
        Availability::Available,
        Availability::Busy,
        Availability::DoNotDisturb,
        Availability::BeRightBack,
        Availability::Away,
        Availability::ExtendedAway,
        Availability::Idle,
        Availability::Invisible,
        Availability::Offline,
    ];

    /// The name the seed tables use ("Do Not Disturb").
    pub fn label(self) -> &'static str {
        match self {
            Availability::Available => "Available",
            Availability::Busy => "Busy",
            Availability::DoNotDisturb => "Do Not Disturb",
            Availability::BeRightBack => "Be Right Back",
            Availability::Away => "Away",
            Availability::ExtendedAway => "Extended Away",
            Availability::Idle => "Idle",
            Availability::Invisible => "Invisible",
            Availability::Offline => "Offline",
        }
    }

    /// A token for machine-readable forms (`do-not-disturb`), used by Entente's PIDF extension.
    pub fn token(self) -> &'static str {
        match self {
            Availability::Available => "available",
            Availability::Busy => "busy",
            Availability::DoNotDisturb => "do-not-disturb",
            Availability::BeRightBack => "be-right-back",
            Availability::Away => "away",
            Availability::ExtendedAway => "extended-away",
            Availability::Idle => "idle",
            Availability::Invisible => "invisible",
            Availability::Offline => "offline",
        }
    }

    /// Whether a watcher may see this state as online. Invisible is *not* online.
    pub fn is_online(self) -> bool {
        !matches!(self, Availability::Offline | Availability::Invisible)
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A string that names no [`Availability`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown availability state {0:?}")]
pub struct UnknownAvailability(pub String);

impl FromStr for Availability {
    type Err = UnknownAvailability;

    /// Accepts the table label ("Do Not Disturb") or the token ("do-not-disturb"), any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Availability::ALL
            .into_iter()
            .find(|a| a.label().eq_ignore_ascii_case(s) || a.token().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownAvailability(s.to_owned()))
    }
}

/// The canonical presence of one resource (one connected client) of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The state.
    pub availability: Availability,
    /// Free text (XMPP `<status/>`, PIDF `<note/>`), `None` when there is none. Never empty.
    pub status: Option<String>,
    /// When the user went idle, if known. Meaningful with [`Availability::Idle`]; carried on other
    /// states where the wire form allows (XEP-0319 may accompany any `<show/>`).
    pub idle_since: Option<Timestamp>,
    /// XMPP resource priority (RFC 6121 §4.7.2.3). PIDF has no equivalent: 0 after PIDF.
    pub priority: i8,
}

impl Presence {
    /// A presence with the given state and nothing else.
    pub fn new(availability: Availability) -> Self {
        Presence {
            availability,
            status: None,
            idle_since: None,
            priority: 0,
        }
    }

    /// Offline, no status.
    pub fn offline() -> Self {
        Presence::new(Availability::Offline)
    }

    /// Sets the status text; an empty or all-blank text means none.
    #[must_use]
    pub fn with_status(mut self, status: impl Into<String>) -> Self {
        self.status = clean_status(Some(status.into()));
        self
    }

    /// Sets the idle-since instant.
    #[must_use]
    pub fn with_idle_since(mut self, since: Timestamp) -> Self {
        self.idle_since = Some(since);
        self
    }

    /// Sets the priority.
    #[must_use]
    pub fn with_priority(mut self, priority: i8) -> Self {
        self.priority = priority;
        self
    }
}

/// Blank status texts are no status text.
pub(crate) fn clean_status(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// The presences of all resources of one user, keyed by resource (XMPP resourcepart, SIP
/// instance/tuple id — whatever the caller uses to tell clients apart).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceSet {
    resources: BTreeMap<String, Presence>,
}

impl PresenceSet {
    /// An empty set: the user is offline.
    pub fn new() -> Self {
        PresenceSet::default()
    }

    /// Records the presence of `resource`. An Offline presence removes the resource.
    pub fn update(&mut self, resource: impl Into<String>, presence: Presence) {
        let resource = resource.into();
        if presence.availability == Availability::Offline {
            self.resources.remove(&resource);
        } else {
            self.resources.insert(resource, presence);
        }
    }

    /// Forgets `resource` (it disconnected).
    pub fn remove(&mut self, resource: &str) -> Option<Presence> {
        self.resources.remove(resource)
    }

    /// The presence of one resource.
    pub fn resource(&self, resource: &str) -> Option<&Presence> {
        self.resources.get(resource)
    }

    /// Resources and their presences, in resource order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Presence)> {
        self.resources.iter().map(|(r, p)| (r.as_str(), p))
    }

    /// Whether no resource is online.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// The one presence a single-presence watcher (SIP, AOL) sees: among resources that are not
    /// Invisible, the highest priority, then the most available, then the first resource name.
    /// If only Invisible resources remain the user is Invisible; with none, Offline.
    pub fn aggregate(&self) -> Presence {
        let visible = self
            .resources
            .values()
            .filter(|p| p.availability != Availability::Invisible)
            // max_by_key keeps the last maximum: iterate in reverse so the first name wins ties.
            .rev()
            .max_by_key(|p| (p.priority, std::cmp::Reverse(p.availability)));
        match visible {
            Some(p) => p.clone(),
            None if !self.resources.is_empty() => Presence::new(Availability::Invisible),
            None => Presence::offline(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_back() {
        for a in Availability::ALL {
            assert_eq!(a.label().parse::<Availability>(), Ok(a));
            assert_eq!(a.token().parse::<Availability>(), Ok(a));
        }
        assert!("Lunch".parse::<Availability>().is_err());
    }

    #[test]
    fn aggregate_prefers_priority_then_availability() {
        let mut set = PresenceSet::new();
        assert_eq!(set.aggregate(), Presence::offline());
        set.update("phone", Presence::new(Availability::Away).with_priority(5));
        set.update(
            "desk",
            Presence::new(Availability::Available).with_priority(1),
        );
        assert_eq!(set.aggregate().availability, Availability::Away);
        set.update("laptop", Presence::new(Availability::Busy).with_priority(5));
        assert_eq!(set.aggregate().availability, Availability::Busy);
        set.update("laptop", Presence::offline());
        assert!(set.resource("laptop").is_none());
        set.update(
            "ghost",
            Presence::new(Availability::Invisible).with_priority(100),
        );
        assert_eq!(set.aggregate().availability, Availability::Away);
        set.remove("phone");
        set.remove("desk");
        assert_eq!(set.aggregate().availability, Availability::Invisible);
    }
}
