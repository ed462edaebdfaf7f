//! Client connections: the listener and one task per connection.
//!
//! The task owns the socket (plain, then TLS after STARTTLS), the sans-IO [`C2sStream`] and the
//! session's queue; reads, queued stanzas and the timeout are one `select!` loop, and everything
//! pending is written in one go per wake-up.

use std::sync::Arc;
use std::time::Duration;

use entente_model::jid::Jid;
use entente_xmpp_proto::c2s::{C2sConfig as ProtoConfig, C2sEvent, C2sStream};
use entente_xmpp_proto::scram::{Credentials, ScramKeys};
use entente_xmpp_proto::{Limits, StreamErrorCondition};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::hub::Hub;
use crate::router::{SessionHandle, SessionMsg};

/// Accepts client connections until `shutdown` turns true.
pub async fn listen(
    hub: Arc<Hub>,
    listener: TcpListener,
    tls: TlsAcceptor,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(hub.cfg.c2s.max_connections));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (sock, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "connection limit reached; refusing a client");
                    drop(sock);
                    continue;
                };
                let hub = hub.clone();
                let tls = tls.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = sock.set_nodelay(true);
                    let span = tracing::info_span!("c2s", %peer);
                    let _e = span.enter();
                    drop(_e);
                    if let Err(e) = run(hub, sock, tls, shutdown).await {
                        tracing::debug!(parent: &span, error = %e, "client connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// The client socket: plain TCP until STARTTLS, TLS after.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Only while the TLS handshake owns the socket.
    Upgrading,
}

impl AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Upgrading => std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Upgrading => std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Upgrading => std::task::Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Upgrading => std::task::Poll::Ready(Ok(())),
        }
    }
}

/// Token bucket for the stanza rate limit.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn run(
    hub: Arc<Hub>,
    sock: TcpStream,
    tls: TlsAcceptor,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let c = &hub.cfg.c2s;
    let mut stream = C2sStream::new(ProtoConfig {
        domains: vec![hub.cfg.domain.clone()],
        tls_available: true,
        tls_required: c.require_tls,
        limits: Limits {
            max_stanza_bytes: c.max_stanza_bytes,
            max_depth: c.max_depth,
        },
        max_auth_failures: c.max_auth_failures,
    });
    let handshake = Duration::from_secs(c.handshake_timeout_secs);
    let idle = (c.idle_timeout_secs > 0).then(|| Duration::from_secs(c.idle_timeout_secs));
    let mut deadline = Instant::now() + handshake;
    let mut io = Conn::Plain(sock);
    let mut session: Option<(SessionHandle, tokio::sync::mpsc::Receiver<SessionMsg>)> = None;
    let mut bucket = Bucket {
        tokens: f64::from(c.max_stanzas_per_second) * 2.0,
        rate: f64::from(c.max_stanzas_per_second),
        burst: f64::from(c.max_stanzas_per_second) * 2.0,
        last: Instant::now(),
    };
    let result = async {
        loop {
            tokio::select! {
                n = std::future::poll_fn(|cx| poll_receive(&mut io, &mut stream, cx)) => {
                    let n = n?;
                    if n == 0 {
                        stream.eof();
                    } else {
                        if session.is_some() {
                            if let Some(idle) = idle {
                                deadline = Instant::now() + idle;
                            }
                        }
                    }
                }
                msg = async {
                    match &mut session {
                        Some((_, rx)) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    match msg {
                        Some(SessionMsg::Stanza(el)) => stream.send_stanza(&el),
                        Some(SessionMsg::Kick(cond, text)) => stream.close_with_error(cond, Some(&text)),
                        None => stream.close_with_error(StreamErrorCondition::InternalServerError, None),
                    }
                    // Drain whatever else is queued, so one write carries it all.
                    if let Some((_, rx)) = &mut session {
                        while let Ok(m) = rx.try_recv() {
                            match m {
                                SessionMsg::Stanza(el) => stream.send_stanza(&el),
                                SessionMsg::Kick(cond, text) => stream.close_with_error(cond, Some(&text)),
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let text = if session.is_some() { "idle for too long" } else { "negotiation took too long" };
                    stream.close_with_error(StreamErrorCondition::ConnectionTimeout, Some(text));
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        stream.close_with_error(StreamErrorCondition::SystemShutdown, Some("the server is shutting down"));
                    }
                }
            }
            let mut closed = false;
            while let Some(ev) = stream.poll_event() {
                match ev {
                    C2sEvent::StartTls => {
                        let out = stream.take_output();
                        io.write_all(&out).await?;
                        io.flush().await?;
                        // The sans-IO side refuses a second STARTTLS, so the socket is plain here.
                        let Conn::Plain(tcp) = std::mem::replace(&mut io, Conn::Upgrading) else {
                            anyhow::bail!("STARTTLS on a connection that is not plain TCP");
                        };
                        let tls_stream =
                            Box::pin(tokio::time::timeout(handshake, tls.accept(tcp))).await??;
                        io = Conn::Tls(Box::new(tls_stream));
                        stream.tls_established();
                    }
                    C2sEvent::NeedCredentials { username } => {
                        let jid = format!("{username}@{}", hub.cfg.domain);
                        let creds = match Box::pin(hub.store.user(&jid)).await {
                            Ok(Some(u)) => Some(to_credentials(&u)),
                            Ok(None) => None,
                            Err(e) => {
                                tracing::error!(error = %e, "store error during authentication");
                                None
                            }
                        };
                        stream.provide_credentials(creds);
                    }
                    C2sEvent::Authenticated { username } => {
                        tracing::info!(user = %username, "authenticated");
                    }
                    C2sEvent::BindRequest { resource } => {
                        let res = bind_jid(&hub, &stream, resource);
                        match res {
                            Ok(full) => {
                                let (handle, rx, old) = hub.sessions.bind(full.clone());
                                if let Some(old) = old {
                                    Box::pin(hub.session_replaced(old)).await;
                                }
                                session = Some((handle, rx));
                                stream.bind_result(Ok(full));
                                deadline = idle.map(|d| Instant::now() + d).unwrap_or_else(far_future);
                            }
                            Err(cond) => stream.bind_result(Err(cond)),
                        }
                    }
                    C2sEvent::Stanza(el) => {
                        if !bucket.take(Instant::now()) {
                            stream.close_with_error(StreamErrorCondition::PolicyViolation, Some("too many stanzas per second"));
                            continue;
                        }
                        if let Some((h, _)) = &session {
                            hub.metrics.stanza_in(crate::metrics::Source::C2s, &el.name);
                            Box::pin(hub.handle_client(h, el)).await;
                        }
                    }
                    C2sEvent::Closed { error } => {
                        if let Some(e) = error {
                            tracing::info!(condition = %e, "stream closed with an error");
                        }
                        closed = true;
                    }
                    _ => {}
                }
            }
            let out = stream.take_output();
            if !out.is_empty() {
                io.write_all(&out).await?;
                io.flush().await?;
            }
            if closed {
                let _ = tokio::time::timeout(Duration::from_secs(2), io.shutdown()).await;
                return Ok::<(), anyhow::Error>(());
            }
        }
    }
    .await;
    if let Some((h, _)) = &session {
        Box::pin(hub.session_ended(h)).await;
    }
    result
}

thread_local! {
    /// The buffer client connections read into, one per runtime thread rather than one per
    /// connection: its contents go to the connection's parser at once, so nothing in it outlives
    /// one poll, and an idle connection keeps no read buffer of its own.
    static READ_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; 4096].into_boxed_slice());
}

/// Reads what the socket has (into [`READ_BUF`]) and feeds it to `stream`; ready with the number
/// of bytes read, 0 at end of file.
fn poll_receive(
    io: &mut Conn,
    stream: &mut C2sStream,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<std::io::Result<usize>> {
    READ_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        let mut rb = tokio::io::ReadBuf::new(&mut buf[..]);
        match std::pin::Pin::new(io).poll_read(cx, &mut rb) {
            std::task::Poll::Ready(Ok(())) => {
                let data = rb.filled();
                if !data.is_empty() {
                    stream.receive(data);
                }
                std::task::Poll::Ready(Ok(data.len()))
            }
            std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

fn bind_jid(hub: &Hub, stream: &C2sStream, resource: Option<String>) -> Result<Jid, &'static str> {
    let user = stream.user().ok_or("not-allowed")?;
    let bare = Jid::bare_from(user, &hub.cfg.domain).map_err(|_| "bad-request")?;
    let resource = match resource {
        Some(r) => r,
        None => format!("entente-{}", entente_xmpp_proto::c2s::new_id()),
    };
    bare.with_resource(&resource).map_err(|_| "bad-request")
}

/// Converts stored keys into the protocol crate's credential type.
pub fn to_credentials(u: &entente_store::UserRecord) -> Credentials {
    let k = |r: &entente_store::ScramRecord| ScramKeys {
        salt: r.salt.clone(),
        iterations: r.iterations,
        stored_key: r.stored_key.clone(),
        server_key: r.server_key.clone(),
    };
    Credentials {
        sha1: k(&u.sha1),
        sha256: k(&u.sha256),
    }
}

/// Converts fresh credentials into the stored record.
pub fn to_record(jid: &str, c: &Credentials) -> entente_store::UserRecord {
    let r = |k: &ScramKeys| entente_store::ScramRecord {
        salt: k.salt.clone(),
        iterations: k.iterations,
        stored_key: k.stored_key.clone(),
        server_key: k.server_key.clone(),
    };
    entente_store::UserRecord {
        jid: jid.to_string(),
        sha1: r(&c.sha1),
        sha256: r(&c.sha256),
    }
}
