//! Presence policy: who may see a user's presence (the seed's "Presence Subscriptions and
//! Blocking Levels"). One entry point, [`decide`], serves XMPP and SIP alike, so the two
//! protocols can never disagree.
//!
//! Layers, in order:
//! 1. **Admin, domain level**: a watcher from a foreign domain the federation policy refuses is
//!    refused outright; the local user never hears of it ([`Decision::Refuse`]).
//! 2. **User level**: the user's list of rules. The most specific matching entry wins: a bare JID
//!    before a domain, a domain before its parent (when that parent's entry covers subdomains).
//!    `Allow` lets the watcher subscribe; `Deny` refuses presence politely; `Block` (XEP-0191)
//!    refuses presence politely and also messages.
//! 3. **Admin default** for watchers nobody decided on: `ask` (the user's clients get the
//!    request), `allow` or `deny`.
//!
//! Polite blocking: a denied or blocked watcher is never told. Over XMPP it sees nothing beyond
//! unavailable; over SIP its subscription is accepted and every document says offline.

use crate::jid::{is_same_or_subdomain, Jid};

/// What the admin decided for watchers no user rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DefaultAction {
    /// The user decides: the request goes to the user's clients (default).
    #[default]
    Ask,
    /// Accept on the user's behalf.
    Allow,
    /// Refuse politely.
    Deny,
}

impl std::str::FromStr for DefaultAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ask" => Ok(DefaultAction::Ask),
            "allow" => Ok(DefaultAction::Allow),
            "deny" => Ok(DefaultAction::Deny),
            _ => Err(format!("{s:?}: use ask, allow or deny")),
        }
    }
}

/// A user-level rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rule {
    /// May see the user's presence.
    Allow,
    /// May not see the user's presence (polite).
    Deny,
    /// Blocked entirely (XEP-0191): no presence, no messages.
    Block,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Allow => "allow",
            Rule::Deny => "deny",
            Rule::Block => "block",
        }
    }
}

impl std::str::FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Rule::Allow),
            "deny" => Ok(Rule::Deny),
            "block" => Ok(Rule::Block),
            _ => Err(format!("{s:?}: use allow, deny or block")),
        }
    }
}

/// What a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// One watcher (bare JID).
    User(Jid),
    /// A whole domain, and its subdomains when `subdomains`.
    Domain { domain: String, subdomains: bool },
}

impl Target {
    /// Parses `user@domain`, `domain`, or `*.domain` (a domain with its subdomains).
    pub fn parse(s: &str) -> Result<Target, String> {
        if let Some(d) = s.strip_prefix("*.") {
            let j = Jid::domain_only(d).map_err(|e| format!("{s:?}: {e}"))?;
            return Ok(Target::Domain {
                domain: j.domain().to_string(),
                subdomains: true,
            });
        }
        let j = Jid::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
        if j.local().is_some() {
            Ok(Target::User(j.to_bare()))
        } else {
            Ok(Target::Domain {
                domain: j.domain().to_string(),
                subdomains: false,
            })
        }
    }

    /// How specifically this target matches `watcher`: `None` when it does not; higher is more
    /// specific (a user beats its exact domain, which beats any parent domain; a nearer parent
    /// beats a farther one).
    fn specificity(&self, watcher: &Jid) -> Option<usize> {
        match self {
            Target::User(j) => (j.local() == watcher.local() && j.domain() == watcher.domain())
                .then_some(usize::MAX),
            Target::Domain { domain, subdomains } => {
                if domain == watcher.domain() {
                    Some(usize::MAX - 1)
                } else if *subdomains && is_same_or_subdomain(watcher.domain(), domain) {
                    Some(domain.len())
                } else {
                    None
                }
            }
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::User(j) => write!(f, "{j}"),
            Target::Domain {
                domain,
                subdomains: true,
            } => write!(f, "*.{domain}"),
            Target::Domain {
                domain,
                subdomains: false,
            } => write!(f, "{domain}"),
        }
    }
}

/// One entry of a user's list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub target: Target,
    pub rule: Rule,
}

/// The admin layer.
#[derive(Debug, Clone, Default)]
pub struct AdminPolicy {
    /// The local domains; watchers from them are never refused at the domain level.
    pub local_domains: Vec<String>,
    /// Whether a foreign domain may federate at all.
    pub federation: FederationRule,
    pub default: DefaultAction,
}

/// The admin's rule for foreign domains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FederationRule {
    #[default]
    Open,
    Allowlist(Vec<String>),
    Denylist(Vec<String>),
}

impl FederationRule {
    pub fn allows(&self, domain: &str) -> bool {
        let listed = |l: &[String]| l.iter().any(|d| d.eq_ignore_ascii_case(domain));
        match self {
            FederationRule::Open => true,
            FederationRule::Allowlist(l) => listed(l),
            FederationRule::Denylist(l) => !listed(l),
        }
    }
}

/// The outcome for one watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// The domain is refused by the admin: drop, the user never hears of it.
    Refuse,
    /// Approve on the user's behalf.
    Allow,
    /// Ask the user (pending until they answer).
    Ask,
    /// Refuse politely: the watcher sees the user as offline.
    PoliteDeny,
}

/// Decides whether `watcher` may subscribe to the presence of a user with list `entries`.
pub fn decide(admin: &AdminPolicy, entries: &[Entry], watcher: &Jid) -> Decision {
    let local = admin.local_domains.iter().any(|d| d == watcher.domain());
    if !local && !admin.federation.allows(watcher.domain()) {
        return Decision::Refuse;
    }
    let best = entries
        .iter()
        .filter_map(|e| e.target.specificity(watcher).map(|s| (s, e.rule)))
        // On equal specificity the strictest rule wins.
        .max_by_key(|(s, r)| (*s, strictness(*r)));
    match best.map(|(_, r)| r) {
        Some(Rule::Allow) => Decision::Allow,
        Some(Rule::Deny) | Some(Rule::Block) => Decision::PoliteDeny,
        None => match admin.default {
            DefaultAction::Ask => Decision::Ask,
            DefaultAction::Allow => Decision::Allow,
            DefaultAction::Deny => Decision::PoliteDeny,
        },
    }
}

/// Whether messages (and IQs) from `sender` are blocked by the list (XEP-0191 `Block` rules).
pub fn blocks_messages(entries: &[Entry], sender: &Jid) -> bool {
    entries
        .iter()
        .filter_map(|e| e.target.specificity(sender).map(|s| (s, e.rule)))
        .max_by_key(|(s, r)| (*s, strictness(*r)))
        .is_some_and(|(_, r)| r == Rule::Block)
}

fn strictness(r: Rule) -> u8 {
    match r {
        Rule::Allow => 0,
        Rule::Deny => 1,
        Rule::Block => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn e(t: &str, r: Rule) -> Entry {
        Entry {
            target: Target::parse(t).unwrap(),
            rule: r,
        }
    }

    fn admin(fed: FederationRule, default: DefaultAction) -> AdminPolicy {
        AdminPolicy {
            local_domains: vec!["cup.example.com".into()],
            federation: fed,
            default,
        }
    }

    /// The table of the policy issue: admin × user combinations.
    #[test]
    fn decision_table() {
        use Decision::*;
        use DefaultAction as D;
        let open = FederationRule::Open;
        let deny_evil = FederationRule::Denylist(vec!["evil.example".into()]);
        let allow_partner = FederationRule::Allowlist(vec!["partner.example".into()]);
        let cases: Vec<(FederationRule, D, Vec<Entry>, &str, Decision)> = vec![
            // allowed domain, blocked user
            (
                open.clone(),
                D::Ask,
                vec![e("bob@partner.example", Rule::Block)],
                "bob@partner.example",
                PoliteDeny,
            ),
            // blocked domain, allowed user: the admin layer wins
            (
                deny_evil.clone(),
                D::Ask,
                vec![e("eve@evil.example", Rule::Allow)],
                "eve@evil.example",
                Refuse,
            ),
            // allowlist without the domain
            (
                allow_partner.clone(),
                D::Allow,
                vec![],
                "x@other.example",
                Refuse,
            ),
            (allow_partner, D::Ask, vec![], "x@partner.example", Ask),
            // undecided watchers follow the admin default
            (open.clone(), D::Ask, vec![], "x@partner.example", Ask),
            (open.clone(), D::Allow, vec![], "x@partner.example", Allow),
            (
                open.clone(),
                D::Deny,
                vec![],
                "x@partner.example",
                PoliteDeny,
            ),
            // domain block with and without subdomains
            (
                open.clone(),
                D::Ask,
                vec![e("partner.example", Rule::Deny)],
                "x@sub.partner.example",
                Ask,
            ),
            (
                open.clone(),
                D::Ask,
                vec![e("*.partner.example", Rule::Deny)],
                "x@sub.partner.example",
                PoliteDeny,
            ),
            (
                open.clone(),
                D::Ask,
                vec![e("*.partner.example", Rule::Deny)],
                "x@partner.example",
                PoliteDeny,
            ),
            (
                open.clone(),
                D::Ask,
                vec![e("partner.example", Rule::Deny)],
                "x@badpartner.example",
                Ask,
            ),
            // a user entry beats its domain's
            (
                open.clone(),
                D::Ask,
                vec![
                    e("*.partner.example", Rule::Deny),
                    e("bob@partner.example", Rule::Allow),
                ],
                "bob@partner.example",
                Allow,
            ),
            // the nearer parent beats the farther one
            (
                open.clone(),
                D::Ask,
                vec![
                    e("*.example", Rule::Deny),
                    e("*.partner.example", Rule::Allow),
                ],
                "x@a.partner.example",
                Allow,
            ),
            // local watchers are never refused at the domain level
            (
                FederationRule::Allowlist(vec![]),
                D::Ask,
                vec![],
                "colleague@cup.example.com",
                Ask,
            ),
            // a denylisted domain is refused even with the default allow
            (deny_evil, D::Allow, vec![], "x@evil.example", Refuse),
        ];
        for (i, (fed, def, entries, watcher, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                decide(&admin(fed, def), &entries, &j(watcher)),
                want,
                "case {i}: {watcher}"
            );
        }
    }

    #[test]
    fn message_blocking_is_only_block() {
        let l = vec![e("a@x.example", Rule::Deny), e("*.y.example", Rule::Block)];
        assert!(!blocks_messages(&l, &j("a@x.example")));
        assert!(blocks_messages(&l, &j("b@z.y.example/r")));
        assert!(!blocks_messages(&l, &j("b@other.example")));
    }

    #[test]
    fn targets_parse_and_print() {
        for s in ["bob@x.example", "x.example", "*.x.example"] {
            assert_eq!(Target::parse(s).unwrap().to_string(), s);
        }
        assert!(Target::parse("*.").is_err());
        assert_eq!(
            Target::parse("Bob@X.example/res").unwrap().to_string(),
            "bob@x.example"
        );
    }
}
