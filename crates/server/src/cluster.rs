//! Cluster mode: several nodes serve one domain, sharing a PostgreSQL database and talking
//! through NATS (`docs/cluster.md`).
//!
//! This module owns the NATS connection. It keeps the other nodes' sessions in
//! [`crate::router::Sessions`] (which then routes to them through [`NodeLink`]), watches which
//! nodes are alive, and delivers what other nodes forward to this node's clients.
//!
//! Subjects, all under `entente.<domain>`:
//! - `.registry`: every node publishes its heartbeat (every second) and every change to its
//!   sessions (bound, unbound, presence) here, and a snapshot of all its sessions when it meets a
//!   node it did not know (a node that starts, or comes back). A snapshot may ask the node it is
//!   meant for to answer with its own (`want`): that is how a joining node asks the others for
//!   their sessions. All registry messages of one node go out in order through one task, and
//!   every node reads them in order in one task.
//! - `.node.<node_id>`: stanzas for a session of that node. Messages are sent as requests and
//!   the node answers whether it queued the stanza for the client; a node that is gone has no
//!   subscriber, NATS answers "no responders" at once, and the sender falls back as for a
//!   missing session (another resource, offline storage). Everything else is fire-and-forget.
//! - `.s2s.out` (queue group `s2s`) and `.s2s.out.<node_id>`: stanzas for foreign XMPP domains
//!   from nodes that do not federate (`[cluster] federation = false`), taken by the
//!   federation-enabled nodes, which answer whether their s2s took the stanza
//!   ([`crate::relay`]).
//!
//! A node not heard from for [`DEAD_AFTER`] is dead: its sessions are dropped, and the alive node
//! with the lowest `node_id` tells their watchers that they are unavailable. A node that
//! restarts has a new instance id; the old instance's sessions are treated the same way.
//!
//! SIP dialog ownership and takeover are the SIP gateway's (`crate::sipfed::relay`); this module
//! only tells it which nodes die ([`Cluster::on_node_dead`]) and lends it the NATS connection.
//! Outbound XMPP federation from nodes that do not federate goes through `crate::relay`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use entente_model::jid::Jid;
use entente_xmpp_proto::element::NS_CLIENT;
use entente_xmpp_proto::{parse_stanza, Element, StreamErrorCondition};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::ClusterConfig;
use crate::hub::Hub;
use crate::router::{LocalChange, NodeLink, RemoteError, RemoteRouter, RemoteSession};

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node not heard from for this long is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(3);
/// How long a node waits for another to confirm a message delivery (or to say whether it took
/// a stanza for federation).
pub(crate) const DELIVERY_TIMEOUT: Duration = Duration::from_secs(3);
/// The NATS queue group of the federation-enabled nodes.
const S2S_QUEUE: &str = "s2s";

/// What every registry message carries.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    node: String,
    /// Random per process: a node that restarted is a new instance.
    instance: String,
    /// Whether the node takes stanzas for foreign XMPP domains from the others (absent: a node
    /// of an earlier version, which federated by itself).
    #[serde(default = "federates_by_default")]
    federation: bool,
    #[serde(flatten)]
    body: Body,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Body {
    Heartbeat,
    Bound {
        jid: String,
    },
    Unbound {
        jid: String,
    },
    Presence {
        jid: String,
        priority: i8,
        presence: Option<String>,
    },
    Snapshot {
        sessions: Vec<WireSession>,
        /// The node asked to answer with its own snapshot.
        want: Option<String>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct WireSession {
    jid: String,
    priority: i8,
    presence: Option<String>,
}

/// A stanza for a session of another node.
#[derive(Debug, Serialize, Deserialize)]
struct Forward {
    to: String,
    stanza: String,
}

fn federates_by_default() -> bool {
    true
}

/// What a federation-enabled node answers to a stanza relayed to it for a foreign domain.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RelayAnswer {
    /// Its s2s took the stanza: it now delivers or bounces it.
    pub ok: bool,
    /// Not taken because the domain does not answer (else: cannot be reached at all).
    #[serde(default)]
    pub timeout: bool,
    /// Why it was not taken.
    #[serde(default)]
    pub text: String,
}

/// What this node knows of another.
struct Peer {
    instance: String,
    last_seen: Instant,
    federation: bool,
}

/// This node's membership of the cluster.
pub struct Cluster {
    node_id: String,
    instance: String,
    /// Whether this node federates over XMPP for the others (`[cluster] federation` and
    /// `[s2s] enabled`).
    federation: bool,
    prefix: String,
    client: async_nats::Client,
    /// Ordered fire-and-forget publications (subject, payload), written by one task.
    out: mpsc::UnboundedSender<(String, Bytes)>,
    peers: Mutex<HashMap<String, Peer>>,
    /// Nodes this node declared dead, with their instance: if the same instance speaks again
    /// (it had lost NATS, or was paused), its sessions' presence is sent again once its
    /// snapshot arrives (the nodes in `revived`).
    declared_dead: Mutex<HashMap<String, String>>,
    revived: Mutex<std::collections::HashSet<String>>,
    hub: OnceLock<Weak<Hub>>,
    /// Told the id of every node declared dead (the SIP gateway takes over its dialogs).
    dead_listeners: Mutex<Vec<mpsc::UnboundedSender<String>>>,
}

impl Cluster {
    /// Connects to NATS. Nothing is published or received before [`Cluster::run`].
    /// `federation`: whether this node carries XMPP federation for the others.
    pub async fn connect(
        cfg: &ClusterConfig,
        domain: &str,
        federation: bool,
    ) -> Result<Arc<Cluster>> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("entente {domain} {}", cfg.node_id))
            .request_timeout(Some(DELIVERY_TIMEOUT))
            .connect(cfg.nats_url.as_str())
            .await
            .with_context(|| {
                format!("connecting to NATS at {} (cluster.nats_url)", cfg.nats_url)
            })?;
        let (out, mut rx) = mpsc::unbounded_channel::<(String, Bytes)>();
        // The publisher outlives the listeners on purpose: sessions closing at shutdown still
        // publish their unavailable presence and unbinding through it.
        let publisher = client.clone();
        tokio::spawn(async move {
            while let Some((subject, payload)) = rx.recv().await {
                if let Err(e) = publisher.publish(subject, payload).await {
                    tracing::warn!(error = %e, "cannot publish to NATS");
                }
            }
        });
        Ok(Arc::new(Cluster {
            node_id: cfg.node_id.clone(),
            instance: uuid::Uuid::new_v4().to_string(),
            federation,
            prefix: format!("entente.{domain}"),
            client,
            out,
            peers: Mutex::new(HashMap::new()),
            declared_dead: Mutex::new(HashMap::new()),
            revived: Mutex::new(std::collections::HashSet::new()),
            hub: OnceLock::new(),
            dead_listeners: Mutex::new(Vec::new()),
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The other nodes currently alive, sorted.
    pub fn alive_peers(&self) -> Vec<String> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = peers
            .iter()
            .filter(|(_, p)| p.last_seen.elapsed() <= DEAD_AFTER)
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// The other alive nodes that federate for the others, sorted.
    pub fn federation_peers(&self) -> Vec<String> {
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = peers
            .iter()
            .filter(|(_, p)| p.federation && p.last_seen.elapsed() <= DEAD_AFTER)
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// Whether this node federates for the others.
    pub fn federates(&self) -> bool {
        self.federation
    }

    /// The NATS client, for the federation relay's requests.
    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The subject of the federation queue group (any federation-enabled node).
    pub(crate) fn s2s_group_subject(&self) -> String {
        format!("{}.s2s.out", self.prefix)
    }

    /// The subject on which one federation-enabled node takes stanzas for foreign domains.
    pub(crate) fn s2s_node_subject(&self, node: &str) -> String {
        format!("{}.s2s.out.{node}", self.prefix)
    }

    /// Whether `node` is this node or another one heard from within [`DEAD_AFTER`].
    pub fn is_alive(&self, node: &str) -> bool {
        node == self.node_id || self.alive_peers().iter().any(|n| n == node)
    }

    /// The NATS connection, for subjects of other parts of the server (the SIP gateway's).
    pub(crate) fn nats(&self) -> &async_nats::Client {
        &self.client
    }

    /// The subject `entente.<domain>.<tail>`.
    pub(crate) fn subject(&self, tail: &str) -> String {
        format!("{}.{tail}", self.prefix)
    }

    /// From now on, `tx` is told the id of every node declared dead.
    pub(crate) fn on_node_dead(&self, tx: mpsc::UnboundedSender<String>) {
        self.dead_listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
    }

    /// Plugs the cluster into the hub's session registry and starts the tasks: the registry
    /// reader, the reader of stanzas for this node, and the heartbeat. `s2s`: this node's XMPP
    /// federation, when it federates for the others: it then takes their stanzas for foreign
    /// domains (the queue group and its own subject).
    pub async fn run(
        self: &Arc<Self>,
        hub: &Arc<Hub>,
        s2s: Option<Arc<dyn RemoteRouter>>,
        shutdown: watch::Receiver<bool>,
        tasks: &mut JoinSet<()>,
    ) -> Result<()> {
        let _ = self.hub.set(Arc::downgrade(hub));
        hub.sessions.set_link(self.clone());
        let mut registry = self
            .client
            .subscribe(self.registry_subject())
            .await
            .context("subscribing to the cluster registry on NATS")?;
        let mut inbox = self
            .client
            .subscribe(self.node_subject(&self.node_id))
            .await
            .context("subscribing to this node's subject on NATS")?;
        let relay_subs = match &s2s {
            Some(_) => Some((
                self.client
                    .queue_subscribe(self.s2s_group_subject(), S2S_QUEUE.to_string())
                    .await
                    .context("joining the federation queue group on NATS")?,
                self.client
                    .subscribe(self.s2s_node_subject(&self.node_id))
                    .await
                    .context("subscribing to this node's federation subject on NATS")?,
            )),
            None => None,
        };
        // Make sure the subscriptions are in place before anyone hears of us.
        self.client
            .flush()
            .await
            .context("talking to NATS (flush)")?;
        let me = self.clone();
        let mut sd = shutdown.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    m = registry.next() => {
                        let Some(m) = m else { break };
                        match serde_json::from_slice::<Envelope>(&m.payload) {
                            Ok(env) => me.on_registry(env).await,
                            Err(e) => tracing::warn!(error = %e, "unreadable cluster registry message"),
                        }
                    }
                    _ = sd.changed() => if *sd.borrow() { break },
                }
            }
        });
        let me = self.clone();
        let mut sd = shutdown.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    m = inbox.next() => {
                        let Some(m) = m else { break };
                        me.on_forward(m).await;
                    }
                    _ = sd.changed() => if *sd.borrow() { break },
                }
            }
        });
        if let (Some(s2s), Some((mut group, mut own))) = (s2s, relay_subs) {
            let me = self.clone();
            let mut sd = shutdown.clone();
            // One task for both subjects: a sender waits for each answer before it sends the
            // next stanza, so what one sender relays is handed to s2s in its order.
            tasks.spawn(async move {
                loop {
                    let m = tokio::select! {
                        m = group.next() => m,
                        m = own.next() => m,
                        r = sd.changed() => if r.is_err() || *sd.borrow() { break } else { continue },
                    };
                    let Some(m) = m else { break };
                    me.on_relayed(s2s.as_ref(), m).await;
                }
            });
        }
        let me = self.clone();
        let mut sd = shutdown;
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        me.publish_registry(Body::Heartbeat);
                        me.check_peers();
                    }
                    _ = sd.changed() => if *sd.borrow() { break },
                }
            }
        });
        tracing::info!(node = %self.node_id, "joined the cluster");
        Ok(())
    }

    /// Waits (a little) until what was published so far has reached the NATS server.
    pub async fn flush(&self) {
        // Give the publisher task a moment to drain its queue, then flush the connection.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.flush()).await;
    }

    fn registry_subject(&self) -> String {
        format!("{}.registry", self.prefix)
    }

    fn node_subject(&self, node: &str) -> String {
        format!("{}.node.{node}", self.prefix)
    }

    fn hub(&self) -> Option<Arc<Hub>> {
        self.hub.get().and_then(Weak::upgrade)
    }

    fn publish_registry(&self, body: Body) {
        let env = Envelope {
            node: self.node_id.clone(),
            instance: self.instance.clone(),
            federation: self.federation,
            body,
        };
        match serde_json::to_vec(&env) {
            Ok(v) => {
                let _ = self.out.send((self.registry_subject(), Bytes::from(v)));
            }
            Err(e) => tracing::error!(error = %e, "cannot encode a cluster registry message"),
        }
    }

    fn publish_snapshot(&self, want: Option<String>) {
        let Some(hub) = self.hub() else { return };
        let sessions = hub
            .sessions
            .local_snapshot()
            .into_iter()
            .map(|s| WireSession {
                jid: s.jid.to_string(),
                priority: s.priority,
                presence: s.presence.map(|p| p.to_stream_string(NS_CLIENT)),
            })
            .collect();
        self.publish_registry(Body::Snapshot { sessions, want });
    }

    async fn on_registry(&self, env: Envelope) {
        if env.node == self.node_id {
            return;
        }
        let Some(hub) = self.hub() else { return };
        // Any message proves the node alive; a node we did not know (or a new instance of one)
        // gets our sessions and is asked for its own.
        let (new, restarted) = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            match peers.get_mut(&env.node) {
                Some(p) if p.instance == env.instance => {
                    p.last_seen = Instant::now();
                    p.federation = env.federation;
                    (false, false)
                }
                Some(p) => {
                    p.instance = env.instance.clone();
                    p.last_seen = Instant::now();
                    p.federation = env.federation;
                    (true, true)
                }
                None => {
                    peers.insert(
                        env.node.clone(),
                        Peer {
                            instance: env.instance.clone(),
                            last_seen: Instant::now(),
                            federation: env.federation,
                        },
                    );
                    (true, false)
                }
            }
        };
        if restarted {
            tracing::info!(node = %env.node, "a cluster node restarted");
            self.node_gone(&hub, &env.node);
        }
        if new {
            let was_dead = self
                .declared_dead
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&env.node);
            if was_dead.as_deref() == Some(env.instance.as_str()) {
                tracing::info!(node = %env.node, "a cluster node declared dead is back");
                self.revived
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(env.node.clone());
            }
            tracing::info!(node = %env.node, "a cluster node joined");
            self.publish_snapshot(Some(env.node.clone()));
        }
        let node = env.node.as_str();
        match env.body {
            Body::Heartbeat => {}
            Body::Bound { jid } => {
                if let Ok(jid) = Jid::parse(&jid) {
                    self.upsert(&hub, node, jid, 0, None);
                }
            }
            Body::Unbound { jid } => {
                if let Ok(jid) = Jid::parse(&jid) {
                    hub.sessions.remote_remove(node, &jid);
                }
            }
            Body::Presence {
                jid,
                priority,
                presence,
            } => {
                if let Ok(jid) = Jid::parse(&jid) {
                    self.upsert(&hub, node, jid, priority, presence.as_deref());
                }
            }
            Body::Snapshot { sessions, want } => {
                let mut listed = Vec::with_capacity(sessions.len());
                for s in sessions {
                    if let Ok(jid) = Jid::parse(&s.jid) {
                        listed.push(jid.clone());
                        self.upsert(&hub, node, jid, s.priority, s.presence.as_deref());
                    }
                }
                for st in hub.sessions.remote_of_node(node) {
                    if !listed.contains(&st.handle.jid) {
                        hub.sessions.remote_remove(node, &st.handle.jid);
                    }
                }
                if want.as_deref() == Some(self.node_id.as_str()) {
                    self.publish_snapshot(None);
                }
                let revived = self
                    .revived
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(node);
                if revived {
                    let sessions = hub.sessions.remote_of_node(node);
                    let federated = self.is_lowest_alive();
                    let hub = hub.clone();
                    // In a task of its own, like the broadcast in `node_gone`.
                    tokio::spawn(async move {
                        if let Err(e) = hub.sessions_back(&sessions, federated).await {
                            tracing::error!(error = %e, "store error while sending presence again");
                        }
                    });
                }
            }
        }
    }

    fn upsert(&self, hub: &Hub, node: &str, jid: Jid, priority: i8, presence: Option<&str>) {
        let presence = presence.and_then(|p| parse_stanza(p).ok());
        let rs = RemoteSession {
            jid,
            priority,
            presence,
        };
        if let Some(old) = hub.sessions.remote_upsert(node, rs) {
            // The same resource bound on another node, later than ours: the newer one wins.
            old.handle.kick(
                StreamErrorCondition::Conflict,
                "replaced by a new connection with the same resource",
            );
        }
    }

    /// Declares dead the nodes not heard from for [`DEAD_AFTER`].
    fn check_peers(&self) {
        let dead: Vec<String> = {
            let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            let dead: Vec<String> = peers
                .iter()
                .filter(|(_, p)| p.last_seen.elapsed() > DEAD_AFTER)
                .map(|(n, _)| n.clone())
                .collect();
            let mut declared = self.declared_dead.lock().unwrap_or_else(|e| e.into_inner());
            for n in &dead {
                if let Some(p) = peers.remove(n) {
                    declared.insert(n.clone(), p.instance);
                }
            }
            dead
        };
        if !dead.is_empty() {
            let mut listeners = self
                .dead_listeners
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            listeners.retain(|tx| dead.iter().all(|n| tx.send(n.clone()).is_ok()));
        }
        let Some(hub) = self.hub() else { return };
        for node in dead {
            tracing::warn!(node = %node, "a cluster node is dead (no heartbeat)");
            self.node_gone(&hub, &node);
        }
    }

    /// Drops a dead (or restarted) node's sessions. The alive node with the lowest id tells
    /// their watchers they are unavailable; every node drops them.
    ///
    /// The broadcast runs in a task of its own: it reads rosters from the database, and the
    /// registry reader and the heartbeat must not wait for it (a node busy for 3 s would be
    /// declared dead itself).
    fn node_gone(&self, hub: &Arc<Hub>, node: &str) {
        let gone = hub.sessions.remote_drop_node(node);
        // (A node that restarted is alive again, but does not know its old sessions.)
        if !self.is_lowest_alive_except(Some(node)) {
            return;
        }
        let hub = hub.clone();
        tokio::spawn(async move {
            for st in gone.iter().filter(|s| s.presence.is_some()) {
                if let Err(e) = hub.broadcast_unavailable(st).await {
                    tracing::error!(error = %e, "store error while broadcasting unavailable");
                }
            }
        });
    }

    /// Whether this node has the lowest id among the alive nodes (it speaks for dead ones).
    pub fn is_lowest_alive(&self) -> bool {
        self.is_lowest_alive_except(None)
    }

    /// Like [`Self::is_lowest_alive`], not counting `except`.
    fn is_lowest_alive_except(&self, except: Option<&str>) -> bool {
        self.alive_peers()
            .iter()
            .filter(|n| Some(n.as_str()) != except)
            .all(|n| n.as_str() > self.node_id.as_str())
    }

    /// A stanza another node forwarded to a session of this one.
    async fn on_forward(&self, m: async_nats::Message) {
        let ok = match serde_json::from_slice::<Forward>(&m.payload) {
            Ok(f) => match (Jid::parse(&f.to), parse_stanza(&f.stanza)) {
                (Ok(to), Ok(el)) => match self.hub() {
                    Some(hub) => hub.forwarded(&to, el, m.reply.is_some()).await,
                    None => false,
                },
                _ => {
                    tracing::warn!("unreadable stanza forwarded by a cluster node");
                    false
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "unreadable stanza forwarded by a cluster node");
                false
            }
        };
        if let Some(reply) = m.reply {
            let answer = Bytes::from_static(if ok { b"1" } else { b"0" });
            if let Err(e) = self.client.publish(reply, answer).await {
                tracing::warn!(error = %e, "cannot answer a cluster delivery");
            }
        }
    }

    /// A stanza for a foreign XMPP domain another node relayed to this one: handed to this
    /// node's s2s, which then delivers or bounces it; the answer says whether it took it.
    async fn on_relayed(&self, s2s: &dyn RemoteRouter, m: async_nats::Message) {
        let answer = match std::str::from_utf8(&m.payload)
            .ok()
            .and_then(|t| parse_stanza(t).ok())
        {
            Some(el) => {
                tracing::debug!(
                    from = el.get_attr("from").unwrap_or_default(),
                    to = el.get_attr("to").unwrap_or_default(),
                    "taking a stanza relayed for federation"
                );
                match s2s.send(el) {
                    Ok(()) => RelayAnswer {
                        ok: true,
                        timeout: false,
                        text: String::new(),
                    },
                    Err(RemoteError::Timeout(text)) => RelayAnswer {
                        ok: false,
                        timeout: true,
                        text,
                    },
                    Err(RemoteError::NotFound(text)) => RelayAnswer {
                        ok: false,
                        timeout: false,
                        text,
                    },
                }
            }
            None => {
                tracing::warn!("unreadable stanza relayed by a cluster node for federation");
                RelayAnswer {
                    ok: false,
                    timeout: false,
                    text: "the stanza relayed for federation could not be read".into(),
                }
            }
        };
        let Some(reply) = m.reply else { return };
        match serde_json::to_vec(&answer) {
            Ok(v) => {
                if let Err(e) = self.client.publish(reply, Bytes::from(v)).await {
                    tracing::warn!(error = %e, "cannot answer a relayed federation stanza");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode a federation relay answer"),
        }
    }

    fn encode_forward(to: &Jid, el: &Element) -> Option<Bytes> {
        let f = Forward {
            to: to.to_string(),
            stanza: el.to_stream_string(NS_CLIENT),
        };
        serde_json::to_vec(&f).ok().map(Bytes::from)
    }
}

impl NodeLink for Cluster {
    fn forward(&self, node: &str, to: &Jid, el: Element) {
        if let Some(payload) = Self::encode_forward(to, &el) {
            let _ = self.out.send((self.node_subject(node), payload));
        }
    }

    fn deliver(
        &self,
        node: &str,
        to: &Jid,
        el: Element,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'static>> {
        let client = self.client.clone();
        let subject = self.node_subject(node);
        let payload = Self::encode_forward(to, &el);
        Box::pin(async move {
            let Some(payload) = payload else { return false };
            match client.request(subject, payload).await {
                Ok(reply) => reply.payload.as_ref() == b"1",
                Err(e) => {
                    tracing::debug!(error = %e, "a cluster delivery failed");
                    false
                }
            }
        })
    }

    fn publish(&self, change: LocalChange) {
        let body = match change {
            LocalChange::Bound(jid) => Body::Bound {
                jid: jid.to_string(),
            },
            LocalChange::Unbound(jid) => Body::Unbound {
                jid: jid.to_string(),
            },
            LocalChange::Presence(jid, priority, presence) => Body::Presence {
                jid: jid.to_string(),
                priority,
                presence: presence.map(|p| p.to_stream_string(NS_CLIENT)),
            },
        };
        self.publish_registry(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_messages_round_trip() {
        let env = Envelope {
            node: "n1".into(),
            instance: "i".into(),
            federation: true,
            body: Body::Presence {
                jid: "a@x/r".into(),
                priority: -3,
                presence: Some("<presence/>".into()),
            },
        };
        let text = serde_json::to_string(&env).unwrap();
        assert!(text.contains("\"kind\":\"presence\""), "{text}");
        let back: Envelope = serde_json::from_str(&text).unwrap();
        assert!(matches!(back.body, Body::Presence { priority: -3, .. }));
        let hb: Envelope =
            serde_json::from_str(r#"{"node":"n2","instance":"j","kind":"heartbeat"}"#).unwrap();
        assert!(matches!(hb.body, Body::Heartbeat));
        // A node that does not say whether it federates (an earlier version) federates.
        assert!(hb.federation);
        let hb: Envelope = serde_json::from_str(
            r#"{"node":"n2","instance":"j","federation":false,"kind":"heartbeat"}"#,
        )
        .unwrap();
        assert!(!hb.federation && matches!(hb.body, Body::Heartbeat));
    }
}
