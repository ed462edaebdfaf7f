//! SIP federation: the XMPP ↔ SIP/SIMPLE gateway (RFC 7247 addresses and errors, RFC 7248 as
//! updated by RFC 8048 presence, RFC 7572 IM), with the peer profiles of the seed document
//! (`lync`/`moc` edges, the `aol` gateway, any `simple` presence server).
//!
//! ```text
//!   hub ──RemoteRouter::send──> FederationRouter ──(a SIP peer domain)──> Gateway ──────┐
//!                                         └──(any other domain)──> S2s                   │ Event
//!   SIP endpoint ──SipHandler::on_request──> Gateway::precheck (403 / 404 / 400 at once)  │
//!                                                  └────────────────────────────────> actor
//!   actor: subscriptions both ways, IM sessions, NOTIFYs, refreshes, persistence ──> hub.route
//! ```
//!
//! A foreign SIP user looks like any foreign XMPP contact to the hub: subscriptions,
//! authorization, polite blocking and offline storage are the hub's, exactly as for XMPP
//! federation, so the two protocols cannot disagree. The gateway translates and keeps the SIP
//! dialogs: inbound subscriptions (one per watcher and local user), outbound subscriptions (one
//! per local watcher and SIP contact, as the seed says), and IM sessions (one per pair).
//!
//! Every request to a SIP domain goes to that domain's federation edge (its static route or
//! SRV target), whatever host the Request-URI or route set names; the Request-URI and Route
//! headers follow RFC 3261 so the edge routes it on.

mod actor;
pub mod convert;
mod relay;

pub use relay::RemoteGateways;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use entente_model::jid::Jid;
use entente_sip_proto::{Method, Response, StatusCode, Transport, Uri};
use entente_xmpp_proto::Element;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::{Config, SipPeerConfig};
use crate::hub::Hub;
use crate::router::{RemoteError, RemoteRouter};
use crate::sip::handler::default_response;
use crate::sip::{new_tag, IncomingRequest, ServerEvent, SipHandle, SipHandler};

pub(crate) use actor::Event;

/// The SIP federation gateway: the SIP endpoint's transaction user and the way out to SIP
/// domains.
pub struct Gateway {
    cfg: Arc<Config>,
    federation: Arc<crate::federation::Federation>,
    tx: mpsc::UnboundedSender<Event>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
    stats: Arc<GatewayStats>,
}

/// The gateway's gauges and counters (for `/metrics`).
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Foreign watchers' subscriptions to local users.
    pub inbound_subscriptions: AtomicU64,
    /// Local users' subscriptions to SIP contacts.
    pub outbound_subscriptions: AtomicU64,
    /// Session-mode IM dialogs.
    pub im_sessions: AtomicU64,
    /// Requests refused before the gateway task saw them: domain not permitted.
    pub refused_domain: AtomicU64,
    /// Requests refused: the peer is not authenticated for the From domain.
    pub refused_unauthenticated: AtomicU64,
    /// Requests refused: not a user of this domain (also: relaying attempts).
    pub refused_not_local: AtomicU64,
    /// Requests handed to the gateway task.
    pub accepted: AtomicU64,
}

impl Gateway {
    /// The gateway's gauges and counters.
    pub fn stats(&self) -> &GatewayStats {
        &self.stats
    }
}

impl Gateway {
    pub fn new(cfg: Arc<Config>, federation: Arc<crate::federation::Federation>) -> Arc<Gateway> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Gateway {
            cfg,
            federation,
            tx,
            rx: Mutex::new(Some(rx)),
            stats: Arc::default(),
        })
    }

    /// Loads the persisted dialogs and starts the gateway task: current NOTIFYs go to every
    /// foreign watcher and our own subscriptions are refreshed at once (no two-hour gap after a
    /// restart). In a cluster (`cluster`), only the dialogs this node holds are loaded, and the
    /// gateway joins the other nodes' (see [`relay`]).
    pub async fn run(
        &self,
        hub: &Arc<Hub>,
        sip: SipHandle,
        shutdown: watch::Receiver<bool>,
        tasks: &mut JoinSet<()>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> anyhow::Result<()> {
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| anyhow::anyhow!("the SIP gateway is already running"))?;
        let relay = cluster.map(relay::Relay::new);
        if let Some(r) = &relay {
            r.start(self.tx.clone(), shutdown.clone(), tasks).await?;
        }
        let mut actor = actor::Actor::new(
            self.cfg.clone(),
            hub,
            sip,
            self.tx.clone(),
            rx,
            shutdown,
            self.stats.clone(),
        )
        .in_cluster(relay);
        actor.restore().await;
        tasks.spawn(actor.run());
        Ok(())
    }

    /// The checks every request passes before the gateway task sees it (RFC 7247 §7 security):
    /// a permitted domain, authenticated by its certificate or source address; addressed to
    /// one of our users.
    fn precheck(&self, inc: &IncomingRequest) -> Result<Routed, Response> {
        let req = &inc.request;
        let reply = |status: StatusCode, reason: &str| {
            let mut r = req.response(status, Some(&new_tag()));
            r.reason = reason.to_owned();
            r
        };
        let from = req
            .headers
            .from()
            .map_err(|_| reply(StatusCode::BAD_REQUEST, "Bad From"))?;
        let Some(from_sip) = from.uri.as_sip() else {
            return Err(reply(
                StatusCode::UNSUPPORTED_URI_SCHEME,
                "From is not a SIP URI",
            ));
        };
        let domain = from_sip
            .host
            .to_string()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let count = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        let fed = self.federation.view();
        let Some(peer) = fed.sip_peer(&domain) else {
            count(&self.stats.refused_domain);
            return Err(reply(StatusCode::FORBIDDEN, "Domain not permitted"));
        };
        if !authenticated(peer, inc) {
            count(&self.stats.refused_unauthenticated);
            tracing::warn!(%domain, source = %inc.source.addr, "SIP request from an unauthenticated peer refused");
            return Err(reply(
                StatusCode::FORBIDDEN,
                "Peer not authenticated for the From domain",
            ));
        }
        let aol = peer.aol_names();
        let Some(remote) = convert::jid_of_sip(from_sip, aol) else {
            return Err(reply(StatusCode::BAD_REQUEST, "From address makes no JID"));
        };
        // The local user: the Request-URI when it names a user of ours, else the To address
        // (in-dialog requests carry our Contact, a peer ignoring Record-Route may send to a
        // node's address).
        let ours = |u: &Uri| {
            u.as_sip()
                .filter(|s| s.user.is_some())
                .and_then(|s| convert::jid_of_sip(s, false))
                .filter(|j| j.domain() == self.cfg.domain)
        };
        let to = req
            .headers
            .to()
            .map_err(|_| reply(StatusCode::BAD_REQUEST, "Bad To"))?;
        let local = match ours(&req.uri).or_else(|| ours(&to.uri)) {
            Some(l) => l,
            None => {
                count(&self.stats.refused_not_local);
                return Err(reply(StatusCode::NOT_FOUND, "Not a user of this domain"));
            }
        };
        count(&self.stats.accepted);
        Ok(Routed {
            peer: peer.domain.to_ascii_lowercase(),
            local,
            remote,
        })
    }
}

/// A request that passed [`Gateway::precheck`].
pub(crate) struct Routed {
    pub peer: String,
    pub local: Jid,
    pub remote: Jid,
}

/// Whether the request comes from the peer it claims: over TLS with a certificate valid for the
/// domain (a client certificate, or the server certificate of a connection we opened), from a
/// configured source address, or over TLS from a peer configured with `mutual_tls = false`.
fn authenticated(peer: &SipPeerConfig, inc: &IncomingRequest) -> bool {
    let by_cert = inc.source.tls_names.as_ref().is_some_and(|names| {
        names
            .iter()
            .any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(&peer.domain))
    });
    let by_addr = peer.source_addrs.contains(&inc.source.addr.addr.ip());
    let unauthenticated_tls_ok =
        !peer.requires_mutual_tls() && inc.source.addr.transport == Transport::Tls;
    by_cert || by_addr || unauthenticated_tls_ok
}

impl SipHandler for Gateway {
    fn on_request(&self, incoming: IncomingRequest, _sip: &SipHandle) -> Option<Response> {
        if incoming.request.method == Method::Options {
            return Some(default_response(&incoming.request));
        }
        match self.precheck(&incoming) {
            Err(r) => Some(r),
            Ok(routed) => {
                if self
                    .tx
                    .send(Event::Request {
                        inc: Box::new(incoming),
                        routed,
                    })
                    .is_err()
                {
                    // The task has stopped (shutting down).
                    return None;
                }
                None
            }
        }
    }

    fn on_event(&self, event: ServerEvent) {
        let _ = self.tx.send(Event::Server(event));
    }
}

impl RemoteRouter for Gateway {
    fn send(&self, stanza: Element) -> Result<(), RemoteError> {
        let from = stanza.get_attr("from").and_then(|f| Jid::parse(f).ok());
        if from.as_ref().map(Jid::domain) != Some(self.cfg.domain.as_str()) {
            // Never relay between two foreign domains.
            return Err(RemoteError::NotFound(
                "only this server's users may reach SIP domains".into(),
            ));
        }
        self.tx
            .send(Event::Outbound(stanza))
            .map_err(|_| RemoteError::NotFound("SIP federation is shutting down".into()))
    }
}

/// The hub's way out: SIP domains (`[[sip.peer]]` and the admin API's, when SIP is enabled)
/// through the gateway (on a cluster node without SIP: through the SIP nodes' gateways,
/// `sip_elsewhere`), every other domain through XMPP server-to-server federation.
pub struct FederationRouter {
    pub federation: Arc<crate::federation::Federation>,
    pub xmpp: Arc<dyn RemoteRouter>,
    pub sip: Option<Arc<Gateway>>,
    pub sip_elsewhere: Option<Arc<RemoteGateways>>,
}

impl RemoteRouter for FederationRouter {
    fn send(&self, stanza: Element) -> Result<(), RemoteError> {
        let domain = stanza
            .get_attr("to")
            .and_then(|t| Jid::parse(t).ok())
            .map(|j| j.domain().to_string());
        if let Some(d) = &domain {
            if self.federation.view().sip_peer(d).is_some() {
                if let Some(gw) = &self.sip {
                    return gw.send(stanza);
                }
                if let Some(others) = &self.sip_elsewhere {
                    return others.send(stanza);
                }
            }
        }
        self.xmpp.send(stanza)
    }
}
