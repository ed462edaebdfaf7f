//! Where stanzas go: the session registry (local connected resources) and the interface to
//! other domains.
//!
//! [`Sessions`] is the one place that knows which resources are connected and what presence
//! each last sent. The IM logic in [`crate::hub`] asks it, never a socket. In a multi-node
//! cluster it also holds the sessions of the other nodes (kept up to date by
//! [`crate::cluster`] through NATS), behind the same methods: a [`SessionHandle`] of another
//! node forwards what is sent to it through a [`NodeLink`]. Federation plugs in behind
//! [`RemoteRouter`].

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use entente_model::jid::Jid;
use entente_xmpp_proto::{Element, StreamErrorCondition};
use tokio::sync::mpsc;

/// What the hub sends to a connection task.
///
/// Kept small on purpose: tokio's bounded channel allocates its slots in blocks of 32 as soon as
/// it is created, so every idle session pays for 32 of these (3 KiB with an inline [`Element`],
/// under 1 KiB boxed).
#[derive(Debug)]
pub enum SessionMsg {
    /// Write this stanza to the client.
    Stanza(Box<Element>),
    /// Close the stream with this error.
    Kick(StreamErrorCondition, Box<str>),
}

/// The way to the other nodes of a cluster, as the session registry needs it
/// ([`crate::cluster`] implements it).
pub trait NodeLink: Send + Sync {
    /// Forwards a stanza for `to` (a full JID bound on `node`) without waiting: presence, IQs,
    /// roster pushes. What the other node cannot deliver, it handles as undeliverable.
    fn forward(&self, node: &str, to: &Jid, el: Element);
    /// Forwards a stanza and waits for the other node to say it queued it for the client:
    /// false when the node or the session is gone (the caller then falls back as for a
    /// session that is not there: another resource, offline storage, an error).
    fn deliver(
        &self,
        node: &str,
        to: &Jid,
        el: Element,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'static>>;
    /// Tells the other nodes about a change to a session of this node.
    fn publish(&self, change: LocalChange);
}

/// A change to a session of this node, for the other nodes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LocalChange {
    Bound(Jid),
    Unbound(Jid),
    /// New presence: the priority and the last available presence (`None`: unavailable).
    Presence(Jid, i8, Option<Element>),
}

/// Where a session lives.
#[derive(Clone)]
enum Target {
    /// On this node: the connection task's queue.
    Local(mpsc::Sender<SessionMsg>),
    /// On another node of the cluster.
    Remote {
        node: Arc<str>,
        link: Arc<dyn NodeLink>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Local(_) => f.write_str("Local"),
            Target::Remote { node, .. } => write!(f, "Remote({node})"),
        }
    }
}

/// A bound session as the rest of the server sees it.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub id: u64,
    pub jid: Jid,
    target: Target,
}

impl SessionHandle {
    /// Queues a stanza for the client. Returns false when the session is gone or its queue is
    /// full (a client that does not read is disconnected rather than allowed to grow memory).
    /// For a session on another node, the stanza is forwarded and this returns true.
    pub fn send(&self, el: Element) -> bool {
        let tx = match &self.target {
            Target::Local(tx) => tx,
            Target::Remote { node, link } => {
                link.forward(node, &self.jid, el);
                return true;
            }
        };
        match tx.try_send(SessionMsg::Stanza(Box::new(el))) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let _ = tx.try_send(SessionMsg::Kick(
                    StreamErrorCondition::PolicyViolation,
                    "the client does not read fast enough".into(),
                ));
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Like [`Self::send`], but for a session on another node waits until that node has queued
    /// the stanza for its client, so that false really means "not delivered" (messages use it:
    /// a message that was not queued goes to another resource or to offline storage).
    pub async fn deliver(&self, el: Element) -> bool {
        match &self.target {
            Target::Local(_) => self.send(el),
            Target::Remote { node, link } => link.deliver(node, &self.jid, el).await,
        }
    }

    /// Closes the client's stream. Sessions of other nodes are closed by their own node (the
    /// admin API of that node); here this does nothing for them.
    pub fn kick(&self, cond: StreamErrorCondition, text: &str) {
        if let Target::Local(tx) = &self.target {
            let _ = tx.try_send(SessionMsg::Kick(cond, text.into()));
        }
    }

    /// The node the session is bound on: `None` for this node.
    pub fn node(&self) -> Option<&str> {
        match &self.target {
            Target::Local(_) => None,
            Target::Remote { node, .. } => Some(node),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self.target, Target::Local(_))
    }
}

/// One connected resource.
#[derive(Debug, Clone)]
pub struct SessionState {
    pub handle: SessionHandle,
    /// The last available presence the client broadcast (without `to`/`from`); `None` before
    /// initial presence and after unavailable.
    pub presence: Option<Element>,
    pub priority: i8,
    /// Full JIDs that received directed available presence from this resource.
    pub directed: HashSet<Jid>,
}

/// The registry of connected resources, keyed by bare JID: this node's and, in a cluster, the
/// other nodes'.
#[derive(Default)]
pub struct Sessions {
    inner: RwLock<HashMap<Jid, Vec<SessionState>>>,
    next_id: AtomicU64,
    /// Set once in cluster mode: local changes are published through it, and remote sessions
    /// forward through it.
    link: OnceLock<Arc<dyn NodeLink>>,
}

/// A session of another node, as that node described it.
#[derive(Debug, Clone)]
pub struct RemoteSession {
    pub jid: Jid,
    pub priority: i8,
    pub presence: Option<Element>,
}

/// The queue length of one session.
pub const SESSION_QUEUE: usize = 1024;

impl Sessions {
    /// Registers a new session for `full`. A session already bound to the same full JID is
    /// removed and returned (the caller kicks it with `conflict`: the newer session wins).
    pub fn bind(
        &self,
        full: Jid,
    ) -> (
        SessionHandle,
        mpsc::Receiver<SessionMsg>,
        Option<SessionState>,
    ) {
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let handle = SessionHandle {
            id,
            jid: full.clone(),
            target: Target::Local(tx),
        };
        let old = {
            let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
            // Most users have one resource: start with room for one, not the default four.
            let list = map
                .entry(full.to_bare())
                .or_insert_with(|| Vec::with_capacity(1));
            let old = list
                .iter()
                .position(|s| s.handle.jid == full)
                .map(|i| list.remove(i));
            list.push(SessionState {
                handle: handle.clone(),
                presence: None,
                priority: 0,
                directed: HashSet::new(),
            });
            old
        };
        if let Some(link) = self.link.get() {
            link.publish(LocalChange::Bound(full));
        }
        // The same resource bound on another node: that node closes it when it hears of ours.
        let old = old.filter(|o| o.handle.is_local());
        (handle, rx, old)
    }

    /// Removes a session; returns its last state if it was still registered.
    pub fn unbind(&self, handle: &SessionHandle) -> Option<SessionState> {
        let st = {
            let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
            let bare = handle.jid.to_bare();
            let list = map.get_mut(&bare)?;
            let i = list.iter().position(|s| s.handle.id == handle.id)?;
            let st = list.remove(i);
            if list.is_empty() {
                map.remove(&bare);
            }
            st
        };
        if st.handle.is_local() {
            if let Some(link) = self.link.get() {
                link.publish(LocalChange::Unbound(st.handle.jid.clone()));
            }
        }
        Some(st)
    }

    /// Every session of a user.
    pub fn of(&self, bare: &Jid) -> Vec<SessionState> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(bare).cloned().unwrap_or_default()
    }

    /// Whether the user has a bound session (on any node): then the account exists.
    pub fn has(&self, bare: &Jid) -> bool {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(bare).is_some_and(|l| !l.is_empty())
    }

    /// The sessions of a user that sent available presence (only those are cloned).
    pub fn available(&self, bare: &Jid) -> Vec<SessionState> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(bare)
            .map(|l| l.iter().filter(|s| s.presence.is_some()).cloned().collect())
            .unwrap_or_default()
    }

    pub fn find(&self, full: &Jid) -> Option<SessionState> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(&full.to_bare())?
            .iter()
            .find(|s| s.handle.jid == *full)
            .cloned()
    }

    /// Updates a session's presence; returns the previous one. `None` if the session is gone.
    pub fn set_presence(
        &self,
        handle: &SessionHandle,
        presence: Option<Element>,
        priority: i8,
    ) -> Option<Option<Element>> {
        let prev = {
            let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
            let s = map
                .get_mut(&handle.jid.to_bare())?
                .iter_mut()
                .find(|s| s.handle.id == handle.id)?;
            let prev = std::mem::replace(&mut s.presence, presence.clone());
            s.priority = priority;
            if s.presence.is_none() {
                s.directed.clear();
            }
            prev
        };
        if handle.is_local() {
            if let Some(link) = self.link.get() {
                link.publish(LocalChange::Presence(
                    handle.jid.clone(),
                    priority,
                    presence,
                ));
            }
        }
        Some(prev)
    }

    /// Records (or forgets) a directed presence recipient.
    pub fn set_directed(&self, handle: &SessionHandle, to: &Jid, on: bool) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map
            .get_mut(&handle.jid.to_bare())
            .and_then(|l| l.iter_mut().find(|s| s.handle.id == handle.id))
        {
            if on {
                s.directed.insert(to.clone());
            } else {
                s.directed.remove(to);
            }
        }
    }

    /// Every session bound on this node (a snapshot), sorted by full JID.
    pub fn all(&self) -> Vec<SessionState> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<SessionState> = map
            .values()
            .flatten()
            .filter(|s| s.handle.is_local())
            .cloned()
            .collect();
        out.sort_by_key(|s| s.handle.jid.to_string());
        out
    }

    /// Number of sessions bound on this node.
    pub fn count(&self) -> usize {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.values()
            .flatten()
            .filter(|s| s.handle.is_local())
            .count()
    }

    // ---- the other nodes' sessions (cluster mode) ----

    /// Turns on cluster mode: from now on local changes are published through `link`. Returns
    /// false if it was already on.
    pub fn set_link(&self, link: Arc<dyn NodeLink>) -> bool {
        self.link.set(link).is_ok()
    }

    /// This node's sessions as the other nodes need them.
    pub fn local_snapshot(&self) -> Vec<RemoteSession> {
        self.all()
            .into_iter()
            .map(|s| RemoteSession {
                jid: s.handle.jid,
                priority: s.priority,
                presence: s.presence,
            })
            .collect()
    }

    /// Adds (or updates) a session of `node`. If this node has a session with the same full
    /// JID, it is removed and returned: the caller closes it with `conflict` (the newer session
    /// wins, as on one node).
    pub fn remote_upsert(&self, node: &str, rs: RemoteSession) -> Option<SessionState> {
        let link = self.link.get()?;
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let list = map
            .entry(rs.jid.to_bare())
            .or_insert_with(|| Vec::with_capacity(1));
        let mut replaced = None;
        if let Some(i) = list.iter().position(|s| s.handle.jid == rs.jid) {
            if list[i].handle.node() == Some(node) {
                list[i].presence = rs.presence;
                list[i].priority = rs.priority;
                return None;
            }
            replaced = Some(list.remove(i)).filter(|s| s.handle.is_local());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        list.push(SessionState {
            handle: SessionHandle {
                id,
                jid: rs.jid,
                target: Target::Remote {
                    node: node.into(),
                    link: link.clone(),
                },
            },
            presence: rs.presence,
            priority: rs.priority,
            directed: HashSet::new(),
        });
        replaced
    }

    /// Removes the session `full` of `node` (a session with that JID on another node stays).
    pub fn remote_remove(&self, node: &str, full: &Jid) -> Option<SessionState> {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let bare = full.to_bare();
        let list = map.get_mut(&bare)?;
        let i = list
            .iter()
            .position(|s| s.handle.jid == *full && s.handle.node() == Some(node))?;
        let st = list.remove(i);
        if list.is_empty() {
            map.remove(&bare);
        }
        Some(st)
    }

    /// Removes every session of `node` (it died, or restarted); returns them.
    pub fn remote_drop_node(&self, node: &str) -> Vec<SessionState> {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        map.retain(|_, list| {
            list.retain(|s| {
                if s.handle.node() == Some(node) {
                    out.push(s.clone());
                    false
                } else {
                    true
                }
            });
            !list.is_empty()
        });
        out.sort_by_key(|s| s.handle.jid.to_string());
        out
    }

    /// The sessions of `node` this node knows of.
    pub fn remote_of_node(&self, node: &str) -> Vec<SessionState> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.values()
            .flatten()
            .filter(|s| s.handle.node() == Some(node))
            .cloned()
            .collect()
    }
}

/// Why a stanza could not be handed to another domain.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// No federation path to that domain exists (not configured, or refused by policy).
    #[error("{0}")]
    NotFound(String),
    /// The domain could not be reached in time.
    #[error("{0}")]
    Timeout(String),
}

/// The way out to other domains. Federation (XMPP s2s, SIP) implements it; a stanza handed
/// over is then federation's to deliver or bounce.
pub trait RemoteRouter: Send + Sync {
    fn send(&self, stanza: Element) -> Result<(), RemoteError>;
}

/// The router used while no federation is configured: every foreign domain is unreachable.
pub struct NoFederation;

impl RemoteRouter for NoFederation {
    fn send(&self, stanza: Element) -> Result<(), RemoteError> {
        let domain = stanza
            .get_attr("to")
            .and_then(|t| Jid::parse(t).ok())
            .map(|j| j.domain().to_string())
            .unwrap_or_default();
        Err(RemoteError::NotFound(format!(
            "federation is not enabled on this server, so {domain} cannot be reached"
        )))
    }
}

#[cfg(test)]
mod tests {
    //! The registry's cluster half, with a [`NodeLink`] that records what would go to NATS (the
    //! real NATS path is covered end to end by tests/e2e/test_cluster.py).
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        forwarded: Mutex<Vec<(String, String)>>,
        published: Mutex<Vec<String>>,
    }

    impl NodeLink for Recorder {
        fn forward(&self, node: &str, to: &Jid, _el: Element) {
            let mut f = self.forwarded.lock().unwrap();
            f.push((node.to_string(), to.to_string()));
        }
        fn deliver(
            &self,
            node: &str,
            _to: &Jid,
            _el: Element,
        ) -> Pin<Box<dyn Future<Output = bool> + Send + 'static>> {
            let ok = node == "up";
            Box::pin(async move { ok })
        }
        fn publish(&self, change: LocalChange) {
            self.published.lock().unwrap().push(match change {
                LocalChange::Bound(j) => format!("bound {j}"),
                LocalChange::Unbound(j) => format!("unbound {j}"),
                LocalChange::Presence(j, p, el) => format!("presence {j} {p} {}", el.is_some()),
            });
        }
    }

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn remote(full: &str, priority: i8, available: bool) -> RemoteSession {
        RemoteSession {
            jid: jid(full),
            priority,
            presence: available.then(|| Element::new("presence", "jabber:client")),
        }
    }

    fn cluster() -> (Sessions, Arc<Recorder>) {
        let s = Sessions::default();
        let rec = Arc::new(Recorder::default());
        assert!(s.set_link(rec.clone()));
        (s, rec)
    }

    #[test]
    fn without_a_link_nothing_is_published_and_remote_sessions_are_ignored() {
        let s = Sessions::default();
        let (h, _rx, _) = s.bind(jid("a@x/1"));
        assert!(h.is_local() && h.node().is_none());
        assert!(s.remote_upsert("n2", remote("a@x/2", 0, true)).is_none());
        assert_eq!(s.of(&jid("a@x")).len(), 1);
    }

    #[test]
    fn local_changes_are_published() {
        let (s, rec) = cluster();
        let (h, _rx, _) = s.bind(jid("a@x/1"));
        s.set_presence(&h, Some(Element::new("presence", "jabber:client")), 3);
        s.set_presence(&h, None, 0);
        s.unbind(&h);
        assert_eq!(
            *rec.published.lock().unwrap(),
            [
                "bound a@x/1",
                "presence a@x/1 3 true",
                "presence a@x/1 0 false",
                "unbound a@x/1"
            ]
        );
    }

    #[tokio::test]
    async fn remote_sessions_are_found_and_forwarded_to() {
        let (s, rec) = cluster();
        let (_h, _rx, _) = s.bind(jid("a@x/1"));
        s.remote_upsert("up", remote("a@x/2", 5, true));
        s.remote_upsert("down", remote("a@x/3", 0, false));
        assert_eq!(s.of(&jid("a@x")).len(), 3);
        let avail = s.available(&jid("a@x"));
        assert_eq!(avail.len(), 1);
        assert_eq!(avail[0].handle.node(), Some("up"));
        assert_eq!(avail[0].priority, 5);
        assert!(avail[0]
            .handle
            .send(Element::new("message", "jabber:client")));
        assert_eq!(
            *rec.forwarded.lock().unwrap(),
            [("up".to_string(), "a@x/2".to_string())]
        );
        assert!(avail[0].handle.deliver(Element::new("m", "x")).await);
        let down = s.find(&jid("a@x/3")).unwrap();
        assert!(!down.handle.deliver(Element::new("m", "x")).await);
        // Only this node's sessions count as "all" and in the count.
        assert_eq!(s.count(), 1);
        assert_eq!(s.all().len(), 1);
        assert_eq!(s.local_snapshot().len(), 1);
        // A presence update changes the entry in place.
        s.remote_upsert("down", remote("a@x/3", 1, true));
        assert_eq!(s.available(&jid("a@x")).len(), 2);
    }

    #[test]
    fn a_remote_bind_of_the_same_resource_replaces_the_local_session() {
        let (s, _rec) = cluster();
        let (h, _rx, _) = s.bind(jid("a@x/1"));
        let replaced = s.remote_upsert("n2", remote("a@x/1", 0, false)).unwrap();
        assert_eq!(replaced.handle.id, h.id);
        let now = s.find(&jid("a@x/1")).unwrap();
        assert_eq!(now.handle.node(), Some("n2"));
        // The old local session ends later: its unbind finds nothing and publishes nothing.
        assert!(s.unbind(&h).is_none());
        assert!(s.find(&jid("a@x/1")).is_some());
        // A local bind of a resource held remotely takes it back without "replacing" anything
        // local (the other node closes its own session when it hears of this one).
        let (_h2, _rx2, old) = s.bind(jid("a@x/1"));
        assert!(old.is_none());
        assert!(s.find(&jid("a@x/1")).unwrap().handle.is_local());
        // An unbind from n2 for that JID no longer touches it.
        assert!(s.remote_remove("n2", &jid("a@x/1")).is_none());
        assert!(s.find(&jid("a@x/1")).is_some());
    }

    #[test]
    fn a_dead_node_takes_its_sessions_with_it() {
        let (s, _rec) = cluster();
        let (_h, _rx, _) = s.bind(jid("a@x/1"));
        s.remote_upsert("n2", remote("a@x/2", 0, true));
        s.remote_upsert("n2", remote("b@x/1", 0, true));
        s.remote_upsert("n3", remote("c@x/1", 0, true));
        let gone = s.remote_drop_node("n2");
        let names: Vec<String> = gone.iter().map(|g| g.handle.jid.to_string()).collect();
        assert_eq!(names, ["a@x/2", "b@x/1"]);
        assert!(s.of(&jid("b@x")).is_empty());
        assert_eq!(s.of(&jid("a@x")).len(), 1);
        assert_eq!(s.remote_of_node("n3").len(), 1);
        assert!(s.remote_drop_node("n2").is_empty());
    }
}
