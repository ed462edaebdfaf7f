//! The presence subscription state machine of RFC 6121 (§3 and Appendix A).
//!
//! One [`SubState`] describes what a user's server knows about one contact: whether the user is
//! subscribed to the contact's presence (`to`), whether the contact is subscribed to the user's
//! (`from`), whether a request is pending in either direction, and whether the user pre-approved
//! the contact (§3.4). [`SubState::apply`] takes one subscription stanza, seen from the user's
//! server (outbound: the user sent it; inbound: it arrives for the user) and returns what the
//! server must do. The same machine serves local, XMPP-federated and SIP-federated contacts.

/// The four subscription states a roster item shows (RFC 6121 §2.1.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subscription {
    None,
    To,
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }
}

/// A subscription stanza type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubKind {
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
}

impl SubKind {
    pub fn parse(s: &str) -> Option<SubKind> {
        Some(match s {
            "subscribe" => SubKind::Subscribe,
            "subscribed" => SubKind::Subscribed,
            "unsubscribe" => SubKind::Unsubscribe,
            "unsubscribed" => SubKind::Unsubscribed,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SubKind::Subscribe => "subscribe",
            SubKind::Subscribed => "subscribed",
            SubKind::Unsubscribe => "unsubscribe",
            SubKind::Unsubscribed => "unsubscribed",
        }
    }
}

/// Which way a subscription stanza travels, seen from the user's own server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The user sent it, to the contact.
    Outbound,
    /// It arrived for the user, from the contact.
    Inbound,
}

/// What the server knows about one (user, contact) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubState {
    /// The user receives the contact's presence.
    pub to: bool,
    /// The contact receives the user's presence.
    pub from: bool,
    /// The user asked to subscribe and the contact has not answered ("ask").
    pub pending_out: bool,
    /// The contact asked to subscribe and the user has not answered.
    pub pending_in: bool,
    /// The user approved the contact before the contact asked (§3.4).
    pub preapproved: bool,
}

/// What the server must do after a subscription stanza.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The state changed: store it, and push the roster item if the contact is in the roster.
    pub changed: bool,
    /// Outbound: send the stanza on to the contact (stamped with the user's bare JID).
    pub forward: bool,
    /// Inbound: hand the stanza to the user's clients (or keep it for their next login).
    pub deliver: bool,
    /// Inbound: answer the contact on the user's behalf with this stanza type.
    pub auto_reply: Option<SubKind>,
    /// Send the user's current presence (from each available resource) to the contact.
    pub send_presence: bool,
    /// Send `unavailable` from each of the user's available resources to the contact.
    pub send_unavailable: bool,
}

impl SubState {
    /// The roster view of this state.
    pub fn subscription(&self) -> Subscription {
        match (self.to, self.from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }

    /// Applies one subscription stanza; returns the new state and what to do.
    pub fn apply(self, kind: SubKind, dir: Direction) -> (SubState, Outcome) {
        let mut s = self;
        let mut o = Outcome::default();
        match (dir, kind) {
            // §3.1.2: the user's server forwards the request and records "ask" unless the user
            // is already subscribed (then it MAY forward; we forward so the contact's server can
            // answer again and a lost answer heals).
            (Direction::Outbound, SubKind::Subscribe) => {
                if !s.to {
                    s.pending_out = true;
                }
                o.forward = true;
            }
            // §3.1.3: already subscribed, or pre-approved → answer on the user's behalf.
            (Direction::Inbound, SubKind::Subscribe) => {
                if s.from {
                    o.auto_reply = Some(SubKind::Subscribed);
                    o.send_presence = true;
                } else if s.preapproved {
                    s.from = true;
                    s.preapproved = false;
                    s.pending_in = false;
                    o.auto_reply = Some(SubKind::Subscribed);
                    o.send_presence = true;
                } else {
                    s.pending_in = true;
                    o.deliver = true;
                }
            }
            // §3.1.5 approve a pending request; §3.4 pre-approve when none is pending.
            (Direction::Outbound, SubKind::Subscribed) => {
                if s.pending_in {
                    s.pending_in = false;
                    s.from = true;
                    o.forward = true;
                    o.send_presence = true;
                } else if !s.from {
                    s.preapproved = true;
                }
            }
            // §3.1.6: only meaningful when we asked.
            (Direction::Inbound, SubKind::Subscribed) => {
                if s.pending_out {
                    s.pending_out = false;
                    s.to = true;
                    o.deliver = true;
                }
            }
            // §3.3.2: the user cancels its subscription to the contact.
            (Direction::Outbound, SubKind::Unsubscribe) => {
                if s.to || s.pending_out {
                    s.to = false;
                    s.pending_out = false;
                }
                o.forward = true;
            }
            // §3.3.3: the contact cancels its subscription to the user; the user's server sends
            // unavailable presence to the contact.
            (Direction::Inbound, SubKind::Unsubscribe) => {
                if s.from || s.pending_in {
                    s.from = false;
                    s.pending_in = false;
                    o.deliver = true;
                    o.send_unavailable = true;
                }
            }
            // §3.2.2 deny a request, or revoke the contact's subscription; also drops a
            // pre-approval.
            (Direction::Outbound, SubKind::Unsubscribed) => {
                let had = s.from || s.pending_in;
                s.from = false;
                s.pending_in = false;
                s.preapproved = false;
                if had {
                    o.forward = true;
                    o.send_unavailable = true;
                }
            }
            // §3.2.3: the contact denied or revoked the user's subscription.
            (Direction::Inbound, SubKind::Unsubscribed) => {
                if s.to || s.pending_out {
                    s.to = false;
                    s.pending_out = false;
                    o.deliver = true;
                }
            }
        }
        o.changed = s != self;
        (s, o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::*;
    use SubKind::*;

    fn run(steps: &[(SubKind, Direction)]) -> SubState {
        steps
            .iter()
            .fold(SubState::default(), |s, (k, d)| s.apply(*k, *d).0)
    }

    #[test]
    fn full_handshake_both_ways() {
        // User subscribes to contact, contact approves, contact subscribes back, user approves.
        let s = run(&[(Subscribe, Outbound), (Subscribed, Inbound)]);
        assert_eq!(s.subscription(), Subscription::To);
        let (s, o) = s.apply(Subscribe, Inbound);
        assert!(o.deliver && s.pending_in);
        let (s, o) = s.apply(Subscribed, Outbound);
        assert!(o.forward && o.send_presence);
        assert_eq!(s.subscription(), Subscription::Both);
    }

    #[test]
    fn unsolicited_subscribed_is_ignored() {
        let (s, o) = SubState::default().apply(Subscribed, Inbound);
        assert_eq!(s, SubState::default());
        assert!(!o.deliver && !o.changed);
    }

    #[test]
    fn preapproval_answers_automatically() {
        let (s, o) = SubState::default().apply(Subscribed, Outbound);
        assert!(s.preapproved && !o.forward);
        let (s, o) = s.apply(Subscribe, Inbound);
        assert_eq!(o.auto_reply, Some(Subscribed));
        assert!(!o.deliver);
        assert_eq!(s.subscription(), Subscription::From);
    }

    #[test]
    fn already_subscribed_contact_gets_auto_reply() {
        let s = SubState {
            from: true,
            ..Default::default()
        };
        let (_, o) = s.apply(Subscribe, Inbound);
        assert_eq!(o.auto_reply, Some(Subscribed));
        assert!(!o.deliver);
    }

    #[test]
    fn cancel_and_revoke() {
        let both = SubState {
            to: true,
            from: true,
            ..Default::default()
        };
        let (s, o) = both.apply(Unsubscribe, Inbound);
        assert_eq!(s.subscription(), Subscription::To);
        assert!(o.send_unavailable && o.deliver);
        let (s, o) = both.apply(Unsubscribed, Outbound);
        assert_eq!(s.subscription(), Subscription::To);
        assert!(o.forward && o.send_unavailable);
        let (s, o) = both.apply(Unsubscribe, Outbound);
        assert_eq!(s.subscription(), Subscription::From);
        assert!(o.forward);
        let (s, _) = both.apply(Unsubscribed, Inbound);
        assert_eq!(s.subscription(), Subscription::From);
    }

    #[test]
    fn deny_pending_request() {
        let (s, _) = SubState::default().apply(Subscribe, Inbound);
        let (s, o) = s.apply(Unsubscribed, Outbound);
        assert!(!s.pending_in && o.forward);
        assert_eq!(s.subscription(), Subscription::None);
    }

    #[test]
    fn cancelled_request_is_withdrawn() {
        let (s, _) = SubState::default().apply(Subscribe, Inbound);
        let (s, o) = s.apply(Unsubscribe, Inbound);
        assert!(!s.pending_in && o.deliver);
    }
}
