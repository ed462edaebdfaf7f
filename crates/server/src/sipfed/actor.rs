//! The gateway task: one task owns every SIP dialog the gateway keeps, so no lock is held
//! across I/O. It receives [`Event`]s (stanzas from the hub, requests from the SIP endpoint,
//! outcomes of the client transactions it started) and acts on them; a one-second tick drives
//! refreshes, retries and IM inactivity.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use entente_model::availability::Presence;
use entente_model::gateway_errors;
use entente_model::jid::Jid;
use entente_sip_proto::im::{self, IsComposing, ISCOMPOSING_TYPE};
use entente_sip_proto::{
    Dialog, DialogId, DialogSnapshot, HeaderName, Method, Request, Response, StatusCode, SubState,
    Transport, Uri,
};
use entente_store::SipDialogRow;
use entente_xmpp_proto::stanza::{error_reply, ErrorType};
use entente_xmpp_proto::Element;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::convert;
use super::relay::Relay;
use super::Routed;
use crate::config::{Config, ImMode, SipPeerConfig, SipPeerTransport};
use crate::hub::Hub;
use crate::sip::{
    new_tag, Destination, IncomingRequest, ServerEvent, SipError, SipHandle, SipResponse,
};

/// What the gateway task receives.
pub(crate) enum Event {
    /// A stanza from a local user to a SIP contact.
    Outbound(Element),
    /// A request that passed the precheck.
    Request {
        inc: Box<IncomingRequest>,
        routed: Routed,
    },
    /// ACKs, cancellations and timeouts of server transactions.
    Server(ServerEvent),
    /// The outcome of a client transaction the task started.
    Done {
        op: u64,
        result: Result<SipResponse, SipError>,
    },
    /// A stanza from a local user that another node of the cluster handed to this one: this
    /// node handles it (adopting the dialog it concerns). The other node is answered when the
    /// sender is dropped: for a message, once the peer answered it (or it bounced).
    Forwarded(Element, Option<oneshot::Sender<()>>),
    /// A stanza this node handed to the node holding its dialog, which did not take it (it
    /// died): this node adopts the dialog and handles it.
    Unforwarded(Element),
    /// Another node now holds the dialog row with this id: forget it here.
    Released(String),
    /// A node of the cluster died: its dialogs are to be adopted.
    NodeDead(String),
    /// A node died a while ago: adopt what the lowest node did not.
    AdoptDead(String),
    /// Adopt the dialogs of nodes that are not alive (once, some seconds after the start).
    Sweep,
}

/// Where the dialog a stanza concerns is held, in a cluster.
enum Holder {
    /// Here (held, adopted now, or not held anywhere: this node creates it).
    Here,
    /// By this alive node.
    Node(String),
}

/// How much an adopted dialog's local CSeq jumps: the node that held it may have sent
/// requests after it last stored the dialog, and a peer refuses a CSeq it has already seen
/// (RFC 3261 §12.2.2 only wants it higher).
const CSEQ_LEAP: u32 = 100;

/// (local user, foreign contact), both bare.
pub(super) type Key = (Jid, Jid);

/// A foreign watcher's subscription to a local user's presence.
struct InSub {
    peer: String,
    dialog: Dialog,
    /// Unix seconds.
    expires_at: u64,
    /// What the hub lets this watcher see, by local resource.
    resources: HashMap<String, Presence>,
    dirty: bool,
    inflight: bool,
    /// Send a final `terminated` NOTIFY with this reason, then forget the subscription.
    terminate: Option<&'static str>,
}

/// A local user's subscription to a SIP contact's presence.
struct OutSub {
    peer: String,
    dialog: Option<Dialog>,
    /// The out-of-dialog SUBSCRIBE in flight (a NOTIFY may create the dialog before its 2xx).
    initial: Option<Request>,
    /// Unix seconds the peer granted until.
    expires_at: u64,
    /// When to refresh (or retry).
    next_at: Option<Instant>,
    inflight: bool,
    /// `subscribed` was passed to the hub.
    approved: bool,
    /// The last presence passed to the hub, to answer probes.
    last: Option<Element>,
    /// Seconds to wait before the next retry.
    backoff: u64,
}

impl OutSub {
    /// A subscription not sent yet (`approved`: the roster already says the contact accepted).
    fn new(peer: String, approved: bool) -> OutSub {
        OutSub {
            peer,
            dialog: None,
            initial: None,
            expires_at: 0,
            next_at: None,
            inflight: false,
            approved,
            last: None,
            backoff: FIRST_BACKOFF,
        }
    }
}

/// An IM session (session-mode IM, RFC 7572 §6 / the seed's Lync flow).
struct Im {
    peer: String,
    dialog: Option<Dialog>,
    /// Messages waiting for the INVITE's answer.
    queue: Vec<Element>,
    last_activity: Instant,
    /// The local user had an available resource while the session lived.
    local_seen_online: bool,
    inviting: bool,
}

impl Im {
    /// An established session (the peer's INVITE, or one restored from the store).
    fn established(peer: String, dialog: Dialog) -> Im {
        Im {
            peer,
            dialog: Some(dialog),
            queue: Vec::new(),
            last_activity: Instant::now(),
            local_seen_online: false,
            inviting: false,
        }
    }
}

/// What a finished client transaction was for.
enum Op {
    Subscribe {
        key: Key,
        request: Request,
        expires: u32,
    },
    Notify {
        key: Key,
    },
    Invite {
        key: Key,
        request: Request,
    },
    Message {
        key: Key,
        stanza: Element,
        in_session: bool,
        /// Dropped once the outcome is known: the node that handed the message over is
        /// answered then (see [`Event::Forwarded`]).
        _ack: Option<oneshot::Sender<()>>,
    },
    Fire,
}

/// A persisted dialog usage.
#[derive(Serialize, Deserialize)]
struct Stored {
    peer: String,
    dialog: DialogSnapshot,
    #[serde(default)]
    approved: bool,
}

const IN_SUB: &str = "in-sub";
const OUT_SUB: &str = "out-sub";
const IM: &str = "im";

/// First retry delay of a failed outbound subscription; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: u64 = 5;
const MAX_BACKOFF: u64 = 1800;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) fn row_id(kind: &str, key: &Key) -> String {
    format!("{kind}:{}:{}", key.0, key.1)
}

/// Which stored usage an outbound stanza concerns (in a cluster, that decides which node
/// handles it): presence broadcasts and answers to a watcher its inbound subscription,
/// subscription requests and probes our outbound one, messages to a domain in session mode
/// (`session_im`) the IM session. `None`: no dialog (page-mode messages, errors), any SIP node
/// sends it.
pub(super) fn usage_of(el: &Element, session_im: bool) -> Option<&'static str> {
    match el.name.as_str() {
        "presence" => match el.get_attr("type") {
            None | Some("unavailable" | "subscribed" | "unsubscribed") => Some(IN_SUB),
            Some("subscribe" | "unsubscribe" | "probe") => Some(OUT_SUB),
            _ => None,
        },
        "message" if session_im && el.get_attr("type") != Some("error") => Some(IM),
        _ => None,
    }
}

pub(crate) struct Actor {
    cfg: Arc<Config>,
    federation: Arc<crate::federation::Federation>,
    hub: Weak<Hub>,
    sip: SipHandle,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    shutdown: watch::Receiver<bool>,
    in_subs: HashMap<Key, InSub>,
    out_subs: HashMap<Key, OutSub>,
    ims: HashMap<Key, Im>,
    /// Dialog id → which usage it belongs to.
    dialogs: HashMap<DialogId, (&'static str, Key)>,
    ops: HashMap<u64, Op>,
    next_op: u64,
    /// When outbound subscriptions to a domain were last refreshed because it restarted.
    domain_refreshed: HashMap<String, Instant>,
    /// A request being handled that must get no response (BENOTIFY).
    silent: Option<entente_sip_proto::ServerTxKey>,
    /// Inbound subscriptions marked `dirty` since the last flush (may repeat, may name one
    /// that is gone or has a NOTIFY in flight: the flush checks), so that a flush costs what
    /// changed, not the number of subscriptions.
    to_notify: Vec<Key>,
    stats: Arc<super::GatewayStats>,
    /// The federation view whose SIP peers the dialogs were last checked against (the
    /// settings of a peer removed since are read here, to say goodbye over its routes).
    federation_seen: Arc<crate::federation::FederationView>,
    /// The settings last used for each SIP peer domain (by [`Actor::peer`]): a domain
    /// removed before the task saw a view with it still has its settings here.
    peers_used: std::sync::Mutex<HashMap<String, SipPeerConfig>>,
    /// The other gateways of the cluster (`None` on a single node).
    relay: Option<Arc<Relay>>,
    /// The owner this node writes in the rows it holds: its `node_id`, empty on a single node.
    owner: String,
    /// The answer owed to the node that handed over the stanza being handled.
    current_ack: Option<oneshot::Sender<()>>,
    /// Rows another node took while this one held them (found when writing): forgotten after
    /// the event being handled.
    lost: std::sync::Mutex<Vec<String>>,
}

/// A SIP peer domain as a map key.
fn peer_key(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

impl Actor {
    pub(crate) fn new(
        cfg: Arc<Config>,
        hub: &Arc<Hub>,
        sip: SipHandle,
        tx: mpsc::UnboundedSender<Event>,
        rx: mpsc::UnboundedReceiver<Event>,
        shutdown: watch::Receiver<bool>,
        stats: Arc<super::GatewayStats>,
    ) -> Actor {
        Actor {
            relay: None,
            owner: String::new(),
            current_ack: None,
            lost: std::sync::Mutex::new(Vec::new()),
            cfg,
            federation: hub.federation.clone(),
            hub: Arc::downgrade(hub),
            sip,
            tx,
            rx,
            shutdown,
            in_subs: HashMap::new(),
            out_subs: HashMap::new(),
            ims: HashMap::new(),
            dialogs: HashMap::new(),
            ops: HashMap::new(),
            next_op: 0,
            domain_refreshed: HashMap::new(),
            federation_seen: hub.federation.view(),
            peers_used: std::sync::Mutex::new(HashMap::new()),
            silent: None,
            to_notify: Vec::new(),
            stats,
        }
    }

    /// Makes this gateway one of a cluster's (see [`super::relay`]): it owns the dialogs it
    /// holds as this node.
    pub(crate) fn in_cluster(mut self, relay: Option<Arc<Relay>>) -> Actor {
        self.owner = relay
            .as_ref()
            .map(|r| r.node_id().to_owned())
            .unwrap_or_default();
        self.relay = relay;
        self
    }

    // ---- plumbing ----

    /// The settings of a SIP peer domain now (they may change at run time, so a copy).
    fn peer(&self, domain: &str) -> Option<SipPeerConfig> {
        let p = self.federation.view().sip_peer(domain).cloned();
        if let Some(p) = &p {
            self.peers_used
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(peer_key(domain), p.clone());
        }
        p
    }

    fn aol(&self, domain: &str) -> bool {
        self.peer(domain).is_some_and(|p| p.aol_names())
    }

    fn dest(&self, domain: &str) -> Destination {
        let t = match self.peer(domain).map(|p| p.transport) {
            Some(SipPeerTransport::Tcp) => Transport::Tcp,
            _ => Transport::Tls,
        };
        Destination::DomainOver(domain.to_owned(), t)
    }

    /// Our Contact for a local user: the domain, so that the peer finds us through DNS (or its
    /// static route) like any request to our domain.
    fn contact(&self, local: &Jid, peer: &str) -> String {
        let t = match self.peer(peer).map(|p| p.transport) {
            Some(SipPeerTransport::Tcp) => "tcp",
            _ => "tls",
        };
        let aor =
            convert::uri_of_jid(local, false).unwrap_or_else(|| format!("sip:{}", self.cfg.domain));
        format!("<{aor};transport={t}>")
    }

    async fn to_hub(&self, el: Element) {
        tracing::debug!(kind = %el.name, r#type = el.get_attr("type").unwrap_or(""), from = el.get_attr("from").unwrap_or(""), to = el.get_attr("to").unwrap_or(""), "SIP → XMPP");
        if let Some(hub) = self.hub.upgrade() {
            if let Err(e) = hub.route(el).await {
                tracing::error!(error = %e, "store error while routing a stanza from SIP");
            }
        }
    }

    async fn bounce(&self, el: &Element, cond: &str, text: &str) {
        let etype = match gateway_errors::xmpp_error_type(cond) {
            "wait" => ErrorType::Wait,
            "modify" => ErrorType::Modify,
            "auth" => ErrorType::Auth,
            _ => ErrorType::Cancel,
        };
        if let Some(r) = error_reply(el, etype, cond, Some(text)) {
            self.to_hub(r).await;
        }
    }

    fn send(&mut self, request: Request, dest: Destination, op: Op) {
        self.next_op += 1;
        let id = self.next_op;
        self.ops.insert(id, op);
        let sip = self.sip.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = sip.send_request(request, dest).await;
            let _ = tx.send(Event::Done { op: id, result });
        });
    }

    fn respond(&self, key: entente_sip_proto::ServerTxKey, response: Response) {
        if self.silent == Some(key) {
            return;
        }
        // Queued at once: the answer precedes any NOTIFY this event triggers.
        self.sip.respond_now(key, response);
    }

    /// Whether a response really comes from the peer domain (RFC 5922 §4: over TLS, the
    /// server's certificate must be valid for the domain).
    fn trusted(&self, peer: &str, r: &SipResponse) -> bool {
        match &r.peer.tls_names {
            Some(names) => names
                .iter()
                .any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(peer)),
            None => self
                .peer(peer)
                .is_some_and(|p| p.transport == SipPeerTransport::Tcp),
        }
    }

    async fn persist(
        &self,
        kind: &'static str,
        key: &Key,
        peer: &str,
        dialog: &Dialog,
        approved: bool,
        expires: u64,
    ) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let stored = Stored {
            peer: peer.to_owned(),
            dialog: dialog.snapshot(),
            approved,
        };
        let data = match serde_json::to_string(&stored) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize a SIP dialog");
                return;
            }
        };
        let row = SipDialogRow {
            id: row_id(kind, key),
            kind: kind.to_owned(),
            local_jid: key.0.to_string(),
            remote_jid: key.1.to_string(),
            data,
            expires: i64::try_from(expires).unwrap_or(i64::MAX),
            owner: self.owner.clone(),
        };
        if self.relay.is_none() {
            if let Err(e) = hub.store.sip_dialog_put(&row).await {
                tracing::error!(error = %e, "cannot store a SIP dialog");
            }
            return;
        }
        // In a cluster, only while this node owns the row: another node that adopted the
        // dialog (this one was silent for a while) holds it now.
        match hub.store.sip_dialog_put_owned(&row).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(id = %row.id, "another node has adopted this SIP dialog: forgetting it here");
                self.lost
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(row.id);
            }
            Err(e) => tracing::error!(error = %e, "cannot store a SIP dialog"),
        }
    }

    /// Makes this node the owner of the row of `kind` for `key` whoever owned it, and tells
    /// the others: a new dialog replaces the one stored for the same usage.
    async fn take_over(&self, kind: &str, key: &Key) {
        let Some(relay) = &self.relay else {
            return;
        };
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let id = row_id(kind, key);
        match hub.store.sip_dialog_take(&id, &self.owner).await {
            Ok(true) => relay.release(&id),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "cannot take over a stored SIP dialog"),
        }
    }

    async fn forget(&self, kind: &'static str, key: &Key) {
        if let Some(hub) = self.hub.upgrade() {
            if let Err(e) = hub.store.sip_dialog_delete(&row_id(kind, key)).await {
                tracing::error!(error = %e, "cannot remove a stored SIP dialog");
            }
        }
    }

    // ---- the loop ----

    /// Reloads persisted dialogs: every foreign watcher gets a current NOTIFY and every
    /// outbound subscription is refreshed at once. In a cluster, only the rows this node owns
    /// (and rows from before the cluster, owned by nobody); a few seconds later, the rows of
    /// nodes that are not alive ([`Event::Sweep`]).
    pub(crate) async fn restore(&mut self) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let rows = match hub.store.sip_dialogs().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot load stored SIP dialogs");
                return;
            }
        };
        drop(hub);
        let mut mine = Vec::new();
        for row in rows {
            // In a cluster, a row from before the cluster (no owner) is claimed first.
            if self.relay.is_none()
                || row.owner == self.owner
                || (row.owner.is_empty() && self.claim(&row).await)
            {
                mine.push(row);
            }
        }
        self.take_rows(mine, false).await;
        if !(self.in_subs.is_empty() && self.out_subs.is_empty() && self.ims.is_empty()) {
            tracing::info!(
                inbound = self.in_subs.len(),
                outbound = self.out_subs.len(),
                im = self.ims.len(),
                "restored SIP dialogs: notifying watchers and refreshing subscriptions now"
            );
        }
        if self.relay.is_some() {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(crate::cluster::DEAD_AFTER + Duration::from_secs(2)).await;
                let _ = tx.send(Event::Sweep);
            });
        }
    }

    /// Makes this node the owner of `row` (compare and swap on its current owner) and tells
    /// the node that held it. False if another node took it first.
    async fn claim(&self, row: &SipDialogRow) -> bool {
        let Some(hub) = self.hub.upgrade() else {
            return false;
        };
        match hub
            .store
            .sip_dialog_claim(&row.id, &row.owner, &self.owner)
            .await
        {
            Ok(true) => {
                if let Some(r) = &self.relay {
                    r.release(&row.id);
                }
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::error!(error = %e, "cannot adopt a stored SIP dialog");
                false
            }
        }
    }

    /// Takes stored dialogs into memory (at start, or adopted from another node: `adopted`):
    /// every foreign watcher gets a current NOTIFY (the hub is asked what each may see), and
    /// every outbound subscription is refreshed at once. Unreadable, expired rows and rows of
    /// domains no longer permitted are deleted. An adopted row for a usage this node already
    /// holds is left to what is in memory. Returns how many were taken.
    async fn take_rows(&mut self, rows: Vec<SipDialogRow>, adopted: bool) -> usize {
        let Some(hub) = self.hub.upgrade() else {
            return 0;
        };
        let now = unix_now();
        let mut probes = Vec::new();
        let mut taken = 0;
        for row in rows {
            let parsed = (
                Jid::parse(&row.local_jid),
                Jid::parse(&row.remote_jid),
                serde_json::from_str::<Stored>(&row.data),
            );
            let (Ok(local), Ok(remote), Ok(mut stored)) = parsed else {
                tracing::warn!(id = %row.id, "dropping an unreadable stored SIP dialog");
                let _ = hub.store.sip_dialog_delete(&row.id).await;
                continue;
            };
            let key = (local, remote);
            let kind = kind_name(&row.kind);
            if adopted {
                if self.holds(kind, &key) {
                    continue;
                }
                stored.dialog.local_seq =
                    stored.dialog.local_seq.map(|s| s.saturating_add(CSEQ_LEAP));
            }
            let expires = u64::try_from(row.expires).unwrap_or(0);
            let dialog = match Dialog::restore(stored.dialog) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(id = %row.id, error = %e, "dropping a stored SIP dialog");
                    let _ = hub.store.sip_dialog_delete(&row.id).await;
                    continue;
                }
            };
            if self.peer(&stored.peer).is_none() || (expires <= now && kind != OUT_SUB) {
                let _ = hub.store.sip_dialog_delete(&row.id).await;
                continue;
            }
            taken += 1;
            self.dialogs
                .insert(dialog.id().clone(), (kind, key.clone()));
            match kind {
                IN_SUB => {
                    probes.push(key.clone());
                    self.to_notify.push(key.clone());
                    self.in_subs.insert(
                        key,
                        InSub {
                            peer: stored.peer,
                            dialog,
                            expires_at: expires,
                            resources: HashMap::new(),
                            dirty: true,
                            inflight: false,
                            terminate: None,
                        },
                    );
                }
                OUT_SUB => {
                    self.out_subs.insert(
                        key,
                        OutSub {
                            dialog: Some(dialog),
                            expires_at: expires,
                            next_at: Some(Instant::now()),
                            ..OutSub::new(stored.peer, stored.approved)
                        },
                    );
                }
                _ => {
                    self.ims.insert(key, Im::established(stored.peer, dialog));
                }
            }
        }
        drop(hub);
        // What may each watcher see? The hub answers a probe as for any foreign contact; the
        // NOTIFYs go out once the answers are in.
        for (local, remote) in probes {
            let probe = convert::sub_presence("probe", &remote, &local, None);
            self.to_hub(probe).await;
        }
        taken
    }

    /// Whether this node holds the usage `kind` of `key` in memory.
    fn holds(&self, kind: &str, key: &Key) -> bool {
        match kind {
            IN_SUB => self.in_subs.contains_key(key),
            OUT_SUB => self.out_subs.contains_key(key),
            _ => self.ims.contains_key(key),
        }
    }

    // ---- the cluster ----

    /// Which stored usage an outbound stanza concerns (see [`usage_of`]).
    fn usage_of(&self, el: &Element, peer: &str) -> Option<&'static str> {
        let session = self
            .peer(peer)
            .is_some_and(|p| matches!(p.im_mode(), ImMode::Session));
        usage_of(el, session)
    }

    /// Where the usage `kind` of `key`, which this node does not hold in memory, is held: the
    /// row's owner if it is alive and `take` is false; else the row is adopted here (or there
    /// is none: this node creates the dialog).
    async fn locate(&mut self, kind: &'static str, key: &Key, take: bool) -> Holder {
        let Some(relay) = self.relay.clone() else {
            return Holder::Here;
        };
        let id = row_id(kind, key);
        // Twice at most: another node may adopt the row between the read and the claim.
        for _ in 0..2 {
            let Some(hub) = self.hub.upgrade() else {
                return Holder::Here;
            };
            let row = match hub.store.sip_dialog(&id).await {
                Ok(Some(r)) => r,
                Ok(None) => return Holder::Here,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read a stored SIP dialog");
                    return Holder::Here;
                }
            };
            drop(hub);
            if row.owner != self.owner && !take && relay.is_alive(&row.owner) {
                return Holder::Node(row.owner);
            }
            if row.owner == self.owner || self.claim(&row).await {
                if row.owner != self.owner {
                    tracing::info!(%id, from = %row.owner, "adopted a SIP dialog");
                }
                self.take_rows(vec![row], true).await;
                return Holder::Here;
            }
        }
        Holder::Here
    }

    /// Hands a stanza to the node holding its dialog; if that node does not take it, it comes
    /// back as [`Event::Unforwarded`].
    fn forward_to(&self, node: String, el: Element) {
        if let Some(r) = &self.relay {
            tracing::debug!(%node, to = el.get_attr("to").unwrap_or(""), "handing a SIP-bound stanza to the node holding its dialog");
            r.forward_ordered(node, el);
        }
    }

    /// An in-dialog request for a dialog this node does not hold: the peer turned to this node
    /// (another target of our domain) because the node holding it failed. Adopts the stored
    /// dialog if it is that one.
    async fn adopt_for_request(&mut self, kind: &'static str, key: &Key, id: &DialogId) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let row = match hub.store.sip_dialog(&row_id(kind, key)).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot read a stored SIP dialog");
                return;
            }
        };
        drop(hub);
        let same = serde_json::from_str::<Stored>(&row.data)
            .ok()
            .and_then(|st| Dialog::restore(st.dialog).ok())
            .is_some_and(|d| d.id() == id);
        if !same {
            return;
        }
        if row.owner == self.owner || self.claim(&row).await {
            tracing::info!(id = %row.id, from = %row.owner, "adopted a SIP dialog for a request that reached this node");
            self.take_rows(vec![row], true).await;
        }
    }

    /// Forgets the usage stored as row `id`: another node holds it now.
    fn released(&mut self, id: &str) {
        let find =
            |keys: Vec<&Key>, kind: &str| keys.into_iter().find(|k| row_id(kind, k) == id).cloned();
        if let Some(k) = find(self.in_subs.keys().collect(), IN_SUB) {
            if let Some(s) = self.in_subs.remove(&k) {
                self.dialogs.remove(s.dialog.id());
            }
        } else if let Some(k) = find(self.out_subs.keys().collect(), OUT_SUB) {
            if let Some(d) = self.out_subs.remove(&k).and_then(|s| s.dialog) {
                self.dialogs.remove(d.id());
            }
        } else if let Some(k) = find(self.ims.keys().collect(), IM) {
            if let Some(d) = self.ims.remove(&k).and_then(|i| i.dialog) {
                self.dialogs.remove(d.id());
            }
        } else {
            return;
        }
        tracing::info!(%id, "another node holds this SIP dialog now");
    }

    /// Adopts every stored dialog whose owner `pick` chooses (compare and swap, row by row).
    async fn adopt_where(&mut self, what: &str, pick: impl Fn(&SipDialogRow) -> bool) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let rows = match hub.store.sip_dialogs().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot load stored SIP dialogs");
                return;
            }
        };
        drop(hub);
        let mut claimed = Vec::new();
        for row in rows
            .into_iter()
            .filter(|r| r.owner != self.owner && pick(r))
        {
            if self.claim(&row).await {
                claimed.push(row);
            }
        }
        if claimed.is_empty() {
            return;
        }
        let n = self.take_rows(claimed, true).await;
        tracing::info!(
            dialogs = n,
            of = what,
            "adopted SIP dialogs: notifying watchers and refreshing subscriptions now"
        );
    }

    async fn node_dead(&mut self, node: String) {
        let Some(relay) = self.relay.clone() else {
            return;
        };
        if relay.is_lowest_alive() {
            self.adopt_where(&node, |r| r.owner == node).await;
        } else {
            // The lowest node adopts them; if it has no SIP, the SIP nodes share what is left.
            let tx = self.tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let _ = tx.send(Event::AdoptDead(node));
            });
        }
    }

    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Some(ev) => {
                        self.handle(ev).await;
                        while let Ok(ev) = self.rx.try_recv() {
                            self.handle(ev).await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => self.tick().await,
                _ = self.shutdown.changed() => {
                    if *self.shutdown.borrow() { break; }
                }
            }
            let lost = std::mem::take(&mut *self.lost.lock().unwrap_or_else(|e| e.into_inner()));
            for id in lost {
                self.released(&id);
            }
            self.flush_notifies();
            self.publish_stats();
        }
    }

    fn publish_stats(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = |x: usize| u64::try_from(x).unwrap_or(u64::MAX);
        self.stats
            .inbound_subscriptions
            .store(n(self.in_subs.len()), Relaxed);
        self.stats
            .outbound_subscriptions
            .store(n(self.out_subs.len()), Relaxed);
        self.stats.im_sessions.store(n(self.ims.len()), Relaxed);
    }

    async fn handle(&mut self, ev: Event) {
        match ev {
            Event::Outbound(el) => self.outbound(el, false).await,
            Event::Request { inc, routed } => self.request(*inc, routed).await,
            Event::Server(ev) => tracing::debug!(event = ?ev, "SIP server transaction event"),
            Event::Done { op, result } => {
                if let Some(op) = self.ops.remove(&op) {
                    self.done(op, result).await;
                }
            }
            Event::Forwarded(el, ack) => {
                self.current_ack = ack;
                self.outbound_here(el).await;
                // Not kept by a MESSAGE in flight: answered now.
                self.current_ack = None;
            }
            Event::Unforwarded(el) => self.outbound_here(el).await,
            Event::Released(id) => self.released(&id),
            Event::NodeDead(node) => self.node_dead(node).await,
            Event::AdoptDead(node) => self.adopt_where(&node, |r| r.owner == node).await,
            Event::Sweep => {
                if let Some(relay) = self.relay.clone() {
                    self.adopt_where("nodes not alive", |r| !relay.is_alive(&r.owner))
                        .await;
                }
            }
        }
    }

    async fn tick(&mut self) {
        let view = self.federation.view();
        if view.version != self.federation_seen.version {
            let old = std::mem::replace(&mut self.federation_seen, view.clone());
            self.drop_unpermitted(&old, &view).await;
        }
        let now = Instant::now();
        let unix = unix_now();
        // Outbound subscriptions due for a refresh or a retry.
        let due: Vec<Key> = self
            .out_subs
            .iter()
            .filter(|(_, s)| !s.inflight && s.next_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.subscribe(&key, self.cfg.sip.subscribe_expires_secs);
        }
        // Inbound subscriptions the watcher let expire.
        let expired: Vec<Key> = self
            .in_subs
            .iter()
            .filter(|(_, s)| s.expires_at <= unix && s.terminate.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            if let Some(s) = self.in_subs.get_mut(&key) {
                s.terminate = Some("timeout");
                s.dirty = true;
                self.to_notify.push(key);
            }
        }
        // IM sessions: idle for too long, or the local user went offline.
        let idle = Duration::from_secs(self.cfg.sip.im_idle_secs);
        let hub = self.hub.upgrade();
        let mut end = Vec::new();
        for (key, im) in self.ims.iter_mut() {
            if im.inviting {
                continue;
            }
            let online = hub
                .as_ref()
                .is_some_and(|h| !h.sessions.available(&key.0).is_empty());
            if online {
                im.local_seen_online = true;
            }
            if now.duration_since(im.last_activity) >= idle || (im.local_seen_online && !online) {
                end.push(key.clone());
            }
        }
        for key in end {
            self.end_im(&key).await;
        }
    }

    /// Ends every dialog with a domain that is no longer a SIP peer (removed through the admin
    /// API), the way a well-behaved notifier and UA do, then forgets it: its watchers get a
    /// final `NOTIFY` with `Subscription-State: terminated;reason=noresource` (RFC 6665 §4.2.2,
    /// without a body: the domain may no longer see presence), our subscriptions to it an
    /// unsubscribing `SUBSCRIBE` (`Expires: 0`), its IM sessions a `BYE`. These go over the
    /// domain's settings as they were before the change (`old`: its transport and static
    /// routes, which the endpoint's locator no longer has); best effort, their outcome is
    /// ignored. A domain with no settings in `old` either (dialogs restored from the store
    /// after it was removed) is only forgotten. Messages waiting for an IM session bounce.
    async fn drop_unpermitted(
        &mut self,
        old: &crate::federation::FederationView,
        view: &crate::federation::FederationView,
    ) {
        let gone = |peer: &str| view.sip_peer(peer).is_none();
        let in_subs: Vec<Key> = self
            .in_subs
            .iter()
            .filter(|(_, s)| gone(&s.peer))
            .map(|(k, _)| k.clone())
            .collect();
        let out_subs: Vec<Key> = self
            .out_subs
            .iter()
            .filter(|(_, s)| gone(&s.peer))
            .map(|(k, _)| k.clone())
            .collect();
        let ims: Vec<Key> = self
            .ims
            .iter()
            .filter(|(_, s)| gone(&s.peer))
            .map(|(k, _)| k.clone())
            .collect();
        if in_subs.is_empty() && out_subs.is_empty() && ims.is_empty() {
            return;
        }
        tracing::info!(
            inbound = in_subs.len(),
            outbound = out_subs.len(),
            im = ims.len(),
            "SIP domains are no longer permitted: ending and forgetting their dialogs"
        );
        // The removed domains' former settings: the last view the task saw, or what it last
        // used (the domain may have come and gone between two looks at the view).
        let former: HashMap<String, SipPeerConfig> = {
            let mut used = self.peers_used.lock().unwrap_or_else(|e| e.into_inner());
            let mut former = HashMap::new();
            for (peer, _) in self
                .in_subs
                .values()
                .map(|s| (&s.peer, ()))
                .chain(self.out_subs.values().map(|s| (&s.peer, ())))
                .chain(self.ims.values().map(|s| (&s.peer, ())))
            {
                if !gone(peer) {
                    continue;
                }
                let key = peer_key(peer);
                if let Some(p) = old
                    .sip_peer(peer)
                    .cloned()
                    .or_else(|| used.get(&key).cloned())
                {
                    former.insert(key, p);
                }
            }
            used.retain(|d, _| !gone(d));
            former
        };
        // Their former static routes, in a locator of their own.
        let stats = self
            .hub
            .upgrade()
            .map(|h| h.metrics.dns.clone())
            .unwrap_or_default();
        let locator = match crate::sip_locator(&self.cfg, stats) {
            Ok(l) => {
                let routes = former
                    .iter()
                    .map(|(d, p)| {
                        let r = p.routes.iter().filter_map(|r| r.parse().ok()).collect();
                        (d.clone(), r)
                    })
                    .collect();
                l.set_static_routes(routes);
                Some(Arc::new(l))
            }
            Err(e) => {
                tracing::warn!(error = %e, "no resolver to reach the removed SIP domains: their dialogs end without a word");
                None
            }
        };
        let farewell = |peer: &str| -> Option<Destination> {
            let p = former.get(&peer_key(peer))?;
            let t = match p.transport {
                SipPeerTransport::Tcp => Transport::Tcp,
                SipPeerTransport::Tls => Transport::Tls,
            };
            Some(Destination::DomainVia(peer.to_owned(), t, locator.clone()?))
        };
        for key in in_subs {
            if let Some(mut s) = self.in_subs.remove(&key) {
                self.dialogs.remove(s.dialog.id());
                if let Some(dest) = farewell(&s.peer) {
                    let mut req = s.dialog.request(Method::Notify);
                    req.headers.push("Event", "presence");
                    req.headers
                        .push("Subscription-State", "terminated;reason=noresource");
                    req.set_body(Vec::new());
                    self.send(req, dest, Op::Fire);
                }
            }
            self.forget(IN_SUB, &key).await;
        }
        for key in out_subs {
            if let Some(s) = self.out_subs.remove(&key) {
                if let Some(mut d) = s.dialog {
                    self.dialogs.remove(d.id());
                    if let Some(dest) = farewell(&s.peer) {
                        let mut req = d.request(Method::Subscribe);
                        req.headers.push("Event", "presence");
                        req.headers.push("Expires", "0");
                        req.set_body(Vec::new());
                        self.send(req, dest, Op::Fire);
                    }
                }
            }
            self.forget(OUT_SUB, &key).await;
        }
        for key in ims {
            if let Some(mut im) = self.ims.remove(&key) {
                for el in im.queue.drain(..) {
                    self.bounce(
                        &el,
                        "remote-server-not-found",
                        "federation with this SIP domain is no longer permitted",
                    )
                    .await;
                }
                if let Some(mut d) = im.dialog {
                    self.dialogs.remove(d.id());
                    if let Some(dest) = farewell(&im.peer) {
                        let bye = d.request(Method::Bye);
                        self.send(bye, dest, Op::Fire);
                    }
                }
            }
            self.forget(IM, &key).await;
        }
    }

    // ---- stanzas from the hub ----

    /// A stanza another node handed to this one (or that the node holding its dialog did not
    /// take): handled here, adopting its dialog.
    async fn outbound_here(&mut self, el: Element) {
        self.outbound(el, true).await
    }

    /// A stanza from a local user to a SIP contact. In a cluster, one whose dialog another
    /// alive node holds goes to that node (unless `here`).
    async fn outbound(&mut self, el: Element, here: bool) {
        let (Some(from), Some(to)) = (
            el.get_attr("from").and_then(|f| Jid::parse(f).ok()),
            el.get_attr("to").and_then(|t| Jid::parse(t).ok()),
        ) else {
            return;
        };
        let peer = to.domain().to_ascii_lowercase();
        if self.peer(&peer).is_none() {
            return self
                .bounce(&el, "remote-server-not-found", "not a permitted SIP domain")
                .await;
        }
        let key = (from.to_bare(), to.to_bare());
        if self.relay.is_some() {
            if let Some(kind) = self.usage_of(&el, &peer) {
                if !self.holds(kind, &key) {
                    if let Holder::Node(node) = self.locate(kind, &key, here).await {
                        return self.forward_to(node, el);
                    }
                }
            }
        }
        match el.name.as_str() {
            "presence" => self.outbound_presence(el, key, from, peer).await,
            "message" => self.outbound_message(el, key, peer).await,
            "iq" => {
                if matches!(el.get_attr("type"), Some("get" | "set")) {
                    self.bounce(
                        &el,
                        "service-unavailable",
                        "SIP contacts do not answer XMPP queries",
                    )
                    .await;
                }
            }
            _ => {}
        }
    }

    async fn outbound_presence(&mut self, el: Element, key: Key, from: Jid, peer: String) {
        match el.get_attr("type") {
            None | Some("unavailable") => {
                let resource = from.resource().unwrap_or("").to_owned();
                let available = el.get_attr("type").is_none();
                if let Some(s) = self.in_subs.get_mut(&key) {
                    if available {
                        s.resources
                            .insert(resource, convert::canonical_from_stanza(&el));
                    } else if from.is_bare() {
                        s.resources.clear();
                    } else {
                        s.resources.remove(&resource);
                    }
                    s.dirty = true;
                    self.to_notify.push(key);
                }
            }
            Some("subscribe") => {
                if !self.out_subs.contains_key(&key) {
                    self.out_subs.insert(key.clone(), OutSub::new(peer, false));
                    self.subscribe(&key, self.cfg.sip.subscribe_expires_secs);
                } else if let Some(last) = self
                    .out_subs
                    .get(&key)
                    .filter(|s| s.approved)
                    .map(|s| s.last.clone())
                {
                    // Already subscribed: confirm again, as an XMPP server would.
                    self.to_hub(convert::sub_presence("subscribed", &key.1, &key.0, None))
                        .await;
                    if let Some(p) = last {
                        self.to_hub(p).await;
                    }
                }
            }
            Some("unsubscribe") if self.out_subs.contains_key(&key) => {
                self.subscribe(&key, 0);
            }
            Some("subscribed") => {
                // The local user approved: the presence that follows goes out in NOTIFYs.
                if let Some(s) = self.in_subs.get_mut(&key) {
                    s.dirty = true;
                    self.to_notify.push(key);
                }
            }
            Some("unsubscribed") => {
                // Denied or revoked: polite, the subscription stays and says offline.
                if let Some(s) = self.in_subs.get_mut(&key) {
                    s.resources.clear();
                    s.dirty = true;
                    self.to_notify.push(key);
                }
            }
            Some("probe") => match self.out_subs.get(&key) {
                Some(s) if s.approved => {
                    if let Some(p) = s.last.clone() {
                        self.to_hub(p).await;
                    }
                }
                Some(_) => {}
                None => {
                    // A roster subscription without a SIP one (lost, or from before SIP was
                    // configured): subscribe now.
                    self.out_subs.insert(key.clone(), OutSub::new(peer, true));
                    self.subscribe(&key, self.cfg.sip.subscribe_expires_secs);
                }
            },
            _ => {}
        }
    }

    async fn outbound_message(&mut self, el: Element, key: Key, peer: String) {
        match el.get_attr("type") {
            Some("error") => {
                tracing::debug!(to = %key.1, "an error for a SIP contact is not forwarded");
                return;
            }
            Some("groupchat") => {
                return self
                    .bounce(
                        &el,
                        "feature-not-implemented",
                        "group chat is not available with SIP contacts",
                    )
                    .await;
            }
            _ => {}
        }
        let m = convert::outbound_message(&el);
        if m.body.is_none() && m.chat_state.as_deref() == Some("gone") {
            if self.ims.contains_key(&key) {
                self.end_im(&key).await;
            }
            return;
        }
        if m.body.is_none() && !matches!(m.chat_state.as_deref(), Some("composing" | "paused")) {
            // Nothing SIP can carry (an `active` without text, a receipt…).
            return;
        }
        let mode = self
            .peer(&peer)
            .map(|p| p.im_mode())
            .unwrap_or(ImMode::Page);
        match mode {
            ImMode::Page => {
                if let Some(req) = self.page_message(&key, &peer, &el) {
                    let dest = self.dest(&peer);
                    let ack = self.current_ack.take();
                    self.send(
                        req,
                        dest,
                        Op::Message {
                            key,
                            stanza: el,
                            in_session: false,
                            _ack: ack,
                        },
                    );
                }
            }
            ImMode::Session => self.session_message(key, peer, el).await,
        }
    }

    /// The MESSAGE body for a stanza: text, or a typing notification.
    fn message_body(el: &Element) -> Option<(&'static str, String)> {
        let m = convert::outbound_message(el);
        if let Some(b) = m.body {
            return Some(("text/plain; charset=UTF-8", b));
        }
        let active = match m.chat_state.as_deref() {
            Some("composing") => true,
            Some("paused") => false,
            _ => return None,
        };
        let doc = IsComposing {
            active,
            refresh: active.then_some(60),
            content_type: Some("text/plain".into()),
            last_active: None,
        };
        Some((ISCOMPOSING_TYPE, doc.to_xml()))
    }

    /// The Request-URI for a stanza's `to`: the GRUU of a full JID, else the address of record.
    fn target_of(el: &Element, aol: bool) -> Option<String> {
        let to = el.get_attr("to").and_then(|t| Jid::parse(t).ok())?;
        convert::target_uri_of_jid(&to, aol)
    }

    fn page_message(&self, key: &Key, peer: &str, el: &Element) -> Option<Request> {
        let aol = self.aol(peer);
        let to_uri = convert::uri_of_jid(&key.1, aol)?;
        let target = Self::target_of(el, aol).unwrap_or_else(|| to_uri.clone());
        let from_uri = convert::uri_of_jid(&key.0, false)?;
        let (ctype, body) = Self::message_body(el)?;
        let mut req = new_request(
            Method::Message,
            &target,
            &format!("<{from_uri}>;tag={}", new_tag()),
            &format!("<{to_uri}>"),
            &new_call_id(&self.cfg.domain),
            1,
        )?;
        req.headers.push("Content-Type", ctype);
        req.set_body(body.into_bytes());
        Some(req)
    }

    async fn session_message(&mut self, key: Key, peer: String, el: Element) {
        if let Some(im) = self.ims.get_mut(&key) {
            im.last_activity = Instant::now();
            // The local user is sending: they are online (a tick may not have seen it yet).
            im.local_seen_online = true;
            if im.inviting {
                im.queue.push(el);
                return;
            }
            if let Some(d) = im.dialog.as_mut() {
                if let Some((ctype, body)) = Self::message_body(&el) {
                    let mut req = d.request(Method::Message);
                    req.headers.push("Content-Type", ctype);
                    req.set_body(body.into_bytes());
                    let dest = self.dest(&peer);
                    let ack = self.current_ack.take();
                    self.send(
                        req,
                        dest,
                        Op::Message {
                            key: key.clone(),
                            stanza: el,
                            in_session: true,
                            _ack: ack,
                        },
                    );
                    if let Some(d) = self.ims.get(&key).and_then(|i| i.dialog.clone()) {
                        self.persist(IM, &key, &peer, &d, false, far_future()).await;
                    }
                }
                return;
            }
        }
        // No session yet: INVITE (SDP m=message, as Lync), queue the message meanwhile.
        let aol = self.aol(&peer);
        let (Some(to_uri), Some(from_uri)) = (
            convert::uri_of_jid(&key.1, aol),
            convert::uri_of_jid(&key.0, false),
        ) else {
            return self
                .bounce(&el, "jid-malformed", "this address has no SIP form")
                .await;
        };
        let target = Self::target_of(&el, aol).unwrap_or_else(|| to_uri.clone());
        let Some(mut req) = new_request(
            Method::Invite,
            &target,
            &format!("<{from_uri}>;tag={}", new_tag()),
            &format!("<{to_uri}>"),
            &new_call_id(&self.cfg.domain),
            1,
        ) else {
            return self
                .bounce(&el, "jid-malformed", "this address has no SIP form")
                .await;
        };
        req.headers.push("Contact", self.contact(&key.0, &peer));
        req.headers.push("Content-Type", "application/sdp");
        let sdp = im::message_session_sdp(self.cfg.sip.via_host(&self.cfg.domain), 5061, &from_uri);
        req.set_body(sdp.into_bytes());
        self.ims.insert(
            key.clone(),
            Im {
                peer: peer.clone(),
                dialog: None,
                queue: vec![el],
                last_activity: Instant::now(),
                local_seen_online: true,
                inviting: true,
            },
        );
        let dest = self.dest(&peer);
        self.send(req.clone(), dest, Op::Invite { key, request: req });
    }

    async fn end_im(&mut self, key: &Key) {
        let Some(mut im) = self.ims.remove(key) else {
            return;
        };
        for el in im.queue.drain(..) {
            self.bounce(&el, "recipient-unavailable", "the SIP session ended")
                .await;
        }
        if let Some(mut d) = im.dialog {
            self.dialogs.remove(d.id());
            let bye = d.request(Method::Bye);
            let dest = self.dest(&im.peer);
            self.send(bye, dest, Op::Fire);
        }
        self.forget(IM, key).await;
    }

    /// Sends (or refreshes, or with `expires` 0 ends) the outbound subscription `key`.
    fn subscribe(&mut self, key: &Key, expires: u32) {
        let Some(s) = self.out_subs.get(key) else {
            return;
        };
        let peer = s.peer.clone();
        let contact = self.contact(&key.0, &peer);
        let aol = self.aol(&peer);
        let s = match self.out_subs.get_mut(key) {
            Some(s) => s,
            None => return,
        };
        let mut req = match s.dialog.as_mut() {
            Some(d) => d.request(Method::Subscribe),
            None => {
                let (Some(to_uri), Some(from_uri)) = (
                    convert::uri_of_jid(&key.1, aol),
                    convert::uri_of_jid(&key.0, false),
                ) else {
                    return;
                };
                let Some(mut r) = new_request(
                    Method::Subscribe,
                    &to_uri,
                    &format!("<{from_uri}>;tag={}", new_tag()),
                    &format!("<{to_uri}>"),
                    &new_call_id(&self.cfg.domain),
                    1,
                ) else {
                    return;
                };
                r.headers.push("Contact", contact);
                r
            }
        };
        req.headers.push("Event", "presence");
        req.headers.push("Accept", "application/pidf+xml");
        req.headers.push("Expires", expires.to_string());
        req.set_body(Vec::new());
        if s.dialog.is_none() {
            s.initial = Some(req.clone());
        }
        s.inflight = true;
        s.next_at = None;
        let dest = self.dest(&peer);
        self.send(
            req.clone(),
            dest,
            Op::Subscribe {
                key: key.clone(),
                request: req,
                expires,
            },
        );
    }

    /// Refreshes every outbound subscription to `peer` at the next tick (at most once a
    /// minute per domain).
    fn refresh_domain(&mut self, peer: &str) {
        let now = Instant::now();
        if self
            .domain_refreshed
            .get(peer)
            .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(60))
        {
            return;
        }
        self.domain_refreshed.insert(peer.to_owned(), now);
        let mut n = 0;
        for s in self.out_subs.values_mut() {
            if s.peer == peer && !s.inflight {
                s.next_at = Some(now);
                n += 1;
            }
        }
        if n > 0 {
            tracing::info!(%peer, subscriptions = n, "the SIP peer seems to have restarted: refreshing our subscriptions now");
        }
    }

    // ---- outcomes of our requests ----

    async fn done(&mut self, op: Op, result: Result<SipResponse, SipError>) {
        match op {
            Op::Subscribe {
                key,
                request,
                expires,
            } => self.subscribe_done(key, request, expires, result).await,
            Op::Notify { key } => {
                let ok = matches!(&result, Ok(r) if r.response.status.is_success());
                let Some(s) = self.in_subs.get_mut(&key) else {
                    return;
                };
                s.inflight = false;
                if let Ok(r) = &result {
                    let _ = s.dialog.handle_response(&r.response);
                }
                let finished = s.terminate.is_some() && !s.dirty;
                if !ok || finished {
                    // RFC 6665 §4.2.2: a failed NOTIFY ends the subscription.
                    if !ok {
                        tracing::info!(watcher = %key.1, user = %key.0, outcome = %describe(&result), "SIP watcher's subscription ended");
                    }
                    if let Some(s) = self.in_subs.remove(&key) {
                        self.dialogs.remove(s.dialog.id());
                    }
                    self.forget(IN_SUB, &key).await;
                } else {
                    if s.dirty {
                        // What changed while this NOTIFY was in flight goes out next.
                        self.to_notify.push(key.clone());
                    }
                    let (peer, d, exp) = (s.peer.clone(), s.dialog.clone(), s.expires_at);
                    self.persist(IN_SUB, &key, &peer, &d, false, exp).await;
                }
            }
            Op::Invite { key, request } => self.invite_done(key, request, result).await,
            Op::Message {
                key,
                stanza,
                in_session,
                _ack,
            } => {
                let status = match &result {
                    Ok(r) if r.response.status.is_success() => return,
                    Ok(r) => Some(r.response.status.code()),
                    Err(_) => None,
                };
                if in_session && status == Some(481) {
                    // The peer forgot the session: open a new one and send again.
                    if let Some(im) = self.ims.remove(&key) {
                        if let Some(d) = im.dialog {
                            self.dialogs.remove(d.id());
                        }
                        self.forget(IM, &key).await;
                        let peer = im.peer;
                        self.session_message(key, peer, stanza).await;
                    }
                    return;
                }
                let (cond, text) = sip_failure(&result);
                self.bounce(&stanza, cond, &text).await;
            }
            Op::Fire => {}
        }
    }

    async fn subscribe_done(
        &mut self,
        key: Key,
        request: Request,
        expires: u32,
        result: Result<SipResponse, SipError>,
    ) {
        let Some(peer) = self.out_subs.get(&key).map(|s| s.peer.clone()) else {
            return;
        };
        let trusted = match &result {
            Ok(r) => self.trusted(&peer, r),
            Err(_) => true,
        };
        let Some(s) = self.out_subs.get_mut(&key) else {
            return;
        };
        s.inflight = false;
        let status = match &result {
            Ok(r) if trusted => Some(r.response.status.code()),
            Ok(_) => {
                tracing::warn!(%peer, "a SIP answer came from a server not certified for its domain");
                None
            }
            Err(_) => None,
        };
        if expires == 0 {
            // Unsubscribed: done whatever the answer.
            if let Some(s) = self.out_subs.remove(&key) {
                if let Some(d) = s.dialog {
                    self.dialogs.remove(d.id());
                }
            }
            self.forget(OUT_SUB, &key).await;
            return;
        }
        match (status, &result) {
            (Some(200..=299), Ok(r)) => {
                let granted = r
                    .response
                    .headers
                    .expires()
                    .ok()
                    .flatten()
                    .unwrap_or(expires)
                    .min(expires.max(60));
                match s.dialog.as_mut() {
                    Some(d) => {
                        let _ = d.handle_response(&r.response);
                    }
                    None => match Dialog::uac(&request, &r.response) {
                        Ok(mut d) => {
                            d.set_local_contact(self.contact(&key.0, &peer));
                            self.dialogs.insert(d.id().clone(), (OUT_SUB, key.clone()));
                            if let Some(s) = self.out_subs.get_mut(&key) {
                                s.dialog = Some(d);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "unusable answer to SUBSCRIBE");
                        }
                    },
                }
                let Some(s) = self.out_subs.get_mut(&key) else {
                    return;
                };
                s.initial = None;
                s.backoff = FIRST_BACKOFF;
                s.expires_at = unix_now() + u64::from(granted);
                // Refresh well before the expiry: at two thirds, at least 5 s ahead.
                let lead = (u64::from(granted) / 3).max(5).min(u64::from(granted));
                s.next_at = Some(Instant::now() + Duration::from_secs(u64::from(granted) - lead));
                let (approved, exp) = (s.approved, s.expires_at);
                if let Some(d) = s.dialog.clone() {
                    self.persist(OUT_SUB, &key, &peer, &d, approved, exp).await;
                }
            }
            (Some(423), Ok(r)) => {
                // Interval too brief: ask again with the peer's Min-Expires.
                let min = r
                    .response
                    .headers
                    .get("Min-Expires")
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .unwrap_or(3600)
                    .min(86_400);
                self.subscribe(&key, min);
            }
            (Some(481), _) if s.dialog.is_some() => {
                // The peer lost the dialog: subscribe afresh.
                if let Some(d) = s.dialog.take() {
                    self.dialogs.remove(d.id());
                }
                self.subscribe(&key, expires);
            }
            (Some(code @ (403 | 404 | 410 | 484 | 489 | 603 | 604)), _) => {
                // Refused for good (RFC 7248 §5: a rejection is `unsubscribed`).
                tracing::info!(%peer, contact = %key.1, code, "SIP subscription refused");
                if let Some(s) = self.out_subs.remove(&key) {
                    if let Some(d) = s.dialog {
                        self.dialogs.remove(d.id());
                    }
                }
                self.forget(OUT_SUB, &key).await;
                let text = format!("the SIP domain refused the subscription ({code})");
                self.to_hub(convert::sub_presence(
                    "unsubscribed",
                    &key.1,
                    &key.0,
                    Some(&text),
                ))
                .await;
            }
            _ => {
                // Transient (timeouts, 408, 480, 5xx, transport errors, untrusted answers):
                // retry with backoff.
                let wait = s.backoff;
                s.backoff = (s.backoff * 2).min(MAX_BACKOFF);
                s.next_at = Some(Instant::now() + Duration::from_secs(wait));
                tracing::info!(%peer, contact = %key.1, outcome = %describe(&result), retry_in = wait, "SIP subscription failed; will retry");
                // Once what the peer granted has run out, what we last heard is no longer
                // known to be true: the contact becomes unavailable until the peer answers
                // again (RFC 6121 §4.3, as for a lost XMPP domain).
                let stale = unix_now() >= s.expires_at
                    && s.last
                        .as_ref()
                        .is_some_and(|p| p.get_attr("type") != Some("unavailable"));
                if stale {
                    let text = format!("{peer} cannot be reached");
                    let p = convert::unavailable(&key.1, &key.0, Some(&text));
                    s.last = Some(p.clone());
                    self.to_hub(p).await;
                }
            }
        }
    }

    async fn invite_done(
        &mut self,
        key: Key,
        request: Request,
        result: Result<SipResponse, SipError>,
    ) {
        let Some(peer) = self.ims.get(&key).map(|i| i.peer.clone()) else {
            return;
        };
        let ok = match &result {
            Ok(r) if r.response.status.is_success() && self.trusted(&peer, r) => Some(r),
            _ => None,
        };
        let Some(r) = ok else {
            let (cond, text) = sip_failure(&result);
            if let Some(mut im) = self.ims.remove(&key) {
                for el in im.queue.drain(..) {
                    self.bounce(&el, cond, &text).await;
                }
            }
            return;
        };
        let dialog = match Dialog::uac(&request, &r.response) {
            Ok(mut d) => {
                d.set_local_contact(self.contact(&key.0, &peer));
                d
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "unusable answer to INVITE");
                if let Some(mut im) = self.ims.remove(&key) {
                    for el in im.queue.drain(..) {
                        self.bounce(
                            &el,
                            "service-unavailable",
                            "the SIP peer's answer is unusable",
                        )
                        .await;
                    }
                }
                return;
            }
        };
        let invite_seq = request.headers.cseq().map(|c| c.seq).unwrap_or(1);
        let ack = dialog.ack(invite_seq);
        let sip = self.sip.clone();
        let addr = r.peer.addr;
        tokio::spawn(async move {
            let _ = sip.send_ack(ack, addr).await;
        });
        self.dialogs.insert(dialog.id().clone(), (IM, key.clone()));
        let queue = match self.ims.get_mut(&key) {
            Some(im) => {
                im.dialog = Some(dialog.clone());
                im.inviting = false;
                im.last_activity = Instant::now();
                std::mem::take(&mut im.queue)
            }
            None => return,
        };
        self.take_over(IM, &key).await;
        self.persist(IM, &key, &peer, &dialog, false, far_future())
            .await;
        for el in queue {
            self.session_message(key.clone(), peer.clone(), el).await;
        }
    }

    // ---- NOTIFYs to foreign watchers ----

    fn flush_notifies(&mut self) {
        for key in std::mem::take(&mut self.to_notify) {
            if self
                .in_subs
                .get(&key)
                .is_some_and(|s| s.dirty && !s.inflight)
            {
                self.notify(&key);
            }
        }
    }

    fn notify(&mut self, key: &Key) {
        let unix = unix_now();
        let Some(s) = self.in_subs.get_mut(key) else {
            return;
        };
        let profile = self
            .federation
            .view()
            .sip_peer(&s.peer)
            .map(SipPeerConfig::presence_profile)
            .unwrap_or(entente_model::availability::Profile::Simple);
        let entity = convert::uri_of_jid(&key.0, false).unwrap_or_default();
        let presence = convert::aggregate(s.resources.iter());
        let mut req = s.dialog.request(Method::Notify);
        req.headers.push("Event", "presence");
        let state = match s.terminate {
            Some(reason) => format!("terminated;reason={reason}"),
            None => format!("active;expires={}", s.expires_at.saturating_sub(unix)),
        };
        req.headers.push("Subscription-State", state);
        req.headers.push("Content-Type", "application/pidf+xml");
        req.set_body(convert::pidf_for_peer(&presence, profile, &entity).into_bytes());
        s.dirty = false;
        s.inflight = true;
        let peer = s.peer.clone();
        let dest = self.dest(&peer);
        self.send(req, dest, Op::Notify { key: key.clone() });
    }

    // ---- requests from SIP peers ----

    async fn request(&mut self, inc: IncomingRequest, routed: Routed) {
        let req = &inc.request;
        let in_dialog = req
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned))
            .is_some();
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        if !in_dialog {
            match hub.account_exists(&routed.local).await {
                Ok(true) => {}
                Ok(false) => {
                    return self.reject(&inc, StatusCode::NOT_FOUND, "Not Found");
                }
                Err(e) => {
                    tracing::error!(error = %e, "store error");
                    return self.reject(&inc, StatusCode::SERVER_INTERNAL_ERROR, "Store error");
                }
            }
        }
        drop(hub);
        if in_dialog && self.relay.is_some() {
            // A request in a dialog another node held: the peer turned to this node.
            let kind = match &req.method {
                Method::Subscribe => Some(IN_SUB),
                Method::Notify => Some(OUT_SUB),
                Method::Extension(m) if m.eq_ignore_ascii_case("BENOTIFY") => Some(OUT_SUB),
                Method::Message | Method::Bye | Method::Invite => Some(IM),
                _ => None,
            };
            if let (Some(kind), Some(id)) = (kind, DialogId::for_request(req)) {
                if !self.dialogs.contains_key(&id) {
                    let key = (routed.local.clone(), routed.remote.clone());
                    self.adopt_for_request(kind, &key, &id).await;
                }
            }
        }
        match &inc.request.method {
            Method::Subscribe => self.inbound_subscribe(inc, routed).await,
            Method::Notify => self.inbound_notify(inc, routed).await,
            Method::Extension(m) if m.eq_ignore_ascii_case("BENOTIFY") => {
                // Lync's best-effort NOTIFY expects no response.
                let key = inc.key;
                self.silent = Some(key);
                self.inbound_notify(inc, routed).await;
                self.silent = None;
                self.sip.abandon(key).await;
            }
            Method::Invite => self.inbound_invite(inc, routed).await,
            Method::Message => self.inbound_message(inc, routed).await,
            Method::Bye => {
                let id = DialogId::for_request(req);
                match id.and_then(|id| self.dialogs.get(&id).cloned()) {
                    Some((IM, key)) => {
                        if let Some(im) = self.ims.remove(&key) {
                            if let Some(d) = im.dialog {
                                self.dialogs.remove(d.id());
                            }
                            for el in im.queue {
                                self.bounce(&el, "recipient-unavailable", "the SIP session ended")
                                    .await;
                            }
                        }
                        self.forget(IM, &key).await;
                        self.ok(&inc, None);
                    }
                    _ => self.reject(
                        &inc,
                        StatusCode::CALL_DOES_NOT_EXIST,
                        "Call/Transaction Does Not Exist",
                    ),
                }
            }
            Method::Info => self.ok(&inc, None),
            _ => {
                let mut r = inc
                    .request
                    .response(StatusCode::METHOD_NOT_ALLOWED, Some(&new_tag()));
                r.headers.push("Allow", crate::sip::handler::ALLOW);
                self.respond(inc.key, r);
            }
        }
    }

    /// Whether `peer` already holds as many dialogs with us as `sip.max_dialogs_per_peer`
    /// allows (a dialog replacing the same pair's does not count).
    fn over_limit(&self, peer: &str, key: &Key) -> bool {
        let limit = self.cfg.sip.max_dialogs_per_peer;
        if self.in_subs.len() + self.ims.len() < limit {
            // Fewer dialogs in all than one peer may hold: no need to count this peer's.
            return false;
        }
        let held = self
            .in_subs
            .iter()
            .filter(|(k, s)| s.peer == peer && *k != key)
            .count()
            + self
                .ims
                .iter()
                .filter(|(k, i)| i.peer == peer && *k != key)
                .count();
        held >= limit
    }

    fn too_many(&self, inc: &IncomingRequest) {
        tracing::warn!(peer = %inc.source.addr, "a SIP peer reached sip.max_dialogs_per_peer");
        let mut r = inc
            .request
            .response(StatusCode::SERVICE_UNAVAILABLE, Some(&new_tag()));
        r.reason = "Too many dialogs from your domain".into();
        r.headers.push("Retry-After", "60");
        self.respond(inc.key, r);
    }

    fn reject(&self, inc: &IncomingRequest, status: StatusCode, reason: &str) {
        let mut r = inc.request.response(status, Some(&new_tag()));
        r.reason = reason.to_owned();
        self.respond(inc.key, r);
    }

    fn ok(&self, inc: &IncomingRequest, tag: Option<&str>) {
        let tag = tag.map(str::to_owned).unwrap_or_else(new_tag);
        self.respond(inc.key, inc.request.response(StatusCode::OK, Some(&tag)));
    }

    async fn inbound_subscribe(&mut self, inc: IncomingRequest, routed: Routed) {
        let req = &inc.request;
        match req.headers.event() {
            Ok(Some(e)) if e.package.eq_ignore_ascii_case("presence") => {}
            _ => {
                let mut r = req.response(StatusCode::BAD_EVENT, Some(&new_tag()));
                r.headers.push("Allow-Events", "presence");
                return self.respond(inc.key, r);
            }
        }
        let requested = match req.headers.expires() {
            Ok(v) => v.unwrap_or(self.cfg.sip.subscribe_expires_secs),
            Err(_) => return self.reject(&inc, StatusCode::BAD_REQUEST, "Bad Expires"),
        };
        let granted = requested.min(self.cfg.sip.subscribe_expires_secs);
        let key = (routed.local.clone(), routed.remote.clone());
        let unix = unix_now();
        if let Some(id) = DialogId::for_request(req) {
            // A refresh, or an unsubscribe (Expires: 0).
            let Some((IN_SUB, k)) = self.dialogs.get(&id).cloned() else {
                return self.reject(
                    &inc,
                    StatusCode::CALL_DOES_NOT_EXIST,
                    "Subscription Does Not Exist",
                );
            };
            let Some(s) = self.in_subs.get_mut(&k) else {
                return self.reject(
                    &inc,
                    StatusCode::CALL_DOES_NOT_EXIST,
                    "Subscription Does Not Exist",
                );
            };
            if let Err(e) = s.dialog.handle_request(req) {
                return self.reject(&inc, e.status(), &e.to_string());
            }
            let mut r = req.response(StatusCode::OK, None);
            r.headers.push("Expires", granted.to_string());
            r.headers.push("Contact", self.contact(&k.0, &routed.peer));
            self.respond(inc.key, r);
            let Some(s) = self.in_subs.get_mut(&k) else {
                return;
            };
            if granted == 0 {
                s.terminate = Some("timeout");
            } else {
                s.expires_at = unix + u64::from(granted);
            }
            s.dirty = true;
            self.to_notify.push(k);
            return;
        }
        if self.over_limit(&routed.peer, &key) {
            return self.too_many(&inc);
        }
        let tag = new_tag();
        let mut r = req.response(StatusCode::ACCEPTED, Some(&tag));
        for rr in req.headers.all(HeaderName::RecordRoute) {
            r.headers.push("Record-Route", rr);
        }
        r.headers.push("Expires", granted.to_string());
        r.headers
            .push("Contact", self.contact(&key.0, &routed.peer));
        let dialog = match Dialog::uas(req, &r) {
            Ok(d) => d,
            Err(e) => return self.reject(&inc, e.status(), &e.to_string()),
        };
        self.respond(inc.key, r);
        // A new subscription replaces an older one from the same watcher. A watcher that
        // subscribes afresh while its dialog was alive has lost its state: the peer restarted
        // (the seed's OCS note). It has then lost ours too: refresh our subscriptions to that
        // domain now rather than at their next refresh, up to two hours later.
        if let Some(old) = self.in_subs.remove(&key) {
            self.dialogs.remove(old.dialog.id());
            self.refresh_domain(&routed.peer);
        }
        self.dialogs
            .insert(dialog.id().clone(), (IN_SUB, key.clone()));
        let expires_at = unix + u64::from(granted);
        // Another node may hold this watcher's previous subscription.
        self.take_over(IN_SUB, &key).await;
        self.persist(IN_SUB, &key, &routed.peer, &dialog, false, expires_at)
            .await;
        self.in_subs.insert(
            key.clone(),
            InSub {
                peer: routed.peer.clone(),
                dialog,
                expires_at,
                resources: HashMap::new(),
                dirty: true,
                inflight: false,
                terminate: (granted == 0).then_some("timeout"),
            },
        );
        self.to_notify.push(key.clone());
        // The hub decides: admin policy, the user's list, asking the user. Whatever it
        // decides, the watcher's subscription is active; it sees what the hub lets through
        // (polite blocking: a denied watcher sees offline).
        self.to_hub(convert::sub_presence("subscribe", &key.1, &key.0, None))
            .await;
        self.to_hub(convert::sub_presence("probe", &key.1, &key.0, None))
            .await;
    }

    async fn inbound_notify(&mut self, inc: IncomingRequest, routed: Routed) {
        let req = &inc.request;
        let Some(id) = DialogId::for_request(req) else {
            return self.reject(
                &inc,
                StatusCode::CALL_DOES_NOT_EXIST,
                "Subscription Does Not Exist",
            );
        };
        let key = match self.dialogs.get(&id).cloned() {
            Some((OUT_SUB, k)) => k,
            Some(_) => {
                return self.reject(
                    &inc,
                    StatusCode::CALL_DOES_NOT_EXIST,
                    "Subscription Does Not Exist",
                )
            }
            None => {
                // A NOTIFY before the 2xx to our SUBSCRIBE (RFC 6665 §4.1.2.4).
                let key = (routed.local.clone(), routed.remote.clone());
                let created = match self.out_subs.get(&key).and_then(|s| s.initial.as_ref()) {
                    Some(initial) => Dialog::uac_from_notify(initial, req).ok(),
                    None => None,
                };
                match created {
                    Some(mut d) => {
                        d.set_local_contact(self.contact(&key.0, &routed.peer));
                        self.dialogs.insert(d.id().clone(), (OUT_SUB, key.clone()));
                        if let Some(s) = self.out_subs.get_mut(&key) {
                            s.dialog = Some(d);
                        }
                        key
                    }
                    None => {
                        return self.reject(
                            &inc,
                            StatusCode::CALL_DOES_NOT_EXIST,
                            "Subscription Does Not Exist",
                        )
                    }
                }
            }
        };
        let Some(s) = self.out_subs.get_mut(&key) else {
            return self.reject(
                &inc,
                StatusCode::CALL_DOES_NOT_EXIST,
                "Subscription Does Not Exist",
            );
        };
        if let Some(d) = s.dialog.as_mut() {
            if let Err(e) = d.handle_request(req) {
                return self.reject(&inc, e.status(), &e.to_string());
            }
        }
        let state = match req.headers.subscription_state() {
            Ok(Some(st)) => st,
            _ => {
                return self.reject(
                    &inc,
                    StatusCode::BAD_REQUEST,
                    "Missing or bad Subscription-State",
                )
            }
        };
        let body = String::from_utf8_lossy(&req.body).into_owned();
        let profile = self
            .federation
            .view()
            .sip_peer(&routed.peer)
            .map(SipPeerConfig::presence_profile)
            .unwrap_or(entente_model::availability::Profile::Simple);
        let presence = if body.trim().is_empty() {
            None
        } else {
            match convert::stanza_from_pidf(&body, profile, &key.1, &key.0) {
                Ok(p) => Some(p),
                Err(e) => {
                    return self.reject(
                        &inc,
                        StatusCode::BAD_REQUEST,
                        &format!("Bad presence document: {e}"),
                    )
                }
            }
        };
        self.ok(&inc, None);
        let Some(s) = self.out_subs.get_mut(&key) else {
            return;
        };
        match state.state {
            SubState::Active => {
                let first = !s.approved;
                s.approved = true;
                if let Some(p) = &presence {
                    s.last = Some(p.clone());
                }
                let (peer, d, exp) = (s.peer.clone(), s.dialog.clone(), s.expires_at);
                if first {
                    if let Some(d) = &d {
                        self.persist(OUT_SUB, &key, &peer, d, true, exp).await;
                    }
                    self.to_hub(convert::sub_presence("subscribed", &key.1, &key.0, None))
                        .await;
                }
                if let Some(p) = presence {
                    let offline = p.get_attr("type") == Some("unavailable");
                    self.to_hub(p).await;
                    if offline && self.ims.contains_key(&key) {
                        self.end_im(&key).await;
                    }
                }
            }
            SubState::Pending => {}
            _ => {
                let reason = state.reason().unwrap_or("").to_ascii_lowercase();
                let retry = state.retry_after().map(u64::from);
                let was_approved = s.approved;
                s.last = None;
                if let Some(d) = s.dialog.take() {
                    self.dialogs.remove(d.id());
                }
                if matches!(reason.as_str(), "rejected" | "noresource") {
                    self.out_subs.remove(&key);
                    self.forget(OUT_SUB, &key).await;
                    self.to_hub(convert::sub_presence("unsubscribed", &key.1, &key.0, None))
                        .await;
                    if was_approved {
                        self.to_hub(convert::unavailable(&key.1, &key.0, None))
                            .await;
                    }
                } else if !s.inflight {
                    // deactivated, probation, timeout, giveup or none: subscribe again.
                    let wait = retry.unwrap_or(if reason == "deactivated" {
                        0
                    } else {
                        FIRST_BACKOFF
                    });
                    s.next_at = Some(Instant::now() + Duration::from_secs(wait));
                }
            }
        }
    }

    async fn inbound_invite(&mut self, inc: IncomingRequest, routed: Routed) {
        let req = &inc.request;
        let key = (routed.local.clone(), routed.remote.clone());
        if let Some(id) = DialogId::for_request(req) {
            // A re-INVITE in an IM session: same answer again.
            match self.dialogs.get(&id).cloned() {
                Some((IM, k)) => {
                    if let Some(d) = self.ims.get_mut(&k).and_then(|i| i.dialog.as_mut()) {
                        if let Err(e) = d.handle_request(req) {
                            return self.reject(&inc, e.status(), &e.to_string());
                        }
                    }
                    let r = self.invite_answer(req, None, &k, &routed.peer);
                    self.respond(inc.key, r);
                }
                _ => self.reject(
                    &inc,
                    StatusCode::CALL_DOES_NOT_EXIST,
                    "Call/Transaction Does Not Exist",
                ),
            }
            return;
        }
        if !im::sdp_offers_message_session(&req.body) {
            let mut r = req.response(status(488), Some(&new_tag()));
            r.reason = "Only IM sessions (m=message) are accepted".into();
            return self.respond(inc.key, r);
        }
        if self.blocked(&key).await {
            let code = gateway_errors::sip_status_for_xmpp("service-unavailable");
            return self.reject(&inc, status(code), status(code).canonical_reason());
        }
        if self.over_limit(&routed.peer, &key) {
            return self.too_many(&inc);
        }
        let tag = new_tag();
        let r = self.invite_answer(req, Some(&tag), &key, &routed.peer);
        let dialog = match Dialog::uas(req, &r) {
            Ok(d) => d,
            Err(e) => return self.reject(&inc, e.status(), &e.to_string()),
        };
        self.respond(inc.key, r);
        // The first message may ride in the INVITE (Lync's Ms-Text-Format).
        let first = req
            .headers
            .get("Ms-Text-Format")
            .and_then(im::ms_text_format_body);
        if let Some(old) = self.ims.remove(&key) {
            if let Some(d) = old.dialog {
                self.dialogs.remove(d.id());
            }
            for el in old.queue {
                self.bounce(&el, "recipient-unavailable", "the SIP session was replaced")
                    .await;
            }
        }
        self.dialogs.insert(dialog.id().clone(), (IM, key.clone()));
        // Another node may hold this pair's previous session.
        self.take_over(IM, &key).await;
        self.persist(IM, &key, &routed.peer, &dialog, false, far_future())
            .await;
        self.ims
            .insert(key.clone(), Im::established(routed.peer.clone(), dialog));
        if let Some((ctype, body)) = first {
            if let Some(text) = text_of(&ctype, &body) {
                if !text.is_empty() {
                    self.to_hub(convert::chat_message(&key.1, &key.0, &text))
                        .await;
                }
            }
        }
    }

    fn invite_answer(&self, req: &Request, tag: Option<&str>, key: &Key, peer: &str) -> Response {
        let mut r = req.response(StatusCode::OK, tag);
        for rr in req.headers.all(HeaderName::RecordRoute) {
            r.headers.push("Record-Route", rr);
        }
        r.headers.push("Contact", self.contact(&key.0, peer));
        r.headers.push("Content-Type", "application/sdp");
        let uri = convert::uri_of_jid(&key.0, false).unwrap_or_default();
        r.set_body(
            im::message_session_sdp(self.cfg.sip.via_host(&self.cfg.domain), 5061, &uri)
                .into_bytes(),
        );
        r
    }

    async fn blocked(&self, key: &Key) -> bool {
        match self.hub.upgrade() {
            Some(h) => h.blocks(&key.0, &key.1).await.unwrap_or(false),
            None => false,
        }
    }

    async fn inbound_message(&mut self, inc: IncomingRequest, routed: Routed) {
        let req = &inc.request;
        let key = (routed.local.clone(), routed.remote.clone());
        // The sender's resource: the GRUU of the session's remote target, or of the request's
        // From or Contact (RFC 5627 `;gr=`).
        let session_target = DialogId::for_request(req)
            .and_then(|id| self.dialogs.get(&id))
            .and_then(|(_, k)| self.ims.get(k))
            .and_then(|i| i.dialog.as_ref())
            .map(|d| d.remote_target().clone());
        let from_uri = req.headers.from().ok().map(|f| f.uri);
        let contact_uri = req
            .headers
            .contacts()
            .ok()
            .and_then(|c| c.first().and_then(|c| c.address()).map(|a| a.uri.clone()));
        let sender = [session_target, from_uri, contact_uri]
            .iter()
            .flatten()
            .map(|u| convert::with_gruu_resource(&key.1, Some(u)))
            .find(|j| j.resource().is_some())
            .unwrap_or_else(|| key.1.clone());
        if let Some(id) = DialogId::for_request(req) {
            match self.dialogs.get(&id).cloned() {
                Some((IM, k)) if k == key => {
                    if let Some(im) = self.ims.get_mut(&k) {
                        im.last_activity = Instant::now();
                        if let Some(d) = im.dialog.as_mut() {
                            if let Err(e) = d.handle_request(req) {
                                return self.reject(&inc, e.status(), &e.to_string());
                            }
                        }
                    }
                }
                _ => {
                    return self.reject(
                        &inc,
                        StatusCode::CALL_DOES_NOT_EXIST,
                        "Call/Transaction Does Not Exist",
                    )
                }
            }
        }
        let ctype = match req.headers.content_type() {
            Ok(Some(t)) => t,
            Ok(None) if req.body.is_empty() => {
                return self.ok(&inc, None);
            }
            _ => return self.reject(&inc, StatusCode::BAD_REQUEST, "Missing or bad Content-Type"),
        };
        let stanza = if ctype.is("application", "im-iscomposing+xml") {
            match IsComposing::parse(&req.body) {
                Ok(c) => convert::chat_state_message(&sender, &key.0, c.active),
                Err(e) => {
                    return self.reject(
                        &inc,
                        StatusCode::BAD_REQUEST,
                        &format!("Bad isComposing document: {e}"),
                    )
                }
            }
        } else {
            let full = format!("{}/{}", ctype.mtype, ctype.subtype).to_ascii_lowercase();
            match text_of(&full, &req.body) {
                Some(text) => convert::chat_message(&sender, &key.0, &text),
                None => {
                    let mut r = req.response(status(415), Some(&new_tag()));
                    r.headers.push(
                        "Accept",
                        "text/plain, text/html, application/im-iscomposing+xml",
                    );
                    return self.respond(inc.key, r);
                }
            }
        };
        if self.blocked(&key).await {
            let code = gateway_errors::sip_status_for_xmpp("service-unavailable");
            return self.reject(&inc, status(code), status(code).canonical_reason());
        }
        self.ok(&inc, None);
        self.to_hub(stanza).await;
    }
}

/// The text of an IM body of `ctype` (`text/plain`, `text/html`); `None` for other types.
fn text_of(ctype: &str, body: &[u8]) -> Option<String> {
    let t = ctype
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let s = String::from_utf8_lossy(body);
    match t.as_str() {
        "text/plain" => Some(s.into_owned()),
        "text/html" => Some(convert::html_to_text(&s)),
        _ => None,
    }
}

/// A status code from a number we know is valid (falls back to 500).
fn status(code: u16) -> StatusCode {
    StatusCode::new(code).unwrap_or(StatusCode::SERVER_INTERNAL_ERROR)
}

fn kind_name(kind: &str) -> &'static str {
    match kind {
        IN_SUB => IN_SUB,
        OUT_SUB => OUT_SUB,
        _ => IM,
    }
}

/// IM sessions have no expiry of their own; their rows live until BYE.
fn far_future() -> u64 {
    unix_now() + 10 * 365 * 86_400
}

fn new_call_id(domain: &str) -> String {
    format!("{}@{domain}", uuid::Uuid::new_v4().simple())
}

/// An out-of-dialog request (no Via: the transaction layer adds it).
fn new_request(
    method: Method,
    target: &str,
    from: &str,
    to: &str,
    call_id: &str,
    cseq: u32,
) -> Option<Request> {
    let uri: Uri = target.parse().ok()?;
    let mut r = Request::new(method.clone(), uri);
    r.headers.push("Max-Forwards", "70");
    r.headers.push("From", from);
    r.headers.push("To", to);
    r.headers.push("Call-ID", call_id);
    r.headers.push("CSeq", format!("{cseq} {method}"));
    Some(r)
}

fn describe(result: &Result<SipResponse, SipError>) -> String {
    match result {
        Ok(r) => format!("{} {}", r.response.status.code(), r.response.reason),
        Err(e) => e.to_string(),
    }
}

/// The XMPP error for a failed request (RFC 7247 §8.1).
fn sip_failure(result: &Result<SipResponse, SipError>) -> (&'static str, String) {
    match result {
        Ok(r) => {
            let (_, cond) = gateway_errors::xmpp_error_for_sip(r.response.status.code());
            (
                cond,
                format!(
                    "the SIP domain answered {} {}",
                    r.response.status.code(),
                    r.response.reason
                ),
            )
        }
        Err(SipError::Timeout(_)) => ("remote-server-timeout", describe(result)),
        Err(_) => ("remote-server-not-found", describe(result)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_bodies() {
        assert_eq!(
            text_of("text/plain; charset=UTF-8", b"hi").as_deref(),
            Some("hi")
        );
        assert_eq!(text_of("TEXT/HTML", b"<p>hi</p>").as_deref(), Some("hi"));
        assert_eq!(text_of("application/octet-stream", b"x"), None);
    }

    #[test]
    fn requests_without_via_are_well_formed() {
        let r = new_request(
            Method::Message,
            "sip:a@b.test",
            "<sip:u@x.test>;tag=1",
            "<sip:a@b.test>",
            "c1@x.test",
            1,
        )
        .unwrap();
        assert_eq!(r.headers.get("CSeq"), Some("1 MESSAGE"));
        assert!(new_request(Method::Message, "not a uri", "", "", "", 1).is_none());
    }

    #[test]
    fn each_outbound_stanza_concerns_one_usage() {
        let el = |xml: &str| entente_xmpp_proto::parse_stanza(xml).unwrap();
        let p = |t: &str| el(&format!("<presence type='{t}' from='a@x/r' to='b@y'/>"));
        assert_eq!(
            usage_of(&el("<presence from='a@x/r' to='b@y'/>"), false),
            Some(IN_SUB)
        );
        for t in ["unavailable", "subscribed", "unsubscribed"] {
            assert_eq!(usage_of(&p(t), true), Some(IN_SUB), "{t}");
        }
        for t in ["subscribe", "unsubscribe", "probe"] {
            assert_eq!(usage_of(&p(t), true), Some(OUT_SUB), "{t}");
        }
        assert_eq!(usage_of(&p("error"), true), None);
        let m = el("<message type='chat' from='a@x/r' to='b@y'><body>hi</body></message>");
        assert_eq!(usage_of(&m, true), Some(IM));
        // Page mode: no dialog, any SIP node sends it.
        assert_eq!(usage_of(&m, false), None);
        let e = el("<message type='error' from='a@x/r' to='b@y'/>");
        assert_eq!(usage_of(&e, true), None);
        assert_eq!(
            usage_of(&el("<iq type='get' from='a@x/r' to='b@y' id='1'/>"), true),
            None
        );
        let key = (Jid::parse("a@x").unwrap(), Jid::parse("b@y").unwrap());
        assert_eq!(row_id(IM, &key), "im:a@x:b@y");
    }

    #[test]
    fn refused_subscriptions_and_failures_map_to_xmpp_errors() {
        assert_eq!(
            gateway_errors::xmpp_error_type("remote-server-timeout"),
            "wait"
        );
        assert_eq!(gateway_errors::xmpp_error_type("item-not-found"), "cancel");
    }
}
