//! SIP federation in a cluster: which node holds a SIP dialog, and how the others reach it.
//!
//! Every row of `sip_dialogs` names its owner, the node whose gateway task holds the dialog in
//! memory (it created or accepted it, or adopted it since). A node's gateway reaches the
//! others through NATS, on subjects under `entente.<domain>.sip`:
//!
//! - `.node.<node_id>`: a stanza from a local user for a SIP contact whose dialog that node
//!   holds. Sent as a request; the node answers once its gateway task has it. No answer (the
//!   node is gone: "no responders") and the sender's gateway adopts the dialog and goes on.
//! - `.any` (queue group `sip`): from a node without SIP (`[sip] enabled = false`), a stanza
//!   whose dialog no alive node holds (or whose owner did not take it): one SIP node's gateway
//!   takes it and handles it, adopting the dialog if one is stored. (Such a node sends a stanza
//!   whose dialog an alive node holds to `.node.<owner>` itself.)
//! - `.release`: "node N now holds row R": the node that held it forgets it (without a word
//!   to the peer: the dialog lives on, on N).
//!
//! Adoption is a compare-and-swap on the row's owner ([`entente_store::Store::sip_dialog_claim`]),
//! so of several nodes adopting one dialog at once exactly one holds it.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use entente_model::jid::Jid;
use entente_xmpp_proto::element::NS_CLIENT;
use entente_xmpp_proto::stanza::{error_reply, ErrorType};
use entente_xmpp_proto::{parse_stanza, Element};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::Event;
use crate::cluster::Cluster;
use crate::config::ImMode;
use crate::hub::Hub;
use crate::router::{RemoteError, RemoteRouter};

/// The NATS queue group of the SIP gateways.
const QUEUE_GROUP: &str = "sip";

/// A node answers a forwarded stanza within this time, handled or not yet (the sender gives
/// up after `cluster::DELIVERY_TIMEOUT`, 3 s, and would adopt the dialog).
const ANSWER_WITHIN: Duration = Duration::from_millis(1500);

/// What goes between the gateways of a cluster.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Wire {
    /// A stanza from a local user to a SIP contact.
    Stanza { stanza: String },
    /// `node` now holds the dialog row `id`.
    Release { node: String, id: String },
}

fn encode(w: &Wire) -> Option<Bytes> {
    serde_json::to_vec(w).ok().map(Bytes::from)
}

fn stanza_payload(el: &Element) -> Option<Bytes> {
    encode(&Wire::Stanza {
        stanza: el.to_stream_string(NS_CLIENT),
    })
}

/// A request to `subject`; true when the other side confirmed it took the stanza.
async fn request(cluster: &Cluster, subject: String, payload: Bytes) -> bool {
    match cluster.nats().request(subject, payload).await {
        Ok(reply) => reply.payload.as_ref() == b"1",
        Err(e) => {
            tracing::debug!(error = %e, "a SIP stanza could not be handed to another node");
            false
        }
    }
}

/// A SIP node's link to the other gateways of the cluster.
pub(crate) struct Relay {
    cluster: Arc<Cluster>,
    /// Stanzas for the nodes holding their dialogs, handed over in order by one task.
    outgoing: mpsc::UnboundedSender<(String, Element)>,
    outgoing_rx: Mutex<Option<mpsc::UnboundedReceiver<(String, Element)>>>,
}

impl Relay {
    pub(crate) fn new(cluster: Arc<Cluster>) -> Arc<Relay> {
        let (outgoing, rx) = mpsc::unbounded_channel();
        Arc::new(Relay {
            cluster,
            outgoing,
            outgoing_rx: Mutex::new(Some(rx)),
        })
    }

    /// Hands a stanza to the gateway of `node`, after those queued before it (a user's
    /// messages keep their order); if that node does not take it, the gateway task gets it
    /// back as [`Event::Unforwarded`].
    pub(crate) fn forward_ordered(&self, node: String, el: Element) {
        let _ = self.outgoing.send((node, el));
    }

    /// This node's id: the owner written in the rows it holds.
    pub(crate) fn node_id(&self) -> &str {
        self.cluster.node_id()
    }

    /// Whether `node` is alive (this node is).
    pub(crate) fn is_alive(&self, node: &str) -> bool {
        self.cluster.is_alive(node)
    }

    /// Whether this node has the lowest id of the alive nodes.
    pub(crate) fn is_lowest_alive(&self) -> bool {
        self.cluster.is_lowest_alive()
    }

    /// Hands a stanza to the gateway of `node`; false if that node did not take it.
    pub(crate) async fn forward(&self, node: &str, el: &Element) -> bool {
        let Some(payload) = stanza_payload(el) else {
            return false;
        };
        request(
            &self.cluster,
            self.cluster.subject(&format!("sip.node.{node}")),
            payload,
        )
        .await
    }

    /// Tells the other nodes that this one now holds the row `id`.
    pub(crate) fn release(&self, id: &str) {
        let Some(payload) = encode(&Wire::Release {
            node: self.node_id().to_owned(),
            id: id.to_owned(),
        }) else {
            return;
        };
        let client = self.cluster.nats().clone();
        let subject = self.cluster.subject("sip.release");
        tokio::spawn(async move {
            if let Err(e) = client.publish(subject, payload).await {
                tracing::warn!(error = %e, "cannot tell the cluster that a SIP dialog moved");
            }
        });
    }

    /// Subscribes to this node's subjects and to node deaths; what arrives goes to the
    /// gateway task through `tx`.
    pub(crate) async fn start(
        self: &Arc<Self>,
        tx: mpsc::UnboundedSender<Event>,
        shutdown: watch::Receiver<bool>,
        tasks: &mut JoinSet<()>,
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        let nats = self.cluster.nats();
        let mine = nats
            .subscribe(
                self.cluster
                    .subject(&format!("sip.node.{}", self.node_id())),
            )
            .await
            .context("subscribing to this node's SIP subject on NATS")?;
        let any = nats
            .queue_subscribe(self.cluster.subject("sip.any"), QUEUE_GROUP.to_owned())
            .await
            .context("joining the SIP gateways' queue group on NATS")?;
        let release = nats
            .subscribe(self.cluster.subject("sip.release"))
            .await
            .context("subscribing to the SIP release subject on NATS")?;
        nats.flush().await.context("talking to NATS (flush)")?;
        let mut incoming = futures_util::stream::select_all([mine, any, release]);
        let outgoing = self
            .outgoing_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut outgoing) = outgoing {
            let me = self.clone();
            let tx = tx.clone();
            let mut sd = shutdown.clone();
            tasks.spawn(async move {
                loop {
                    let (node, el) = tokio::select! {
                        m = outgoing.recv() => match m {
                            Some(m) => m,
                            None => break,
                        },
                        _ = sd.changed() => if *sd.borrow() { break } else { continue },
                    };
                    if !me.forward(&node, &el).await {
                        tracing::info!(%node, "the node holding a SIP dialog did not take a stanza: adopting the dialog");
                        let _ = tx.send(Event::Unforwarded(el));
                    }
                }
            });
        }
        let (dead_tx, mut dead_rx) = mpsc::unbounded_channel();
        self.cluster.on_node_dead(dead_tx);
        let me = self.clone();
        let mut sd = shutdown;
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    m = incoming.next() => {
                        let Some(m) = m else { break };
                        me.on_message(m, &tx).await;
                    }
                    node = dead_rx.recv() => {
                        let Some(node) = node else { break };
                        let _ = tx.send(Event::NodeDead(node));
                    }
                    _ = sd.changed() => if *sd.borrow() { break },
                }
            }
        });
        Ok(())
    }

    async fn on_message(&self, m: async_nats::Message, tx: &mpsc::UnboundedSender<Event>) {
        let ok = match serde_json::from_slice::<Wire>(&m.payload) {
            Ok(Wire::Stanza { stanza }) => match parse_stanza(&stanza) {
                Ok(el) => {
                    // Answered once the gateway task is done with it (a message: once the
                    // peer answered), so that a node dying meanwhile loses nothing it
                    // confirmed; at most ANSWER_WITHIN later (the sender waits 3 s).
                    let (done, wait) = oneshot::channel();
                    if tx.send(Event::Forwarded(el, Some(done))).is_err() {
                        false
                    } else {
                        if let Some(reply) = m.reply {
                            let client = self.cluster.nats().clone();
                            tokio::spawn(async move {
                                let _ = tokio::time::timeout(ANSWER_WITHIN, wait).await;
                                if let Err(e) =
                                    client.publish(reply, Bytes::from_static(b"1")).await
                                {
                                    tracing::warn!(error = %e, "cannot answer a cluster node");
                                }
                            });
                        }
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable SIP-bound stanza from a cluster node");
                    false
                }
            },
            Ok(Wire::Release { node, id }) => {
                if node != self.node_id() {
                    let _ = tx.send(Event::Released(id));
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "unreadable SIP message from a cluster node");
                false
            }
        };
        if let Some(reply) = m.reply {
            let answer = Bytes::from_static(if ok { b"1" } else { b"0" });
            if let Err(e) = self.cluster.nats().publish(reply, answer).await {
                tracing::warn!(error = %e, "cannot answer a cluster node");
            }
        }
    }
}

/// The way to SIP domains on a cluster node without SIP of its own: stanzas go, in order, to
/// the SIP nodes' queue group. When no SIP node takes one, it bounces
/// (`remote-server-not-found`).
pub struct RemoteGateways {
    domain: String,
    queue: mpsc::UnboundedSender<Element>,
    hub: Arc<OnceLock<Weak<Hub>>>,
}

impl RemoteGateways {
    /// Starts the task that hands the stanzas over (it ends with the runtime).
    pub fn new(cluster: Arc<Cluster>, domain: String) -> Arc<RemoteGateways> {
        let (queue, mut rx) = mpsc::unbounded_channel::<Element>();
        let hub: Arc<OnceLock<Weak<Hub>>> = Arc::default();
        let bouncer = hub.clone();
        tokio::spawn(async move {
            let any = cluster.subject("sip.any");
            while let Some(stanza) = rx.recv().await {
                let Some(payload) = stanza_payload(&stanza) else {
                    continue;
                };
                let Some(hub) = bouncer.get().and_then(Weak::upgrade) else {
                    continue;
                };
                // The node holding the dialog if one does (so that what concerns one dialog
                // keeps its order), else any SIP node; twice, since a SIP node that died a
                // moment ago may still have been picked.
                let direct = match owner_of(&hub, &cluster, &stanza).await {
                    Some(node) => {
                        request(
                            &cluster,
                            cluster.subject(&format!("sip.node.{node}")),
                            payload.clone(),
                        )
                        .await
                    }
                    None => false,
                };
                if direct
                    || request(&cluster, any.clone(), payload.clone()).await
                    || request(&cluster, any.clone(), payload).await
                {
                    continue;
                }
                tracing::warn!("no SIP node of the cluster took a stanza for a SIP domain");
                if let Some(r) = error_reply(
                    &stanza,
                    ErrorType::Cancel,
                    "remote-server-not-found",
                    Some("no node of this cluster reaches SIP domains now"),
                ) {
                    if let Err(e) = hub.route(r).await {
                        tracing::error!(error = %e, "store error while bouncing a SIP-bound stanza");
                    }
                }
            }
        });
        Arc::new(RemoteGateways { domain, queue, hub })
    }

    /// The hub that bounces what no SIP node took.
    pub fn set_hub(&self, hub: &Arc<Hub>) {
        let _ = self.hub.set(Arc::downgrade(hub));
    }
}

/// The alive node holding the dialog `el` concerns, if one does.
async fn owner_of(hub: &Hub, cluster: &Cluster, el: &Element) -> Option<String> {
    let from = el.get_attr("from").and_then(|f| Jid::parse(f).ok())?;
    let to = el.get_attr("to").and_then(|t| Jid::parse(t).ok())?;
    let session = hub
        .federation
        .view()
        .sip_peer(to.domain())
        .is_some_and(|p| matches!(p.im_mode(), ImMode::Session));
    let kind = super::actor::usage_of(el, session)?;
    let id = super::actor::row_id(kind, &(from.to_bare(), to.to_bare()));
    let row = match hub.store.sip_dialog(&id).await {
        Ok(r) => r?,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a stored SIP dialog");
            return None;
        }
    };
    cluster.is_alive(&row.owner).then_some(row.owner)
}

impl RemoteRouter for RemoteGateways {
    fn send(&self, stanza: Element) -> Result<(), RemoteError> {
        let from = stanza.get_attr("from").and_then(|f| Jid::parse(f).ok());
        if from.as_ref().map(Jid::domain) != Some(self.domain.as_str()) {
            // Never relay between two foreign domains.
            return Err(RemoteError::NotFound(
                "only this server's users may reach SIP domains".into(),
            ));
        }
        self.queue
            .send(stanza)
            .map_err(|_| RemoteError::NotFound("SIP federation is shutting down".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_messages_round_trip() {
        let w = Wire::Release {
            node: "n1".into(),
            id: "im:a@x:b@y".into(),
        };
        let text = serde_json::to_string(&w).unwrap();
        assert!(text.contains("\"kind\":\"release\""), "{text}");
        let back: Wire = serde_json::from_str(&text).unwrap();
        assert!(matches!(back, Wire::Release { ref node, .. } if node == "n1"));
        let el = parse_stanza("<message to='b@y' from='a@x/r'><body>hi</body></message>").unwrap();
        let p = stanza_payload(&el).unwrap();
        let Wire::Stanza { stanza } = serde_json::from_slice(&p).unwrap() else {
            panic!("not a stanza");
        };
        assert_eq!(parse_stanza(&stanza).unwrap().get_attr("to"), Some("b@y"));
    }
}
