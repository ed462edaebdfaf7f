//! IM and presence (RFC 6121) for local users: what happens to a stanza once a connection has
//! handed it over with a trusted `from`.
//!
//! The subscription state machine itself is `entente_model::subscription`; this module applies
//! it with the store (rosters survive restarts) and the session registry. Block lists (XEP-0191)
//! are cached per user and consulted on every delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use entente_model::jid::Jid;
use entente_model::policy;
use entente_model::subscription::{Direction, SubKind, SubState};
use entente_store::{RosterRow, Store};
use entente_xmpp_proto::element::NS_CLIENT;
use entente_xmpp_proto::stanza::{
    error_reply, iq_payload, iq_result, ErrorType, Kind, NS_BLOCKING, NS_BLOCKING_ERRORS, NS_DELAY,
    NS_DISCO_INFO, NS_DISCO_ITEMS, NS_OFFLINE, NS_PING, NS_ROSTER, NS_VERSION,
};
use entente_xmpp_proto::{parse_stanza, Element};

use crate::cache::TtlCache;
use crate::config::Config;
use crate::router::{
    NoFederation, RemoteError, RemoteRouter, SessionHandle, SessionState, Sessions,
};

/// The shared core of one server: configuration, store, sessions and the way out.
pub struct Hub {
    pub cfg: Arc<Config>,
    pub store: Store,
    pub sessions: Sessions,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The federation in effect: the file's with the admin API's changes.
    pub federation: Arc<crate::federation::Federation>,
    remote: Arc<dyn RemoteRouter>,
    /// Block lists by bare JID, loaded on first use. Changed through this hub, an entry is
    /// dropped at once; changed by another cluster node, the whole cache is dropped when the
    /// store's change counter moves ([`Hub::watch_store_changes`]).
    blocks: TtlCache<Jid, Arc<Vec<Jid>>>,
    /// Presence policy rules by bare JID, the same way (the CLI changes them from another
    /// process).
    rules: TtlCache<Jid, Arc<Vec<policy::Entry>>>,
    /// Available presence local users hold from foreign contacts, by foreign domain: (local
    /// bare JID, foreign full JID). When a domain is lost for good, these become unavailable.
    remote_presence: Mutex<HashMap<String, std::collections::HashSet<(Jid, Jid)>>>,
}

/// How long cached block lists and presence policy rules are trusted at most (changes made
/// elsewhere clear the caches sooner: [`CHANGE_POLL`]). Not shorter: re-reading them costs a
/// store round trip per user, and a presence broadcast to 10 000 watchers would pay 10 000.
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// How often the store's change counters are read.
const CHANGE_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Users whose block lists (and, separately, rules) are cached at most.
const CACHE_MAX: usize = 100_000;

type Res<T> = Result<T, entente_store::StoreError>;

impl Hub {
    pub fn new(cfg: Arc<Config>, store: Store) -> Hub {
        Hub {
            federation: crate::federation::Federation::new(cfg.clone(), store.clone()),
            cfg,
            store,
            sessions: Sessions::default(),
            metrics: Arc::default(),
            remote: Arc::new(NoFederation),
            blocks: TtlCache::new(CACHE_TTL, CACHE_MAX),
            rules: TtlCache::new(CACHE_TTL, CACHE_MAX),
            remote_presence: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the way out to other domains (federation).
    pub fn set_remote(&mut self, remote: Arc<dyn RemoteRouter>) {
        self.remote = remote;
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        domain == self.cfg.domain
    }

    fn domain_jid(&self) -> String {
        self.cfg.domain.clone()
    }

    // ---- entry points ----

    /// A stanza from a bound client; `from` is already the session's full JID.
    pub async fn handle_client(&self, s: &SessionHandle, el: Element) {
        let r = match Kind::of(&el) {
            Some(Kind::Message) => self.client_message(s, el).await,
            Some(Kind::Presence) => self.client_presence(s, el).await,
            Some(Kind::Iq) => self.client_iq(s, el).await,
            None => Ok(()),
        };
        if let Err(e) = r {
            tracing::error!(session = %s.jid, error = %e, "store error while handling a stanza");
        }
    }

    /// A session ended: broadcast unavailable on its behalf if the client did not.
    pub async fn session_ended(&self, s: &SessionHandle) {
        if let Some(st) = self.sessions.unbind(s) {
            if st.presence.is_some() {
                if let Err(e) = self.broadcast_unavailable(&st).await {
                    tracing::error!(error = %e, "store error while broadcasting unavailable");
                }
            }
        }
    }

    /// A session replaced by a newer one with the same resource.
    pub async fn session_replaced(&self, old: SessionState) {
        old.handle.kick(
            entente_xmpp_proto::StreamErrorCondition::Conflict,
            "replaced by a new connection with the same resource",
        );
        if old.presence.is_some() {
            if let Err(e) = self.broadcast_unavailable(&old).await {
                tracing::error!(error = %e, "store error while broadcasting unavailable");
            }
        }
    }

    /// A stanza another node of the cluster forwarded for `to`, a full JID bound here. Returns
    /// whether it was queued for the client. When it was not and the sender does not wait for
    /// the answer (`acked` false), an IQ request is answered with `service-unavailable`
    /// (RFC 6120 §8.5.3.2.1); anything else is dropped, as for a resource that just left.
    pub async fn forwarded(&self, to: &Jid, el: Element, acked: bool) -> bool {
        if let Some(s) = self.sessions.find(to) {
            if s.handle.is_local() && s.handle.send(el.clone()) {
                return true;
            }
        }
        if !acked
            && Kind::of(&el) == Some(Kind::Iq)
            && matches!(el.get_attr("type"), Some("get" | "set"))
        {
            if let Err(e) = self
                .bounce(&el, ErrorType::Cancel, "service-unavailable", None)
                .await
            {
                tracing::error!(error = %e, "store error while bouncing");
            }
        }
        false
    }

    /// Sends a stanza with a trusted `from` towards its `to`, local or remote.
    pub async fn route(&self, el: Element) -> Res<()> {
        let Some(to) = el.get_attr("to").and_then(|t| Jid::parse(t).ok()) else {
            return Ok(());
        };
        if self.is_local_domain(to.domain()) {
            Box::pin(self.deliver_local(el, to)).await
        } else {
            self.send_remote(el).await
        }
    }

    async fn send_remote(&self, el: Element) -> Res<()> {
        if let Err(e) = self.remote.send(el.clone()) {
            let (cond, text) = match &e {
                RemoteError::NotFound(t) => ("remote-server-not-found", t.as_str()),
                RemoteError::Timeout(t) => ("remote-server-timeout", t.as_str()),
            };
            self.bounce_remote(&el, cond, text).await?;
        }
        Ok(())
    }

    /// Answers a stanza that could not be handed to a foreign domain with an error from this
    /// domain to its sender (wherever in the cluster the sender is). Presence other than a
    /// subscription request is not bounced (RFC 6121 §4.3).
    pub async fn bounce_remote(&self, el: &Element, cond: &str, text: &str) -> Res<()> {
        let bounce = match Kind::of(el) {
            Some(Kind::Presence) => el.get_attr("type") == Some("subscribe"),
            Some(_) => true,
            None => false,
        };
        if bounce {
            if let Some(r) = error_reply(el, ErrorType::Cancel, cond, Some(text)) {
                Box::pin(self.route(r)).await?;
            }
        }
        Ok(())
    }

    // ---- messages ----

    async fn client_message(&self, s: &SessionHandle, mut el: Element) -> Res<()> {
        let to = match el.get_attr("to") {
            None => s.jid.to_bare(),
            Some(t) => match Jid::parse(t) {
                Ok(j) => j,
                Err(_) => {
                    return self.reply_error(s, &el, ErrorType::Modify, "jid-malformed", None)
                }
            },
        };
        el.set_attr("to", to.to_string());
        if self.is_blocked(&s.jid.to_bare(), &to).await? {
            return self.reply_blocked(s, &el);
        }
        self.route(el).await
    }

    async fn local_message(&self, el: Element, to: Jid) -> Res<()> {
        let from = el.get_attr("from").and_then(|f| Jid::parse(f).ok());
        let mtype = el.get_attr("type").unwrap_or("normal").to_string();
        if to.local().is_none() {
            // Messages to the server itself.
            return self
                .bounce(&el, ErrorType::Cancel, "service-unavailable", None)
                .await;
        }
        let bare = to.to_bare();
        if !self.account_exists(&bare).await? {
            return self
                .bounce(&el, ErrorType::Cancel, "service-unavailable", None)
                .await;
        }
        if let Some(f) = &from {
            if self.is_blocked(&bare, f).await? {
                return self
                    .bounce(&el, ErrorType::Cancel, "service-unavailable", None)
                    .await;
            }
        }
        if to.is_full() {
            if let Some(sess) = self.sessions.find(&to) {
                if sess.handle.deliver(el.clone()).await {
                    return Ok(());
                }
            }
            // RFC 6121 §8.5.3.2.1: an unknown resource.
            match mtype.as_str() {
                "error" | "headline" => return Ok(()),
                "groupchat" => {
                    return self
                        .bounce(&el, ErrorType::Cancel, "service-unavailable", None)
                        .await
                }
                _ => {}
            }
        }
        match mtype.as_str() {
            "error" => return Ok(()),
            "groupchat" => {
                return self
                    .bounce(&el, ErrorType::Cancel, "service-unavailable", None)
                    .await
            }
            _ => {}
        }
        // §8.5.2.1.1: the available resources with non-negative priority.
        let avail: Vec<SessionState> = self
            .sessions
            .available(&bare)
            .into_iter()
            .filter(|s| s.priority >= 0)
            .collect();
        let targets: Vec<&SessionState> = if mtype == "headline" {
            avail.iter().collect()
        } else {
            let max = avail.iter().map(|s| s.priority).max();
            avail.iter().filter(|s| Some(s.priority) == max).collect()
        };
        let mut delivered = false;
        for t in targets {
            delivered |= t.handle.deliver(el.clone()).await;
        }
        if delivered || mtype == "headline" {
            return Ok(());
        }
        self.store_offline(el, &bare).await
    }

    async fn store_offline(&self, mut el: Element, owner: &Jid) -> Res<()> {
        if el.find("body", NS_CLIENT).is_none() && el.find("subject", NS_CLIENT).is_none() {
            // Chat states and receipts without content are not worth keeping (XEP-0160 §3).
            return Ok(());
        }
        el.remove_children("delay", NS_DELAY);
        el.children.push(entente_xmpp_proto::Node::Element(
            Element::new("delay", NS_DELAY)
                .attr("from", self.domain_jid())
                .attr("stamp", rfc3339_now())
                .text("Offline Storage"),
        ));
        let text = el.to_stream_string(NS_CLIENT);
        let stored = self
            .store
            .offline_push(
                &owner.to_string(),
                &text,
                self.cfg.limits.offline_messages_per_user,
            )
            .await?;
        if !stored {
            self.bounce(
                &el,
                ErrorType::Wait,
                "resource-constraint",
                Some("the recipient's offline message storage is full"),
            )
            .await?;
        }
        Ok(())
    }

    // ---- presence ----

    async fn client_presence(&self, s: &SessionHandle, el: Element) -> Res<()> {
        let ptype = el.get_attr("type").map(str::to_string);
        let to = match el.get_attr("to") {
            None => None,
            Some(t) => match Jid::parse(t) {
                Ok(j) => Some(j),
                Err(_) => {
                    return self.reply_error(s, &el, ErrorType::Modify, "jid-malformed", None)
                }
            },
        };
        if let Some(kind) = ptype.as_deref().and_then(SubKind::parse) {
            let Some(to) = to else {
                return self.reply_error(
                    s,
                    &el,
                    ErrorType::Modify,
                    "bad-request",
                    Some("a subscription request needs a 'to'"),
                );
            };
            return self.outbound_subscription(s, el, kind, to.to_bare()).await;
        }
        match (ptype.as_deref(), to) {
            (None | Some("unavailable"), None) => {
                self.presence_broadcast(s, el, ptype.is_none()).await
            }
            (None | Some("unavailable"), Some(to)) => {
                // Directed presence (RFC 6121 §4.6).
                if self.is_blocked(&s.jid.to_bare(), &to).await? {
                    return self.reply_blocked(s, &el);
                }
                self.sessions.set_directed(s, &to, ptype.is_none());
                self.route(el).await
            }
            (Some("probe"), _) => Ok(()),
            (Some("error"), Some(_)) => self.route(el).await,
            _ => self.reply_error(
                s,
                &el,
                ErrorType::Modify,
                "bad-request",
                Some("unknown presence type"),
            ),
        }
    }

    async fn presence_broadcast(&self, s: &SessionHandle, el: Element, available: bool) -> Res<()> {
        let bare = s.jid.to_bare();
        let priority = el
            .find("priority", NS_CLIENT)
            .and_then(|p| p.text_content().trim().parse::<i8>().ok())
            .unwrap_or(0);
        let mut stored = el.clone();
        stored.remove_attr("to");
        stored.remove_attr("from");
        let before = self.sessions.find(&s.jid);
        let prev = self.sessions.set_presence(
            s,
            if available {
                Some(stored.clone())
            } else {
                None
            },
            priority,
        );
        let Some(prev) = prev else { return Ok(()) };
        let initial = available && prev.is_none();
        if !available {
            if prev.is_none() {
                return Ok(());
            }
            if let Some(st) = before {
                // RFC 6121 §4.5.2: the client's unavailable presence (with its status) goes to
                // everyone who had the available one.
                return self.broadcast_unavailable_with(&st, Some(&stored)).await;
            }
            return Ok(());
        }
        let roster = self.store.roster_all(&bare.to_string()).await?;
        let blocks = self.block_list(&bare).await?;
        // To every contact subscribed to the user.
        for item in &roster {
            if !item.sub.from {
                continue;
            }
            let Ok(contact) = Jid::parse(&item.contact) else {
                continue;
            };
            if blocked_by(&blocks, &contact) {
                continue;
            }
            let mut p = stored.clone();
            p.set_attr("from", s.jid.to_string());
            p.set_attr("to", contact.to_string());
            self.route(p).await?;
        }
        // To the user's own other resources, and theirs to the new one.
        for other in self.sessions.available(&bare) {
            if other.handle.id == s.id {
                continue;
            }
            let mut p = stored.clone();
            p.set_attr("from", s.jid.to_string());
            p.set_attr("to", other.handle.jid.to_string());
            other.handle.send(p);
            if initial {
                if let Some(op) = &other.presence {
                    let mut p = op.clone();
                    p.set_attr("from", other.handle.jid.to_string());
                    p.set_attr("to", s.jid.to_string());
                    s.send(p);
                }
            }
        }
        // Also echo to the session itself (RFC 6121 §4.2.2: the user's server sends the
        // presence to all of the user's available resources, including the one that sent it).
        let mut echo = stored.clone();
        echo.set_attr("from", s.jid.to_string());
        echo.set_attr("to", s.jid.to_string());
        s.send(echo);
        if initial {
            // Probes to everyone the user is subscribed to (§4.2.2).
            for item in &roster {
                if !item.sub.to {
                    continue;
                }
                let Ok(contact) = Jid::parse(&item.contact) else {
                    continue;
                };
                if blocked_by(&blocks, &contact) {
                    continue;
                }
                let probe = Element::new("presence", NS_CLIENT)
                    .attr("type", "probe")
                    .attr("from", bare.to_string())
                    .attr("to", contact.to_string());
                self.route(probe).await?;
            }
            // Pending subscription requests, every login until answered (§3.1.3).
            for item in &roster {
                if item.sub.pending_in {
                    let req = item
                        .pending_in_stanza
                        .as_deref()
                        .and_then(|t| parse_stanza(t).ok())
                        .unwrap_or_else(|| {
                            Element::new("presence", NS_CLIENT)
                                .attr("type", "subscribe")
                                .attr("from", item.contact.clone())
                        });
                    let mut req = req;
                    req.set_attr("to", bare.to_string());
                    s.send(req);
                }
            }
            // Offline messages (XEP-0160), only to a resource that can receive them.
            if priority >= 0 {
                for text in self.store.offline_take(&bare.to_string()).await? {
                    match parse_stanza(&text) {
                        Ok(m) => {
                            if !s.send(m) {
                                // The session vanished or choked: keep the message.
                                self.store
                                    .offline_push(&bare.to_string(), &text, u64::MAX)
                                    .await?;
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "dropping an unreadable stored message")
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Sessions of another node that is back after this node had declared it dead (it had
    /// lost NATS for a while): their watchers were told they were unavailable. Their presence
    /// goes again to the watchers connected to this node and, when `federated`, to foreign
    /// watchers (one node does that for the cluster).
    pub(crate) async fn sessions_back(
        &self,
        sessions: &[SessionState],
        federated: bool,
    ) -> Res<()> {
        for st in sessions {
            let Some(pres) = &st.presence else { continue };
            let bare = st.handle.jid.to_bare();
            let blocks = self.block_list(&bare).await?;
            for item in self.store.roster_all(&bare.to_string()).await? {
                if !item.sub.from {
                    continue;
                }
                let Ok(contact) = Jid::parse(&item.contact) else {
                    continue;
                };
                if blocked_by(&blocks, &contact) {
                    continue;
                }
                let mut p = pres.clone();
                p.set_attr("from", st.handle.jid.to_string());
                if self.is_local_domain(contact.domain()) {
                    if self.is_blocked(&contact, &st.handle.jid).await? {
                        continue;
                    }
                    for w in self.sessions.available(&contact) {
                        if w.handle.is_local() {
                            p.set_attr("to", w.handle.jid.to_string());
                            w.handle.send(p.clone());
                        }
                    }
                } else if federated {
                    p.set_attr("to", contact.to_string());
                    self.route(p).await?;
                }
            }
        }
        Ok(())
    }

    /// Unavailable from a session to everyone who had its presence.
    pub(crate) async fn broadcast_unavailable(&self, st: &SessionState) -> Res<()> {
        self.broadcast_unavailable_with(st, None).await
    }

    /// Like [`Self::broadcast_unavailable`], sending `template` (the client's own unavailable
    /// presence, without `to`/`from`) when there is one.
    async fn broadcast_unavailable_with(
        &self,
        st: &SessionState,
        template: Option<&Element>,
    ) -> Res<()> {
        let bare = st.handle.jid.to_bare();
        let mut targets: Vec<Jid> = Vec::new();
        for item in self.store.roster_all(&bare.to_string()).await? {
            if item.sub.from {
                if let Ok(c) = Jid::parse(&item.contact) {
                    targets.push(c);
                }
            }
        }
        for d in &st.directed {
            if !targets.iter().any(|t| t == d || *t == d.to_bare()) {
                targets.push(d.clone());
            }
        }
        // Blocked contacts already saw the user go offline (XEP-0191 §3.3); they hear nothing.
        let blocks = self.block_list(&bare).await?;
        targets.retain(|t| !blocked_by(&blocks, t));
        for other in self.sessions.available(&bare) {
            if other.handle.id != st.handle.id {
                targets.push(other.handle.jid.clone());
            }
        }
        for t in targets {
            let mut p = match template {
                Some(tpl) => tpl.clone(),
                None => Element::new("presence", NS_CLIENT),
            };
            p.set_attr("type", "unavailable");
            p.set_attr("from", st.handle.jid.to_string());
            p.set_attr("to", t.to_string());
            self.route(p).await?;
        }
        Ok(())
    }

    async fn local_presence(&self, el: Element, to: Jid) -> Res<()> {
        let Some(from) = el.get_attr("from").and_then(|f| Jid::parse(f).ok()) else {
            return Ok(());
        };
        let ptype = el.get_attr("type").unwrap_or("").to_string();
        if to.local().is_none() {
            return Ok(());
        }
        let user = to.to_bare();
        if let Some(kind) = SubKind::parse(&ptype) {
            return self
                .inbound_subscription(el, kind, user, from.to_bare())
                .await;
        }
        if self.is_blocked(&user, &from).await? {
            return Ok(());
        }
        if !self.is_local_domain(from.domain()) && matches!(ptype.as_str(), "" | "unavailable") {
            self.track_remote_presence(&user, &from, ptype.is_empty());
        }
        match ptype.as_str() {
            "probe" => self.answer_probe(&user, &from).await,
            "" | "unavailable" | "error" => {
                if to.is_full() {
                    if let Some(s) = self.sessions.find(&to) {
                        s.handle.send(el);
                    }
                } else {
                    for s in self.sessions.available(&user) {
                        s.handle.send(el.clone());
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn track_remote_presence(&self, user: &Jid, from: &Jid, available: bool) {
        let mut map = self
            .remote_presence
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let set = map.entry(from.domain().to_string()).or_default();
        if available {
            set.insert((user.clone(), from.clone()));
        } else if from.is_bare() {
            set.retain(|(u, f)| !(u == user && f.to_bare() == *from));
        } else {
            set.remove(&(user.clone(), from.clone()));
        }
    }

    /// Federation could not reach `domain` for good: every contact of that domain that local
    /// users saw available becomes unavailable for them (RFC 6121 §4.3: the server may generate
    /// unavailable presence when it cannot reach a contact's server).
    pub async fn remote_domain_lost(&self, domain: &str) {
        let lost = self
            .remote_presence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(domain)
            .unwrap_or_default();
        if !lost.is_empty() {
            tracing::info!(%domain, contacts = lost.len(), "foreign domain lost: its contacts become unavailable");
        }
        for (user, from) in lost {
            let p = Element::new("presence", NS_CLIENT)
                .attr("type", "unavailable")
                .attr("from", from.to_string())
                .attr("to", user.to_string())
                .child(
                    Element::new("status", NS_CLIENT).text(format!("{domain} cannot be reached")),
                );
            for s in self.sessions.available(&user) {
                s.handle.send(p.clone());
            }
        }
    }

    /// The federation settings changed: contacts of every domain that can no longer be
    /// reached (not permitted any more) become unavailable for the local users who saw them.
    pub async fn federation_changed(&self, view: &crate::federation::FederationView) {
        let domains: Vec<String> = self
            .remote_presence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for d in domains {
            let permitted = if view.sip_peer(&d).is_some() {
                self.cfg.sip.enabled
            } else {
                self.cfg.s2s.enabled && view.allowed(&d)
            };
            if !permitted {
                self.remote_domain_lost(&d).await;
            }
        }
    }

    /// A stream from `domain` broke: ask its contacts for their presence again. If the domain
    /// cannot be reached, federation reports it lost and [`Hub::remote_domain_lost`] follows.
    pub async fn probe_remote_domain(&self, domain: &str) {
        let pairs: Vec<(Jid, Jid)> = {
            let map = self
                .remote_presence
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let mut v: Vec<(Jid, Jid)> = map
                .get(domain)
                .map(|s| s.iter().map(|(u, f)| (u.clone(), f.to_bare())).collect())
                .unwrap_or_default();
            v.sort();
            v.dedup();
            v
        };
        for (user, contact) in pairs {
            let probe = Element::new("presence", NS_CLIENT)
                .attr("type", "probe")
                .attr("from", user.to_string())
                .attr("to", contact.to_string());
            if let Err(e) = self.route(probe).await {
                tracing::error!(error = %e, "store error while probing");
            }
        }
    }

    async fn answer_probe(&self, user: &Jid, prober: &Jid) -> Res<()> {
        if !self.store.user_exists(&user.to_string()).await? {
            return Ok(());
        }
        let Some(row) = self
            .store
            .roster_get(&user.to_string(), &prober.to_bare().to_string())
            .await?
        else {
            return Ok(());
        };
        if !row.sub.from {
            return Ok(());
        }
        let avail = self.sessions.available(user);
        if avail.is_empty() {
            let p = Element::new("presence", NS_CLIENT)
                .attr("type", "unavailable")
                .attr("from", user.to_string())
                .attr("to", prober.to_string());
            return self.route(p).await;
        }
        for s in avail {
            if let Some(pres) = s.presence {
                let mut p = pres;
                p.set_attr("from", s.handle.jid.to_string());
                p.set_attr("to", prober.to_string());
                self.route(p).await?;
            }
        }
        Ok(())
    }

    // ---- subscriptions ----

    async fn outbound_subscription(
        &self,
        s: &SessionHandle,
        el: Element,
        kind: SubKind,
        contact: Jid,
    ) -> Res<()> {
        let user = s.jid.to_bare();
        if contact == user {
            return self.reply_error(
                s,
                &el,
                ErrorType::Modify,
                "bad-request",
                Some("cannot subscribe to oneself"),
            );
        }
        if kind == SubKind::Subscribe && self.is_blocked(&user, &contact).await? {
            return self.reply_blocked(s, &el);
        }
        let (mut row, existed) = self.roster_row(&user, &contact).await?;
        let before = row.sub;
        let (new, out) = row.sub.apply(kind, Direction::Outbound);
        row.sub = new;
        // The user's answer goes into their policy list, so the same watcher is not asked
        // again (an approval or pre-approval allows; a denial or revocation denies).
        let decided = match kind {
            SubKind::Subscribed => Some(policy::Rule::Allow),
            SubKind::Unsubscribed if before.pending_in || before.from => Some(policy::Rule::Deny),
            _ => None,
        };
        if let Some(rule) = decided {
            self.store
                .policy_set(&user.to_string(), &contact.to_string(), rule.as_str())
                .await?;
            self.rules.remove(&user);
        }
        // A request, an approval, or (RFC 6121 §3.4.2) a pre-approval for a contact not yet in
        // the roster creates an item and pushes it; a pre-approved item shows approved="true".
        let push = matches!(kind, SubKind::Subscribe | SubKind::Subscribed)
            && !row.in_roster
            && (out.changed || out.forward)
            && (kind == SubKind::Subscribe || out.forward || row.sub.preapproved);
        if push {
            row.in_roster = true;
        }
        if !row.sub.pending_in {
            row.pending_in_stanza = None;
        }
        if out.changed || push {
            if row.in_roster || row.sub != SubState::default() {
                self.store.roster_put(&row).await?;
            } else if existed {
                self.store.roster_delete(&row.owner, &row.contact).await?;
            }
            if row.in_roster {
                self.roster_push(&user, &row, false).await;
            }
        }
        if out.forward {
            let mut f = Element::new("presence", NS_CLIENT)
                .attr("type", kind.as_str())
                .attr("from", user.to_string())
                .attr("to", contact.to_string());
            if let Some(st) = el.find("status", NS_CLIENT) {
                f = f.child(st.clone());
            }
            self.route(f).await?;
        }
        if out.send_presence {
            self.send_current_presence(&user, &contact).await?;
        }
        if out.send_unavailable {
            self.send_unavailable(&user, &contact).await?;
        }
        Ok(())
    }

    async fn inbound_subscription(
        &self,
        el: Element,
        kind: SubKind,
        user: Jid,
        contact: Jid,
    ) -> Res<()> {
        if !self.store.user_exists(&user.to_string()).await? {
            if kind == SubKind::Subscribe {
                // RFC 6121 §3.1.3: no such user.
                let r = Element::new("presence", NS_CLIENT)
                    .attr("type", "unsubscribed")
                    .attr("from", user.to_string())
                    .attr("to", contact.to_string());
                self.route(r).await?;
            }
            return Ok(());
        }
        if self.is_blocked(&user, &contact).await? {
            // Polite blocking: the contact hears nothing, the user neither.
            return Ok(());
        }
        let (mut row, existed) = self.roster_row(&user, &contact).await?;
        if kind == SubKind::Subscribe && !row.sub.from && !row.sub.preapproved {
            // The seed's blocking levels: admin domain policy, the user's rules, the admin
            // default for undecided watchers.
            match self.presence_decision(&user, &contact).await? {
                policy::Decision::Allow => {
                    row.sub.preapproved = true;
                    row.in_roster = true;
                }
                policy::Decision::Ask => {}
                // Refused domain, or a denied watcher: polite, nobody is told.
                _ => return Ok(()),
            }
        }
        let (new, out) = row.sub.apply(kind, Direction::Inbound);
        row.sub = new;
        let mut clean = el.clone();
        clean.set_attr("from", contact.to_string());
        clean.set_attr("to", user.to_string());
        if kind == SubKind::Subscribe && row.sub.pending_in {
            row.pending_in_stanza = Some(clean.to_stream_string(NS_CLIENT));
        }
        if !row.sub.pending_in {
            row.pending_in_stanza = None;
        }
        if out.changed || (kind == SubKind::Subscribe && row.sub.pending_in) {
            if row.in_roster || row.sub != SubState::default() {
                self.store.roster_put(&row).await?;
            } else if existed {
                self.store.roster_delete(&row.owner, &row.contact).await?;
            }
            if row.in_roster && out.changed {
                self.roster_push(&user, &row, false).await;
            }
        }
        if out.deliver {
            for s in self.sessions.available(&user) {
                s.handle.send(clean.clone());
            }
        }
        if let Some(reply) = out.auto_reply {
            let r = Element::new("presence", NS_CLIENT)
                .attr("type", reply.as_str())
                .attr("from", user.to_string())
                .attr("to", contact.to_string());
            self.route(r).await?;
        }
        if out.send_presence {
            self.send_current_presence(&user, &contact).await?;
        }
        if out.send_unavailable {
            self.send_unavailable(&user, &contact).await?;
        }
        Ok(())
    }

    /// The current presence of each of `user`'s available resources, to `contact`.
    async fn send_current_presence(&self, user: &Jid, contact: &Jid) -> Res<()> {
        for sess in self.sessions.available(user) {
            if let Some(mut p) = sess.presence {
                p.set_attr("from", sess.handle.jid.to_string());
                p.set_attr("to", contact.to_string());
                self.route(p).await?;
            }
        }
        Ok(())
    }

    /// Unavailable from each of `user`'s available resources, to `contact`.
    async fn send_unavailable(&self, user: &Jid, contact: &Jid) -> Res<()> {
        for sess in self.sessions.available(user) {
            let p = Element::new("presence", NS_CLIENT)
                .attr("type", "unavailable")
                .attr("from", sess.handle.jid.to_string())
                .attr("to", contact.to_string());
            self.route(p).await?;
        }
        Ok(())
    }

    async fn roster_row(&self, user: &Jid, contact: &Jid) -> Res<(RosterRow, bool)> {
        match self
            .store
            .roster_get(&user.to_string(), &contact.to_string())
            .await?
        {
            Some(r) => Ok((r, true)),
            None => Ok((
                RosterRow {
                    owner: user.to_string(),
                    contact: contact.to_string(),
                    ..Default::default()
                },
                false,
            )),
        }
    }

    // ---- IQ ----

    async fn client_iq(&self, s: &SessionHandle, el: Element) -> Res<()> {
        let itype = el.get_attr("type").unwrap_or("").to_string();
        if !matches!(itype.as_str(), "get" | "set" | "result" | "error") {
            return self.reply_error(
                s,
                &el,
                ErrorType::Modify,
                "bad-request",
                Some("missing or unknown IQ type"),
            );
        }
        if el.get_attr("id").is_none() {
            return self.reply_error(
                s,
                &el,
                ErrorType::Modify,
                "bad-request",
                Some("an IQ needs an id"),
            );
        }
        let to = match el.get_attr("to") {
            None => None,
            Some(t) => match Jid::parse(t) {
                Ok(j) => Some(j),
                Err(_) => {
                    return self.reply_error(s, &el, ErrorType::Modify, "jid-malformed", None)
                }
            },
        };
        let own = s.jid.to_bare();
        match to {
            None => self.account_iq(s, el).await,
            Some(t) if t == own => self.account_iq(s, el).await,
            Some(t) => {
                if t.local().is_some()
                    && self.is_blocked(&own, &t).await?
                    && matches!(itype.as_str(), "get" | "set")
                {
                    return self.reply_blocked(s, &el);
                }
                self.route(el).await
            }
        }
    }

    /// IQs a client sends to its own account (no `to`, or its bare JID).
    async fn account_iq(&self, s: &SessionHandle, el: Element) -> Res<()> {
        let itype = el.get_attr("type").unwrap_or("");
        if matches!(itype, "result" | "error") {
            return Ok(());
        }
        let Some(payload) = iq_payload(&el) else {
            return self.reply_error(s, &el, ErrorType::Modify, "bad-request", None);
        };
        let user = s.jid.to_bare();
        match (payload.ns.as_str(), itype) {
            (NS_ROSTER, "get") => {
                let mut q = Element::new("query", NS_ROSTER);
                for row in self.store.roster_all(&user.to_string()).await? {
                    if row.in_roster {
                        q = q.child(roster_item(&row));
                    }
                }
                let mut r = iq_result(&el, Some(q));
                r.remove_attr("from");
                self.reply(s, r)
            }
            (NS_ROSTER, "set") => self.roster_set(s, &el).await,
            (NS_BLOCKING, _) => self.blocking_iq(s, &el).await,
            (NS_PING, "get")
            | (NS_DISCO_INFO, "get")
            | (NS_DISCO_ITEMS, "get")
            | (NS_VERSION, "get") => {
                // Answered as the server answers for itself, from the account's address.
                if payload.ns == NS_DISCO_INFO {
                    let q = Element::new("query", NS_DISCO_INFO).child(
                        Element::new("identity", NS_DISCO_INFO)
                            .attr("category", "account")
                            .attr("type", "registered"),
                    );
                    let mut r = iq_result(&el, Some(q));
                    r.set_attr("from", user.to_string());
                    return self.reply(s, r);
                }
                let mut r = self.server_iq_result(&el, payload);
                r.set_attr("from", user.to_string());
                self.reply(s, r)
            }
            _ => self.reply_error(s, &el, ErrorType::Cancel, "service-unavailable", None),
        }
    }

    fn server_iq_result(&self, el: &Element, payload: &Element) -> Element {
        match payload.ns.as_str() {
            NS_DISCO_INFO => {
                let mut q = Element::new("query", NS_DISCO_INFO).child(
                    Element::new("identity", NS_DISCO_INFO)
                        .attr("category", "server")
                        .attr("type", "im")
                        .attr("name", "Entente"),
                );
                if let Some(node) = payload.get_attr("node") {
                    q.set_attr("node", node);
                }
                for f in [
                    NS_DISCO_INFO,
                    NS_DISCO_ITEMS,
                    NS_PING,
                    NS_VERSION,
                    NS_BLOCKING,
                    NS_OFFLINE,
                    NS_ROSTER,
                ] {
                    q = q.child(Element::new("feature", NS_DISCO_INFO).attr("var", f));
                }
                iq_result(el, Some(q))
            }
            NS_DISCO_ITEMS => iq_result(el, Some(Element::new("query", NS_DISCO_ITEMS))),
            NS_VERSION => iq_result(
                el,
                Some(
                    Element::new("query", NS_VERSION)
                        .child(Element::new("name", NS_VERSION).text("Entente"))
                        .child(Element::new("version", NS_VERSION).text(env!("CARGO_PKG_VERSION"))),
                ),
            ),
            _ => iq_result(el, None),
        }
    }

    async fn local_iq(&self, el: Element, to: Jid) -> Res<()> {
        let itype = el.get_attr("type").unwrap_or("").to_string();
        let from = el.get_attr("from").and_then(|f| Jid::parse(f).ok());
        if to.local().is_none() {
            // The server itself.
            if !matches!(itype.as_str(), "get" | "set") {
                return Ok(());
            }
            let payload = iq_payload(&el).cloned();
            let r = match (payload, itype.as_str()) {
                (Some(p), "get")
                    if matches!(
                        p.ns.as_str(),
                        NS_DISCO_INFO | NS_DISCO_ITEMS | NS_VERSION | NS_PING
                    ) =>
                {
                    self.server_iq_result(&el, &p)
                }
                _ => match error_reply(&el, ErrorType::Cancel, "service-unavailable", None) {
                    Some(r) => r,
                    None => return Ok(()),
                },
            };
            return self.route(r).await;
        }
        let bare = to.to_bare();
        if let Some(f) = &from {
            if self.is_blocked(&bare, f).await? {
                if matches!(itype.as_str(), "get" | "set") {
                    return self
                        .bounce(&el, ErrorType::Cancel, "service-unavailable", None)
                        .await;
                }
                return Ok(());
            }
        }
        if to.is_full() {
            if let Some(s) = self.sessions.find(&to) {
                if s.handle.send(el.clone()) {
                    return Ok(());
                }
            }
            if matches!(itype.as_str(), "get" | "set") {
                return self
                    .bounce(&el, ErrorType::Cancel, "service-unavailable", None)
                    .await;
            }
            return Ok(());
        }
        // To a bare JID: the server answers on the account's behalf (RFC 6121 §8.5.2.1.3).
        if !matches!(itype.as_str(), "get" | "set") {
            return Ok(());
        }
        let payload = iq_payload(&el).cloned();
        if let (Some(p), "get") = (payload, itype.as_str()) {
            if (p.ns == NS_PING || p.ns == NS_DISCO_INFO)
                && self.store.user_exists(&bare.to_string()).await?
            {
                let q = if p.ns == NS_DISCO_INFO {
                    Some(
                        Element::new("query", NS_DISCO_INFO).child(
                            Element::new("identity", NS_DISCO_INFO)
                                .attr("category", "account")
                                .attr("type", "registered"),
                        ),
                    )
                } else {
                    None
                };
                return self.route(iq_result(&el, q)).await;
            }
        }
        self.bounce(&el, ErrorType::Cancel, "service-unavailable", None)
            .await
    }

    async fn roster_set(&self, s: &SessionHandle, el: &Element) -> Res<()> {
        let user = s.jid.to_bare();
        let items: Vec<&Element> = el
            .find("query", NS_ROSTER)
            .map(|q| q.elements().filter(|e| e.is("item", NS_ROSTER)).collect())
            .unwrap_or_default();
        if items.len() != 1 {
            return self.reply_error(
                s,
                el,
                ErrorType::Modify,
                "bad-request",
                Some("a roster set carries exactly one item"),
            );
        }
        let item = items[0];
        let Some(contact) = item.get_attr("jid").and_then(|j| Jid::parse(j).ok()) else {
            return self.reply_error(
                s,
                el,
                ErrorType::Modify,
                "bad-request",
                Some("the item needs a valid jid"),
            );
        };
        let contact = contact.to_bare();
        if contact == user {
            return self.reply_error(
                s,
                el,
                ErrorType::Cancel,
                "not-allowed",
                Some("you cannot add yourself"),
            );
        }
        let (mut row, existed) = self.roster_row(&user, &contact).await?;
        if item.get_attr("subscription") == Some("remove") {
            if !existed {
                return self.reply_error(s, el, ErrorType::Cancel, "item-not-found", None);
            }
            // RFC 6121 §2.5.2: cancel both directions.
            let was = row.sub;
            self.store.roster_delete(&row.owner, &row.contact).await?;
            let mut r = iq_result(el, None);
            r.remove_attr("from");
            self.reply(s, r)?;
            row.in_roster = false;
            self.roster_push(&user, &row, true).await;
            if was.to || was.pending_out {
                let p = Element::new("presence", NS_CLIENT)
                    .attr("type", "unsubscribe")
                    .attr("from", user.to_string())
                    .attr("to", contact.to_string());
                self.route(p).await?;
            }
            if was.from || was.pending_in {
                let p = Element::new("presence", NS_CLIENT)
                    .attr("type", "unsubscribed")
                    .attr("from", user.to_string())
                    .attr("to", contact.to_string());
                self.route(p).await?;
                self.send_unavailable(&user, &contact).await?;
            }
            return Ok(());
        }
        if !row.in_roster {
            let count = self
                .store
                .roster_all(&user.to_string())
                .await?
                .iter()
                .filter(|r| r.in_roster)
                .count();
            if count >= self.cfg.limits.roster_items_per_user {
                return self.reply_error(
                    s,
                    el,
                    ErrorType::Wait,
                    "resource-constraint",
                    Some("the roster is full"),
                );
            }
        }
        row.in_roster = true;
        row.name = item
            .get_attr("name")
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let mut groups: Vec<String> = item
            .elements()
            .filter(|g| g.is("group", NS_ROSTER))
            .map(|g| g.text_content())
            .filter(|g| !g.is_empty())
            .collect();
        groups.sort();
        groups.dedup();
        if groups.iter().any(|g| g.len() > 1024) || groups.len() > 64 {
            return self.reply_error(
                s,
                el,
                ErrorType::Modify,
                "not-acceptable",
                Some("group names too long or too many"),
            );
        }
        row.groups = groups;
        self.store.roster_put(&row).await?;
        let mut r = iq_result(el, None);
        r.remove_attr("from");
        self.reply(s, r)?;
        self.roster_push(&user, &row, false).await;
        Ok(())
    }

    async fn roster_push(&self, user: &Jid, row: &RosterRow, removed: bool) {
        let mut item = roster_item(row);
        if removed {
            item.set_attr("subscription", "remove");
            item.remove_attr("ask");
        }
        for s in self.sessions.of(user) {
            let push = Element::new("iq", NS_CLIENT)
                .attr("type", "set")
                .attr("id", entente_xmpp_proto::c2s::new_id())
                .attr("to", s.handle.jid.to_string())
                .child(Element::new("query", NS_ROSTER).child(item.clone()));
            s.handle.send(push);
        }
    }

    // ---- blocking (XEP-0191) ----

    async fn blocking_iq(&self, s: &SessionHandle, el: &Element) -> Res<()> {
        let user = s.jid.to_bare();
        let itype = el.get_attr("type").unwrap_or("");
        let payload = iq_payload(el).cloned();
        let Some(p) = payload else {
            return self.reply_error(s, el, ErrorType::Modify, "bad-request", None);
        };
        match (itype, p.name.as_str()) {
            ("get", "blocklist") => {
                let mut q = Element::new("blocklist", NS_BLOCKING);
                for j in self.store.block_list(&user.to_string()).await? {
                    q = q.child(Element::new("item", NS_BLOCKING).attr("jid", j));
                }
                let mut r = iq_result(el, Some(q));
                r.remove_attr("from");
                self.reply(s, r)
            }
            ("set", "block") | ("set", "unblock") => {
                let mut jids = Vec::new();
                for item in p.elements().filter(|e| e.is("item", NS_BLOCKING)) {
                    match item.get_attr("jid").and_then(|j| Jid::parse(j).ok()) {
                        Some(j) => jids.push(j),
                        None => {
                            return self.reply_error(
                                s,
                                el,
                                ErrorType::Modify,
                                "jid-malformed",
                                None,
                            )
                        }
                    }
                }
                let block = p.name == "block";
                if block && jids.is_empty() {
                    return self.reply_error(
                        s,
                        el,
                        ErrorType::Modify,
                        "bad-request",
                        Some("no item to block"),
                    );
                }
                let owner = user.to_string();
                let previously = self.block_list(&user).await?;
                if block {
                    for j in &jids {
                        self.store.block_add(&owner, &j.to_string()).await?;
                    }
                } else if jids.is_empty() {
                    self.store.block_clear(&owner).await?;
                } else {
                    for j in &jids {
                        self.store.block_remove(&owner, &j.to_string()).await?;
                    }
                }
                self.invalidate_blocks(&user);
                let mut r = iq_result(el, None);
                r.remove_attr("from");
                self.reply(s, r)?;
                // Push the change to every resource.
                for sess in self.sessions.of(&user) {
                    let push = Element::new("iq", NS_CLIENT)
                        .attr("type", "set")
                        .attr("id", entente_xmpp_proto::c2s::new_id())
                        .attr("to", sess.handle.jid.to_string())
                        .child(p.clone());
                    sess.handle.send(push);
                }
                // Presence: a newly blocked contact sees the user go offline; an unblocked
                // subscribed contact gets the current presence again.
                let now = self.block_list(&user).await?;
                let roster = self.store.roster_all(&owner).await?;
                let online = !self.sessions.available(&user).is_empty();
                for row in roster.iter().filter(|r| r.sub.to && online) {
                    let Ok(c) = Jid::parse(&row.contact) else {
                        continue;
                    };
                    // The user stopped receiving the contact's presence while it was blocked;
                    // probe so the user's resources learn it again (RFC 6121 §4.3).
                    if blocked_by(&previously, &c) && !blocked_by(&now, &c) {
                        let probe = Element::new("presence", NS_CLIENT)
                            .attr("type", "probe")
                            .attr("from", user.to_string())
                            .attr("to", c.to_string());
                        self.route(probe).await?;
                    }
                }
                for row in roster.iter().filter(|r| r.sub.from) {
                    let Ok(c) = Jid::parse(&row.contact) else {
                        continue;
                    };
                    let was = blocked_by(&previously, &c);
                    let is = blocked_by(&now, &c);
                    if !was && is {
                        self.send_unavailable(&user, &c).await?;
                    } else if was && !is {
                        self.send_current_presence(&user, &c).await?;
                    }
                }
                Ok(())
            }
            _ => self.reply_error(s, el, ErrorType::Modify, "bad-request", None),
        }
    }

    async fn block_list(&self, user: &Jid) -> Res<Arc<Vec<Jid>>> {
        if let Some(l) = self.blocks.get(user) {
            return Ok(l);
        }
        let list: Vec<Jid> = self
            .store
            .block_list(&user.to_string())
            .await?
            .iter()
            .filter_map(|j| Jid::parse(j).ok())
            .collect();
        let list = Arc::new(list);
        self.blocks.insert(user.clone(), list.clone());
        Ok(list)
    }

    /// The user's presence rules (allow / deny / block), cached for [`CACHE_TTL`].
    pub async fn policy_entries(&self, user: &Jid) -> Res<Arc<Vec<policy::Entry>>> {
        if let Some(l) = self.rules.get(user) {
            return Ok(l);
        }
        let mut list = Vec::new();
        for (target, rule) in self.store.policy_rules(&user.to_string()).await? {
            match (policy::Target::parse(&target), rule.parse::<policy::Rule>()) {
                (Ok(target), Ok(rule)) => list.push(policy::Entry { target, rule }),
                _ => tracing::warn!(%user, %target, %rule, "ignoring an unreadable policy rule"),
            }
        }
        let list = Arc::new(list);
        self.rules.insert(user.clone(), list.clone());
        Ok(list)
    }

    /// Clears the block-list and rule caches whenever the store says another process or node
    /// changed block lists or rules; runs until `shutdown`.
    pub async fn watch_store_changes(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        use entente_store::{BLOCKLIST_COUNTER, POLICY_RULES_COUNTER};
        let mut seen: [Option<i64>; 2] = [None, None];
        let mut tick = tokio::time::interval(CHANGE_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            for (i, name) in [BLOCKLIST_COUNTER, POLICY_RULES_COUNTER].iter().enumerate() {
                match self.store.change_counter(name).await {
                    Ok(v) => {
                        if seen[i].is_some_and(|old| old != v) {
                            tracing::debug!(counter = name, "cleared a cache changed elsewhere");
                            if i == 0 {
                                self.blocks.clear();
                            } else {
                                self.rules.clear();
                            }
                        }
                        seen[i] = Some(v);
                    }
                    Err(e) => tracing::warn!(error = %e, "could not read a change counter"),
                }
            }
        }
    }

    /// Whether the local account `bare` exists. A user with a bound session does: the store is
    /// asked only for the others (a store round trip per message was half of the receiving
    /// server's CPU).
    pub async fn account_exists(&self, bare: &Jid) -> Res<bool> {
        if self.sessions.has(bare) {
            return Ok(true);
        }
        self.store.user_exists(&bare.to_string()).await
    }

    /// Forgets the cached presence rules of `user` (after an admin changed them).
    pub fn invalidate_policy(&self, user: &Jid) {
        self.rules.remove(user);
    }

    /// The admin layer of the policy, from the federation in effect.
    pub fn admin_policy(&self) -> policy::AdminPolicy {
        use crate::config::{DefaultPolicy, FederationPolicy};
        let fed = self.federation.view();
        // SIP peers are the permitted SIP domains, whatever the XMPP policy lists.
        let sip: Vec<String> = if self.cfg.sip.enabled {
            fed.sip.iter().map(|(p, _)| p.domain.clone()).collect()
        } else {
            Vec::new()
        };
        let mut domains = fed.policy_domains.clone();
        match fed.policy {
            FederationPolicy::Allowlist => domains.extend(sip),
            FederationPolicy::Denylist => {
                domains.retain(|d| !sip.iter().any(|s| s.eq_ignore_ascii_case(d)))
            }
            FederationPolicy::Open => {}
        }
        policy::AdminPolicy {
            local_domains: vec![self.cfg.domain.clone()],
            federation: match fed.policy {
                FederationPolicy::Open => policy::FederationRule::Open,
                FederationPolicy::Allowlist => policy::FederationRule::Allowlist(domains),
                FederationPolicy::Denylist => policy::FederationRule::Denylist(domains),
            },
            default: match self.cfg.policy.default {
                DefaultPolicy::Ask => policy::DefaultAction::Ask,
                DefaultPolicy::Allow => policy::DefaultAction::Allow,
                DefaultPolicy::Deny => policy::DefaultAction::Deny,
            },
        }
    }

    /// Whether `watcher` may subscribe to `user`'s presence: the one decision both protocols
    /// use (XEP-0191 block items count as `block` rules).
    pub async fn presence_decision(&self, user: &Jid, watcher: &Jid) -> Res<policy::Decision> {
        let mut entries: Vec<policy::Entry> = self.policy_entries(user).await?.as_ref().clone();
        for b in self.block_list(user).await?.iter() {
            let target = match b.local() {
                Some(_) => policy::Target::User(b.to_bare()),
                None => policy::Target::Domain {
                    domain: b.domain().to_string(),
                    subdomains: false,
                },
            };
            entries.push(policy::Entry {
                target,
                rule: policy::Rule::Block,
            });
        }
        Ok(policy::decide(&self.admin_policy(), &entries, watcher))
    }

    fn invalidate_blocks(&self, user: &Jid) {
        self.blocks.remove(user);
    }

    /// Whether local user `user` blocks `other` (for federation gateways that must answer a
    /// foreign request before handing it over).
    pub async fn blocks(&self, user: &Jid, other: &Jid) -> Res<bool> {
        self.is_blocked(user, other).await
    }

    /// Whether local user `user` blocks `other` (XEP-0191 items, and `block` policy rules,
    /// which may cover subdomains).
    async fn is_blocked(&self, user: &Jid, other: &Jid) -> Res<bool> {
        if !self.is_local_domain(user.domain()) || user.local().is_none() {
            return Ok(false);
        }
        if blocked_by(&self.block_list(user).await?, other) {
            return Ok(true);
        }
        Ok(policy::blocks_messages(
            &self.policy_entries(user).await?,
            other,
        ))
    }

    // ---- replies ----

    fn reply(&self, s: &SessionHandle, el: Element) -> Res<()> {
        s.send(el);
        Ok(())
    }

    fn reply_error(
        &self,
        s: &SessionHandle,
        el: &Element,
        t: ErrorType,
        cond: &str,
        text: Option<&str>,
    ) -> Res<()> {
        if let Some(mut r) = error_reply(el, t, cond, text) {
            r.set_attr("to", s.jid.to_string());
            if el.get_attr("to").is_none() {
                r.remove_attr("from");
            }
            s.send(r);
        }
        Ok(())
    }

    /// XEP-0191 §3.5: the user tried to reach someone they block.
    fn reply_blocked(&self, s: &SessionHandle, el: &Element) -> Res<()> {
        if let Some(mut r) = error_reply(el, ErrorType::Cancel, "not-acceptable", None) {
            r.set_attr("to", s.jid.to_string());
            if let Some(err) = r.find_mut("error", NS_CLIENT) {
                err.children
                    .push(entente_xmpp_proto::Node::Element(Element::new(
                        "blocked",
                        NS_BLOCKING_ERRORS,
                    )));
            }
            s.send(r);
        }
        Ok(())
    }

    /// Sends an error reply for `el` back to its sender, wherever they are.
    async fn bounce(&self, el: &Element, t: ErrorType, cond: &str, text: Option<&str>) -> Res<()> {
        if let Some(r) = error_reply(el, t, cond, text) {
            Box::pin(self.route(r)).await?;
        }
        Ok(())
    }

    async fn deliver_local(&self, el: Element, to: Jid) -> Res<()> {
        match Kind::of(&el) {
            Some(Kind::Message) => self.local_message(el, to).await,
            Some(Kind::Presence) => self.local_presence(el, to).await,
            Some(Kind::Iq) => self.local_iq(el, to).await,
            None => Ok(()),
        }
    }
}

fn roster_item(row: &RosterRow) -> Element {
    let mut item = Element::new("item", NS_ROSTER)
        .attr("jid", row.contact.clone())
        .attr("subscription", row.sub.subscription().as_str());
    if let Some(n) = &row.name {
        item.set_attr("name", n.clone());
    }
    if row.sub.pending_out {
        item.set_attr("ask", "subscribe");
    }
    // RFC 6121 §2.1.2.1: a pre-approved contact carries approved="true".
    if row.sub.preapproved {
        item.set_attr("approved", "true");
    }
    for g in &row.groups {
        item = item.child(Element::new("group", NS_ROSTER).text(g.clone()));
    }
    item
}

/// XEP-0191 matching (the privacy-list rules of XEP-0016 §2.1): a domain entry matches the whole
/// domain, a bare entry every resource, a full entry exactly.
pub fn blocked_by(list: &[Jid], other: &Jid) -> bool {
    list.iter().any(|b| {
        if b.local().is_none() && b.resource().is_none() {
            b.domain() == other.domain()
        } else if b.resource().is_none() {
            *b == other.to_bare()
        } else {
            b == other
        }
    })
}

/// The current time as an XEP-0082 timestamp.
/// A time as RFC 3339 (UTC, seconds).
pub fn rfc3339_at(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    rfc3339(secs)
}

pub fn rfc3339_now() -> String {
    rfc3339_at(std::time::SystemTime::now())
}

fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn block_matching() {
        let list = vec![
            Jid::parse("evil.example").unwrap(),
            Jid::parse("bob@x.example").unwrap(),
            Jid::parse("carol@y.example/phone").unwrap(),
        ];
        assert!(blocked_by(
            &list,
            &Jid::parse("any@evil.example/r").unwrap()
        ));
        assert!(!blocked_by(
            &list,
            &Jid::parse("any@sub.evil.example").unwrap()
        ));
        assert!(blocked_by(&list, &Jid::parse("bob@x.example/r").unwrap()));
        assert!(blocked_by(
            &list,
            &Jid::parse("carol@y.example/phone").unwrap()
        ));
        assert!(!blocked_by(
            &list,
            &Jid::parse("carol@y.example/pc").unwrap()
        ));
    }
}
