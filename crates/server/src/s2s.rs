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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
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

/// One live federation link, as the admin API and logs describe it.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    pub local: String,
    pub remote: String,
    pub direction: &'static str,
    pub auth: Option<AuthMethod>,
}

/// The federation service; the hub's [`RemoteRouter`].
pub struct S2s {
    cfg: Arc<Config>,
    locator: Locator,
    roots: Arc<RootCertStore>,
    id: Identity,
    secret: String,
    hub: OnceLock<Weak<Hub>>,
    /// A weak reference to ourselves, for the tasks `send` spawns.
    me: Weak<S2s>,
    links: Mutex<HashMap<(String, String), LinkTx>>,
}

/// The sending end of one outbound link.
struct LinkTx {
    tx: mpsc::Sender<Element>,
    /// Stanzas handed to the link and not yet written to a stream or bounced: the channel's
    /// content plus what the link task holds while it (re)connects. `queue_max` bounds it.
    pending: Arc<AtomicUsize>,
}

impl S2s {
    pub fn new(cfg: Arc<Config>, id: Identity) -> Result<Arc<S2s>> {
        let mut lc = entente_dns::LocatorConfig::default();
        for n in &cfg.dns.nameservers {
            lc.nameservers
                .push(n.parse().with_context(|| format!("dns.nameservers: {n}"))?);
        }
        if let Some(t) = cfg.dns.timeout_secs {
            lc.query_timeout = Duration::from_secs(t.max(1));
        }
        for p in &cfg.s2s.peer {
            for r in &p.routes {
                let route = r
                    .parse::<entente_dns::StaticRoute>()
                    .map_err(|e| anyhow!("s2s.peer {}: route {r}: {e}", p.domain))?;
                lc.add_static_route(&p.domain, route);
            }
        }
        let locator = Locator::new(lc).context("setting up the DNS resolver")?;
        let roots = crate::tls::root_store(cfg.s2s.ca_file.as_deref(), cfg.s2s.system_roots)?;
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut secret);
        Ok(Arc::new_cyclic(|me| S2s {
            cfg,
            locator,
            roots,
            id,
            secret: secret.iter().map(|b| format!("{b:02x}")).collect(),
            hub: OnceLock::new(),
            me: me.clone(),
            links: Mutex::new(HashMap::new()),
        }))
    }

    pub fn set_hub(&self, hub: &Arc<Hub>) {
        let _ = self.hub.set(Arc::downgrade(hub));
    }

    fn hub(&self) -> Option<Arc<Hub>> {
        self.hub.get().and_then(Weak::upgrade)
    }

    fn tls_policy(&self, domain: &str) -> TlsPolicy {
        match self.cfg.peer(domain).map(|p| p.tls) {
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
    fn send(&self, mut stanza: Element) -> Result<(), RemoteError> {
        if let Some(profile) = stanza
            .get_attr("to")
            .and_then(|t| Jid::parse(t).ok())
            .and_then(|t| self.cfg.peer(t.domain()).and_then(|p| p.presence_profile()))
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
        if !self.cfg.federation_allowed(&remote) {
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
        links.insert(
            key.clone(),
            LinkTx {
                tx: tx.clone(),
                pending: pending.clone(),
            },
        );
        // The span is attached to the task (not entered and dropped), so every line the link
        // logs names its domains.
        let span = tracing::info_span!("s2s-out", local = %key.0, remote = %key.1);
        tokio::spawn(
            async move {
                me.clone()
                    .run_link(key.0.clone(), key.1.clone(), &mut rx, &pending)
                    .await;
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

    /// Drives one outbound link until it is idle or has given up.
    async fn run_link(
        self: Arc<Self>,
        local: String,
        remote: String,
        rx: &mut mpsc::Receiver<Element>,
        pending: &AtomicUsize,
    ) {
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
                match tokio::time::timeout(
                    Duration::from_secs(self.cfg.s2s.idle_timeout_secs),
                    rx.recv(),
                )
                .await
                {
                    Ok(Some(el)) => queue.push_back(el),
                    _ => return,
                }
            }
            match self.connect_out(&local, &remote, Purpose::Traffic).await {
                Ok(conn) => {
                    first_failure = None;
                    backoff = Duration::from_millis(500);
                    tracing::info!(auth = conn.auth.as_str(), "federation link up");
                    let idle = self.run_connected(conn, &mut queue, rx, pending).await;
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
                        let cond = if reason.timeout {
                            "remote-server-timeout"
                        } else {
                            "remote-server-not-found"
                        };
                        while let Ok(el) = rx.try_recv() {
                            queue.push_back(el);
                        }
                        for el in queue.drain(..) {
                            pending.fetch_sub(1, Ordering::SeqCst);
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
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Sends queued and new stanzas over an established link. Returns true when the link closed
    /// for being idle (the task may end), false when the connection broke with work pending.
    async fn run_connected(
        &self,
        mut conn: OutConn,
        queue: &mut VecDeque<Element>,
        rx: &mut mpsc::Receiver<Element>,
        pending: &AtomicUsize,
    ) -> bool {
        let idle = Duration::from_secs(self.cfg.s2s.idle_timeout_secs);
        let mut buf = vec![0u8; 8192];
        let mut deadline = Instant::now() + idle;
        loop {
            while let Some(el) = queue.pop_front() {
                conn.stream.send_stanza(&el);
                pending.fetch_sub(1, Ordering::SeqCst);
            }
            let out = conn.stream.take_output();
            if !out.is_empty() {
                if conn.io.write_all(&out).await.is_err() || conn.io.flush().await.is_err() {
                    return false;
                }
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
                    let _ = conn.io.write_all(&out).await;
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn.io.shutdown()).await;
                    // Anything that raced in is carried by a new connection.
                    return rx.is_empty();
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
        let candidates = self
            .locator
            .xmpp_server(remote)
            .await
            .map_err(|e| Failure {
                text: format!("DNS: {e}"),
                timeout: matches!(e, entente_dns::Error::Timeout { .. }),
            })?;
        let mut last = Failure {
            text: format!("no server found for {remote}"),
            timeout: false,
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
                        }
                    }
                }
            }
        }
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
        let fail = |text: String| Failure {
            text,
            timeout: false,
        };
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| fail(format!("connect to {cand} ({addr}): {e}")))?;
        let _ = tcp.set_nodelay(true);
        let strict = self.cfg.s2s.secure_auth;
        let (tls_cfg, cert_slot) = crate::tls::s2s_client_config(&self.roots, &self.id, strict)
            .map_err(|e| fail(format!("TLS set-up: {e:#}")))?;
        let connector = tokio_rustls::TlsConnector::from(tls_cfg);
        let server_name = ServerName::try_from(remote.to_string())
            .map_err(|e| fail(format!("bad domain {remote}: {e}")))?;
        let direct = cand.is_direct_tls();
        let mut io = if direct {
            let s = connector
                .connect(server_name.clone(), tcp)
                .await
                .map_err(|e| fail(format!("TLS with {cand}: {e}")))?;
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
                    .map_err(|e| fail(format!("write to {cand}: {e}")))?;
                io.flush()
                    .await
                    .map_err(|e| fail(format!("write to {cand}: {e}")))?;
            }
            while let Some(ev) = stream.poll_event() {
                match ev {
                    S2sOutEvent::StartTls => {
                        let Conn::Plain(tcp) = std::mem::replace(&mut io, Conn::Gone) else {
                            return Err(fail("STARTTLS twice".into()));
                        };
                        let s = connector
                            .connect(server_name.clone(), tcp)
                            .await
                            .map_err(|e| fail(format!("TLS with {cand}: {e}")))?;
                        io = Conn::Tls(Box::new(s));
                        let ok = cert_slot.lock().map(|g| *g == Some(true)).unwrap_or(false);
                        if !ok && self.cfg.s2s.secure_auth {
                            return Err(fail(format!(
                                "the certificate of {cand} is not valid for {remote}"
                            )));
                        }
                        stream.tls_established(ok);
                        let out = stream.take_output();
                        io.write_all(&out)
                            .await
                            .map_err(|e| fail(format!("write to {cand}: {e}")))?;
                        io.flush()
                            .await
                            .map_err(|e| fail(format!("write to {cand}: {e}")))?;
                    }
                    S2sOutEvent::Ready(auth) => {
                        if auth == AuthMethod::Dialback && self.cfg.s2s.secure_auth {
                            return Err(fail(format!("{remote} could only authenticate us with dialback, which secure_auth forbids")));
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
                        return Err(fail(format!(
                            "authentication with {remote} failed: {}",
                            reason.unwrap_or_else(|| "the stream was closed".into())
                        )))
                    }
                    _ => {}
                }
            }
            let n = io
                .read(&mut buf)
                .await
                .map_err(|e| fail(format!("read from {cand}: {e}")))?;
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
                let _ = conn.io.write_all(&out).await;
                let _ = conn.io.shutdown().await;
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
        let (vtx, mut vrx) = mpsc::channel::<(String, String, bool)>(16);
        let mut buf = vec![0u8; 8192];
        let rate = f64::from(self.cfg.s2s.max_stanzas_per_second);
        let mut tokens = rate * 2.0;
        let mut last = Instant::now();
        let idle = Duration::from_secs(self.cfg.s2s.idle_timeout_secs.max(60));
        let mut deadline = Instant::now() + hs * 6;
        loop {
            let out = stream.take_output();
            if !out.is_empty() {
                io.write_all(&out).await?;
                io.flush().await?;
            }
            if stream.is_closed() {
                let _ = tokio::time::timeout(Duration::from_secs(2), io.shutdown()).await;
                return Ok(());
            }
            tokio::select! {
                n = io.read(&mut buf) => {
                    let n = n?;
                    if n == 0 { stream.eof() } else { stream.receive(&buf[..n]); deadline = Instant::now() + idle; }
                }
                v = vrx.recv() => if let Some((orig, recv, valid)) = v {
                    stream.dialback_verified(&orig, &recv, valid);
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
                        io.write_all(&out).await?;
                        io.flush().await?;
                        let Conn::Plain(tcp) = std::mem::replace(&mut io, Conn::Gone) else {
                            anyhow::bail!("STARTTLS twice");
                        };
                        let s = tokio::time::timeout(hs, acceptor.accept(tcp)).await??;
                        let names = peer_names(&self.roots, s.get_ref().1.peer_certificates());
                        io = Conn::ServerTls(Box::new(s));
                        stream.tls_established(names);
                    }
                    S2sInEvent::DialbackVerify {
                        originating,
                        receiving,
                        key,
                        stream_id,
                    } => {
                        if !self.cfg.federation_allowed(&originating)
                            || self.cfg.s2s.secure_auth
                            || !self.cfg.s2s.enabled
                        {
                            tracing::info!(domain = %originating, "refusing a federation request (policy)");
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
                        if !self.cfg.federation_allowed(&domain) || !self.cfg.s2s.enabled {
                            tracing::info!(%domain, "refusing a federated domain (policy)");
                            stream.close_with_error(
                                StreamErrorCondition::PolicyViolation,
                                Some("federation with your domain is not permitted"),
                            );
                        } else {
                            tracing::info!(%domain, method = method.as_str(), "inbound federation stream authenticated");
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
                                self.cfg.peer(f.domain()).and_then(|p| p.presence_profile())
                            })
                        {
                            crate::presence_map::from_peer(&mut el, profile);
                        }
                        if let Err(e) = hub.route(el).await {
                            tracing::error!(error = %e, "store error while handling a federated stanza");
                        }
                    }
                    S2sInEvent::Closed { error: Some(e) } => {
                        tracing::info!(condition = %e, "inbound federation stream closed with an error");
                    }
                    _ => {}
                }
            }
        }
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
}

struct OutConn {
    io: Conn,
    stream: S2sOut,
    auth: AuthMethod,
    verified: Option<bool>,
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
