//! The SIP endpoint: transports (UDP, TCP, TLS), the task that drives sip-proto's
//! transaction layer, and the handle the federation code sends and answers requests with.
//!
//! ```text
//!  UDP reader ─┐                          ┌─> SipHandler::on_request
//!  TCP conn ───┼── Input ──> endpoint ────┤     (default: OPTIONS 200, anything else 403)
//!  TLS conn ───┘   (mpsc)    task owns    └─> send_request callers waiting on a oneshot
//!       ^                    the TransactionLayer
//!       └── poll_transmit() via Transports (UDP socket, or the connection table)
//!  SipHandle::{send_request, respond, send_ack} ── Input ──> endpoint task
//! ```
//!
//! - [`transport`]: sockets, framing, keep-alives, limits, connection reuse, TLS names.
//! - [`endpoint`]: the task owning the [`entente_sip_proto::TransactionLayer`], and
//!   [`SipHandle`].
//! - [`handler`]: the [`SipHandler`] trait and the [`DefaultHandler`].
//!
//! The server runs the SIP federation gateway ([`crate::sipfed::Gateway`]) as the handler;
//! [`DefaultHandler`] (OPTIONS `200`, everything else `403 Domain not permitted`) is what a
//! handler-less endpoint does, used by tests of the stack itself. Malformed requests get `400`
//! (reason: what is wrong) before any handler sees them.

pub mod endpoint;
pub mod handler;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use entente_dns::Locator;
use entente_sip_proto::{Host, TransactionLayer, Transport};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub use endpoint::{Destination, PeerInfo, SipError, SipHandle, SipResponse, SipStats};
pub use handler::{DefaultHandler, IncomingRequest, ServerEvent, SipHandler};

use crate::config::Config;
use crate::tls::Identity;
use transport::{ConnLimits, TlsMaterial, Transports};

/// Inputs queued for the endpoint task before readers wait (back-pressure).
const INPUT_QUEUE: usize = 1024;

/// A started SIP endpoint.
pub struct Started {
    pub handle: SipHandle,
    /// Every bound listener, with its transport.
    pub addrs: Vec<(Transport, SocketAddr)>,
}

/// A fresh random tag for To/From (RFC 3261 §19.3: at least 32 bits of randomness).
pub fn new_tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Binds every `[sip]` listener and starts the endpoint. Listener and endpoint tasks go into
/// `tasks` and end when `shutdown` turns true; connection tasks end with it too.
///
/// `identity` is our certificate for TLS (listening and outbound), `locator` locates domains
/// for [`Destination::Domain`]. Peer certificates are checked against the `[s2s]` trust
/// anchors (`ca_file`, `system_roots`).
pub async fn start(
    cfg: &Config,
    identity: Option<Identity>,
    locator: Option<Arc<Locator>>,
    handler: Arc<dyn SipHandler>,
    shutdown: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Result<Started> {
    let sc = &cfg.sip;
    let mut addrs = Vec::new();
    let mut udp = Vec::new();
    for a in &sc.listen_udp {
        let sock = UdpSocket::bind(a)
            .await
            .with_context(|| format!("binding SIP UDP on {a} (sip.listen_udp)"))?;
        addrs.push((Transport::Udp, sock.local_addr()?));
        udp.push(Arc::new(sock));
    }
    let mut tcp = Vec::new();
    for a in &sc.listen_tcp {
        let l = TcpListener::bind(a)
            .await
            .with_context(|| format!("listening for SIP over TCP on {a} (sip.listen_tcp)"))?;
        addrs.push((Transport::Tcp, l.local_addr()?));
        tcp.push(l);
    }
    let mut tls = Vec::new();
    for a in &sc.listen_tls {
        let l = TcpListener::bind(a)
            .await
            .with_context(|| format!("listening for SIP over TLS on {a} (sip.listen_tls)"))?;
        addrs.push((Transport::Tls, l.local_addr()?));
        tls.push(l);
    }
    let material = match &identity {
        Some(id) => Some(TlsMaterial {
            identity: id.clone(),
            roots: crate::tls::root_store(cfg.s2s.ca_file.as_deref(), cfg.s2s.system_roots)?,
        }),
        None => None,
    };
    let acceptor = match (&identity, tls.is_empty()) {
        (Some(id), false) => Some(tokio_rustls::TlsAcceptor::from(
            crate::tls::s2s_server_config(id)?,
        )),
        (None, false) => anyhow::bail!("sip.listen_tls needs a certificate"),
        _ => None,
    };

    let via_host = Host::parse(sc.via_host(&cfg.domain))
        .map_err(|_| anyhow::anyhow!("sip.via_host: not a host name or IP address"))?;
    let mut tc = entente_sip_proto::Config::new(via_host, via_port(&addrs));
    tc.t1 = Duration::from_millis(sc.t1_ms);
    // RFC 3261 §17.1.2.2: T2 = 4 s and T4 = 5 s by default; keep them at least T1 so that a
    // large T1 still gives sane intervals.
    tc.t2 = tc.t2.max(tc.t1);
    tc.t4 = tc.t4.max(tc.t1);
    tc.timer_d = tc.timer_d.max(tc.t1.saturating_mul(64));
    tc.branch_seed = rand::random();
    let layer = TransactionLayer::new(tc);

    let stats = Arc::new(endpoint::StatsInner::default());
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let limits = ConnLimits {
        max_message: sc.max_message_bytes,
        idle: (sc.idle_timeout_secs > 0).then(|| Duration::from_secs(sc.idle_timeout_secs)),
        rate: sc.max_messages_per_second,
    };
    let transports = Transports::new(
        udp.clone(),
        tx.clone(),
        limits,
        material,
        sc.max_connections,
        shutdown.clone(),
        stats.clone(),
    );
    let handle = SipHandle::new(tx, locator, transports.clone(), stats.clone());
    for sock in udp {
        tasks.spawn(transports.clone().udp_reader(sock));
    }
    for l in tcp {
        tasks.spawn(transports.clone().listen(l, None));
    }
    for l in tls {
        tasks.spawn(transports.clone().listen(l, acceptor.clone()));
    }
    let ep = endpoint::Endpoint::new(
        layer,
        rx,
        transports,
        handler,
        handle.clone(),
        stats,
        shutdown,
    );
    tasks.spawn(ep.run());
    for (t, a) in &addrs {
        tracing::info!(addr = %a, transport = t.via_token(), "accepting SIP");
    }
    Ok(Started { handle, addrs })
}

/// The sent-by port of our Vias. The transaction layer has one Via port for every transport:
/// `None` (each transport's default, 5060/5061) when every listener is on its default port,
/// otherwise the first UDP port (responses over UDP come back to the Via port, or with
/// `rport` to our source port, which is that socket's), else the first TCP, else TLS port.
/// Over TCP and TLS responses come back on the request's connection whatever the Via says.
pub(crate) fn via_port(addrs: &[(Transport, SocketAddr)]) -> Option<u16> {
    if addrs.iter().all(|(t, a)| a.port() == t.default_port()) {
        return None;
    }
    [Transport::Udp, Transport::Tcp, Transport::Tls]
        .iter()
        .find_map(|want| addrs.iter().find(|(t, _)| t == want))
        .map(|(_, a)| a.port())
}

#[cfg(test)]
mod tests;
