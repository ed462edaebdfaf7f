//! The endpoint task and its handle.
//!
//! One task owns the sans-IO [`TransactionLayer`], as quinn's driver owns a connection: it
//! feeds the layer what the transports read (with the source address and transport, and
//! whether that transport is reliable), drives its timers with
//! `sleep_until(poll_timeout())`, writes every `poll_transmit()` through the right transport,
//! and turns `poll_event()`s into calls to the [`SipHandler`] (incoming requests) or answers
//! to waiting [`SipHandle::send_request`] callers (responses, timeouts, transport errors).
//!
//! The layer works in `std::time::Instant`s; the task reads them from tokio's clock
//! (`tokio::time::Instant::now().into_std()`), so a test with `tokio::time::pause()` runs the
//! transaction timers on virtual time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use entente_dns::Locator;
use entente_sip_proto::transaction::{RespondError, SendError};
use entente_sip_proto::{
    bad_request, ClientTxKey, Message, ParseError, Request, Response, ServerTxKey, StatusCode,
    TransactionLayer, Transport, TransportAddr, TxEvent, TxKey, Version,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::handler::{IncomingRequest, ServerEvent, SipHandler};
use super::transport::Transports;

/// What the endpoint task receives: network input from the transports, commands from handles.
pub(crate) enum Input {
    /// A parsed message.
    Message {
        message: Message,
        source: TransportAddr,
    },
    /// A message that failed to parse (a correctly framed one, on streams).
    Invalid {
        bytes: Bytes,
        error: ParseError,
        source: TransportAddr,
    },
    /// A transmit of this transaction could not be delivered.
    TransportError(TxKey),
    Send {
        request: Request,
        dest: TransportAddr,
        tls_name: Option<String>,
        reply: oneshot::Sender<Result<SipResponse, SipError>>,
    },
    Respond {
        key: ServerTxKey,
        response: Response,
        reply: oneshot::Sender<Result<(), SipError>>,
    },
    Ack {
        request: Request,
        dest: TransportAddr,
    },
    /// Forget a server transaction without answering it.
    Abandon(ServerTxKey),
}

/// Where [`SipHandle::send_request`] sends a request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Destination {
    /// This address over this transport.
    Addr(TransportAddr),
    /// The SIP servers of this domain, located per RFC 3263 (static routes, NAPTR, SRV
    /// including `_sipfederationtls._tcp`, then A/AAAA) and tried in order.
    Domain(String),
    /// Like [`Destination::Domain`], over this one transport only (a federation peer
    /// configured for TLS, or for plain TCP).
    DomainOver(String, Transport),
    /// Like [`Destination::DomainOver`], located with this locator instead of the
    /// endpoint's: for a domain whose static routes the endpoint's locator no longer has (a
    /// federation peer just removed, sent its last requests over its former routes).
    DomainVia(String, Transport, Arc<entente_dns::Locator>),
}

/// A final response and who sent it.
#[derive(Debug, Clone)]
pub struct SipResponse {
    pub response: Response,
    pub peer: PeerInfo,
}

/// The transport-level identity of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The address and transport the message went to or came from.
    pub addr: TransportAddr,
    /// For TLS: the DNS names the peer's certificate is valid for (checked against our trust
    /// anchors; empty if it presented none or an untrusted one). `None` for UDP and TCP.
    pub tls_names: Option<Arc<[String]>>,
}

/// Why a request got no final response, or a response could not be sent.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SipError {
    /// Timer B or F fired: no final response (RFC 3261 §17.1.1.2, §17.1.2.2).
    #[error("no final response from {0} before the transaction timed out")]
    Timeout(TransportAddr),
    /// The request could not be delivered (connection refused or lost, no usable socket).
    #[error("transport failure sending to {0}")]
    Transport(TransportAddr),
    /// The domain's SIP servers could not be located.
    #[error("cannot locate the SIP servers of {domain}: {source}")]
    Locate {
        domain: String,
        source: Arc<entente_dns::Error>,
    },
    /// The domain's servers were found, but none of them uses a transport we can send on.
    #[error("no usable SIP server for {0}")]
    NoCandidate(String),
    /// The request cannot start a transaction (an ACK, or a bad CSeq).
    #[error(transparent)]
    Send(#[from] SendError),
    /// The response cannot be sent on that transaction.
    #[error(transparent)]
    Respond(#[from] RespondError),
    /// The endpoint has shut down.
    #[error("the SIP endpoint has stopped")]
    Closed,
}

/// Counters kept by the endpoint and its transports.
#[derive(Debug, Default)]
pub(crate) struct StatsInner {
    pub unparseable_responses: AtomicU64,
    pub bad_requests: AtomicU64,
    pub dropped_requests: AtomicU64,
    pub rate_limited: AtomicU64,
}

/// A snapshot of the endpoint's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SipStats {
    /// Responses that did not parse, dropped (RFC 3261 §18.1.2 / §16.7 discard them silently).
    pub unparseable_responses: u64,
    /// Requests that did not parse and were answered `400` (or `513` when too large).
    pub bad_requests: u64,
    /// Requests that did not parse and could not be answered (no usable Via, From, To, Call-ID
    /// or CSeq, or an ACK), dropped.
    pub dropped_requests: u64,
    /// Messages over the per-connection (per-source over UDP) rate: UDP datagrams dropped,
    /// stream reads paused.
    pub rate_limited: u64,
}

/// A cloneable handle on the SIP endpoint, for the federation code.
#[derive(Clone)]
pub struct SipHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    tx: mpsc::Sender<Input>,
    locator: Option<Arc<Locator>>,
    transports: Arc<Transports>,
    stats: Arc<StatsInner>,
}

impl std::fmt::Debug for SipHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipHandle").finish_non_exhaustive()
    }
}

impl SipHandle {
    pub(crate) fn new(
        tx: mpsc::Sender<Input>,
        locator: Option<Arc<Locator>>,
        transports: Arc<Transports>,
        stats: Arc<StatsInner>,
    ) -> SipHandle {
        SipHandle {
            inner: Arc::new(HandleInner {
                tx,
                locator,
                transports,
                stats,
            }),
        }
    }

    /// Sends `request` in a new client transaction and waits for its final response (or the
    /// transaction's timeout, 64·T1, or a transport error). Our top Via (fresh branch,
    /// `rport`) is added; the request must carry everything else (Request-URI, From with tag,
    /// To, Call-ID, CSeq, Max-Forwards; Route for in-dialog requests, see
    /// [`entente_sip_proto::Dialog`]).
    ///
    /// For [`Destination::Domain`], candidates come from the dns crate's `sip_server` (TLS
    /// preferred, then TCP, then UDP when a UDP socket is bound) and each address is tried
    /// in turn while the outcome is a transport error, a timeout or a `503` (RFC 3263 §4.3);
    /// the last outcome is returned. New TLS connections use the domain as server name; the
    /// names the server's certificate is valid for come back in [`SipResponse::peer`] so the
    /// caller can check them against the domain (RFC 5922 §4) before trusting the answer.
    pub async fn send_request(
        &self,
        request: Request,
        dest: Destination,
    ) -> Result<SipResponse, SipError> {
        match dest {
            Destination::Addr(addr) => self.send_once(request, addr, None).await,
            Destination::Domain(domain) => {
                let Some(locator) = &self.inner.locator else {
                    return Err(SipError::NoCandidate(domain));
                };
                self.send_to_domain(locator, request, &domain, None).await
            }
            Destination::DomainOver(domain, t) => {
                let Some(locator) = &self.inner.locator else {
                    return Err(SipError::NoCandidate(domain));
                };
                self.send_to_domain(locator, request, &domain, Some(t))
                    .await
            }
            Destination::DomainVia(domain, t, locator) => {
                self.send_to_domain(&locator, request, &domain, Some(t))
                    .await
            }
        }
    }

    async fn send_to_domain(
        &self,
        locator: &entente_dns::Locator,
        request: Request,
        domain: &str,
        only: Option<Transport>,
    ) -> Result<SipResponse, SipError> {
        let t = &self.inner.transports;
        let mut prefs = Vec::new();
        if t.has_tls() {
            prefs.push(entente_dns::Transport::Tls);
        }
        prefs.push(entente_dns::Transport::Tcp);
        if t.has_udp() {
            prefs.push(entente_dns::Transport::Udp);
        }
        if let Some(only) = only {
            let want = match only {
                Transport::Tls => entente_dns::Transport::Tls,
                Transport::Udp => entente_dns::Transport::Udp,
                _ => entente_dns::Transport::Tcp,
            };
            prefs.retain(|p| *p == want);
        }
        let candidates =
            locator
                .sip_server(domain, &prefs)
                .await
                .map_err(|e| SipError::Locate {
                    domain: domain.to_owned(),
                    source: Arc::new(e),
                })?;
        let mut last = Err(SipError::NoCandidate(domain.to_owned()));
        for c in candidates {
            let transport = match c.transport {
                entente_dns::Transport::Tls if t.has_tls() => Transport::Tls,
                entente_dns::Transport::Tcp => Transport::Tcp,
                entente_dns::Transport::Udp if t.has_udp() => Transport::Udp,
                _ => continue,
            };
            for addr in &c.addrs {
                let dest = TransportAddr::new(*addr, transport);
                match self.send_once(request.clone(), dest, Some(domain)).await {
                    Ok(r) if r.response.status == StatusCode::SERVICE_UNAVAILABLE => {
                        tracing::debug!(%dest, domain, "503 from a SIP server; trying the next");
                        last = Ok(r);
                    }
                    Err(e @ (SipError::Timeout(_) | SipError::Transport(_))) => {
                        tracing::debug!(%dest, domain, error = %e, "trying the next SIP server");
                        last = Err(e);
                    }
                    other => return other,
                }
            }
        }
        last
    }

    async fn send_once(
        &self,
        request: Request,
        dest: TransportAddr,
        tls_name: Option<&str>,
    ) -> Result<SipResponse, SipError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Input::Send {
                request,
                dest,
                tls_name: tls_name.map(str::to_owned),
                reply,
            })
            .await
            .map_err(|_| SipError::Closed)?;
        rx.await.map_err(|_| SipError::Closed)?
    }

    /// Answers the server transaction `key` (from [`IncomingRequest::key`]). Provisional
    /// responses may come first; the final one starts the transaction's retransmission and
    /// absorption timers (§17.2). Put a To tag on final responses (see [`super::new_tag`]).
    pub async fn respond(&self, key: ServerTxKey, response: Response) -> Result<(), SipError> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Input::Respond {
                key,
                response,
                reply,
            })
            .await
            .map_err(|_| SipError::Closed)?;
        rx.await.map_err(|_| SipError::Closed)?
    }

    /// Queues a response for the server transaction `key` at once, without waiting for the
    /// endpoint to send it: responses queued this way go out before any request queued later
    /// through this handle (RFC 6665 peers expect the 2xx to a SUBSCRIBE before its NOTIFY).
    /// Errors are logged, not returned.
    pub fn respond_now(&self, key: ServerTxKey, response: Response) {
        let (reply, _) = oneshot::channel();
        match self.inner.tx.try_send(Input::Respond {
            key,
            response,
            reply,
        }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(input)) => {
                let tx = self.inner.tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(input).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("the SIP endpoint has stopped; a response was not sent");
            }
        }
    }

    /// Forgets the server transaction `key` without answering it (a request that expects no
    /// response, such as Lync's BENOTIFY).
    pub async fn abandon(&self, key: ServerTxKey) {
        let _ = self.inner.tx.send(Input::Abandon(key)).await;
    }

    /// Sends the ACK for a 2xx to an INVITE (§13.2.2.4; not a transaction, sent once per call).
    pub async fn send_ack(&self, ack: Request, dest: TransportAddr) -> Result<(), SipError> {
        self.inner
            .tx
            .send(Input::Ack { request: ack, dest })
            .await
            .map_err(|_| SipError::Closed)
    }

    /// The names the TLS peer at `addr` is authenticated for (see [`PeerInfo::tls_names`]).
    pub fn tls_names(&self, addr: &TransportAddr) -> Option<Arc<[String]>> {
        self.inner.transports.tls_names(addr)
    }

    /// Every open TCP/TLS connection.
    pub fn connections(&self) -> Vec<super::transport::ConnectionInfo> {
        self.inner.transports.connections()
    }

    /// Number of open TCP/TLS connections.
    pub fn connection_count(&self) -> usize {
        self.inner.transports.connection_count()
    }

    /// The endpoint's counters.
    pub fn stats(&self) -> SipStats {
        let s = &self.inner.stats;
        SipStats {
            unparseable_responses: s.unparseable_responses.load(Ordering::Relaxed),
            bad_requests: s.bad_requests.load(Ordering::Relaxed),
            dropped_requests: s.dropped_requests.load(Ordering::Relaxed),
            rate_limited: s.rate_limited.load(Ordering::Relaxed),
        }
    }
}

/// A client transaction someone waits on.
struct Pending {
    reply: oneshot::Sender<Result<SipResponse, SipError>>,
    dest: TransportAddr,
}

/// The endpoint task's state.
pub(crate) struct Endpoint {
    pub layer: TransactionLayer,
    pub rx: mpsc::Receiver<Input>,
    pub transports: Arc<Transports>,
    pub handler: Arc<dyn SipHandler>,
    pub handle: SipHandle,
    pub stats: Arc<StatsInner>,
    pub shutdown: watch::Receiver<bool>,
    pending: HashMap<ClientTxKey, Pending>,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Endpoint {
    pub(crate) fn new(
        layer: TransactionLayer,
        rx: mpsc::Receiver<Input>,
        transports: Arc<Transports>,
        handler: Arc<dyn SipHandler>,
        handle: SipHandle,
        stats: Arc<StatsInner>,
        shutdown: watch::Receiver<bool>,
    ) -> Endpoint {
        Endpoint {
            layer,
            rx,
            transports,
            handler,
            handle,
            stats,
            shutdown,
            pending: HashMap::new(),
        }
    }

    /// Runs until shutdown.
    pub(crate) async fn run(mut self) {
        loop {
            self.drain();
            let deadline = self.layer.poll_timeout();
            tokio::select! {
                input = self.rx.recv() => match input {
                    Some(i) => self.input(i),
                    None => break,
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.layer.handle_timeout(now());
                }
                _ = self.shutdown.changed() => {
                    if *self.shutdown.borrow() { break; }
                }
            }
        }
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(Err(SipError::Closed));
        }
    }

    fn input(&mut self, input: Input) {
        match input {
            Input::Message { message, source } => {
                let reliable = source.transport != Transport::Udp;
                self.layer.handle_incoming(message, source, reliable, now());
            }
            Input::Invalid {
                bytes,
                error,
                source,
            } => self.invalid(&bytes, &error, source),
            Input::TransportError(key) => self.layer.handle_transport_error(key, now()),
            Input::Send {
                request,
                dest,
                tls_name,
                reply,
            } => {
                if self.transports.prepare(dest, tls_name.as_deref()).is_err() {
                    let _ = reply.send(Err(SipError::Transport(dest)));
                    return;
                }
                let reliable = dest.transport != Transport::Udp;
                match self.layer.send_request(request, dest, reliable, now()) {
                    Ok(key) => {
                        self.pending.insert(key, Pending { reply, dest });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Input::Respond {
                key,
                response,
                reply,
            } => {
                let r = self.layer.respond(key, response, now());
                let _ = reply.send(r.map_err(SipError::from));
            }
            Input::Ack { request, dest } => self.layer.send_ack(request, dest),
            Input::Abandon(key) => {
                self.layer.abandon(key);
            }
        }
    }

    /// A message that did not parse: RFC 3261 §16.7/§18.1.2 drop a bad response; a bad
    /// request gets `400` with the parse error as reason phrase (§21.4.1; `513` when it is
    /// too large, §21.5.14), sent back to the source address (not to the unverified Via, so
    /// that a forged Via cannot aim our answer at a third party).
    fn invalid(&mut self, bytes: &[u8], error: &ParseError, source: TransportAddr) {
        if looks_like_response(bytes) {
            self.stats
                .unparseable_responses
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%source, %error, "unparseable SIP response dropped");
            return;
        }
        match bad_request(bytes, error, Some(&super::new_tag())) {
            Some(mut resp) => {
                if *error == ParseError::TooLarge {
                    if let Some(s) = StatusCode::new(513) {
                        resp.status = s;
                    }
                }
                let status = resp.status.code();
                tracing::debug!(%source, %error, status, "malformed SIP request refused");
                self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                self.layer.send_stateless(&Message::Response(resp), source);
            }
            None => {
                self.stats.dropped_requests.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%source, %error, "malformed SIP request dropped (unanswerable)");
            }
        }
    }

    /// Writes every transmit and handles every event, until neither is left (a handler's
    /// answer produces transmits; a failed transmit produces events).
    fn drain(&mut self) {
        loop {
            let mut progress = false;
            while let Some(t) = self.layer.poll_transmit() {
                progress = true;
                let (tx, dest) = (t.tx, t.dest);
                if self.transports.transmit(t).is_err() {
                    tracing::debug!(%dest, "SIP transmit failed");
                    if let Some(tx) = tx {
                        self.layer.handle_transport_error(tx, now());
                    }
                }
            }
            while let Some(ev) = self.layer.poll_event() {
                progress = true;
                self.event(ev);
            }
            if !progress {
                break;
            }
        }
    }

    fn event(&mut self, ev: TxEvent) {
        match ev {
            TxEvent::Request {
                key,
                request,
                source,
            } => self.request(key, request, source),
            TxEvent::Ack {
                key,
                request,
                source,
            } => self.handler.on_event(ServerEvent::Ack {
                key,
                request,
                source,
            }),
            TxEvent::Response { key, response } => {
                if !response.status.is_final() {
                    return;
                }
                // 2xx retransmissions to an INVITE (RFC 6026) come here after the first one;
                // nobody waits for them any more.
                if let Some(p) = self.pending.remove(&key) {
                    let peer = PeerInfo {
                        addr: p.dest,
                        tls_names: self.transports.tls_names(&p.dest),
                    };
                    let _ = p.reply.send(Ok(SipResponse { response, peer }));
                }
            }
            TxEvent::Cancelled { key, cancel } => {
                // §9.2: the UAS answers the cancelled INVITE with 487.
                if let Some(invite) = self.layer.server_request(key) {
                    let resp = invite.response(
                        StatusCode::new(487).unwrap_or(StatusCode::FORBIDDEN),
                        Some(&super::new_tag()),
                    );
                    let _ = self.layer.respond(key, resp, now());
                }
                self.handler
                    .on_event(ServerEvent::Cancelled { key, cancel });
            }
            TxEvent::Timeout { key } => match key {
                TxKey::Client(k) => self.fail_pending(k, SipError::Timeout),
                TxKey::Server(k) => {
                    tracing::debug!(?k, "SIP server transaction timed out (no ACK)");
                    self.handler.on_event(ServerEvent::Timeout { key: k });
                }
                _ => {}
            },
            TxEvent::TransportError { key } => match key {
                TxKey::Client(k) => self.fail_pending(k, SipError::Transport),
                TxKey::Server(k) => {
                    tracing::debug!(?k, "SIP response could not be delivered");
                }
                _ => {}
            },
            // A client transaction ending without a final response, timeout or transport error
            // (not expected; the waiting caller must not hang).
            TxEvent::Terminated {
                key: TxKey::Client(k),
            } => self.fail_pending(k, SipError::Timeout),
            _ => {}
        }
    }

    fn fail_pending(&mut self, key: ClientTxKey, error: fn(TransportAddr) -> SipError) {
        if let Some(p) = self.pending.remove(&key) {
            let _ = p.reply.send(Err(error(p.dest)));
        }
    }

    /// A new request: refuse what no handler could accept (§8.2.1-§8.2.2 checks a UAS makes
    /// before its method logic), then ask the handler.
    fn request(&mut self, key: ServerTxKey, request: Request, source: TransportAddr) {
        let refusal = if request.version != Version::SIP_2_0 {
            // §8.1.1.1 / §21.5.11: only SIP/2.0 is spoken.
            Some((StatusCode::VERSION_NOT_SUPPORTED, None))
        } else if !matches!(request.uri.scheme().as_ref(), "sip" | "sips") {
            // §8.2.2.1: a scheme we do not understand.
            Some((StatusCode::UNSUPPORTED_URI_SCHEME, None))
        } else {
            None
        };
        let response = match refusal {
            Some((status, reason)) => {
                let mut r = request.response(status, Some(&super::new_tag()));
                if let Some(reason) = reason {
                    r.reason = reason;
                }
                Some(r)
            }
            None => {
                let tls_names = self.transports.tls_names(&source);
                self.handler.on_request(
                    IncomingRequest {
                        key,
                        request,
                        source: PeerInfo {
                            addr: source,
                            tls_names,
                        },
                    },
                    &self.handle,
                )
            }
        };
        if let Some(r) = response {
            if let Err(e) = self.layer.respond(key, r, now()) {
                tracing::debug!(error = %e, "SIP handler's response not sent");
            }
        }
    }
}

/// Whether rejected bytes are a response (so must be dropped, never answered).
fn looks_like_response(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(bytes.len());
    bytes
        .get(start..start.saturating_add(4))
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_recognised() {
        assert!(looks_like_response(b"SIP/2.0 200 OK\r\n"));
        assert!(looks_like_response(b"\r\n\r\nsip/2.0 200 OK\r\n"));
        assert!(!looks_like_response(b"OPTIONS sip:a SIP/2.0\r\n"));
        assert!(!looks_like_response(b"SIP"));
        assert!(!looks_like_response(b""));
    }
}
