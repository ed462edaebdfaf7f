//! Profiles: the kinds of clients and peers whose presence Entente maps.

use std::fmt;
use std::str::FromStr;

use super::wire::PidfFlavor;
use super::Availability;

/// A kind of client or peer. The names are those of the seed tables' columns.
///
/// Which profile a foreign domain has, and which a local user's client declares, is
/// configuration; this type only knows what each profile can show and how it is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Profile {
    /// A third-party XMPP client of the local server (`<show/>`, `<status/>`, XEP-0319).
    Xmpp,
    /// Local rich client, CUPC 7.x class: no Busy state, has Idle and Invisible.
    Cupc7,
    /// Local rich client, CUPC 8.x class: has Busy and Idle.
    Cupc8,
    /// Microsoft Office Communicator (OCS 2007/R2) over SIP: PIDF with availability numbers.
    Moc,
    /// Microsoft Lync 2010 over SIP: PIDF with availability numbers.
    Lync,
    /// AOL Instant Messenger through the AOL SIP gateway: PIDF basic + note.
    Aol,
    /// IBM Sametime 8.2, an XMPP peer.
    Sametime,
    /// Cisco Webex Connect, an XMPP peer.
    Webex,
    /// Any other PIDF/RPID (RFC 3863/4480) peer.
    Simple,
    /// A CUPC 7.x-class client homed on a federated Entente.
    FedCupc7,
    /// A CUPC 8.x-class client homed on a federated Entente.
    FedCupc8,
    /// A third-party XMPP client homed on a federated Entente.
    FedXmpp,
}

/// How a profile is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WireKind {
    /// An XMPP `<presence/>` ([`super::XmppPresence`]).
    Xmpp,
    /// A PIDF document in the given flavour.
    Pidf(PidfFlavor),
}

/// A name that is no profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown presence profile {0:?} (expected one of: {names})", names = Profile::names())]
pub struct UnknownProfile(pub String);

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 12] = [
        Profile::Xmpp,
        Profile::Cupc7,
        Profile::Cupc8,
        Profile::Moc,
        Profile::Lync,
        Profile::Aol,
        Profile::Sametime,
        Profile::Webex,
        Profile::Simple,
        Profile::FedCupc7,
        Profile::FedCupc8,
        Profile::FedXmpp,
    ];

    /// The configuration / CLI name (`fed-cupc8`).
    pub fn name(self) -> &'static str {
        match self {
            Profile::Xmpp => "xmpp",
            Profile::Cupc7 => "cupc7",
            Profile::Cupc8 => "cupc8",
            Profile::Moc => "moc",
            Profile::Lync => "lync",
            Profile::Aol => "aol",
            Profile::Sametime => "sametime",
            Profile::Webex => "webex",
            Profile::Simple => "simple",
            Profile::FedCupc7 => "fed-cupc7",
            Profile::FedCupc8 => "fed-cupc8",
            Profile::FedXmpp => "fed-xmpp",
        }
    }

    fn names() -> String {
        Profile::ALL.map(Profile::name).join(", ")
    }

    /// A one-line description.
    pub fn description(self) -> &'static str {
        match self {
            Profile::Xmpp => "third-party XMPP client of the local server",
            Profile::Cupc7 => "local rich client, CUPC 7.x class",
            Profile::Cupc8 => "local rich client, CUPC 8.x class",
            Profile::Moc => "Microsoft Office Communicator (OCS 2007/R2), SIP",
            Profile::Lync => "Microsoft Lync 2010, SIP",
            Profile::Aol => "AOL Instant Messenger via the AOL SIP gateway",
            Profile::Sametime => "IBM Sametime 8.2, XMPP peer",
            Profile::Webex => "Cisco Webex Connect, XMPP peer",
            Profile::Simple => "generic PIDF/RPID (SIMPLE) peer",
            Profile::FedCupc7 => "CUPC 7.x-class client of a federated Entente",
            Profile::FedCupc8 => "CUPC 8.x-class client of a federated Entente",
            Profile::FedXmpp => "third-party XMPP client of a federated Entente",
        }
    }

    /// The wire form this profile is spoken to in.
    ///
    /// The rich-client profiles (`cupc7`, `cupc8` and their `fed-` twins) use PIDF: CUPC was a
    /// SIP/SIMPLE client, and plain XMPP `<show/>` cannot tell Busy from Do Not Disturb, which
    /// CUPC 8.x can. (Between two Ententes the s2s link is XMPP; carrying Busy there needs an
    /// extension that is the XMPP crate's to define. This module models what the client sees.)
    pub fn wire_kind(self) -> WireKind {
        match self {
            Profile::Xmpp | Profile::FedXmpp | Profile::Sametime | Profile::Webex => WireKind::Xmpp,
            Profile::Moc | Profile::Lync => WireKind::Pidf(PidfFlavor::Microsoft),
            Profile::Aol => WireKind::Pidf(PidfFlavor::Aol),
            Profile::Cupc7
            | Profile::Cupc8
            | Profile::FedCupc7
            | Profile::FedCupc8
            | Profile::Simple => WireKind::Pidf(PidfFlavor::Standard),
        }
    }

    /// Whether this profile's wire form is XMPP.
    pub fn is_xmpp(self) -> bool {
        self.wire_kind() == WireKind::Xmpp
    }

    /// Whether this profile's users *see* `state` as a state of its own (the profile's
    /// vocabulary, as the seed tables use it). A state outside the vocabulary is degraded by the
    /// fallback rules. Invisible is never shown to anyone.
    pub fn can_show(self, state: Availability) -> bool {
        use Availability::*;
        match state {
            Available | Away | Offline => true,
            Invisible => false,
            Busy => matches!(
                self,
                Profile::Cupc8 | Profile::FedCupc8 | Profile::Moc | Profile::Lync | Profile::Simple
            ),
            DoNotDisturb => !matches!(self, Profile::Aol | Profile::Simple),
            BeRightBack => matches!(self, Profile::Moc | Profile::Lync),
            ExtendedAway => self.is_xmpp(),
            // MOC/Lync: availability 4500-5999 ("Available-Idle", shown as Inactive).
            Idle => !matches!(self, Profile::Aol),
        }
    }

    /// The states this profile's own users can *set* (the source side of the tables).
    pub fn source_states(self) -> Vec<Availability> {
        use Availability::*;
        let mut v: Vec<Availability> = Availability::ALL
            .into_iter()
            .filter(|&a| self.can_show(a))
            .collect();
        // CUPC 7.x and AIM let a user appear offline (tables 1-2, 1-6, 1-9).
        if matches!(self, Profile::Cupc7 | Profile::FedCupc7 | Profile::Aol) {
            v.insert(v.len() - 1, Invisible);
        }
        v
    }

    /// The status text that, on this profile's wire form, *is* a state rather than a message.
    ///
    /// XMPP has no Idle `<show/>`: the seed tables write XMPP's Idle as "Away with status Idle"
    /// (tables 1-13, 1-15), and that is what Entente sends when no XEP-0319 time is known. So
    /// on XMPP profiles (Away, "Idle") and Idle are the same thing.
    pub(crate) fn normalise(
        self,
        state: Availability,
        status: Option<&str>,
    ) -> (Availability, Option<&str>) {
        match (state, status) {
            (Availability::Away | Availability::Idle, Some(s))
                if self.is_xmpp() && s.trim().eq_ignore_ascii_case(IDLE_STATUS) =>
            {
                (Availability::Idle, None)
            }
            _ => (state, status),
        }
    }
}

/// The status text XMPP profiles use for Idle (see [`Profile::normalise`]).
pub(crate) const IDLE_STATUS: &str = "Idle";

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = UnknownProfile;

    /// The names of [`Profile::name`], any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Profile::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownProfile(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>(), Ok(p));
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!("FED-CUPC8".parse::<Profile>(), Ok(Profile::FedCupc8));
        let err = "icq".parse::<Profile>().unwrap_err();
        assert!(err.to_string().contains("fed-xmpp"));
    }
}
