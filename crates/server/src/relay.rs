//! XMPP federation on a subset of the nodes of a cluster: the way out to foreign XMPP domains
//! of a node with `[cluster] federation = false` (`docs/cluster.md`).
//!
//! Such a node opens no s2s connection. [`FederationRelay`] takes its place as the hub's XMPP
//! [`RemoteRouter`]: every stanza for a foreign domain is sent, as a NATS request, to a
//! federation-enabled node, whose s2s takes it (and then delivers or bounces it, as for its own
//! users) or refuses it at once (policy, a full queue): the answer says which, and a refusal is
//! bounced to the sender here.
//!
//! Which node: the alive federation-enabled nodes (they say so in their heartbeats) are ranked
//! by a hash of the sender's bare JID and the foreign domain (rendezvous hashing), and the
//! first one is asked on its own subject, `entente.<domain>.s2s.out.<node>`. So the users of a
//! domain spread evenly over the federation nodes, while the stanzas of one user to one foreign
//! domain all take the same node and the same s2s link, in order (two nodes' links to the
//! same domain are two TCP streams: stanzas split between them could overtake each other).
//! When that node does not answer (gone: NATS says "no responders" at once; or silent for
//! [`crate::cluster::DELIVERY_TIMEOUT`]), the queue group `entente.<domain>.s2s.out` (queue
//! `s2s`) is asked, which NATS hands to any federation-enabled node that is subscribed. When
//! no node takes it, the relay tries again for [`RELAY_PATIENCE`] (a node may come up), then
//! bounces the stanza with `remote-server-timeout`: nothing is dropped in silence.
//!
//! One task per foreign domain sends that domain's stanzas one after the other, each after the
//! previous one was answered, so the order of one sender's stanzas is kept. The queue in front
//! of it is bounded by `s2s.queue_max`, as an s2s link's is.
//!
//! A request that timed out may still have been taken by the silent node (a node paused, not
//! dead): the stanza is then sent again through another node and may reach the foreign domain
//! twice. Delivery across a node failure is at-least-once, as between the nodes themselves.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use entente_model::jid::Jid;
use entente_xmpp_proto::element::NS_CLIENT;
use entente_xmpp_proto::Element;
use tokio::sync::mpsc;

use crate::cluster::{Cluster, RelayAnswer};
use crate::config::Config;
use crate::federation::Federation;
use crate::hub::Hub;
use crate::router::{RemoteError, RemoteRouter};

/// How long a stanza waits for a federation-enabled node to take it before it is bounced.
pub const RELAY_PATIENCE: Duration = Duration::from_secs(10);

/// A domain's relay task ends after this long without a stanza.
const IDLE: Duration = Duration::from_secs(30);

/// The way out to foreign XMPP domains of a node that does not federate itself.
pub struct FederationRelay {
    cfg: Arc<Config>,
    federation: Arc<Federation>,
    cluster: Arc<Cluster>,
    hub: OnceLock<Weak<Hub>>,
    me: Weak<FederationRelay>,
    /// The queue of each foreign domain's relay task, with a number that tells a task whether
    /// the entry is still its own.
    queues: Mutex<HashMap<String, (u64, mpsc::Sender<Element>)>>,
    next_queue: AtomicU64,
}

/// Why a stanza was not taken: (condition, text).
type Refusal = (&'static str, String);

impl FederationRelay {
    pub fn new(
        cfg: Arc<Config>,
        federation: Arc<Federation>,
        cluster: Arc<Cluster>,
    ) -> Arc<FederationRelay> {
        Arc::new_cyclic(|me| FederationRelay {
            cfg,
            federation,
            cluster,
            hub: OnceLock::new(),
            me: me.clone(),
            queues: Mutex::new(HashMap::new()),
            next_queue: AtomicU64::new(0),
        })
    }

    /// The hub that refused stanzas are bounced through.
    pub fn set_hub(&self, hub: &Arc<Hub>) {
        let _ = self.hub.set(Arc::downgrade(hub));
    }

    fn hub(&self) -> Option<Arc<Hub>> {
        self.hub.get().and_then(Weak::upgrade)
    }

    /// Hands a stanza to the relay task of its domain, starting one if there is none.
    fn enqueue(&self, remote: String, stanza: Element) -> Result<(), RemoteError> {
        let Some(me) = self.me.upgrade() else {
            return Err(RemoteError::NotFound("federation is shutting down".into()));
        };
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let stanza = match queues.get(&remote) {
            Some((_, tx)) => match tx.try_send(stanza) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    return Err(RemoteError::Timeout(format!(
                        "too many stanzas are waiting for {remote}: no federation node of this \
                         cluster takes them fast enough"
                    )))
                }
                // The task ended without leaving the map (it cannot, but a new one does no harm).
                Err(mpsc::error::TrySendError::Closed(s)) => s,
            },
            None => stanza,
        };
        let (tx, rx) = mpsc::channel(self.cfg.s2s.queue_max.max(1));
        let _ = tx.try_send(stanza);
        let id = self.next_queue.fetch_add(1, Ordering::Relaxed);
        queues.insert(remote.clone(), (id, tx));
        tokio::spawn(me.run_queue(remote, id, rx));
        Ok(())
    }

    /// Relays one domain's stanzas in order until the queue has been idle for [`IDLE`].
    async fn run_queue(self: Arc<Self>, remote: String, id: u64, mut rx: mpsc::Receiver<Element>) {
        loop {
            let el = match tokio::time::timeout(IDLE, rx.recv()).await {
                Ok(Some(el)) => el,
                Ok(None) => return,
                Err(_) => {
                    // Leave the map only with an empty queue: `enqueue` sends under the same
                    // lock, so nothing can arrive after this check.
                    let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
                    if rx.is_empty() {
                        if queues.get(&remote).is_some_and(|(i, _)| *i == id) {
                            queues.remove(&remote);
                        }
                        return;
                    }
                    continue;
                }
            };
            if let Err((cond, text)) = self.relay(&el, &remote).await {
                tracing::debug!(%remote, %cond, %text, "a stanza for a foreign domain was not taken");
                if let Some(hub) = self.hub() {
                    if let Err(e) = hub.bounce_remote(&el, cond, &text).await {
                        tracing::error!(error = %e, "store error while bouncing");
                    }
                }
            }
        }
    }

    /// Hands one stanza to a federation-enabled node: the chosen one, else any (the queue
    /// group), again and again until one answers or [`RELAY_PATIENCE`] has passed.
    async fn relay(&self, el: &Element, remote: &str) -> Result<(), Refusal> {
        let payload = Bytes::from(el.to_stream_string(NS_CLIENT));
        let sender = el
            .get_attr("from")
            .and_then(|f| Jid::parse(f).ok())
            .map(|j| j.to_bare().to_string())
            .unwrap_or_default();
        let deadline = Instant::now() + RELAY_PATIENCE;
        let mut wait = Duration::from_millis(100);
        let mut why = String::from("no federation node of this cluster is running");
        loop {
            let mut subjects = Vec::with_capacity(2);
            if let Some(node) = choose(&self.cluster.federation_peers(), &sender, remote) {
                subjects.push(self.cluster.s2s_node_subject(&node));
            }
            subjects.push(self.cluster.s2s_group_subject());
            for subject in subjects {
                match self
                    .cluster
                    .client()
                    .request(subject.clone(), payload.clone())
                    .await
                {
                    Ok(reply) => {
                        return match serde_json::from_slice::<RelayAnswer>(&reply.payload) {
                            Ok(a) if a.ok => Ok(()),
                            Ok(a) if a.timeout => Err(("remote-server-timeout", a.text)),
                            Ok(a) => Err(("remote-server-not-found", a.text)),
                            Err(e) => {
                                tracing::warn!(error = %e, %subject, "unreadable answer from a federation node");
                                Err((
                                    "remote-server-not-found",
                                    "the federation node of this cluster gave an unreadable answer"
                                        .into(),
                                ))
                            }
                        };
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, %subject, "no federation node took a stanza");
                        why = format!("no federation node of this cluster took it ({e})");
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                // (A refusal by a federation node was counted by that node.)
                if let Some(hub) = self.hub() {
                    hub.metrics.s2s_bounces.inc("timeout");
                }
                return Err((
                    "remote-server-timeout",
                    format!(
                        "{remote} cannot be reached now: {why} within {} s",
                        RELAY_PATIENCE.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(wait.min(deadline - now)).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }
}

impl RemoteRouter for FederationRelay {
    /// The checks s2s would make at once (addresses, `[s2s] enabled`, the policy) are made here
    /// too, so their errors come back without a trip through NATS; the federation node checks
    /// again with the settings it has.
    fn send(&self, stanza: Element) -> Result<(), RemoteError> {
        let (Some(from), Some(to)) = (
            stanza.get_attr("from").and_then(|f| Jid::parse(f).ok()),
            stanza.get_attr("to").and_then(|t| Jid::parse(t).ok()),
        ) else {
            return Err(RemoteError::NotFound(
                "the stanza has no valid addresses".into(),
            ));
        };
        if from.domain() != self.cfg.domain {
            return Err(RemoteError::NotFound(format!(
                "{} is not a domain of this server",
                from.domain()
            )));
        }
        let remote = to.domain().to_string();
        if !self.cfg.s2s.enabled {
            return Err(RemoteError::NotFound(format!(
                "federation is not enabled on this server, so {remote} cannot be reached"
            )));
        }
        if !self.federation.view().allowed(&remote) {
            return Err(RemoteError::NotFound(format!(
                "this server's federation policy does not permit {remote}"
            )));
        }
        self.enqueue(remote, stanza)
    }
}

/// The federation node for the stanzas of `sender` to `remote`: the one of `nodes` with the
/// highest hash of (sender, remote, node). Every (sender, domain) pair keeps its node while
/// that node is alive; when a node goes, only its pairs move, spread over the others.
fn choose(nodes: &[String], sender: &str, remote: &str) -> Option<String> {
    nodes
        .iter()
        .max_by_key(|n| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (sender, remote, n.as_str()).hash(&mut h);
            h.finish()
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_node_no_choice() {
        assert_eq!(choose(&[], "a@x", "y"), None);
    }

    #[test]
    fn senders_spread_evenly_and_keep_their_node() {
        let all = nodes(&["n1", "n2", "n3"]);
        let mut count: HashMap<String, usize> = HashMap::new();
        for i in 0..3000 {
            let s = format!("user{i}@x");
            let n = choose(&all, &s, "remote.example").unwrap();
            assert_eq!(choose(&all, &s, "remote.example").as_ref(), Some(&n));
            *count.entry(n).or_default() += 1;
        }
        for n in &all {
            let c = count.get(n).copied().unwrap_or(0);
            assert!((800..1200).contains(&c), "{n}: {c} of 3000");
        }
    }

    #[test]
    fn when_a_node_goes_only_its_senders_move() {
        let all = nodes(&["n1", "n2", "n3"]);
        let left = nodes(&["n1", "n3"]);
        for i in 0..1000 {
            let s = format!("user{i}@x");
            let before = choose(&all, &s, "r").unwrap();
            let after = choose(&left, &s, "r").unwrap();
            if before != "n2" {
                assert_eq!(before, after, "{s} moved from a node that is still there");
            }
        }
    }
}
