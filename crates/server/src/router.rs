//! Where stanzas go: the session registry (local connected resources) and the interface to
//! other domains.
//!
//! [`Sessions`] is the one place that knows which resources are connected and what presence
//! each last sent. The IM logic in [`crate::hub`] asks it, never a socket. A multi-node cluster
//! replaces it with a registry shared through NATS behind the same methods; federation plugs in
//! behind [`RemoteRouter`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

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

/// A bound session as the rest of the server sees it.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub id: u64,
    pub jid: Jid,
    tx: mpsc::Sender<SessionMsg>,
}

impl SessionHandle {
    /// Queues a stanza for the client. Returns false when the session is gone or its queue is
    /// full (a client that does not read is disconnected rather than allowed to grow memory).
    pub fn send(&self, el: Element) -> bool {
        match self.tx.try_send(SessionMsg::Stanza(Box::new(el))) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let _ = self.tx.try_send(SessionMsg::Kick(
                    StreamErrorCondition::PolicyViolation,
                    "the client does not read fast enough".into(),
                ));
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub fn kick(&self, cond: StreamErrorCondition, text: &str) {
        let _ = self.tx.try_send(SessionMsg::Kick(cond, text.into()));
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

/// The registry of connected resources, keyed by bare JID.
#[derive(Default)]
pub struct Sessions {
    inner: RwLock<HashMap<Jid, Vec<SessionState>>>,
    next_id: AtomicU64,
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
            tx,
        };
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
        (handle, rx, old)
    }

    /// Removes a session; returns its last state if it was still registered.
    pub fn unbind(&self, handle: &SessionHandle) -> Option<SessionState> {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let bare = handle.jid.to_bare();
        let list = map.get_mut(&bare)?;
        let i = list.iter().position(|s| s.handle.id == handle.id)?;
        let st = list.remove(i);
        if list.is_empty() {
            map.remove(&bare);
        }
        Some(st)
    }

    /// Every session of a user.
    pub fn of(&self, bare: &Jid) -> Vec<SessionState> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(bare).cloned().unwrap_or_default()
    }

    /// The sessions of a user that sent available presence.
    pub fn available(&self, bare: &Jid) -> Vec<SessionState> {
        self.of(bare)
            .into_iter()
            .filter(|s| s.presence.is_some())
            .collect()
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
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let s = map
            .get_mut(&handle.jid.to_bare())?
            .iter_mut()
            .find(|s| s.handle.id == handle.id)?;
        let prev = std::mem::replace(&mut s.presence, presence);
        s.priority = priority;
        if s.presence.is_none() {
            s.directed.clear();
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

    /// Every bound session (a snapshot), sorted by full JID.
    pub fn all(&self) -> Vec<SessionState> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<SessionState> = map.values().flatten().cloned().collect();
        out.sort_by_key(|s| s.handle.jid.to_string());
        out
    }

    /// Number of bound sessions.
    pub fn count(&self) -> usize {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.values().map(Vec::len).sum()
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
