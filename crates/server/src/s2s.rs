//! XMPP server-to-server federation: outbound links per foreign domain, the inbound listener,
//! and dialback verification. The stream state machines are `entente_xmpp_proto::s2s`; this
//! module owns their sockets, timers and tasks.
//!
//! Outbound: one link per (local domain, foreign domain), created on the first stanza and kept
//! while used. Stanzas queue (bounded) while the link connects; a link tries every candidate the
//! locator returns, every address of each, and retries with backoff for `retry_timeout_secs`
//! before bouncing what is queued with the reason (DNS, connect, TLS, authentication).
//!
//! Inbound: each connection runs an [`S2sIn`]; dialback keys are verified by a short
//! connection to the claimed domain's authoritative server; stanzas that pass the address
//! checks go to the hub.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use anyhow::{Context, Result};
use entente_dns::{Candidate, Locator};
use entente_model::jid::Jid;
use entente_xmpp_proto::element::{Node, NS_CLIENT, NS_SERVER};
use entente_xmpp_proto::s2s::{
    AuthMethod, Purpose, S2sIn, S2sInConfig, S2sInEvent, S2sOut, S2sOutConfig, S2sOutEvent,
    TlsPolicy,
};
use entente_xmpp_proto::stanza::{error_reply, ErrorType};
use entente_xmpp_proto::{Element, Limits, StreamErrorCondition};
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::{Config, PeerTls};
use crate::hub::Hub;
use crate::router::{RemoteError, RemoteRouter};
use crate::tls::Identity;

/// One live federation link or stream, as the admin API describes it.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    /// Our domain on the link.
    pub local: String,
    /// The peer's domain (for an inbound stream: the first domain it authenticated, else the
    /// one its header claims, else empty).
    pub remote: String,
    /// `out` (our link to the peer) or `in` (the peer's stream to us).
    pub direction: &'static str,
    /// `connecting` (resolving, connecting or negotiating), `established` or `closing`.
    pub state: &'static str,
    /// How the stream authenticated; `None` before it has.
    pub auth: Option<AuthMethod>,
    pub tls: bool,
    /// When the link was created, or became established (RFC 3339, UTC).
    pub since: String,
    /// Stanzas received on the stream (inbound) and written to it (outbound).
    pub stanzas_in: u64,
    pub stanzas_out: u64,
    /// Stanzas waiting for the link (outbound).
    pub queued: u64,
}

/// What [`S2s::drain`] did with one link or stream.
#[derive(Debug, Clone)]
pub struct Drained {
    /// The link as it was when the drain began.
    pub link: LinkInfo,
    /// Queued stanzas written to the stream before it was closed.
    pub flushed: u64,
    /// Queued stanzas bounced to their senders with an error (the link was not established,
    /// or broke while being drained).
    pub bounced: u64,
    /// Whether the stream had ended when the drain returned (false: still closing).
    pub closed: bool,
}

/// The live state of one link or stream, kept up to date by its task and read by
/// [`S2s::links`].
struct LinkStats {
    direction: &'static str,
    local: String,
    view: Mutex<LinkView>,
    stanzas_in: AtomicU64,
    stanzas_out: AtomicU64,
    /// Set by [`S2s::drain`]: flush, then end the stream gracefully.
    drain: watch::Sender<bool>,
    /// Set when the link's task is over.
    done: watch::Sender<bool>,
    /// What a drain did with queued stanzas.
    flushed: AtomicU64,
    bounced: AtomicU64,
}

#[derive(Debug, Clone, Default)]
struct LinkView {
    peer: String,
    established: bool,
    closing: bool,
    auth: Option<AuthMethod>,
    tls: bool,
    since: String,
}

impl LinkStats {
    fn new(direction: &'static str, local: &str, peer: &str) -> Arc<LinkStats> {
        Arc::new(LinkStats {
            direction,
            local: local.to_string(),
            view: Mutex::new(LinkView {
                peer: peer.to_string(),
                since: crate::hub::rfc3339_now(),
                ..LinkView::default()
            }),
            stanzas_in: AtomicU64::new(0),
            stanzas_out: AtomicU64::new(0),
            drain: watch::Sender::new(false),
            done: watch::Sender::new(false),
            flushed: AtomicU64::new(0),
            bounced: AtomicU64::new(0),
        })
    }

    fn update(&self, f: impl FnOnce(&mut LinkView)) {
        f(&mut self.view.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn view(&self) -> LinkView {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn info(&self, queued: u64) -> LinkInfo {
        let v = self.view();
        LinkInfo {
            local: self.local.clone(),
            remote: v.peer,
            direction: self.direction,
            state: if v.closing {
                "closing"
            } else if v.established {
                "established"
            } else {
                "connecting"
            },
            auth: v.auth,
            tls: v.tls,
            since: v.since,
            stanzas_in: self.stanzas_in.load(Ordering::Relaxed),
            stanzas_out: self.stanzas_out.load(Ordering::Relaxed),
            queued,
        }
    }
}

/// Resolves when `rx` turns true (never, if its sender is gone).
async fn drained(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// 32 random bytes in hex: a dialback secret.
pub fn random_secret() -> String {
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut secret);
    secret.iter().map(|b| format!("{b:02x}")).collect()
}

/// The federation service; the hub's [`RemoteRouter`].
pub struct S2s {
    cfg: Arc<Config>,
    /// The federation in effect (policy, per-domain settings); static routes reach `locator`
    /// through it.
    federation: Arc<crate::federation::Federation>,
    locator: Arc<Locator>,
    roots: Arc<RootCertStore>,
    id: Identity,
    secret: String,
    hub: OnceLock<Weak<Hub>>,
    /// A weak reference to ourselves, for the tasks `send` spawns.
    me: Weak<S2s>,
    links: Mutex<HashMap<(String, String), LinkTx>>,
    /// Inbound streams, by a number of their own.
    inbound: Mutex<HashMap<u64, Arc<LinkStats>>>,
    next_inbound: AtomicU64,
}

/// The sending end of one outbound link.
struct LinkTx {
    tx: mpsc::Sender<Element>,
    /// Stanzas handed to the link and not yet written to a stream or bounced: the channel's
    /// content plus what the link task holds while it (re)connects. `queue_max` bounds it.
    pending: Arc<AtomicUsize>,
    stats: Arc<LinkStats>,
}

impl S2s {
    /// `secret` is the dialback secret (XEP-0185 keys are derived from it): `None` for a random
    /// one per process (a single node); in a cluster every node of the domain passes the same
    /// one, so that any node can verify a key another node generated. `dns_stats`: where the
    /// locator counts its DNS look-ups (the hub's metrics).
    pub fn new(
        cfg: Arc<Config>,
        federation: Arc<crate::federation::Federation>,
        id: Identity,
        secret: Option<String>,
        dns_stats: Arc<entente_dns::LookupStats>,
    ) -> Result<Arc<S2s>> {
        let mut lc = entente_dns::LocatorConfig::default();
        for n in &cfg.dns.nameservers {
            lc.nameservers
                .push(n.parse().with_context(|| format!("dns.nameservers: {n}"))?);
        }
        if let Some(t) = cfg.dns.timeout_secs {
            lc.query_timeout = Duration::from_secs(t.max(1));
        }
        let locator = Arc::new(
            Locator::new(lc)
                .context("setting up the DNS resolver")?
                .with_stats(dns_stats),
        );
        federation.register_locator(crate::federation::RouteKind::Xmpp, locator.clone());
        let roots = crate::tls::root_store(cfg.s2s.ca_file.as_deref(), cfg.s2s.system_roots)?;
        let secret = secret.unwrap_or_else(random_secret);
        Ok(Arc::new_cyclic(|me| S2s {
            cfg,
            federation,
            locator,
            roots,
            id,
            secret,
            hub: OnceLock::new(),
            me: me.clone(),
            links: Mutex::new(HashMap::new()),
            inbound: Mutex::new(HashMap::new()),
            next_inbound: AtomicU64::new(0),
        }))
    }

    pub fn set_hub(&self, hub: &Arc<Hub>) {
        let _ = self.hub.set(Arc::downgrade(hub));
    }

    fn hub(&self) -> Option<Arc<Hub>> {
        self.hub.get().and_then(Weak::upgrade)
    }

    fn tls_policy(&self, domain: &str) -> TlsPolicy {
        match self.federation.view().peer(domain).map(|p| p.tls) {
            Some(PeerTls::Never) => TlsPolicy::Never,
            Some(PeerTls::Optional) => TlsPolicy::Optional,
            Some(PeerTls::Required) | None => TlsPolicy::Required,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_stanza_bytes: self.cfg.s2s.max_stanza_bytes,
            max_depth: 64,
        }
    }

    /// How long one write to a federation stream may take (`s2s.write_timeout_secs`).
    fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.s2s.write_timeout_secs.max(1))
    }

    fn count_bounce(&self, reason: &str) {
        if let Some(hub) = self.hub() {
            hub.metrics.s2s_bounces.inc(reason);
        }
    }

    fn count_handshake_failure(&self, reason: &str) {
        if let Some(hub) = self.hub() {
            hub.metrics.s2s_handshake_failures.inc(reason);
        }
    }

    /// The live links and streams, sorted by peer, then direction (`in` first).
    pub fn links(&self) -> Vec<LinkInfo> {
        let mut out: Vec<LinkInfo> = {
            let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
            links
                .values()
                .map(|l| l.stats.info(l.pending.load(Ordering::SeqCst) as u64))
                .collect()
        };
        {
            let inbound = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(inbound.values().map(|s| s.info(0)));
        }
        out.sort_by(|a, b| {
            (&a.remote, a.direction, &a.since).cmp(&(&b.remote, b.direction, &b.since))
        });
        out
    }

    /// Established streams: (inbound, outbound).
    pub fn established_counts(&self) -> (usize, usize) {
        let out = {
            let links = self.links.lock().unwrap_or_else(|e| e.into_inner());
            links
                .values()
                .filter(|l| l.stats.view().established)
                .count()
        };
        let inbound = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
        let inb = inbound.values().filter(|s| s.view().established).count();
        (inb, out)
    }

    /// Closes every link and stream with `peer` gracefully: an outbound link writes what is
    /// queued for it, then `</stream:stream>` (a link still connecting bounces its queue to
    /// the senders instead); an inbound stream is ended with `</stream:stream>`, and stanzas
    /// the peer already sent are still delivered. New stanzas for `peer` open a new link.
    /// Waits up to `wait` for the streams to end; returns what was closed (empty when nothing
    /// was open with `peer`).
    pub async fn drain(&self, peer: &str, wait: Duration) -> Vec<Drained> {
        let peer = peer.trim_end_matches('.').to_ascii_lowercase();
        let mut found: Vec<(Arc<LinkStats>, LinkInfo)> = Vec::new();
        {
            let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<(String, String)> =
                links.keys().filter(|k| k.1 == peer).cloned().collect();
            for k in keys {
                if let Some(l) = links.remove(&k) {
                    let info = l.stats.info(l.pending.load(Ordering::SeqCst) as u64);
                    found.push((l.stats.clone(), info));
                }
            }
        }
        {
            let inbound = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
            for s in inbound.values() {
                if s.view().peer == peer {
                    found.push((s.clone(), s.info(0)));
                }
            }
        }
        for (s, _) in &found {
            s.drain.send_replace(true);
        }
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        for (s, link) in found {
            let mut done = s.done.subscribe();
            let closed = tokio::time::timeout_at(deadline, done.wait_for(|d| *d))
                .await
                .is_ok_and(|r| r.is_ok());
            out.push(Drained {
                link,
                flushed: s.flushed.load(Ordering::Relaxed),
                bounced: s.bounced.load(Ordering::Relaxed),
                closed,
            });
        }
        tracing::info!(%peer, streams = out.len(), "drained federation links");
        out
    }

    /// Follows changes of the federation settings until `shutdown`: the links and streams
    /// with a domain that is no longer permitted, or whose settings (TLS, routes, profile)
    /// changed, are drained, so that new stanzas bounce or go over a link made with the new
    /// settings; contacts of domains no longer permitted become unavailable
    /// ([`Hub::federation_changed`]).
    pub async fn follow_federation(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut rx = self.federation.subscribe();
        let mut old = rx.borrow_and_update().clone();
        loop {
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                }
                _ = crate::federation::stopped(&mut shutdown) => return,
            }
            let new = rx.borrow_and_update().clone();
            let mut peers: Vec<String> = self
                .links()
                .into_iter()
                .map(|l| l.remote)
                .filter(|p| !p.is_empty())
                .collect();
            peers.sort();
            peers.dedup();
            for peer in peers {
                let forbidden = !new.allowed(&peer) || new.sip_peer(&peer).is_some();
                let changed = old.peer(&peer) != new.peer(&peer);
                if forbidden || changed {
                    tracing::info!(%peer, forbidden, changed, "federation settings changed: draining the links");
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.drain(&peer, Duration::from_secs(10)).await;
                    });
                }
            }
            if let Some(hub) = self.hub() {
                hub.federation_changed(&new).await;
            }
            old = new;
        }
    }

    /// Bounces a stanza that federation could not deliver.
    async fn bounce(&self, el: &Element, cond: &str, text: &str) {
        let Some(hub) = self.hub() else { return };
        let is_presence = el.name == "presence";
        if is_presence && el.get_attr("type") != Some("subscribe") {
            return;
        }
        if let Some(mut r) = error_reply(el, ErrorType::Cancel, cond, Some(text)) {
            retarget(&mut r, NS_SERVER, NS_CLIENT);
            if let Err(e) = hub.route(r).await {
                tracing::error!(error = %e, "store error while bouncing");
            }
        }
    }
}

impl RemoteRouter for S2s {
    fn send(&self, stanza: Element) -> Result<(), RemoteError> {
        let r = self.queue_stanza(stanza);
        if let Err(e) = &r {
            self.count_bounce(match e {
                RemoteError::Timeout(_) => "queue-full",
                RemoteError::NotFound(_) => "policy",
            });
        }
        r
    }
}

impl S2s {
    /// Hands a stanza to the link for its domain, creating the link if there is none.
    fn queue_stanza(&self, mut stanza: Element) -> Result<(), RemoteError> {
        if let Some(profile) = stanza
            .get_attr("to")
            .and_then(|t| Jid::parse(t).ok())
            .and_then(|t| {
                self.federation
                    .view()
                    .peer(t.domain())
                    .and_then(|p| p.presence_profile())
            })
        {
            crate::presence_map::to_peer(&mut stanza, profile);
        }
        let (Some(from), Some(to)) = (
            stanza.get_attr("from").and_then(|f| Jid::parse(f).ok()),
            stanza.get_attr("to").and_then(|t| Jid::parse(t).ok()),
        ) else {
            return Err(RemoteError::NotFound(
                "the stanza has no valid addresses".into(),
            ));
        };
        let local = from.domain().to_string();
        let remote = to.domain().to_string();
        if local != self.cfg.domain {
            // Never relay between two foreign domains.
            return Err(RemoteError::NotFound(format!(
                "{local} is not a domain of this server"
            )));
        }
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
        let Some(me) = self.me.upgrade() else {
            return Err(RemoteError::NotFound("federation is shutting down".into()));
        };
        let key = (local.clone(), remote.clone());
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(link) = links.get(&key) {
            let full = || {
                RemoteError::Timeout(format!(
                    "too many stanzas are waiting for {remote}, which is not answering"
                ))
            };
            // Counted before it is sent, so the link task never decrements below zero.
            if link.pending.fetch_add(1, Ordering::SeqCst) >= self.cfg.s2s.queue_max.max(1) {
                link.pending.fetch_sub(1, Ordering::SeqCst);
                return Err(full());
            }
            match link.tx.try_send(stanza) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    link.pending.fetch_sub(1, Ordering::SeqCst);
                    return Err(full());
                }
                Err(mpsc::error::TrySendError::Closed(s)) => {
                    links.remove(&key);
                    return self.spawn_link(&mut links, key, s, me);
                }
            }
        }
        self.spawn_link(&mut links, key, stanza, me)
    }
}

impl S2s {
    fn spawn_link(
        &self,
        links: &mut HashMap<(String, String), LinkTx>,
        key: (String, String),
        first: Element,
        me: Arc<S2s>,
    ) -> Result<(), RemoteError> {
        let (tx, mut rx) = mpsc::channel(self.cfg.s2s.queue_max.max(1));
        let _ = tx.try_send(first);
        let pending = Arc::new(AtomicUsize::new(1));
        let stats = LinkStats::new("out", &key.0, &key.1);
        links.insert(
            key.clone(),
            LinkTx {
                tx: tx.clone(),
                pending: pending.clone(),
                stats: stats.clone(),
            },
        );
        // The span is attached to the task (not entered and dropped), so every line the link
        // logs names its domains.
        let span = tracing::info_span!("s2s-out", local = %key.0, remote = %key.1);
        tokio::spawn(
            async move {
                me.clone()
                    .run_link(key.0.clone(), key.1.clone(), &mut rx, &pending, &stats)
                    .await;
                stats.done.send_replace(true);
                {
                    let mut links = me.links.lock().unwrap_or_else(|e| e.into_inner());
                    if links.get(&key).is_some_and(|t| t.tx.same_channel(&tx)) {
                        links.remove(&key);
                    }
                }
                // Stanzas that raced in while the link was ending (it found the channel empty,
                // then `send` queued more before the link left the map) go out on a new link
                // instead of being dropped with the channel.
                drop(tx);
                rx.close();
                while let Ok(el) = rx.try_recv() {
                    pending.fetch_sub(1, Ordering::SeqCst);
                    if let Err(e) = me.send(el.clone()) {
                        let (cond, text) = match &e {
                            RemoteError::NotFound(t) => ("remote-server-not-found", t),
                            RemoteError::Timeout(t) => ("remote-server-timeout", t),
                        };
                        me.bounce(&el, cond, text).await;
                    }
                }
            }
            .instrument(span),
        );
        Ok(())
    }

    /// Drives one outbound link until it is idle, has given up, or is drained.
    async fn run_link(
        self: Arc<Self>,
        local: String,
        remote: String,
        rx: &mut mpsc::Receiver<Element>,
        pending: &AtomicUsize,
        stats: &LinkStats,
    ) {
        let mut drain = stats.drain.subscribe();
        let mut queue: VecDeque<Element> = VecDeque::new();
        let mut first_failure: Option<Instant> = None;
        let mut backoff = Duration::from_millis(500);
        let retry_for = Duration::from_secs(self.cfg.s2s.retry_timeout_secs);
        loop {
            while let Ok(el) = rx.try_recv() {
                queue.push_back(el);
            }
            if queue.is_empty() {
                // Wait for work, or end after being idle.
                tokio::select! {
                    r = tokio::time::timeout(
                        Duration::from_secs(self.cfg.s2s.idle_timeout_secs),
                        rx.recv(),
                    ) => match r {
                        Ok(Some(el)) => queue.push_back(el),
                        _ => return,
                    },
                    _ = drained(&mut drain) => {
                        self.bounce_drained(&remote, &mut queue, rx, pending, stats).await;
                        return;
                    }
                }
            }
            let conn = tokio::select! {
                c = self.connect_out(&local, &remote, Purpose::Traffic) => c,
                _ = drained(&mut drain) => {
                    self.bounce_drained(&remote, &mut queue, rx, pending, stats).await;
                    return;
                }
            };
            match conn {
                Ok(conn) => {
                    first_failure = None;
                    backoff = Duration::from_millis(500);
                    tracing::info!(auth = conn.auth.as_str(), "federation link up");
                    let tls = matches!(conn.io, Conn::Tls(_));
                    stats.update(|v| {
                        v.established = true;
                        v.auth = Some(conn.auth);
                        v.tls = tls;
                        v.since = crate::hub::rfc3339_now();
                    });
                    let idle = self
                        .run_connected(&remote, conn, &mut queue, rx, pending, stats, &mut drain)
                        .await;
                    stats.update(|v| {
                        v.established = false;
                        v.auth = None;
                        v.tls = false;
                        v.since = crate::hub::rfc3339_now();
                    });
                    if idle {
                        return;
                    }
                    // The connection broke: ask the domain's contacts for their presence
                    // again, which also makes this link reconnect (or give up and report the
                    // domain lost).
                    if let Some(hub) = self.hub() {
                        hub.probe_remote_domain(&remote).await;
                    }
                }
                Err(reason) => {
                    let started = *first_failure.get_or_insert_with(Instant::now);
                    tracing::warn!(reason = %reason.text, "cannot reach the foreign domain");
                    if started.elapsed() >= retry_for {
                        let (cond, label) = if reason.timeout {
                            ("remote-server-timeout", "timeout")
                        } else {
                            ("remote-server-not-found", "unreachable")
                        };
                        while let Ok(el) = rx.try_recv() {
                            queue.push_back(el);
                        }
                        for el in queue.drain(..) {
                            pending.fetch_sub(1, Ordering::SeqCst);
                            self.count_bounce(label);
                            self.bounce(&el, cond, &reason.text).await;
                        }
                        if let Some(hub) = self.hub() {
                            hub.remote_domain_lost(&remote).await;
                        }
                        return;
                    }
                    // Keep what arrives meanwhile (at most queue_max in all, counted by
                    // `pending`); wait and retry.
                    let wait = backoff
                        .min(retry_for.saturating_sub(started.elapsed()))
                        .max(Duration::from_millis(100));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = drained(&mut drain) => {
                            self.bounce_drained(&remote, &mut queue, rx, pending, stats).await;
                            return;
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// A link drained before it was established: what waits for it goes back to the senders
    /// with an error (the link has left the map already, so nothing more arrives).
    async fn bounce_drained(
        &self,
        remote: &str,
        queue: &mut VecDeque<Element>,
        rx: &mut mpsc::Receiver<Element>,
        pending: &AtomicUsize,
        stats: &LinkStats,
    ) {
        while let Ok(el) = rx.try_recv() {
            queue.push_back(el);
        }
        let text =
            format!("an administrator closed the link to {remote} before it was established");
        for el in queue.drain(..) {
            pending.fetch_sub(1, Ordering::SeqCst);
            stats.bounced.fetch_add(1, Ordering::Relaxed);
            self.count_bounce("drained");
            self.bounce(&el, "remote-server-not-found", &text).await;
        }
    }

    /// Sends queued and new stanzas over an established link. Returns true when the link closed
    /// for being idle or was drained (the task may end), false when the connection broke with
    /// work pending.
    ///
    /// Every write is bounded by `s2s.write_timeout_secs`: a peer that stops reading cannot hold
    /// the task. When a write fails or times out, the stanzas it carried are bounced to their
    /// senders (the peer may have received some of them: TCP cannot tell), and the connection
    /// is dropped; stanzas still queued go out on the next connection.
    #[allow(clippy::too_many_arguments)]
    async fn run_connected(
        &self,
        remote: &str,
        mut conn: OutConn,
        queue: &mut VecDeque<Element>,
        rx: &mut mpsc::Receiver<Element>,
        pending: &AtomicUsize,
        stats: &LinkStats,
        drain: &mut watch::Receiver<bool>,
    ) -> bool {
        let idle = Duration::from_secs(self.cfg.s2s.idle_timeout_secs);
        let metrics = self.hub().map(|h| h.metrics.clone());
        let sent = |el: &Element| {
            stats.stanzas_out.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &metrics {
                m.s2s_sent(&el.name);
            }
        };
        let write_timeout = self.write_timeout();
        let mut buf = vec![0u8; 8192];
        let mut deadline = Instant::now() + idle;
        loop {
            let in_flight: Vec<Element> = queue.drain(..).collect();
            for el in &in_flight {
                conn.stream.send_stanza(el);
            }
            let out = conn.stream.take_output();
            let written = if out.is_empty() {
                Ok(())
            } else {
                write_within(&mut conn.io, &out, write_timeout).await
            };
            for el in &in_flight {
                pending.fetch_sub(1, Ordering::SeqCst);
                match &written {
                    Ok(()) => sent(el),
                    Err(e) => {
                        let (cond, label, text) = write_failure(remote, e, write_timeout);
                        self.count_bounce(label);
                        self.bounce(el, cond, &text).await;
                    }
                }
            }
            if let Err(e) = written {
                tracing::warn!(error = %e, bounced = in_flight.len(), "writing to the federation link failed; dropping the connection");
                return false;
            }
            if !out.is_empty() {
                deadline = Instant::now() + idle;
            }
            if conn.stream.is_closed() {
                return queue.is_empty() && rx.is_empty();
            }
            tokio::select! {
                n = conn.io.read(&mut buf) => match n {
                    Ok(0) | Err(_) => {
                        conn.stream.eof();
                        return false;
                    }
                    Ok(n) => conn.stream.receive(&buf[..n]),
                },
                el = rx.recv() => match el {
                    Some(el) => queue.push_back(el),
                    None => return true,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    conn.stream.close();
                    let out = conn.stream.take_output();
                    let _ = write_within(&mut conn.io, &out, write_timeout).await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn.io.shutdown()).await;
                    // Anything that raced in is carried by a new connection.
                    return rx.is_empty();
                }
                _ = drained(drain) => {
                    // The link has left the map, so what it holds now is all it will get:
                    // write it, then end the stream.
                    stats.update(|v| v.closing = true);
                    while let Ok(el) = rx.try_recv() {
                        queue.push_back(el);
                    }
                    let last: Vec<Element> = queue.drain(..).collect();
                    for el in &last {
                        conn.stream.send_stanza(el);
                    }
                    conn.stream.close();
                    let out = conn.stream.take_output();
                    // Bounded like every write: a peer that does not read cannot keep the drain
                    // (and the admin API's answer) waiting.
                    let written = write_within(&mut conn.io, &out, write_timeout).await;
                    let ok = written.is_ok();
                    if let Err(e) = &written {
                        tracing::warn!(error = %e, bounced = last.len(), "the drained federation link did not take its last stanzas");
                    }
                    for el in &last {
                        pending.fetch_sub(1, Ordering::SeqCst);
                        match &written {
                            Ok(()) => {
                                sent(el);
                                stats.flushed.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                stats.bounced.fetch_add(1, Ordering::Relaxed);
                                self.count_bounce("drained");
                                let (cond, _, text) = write_failure(remote, e, write_timeout);
                                let text = format!("{text} (an administrator was closing the link)");
                                self.bounce(el, cond, &text).await;
                            }
                        }
                    }
                    if ok {
                        // Give the peer a moment to close its side (RFC 6120 §4.4).
                        let _ = tokio::time::timeout(Duration::from_secs(5), async {
                            while let Ok(n) = conn.io.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                            }
                        })
                        .await;
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn.io.shutdown()).await;
                    tracing::info!(flushed = last.len(), "federation link drained by an administrator");
                    return true;
                }
            }
            while let Some(ev) = conn.stream.poll_event() {
                if let S2sOutEvent::Closed { reason } = ev {
                    tracing::info!(
                        reason = reason.as_deref().unwrap_or("closed"),
                        "federation link closed"
                    );
                }
            }
        }
    }

    /// Connects to `remote` and negotiates a stream for `purpose`, trying every candidate.
    async fn connect_out(
        &self,
        local: &str,
        remote: &str,
        purpose: Purpose,
    ) -> Result<OutConn, Failure> {
        let candidates = self.locator.xmpp_server(remote).await.map_err(|e| Failure {
            text: format!("DNS: {e}"),
            timeout: matches!(e, entente_dns::Error::Timeout { .. }),
            kind: "dns",
        });
        let candidates = match candidates {
            Ok(c) => c,
            Err(e) => {
                self.count_handshake_failure(e.kind);
                return Err(e);
            }
        };
        let mut last = Failure {
            text: format!("no server found for {remote}"),
            timeout: false,
            kind: "dns",
        };
        for cand in &candidates {
            for addr in &cand.addrs {
                let t = Duration::from_secs(self.cfg.s2s.connect_timeout_secs);
                match tokio::time::timeout(
                    t,
                    self.try_candidate(local, remote, cand, *addr, purpose.clone()),
                )
                .await
                {
                    Ok(Ok(c)) => return Ok(c),
                    Ok(Err(e)) => {
                        tracing::debug!(candidate = %cand, %addr, error = %e.text, "candidate failed");
                        last = e;
                    }
                    Err(_) => {
                        last = Failure {
                            text: format!("{cand} ({addr}) did not answer within {}s", t.as_secs()),
                            timeout: true,
                            kind: "timeout",
                        }
                    }
                }
            }
        }
        self.count_handshake_failure(last.kind);
        Err(last)
    }

    async fn try_candidate(
        &self,
        local: &str,
        remote: &str,
        cand: &Candidate,
        addr: std::net::SocketAddr,
        purpose: Purpose,
    ) -> Result<OutConn, Failure> {
        let fail = |kind: &'static str, text: String| Failure {
            text,
            timeout: false,
            kind,
        };
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| fail("connect", format!("connect to {cand} ({addr}): {e}")))?;
        let _ = tcp.set_nodelay(true);
        let strict = self.cfg.s2s.secure_auth;
        let (tls_cfg, cert_slot) = crate::tls::s2s_client_config(&self.roots, &self.id, strict)
            .map_err(|e| fail("tls", format!("TLS set-up: {e:#}")))?;
        let connector = tokio_rustls::TlsConnector::from(tls_cfg);
        let server_name = ServerName::try_from(remote.to_string())
            .map_err(|e| fail("tls", format!("bad domain {remote}: {e}")))?;
        let direct = cand.is_direct_tls();
        let mut io = if direct {
            let s = connector
                .connect(server_name.clone(), tcp)
                .await
                .map_err(|e| fail("tls", format!("TLS with {cand}: {e}")))?;
            Conn::Tls(Box::new(s))
        } else {
            Conn::Plain(tcp)
        };
        let mut stream = S2sOut::new(S2sOutConfig {
            local: local.to_string(),
            remote: remote.to_string(),
            tls: self.tls_policy(remote),
            direct_tls: direct,
            has_client_cert: true,
            secret: self.secret.clone(),
            purpose,
            limits: self.limits(),
        });
        if direct {
            stream.set_cert_ok(cert_slot.lock().map(|g| *g == Some(true)).unwrap_or(false));
        }
        let mut buf = vec![0u8; 8192];
        loop {
            let out = stream.take_output();
            if !out.is_empty() {
                io.write_all(&out)
                    .await
                    .map_err(|e| fail("connect", format!("write to {cand}: {e}")))?;
                io.flush()
                    .await
                    .map_err(|e| fail("connect", format!("write to {cand}: {e}")))?;
            }
            while let Some(ev) = stream.poll_event() {
                match ev {
                    S2sOutEvent::StartTls => {
                        let Conn::Plain(tcp) = std::mem::replace(&mut io, Conn::Gone) else {
                            return Err(fail("tls", "STARTTLS twice".into()));
                        };
                        let s = connector
                            .connect(server_name.clone(), tcp)
                            .await
                            .map_err(|e| fail("tls", format!("TLS with {cand}: {e}")))?;
                        io = Conn::Tls(Box::new(s));
                        let ok = cert_slot.lock().map(|g| *g == Some(true)).unwrap_or(false);
                        if !ok && self.cfg.s2s.secure_auth {
                            return Err(fail(
                                "tls",
                                format!("the certificate of {cand} is not valid for {remote}"),
                            ));
                        }
                        stream.tls_established(ok);
                        let out = stream.take_output();
                        io.write_all(&out)
                            .await
                            .map_err(|e| fail("connect", format!("write to {cand}: {e}")))?;
                        io.flush()
                            .await
                            .map_err(|e| fail("connect", format!("write to {cand}: {e}")))?;
                    }
                    S2sOutEvent::Ready(auth) => {
                        if auth == AuthMethod::Dialback && self.cfg.s2s.secure_auth {
                            return Err(fail("auth", format!("{remote} could only authenticate us with dialback, which secure_auth forbids")));
                        }
                        return Ok(OutConn {
                            io,
                            stream,
                            auth,
                            verified: None,
                        });
                    }
                    S2sOutEvent::Verified { valid } => {
                        return Ok(OutConn {
                            io,
                            stream,
                            auth: AuthMethod::Dialback,
                            verified: Some(valid),
                        })
                    }
                    S2sOutEvent::Closed { reason } => {
                        return Err(fail(
                            "auth",
                            format!(
                                "authentication with {remote} failed: {}",
                                reason.unwrap_or_else(|| "the stream was closed".into())
                            ),
                        ))
                    }
                    _ => {}
                }
            }
            let n = io
                .read(&mut buf)
                .await
                .map_err(|e| fail("connect", format!("read from {cand}: {e}")))?;
            if n == 0 {
                stream.eof();
            } else {
                stream.receive(&buf[..n]);
            }
        }
    }

    /// Asks `originating`'s authoritative server whether `key` is valid (XEP-0220 §2.3).
    async fn verify_dialback(
        self: Arc<Self>,
        receiving: String,
        originating: String,
        key: String,
        stream_id: String,
    ) -> bool {
        let purpose = Purpose::Verify { key, stream_id };
        match tokio::time::timeout(
            Duration::from_secs(self.cfg.s2s.connect_timeout_secs * 2),
            self.connect_out(&receiving, &originating, purpose),
        )
        .await
        {
            Ok(Ok(mut conn)) => {
                let out = conn.stream.take_output();
                let _ = write_within(&mut conn.io, &out, self.write_timeout()).await;
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.io.shutdown()).await;
                conn.verified == Some(true)
            }
            Ok(Err(e)) => {
                tracing::info!(domain = %originating, reason = %e.text, "dialback verification failed");
                false
            }
            Err(_) => false,
        }
    }

    // ---- inbound ----

    /// Accepts server-to-server connections until shutdown.
    pub async fn listen(
        self: Arc<Self>,
        listener: TcpListener,
        direct_tls: bool,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let acceptor = match crate::tls::s2s_server_config(&self.id) {
            Ok(c) => tokio_rustls::TlsAcceptor::from(c),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot set up s2s TLS");
                return;
            }
        };
        loop {
            tokio::select! {
                a = listener.accept() => {
                    let Ok((sock, peer)) = a else { continue };
                    let me = self.clone();
                    let acceptor = acceptor.clone();
                    let shutdown = shutdown.clone();
                    let span = tracing::info_span!("s2s-in", %peer);
                    tokio::spawn(async move {
                        let mut summary = InboundSummary::default();
                        if let Err(e) = me.clone().run_inbound(sock, acceptor, direct_tls, shutdown, &mut summary).await {
                            tracing::debug!(error = %format!("{e:#}"), "inbound federation connection ended");
                        }
                        // A stream that broke (rather than closed) may mean the peer is gone:
                        // probe its contacts; if it cannot be reached, they become unavailable.
                        if !summary.clean {
                            if let Some(hub) = me.hub() {
                                for d in &summary.domains {
                                    hub.probe_remote_domain(d).await;
                                }
                            }
                        }
                    }.instrument(span));
                }
                _ = shutdown.changed() => if *shutdown.borrow() { return },
            }
        }
    }

    async fn run_inbound(
        self: Arc<Self>,
        sock: TcpStream,
        acceptor: tokio_rustls::TlsAcceptor,
        direct_tls: bool,
        mut shutdown: watch::Receiver<bool>,
        summary: &mut InboundSummary,
    ) -> Result<()> {
        let _ = sock.set_nodelay(true);
        let hs = Duration::from_secs(self.cfg.s2s.connect_timeout_secs.max(5));
        let plain_allowed: HashSet<String> = self
            .cfg
            .s2s
            .peer
            .iter()
            .filter(|p| p.tls != PeerTls::Required)
            .map(|p| p.domain.to_ascii_lowercase())
            .collect();
        let mut stream = S2sIn::new(S2sInConfig {
            local_domains: vec![self.cfg.domain.clone()],
            tls_available: true,
            plain_allowed,
            direct_tls,
            secret: self.secret.clone(),
            limits: self.limits(),
        });
        let mut io = if direct_tls {
            let s = tokio::time::timeout(hs, acceptor.accept(sock)).await??;
            let names = peer_names(&self.roots, s.get_ref().1.peer_certificates());
            stream.set_cert_names(names);
            Conn::ServerTls(Box::new(s))
        } else {
            Conn::Plain(sock)
        };
        let Some(hub) = self.hub() else { return Ok(()) };
        let stats = LinkStats::new("in", &self.cfg.domain, "");
        stats.update(|v| v.tls = direct_tls);
        let _registered = InboundEntry::register(&self, stats.clone());
        let mut drain = stats.drain.subscribe();
        let mut closing = false;
        let mut failure_counted = false;
        let (vtx, mut vrx) = mpsc::channel::<(String, String, bool)>(16);
        let mut buf = vec![0u8; 8192];
        let rate = f64::from(self.cfg.s2s.max_stanzas_per_second);
        let mut tokens = rate * 2.0;
        let mut last = Instant::now();
        let idle = Duration::from_secs(self.cfg.s2s.idle_timeout_secs.max(60));
        let write_timeout = self.write_timeout();
        let mut deadline = Instant::now() + hs * 6;
        loop {
            let out = stream.take_output();
            if !out.is_empty() {
                write_within(&mut io, &out, write_timeout).await?;
            }
            if stream.is_closed() {
                if stream.peer_closed() {
                    // `</stream:stream>` from the peer: an orderly end, nothing to probe.
                    summary.clean = true;
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), io.shutdown()).await;
                return Ok(());
            }
            tokio::select! {
                n = io.read(&mut buf) => {
                    let n = n?;
                    if n == 0 {
                        stream.eof()
                    } else {
                        stream.receive(&buf[..n]);
                        if !closing {
                            deadline = Instant::now() + idle;
                        }
                    }
                    if let Some(claim) = stream.peer_claim() {
                        if stats.view().peer.is_empty() {
                            stats.update(|v| v.peer = claim.to_string());
                        }
                    }
                }
                v = vrx.recv() => if let Some((orig, recv, valid)) = v {
                    if !valid {
                        self.count_handshake_failure("dialback");
                        failure_counted = true;
                    }
                    stream.dialback_verified(&orig, &recv, valid);
                },
                _ = drained(&mut drain), if !closing => {
                    // End our side; what the peer already sent is still read and delivered
                    // until it closes its side, or for 5 seconds.
                    closing = true;
                    summary.clean = true;
                    stats.update(|v| v.closing = true);
                    stream.close();
                    deadline = Instant::now() + Duration::from_secs(5);
                    tracing::info!("inbound federation stream drained by an administrator");
                },
                _ = tokio::time::sleep_until(deadline) => {
                    summary.clean = true;
                    stream.close_with_error(StreamErrorCondition::ConnectionTimeout, None);
                }
                _ = shutdown.changed() => if *shutdown.borrow() {
                    summary.clean = true;
                    stream.close_with_error(StreamErrorCondition::SystemShutdown, None);
                },
            }
            while let Some(ev) = stream.poll_event() {
                match ev {
                    S2sInEvent::StartTls => {
                        let out = stream.take_output();
                        write_within(&mut io, &out, write_timeout).await?;
                        let Conn::Plain(tcp) = std::mem::replace(&mut io, Conn::Gone) else {
                            anyhow::bail!("STARTTLS twice");
                        };
                        let s = tokio::time::timeout(hs, acceptor.accept(tcp)).await??;
                        let names = peer_names(&self.roots, s.get_ref().1.peer_certificates());
                        io = Conn::ServerTls(Box::new(s));
                        stream.tls_established(names);
                        stats.update(|v| v.tls = true);
                    }
                    S2sInEvent::DialbackVerify {
                        originating,
                        receiving,
                        key,
                        stream_id,
                    } => {
                        if !self.federation.view().allowed(&originating)
                            || self.cfg.s2s.secure_auth
                            || !self.cfg.s2s.enabled
                        {
                            tracing::info!(domain = %originating, "refusing a federation request (policy)");
                            self.count_handshake_failure("policy");
                            failure_counted = true;
                            stream.dialback_verified(&originating, &receiving, false);
                            continue;
                        }
                        let me = self.clone();
                        let vtx = vtx.clone();
                        let span = tracing::info_span!("s2s-verify", local = %receiving, remote = %originating);
                        tokio::spawn(
                            async move {
                                let ok = me
                                    .verify_dialback(
                                        receiving.clone(),
                                        originating.clone(),
                                        key,
                                        stream_id,
                                    )
                                    .await;
                                let _ = vtx.send((originating, receiving, ok)).await;
                            }
                            .instrument(span),
                        );
                    }
                    S2sInEvent::Authenticated { domain, method } => {
                        if !self.federation.view().allowed(&domain) || !self.cfg.s2s.enabled {
                            tracing::info!(%domain, "refusing a federated domain (policy)");
                            self.count_handshake_failure("policy");
                            failure_counted = true;
                            stream.close_with_error(
                                StreamErrorCondition::PolicyViolation,
                                Some("federation with your domain is not permitted"),
                            );
                        } else {
                            tracing::info!(%domain, method = method.as_str(), "inbound federation stream authenticated");
                            let first = summary.domains.is_empty();
                            stats.update(|v| {
                                if first {
                                    v.peer = domain.clone();
                                    v.since = crate::hub::rfc3339_now();
                                }
                                v.established = true;
                                v.auth = Some(method);
                                v.tls = stream.is_tls();
                            });
                            summary.domains.push(domain);
                        }
                    }
                    S2sInEvent::Stanza(mut el) => {
                        let now = Instant::now();
                        tokens = (tokens + now.duration_since(last).as_secs_f64() * rate)
                            .min(rate * 2.0);
                        last = now;
                        if tokens < 1.0 {
                            stream.close_with_error(
                                StreamErrorCondition::PolicyViolation,
                                Some("too many stanzas per second"),
                            );
                            continue;
                        }
                        tokens -= 1.0;
                        retarget(&mut el, NS_SERVER, NS_CLIENT);
                        if let Some(profile) = el
                            .get_attr("from")
                            .and_then(|f| Jid::parse(f).ok())
                            .and_then(|f| {
                                self.federation
                                    .view()
                                    .peer(f.domain())
                                    .and_then(|p| p.presence_profile())
                            })
                        {
                            crate::presence_map::from_peer(&mut el, profile);
                        }
                        stats.stanzas_in.fetch_add(1, Ordering::Relaxed);
                        hub.metrics.stanza_in(crate::metrics::Source::S2s, &el.name);
                        if let Err(e) = hub.route(el).await {
                            tracing::error!(error = %e, "store error while handling a federated stanza");
                        }
                    }
                    S2sInEvent::Closed { error: Some(e) } => {
                        tracing::info!(condition = %e, "inbound federation stream closed with an error");
                        if summary.domains.is_empty() && !failure_counted && !closing {
                            self.count_handshake_failure("stream-error");
                            failure_counted = true;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// An inbound stream's place in [`S2s::links`], for as long as its task runs.
struct InboundEntry {
    s2s: Arc<S2s>,
    id: u64,
    stats: Arc<LinkStats>,
}

impl InboundEntry {
    fn register(s2s: &Arc<S2s>, stats: Arc<LinkStats>) -> InboundEntry {
        let id = s2s.next_inbound.fetch_add(1, Ordering::Relaxed);
        s2s.inbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, stats.clone());
        InboundEntry {
            s2s: s2s.clone(),
            id,
            stats,
        }
    }
}

impl Drop for InboundEntry {
    fn drop(&mut self) {
        self.s2s
            .inbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        self.stats.done.send_replace(true);
    }
}

/// What the listener needs to know once an inbound stream is over.
#[derive(Default)]
struct InboundSummary {
    /// Domains authenticated on the stream.
    domains: Vec<String>,
    /// The stream ended in order (the peer closed it, or we did for idleness or shutdown).
    clean: bool,
}

struct Failure {
    text: String,
    timeout: bool,
    /// The `reason` label of `entente_s2s_handshake_failures_total`.
    kind: &'static str,
}

struct OutConn {
    io: Conn,
    stream: S2sOut,
    auth: AuthMethod,
    verified: Option<bool>,
}

/// Writes `out` and flushes it within `limit`, so that a peer that stops reading cannot hold
/// the task forever; on expiry the error is `TimedOut` (the caller drops the connection).
async fn write_within<W: AsyncWrite + Unpin>(
    io: &mut W,
    out: &[u8],
    limit: Duration,
) -> std::io::Result<()> {
    let write = async {
        io.write_all(out).await?;
        io.flush().await
    };
    match tokio::time::timeout(limit, write).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the peer did not take the data within {} s",
                limit.as_secs()
            ),
        )),
    }
}

/// The bounce of a stanza whose write failed: (condition, bounce-metrics reason, text).
fn write_failure(
    remote: &str,
    e: &std::io::Error,
    limit: Duration,
) -> (&'static str, &'static str, String) {
    if e.kind() == std::io::ErrorKind::TimedOut {
        (
            "remote-server-timeout",
            "timeout",
            format!(
                "{remote} did not accept data for {} seconds; the federation link was dropped",
                limit.as_secs()
            ),
        )
    } else {
        (
            "remote-server-not-found",
            "other",
            format!("the federation link to {remote} broke while sending: {e}"),
        )
    }
}

fn peer_names(
    roots: &Arc<RootCertStore>,
    certs: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> Vec<String> {
    match certs {
        Some(c) => crate::tls::valid_names(roots, c),
        None => Vec::new(),
    }
}

/// Moves a stanza between the `jabber:server` and `jabber:client` namespaces.
fn retarget(e: &mut Element, from: &str, to: &str) {
    if e.ns == from {
        e.ns = to.to_string();
    }
    for c in &mut e.children {
        if let Node::Element(child) = c {
            retarget(child, from, to);
        }
    }
}

/// A federation socket: plain TCP, or TLS as either side.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Gone,
}

macro_rules! conn_dispatch {
    ($self:ident, $s:ident => $e:expr, $gone:expr) => {
        match $self.get_mut() {
            Conn::Plain($s) => {
                let $s = std::pin::Pin::new($s);
                $e
            }
            Conn::Tls($s) => {
                let $s = std::pin::Pin::new($s.as_mut());
                $e
            }
            Conn::ServerTls($s) => {
                let $s = std::pin::Pin::new($s.as_mut());
                $e
            }
            Conn::Gone => $gone,
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        conn_dispatch!(self, s => s.poll_read(cx, buf), std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        conn_dispatch!(self, s => s.poll_write(cx, buf), std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        conn_dispatch!(self, s => s.poll_flush(cx), std::task::Poll::Ready(Ok(())))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        conn_dispatch!(self, s => s.poll_shutdown(cx), std::task::Poll::Ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real socket whose peer never reads: the write gives up after the limit, with
    /// `TimedOut`, instead of waiting forever; a peer that reads gets everything.
    #[tokio::test]
    async fn writes_to_a_peer_that_does_not_read_time_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut out = TcpStream::connect(addr).await.unwrap();
        let (_stuck, _) = listener.accept().await.unwrap();
        // More than the kernel buffers of both ends together.
        let data = vec![b'x'; 64 << 20];
        let limit = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let e = write_within(&mut out, &data, limit).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        let (cond, label, text) = write_failure("b.test", &e, Duration::from_secs(30));
        assert_eq!((cond, label), ("remote-server-timeout", "timeout"));
        assert!(
            text.contains("b.test did not accept data for 30 seconds"),
            "{text}"
        );

        let mut out = TcpStream::connect(addr).await.unwrap();
        let (mut reader, _) = listener.accept().await.unwrap();
        let read = tokio::spawn(async move {
            let mut got = Vec::new();
            let _ = reader.read_to_end(&mut got).await;
            got.len()
        });
        let small = vec![b'y'; 1 << 20];
        write_within(&mut out, &small, Duration::from_secs(10))
            .await
            .unwrap();
        drop(out);
        assert_eq!(read.await.unwrap(), 1 << 20);
    }
}
