//! The transaction layer (RFC 3261 §17, with the INVITE changes of RFC 6026), sans-IO.
//!
//! # Design
//!
//! A [`TransactionLayer`] holds every client and server transaction of one SIP endpoint
//! (a UA, or the stateful part of a proxy). Like `quinn-proto`'s `Connection`, it never
//! touches a socket or reads the clock:
//!
//! - **Inputs** are [`TransactionLayer::handle_incoming`] (a parsed message, where it came
//!   from, whether the transport is reliable), [`TransactionLayer::send_request`],
//!   [`TransactionLayer::respond`], [`TransactionLayer::cancel`],
//!   [`TransactionLayer::handle_transport_error`] and [`TransactionLayer::handle_timeout`].
//!   Each takes `now: Instant`.
//! - **Outputs** are polled: [`TransactionLayer::poll_transmit`] (bytes to write and where),
//!   [`TransactionLayer::poll_event`] (what the transaction user, the TU, must see) and
//!   [`TransactionLayer::poll_timeout`] (when to call `handle_timeout` next).
//!
//! Because time only enters as an argument, the state machines are deterministic: the tests
//! below run minutes of timer behaviour (Timer B's 32 s, Timer D's 32 s, Timer H's 64·T1)
//! in microseconds by jumping `now` to the next `poll_timeout()`, and a bug report can be
//! replayed from a log of inputs.
//!
//! # Driving it
//!
//! The tokio side is one task per endpoint (or per shard), shaped like quinn's driver:
//!
//! ```text
//! loop {
//!     while let Some(t) = layer.poll_transmit() { socket_or_connection(t.dest).write(t.bytes) }
//!     while let Some(ev) = layer.poll_event() { tu.handle(ev) /* may call respond()/send_request() */ }
//!     let deadline = layer.poll_timeout();
//!     select! {
//!         (bytes, src) = udp.recv_from() => match parse(&bytes) {
//!             Ok(msg) => layer.handle_incoming(msg, src, false, Instant::now()),
//!             Err(e) => { /* bad_request(..) for requests, drop responses */ }
//!         },
//!         frame = tcp_framer_rx.recv() => layer.handle_incoming(frame.msg, frame.src, true, Instant::now()),
//!         _ = sleep_until(deadline) => layer.handle_timeout(Instant::now()),
//!     }
//! }
//! ```
//!
//! Transport errors (a connection refused, an ICMP unreachable) are reported back with
//! [`TransactionLayer::handle_transport_error`] using the [`Transmit::tx`] key.
//!
//! # Choices worth knowing
//!
//! - `send_request` pushes our own top Via with a fresh RFC 3261 branch (magic cookie
//!   `z9hG4bK` followed by 64 pseudo-random bits from a seeded generator: the seed comes from
//!   [`Config::branch_seed`], so tests are reproducible; a driver seeds it from the OS).
//! - Requests arriving get `received` (when the Via host is not the source address) and a
//!   filled-in `rport` (RFC 3581, when asked for) on their top Via (§18.2.1), and responses go
//!   back per §18.2.2: on the same connection for reliable transports, otherwise to
//!   `received`/`rport`.
//! - Timer A doubles without a cap, as RFC 3261 §17.1.1.2 says (only Timer E and Timer G are
//!   capped at T2); with the default T1 this gives the familiar 7 INVITE transmissions over
//!   Timer B's 32 s.
//! - CANCEL is answered here (§9.2): `200` and [`Event::Cancelled`] if it matches an INVITE
//!   server transaction, `481` otherwise. The TU then answers the INVITE with `487`.
//! - RFC 6026: a 2xx moves the INVITE server transaction to *Accepted* (Timer L) and the
//!   client transaction to *Accepted* (Timer M), where 2xx retransmissions go to the TU so it
//!   can re-send its ACK. Retransmitting the 2xx until the ACK arrives (§13.3.1.4) is the UAS
//!   core's job; this layer does it on the core's behalf while the server transaction is in
//!   Accepted (T1 doubling up to T2, unreliable transports only), stops on the ACK, which it
//!   matches by Call-ID, CSeq number and tags, and reports [`Event::Timeout`] if no ACK came
//!   before Timer L.
//! - The ACK to a 2xx is not a transaction: the TU sends it with
//!   [`TransactionLayer::send_ack`] and receives it as [`Event::Ack`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::ParseError;
use crate::header::HeaderName;
use crate::message::{Message, Request, Response};
use crate::method::{Method, StatusCode};
use crate::typed::{Via, BRANCH_MAGIC_COOKIE};
use crate::uri::{Host, Uri};

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The token written in a Via (`UDP`, `TCP`, `TLS`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The default port (5060, or 5061 for TLS).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Tls => 5061,
            _ => 5060,
        }
    }
}

/// Where a message came from or goes to: an address and the transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransportAddr {
    pub addr: SocketAddr,
    pub transport: Transport,
}

impl TransportAddr {
    /// `addr` over `transport`.
    pub fn new(addr: SocketAddr, transport: Transport) -> TransportAddr {
        TransportAddr { addr, transport }
    }
}

impl fmt::Display for TransportAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.transport.via_token())
    }
}

/// Timer values and our identity in Vias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// RTT estimate (RFC 3261 default 500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Maximum time a message may stay in the network (5 s).
    pub t4: Duration,
    /// Timer D: wait time for response retransmits over unreliable transports (≥ 32 s).
    pub timer_d: Duration,
    /// How long an INVITE server transaction waits for the TU before sending `100 Trying`
    /// itself (§17.2.1: 200 ms).
    pub trying_delay: Duration,
    /// The sent-by host of our Vias.
    pub via_host: Host,
    /// The sent-by port of our Vias (`None`: the transport's default port).
    pub via_port: Option<u16>,
    /// Seed of the branch generator. Use a random value in production.
    pub branch_seed: u64,
}

impl Config {
    /// RFC 3261 default timers, with `host[:port]` as our Via sent-by.
    pub fn new(via_host: Host, via_port: Option<u16>) -> Config {
        Config {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_d: Duration::from_secs(32),
            trying_delay: Duration::from_millis(200),
            via_host,
            via_port,
            branch_seed: 0x0005_eed0_fe17_e17e,
        }
    }

    fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// Identifies a client transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxKey(u64);

/// Identifies a server transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxKey(u64);

/// Either kind of transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum TxKey {
    Client(ClientTxKey),
    Server(ServerTxKey),
}

/// Bytes to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dest: TransportAddr,
    pub bytes: Bytes,
    /// The transaction this belongs to, for [`TransactionLayer::handle_transport_error`]
    /// (`None` for a stateless ACK).
    pub tx: Option<TxKey>,
}

/// What the transaction user must learn.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new request (not ACK, not CANCEL): answer it with [`TransactionLayer::respond`].
    Request {
        key: ServerTxKey,
        request: Request,
        source: TransportAddr,
    },
    /// An ACK for a 2xx (RFC 2543 ACKs matching an Accepted transaction included). `key` is
    /// the INVITE server transaction it acknowledges, if still known.
    Ack {
        key: Option<ServerTxKey>,
        request: Request,
        source: TransportAddr,
    },
    /// A response to one of our requests (2xx retransmissions included, RFC 6026).
    Response {
        key: ClientTxKey,
        response: Response,
    },
    /// A CANCEL matched this INVITE server transaction while it was proceeding; it has been
    /// answered with `200`. Answer the INVITE (usually `487 Request Terminated`).
    Cancelled { key: ServerTxKey, cancel: Request },
    /// Timer B or F fired (no final response), Timer H fired (no ACK for our non-2xx), or
    /// Timer L fired without the ACK for our 2xx.
    Timeout { key: TxKey },
    /// The driver reported a transport failure for this transaction.
    TransportError { key: TxKey },
    /// The transaction is gone; its key will not be used again.
    Terminated { key: TxKey },
}

/// State of a client transaction (Terminated ones no longer exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientState {
    /// INVITE sent, nothing heard.
    Calling,
    /// Non-INVITE sent, nothing heard.
    Trying,
    Proceeding,
    Completed,
    /// RFC 6026: a 2xx to our INVITE arrived.
    Accepted,
}

/// State of a server transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerState {
    /// Non-INVITE received, no response yet.
    Trying,
    Proceeding,
    Completed,
    /// RFC 6026: we sent a 2xx to the INVITE.
    Accepted,
    /// The ACK for our non-2xx final response arrived.
    Confirmed,
}

/// Counters for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Responses matching no client transaction, dropped (§17.1.3).
    pub stray_responses: u64,
    /// Request retransmissions absorbed by a server transaction.
    pub absorbed_requests: u64,
    /// Response retransmissions absorbed by a client transaction.
    pub absorbed_responses: u64,
    /// Retransmissions we sent (timers A, E, G, the 2xx timer, and re-sent responses).
    pub retransmissions: u64,
    /// Messages dropped because a header the layer needs is malformed or missing.
    pub malformed: u64,
}

/// Why a request could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// ACK is not a transaction: use `send_ack`.
    #[error("ACK is sent with send_ack, not as a transaction")]
    AckIsNotATransaction,
    /// The request's CSeq is missing or malformed.
    #[error("bad CSeq: {0}")]
    BadCSeq(ParseError),
    /// The CSeq method differs from the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
}

/// Why a response could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RespondError {
    /// No such server transaction (it terminated, or never existed).
    #[error("unknown server transaction")]
    UnknownTransaction,
    /// The transaction already sent a final response (only 2xx retransmissions of an
    /// accepted INVITE are allowed after that).
    #[error("a final response was already sent")]
    AlreadyFinal,
}

/// Why a CANCEL could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CancelError {
    /// No such INVITE client transaction.
    #[error("unknown INVITE client transaction")]
    UnknownTransaction,
    /// §9.1: a CANCEL must not be sent before a provisional response arrived, nor after a
    /// final one.
    #[error("the INVITE is not in the Proceeding state")]
    NotProceeding,
}

/// The transaction timers, named as in RFC 3261 / RFC 6026, plus our two helpers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timer {
    A,
    B,
    D,
    E,
    F,
    K,
    G,
    H,
    I,
    J,
    L,
    M,
    /// §17.2.1: send `100 Trying` if the TU is silent for 200 ms.
    Trying,
    /// §13.3.1.4: retransmit the 2xx until the ACK arrives.
    Retransmit2xx,
}

/// §17.2.3 RFC 3261 matching key: branch, sent-by, method (ACK counted as INVITE).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServerMatch {
    branch: String,
    sent_by: String,
    method: Method,
}

/// What an ACK for a 2xx carries: Call-ID, CSeq number, From tag, To tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AckMatch {
    call_id: String,
    seq: u32,
    from_tag: String,
    to_tag: String,
}

/// The RFC 2543 fields of the request that created a transaction (§17.2.3).
#[derive(Debug, Clone)]
struct LegacyMatch {
    uri: Uri,
    to_tag: Option<String>,
    from_tag: Option<String>,
    call_id: String,
    seq: u32,
    method: Method,
    top_via: Via,
}

#[derive(Debug)]
struct ClientTx {
    invite: bool,
    state: ClientState,
    request: Request,
    bytes: Bytes,
    dest: TransportAddr,
    reliable: bool,
    branch: String,
    /// Current Timer A/E interval.
    interval: Duration,
    /// The ACK for a non-2xx final response, re-sent on each retransmission of it.
    ack: Option<Bytes>,
}

#[derive(Debug)]
struct ServerTx {
    invite: bool,
    state: ServerState,
    request: Request,
    reliable: bool,
    response_dest: TransportAddr,
    index: Option<ServerMatch>,
    legacy: Option<LegacyMatch>,
    /// The most recent response, re-sent on request retransmissions.
    last_response: Option<Bytes>,
    /// The To tag of our latest response (RFC 2543 ACK matching, §9.2 CANCEL responses).
    to_tag: Option<String>,
    /// Current Timer G / 2xx retransmission interval.
    interval: Duration,
    /// For an accepted INVITE: how its ACK is recognised, and whether it came.
    ack_match: Option<AckMatch>,
    acked: bool,
}

/// All transactions of one endpoint. See the [module docs](self).
///
/// ```
/// use std::time::Instant;
/// use entente_sip_proto::transaction::{Config, Event, TransactionLayer, Transport, TransportAddr};
/// use entente_sip_proto::{parse, Host, Message, StatusCode};
///
/// let mut uas = TransactionLayer::new(Config::new(Host::Domain("example.com".into()), None));
/// let peer = TransportAddr::new("192.0.2.1:5060".parse().unwrap(), Transport::Udp);
/// let msg = parse(b"OPTIONS sip:example.com SIP/2.0\r\n\
/// Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@example.org>;tag=1\r\n\
/// To: <sip:example.com>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")?;
/// let t0 = Instant::now();
/// uas.handle_incoming(msg, peer, false, t0);
/// let Some(Event::Request { key, request, .. }) = uas.poll_event() else { panic!() };
/// uas.respond(key, request.response(StatusCode::OK, Some("x")), t0)?;
/// let out = uas.poll_transmit().unwrap();
/// assert_eq!(out.dest, peer);
/// assert!(out.bytes.starts_with(b"SIP/2.0 200 OK"));
/// // Timer J keeps the transaction for retransmissions, 64*T1 = 32 s.
/// assert_eq!(uas.poll_timeout(), Some(t0 + std::time::Duration::from_secs(32)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TransactionLayer {
    config: Config,
    next_id: u64,
    branch_counter: u64,
    clients: HashMap<ClientTxKey, ClientTx>,
    servers: HashMap<ServerTxKey, ServerTx>,
    client_index: HashMap<(String, Method), ClientTxKey>,
    server_index: HashMap<ServerMatch, ServerTxKey>,
    legacy_servers: Vec<ServerTxKey>,
    ack_index: HashMap<AckMatch, ServerTxKey>,
    /// Armed timers; the heap may hold stale entries, which are skipped.
    armed: HashMap<(TxKey, Timer), Instant>,
    heap: BinaryHeap<Reverse<(Instant, TxKey, Timer)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl TransactionLayer {
    /// An empty layer.
    pub fn new(config: Config) -> TransactionLayer {
        TransactionLayer {
            config,
            next_id: 1,
            branch_counter: 0,
            clients: HashMap::new(),
            servers: HashMap::new(),
            client_index: HashMap::new(),
            server_index: HashMap::new(),
            legacy_servers: Vec::new(),
            ack_index: HashMap::new(),
            armed: HashMap::new(),
            heap: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The state of a client transaction, `None` once terminated.
    pub fn client_state(&self, key: ClientTxKey) -> Option<ClientState> {
        self.clients.get(&key).map(|t| t.state)
    }

    /// The state of a server transaction, `None` once terminated.
    pub fn server_state(&self, key: ServerTxKey) -> Option<ServerState> {
        self.servers.get(&key).map(|t| t.state)
    }

    /// The request of a client transaction (with our top Via).
    pub fn client_request(&self, key: ClientTxKey) -> Option<&Request> {
        self.clients.get(&key).map(|t| &t.request)
    }

    /// The request of a server transaction (with `received`/`rport` added to its top Via).
    pub fn server_request(&self, key: ServerTxKey) -> Option<&Request> {
        self.servers.get(&key).map(|t| &t.request)
    }

    /// Number of live transactions: (client, server).
    pub fn counts(&self) -> (usize, usize) {
        (self.clients.len(), self.servers.len())
    }

    /// A fresh RFC 3261 branch: the magic cookie and 64 pseudo-random bits.
    pub fn new_branch(&mut self) -> String {
        self.branch_counter = self.branch_counter.wrapping_add(1);
        let r = splitmix64(self.config.branch_seed ^ self.branch_counter.wrapping_mul(0x9E37));
        format!("{BRANCH_MAGIC_COOKIE}{r:016x}")
    }

    fn our_via(&mut self, transport: Transport) -> Via {
        let branch = self.new_branch();
        let mut via = Via::new(
            transport.via_token(),
            self.config.via_host.clone(),
            self.config.via_port,
            &branch,
        );
        via.params.set("rport", None);
        via
    }

    // ----------------------------------------------------------------------------------
    // Outputs
    // ----------------------------------------------------------------------------------

    /// The next datagram or frame to write.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, key, timer))) = self.heap.peek().copied() {
            if self.armed.get(&(key, timer)) == Some(&at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, key, timer))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.armed.get(&(key, timer)) != Some(&at) {
                continue;
            }
            self.armed.remove(&(key, timer));
            match key {
                TxKey::Client(k) => self.client_timer(k, timer, now),
                TxKey::Server(k) => self.server_timer(k, timer, now),
            }
        }
    }

    fn arm(&mut self, key: TxKey, timer: Timer, at: Instant) {
        self.armed.insert((key, timer), at);
        self.heap.push(Reverse((at, key, timer)));
    }

    fn disarm(&mut self, key: TxKey, timer: Timer) {
        self.armed.remove(&(key, timer));
    }

    fn push_transmit(&mut self, dest: TransportAddr, bytes: Bytes, tx: Option<TxKey>) {
        self.transmits.push_back(Transmit { dest, bytes, tx });
    }

    // ----------------------------------------------------------------------------------
    // Client transactions (§17.1)
    // ----------------------------------------------------------------------------------

    /// Starts a client transaction: pushes our top Via (fresh branch, `rport`), sends the
    /// request to `dest`, and arms Timers A/B (INVITE) or E/F (non-INVITE); A and E only
    /// when `reliable` is false.
    pub fn send_request(
        &mut self,
        mut request: Request,
        dest: TransportAddr,
        reliable: bool,
        now: Instant,
    ) -> Result<ClientTxKey, SendError> {
        if request.method == Method::Ack {
            return Err(SendError::AckIsNotATransaction);
        }
        let cseq = request.headers.cseq().map_err(SendError::BadCSeq)?;
        if cseq.method != request.method {
            return Err(SendError::CSeqMethodMismatch);
        }
        let via = self.our_via(dest.transport);
        request.headers.push_front("Via", via.to_string());
        let branch = via.branch().unwrap_or_default().to_owned();
        Ok(self.start_client(request, branch, dest, reliable, now))
    }

    fn start_client(
        &mut self,
        request: Request,
        branch: String,
        dest: TransportAddr,
        reliable: bool,
        now: Instant,
    ) -> ClientTxKey {
        let key = ClientTxKey(self.next_id);
        self.next_id += 1;
        let invite = request.method == Method::Invite;
        let bytes = request.to_bytes();
        let tk = TxKey::Client(key);
        self.push_transmit(dest, bytes.clone(), Some(tk));
        let t1 = self.config.t1;
        let t64 = self.config.t1x64();
        if invite {
            // §17.1.1.2: Timer A (unreliable only) and Timer B, both from now.
            if !reliable {
                self.arm(tk, Timer::A, now + t1);
            }
            self.arm(tk, Timer::B, now + t64);
        } else {
            // §17.1.2.2: Timer E (unreliable only) and Timer F.
            if !reliable {
                self.arm(tk, Timer::E, now + t1);
            }
            self.arm(tk, Timer::F, now + t64);
        }
        self.client_index
            .insert((branch.clone(), request.method.clone()), key);
        self.clients.insert(
            key,
            ClientTx {
                invite,
                state: if invite {
                    ClientState::Calling
                } else {
                    ClientState::Trying
                },
                request,
                bytes,
                dest,
                reliable,
                branch,
                interval: t1,
                ack: None,
            },
        );
        key
    }

    /// Sends a CANCEL for an INVITE client transaction in Proceeding (§9.1): same
    /// Request-URI, Call-ID, From, To, CSeq number and top Via (hence branch) as the INVITE,
    /// and its Route headers. The CANCEL is its own non-INVITE client transaction.
    pub fn cancel(
        &mut self,
        invite: ClientTxKey,
        now: Instant,
    ) -> Result<ClientTxKey, CancelError> {
        let tx = self
            .clients
            .get(&invite)
            .filter(|t| t.invite)
            .ok_or(CancelError::UnknownTransaction)?;
        if tx.state != ClientState::Proceeding {
            return Err(CancelError::NotProceeding);
        }
        let mut cancel = Request::new(Method::Cancel, tx.request.uri.clone());
        copy_for_ack_or_cancel(&tx.request, &mut cancel, None, "CANCEL");
        let (branch, dest, reliable) = (tx.branch.clone(), tx.dest, tx.reliable);
        Ok(self.start_client(cancel, branch, dest, reliable, now))
    }

    /// Sends an ACK for a 2xx (§13.2.2.4), which is not a transaction: pushes our top Via
    /// with a fresh branch and queues it once. Call again for each 2xx retransmission.
    pub fn send_ack(&mut self, mut ack: Request, dest: TransportAddr) {
        let via = self.our_via(dest.transport);
        ack.headers.push_front("Via", via.to_string());
        self.push_transmit(dest, ack.to_bytes(), None);
    }

    /// Sends a message outside any transaction (a stateless proxy's forwarding, a response
    /// to a request that could not be parsed), as is.
    pub fn send_stateless(&mut self, message: &Message, dest: TransportAddr) {
        self.push_transmit(dest, message.to_bytes(), None);
    }

    fn client_timer(&mut self, key: ClientTxKey, timer: Timer, now: Instant) {
        let t2 = self.config.t2;
        let tk = TxKey::Client(key);
        let Some(tx) = self.clients.get_mut(&key) else {
            return;
        };
        match (timer, tx.state) {
            // §17.1.1.2: retransmit and double Timer A (no cap).
            (Timer::A, ClientState::Calling) => {
                tx.interval = tx.interval.saturating_mul(2);
                let (dest, bytes, next) = (tx.dest, tx.bytes.clone(), now + tx.interval);
                self.stats.retransmissions += 1;
                self.push_transmit(dest, bytes, Some(tk));
                self.arm(tk, Timer::A, next);
            }
            // §17.1.2.2: in Trying, double E up to T2; in Proceeding, every T2.
            (Timer::E, ClientState::Trying | ClientState::Proceeding) => {
                tx.interval = if tx.state == ClientState::Trying {
                    tx.interval.saturating_mul(2).min(t2)
                } else {
                    t2
                };
                let (dest, bytes, next) = (tx.dest, tx.bytes.clone(), now + tx.interval);
                self.stats.retransmissions += 1;
                self.push_transmit(dest, bytes, Some(tk));
                self.arm(tk, Timer::E, next);
            }
            (Timer::B, ClientState::Calling)
            | (Timer::F, ClientState::Trying | ClientState::Proceeding) => {
                self.events.push_back(Event::Timeout { key: tk });
                self.terminate_client(key);
            }
            (Timer::D, ClientState::Completed)
            | (Timer::K, ClientState::Completed)
            | (Timer::M, ClientState::Accepted) => self.terminate_client(key),
            _ => {}
        }
    }

    fn terminate_client(&mut self, key: ClientTxKey) {
        if let Some(tx) = self.clients.remove(&key) {
            self.client_index.remove(&(tx.branch, tx.request.method));
            let tk = TxKey::Client(key);
            for t in [
                Timer::A,
                Timer::B,
                Timer::D,
                Timer::E,
                Timer::F,
                Timer::K,
                Timer::M,
            ] {
                self.disarm(tk, t);
            }
            self.events.push_back(Event::Terminated { key: tk });
        }
    }

    fn handle_response(&mut self, response: Response, now: Instant) {
        let (Ok(via), Ok(cseq)) = (response.headers.top_via(), response.headers.cseq()) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(branch) = via.branch() else {
            self.stats.stray_responses += 1;
            return;
        };
        // §17.1.3: top Via branch and CSeq method.
        let Some(&key) = self.client_index.get(&(branch.to_owned(), cseq.method)) else {
            self.stats.stray_responses += 1;
            return;
        };
        let Some(tx) = self.clients.get_mut(&key) else {
            self.stats.stray_responses += 1;
            return;
        };
        let tk = TxKey::Client(key);
        let status = response.status;
        let t4 = self.config.t4;
        let timer_d = self.config.timer_d;
        let t64 = self.config.t1x64();
        if tx.invite {
            match tx.state {
                ClientState::Calling | ClientState::Proceeding => {
                    if status.is_provisional() {
                        // §17.1.1.2: stop retransmitting; Timer B no longer applies.
                        tx.state = ClientState::Proceeding;
                        self.disarm(tk, Timer::A);
                        self.disarm(tk, Timer::B);
                    } else if status.is_success() {
                        // RFC 6026 §8.4: Accepted, Timer M.
                        tx.state = ClientState::Accepted;
                        self.disarm(tk, Timer::A);
                        self.disarm(tk, Timer::B);
                        self.arm(tk, Timer::M, now + t64);
                    } else {
                        // §17.1.1.3: ACK the non-2xx final response, enter Completed.
                        tx.state = ClientState::Completed;
                        let mut ack = Request::new(Method::Ack, tx.request.uri.clone());
                        copy_for_ack_or_cancel(&tx.request, &mut ack, Some(&response), "ACK");
                        let bytes = ack.to_bytes();
                        tx.ack = Some(bytes.clone());
                        let (dest, reliable) = (tx.dest, tx.reliable);
                        self.disarm(tk, Timer::A);
                        self.disarm(tk, Timer::B);
                        self.push_transmit(dest, bytes, Some(tk));
                        self.events.push_back(Event::Response { key, response });
                        if reliable {
                            self.terminate_client(key);
                        } else {
                            self.arm(tk, Timer::D, now + timer_d);
                        }
                        return;
                    }
                    self.events.push_back(Event::Response { key, response });
                }
                ClientState::Accepted => {
                    // RFC 6026: 2xx retransmissions (or 2xx from other forks) go to the TU,
                    // which re-sends its ACK; anything else is absorbed.
                    if status.is_success() {
                        self.events.push_back(Event::Response { key, response });
                    } else {
                        self.stats.absorbed_responses += 1;
                    }
                }
                ClientState::Completed => {
                    // A retransmitted final response: re-send the ACK, tell nobody.
                    self.stats.absorbed_responses += 1;
                    if !status.is_provisional() {
                        if let Some(ack) = tx.ack.clone() {
                            let dest = tx.dest;
                            self.stats.retransmissions += 1;
                            self.push_transmit(dest, ack, Some(tk));
                        }
                    }
                }
                ClientState::Trying => {}
            }
        } else {
            match tx.state {
                ClientState::Trying | ClientState::Proceeding => {
                    if status.is_provisional() {
                        if tx.state == ClientState::Trying {
                            tx.state = ClientState::Proceeding;
                        }
                        self.events.push_back(Event::Response { key, response });
                    } else {
                        // §17.1.2.2: Completed, Timer K (T4, or 0 when reliable).
                        tx.state = ClientState::Completed;
                        let reliable = tx.reliable;
                        self.disarm(tk, Timer::E);
                        self.disarm(tk, Timer::F);
                        self.events.push_back(Event::Response { key, response });
                        if reliable {
                            self.terminate_client(key);
                        } else {
                            self.arm(tk, Timer::K, now + t4);
                        }
                    }
                }
                _ => self.stats.absorbed_responses += 1,
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // Server transactions (§17.2)
    // ----------------------------------------------------------------------------------

    /// Feeds one parsed message that arrived from `source`. `reliable` is whether its
    /// transport is (TCP, TLS, WebSocket): it governs retransmissions of our responses.
    pub fn handle_incoming(
        &mut self,
        message: Message,
        source: TransportAddr,
        reliable: bool,
        now: Instant,
    ) {
        match message {
            Message::Response(r) => self.handle_response(r, now),
            Message::Request(r) => self.handle_request(r, source, reliable, now),
        }
    }

    fn handle_request(
        &mut self,
        mut request: Request,
        source: TransportAddr,
        reliable: bool,
        now: Instant,
    ) {
        let (Ok(mut via), Ok(cseq)) = (request.headers.top_via(), request.headers.cseq()) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(call_id) = request.headers.call_id().map(str::to_owned) else {
            self.stats.malformed += 1;
            return;
        };
        // §18.2.1 / RFC 3581: record where the request really came from.
        let src_ip = source.addr.ip();
        let host_is_src = match &via.host {
            Host::Ipv4(a) => std::net::IpAddr::V4(*a) == src_ip,
            Host::Ipv6(a) => std::net::IpAddr::V6(*a) == src_ip,
            _ => false,
        };
        let mut via_changed = false;
        if !host_is_src {
            via.params.set("received", Some(&src_ip.to_string()));
            via_changed = true;
        }
        if via.rport() == Some(None) {
            via.params
                .set("rport", Some(&source.addr.port().to_string()));
            via_changed = true;
        }
        if via_changed && request.headers.replace_top_via(&via).is_err() {
            self.stats.malformed += 1;
            return;
        }
        let response_dest = response_destination(&via, source, reliable);

        let match_method = if request.method == Method::Ack {
            Method::Invite
        } else {
            request.method.clone()
        };
        let from_tag = request
            .headers
            .from()
            .ok()
            .and_then(|f| f.tag().map(str::to_owned));
        let to_tag = request
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned));

        let rfc3261 = via.has_rfc3261_branch();
        let index = rfc3261.then(|| ServerMatch {
            branch: via.branch().unwrap_or_default().to_owned(),
            sent_by: sent_by(&via),
            method: match_method.clone(),
        });
        let existing = match &index {
            Some(ix) => self.server_index.get(ix).copied(),
            None => self.find_legacy(
                &request,
                &via,
                &call_id,
                cseq.seq,
                &match_method,
                &from_tag,
                &to_tag,
            ),
        };

        if let Some(key) = existing {
            self.server_retransmission(key, request, source, now);
            return;
        }

        if request.method == Method::Ack {
            // Not a transaction's ACK: the ACK for a 2xx, for the TU (§17.2.3, RFC 6026).
            let ack_key = match (from_tag, to_tag) {
                (Some(from_tag), Some(to_tag)) => self
                    .ack_index
                    .get(&AckMatch {
                        call_id,
                        seq: cseq.seq,
                        from_tag,
                        to_tag,
                    })
                    .copied(),
                _ => None,
            };
            if let Some(k) = ack_key {
                self.note_2xx_ack(k);
            }
            self.events.push_back(Event::Ack {
                key: ack_key,
                request,
                source,
            });
            return;
        }

        // A new server transaction.
        let key = ServerTxKey(self.next_id);
        self.next_id += 1;
        let tk = TxKey::Server(key);
        let invite = request.method == Method::Invite;
        let legacy = (!rfc3261).then(|| LegacyMatch {
            uri: request.uri.clone(),
            to_tag: to_tag.clone(),
            from_tag: from_tag.clone(),
            call_id: call_id.clone(),
            seq: cseq.seq,
            method: request.method.clone(),
            top_via: via.clone(),
        });
        if let Some(ix) = &index {
            self.server_index.insert(ix.clone(), key);
        } else {
            self.legacy_servers.push(key);
        }
        let is_cancel = request.method == Method::Cancel;
        self.servers.insert(
            key,
            ServerTx {
                invite,
                state: if invite {
                    ServerState::Proceeding
                } else {
                    ServerState::Trying
                },
                request: request.clone(),
                reliable,
                response_dest,
                index: index.clone(),
                legacy,
                last_response: None,
                to_tag: None,
                interval: self.config.t1,
                ack_match: None,
                acked: false,
            },
        );
        if invite {
            // §17.2.1: 100 Trying unless the TU answers within 200 ms.
            let at = now + self.config.trying_delay;
            self.arm(tk, Timer::Trying, at);
        }
        if is_cancel {
            self.handle_cancel(key, request, via, &call_id, cseq.seq, from_tag, to_tag, now);
            return;
        }
        self.events.push_back(Event::Request {
            key,
            request,
            source,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn find_legacy(
        &self,
        request: &Request,
        via: &Via,
        call_id: &str,
        seq: u32,
        match_method: &Method,
        from_tag: &Option<String>,
        to_tag: &Option<String>,
    ) -> Option<ServerTxKey> {
        // §17.2.3, RFC 2543 rules: Request-URI, From tag, Call-ID, CSeq, top Via, and the To
        // tag (for an ACK: the To tag of our response).
        self.legacy_servers.iter().copied().find(|k| {
            let Some(tx) = self.servers.get(k) else {
                return false;
            };
            let Some(m) = &tx.legacy else { return false };
            let to_ok = if request.method == Method::Ack {
                to_tag == &tx.to_tag || to_tag == &m.to_tag
            } else {
                to_tag == &m.to_tag
            };
            &m.method == match_method
                && m.uri.equivalent(&request.uri)
                && &m.from_tag == from_tag
                && m.call_id == call_id
                && m.seq == seq
                && via_eq(&m.top_via, via)
                && to_ok
        })
    }

    fn server_retransmission(
        &mut self,
        key: ServerTxKey,
        request: Request,
        source: TransportAddr,
        now: Instant,
    ) {
        let tk = TxKey::Server(key);
        let t4 = self.config.t4;
        let Some(tx) = self.servers.get_mut(&key) else {
            return;
        };
        if request.method == Method::Ack {
            match tx.state {
                // §17.2.1: the ACK for our non-2xx: Confirmed, Timer I; not passed to the TU.
                ServerState::Completed => {
                    tx.state = ServerState::Confirmed;
                    let reliable = tx.reliable;
                    self.disarm(tk, Timer::G);
                    self.disarm(tk, Timer::H);
                    if reliable {
                        self.terminate_server(key);
                    } else {
                        self.arm(tk, Timer::I, now + t4);
                    }
                }
                // An RFC 2543 ACK for our 2xx (same Via as the INVITE): for the TU.
                ServerState::Accepted => {
                    self.note_2xx_ack(key);
                    self.events.push_back(Event::Ack {
                        key: Some(key),
                        request,
                        source,
                    });
                }
                _ => self.stats.absorbed_requests += 1,
            }
            return;
        }
        // A retransmitted request: absorbed, and the last response (if any) re-sent, except
        // in Accepted where retransmissions are simply absorbed (RFC 6026 §7.1).
        self.stats.absorbed_requests += 1;
        if matches!(tx.state, ServerState::Proceeding | ServerState::Completed) {
            if let Some(bytes) = tx.last_response.clone() {
                let dest = tx.response_dest;
                self.stats.retransmissions += 1;
                self.push_transmit(dest, bytes, Some(tk));
            }
        }
    }

    fn note_2xx_ack(&mut self, key: ServerTxKey) {
        if let Some(tx) = self.servers.get_mut(&key) {
            tx.acked = true;
        }
        self.disarm(TxKey::Server(key), Timer::Retransmit2xx);
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_cancel(
        &mut self,
        cancel_key: ServerTxKey,
        cancel: Request,
        via: Via,
        call_id: &str,
        seq: u32,
        from_tag: Option<String>,
        to_tag: Option<String>,
        now: Instant,
    ) {
        // §9.2: the transaction the CANCEL refers to is found with the §17.2.3 rules, the
        // method ignored, i.e. as if it were the INVITE.
        let invite = if via.has_rfc3261_branch() {
            self.server_index
                .get(&ServerMatch {
                    branch: via.branch().unwrap_or_default().to_owned(),
                    sent_by: sent_by(&via),
                    method: Method::Invite,
                })
                .copied()
        } else {
            self.find_legacy(
                &cancel,
                &via,
                call_id,
                seq,
                &Method::Invite,
                &from_tag,
                &to_tag,
            )
        };
        let status = if invite.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CALL_DOES_NOT_EXIST
        };
        // §9.2: the To tag of the 200 should be the one of our response to the INVITE.
        let to_tag_for_resp = invite
            .and_then(|k| self.servers.get(&k))
            .and_then(|t| t.to_tag.clone())
            .unwrap_or_else(|| format!("{:x}", splitmix64(cancel_key.0 ^ self.config.branch_seed)));
        let resp = cancel.response(status, Some(&to_tag_for_resp));
        let _ = self.respond(cancel_key, resp, now);
        if let Some(ik) = invite {
            if self.server_state(ik) == Some(ServerState::Proceeding) {
                self.events.push_back(Event::Cancelled { key: ik, cancel });
            }
        }
    }

    /// Forgets a server transaction without answering it: for requests that expect no
    /// response, such as Lync's BENOTIFY ("best-effort NOTIFY"). Retransmissions of the request
    /// that arrive later start a new transaction. Returns whether it existed.
    pub fn abandon(&mut self, key: ServerTxKey) -> bool {
        let known = self.servers.contains_key(&key);
        self.terminate_server(key);
        known
    }

    /// Sends `response` on server transaction `key` (§17.2.1 INVITE with RFC 6026, §17.2.2
    /// non-INVITE). A final response moves the transaction to Completed (arming G/H or J) or,
    /// for a 2xx to an INVITE, to Accepted (Timer L); later 2xx are allowed in Accepted.
    pub fn respond(
        &mut self,
        key: ServerTxKey,
        response: Response,
        now: Instant,
    ) -> Result<(), RespondError> {
        let tk = TxKey::Server(key);
        let t1 = self.config.t1;
        let t64 = self.config.t1x64();
        let tx = self
            .servers
            .get_mut(&key)
            .ok_or(RespondError::UnknownTransaction)?;
        let status = response.status;
        match tx.state {
            ServerState::Trying | ServerState::Proceeding => {}
            ServerState::Accepted if status.is_success() => {
                let bytes = response.to_bytes();
                let dest = tx.response_dest;
                tx.last_response = Some(bytes.clone());
                self.push_transmit(dest, bytes, Some(tk));
                return Ok(());
            }
            _ => return Err(RespondError::AlreadyFinal),
        }
        let bytes = response.to_bytes();
        let dest = tx.response_dest;
        let reliable = tx.reliable;
        tx.last_response = Some(bytes.clone());
        self.push_transmit(dest, bytes, Some(tk));
        self.disarm(tk, Timer::Trying);
        let Some(tx) = self.servers.get_mut(&key) else {
            return Ok(());
        };
        let to_tag = response
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned));
        if to_tag.is_some() {
            tx.to_tag = to_tag.clone();
        }
        if status.is_provisional() {
            if tx.state == ServerState::Trying {
                tx.state = ServerState::Proceeding;
            }
            return Ok(());
        }
        if !tx.invite {
            // §17.2.2: Completed, Timer J (64·T1, or 0 when reliable).
            tx.state = ServerState::Completed;
            if reliable {
                self.terminate_server(key);
            } else {
                self.arm(tk, Timer::J, now + t64);
            }
        } else if status.is_success() {
            // RFC 6026 §7.1: Accepted, Timer L; and we retransmit the 2xx until the ACK.
            tx.state = ServerState::Accepted;
            tx.interval = t1;
            let am = match (
                tx.request.headers.call_id(),
                tx.request.headers.cseq(),
                tx.request
                    .headers
                    .from()
                    .ok()
                    .and_then(|f| f.tag().map(str::to_owned)),
                to_tag,
            ) {
                (Some(c), Ok(cs), Some(f), Some(t)) => Some(AckMatch {
                    call_id: c.to_owned(),
                    seq: cs.seq,
                    from_tag: f,
                    to_tag: t,
                }),
                _ => None,
            };
            tx.ack_match = am.clone();
            if let Some(am) = am {
                self.ack_index.insert(am, key);
            }
            self.arm(tk, Timer::L, now + t64);
            if !reliable {
                self.arm(tk, Timer::Retransmit2xx, now + t1);
            }
        } else {
            // §17.2.1: Completed, Timer G (unreliable) and Timer H.
            tx.state = ServerState::Completed;
            tx.interval = t1;
            if !reliable {
                self.arm(tk, Timer::G, now + t1);
            }
            self.arm(tk, Timer::H, now + t64);
        }
        Ok(())
    }

    fn server_timer(&mut self, key: ServerTxKey, timer: Timer, now: Instant) {
        let t2 = self.config.t2;
        let tk = TxKey::Server(key);
        let Some(tx) = self.servers.get_mut(&key) else {
            return;
        };
        match (timer, tx.state) {
            (Timer::Trying, ServerState::Proceeding) if tx.last_response.is_none() => {
                let trying = tx.request.response(StatusCode::TRYING, None);
                let bytes = trying.to_bytes();
                tx.last_response = Some(bytes.clone());
                let dest = tx.response_dest;
                self.push_transmit(dest, bytes, Some(tk));
            }
            // §17.2.1: Timer G doubles up to T2; §13.3.1.4 likewise for the 2xx.
            (Timer::G, ServerState::Completed) | (Timer::Retransmit2xx, ServerState::Accepted) => {
                tx.interval = tx.interval.saturating_mul(2).min(t2);
                let next = now + tx.interval;
                if let Some(bytes) = tx.last_response.clone() {
                    let dest = tx.response_dest;
                    self.stats.retransmissions += 1;
                    self.push_transmit(dest, bytes, Some(tk));
                }
                self.arm(tk, timer, next);
            }
            (Timer::H, ServerState::Completed) => {
                self.events.push_back(Event::Timeout { key: tk });
                self.terminate_server(key);
            }
            (Timer::L, ServerState::Accepted) => {
                if !tx.acked {
                    self.events.push_back(Event::Timeout { key: tk });
                }
                self.terminate_server(key);
            }
            (Timer::I, ServerState::Confirmed) | (Timer::J, ServerState::Completed) => {
                self.terminate_server(key);
            }
            _ => {}
        }
    }

    fn terminate_server(&mut self, key: ServerTxKey) {
        if let Some(tx) = self.servers.remove(&key) {
            if let Some(ix) = tx.index {
                self.server_index.remove(&ix);
            }
            if tx.legacy.is_some() {
                self.legacy_servers.retain(|k| *k != key);
            }
            if let Some(am) = tx.ack_match {
                self.ack_index.remove(&am);
            }
            let tk = TxKey::Server(key);
            for t in [
                Timer::G,
                Timer::H,
                Timer::I,
                Timer::J,
                Timer::L,
                Timer::Trying,
                Timer::Retransmit2xx,
            ] {
                self.disarm(tk, t);
            }
            self.events.push_back(Event::Terminated { key: tk });
        }
    }

    /// The driver could not deliver a transmit of transaction `key` (§17.1.4, §17.2.4): the
    /// TU is told and the transaction terminates.
    pub fn handle_transport_error(&mut self, key: TxKey, _now: Instant) {
        let exists = match key {
            TxKey::Client(k) => self.clients.contains_key(&k),
            TxKey::Server(k) => self.servers.contains_key(&k),
        };
        if !exists {
            return;
        }
        self.events.push_back(Event::TransportError { key });
        match key {
            TxKey::Client(k) => self.terminate_client(k),
            TxKey::Server(k) => self.terminate_server(k),
        }
    }
}

/// Builds an ACK for a non-2xx final (§17.1.1.3) or a CANCEL (§9.1) from the original
/// request: Call-ID, From, the top Via only, CSeq number with the new method, Route headers,
/// and To from the response (ACK) or the request (CANCEL). Raw values are copied.
fn copy_for_ack_or_cancel(
    original: &Request,
    out: &mut Request,
    response: Option<&Response>,
    method: &str,
) {
    if let Ok(via) = original.headers.top_via() {
        out.headers.push("Via", via.to_string());
    }
    out.headers.push("Max-Forwards", "70");
    for h in original.headers.iter() {
        match h.name() {
            HeaderName::From | HeaderName::CallId | HeaderName::Route => {
                out.headers.push(h.raw_name(), h.value())
            }
            HeaderName::To if response.is_none() => out.headers.push(h.raw_name(), h.value()),
            _ => {}
        }
    }
    if let Some(to) = response.and_then(|r| r.headers.get(HeaderName::To)) {
        out.headers.push("To", to);
    }
    if let Ok(cseq) = original.headers.cseq() {
        out.headers.push("CSeq", format!("{} {method}", cseq.seq));
    }
    out.headers.push("Content-Length", "0");
}

/// `host:port` of a Via, lower-cased, with the transport's default port filled in.
fn sent_by(via: &Via) -> String {
    let default = if via.transport.eq_ignore_ascii_case("TLS") {
        5061
    } else {
        5060
    };
    format!(
        "{}:{}",
        via.host.to_string().to_ascii_lowercase(),
        via.port.unwrap_or(default)
    )
}

/// Top-Via equality for RFC 2543 matching: same transport, sent-by and parameters, ignoring
/// the `received`/`rport` values we added ourselves.
fn via_eq(a: &Via, b: &Via) -> bool {
    let strip = |v: &Via| {
        let mut v = v.clone();
        v.params.remove("received");
        v.params.remove("rport");
        v
    };
    let (a, b) = (strip(a), strip(b));
    a.transport.eq_ignore_ascii_case(&b.transport)
        && a.host.eq_ignore_case(&b.host)
        && a.port == b.port
        && a.params == b.params
}

/// §18.2.2 (and RFC 3581): where responses to a request go.
fn response_destination(via: &Via, source: TransportAddr, reliable: bool) -> TransportAddr {
    if reliable {
        return source;
    }
    let ip = via.received().unwrap_or(source.addr.ip());
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => via.port.unwrap_or(source.transport.default_port()),
    };
    TransportAddr::new(SocketAddr::new(ip, port), source.transport)
}

/// SplitMix64: a tiny, well-mixed generator for branch and tag values.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{is_req, is_resp, request, Pair, Side};

    const S: u64 = 1000;

    /// The keys of `Event::Request`s in `events`.
    fn requests(events: &[(Instant, Event)]) -> Vec<(ServerTxKey, Request)> {
        events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Request { key, request, .. } => Some((*key, request.clone())),
                _ => None,
            })
            .collect()
    }

    fn responses(events: &[(Instant, Event)]) -> Vec<u16> {
        events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Response { response, .. } => Some(response.status.code()),
                _ => None,
            })
            .collect()
    }

    /// Time (ms) of the first event matching `pred`.
    fn when(p: &Pair, events: &[(Instant, Event)], pred: impl Fn(&Event) -> bool) -> Option<u64> {
        events.iter().find(|(_, e)| pred(e)).map(|(t, _)| p.ms(*t))
    }

    /// Starts `method` from A to B and returns A's key and B's server key (if delivered).
    fn start(p: &mut Pair, method: Method) -> (ClientTxKey, Option<ServerTxKey>) {
        let dest = p.b.addr;
        let (now, reliable) = (p.now, p.reliable);
        let before = requests(&p.b.events).len();
        let key =
            p.a.layer
                .send_request(request(method, "call-1@a"), dest, reliable, now)
                .unwrap();
        p.drive();
        let skey = requests(&p.b.events).get(before).map(|(k, _)| *k);
        (key, skey)
    }

    fn respond(p: &mut Pair, key: ServerTxKey, code: u16) {
        let req = p.b.layer.server_request(key).unwrap().clone();
        let resp = req.response(StatusCode::new(code).unwrap(), Some("bob-1"));
        let now = p.now;
        p.b.layer.respond(key, resp, now).unwrap();
        p.drive();
    }

    #[test]
    fn timers_a_and_b_invite_over_udp() {
        let mut p = Pair::new(false);
        p.set_drop(|side, _| side == Side::A);
        let (key, _) = start(&mut p, Method::Invite);
        assert_eq!(p.a.layer.client_state(key), Some(ClientState::Calling));
        p.run_to_quiescence();
        // Timer A: T1, doubling without cap; Timer B: 64*T1.
        assert_eq!(
            p.sent_times(Side::A, |m| is_req(m, Method::Invite)),
            [0, 500, 1500, 3500, 7500, 15500, 31500]
        );
        let ev = p.take_events(Side::A);
        assert_eq!(
            when(
                &p,
                &ev,
                |e| matches!(e, Event::Timeout { key: TxKey::Client(k) } if *k == key)
            ),
            Some(32 * S)
        );
        assert!(matches!(ev.last(), Some((_, Event::Terminated { .. }))));
        assert_eq!(p.a.layer.client_state(key), None);
        assert_eq!(p.a.layer.poll_timeout(), None);
    }

    #[test]
    fn timers_e_and_f_non_invite_timeout() {
        let mut p = Pair::new(false);
        p.set_drop(|side, _| side == Side::A);
        let (key, _) = start(&mut p, Method::Message);
        p.run_to_quiescence();
        // Timer E doubles up to T2 (4 s); Timer F = 64*T1.
        assert_eq!(
            p.sent_times(Side::A, |m| is_req(m, Method::Message)),
            [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        let ev = p.take_events(Side::A);
        assert_eq!(
            when(&p, &ev, |e| *e
                == Event::Timeout {
                    key: TxKey::Client(key)
                }),
            Some(32 * S)
        );
        assert_eq!(p.a.layer.stats().retransmissions, 10);
    }

    #[test]
    fn timer_e_in_proceeding_uses_t2_and_provisional_is_resent() {
        let mut p = Pair::new(false);
        let (key, skey) = start(&mut p, Method::Subscribe);
        let skey = skey.unwrap();
        respond(&mut p, skey, 100);
        assert_eq!(p.a.layer.client_state(key), Some(ClientState::Proceeding));
        assert_eq!(p.b.layer.server_state(skey), Some(ServerState::Proceeding));
        p.run_for(Duration::from_millis(9000));
        assert_eq!(
            p.sent_times(Side::A, |m| is_req(m, Method::Subscribe)),
            [0, 500, 4500, 8500]
        );
        // Each retransmission was absorbed by B and answered with the 100 again.
        assert_eq!(
            p.sent_times(Side::B, |m| is_resp(m, 100)),
            [0, 500, 4500, 8500]
        );
        assert_eq!(requests(&p.b.events).len(), 1);
        assert_eq!(p.b.layer.stats().absorbed_requests, 3);
        respond(&mut p, skey, 200);
        assert_eq!(responses(&p.a.events), [100, 100, 100, 100, 200]);
        assert_eq!(p.a.layer.client_state(key), Some(ClientState::Completed));
    }

    #[test]
    fn udp_retransmission_when_first_response_lost_and_timers_k_j() {
        let mut p = Pair::new(false);
        let mut dropped = false;
        p.set_drop(move |side, m| {
            if side == Side::B && is_resp(m, 200) && !dropped {
                dropped = true;
                return true;
            }
            false
        });
        let (key, skey) = start(&mut p, Method::Message);
        let skey = skey.unwrap();
        respond(&mut p, skey, 200);
        assert_eq!(p.b.layer.server_state(skey), Some(ServerState::Completed));
        p.run_to_quiescence();
        assert_eq!(
            p.sent_times(Side::A, |m| is_req(m, Method::Message)),
            [0, 500]
        );
        assert_eq!(p.sent_times(Side::B, |m| is_resp(m, 200)), [0, 500]);
        assert_eq!(requests(&p.b.events).len(), 1, "retransmission absorbed");
        let a = p.take_events(Side::A);
        assert_eq!(responses(&a), [200]);
        // Timer K = T4 after the response; Timer J = 64*T1 after B's final response.
        let term = |k: TxKey| move |e: &Event| *e == Event::Terminated { key: k };
        assert_eq!(when(&p, &a, term(TxKey::Client(key))), Some(5500));
        let b = p.take_events(Side::B);
        assert_eq!(when(&p, &b, term(TxKey::Server(skey))), Some(32 * S));
    }

    #[test]
    fn reliable_transport_no_retransmissions_and_zero_timers() {
        let mut p = Pair::new(true);
        let (key, skey) = start(&mut p, Method::Message);
        p.run_for(Duration::from_secs(10));
        assert_eq!(p.sent_times(Side::A, |m| is_req(m, Method::Message)), [0]);
        respond(&mut p, skey.unwrap(), 200);
        // K and J are zero: both gone at once.
        assert_eq!(p.a.layer.client_state(key), None);
        assert_eq!(p.b.layer.server_state(skey.unwrap()), None);
        assert_eq!(p.a.layer.counts(), (0, 0));

        // INVITE over TCP: no Timer A, Timer B still applies; D and I are zero.
        let (key, skey) = start(&mut p, Method::Invite);
        respond(&mut p, skey.unwrap(), 486);
        assert_eq!(p.a.layer.client_state(key), None);
        assert_eq!(p.b.layer.server_state(skey.unwrap()), None);
        assert_eq!(p.sent_times(Side::A, |m| is_req(m, Method::Ack)), [10 * S]);
        let (key, _) = {
            p.set_drop(|side, _| side == Side::A);
            start(&mut p, Method::Invite)
        };
        p.run_to_quiescence();
        assert_eq!(
            p.sent_times(Side::A, |m| is_req(m, Method::Invite)),
            [10 * S, 10 * S]
        );
        assert!(p.a.events.iter().any(|(t, e)| *e
            == Event::Timeout {
                key: TxKey::Client(key)
            }
            && p.ms(*t) == 42 * S));
    }

    #[test]
    fn invite_486_generates_ack_and_timers_d_and_i() {
        let mut p = Pair::new(false);
        let (key, skey) = start(&mut p, Method::Invite);
        let skey = skey.unwrap();
        p.run_for(Duration::from_millis(300)); // the 100 Trying goes out at 200 ms
        respond(&mut p, skey, 486);
        assert_eq!(p.a.layer.client_state(key), Some(ClientState::Completed));
        assert_eq!(p.b.layer.server_state(skey), Some(ServerState::Confirmed));
        let invite = p
            .log
            .iter()
            .find(|s| is_req(&s.msg, Method::Invite))
            .unwrap();
        let ack = p.log.iter().find(|s| is_req(&s.msg, Method::Ack)).unwrap();
        let (invite, ack) = (
            invite.msg.as_request().unwrap(),
            ack.msg.as_request().unwrap(),
        );
        // §17.1.1.3: same Request-URI, top Via, From, Call-ID, CSeq number; To from the 486.
        assert_eq!(ack.uri, invite.uri);
        assert_eq!(ack.headers.vias().unwrap(), invite.headers.vias().unwrap());
        assert_eq!(ack.headers.get("From"), invite.headers.get("From"));
        assert_eq!(ack.headers.to().unwrap().tag(), Some("bob-1"));
        assert_eq!(ack.headers.get("CSeq"), Some("1 ACK"));
        // The ACK was absorbed by B: its TU saw only the INVITE.
        assert!(!p
            .b
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::Ack { .. })));
        assert_eq!(responses(&p.a.events), [100, 486]);
        p.run_to_quiescence();
        let term = |k: TxKey| move |e: &Event| *e == Event::Terminated { key: k };
        // Timer I = T4 after the ACK; Timer D = 32 s after the 486.
        assert_eq!(when(&p, &p.b.events, term(TxKey::Server(skey))), Some(5300));
        assert_eq!(when(&p, &p.a.events, term(TxKey::Client(key))), Some(32300));
    }

    #[test]
    fn timers_g_and_h_when_the_ack_is_lost() {
        let mut p = Pair::new(false);
        p.set_drop(|side, m| side == Side::A && is_req(m, Method::Ack));
        let (key, skey) = start(&mut p, Method::Invite);
        let skey = skey.unwrap();
        respond(&mut p, skey, 603);
        p.run_to_quiescence();
        // Timer G: T1 doubling up to T2, until Timer H (64*T1).
        assert_eq!(
            p.sent_times(Side::B, |m| is_resp(m, 603)),
            [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(
            when(&p, &p.b.events, |e| *e
                == Event::Timeout {
                    key: TxKey::Server(skey)
                }),
            Some(32 * S)
        );
        // A re-sent its ACK for every retransmission, and told its TU only once.
        assert_eq!(p.sent_times(Side::A, |m| is_req(m, Method::Ack)).len(), 11);
        assert_eq!(responses(&p.a.events), [603]);
        assert_eq!(p.a.layer.stats().absorbed_responses, 10);
        assert!(p.a.layer.client_state(key).is_none());
    }

    #[test]
    fn trying_sent_after_200ms_unless_the_tu_answers() {
        let mut p = Pair::new(false);
        let (key, skey) = start(&mut p, Method::Invite);
        p.run_for(Duration::from_secs(2));
        assert_eq!(p.sent_times(Side::B, |m| is_resp(m, 100)), [200]);
        // The 100 stopped Timer A before its first firing at 500 ms.
        assert_eq!(p.sent_times(Side::A, |m| is_req(m, Method::Invite)), [0]);
        assert_eq!(p.a.layer.client_state(key), Some(ClientState::Proceeding));
        let _ = skey;

        let mut p = Pair::new(false);
        let (_, skey) = start(&mut p, Method::Invite);
        p.run_for(Duration::from_millis(100));
        respond(&mut p, skey.unwrap(), 180);
        p.run_for(Duration::from_secs(2));
        assert!(p.sent_times(Side::B, |m| is_resp(m, 100)).is_empty());
        assert_eq!(p.sent_times(Side::B, |m| is_resp(m, 180)), [100]);
    }

    #[test]
    fn invite_2xx_accepted_timers_l_m_and_2xx_retransmission() {
        let mut p = Pair::new(false);
        // Lose the first two ACKs: B retransmits the 200 until one gets through.
        let mut acks = 0;
        p.set_drop(move |side, m| {
            if side == Side::A && is_req(m, Method::Ack) {
                acks += 1;
                return acks <= 2;
            }
            false
        });
        let (key, skey) = start(&mut p, Method::Invite);
        let skey = skey.unwrap();
        respond(&mut p, skey, 200);
        assert_eq!(p.b.layer.server_state(skey), Some(ServerState::Accepted));
        assert_eq!(p.a.layer.client_state(key), Some(ClientState::Accepted));
        // A's TU ACKs every 2xx it is given (RFC 6026: retransmissions reach the TU).
        let mut seen = 0;
        while p.now < p.start + Duration::from_secs(40) {
            let n = responses(&p.a.events).len();
            for _ in seen..n {
                let mut ack = request(Method::Ack, "call-1@a");
                ack.headers.set("To", "<sip:bob@192.0.2.2>;tag=bob-1");
                let dest = p.b.addr;
                p.a.layer.send_ack(ack, dest);
            }
            seen = n;
            p.drive();
            let Some(t) = [p.a.layer.poll_timeout(), p.b.layer.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
            else {
                break;
            };
            p.run_until(t);
        }
        assert_eq!(p.sent_times(Side::B, |m| is_resp(m, 200)), [0, 500, 1500]);
        assert_eq!(responses(&p.a.events), [200, 200, 200]);
        let acks: Vec<_> =
            p.b.events
                .iter()
                .filter_map(|(t, e)| match e {
                    Event::Ack { key, .. } => Some((p.ms(*t), *key)),
                    _ => None,
                })
                .collect();
        assert_eq!(acks, [(1500, Some(skey))]);
        // Timer L and Timer M: 64*T1 after the 2xx; no Timeout since the ACK came.
        let term = |k: TxKey| move |e: &Event| *e == Event::Terminated { key: k };
        assert_eq!(
            when(&p, &p.b.events, term(TxKey::Server(skey))),
            Some(32 * S)
        );
        assert_eq!(
            when(&p, &p.a.events, term(TxKey::Client(key))),
            Some(32 * S)
        );
        assert!(!p
            .b
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::Timeout { .. })));
    }

    #[test]
    fn accepted_absorbs_invite_retransmissions_and_times_out_without_ack() {
        let mut p = Pair::new(false);
        p.set_drop(|side, m| side == Side::A && is_req(m, Method::Ack));
        let (_, skey) = start(&mut p, Method::Invite);
        let skey = skey.unwrap();
        respond(&mut p, skey, 200);
        // A late retransmission of the INVITE: absorbed, nothing re-sent.
        let invite = p
            .log
            .iter()
            .find(|s| is_req(&s.msg, Method::Invite))
            .unwrap();
        let (msg, from, now) = (invite.msg.clone(), p.a.addr, p.now);
        p.b.layer.handle_incoming(msg, from, false, now);
        assert_eq!(p.b.layer.poll_transmit(), None);
        assert_eq!(p.b.layer.poll_event(), None);
        assert_eq!(p.b.layer.stats().absorbed_requests, 1);
        p.run_to_quiescence();
        assert_eq!(
            p.sent_times(Side::B, |m| is_resp(m, 200)),
            [0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(
            when(&p, &p.b.events, |e| *e
                == Event::Timeout {
                    key: TxKey::Server(skey)
                }),
            Some(32 * S)
        );
    }

    /// A hand-written RFC 2543 request (no magic cookie).
    fn legacy(method: &str, branch: &str, to_tag: Option<&str>) -> Message {
        let to = match to_tag {
            Some(t) => format!("<sip:bob@192.0.2.2>;tag={t}"),
            None => "<sip:bob@192.0.2.2>".into(),
        };
        let raw = format!(
            "{method} sip:bob@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060{branch}\r\n\
             From: <sip:old@192.0.2.9>;tag=old1\r\nTo: {to}\r\nCall-ID: legacy-1\r\n\
             CSeq: 7 {}\r\nContent-Length: 0\r\n\r\n",
            if method == "ACK" { "ACK" } else { method }
        );
        parse(raw.as_bytes()).unwrap()
    }

    fn solo() -> (TransactionLayer, TransportAddr, Instant) {
        let layer = TransactionLayer::new(Config::new(Host::Ipv4([192, 0, 2, 2].into()), None));
        let src = TransportAddr::new(SocketAddr::from(([192, 0, 2, 9], 5060)), Transport::Udp);
        (layer, src, Instant::now())
    }

    use crate::parser::parse;

    #[test]
    fn rfc2543_fallback_matching() {
        let (mut l, src, now) = solo();
        l.handle_incoming(legacy("INVITE", ";branch=1", None), src, false, now);
        let Some(Event::Request { key, request, .. }) = l.poll_event() else {
            panic!()
        };
        // The same INVITE again: matched (URI, tags, Call-ID, CSeq, top Via) and absorbed.
        l.handle_incoming(legacy("INVITE", ";branch=1", None), src, false, now);
        assert_eq!(l.poll_event(), None);
        assert_eq!(l.stats().absorbed_requests, 1);
        // A different top Via is another transaction.
        l.handle_incoming(legacy("INVITE", ";branch=2", None), src, false, now);
        assert!(matches!(l.poll_event(), Some(Event::Request { key: k, .. }) if k != key));
        l.respond(
            key,
            request.response(StatusCode::NOT_FOUND, Some("t1")),
            now,
        )
        .unwrap();
        let sent = l.poll_transmit().unwrap();
        assert_eq!(sent.dest, src);
        // The ACK matches by the To tag of our response, and is absorbed.
        l.handle_incoming(legacy("ACK", ";branch=1", Some("wrong")), src, false, now);
        assert!(matches!(l.poll_event(), Some(Event::Ack { key: None, .. })));
        assert_eq!(l.server_state(key), Some(ServerState::Completed));
        l.handle_incoming(legacy("ACK", ";branch=1", Some("t1")), src, false, now);
        assert_eq!(l.poll_event(), None);
        assert_eq!(l.server_state(key), Some(ServerState::Confirmed));

        // No branch at all, non-INVITE: retransmission re-sends the final response.
        l.handle_incoming(legacy("OPTIONS", "", None), src, false, now);
        let Some(Event::Request { key, request, .. }) = l.poll_event() else {
            panic!()
        };
        while l.poll_transmit().is_some() {}
        l.respond(key, request.response(StatusCode::OK, Some("t2")), now)
            .unwrap();
        let first = l.poll_transmit().unwrap();
        l.handle_incoming(legacy("OPTIONS", "", None), src, false, now);
        assert_eq!(l.poll_transmit(), Some(first));
        assert_eq!(l.poll_event(), None);
    }

    #[test]
    fn cancel_matches_the_invite_and_487_is_acked() {
        let mut p = Pair::new(false);
        let (ikey, skey) = start(&mut p, Method::Invite);
        let skey = skey.unwrap();
        respond(&mut p, skey, 180);
        let now = p.now;
        let ckey = p.a.layer.cancel(ikey, now).unwrap();
        p.drive();
        let cancelled: Vec<_> =
            p.b.events
                .iter()
                .filter_map(|(_, e)| match e {
                    Event::Cancelled { key, cancel } => Some((*key, cancel.clone())),
                    _ => None,
                })
                .collect();
        assert_eq!(cancelled.len(), 1);
        assert_eq!(cancelled[0].0, skey);
        assert_eq!(cancelled[0].1.headers.get("CSeq"), Some("1 CANCEL"));
        // The CANCEL was answered 200, with the INVITE's To tag (§9.2).
        let ok =
            p.a.events
                .iter()
                .find_map(|(_, e)| match e {
                    Event::Response { key, response } if *key == ckey => Some(response.clone()),
                    _ => None,
                })
                .unwrap();
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.headers.to().unwrap().tag(), Some("bob-1"));
        respond(&mut p, skey, 487);
        assert_eq!(p.sent_times(Side::A, |m| is_req(m, Method::Ack)), [0]);
        assert_eq!(p.b.layer.server_state(skey), Some(ServerState::Confirmed));
        // Cancelling again is refused: the INVITE is completed.
        assert_eq!(p.a.layer.cancel(ikey, now), Err(CancelError::NotProceeding));

        // A CANCEL matching nothing gets 481.
        let (mut l, src, now) = solo();
        let mut cancel = request(Method::Cancel, "nothing");
        cancel
            .headers
            .push_front("Via", "SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKnope");
        l.handle_incoming(Message::Request(cancel), src, false, now);
        let t = l.poll_transmit().unwrap();
        assert!(t.bytes.starts_with(b"SIP/2.0 481 "));
        assert!(!matches!(l.poll_event(), Some(Event::Cancelled { .. })));
    }

    #[test]
    fn cancel_before_a_provisional_is_refused() {
        let mut p = Pair::new(false);
        p.set_drop(|_, _| true);
        let (ikey, _) = start(&mut p, Method::Invite);
        let now = p.now;
        assert_eq!(p.a.layer.cancel(ikey, now), Err(CancelError::NotProceeding));
        let (mkey, _) = start(&mut p, Method::Message);
        assert_eq!(
            p.a.layer.cancel(mkey, now),
            Err(CancelError::UnknownTransaction)
        );
    }

    #[test]
    fn stray_responses_are_dropped_and_counted() {
        let (mut l, src, now) = solo();
        let mut req = request(Method::Message, "x");
        req.headers
            .push_front("Via", "SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKunknown");
        l.handle_incoming(
            req.response(StatusCode::OK, Some("t")).into(),
            src,
            false,
            now,
        );
        // Right branch, wrong method: stray too.
        let key = l
            .send_request(request(Method::Options, "y"), src, false, now)
            .unwrap();
        let sent = parse(&l.poll_transmit().unwrap().bytes).unwrap();
        let Message::Request(sent) = sent else {
            panic!()
        };
        let mut resp = sent.response(StatusCode::OK, Some("t"));
        resp.headers.set("CSeq", "1 INFO");
        l.handle_incoming(resp.into(), src, false, now);
        assert_eq!(l.stats().stray_responses, 2);
        assert_eq!(l.poll_event(), None);
        assert_eq!(l.client_state(key), Some(ClientState::Trying));
    }

    #[test]
    fn transport_error_terminates() {
        let (mut l, src, now) = solo();
        let key = l
            .send_request(request(Method::Invite, "z"), src, false, now)
            .unwrap();
        let t = l.poll_transmit().unwrap();
        assert_eq!(t.tx, Some(TxKey::Client(key)));
        l.handle_transport_error(TxKey::Client(key), now);
        assert_eq!(
            l.poll_event(),
            Some(Event::TransportError {
                key: TxKey::Client(key)
            })
        );
        assert_eq!(
            l.poll_event(),
            Some(Event::Terminated {
                key: TxKey::Client(key)
            })
        );
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn branches_have_the_cookie_and_are_unique_and_ack_is_not_a_transaction() {
        let (mut l, src, now) = solo();
        let a = l.new_branch();
        let b = l.new_branch();
        assert!(a.starts_with("z9hG4bK") && b.starts_with("z9hG4bK") && a != b);
        assert_eq!(
            l.send_request(request(Method::Ack, "a"), src, false, now),
            Err(SendError::AckIsNotATransaction)
        );
        let mut bad = request(Method::Message, "a");
        bad.headers.set("CSeq", "1 INFO");
        assert_eq!(
            l.send_request(bad, src, false, now),
            Err(SendError::CSeqMethodMismatch)
        );
    }

    #[test]
    fn received_and_rport_route_responses() {
        let (mut l, _, now) = solo();
        // Behind a NAT: Via says 10.0.0.5:5070 with rport, packet came from 198.51.100.7:40000.
        let src = TransportAddr::new(SocketAddr::from(([198, 51, 100, 7], 40000)), Transport::Udp);
        let mut req = request(Method::Options, "nat");
        req.headers
            .push_front("Via", "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKnat;rport");
        l.handle_incoming(req.into(), src, false, now);
        let Some(Event::Request {
            key, request: r, ..
        }) = l.poll_event()
        else {
            panic!()
        };
        let via = r.headers.top_via().unwrap();
        assert_eq!(via.received(), Some([198, 51, 100, 7].into()));
        assert_eq!(via.rport(), Some(Some(40000)));
        l.respond(key, r.response(StatusCode::OK, Some("n")), now)
            .unwrap();
        assert_eq!(l.poll_transmit().unwrap().dest, src);

        // Without rport: received address, Via port.
        let mut req = request(Method::Options, "nat2");
        req.headers
            .push_front("Via", "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKnat2");
        l.handle_incoming(req.into(), src, false, now);
        let Some(Event::Request { key, request, .. }) = l.poll_event() else {
            panic!()
        };
        l.respond(key, request.response(StatusCode::OK, Some("n")), now)
            .unwrap();
        assert_eq!(
            l.poll_transmit().unwrap().dest.addr,
            SocketAddr::from(([198, 51, 100, 7], 5070))
        );
    }

    #[test]
    fn custom_timer_values() {
        let mut p = Pair::new(false);
        for n in [&mut p.a, &mut p.b] {
            let mut c = n.layer.config().clone();
            c.t1 = Duration::from_millis(100);
            c.t2 = Duration::from_millis(400);
            n.layer = TransactionLayer::new(c);
        }
        p.set_drop(|side, _| side == Side::A);
        start(&mut p, Method::Message);
        p.run_to_quiescence();
        let times = p.sent_times(Side::A, |m| is_req(m, Method::Message));
        assert_eq!(&times[..5], [0, 100, 300, 700, 1100]);
        assert_eq!(*times.last().unwrap(), 6300);
    }
}
