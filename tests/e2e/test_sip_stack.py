"""The SIP stack against the running binary: sipp scenarios (tests/sipp/) over UDP, TCP and
TLS, and raw sockets for what sipp cannot send (malformed messages, keep-alives).

Needs the Debian package `sip-tester` (sipp) and `openssl` (test certificates). Entente runs on
127.0.0.30, sipp on 127.0.0.31, the TLS relay on 127.0.0.32 (see sip_helpers.TlsRelay for why),
all with free ports. `t1_ms = 50` makes every transaction timer 10 times faster than RFC 3261's
defaults (Timer H = 64*T1 = 3.2 s).

No SIP peer is configured here: OPTIONS gets 200, every other request 403 (domain not
permitted). SIP federation itself is tested in test_federation_sip.py.
"""
import socket
import ssl
import time

import pytest

from sip_helpers import (SIPP, TlsRelay, free_port, read_trace, run_sipp, sip_request,
                         sipp_has_tls, status_line)

ENTENTE_IP = "127.0.0.30"
SIPP_IP = "127.0.0.31"
RELAY_IP = "127.0.0.32"
DOMAIN = "a.sip.test"

needs_sipp = pytest.mark.skipif(SIPP is None, reason="sipp is not installed (Debian package sip-tester)")


class Sip:
    """A started Entente with SIP on ENTENTE_IP: .port (UDP and TCP), .tls_port, .server."""

    def __init__(self, server, port, tls_port, ca, peer):
        self.server, self.port, self.tls_port, self.ca, self.peer = server, port, tls_port, ca, peer

    @property
    def udp_target(self):
        return f"{ENTENTE_IP}:{self.port}"


@pytest.fixture
def sip(make_server, test_ca):
    def start(extra_sip=""):
        port = free_port(ENTENTE_IP)
        tls_port = free_port(ENTENTE_IP)
        cert = test_ca.issue(DOMAIN)
        peer = test_ca.issue("peer.sip.test")
        s = make_server(f"""
[tls]
cert = "{cert.cert}"
key = "{cert.key}"

[s2s]
ca_file = "{test_ca.cert}"
system_roots = false

[sip]
enabled = true
listen_udp = ["{ENTENTE_IP}:{port}"]
listen_tcp = ["{ENTENTE_IP}:{port}"]
listen_tls = ["{ENTENTE_IP}:{tls_port}"]
t1_ms = 50
{extra_sip}
""", domain=DOMAIN)
        s.start()
        deadline = time.time() + 10
        while 'transport="TLS"' not in s.log():
            assert time.time() < deadline, "SIP listeners did not start"
            time.sleep(0.05)
        return Sip(s, port, tls_port, test_ca, peer)

    return start


def udp_exchange(port, payload, *, expect=True, timeout=3.0):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind((SIPP_IP, 0))
        u.settimeout(timeout)
        u.sendto(payload, (ENTENTE_IP, port))
        if not expect:
            return u.getsockname(), None
        data, _ = u.recvfrom(70000)
        return u.getsockname(), data


def udp_socket():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((SIPP_IP, 0))
    u.settimeout(3.0)
    return u


def read_message(sock, timeout=3.0):
    """Reads one SIP message (headers plus Content-Length body) from a stream socket."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(rest) < length:
        rest += sock.recv(65536)
    return head + b"\r\n\r\n" + rest


# ---------------------------------------------------------------------------------------------
# sipp
# ---------------------------------------------------------------------------------------------

@needs_sipp
@pytest.mark.parametrize("transport", ["u1", "t1", "l1"])
def test_options_answered_with_capabilities(sip, workdir, transport):
    """OPTIONS over UDP, TCP and TLS: 200 with Allow, Accept and Supported (checked inside the
    scenario by <ereg check_it="true">, so a missing header fails the sipp call)."""
    s = sip()
    relay = None
    extra = ()
    target = s.udp_target
    if transport == "l1":
        if sipp_has_tls():
            extra = ("-tls_cert", str(s.peer.cert), "-tls_key", str(s.peer.key))
            target = f"{ENTENTE_IP}:{s.tls_port}"
        else:
            relay = TlsRelay(RELAY_IP, (ENTENTE_IP, s.tls_port), s.peer.cert, s.peer.key).start()
            transport, target = "t1", f"{RELAY_IP}:{relay.port}"
    try:
        rc, trace, log, out = run_sipp("options.xml", target, transport=transport,
                                       workdir=workdir, name=f"options-{transport}", extra=extra)
    finally:
        if relay:
            relay.stop()
    assert rc == 0, out
    logged = log.read_text()
    assert "allow=INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY" in logged
    assert "accept=application/pidf+xml" in logged
    received = [m for _, d, m in read_trace(trace) if d == "received"]
    assert received and received[0].startswith("SIP/2.0 200 OK")
    if relay or "-tls_cert" in extra:
        # The client certificate's names were checked against the [s2s] CA and recorded.
        assert 'names=["peer.sip.test"]' in s.server.log()


@needs_sipp
def test_options_retransmission_gets_the_cached_response(sip, workdir):
    """The same OPTIONS twice (same branch): the server transaction absorbs the second and
    re-sends its first 200 byte for byte (RFC 3261 §17.2.2), To tag included."""
    s = sip()
    rc, trace, _, out = run_sipp("options_same_branch.xml", s.udp_target, workdir=workdir,
                                 name="same-branch", extra=("-nr",))
    assert rc == 0, out
    msgs = read_trace(trace)
    sent = [m for _, d, m in msgs if d == "sent"]
    got = [m for _, d, m in msgs if d == "received"]
    assert len(sent) == 2 and len(got) == 2, msgs
    branch = lambda m: next(l for l in m.splitlines() if l.startswith("Via:")).split("branch=")[1]
    assert branch(sent[0]) == branch(sent[1])
    assert got[0].startswith("SIP/2.0 200 OK") and got[0] == got[1]


def _403s(msgs):
    return [(t, m) for t, d, m in msgs if d == "received" and m.startswith("SIP/2.0 403")]


@needs_sipp
def test_lost_403_is_retransmitted_until_acked(sip, workdir):
    """INVITE from a non-permitted domain over UDP: 403. The peer does not ACK the first 403
    (it is "lost"), so Entente retransmits it (Timer G: T1, 2*T1, 4*T1, ...); the peer ACKs
    after 400 ms, and the retransmissions stop (Confirmed, then Timer I)."""
    s = sip()
    rc, trace, _, out = run_sipp("invite_403_late_ack.xml", s.udp_target, workdir=workdir,
                                 name="late-ack", extra=("-d", "400"))
    assert rc == 0, out
    msgs = read_trace(trace)
    ack_at = next(t for t, d, m in msgs if d == "sent" and m.startswith("ACK "))
    before = [(t, m) for t, m in _403s(msgs) if t < ack_at]
    after = [(t, m) for t, m in _403s(msgs) if t > ack_at]
    # With T1 = 50 ms: the 403 at 0 and retransmissions near 50, 150 and 350 ms.
    assert len(before) >= 3, msgs
    assert all(m == before[0][1] for _, m in before), "retransmissions must be identical"
    assert "Domain not permitted" in before[0][1]
    gaps = [(b[0] - a[0]).total_seconds() for a, b in zip(before, before[1:])]
    assert gaps[0] >= 0.04 and gaps[1] >= 0.08, gaps  # doubling intervals
    assert after == [], "the 403 was retransmitted after the ACK"
    # The ACK did not re-send anything else either (the only sent messages: INVITE, ACK).
    assert len([1 for _, d, _ in msgs if d == "sent"]) == 2


@needs_sipp
def test_unacked_403_ends_with_timer_h(sip, workdir):
    """An INVITE whose 403 is never ACKed: Entente retransmits it until Timer H (64*T1 =
    3.2 s) ends the transaction, then stops; sipp keeps listening until 4.5 s."""
    s = sip()
    rc, trace, _, out = run_sipp("invite_403_no_ack.xml", s.udp_target, workdir=workdir,
                                 name="no-ack", extra=("-d", "4500"))
    assert rc == 0, out
    got = _403s(read_trace(trace))
    first = got[0][0]
    offsets = [(t - first).total_seconds() for t, _ in got]
    # 0, .05, .15, .35, .75, 1.55, 3.15 s: 7 transmissions, the last before 3.2 s.
    assert 5 <= len(got) <= 8, offsets
    assert offsets[-1] < 3.4, offsets
    # sipp listened until 4.5 s after the 403 and heard nothing after Timer H.
    assert "SIP server transaction timed out (no ACK)" in s.server.log()


# ---------------------------------------------------------------------------------------------
# raw sockets: what sipp cannot send
# ---------------------------------------------------------------------------------------------

def test_malformed_requests_get_400_naming_the_problem(sip):
    s = sip()
    u = udp_socket()
    local = u.getsockname()
    cases = [
        # (request bytes, expected status line)
        (sip_request("OPTIONS", ENTENTE_IP, s.port, "UDP", local, branch="neg", call_id="neg",
                     content_length=-5), "SIP/2.0 400 Bad Content-Length"),
        (sip_request("OPTIONS", ENTENTE_IP, s.port, "UDP", local, branch="nul", call_id="nul",
                     extra_headers="Subject: a\x00b\r\n"), "SIP/2.0 400 NUL byte in header"),
        (sip_request("OPTIONS", ENTENTE_IP, s.port, "UDP", local, branch="cseq", call_id="cseq",
                     cseq="x OPTIONS"), "SIP/2.0 400 Bad CSeq"),
        (sip_request("MESSAGE", ENTENTE_IP, s.port, "UDP", local, branch="mm", call_id="mm",
                     cseq="1 INVITE"), "SIP/2.0 400 CSeq method does not match request method"),
    ]
    for payload, expected in cases:
        u.sendto(payload, (ENTENTE_IP, s.port))
        data, _ = u.recvfrom(70000)
        assert status_line(data) == expected, (payload, data)
        assert b"\r\nCall-ID: " in data and b"\r\nTo: " in data
    # Over TCP: the same answers, and the connection stays usable.
    with socket.create_connection((ENTENTE_IP, s.port)) as c:
        local = c.getsockname()
        c.sendall(sip_request("OPTIONS", ENTENTE_IP, s.port, "TCP", local, branch="t1",
                              call_id="t1", extra_headers="Subject: a\x00b\r\n"))
        assert status_line(read_message(c)) == "SIP/2.0 400 NUL byte in header"
        c.sendall(sip_request("OPTIONS", ENTENTE_IP, s.port, "TCP", local, branch="t2",
                              call_id="t2"))
        assert status_line(read_message(c)) == "SIP/2.0 200 OK"
        # A negative Content-Length on a stream cannot be framed: the connection is closed.
        c.sendall(sip_request("OPTIONS", ENTENTE_IP, s.port, "TCP", local, branch="t3",
                              call_id="t3", content_length=-5))
        c.settimeout(3)
        assert c.recv(100) == b""
    u.close()


def test_garbage_never_stops_the_server(sip):
    """Unanswerable requests (no Call-ID: a response must copy it), unparseable responses,
    binary junk, truncated bodies: dropped, and the server keeps answering."""
    s = sip()
    u = udp_socket()
    local = u.getsockname()
    no_call_id = sip_request("OPTIONS", ENTENTE_IP, s.port, "UDP", local, branch="x",
                             call_id="x").replace(b"Call-ID: x\r\n", b"")
    junk = [
        no_call_id,
        b"SIP/2.0 200 OK\r\nVia: garbage\r\n\r\n",
        b"\x00\xff" * 100,
        b"INVITE",
        b"\r\n\r\n",
        sip_request("OPTIONS", ENTENTE_IP, s.port, "UDP", local, branch="y", call_id="y",
                    content_length=500),
        b"OPTIONS sip:x SIP/2.0\r\n" + b"X: y\r\n" * 2000 + b"\r\n",
    ]
    for j in junk:
        u.sendto(j, (ENTENTE_IP, s.port))
    # Bad Content-Length > body is answered (400); everything else is silently dropped.
    u.sendto(sip_request("OPTIONS", ENTENTE_IP, s.port, "UDP", local, branch="ok",
                         call_id="ok"), (ENTENTE_IP, s.port))
    statuses = []
    deadline = time.time() + 5
    while time.time() < deadline and "SIP/2.0 200 OK" not in statuses:
        data, _ = u.recvfrom(70000)
        statuses.append(status_line(data))
    assert "SIP/2.0 200 OK" in statuses, statuses
    assert all(not st.startswith("SIP/2.0 5") for st in statuses), statuses
    # Over TCP: a connection that sends garbage without a blank line is closed at the size
    # limit, never buffered forever.
    with socket.create_connection((ENTENTE_IP, s.port)) as c:
        c.settimeout(5)
        try:
            for _ in range(40):
                c.sendall(b"A" * 4096)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            assert c.recv(100) == b""
        except ConnectionResetError:
            pass
    log = s.server.log()
    assert "unparseable SIP response dropped" in log
    assert "malformed SIP request dropped (unanswerable)" in log
    assert s.server.proc.poll() is None


def test_oversized_message(sip):
    """A message over sip.max_message_bytes: 513 over UDP (RFC 3261 §21.5.14), connection
    closed over TCP (the stream cannot be delimited)."""
    s = sip("max_message_bytes = 2048")
    body = "x" * 3000
    _, data = udp_exchange(s.port, sip_request("MESSAGE", ENTENTE_IP, s.port, "UDP",
                                               (SIPP_IP, 5060), branch="big", call_id="big",
                                               extra_headers="Content-Type: text/plain\r\n",
                                               body=body))
    assert status_line(data) == "SIP/2.0 513 Message too large", data[:200]
    with socket.create_connection((ENTENTE_IP, s.port)) as c:
        local = c.getsockname()
        c.sendall(sip_request("MESSAGE", ENTENTE_IP, s.port, "TCP", local, branch="big2",
                              call_id="big2", extra_headers="Content-Type: text/plain\r\n",
                              body=body))
        c.settimeout(3)
        assert c.recv(100) == b""


def test_keepalive_over_tcp_and_tls(sip):
    """RFC 5626 §4.4.1: a CRLFCRLF ping gets a CRLF pong, over TCP and over TLS, and a
    request on the same TLS connection is answered on it."""
    s = sip()
    with socket.create_connection((ENTENTE_IP, s.port)) as c:
        c.settimeout(3)
        c.sendall(b"\r\n\r\n")
        assert c.recv(10) == b"\r\n"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(s.ca.cert))
    ctx.load_cert_chain(str(s.peer.cert), str(s.peer.key))
    with socket.create_connection((ENTENTE_IP, s.tls_port)) as raw:
        with ctx.wrap_socket(raw, server_hostname=DOMAIN) as c:
            c.settimeout(3)
            c.sendall(b"\r\n\r\n")
            assert c.recv(10) == b"\r\n"
            local = c.getsockname()
            c.sendall(sip_request("SUBSCRIBE", DOMAIN, s.tls_port, "TLS", local, branch="sub",
                                  call_id="sub", extra_headers="Event: presence\r\n"
                                  "Contact: <sip:probe@peer.sip.test;transport=tls>\r\n"))
            resp = read_message(c)
            assert status_line(resp) == "SIP/2.0 403 Domain not permitted"
    assert 'names=["peer.sip.test"]' in s.server.log()


def test_idle_connections_are_closed(sip):
    s = sip("idle_timeout_secs = 1")
    with socket.create_connection((ENTENTE_IP, s.port)) as c:
        c.settimeout(5)
        t0 = time.time()
        assert c.recv(10) == b""
        assert 0.8 < time.time() - t0 < 4


def test_sip_is_off_by_default(make_server):
    s = make_server("")
    s.start()
    time.sleep(0.3)
    assert "accepting SIP" not in s.log()
