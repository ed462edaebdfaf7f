//! SIP transports: UDP sockets, TCP and TLS connections (RFC 3261 §18).
//!
//! - **UDP.** One reader task per bound socket parses each datagram (the parse happens here, not
//!   in the endpoint task, so that parsing runs in parallel with the transaction layer) and
//!   hands the message to the endpoint. Datagrams are written straight from the endpoint task
//!   with `try_send_to`: a full socket buffer drops the datagram, as the network could, and
//!   the transaction layer's retransmissions cover it.
//! - **TCP and TLS.** One task per connection (the c2s/s2s style): a `select!` over reads,
//!   the connection's bounded write queue, the idle timer and shutdown. Bytes go through
//!   sip-proto's [`Framer`]; CRLF keep-alive pings are answered with a pong (RFC 5626 §4.4.1);
//!   a framing error (unusable Content-Length, a message over the size limit) closes the
//!   connection, since the stream can no longer be delimited (RFC 3261 §18.3).
//! - **Connection reuse.** Every open connection, inbound or outbound, is in one table keyed by
//!   the remote address and transport ([`TransportAddr`]). Requests to a destination with an open
//!   connection use it; responses go back on the connection the request came in on (§18.2.2),
//!   because the transaction layer addresses a reliable response to the request's source.
//!   When that connection is gone, the response fails with a transport error rather than a
//!   new connection to the peer's ephemeral source port (§18.2.2 would try the Via sent-by;
//!   federation peers reconnect and retransmit instead).
//! - **Limits.** A maximum message size (Framer limits, and the UDP read buffer), a message
//!   rate per connection (over UDP: per source address) enforced by a token bucket, an idle
//!   timeout, and a cap on simultaneous connections. Over a stream the rate limit pauses
//!   reading (TCP flow control then slows the peer); over UDP excess datagrams are dropped
//!   and counted.
//! - **TLS identity.** For each TLS connection the names its peer's certificate is valid for
//!   ([`crate::tls::valid_names`], inbound: the client certificate; outbound: the server's)
//!   are recorded in the table, so the federation layer can check the From domain of a
//!   request, or the domain it sent to, against them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use entente_sip_proto::{
    Frame, Framer, Limits, ParseError, Parser, Transmit, Transport, TransportAddr, TxKey,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use super::endpoint::{Input, StatsInner};
use crate::tls::Identity;

/// Largest UDP payload (65535 minus the IPv4 and UDP headers).
const MAX_DATAGRAM: usize = 65_507;
/// Outgoing messages queued per connection before sends to it fail.
const WRITE_QUEUE: usize = 256;
/// Time for one outbound TCP connect plus TLS handshake, or one inbound TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time one write may take. A peer that stops reading (and so blocks our writes) is dropped
/// after this, rather than holding its connection slot forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Read buffer per connection (the framer keeps partial messages; this is only per read).
const READ_CHUNK: usize = 8 * 1024;
/// Largest number of UDP sources tracked for rate limiting before stale ones are forgotten.
const MAX_UDP_SOURCES: usize = 4096;

/// Limits applied to every connection and datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub max_message: usize,
    pub idle: Option<Duration>,
    pub rate: u32,
}

/// A queued outgoing message and the transaction it belongs to.
#[derive(Debug)]
pub(crate) struct Outgoing {
    bytes: Bytes,
    tx: Option<TxKey>,
}

/// One open (or opening) connection.
struct ConnEntry {
    id: u64,
    queue: mpsc::Sender<Outgoing>,
    tls_names: Option<Arc<[String]>>,
    /// We opened it.
    outbound: bool,
    since: std::time::SystemTime,
}

/// One open SIP connection, for the admin API.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub remote: TransportAddr,
    /// We opened it (`true`) or the peer did.
    pub outbound: bool,
    /// For TLS: the names the peer's certificate is valid for.
    pub tls_names: Option<Arc<[String]>>,
    pub since: std::time::SystemTime,
}

/// TLS material for outbound connections and for checking peers' certificates.
pub(crate) struct TlsMaterial {
    pub identity: Identity,
    pub roots: Arc<RootCertStore>,
}

/// Why a transmit could not even be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TransmitFailed;

/// Every socket and connection of the SIP endpoint.
pub(crate) struct Transports {
    udp: Vec<Arc<UdpSocket>>,
    conns: Mutex<HashMap<TransportAddr, ConnEntry>>,
    next_id: AtomicU64,
    to_endpoint: mpsc::Sender<Input>,
    limits: ConnLimits,
    tls: Option<TlsMaterial>,
    slots: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
    stats: Arc<StatsInner>,
}

impl Transports {
    pub(crate) fn new(
        udp: Vec<Arc<UdpSocket>>,
        to_endpoint: mpsc::Sender<Input>,
        limits: ConnLimits,
        tls: Option<TlsMaterial>,
        max_connections: usize,
        shutdown: watch::Receiver<bool>,
        stats: Arc<StatsInner>,
    ) -> Arc<Transports> {
        Arc::new(Transports {
            udp,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            to_endpoint,
            limits,
            tls,
            slots: Arc::new(Semaphore::new(max_connections)),
            shutdown,
            stats,
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<TransportAddr, ConnEntry>> {
        // A panic while holding this lock cannot leave the map inconsistent (every critical
        // section is a single insert, remove or lookup), so a poisoned lock is still usable.
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether outgoing UDP is possible (a UDP socket is bound).
    pub(crate) fn has_udp(&self) -> bool {
        !self.udp.is_empty()
    }

    /// Whether outgoing TLS is possible (we have a certificate).
    pub(crate) fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The names the TLS peer at `addr` is authenticated for, if it is a TLS connection.
    pub(crate) fn tls_names(&self, addr: &TransportAddr) -> Option<Arc<[String]>> {
        if addr.transport != Transport::Tls {
            return None;
        }
        self.table().get(addr).and_then(|e| e.tls_names.clone())
    }

    /// Every open connection, sorted by remote address.
    pub(crate) fn connections(&self) -> Vec<ConnectionInfo> {
        let mut v: Vec<ConnectionInfo> = self
            .table()
            .iter()
            .map(|(a, e)| ConnectionInfo {
                remote: *a,
                outbound: e.outbound,
                tls_names: e.tls_names.clone(),
                since: e.since,
            })
            .collect();
        v.sort_by_key(|c| c.remote.addr);
        v
    }

    /// Number of open connections.
    pub(crate) fn connection_count(&self) -> usize {
        self.table().len()
    }

    /// Makes sure a connection to `dest` exists or is being opened (no-op for UDP), with
    /// `tls_name` as the TLS server name (SNI and the name the certificate is checked for)
    /// when a new TLS connection is opened.
    pub(crate) fn prepare(
        self: &Arc<Self>,
        dest: TransportAddr,
        tls_name: Option<&str>,
    ) -> Result<(), TransmitFailed> {
        if dest.transport == Transport::Udp {
            return Ok(());
        }
        let mut table = self.table();
        if table.contains_key(&dest) {
            return Ok(());
        }
        self.open(&mut table, dest, tls_name.map(str::to_owned))
    }

    /// Starts an outbound connection task and registers its queue. Called with the table
    /// locked, so two sends to the same destination share one connection.
    fn open(
        self: &Arc<Self>,
        table: &mut HashMap<TransportAddr, ConnEntry>,
        dest: TransportAddr,
        tls_name: Option<String>,
    ) -> Result<(), TransmitFailed> {
        if dest.transport == Transport::Tls && self.tls.is_none() {
            return Err(TransmitFailed);
        }
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            tracing::warn!(%dest, "SIP connection limit reached; not opening a connection");
            TransmitFailed
        })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (queue, rx) = mpsc::channel(WRITE_QUEUE);
        table.insert(
            dest,
            ConnEntry {
                id,
                queue,
                tls_names: None,
                outbound: true,
                since: std::time::SystemTime::now(),
            },
        );
        let me = self.clone();
        let span =
            tracing::info_span!("sip-out", peer = %dest, name = tls_name.as_deref().unwrap_or(""));
        tokio::spawn(
            async move {
                me.outbound(id, dest, tls_name, rx, permit).await;
            }
            .instrument(span),
        );
        Ok(())
    }

    /// Writes one transmit from the transaction layer. An error means the transaction must be
    /// told at once ([`entente_sip_proto::TransactionLayer::handle_transport_error`]); later
    /// failures (connect refused, write error) arrive as [`Input::TransportError`].
    pub(crate) fn transmit(self: &Arc<Self>, t: Transmit) -> Result<(), TransmitFailed> {
        match t.dest.transport {
            Transport::Udp => self.send_udp(t.dest.addr, &t.bytes),
            _ => {
                let mut table = self.table();
                if !table.contains_key(&t.dest) {
                    // §18.2.2: a response goes back on the request's connection; if that is
                    // gone we do not dial the peer's ephemeral port. Requests (and ACKs) open a
                    // new connection.
                    if matches!(t.tx, Some(TxKey::Server(_))) {
                        return Err(TransmitFailed);
                    }
                    self.open(&mut table, t.dest, None)?;
                }
                let entry = table.get(&t.dest).ok_or(TransmitFailed)?;
                entry
                    .queue
                    .try_send(Outgoing {
                        bytes: t.bytes,
                        tx: t.tx,
                    })
                    .map_err(|_| TransmitFailed)
            }
        }
    }

    fn send_udp(&self, dest: SocketAddr, bytes: &[u8]) -> Result<(), TransmitFailed> {
        // The first socket of the destination's address family. With several UDP listeners a
        // response may leave from another socket than the request came to; peers that care
        // (symmetric response routing) should be given a single UDP address.
        let sock = self
            .udp
            .iter()
            .find(|s| s.local_addr().is_ok_and(|l| l.is_ipv4() == dest.is_ipv4()))
            .ok_or(TransmitFailed)?;
        match sock.try_send_to(bytes, dest) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tracing::debug!(%dest, "UDP send buffer full; datagram dropped");
                Ok(())
            }
            Err(e) => {
                tracing::debug!(%dest, error = %e, "UDP send failed");
                Err(TransmitFailed)
            }
        }
    }

    // ---- UDP ----

    /// Reads datagrams from `sock` until shutdown.
    pub(crate) async fn udp_reader(self: Arc<Self>, sock: Arc<UdpSocket>) {
        let mut shutdown = self.shutdown.clone();
        let parser = Parser::new(Limits {
            max_message_size: self.limits.max_message,
            ..Limits::default()
        });
        // One byte more than the limit, so that an oversized datagram is recognised as such.
        let mut buf = vec![0u8; self.limits.max_message.min(MAX_DATAGRAM) + 1];
        let mut buckets: HashMap<SocketAddr, Bucket> = HashMap::new();
        loop {
            let (n, src) = tokio::select! {
                r = sock.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // On Linux an ICMP port unreachable for an earlier send surfaces here.
                        tracing::debug!(error = %e, "UDP receive error");
                        continue;
                    }
                },
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return; }
                    continue;
                }
            };
            let data = buf.get(..n).unwrap_or(&[]);
            // Keep-alive CRLFs sent over UDP by some peers carry nothing.
            if data.iter().all(|b| *b == b'\r' || *b == b'\n') {
                continue;
            }
            let now = Instant::now();
            if buckets.len() >= MAX_UDP_SOURCES && !buckets.contains_key(&src) {
                buckets.retain(|_, b| now.duration_since(b.last) < Duration::from_secs(2));
                if buckets.len() >= MAX_UDP_SOURCES {
                    buckets.clear();
                }
            }
            let bucket = buckets
                .entry(src)
                .or_insert_with(|| Bucket::new(self.limits.rate, now));
            if !bucket.take(now) {
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%src, "UDP message rate exceeded; datagram dropped");
                continue;
            }
            let source = TransportAddr::new(src, Transport::Udp);
            let input = if n > self.limits.max_message {
                Input::Invalid {
                    bytes: Bytes::copy_from_slice(data),
                    error: ParseError::TooLarge,
                    source,
                }
            } else {
                match parser.parse(data) {
                    Ok(message) => Input::Message { message, source },
                    Err(error) => Input::Invalid {
                        bytes: Bytes::copy_from_slice(data),
                        error,
                        source,
                    },
                }
            };
            if self.to_endpoint.send(input).await.is_err() {
                return;
            }
        }
    }

    // ---- streams ----

    /// Accepts TCP (or, with `tls`, TLS) connections until shutdown.
    pub(crate) async fn listen(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) {
        let mut shutdown = self.shutdown.clone();
        loop {
            let (sock, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "SIP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { return; }
                    continue;
                }
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "SIP connection limit reached; refusing a connection");
                continue;
            };
            let _ = sock.set_nodelay(true);
            let me = self.clone();
            let tls = tls.clone();
            let span = tracing::info_span!(
                "sip-in",
                %peer,
                transport = if tls.is_some() { "tls" } else { "tcp" }
            );
            tokio::spawn(
                async move {
                    me.inbound(sock, peer, tls, permit).await;
                }
                .instrument(span),
            );
        }
    }

    async fn inbound(
        self: Arc<Self>,
        sock: TcpStream,
        peer: SocketAddr,
        tls: Option<tokio_rustls::TlsAcceptor>,
        _permit: OwnedSemaphorePermit,
    ) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (queue, rx) = mpsc::channel(WRITE_QUEUE);
        match tls {
            None => {
                let remote = TransportAddr::new(peer, Transport::Tcp);
                self.register(remote, id, queue, None);
                self.run(id, remote, sock, rx).await;
            }
            Some(acceptor) => {
                let remote = TransportAddr::new(peer, Transport::Tls);
                let stream =
                    match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "SIP TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "SIP TLS handshake timed out");
                            return;
                        }
                    };
                let names = self.peer_names(stream.get_ref().1.peer_certificates());
                tracing::debug!(%peer, names = ?names, "SIP TLS connection accepted");
                self.register(remote, id, queue, Some(names));
                self.run(id, remote, stream, rx).await;
            }
        }
    }

    fn register(
        &self,
        remote: TransportAddr,
        id: u64,
        queue: mpsc::Sender<Outgoing>,
        tls_names: Option<Arc<[String]>>,
    ) {
        self.table().insert(
            remote,
            ConnEntry {
                id,
                queue,
                tls_names,
                outbound: false,
                since: std::time::SystemTime::now(),
            },
        );
    }

    fn peer_names(&self, chain: Option<&[CertificateDer<'static>]>) -> Arc<[String]> {
        match (&self.tls, chain) {
            (Some(t), Some(chain)) => crate::tls::valid_names(&t.roots, chain).into(),
            _ => Arc::from(Vec::new()),
        }
    }

    async fn outbound(
        self: Arc<Self>,
        id: u64,
        dest: TransportAddr,
        tls_name: Option<String>,
        mut rx: mpsc::Receiver<Outgoing>,
        _permit: OwnedSemaphorePermit,
    ) {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dest.addr)).await;
        let sock = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%dest, error = %e, "SIP connect failed");
                return self.fail(id, dest, &mut rx).await;
            }
            Err(_) => {
                tracing::debug!(%dest, "SIP connect timed out");
                return self.fail(id, dest, &mut rx).await;
            }
        };
        let _ = sock.set_nodelay(true);
        if dest.transport != Transport::Tls {
            return self.run(id, dest, sock, rx).await;
        }
        let Some(material) = &self.tls else {
            return self.fail(id, dest, &mut rx).await;
        };
        let server_name = match tls_name {
            Some(n) => ServerName::try_from(n).ok(),
            None => None,
        }
        .unwrap_or_else(|| ServerName::IpAddress(dest.addr.ip().into()));
        let config = match crate::tls::s2s_client_config(&material.roots, &material.identity, false)
        {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::warn!(error = %e, "SIP TLS client configuration failed");
                return self.fail(id, dest, &mut rx).await;
            }
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(server_name, sock)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%dest, error = %e, "SIP TLS handshake failed");
                    return self.fail(id, dest, &mut rx).await;
                }
                Err(_) => {
                    tracing::debug!(%dest, "SIP TLS handshake timed out");
                    return self.fail(id, dest, &mut rx).await;
                }
            };
        let names = self.peer_names(stream.get_ref().1.peer_certificates());
        if let Some(e) = self.table().get_mut(&dest).filter(|e| e.id == id) {
            e.tls_names = Some(names);
        }
        self.run(id, dest, stream, rx).await;
    }

    /// A connection could not be opened or has closed: forget it, and report every message
    /// still queued for it as a transport error of its transaction.
    async fn fail(&self, id: u64, remote: TransportAddr, rx: &mut mpsc::Receiver<Outgoing>) {
        {
            let mut table = self.table();
            if table.get(&remote).is_some_and(|e| e.id == id) {
                table.remove(&remote);
            }
        }
        rx.close();
        while let Ok(o) = rx.try_recv() {
            self.report(o.tx).await;
        }
    }

    async fn report(&self, tx: Option<TxKey>) {
        if let Some(tx) = tx {
            let _ = self.to_endpoint.send(Input::TransportError(tx)).await;
        }
    }

    /// The connection loop: reads, writes, keep-alives, limits.
    async fn run<S>(
        &self,
        id: u64,
        remote: TransportAddr,
        mut stream: S,
        mut rx: mpsc::Receiver<Outgoing>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut shutdown = self.shutdown.clone();
        let mut framer = Framer::new(Limits {
            max_message_size: self.limits.max_message,
            ..Limits::default()
        });
        let mut buf = vec![0u8; READ_CHUNK];
        let mut bucket = Bucket::new(self.limits.rate, Instant::now());
        let idle = self.limits.idle;
        let far = Duration::from_secs(86_400 * 365);
        let mut deadline = Instant::now() + idle.unwrap_or(far);
        let mut out = Vec::new();
        'conn: loop {
            tokio::select! {
                r = stream.read(&mut buf) => {
                    let n = match r {
                        Ok(0) => break 'conn,
                        Ok(n) => n,
                        Err(e) => {
                            tracing::debug!(%remote, error = %e, "SIP connection read error");
                            break 'conn;
                        }
                    };
                    deadline = Instant::now() + idle.unwrap_or(far);
                    framer.push(buf.get(..n).unwrap_or(&[]));
                    loop {
                        let input = match framer.poll() {
                            Ok(None) => break,
                            // RFC 5626 §4.4.1: answer a double-CRLF ping with a single CRLF pong.
                            Ok(Some(Frame::Ping)) => {
                                let pong = stream.write_all(b"\r\n");
                                let w = tokio::time::timeout(WRITE_TIMEOUT, pong).await;
                                if !matches!(w, Ok(Ok(()))) {
                                    break 'conn;
                                }
                                continue;
                            }
                            Ok(Some(Frame::Pong)) => continue,
                            Ok(Some(Frame::Message(message))) => Input::Message {
                                message,
                                source: remote,
                            },
                            Ok(Some(Frame::Invalid { bytes, error })) => Input::Invalid {
                                bytes,
                                error,
                                source: remote,
                            },
                            Ok(Some(_)) => continue,
                            Err(e) => {
                                tracing::debug!(
                                    %remote, error = %e, "SIP stream cannot be framed; closing"
                                );
                                break 'conn;
                            }
                        };
                        // The rate limit pauses reading: TCP flow control slows the peer down.
                        let now = Instant::now();
                        if !bucket.take(now) {
                            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(bucket.wait(now)).await;
                            bucket.take(Instant::now());
                        }
                        if self.to_endpoint.send(input).await.is_err() {
                            break 'conn;
                        }
                    }
                    if framer.buffered() == 0 {
                        framer.shrink();
                    }
                }
                o = rx.recv() => {
                    let Some(first) = o else { break 'conn };
                    // Batch everything queued into one write.
                    out.clear();
                    let mut txs = Vec::new();
                    let mut next = Some(first);
                    while let Some(o) = next {
                        out.extend_from_slice(&o.bytes);
                        txs.push(o.tx);
                        next = if out.len() < 256 * 1024 { rx.try_recv().ok() } else { None };
                    }
                    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
                        stream.write_all(&out).await?;
                        stream.flush().await
                    })
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
                    if let Err(e) = written {
                        tracing::debug!(%remote, error = %e, "SIP connection write error");
                        for tx in txs {
                            self.report(tx).await;
                        }
                        break 'conn;
                    }
                    deadline = Instant::now() + idle.unwrap_or(far);
                }
                _ = tokio::time::sleep_until(deadline), if idle.is_some() => {
                    tracing::debug!(%remote, "SIP connection idle; closing");
                    break 'conn;
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { break 'conn; }
                }
            }
        }
        let _ = stream.shutdown().await;
        self.fail(id, remote, &mut rx).await;
        tracing::debug!(%remote, "SIP connection closed");
    }
}

/// A token bucket: `rate` tokens per second, holding at most twice that.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(rate: u32, now: Instant) -> Bucket {
        let rate = f64::from(rate.max(1));
        Bucket {
            tokens: rate * 2.0,
            rate,
            burst: rate * 2.0,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until one token is available.
    pub(crate) fn wait(&self, now: Instant) -> Duration {
        let mut b = self.clone();
        b.refill(now);
        if b.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - b.tokens) / b.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, t0);
        for _ in 0..20 {
            assert!(b.take(t0));
        }
        assert!(!b.take(t0));
        let w = b.wait(t0);
        assert!(
            w > Duration::from_millis(90) && w <= Duration::from_millis(100),
            "{w:?}"
        );
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..20 {
            assert!(b.take(later));
        }
        assert!(!b.take(later));
    }
}
