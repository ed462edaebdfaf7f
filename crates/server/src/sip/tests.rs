//! In-process tests of the endpoint over real loopback sockets (the sipp suite in
//! `tests/e2e/test_sip_stack.py` covers the same ground against the binary).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use entente_sip_proto::{
    parse, Message, Method, Request, StatusCode, Transport, TransportAddr, Uri,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::*;

struct Running {
    handle: SipHandle,
    udp: SocketAddr,
    tcp: SocketAddr,
    _shutdown: watch::Sender<bool>,
    _tasks: JoinSet<()>,
}

async fn start_test(extra: &str, locator: Option<Arc<Locator>>) -> Running {
    let cfg = Config::parse(&format!(
        "domain = \"a.test\"\n[s2s]\nsystem_roots = false\n[sip]\nenabled = true\n\
         listen_udp = [\"127.0.0.1:0\"]\nlisten_tcp = [\"127.0.0.1:0\"]\nlisten_tls = []\n\
         t1_ms = 50\n{extra}"
    ))
    .unwrap();
    let (tx, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let s = start(
        &cfg,
        None,
        locator,
        Arc::new(DefaultHandler),
        rx,
        &mut tasks,
    )
    .await
    .unwrap();
    let find = |t: Transport| s.addrs.iter().find(|(x, _)| *x == t).unwrap().1;
    Running {
        udp: find(Transport::Udp),
        tcp: find(Transport::Tcp),
        handle: s.handle,
        _shutdown: tx,
        _tasks: tasks,
    }
}

fn options(transport: &str, from: SocketAddr, branch: &str) -> String {
    format!(
        "OPTIONS sip:a.test SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {from};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@b.test>;tag=77\r\nTo: <sip:a.test>\r\n\
         Call-ID: {branch}@b.test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

async fn recv_udp(sock: &UdpSocket) -> Option<Message> {
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    parse(&buf[..n]).ok()
}

#[test]
fn via_port_is_default_only_when_every_listener_is() {
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(
        via_port(&[
            (Transport::Udp, a("0.0.0.0:5060")),
            (Transport::Tcp, a("0.0.0.0:5060")),
            (Transport::Tls, a("0.0.0.0:5061"))
        ]),
        None
    );
    assert_eq!(
        via_port(&[
            (Transport::Tls, a("0.0.0.0:5061")),
            (Transport::Tcp, a("0.0.0.0:6000")),
            (Transport::Udp, a("0.0.0.0:7000"))
        ]),
        Some(7000)
    );
    assert_eq!(via_port(&[(Transport::Tls, a("0.0.0.0:5071"))]), Some(5071));
}

#[tokio::test]
async fn udp_options_malformed_and_bad_responses() {
    let r = start_test("", None).await;
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = peer.local_addr().unwrap();
    peer.send_to(options("UDP", me, "o1").as_bytes(), r.udp)
        .await
        .unwrap();
    let Some(Message::Response(resp)) = recv_udp(&peer).await else {
        panic!("no response")
    };
    assert_eq!(resp.status, StatusCode::OK);
    assert!(resp.headers.get("Allow").unwrap().contains("SUBSCRIBE"));
    assert!(resp.headers.contains("Accept") && resp.headers.contains("Supported"));
    // rport filled in (RFC 3581).
    assert_eq!(
        resp.headers.top_via().unwrap().rport(),
        Some(Some(me.port()))
    );

    // A request with a negative Content-Length: 400 naming the problem.
    let bad = options("UDP", me, "o2").replace("Content-Length: 0", "Content-Length: -5");
    peer.send_to(bad.as_bytes(), r.udp).await.unwrap();
    let Some(Message::Response(resp)) = recv_udp(&peer).await else {
        panic!("no 400")
    };
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert!(resp.reason.contains("Content-Length"), "{}", resp.reason);

    // A response that does not parse: dropped and counted, never answered.
    peer.send_to(b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n", r.udp)
        .await
        .unwrap();
    // A request that cannot even be answered (no Via): dropped and counted.
    peer.send_to(b"OPTIONS sip:a.test SIP/2.0\r\n\r\n", r.udp)
        .await
        .unwrap();
    let mut stats = r.handle.stats();
    for _ in 0..100 {
        if stats.unparseable_responses == 1 && stats.dropped_requests == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        stats = r.handle.stats();
    }
    assert_eq!(stats.unparseable_responses, 1);
    assert_eq!(stats.dropped_requests, 1);
    assert_eq!(stats.bad_requests, 1);
    // Garbage bytes never stop the endpoint.
    for junk in [
        &b"\0\0\0"[..],
        b"\xff\xfe",
        b"INVITE",
        b"SIP/2.0",
        &[b'a'; 70_000][..],
    ] {
        let _ = peer.send_to(junk, r.udp).await;
    }
    peer.send_to(options("UDP", me, "o3").as_bytes(), r.udp)
        .await
        .unwrap();
    let Some(Message::Response(resp)) = recv_udp(&peer).await else {
        panic!("endpoint dead")
    };
    assert_eq!(resp.status, StatusCode::OK);
}

#[tokio::test]
async fn tcp_keepalive_and_response_on_the_same_connection() {
    let r = start_test("", None).await;
    let mut c = TcpStream::connect(r.tcp).await.unwrap();
    let me = c.local_addr().unwrap();
    // RFC 5626 §4.4.1: CRLFCRLF ping, CRLF pong.
    c.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"\r\n");
    // A request, split across writes; the answer comes on this connection.
    let o = options("TCP", me, "t1");
    c.write_all(&o.as_bytes()[..30]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.write_all(&o.as_bytes()[30..]).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
    // A malformed message on a stream: 400, and the stream stays usable. (A request without
    // Call-ID cannot be answered at all: a response must copy it.)
    let bad = options("TCP", me, "t2").replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
    c.write_all(bad.as_bytes()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("SIP/2.0 400 CSeq method does not match request method\r\n"),
        "{text}"
    );
    // An unusable Content-Length closes the connection (the stream cannot be framed).
    c.write_all(b"OPTIONS sip:a.test SIP/2.0\r\nContent-Length: x\r\n\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let r = start_test("idle_timeout_secs = 1", None).await;
    let mut c = TcpStream::connect(r.tcp).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("closed within the idle timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

fn outgoing_options(target: &str) -> Request {
    let uri: Uri = target.parse().unwrap();
    let mut req = Request::new(Method::Options, uri);
    req.headers.push("Max-Forwards", "70");
    req.headers.push("From", "<sip:a.test>;tag=abc");
    req.headers.push("To", format!("<{target}>"));
    req.headers.push("Call-ID", new_tag());
    req.headers.push("CSeq", "1 OPTIONS");
    req
}

/// A UDP peer that answers every request with `status` (or not at all with `None`).
async fn fake_udp_peer(status: Option<u16>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, src)) = sock.recv_from(&mut buf).await {
            let (Some(code), Ok(Message::Request(req))) = (status, parse(&buf[..n])) else {
                continue;
            };
            let resp = req.response(StatusCode::new(code).unwrap(), Some("peer"));
            let _ = sock.send_to(&resp.to_bytes(), src).await;
        }
    });
    addr
}

#[tokio::test]
async fn send_request_to_an_address() {
    let r = start_test("", None).await;
    let peer = fake_udp_peer(Some(200)).await;
    let got = r
        .handle
        .send_request(
            outgoing_options("sip:b.test"),
            Destination::Addr(TransportAddr::new(peer, Transport::Udp)),
        )
        .await
        .unwrap();
    assert_eq!(got.response.status, StatusCode::OK);
    assert_eq!(got.peer.addr.addr, peer);
    assert_eq!(got.peer.tls_names, None);

    // Nobody listening on TCP: a transport error, quickly.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = r
        .handle
        .send_request(
            outgoing_options("sip:b.test"),
            Destination::Addr(TransportAddr::new(closed, Transport::Tcp)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, SipError::Transport(_)), "{e}");

    // A silent UDP peer: Timer F (64·T1 = 3.2 s with T1 = 50 ms).
    let silent = fake_udp_peer(None).await;
    let t0 = std::time::Instant::now();
    let e = r
        .handle
        .send_request(
            outgoing_options("sip:b.test"),
            Destination::Addr(TransportAddr::new(silent, Transport::Udp)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, SipError::Timeout(_)), "{e}");
    assert!(
        t0.elapsed() >= Duration::from_millis(3100),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn send_request_to_a_domain_fails_over() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let busy = fake_udp_peer(Some(503)).await;
    let good = fake_udp_peer(Some(200)).await;
    let mut lc = entente_dns::LocatorConfig::default();
    for route in [
        format!("tcp://{closed}"),
        format!("udp://{busy}"),
        format!("udp://{good}"),
    ] {
        lc.add_static_route("b.test", route.parse().unwrap());
    }
    let locator = Arc::new(Locator::new(lc).unwrap());
    let r = start_test("", Some(locator)).await;
    let got = r
        .handle
        .send_request(
            outgoing_options("sip:b.test"),
            Destination::Domain("b.test".into()),
        )
        .await
        .unwrap();
    assert_eq!(got.response.status, StatusCode::OK);
    assert_eq!(got.peer.addr, TransportAddr::new(good, Transport::Udp));
}

#[tokio::test]
async fn outgoing_connections_are_reused() {
    let r = start_test("", None).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut f = entente_sip_proto::Framer::default();
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    f.push(&buf[..n]);
                    while let Ok(Some(entente_sip_proto::Frame::Message(Message::Request(req)))) =
                        f.poll()
                    {
                        let resp = req.response(StatusCode::OK, Some("p"));
                        let _ = s.write_all(&resp.to_bytes()).await;
                    }
                }
            });
        }
    });
    let dest = Destination::Addr(TransportAddr::new(addr, Transport::Tcp));
    for _ in 0..3 {
        let got = r
            .handle
            .send_request(outgoing_options("sip:b.test"), dest.clone())
            .await
            .unwrap();
        assert_eq!(got.response.status, StatusCode::OK);
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}
