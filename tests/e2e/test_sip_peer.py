"""Self-tests of sip_peer.SipPeer, the Python SIP peer the SIP federation tests use: two peers
against each other over TCP and TLS (requests and responses, dialogs, auto-responders,
keep-alives, time-outs), the sipp scenarios of tests/sipp/ (lync_*, aol_*) against a SipPeer
standing in for the server, and one exchange with a real Entente.

Addresses: 127.0.0.60 Entente, 127.0.0.61-62 SipPeers, 127.0.0.63 sipp; ports are free ones.
"""
import base64
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from sip_helpers import SIPP, free_port, run_sipp, sipp_keys
from sip_peer import (NO_RESPONSE, Dialog, LyncEndpoint, SipPeer, aol_pidf, dialog_from_request,
                      dialog_from_response, iscomposing_xml, lync_invite_headers,
                      lync_message_headers, lync_message_sdp, lync_pidf, lync_subscribe_headers,
                      parse_message, parse_name_addr, simple_pidf, strip_tag,
                      uri_host_port)

ENTENTE_IP = "127.0.0.60"
A_IP = "127.0.0.61"   # plays lync.test
B_IP = "127.0.0.62"   # plays the server's domain a.test
SIPP_IP = "127.0.0.63"

PIDF = "{urn:ietf:params:xml:ns:pidf}"


@pytest.fixture(params=["tcp", "tls"])
def pair(request, test_ca):
    """(a, b): a (lync.test, on A_IP) has an outbound connection to b (a.test, on B_IP)."""
    kw_a, kw_b = {}, {}
    if request.param == "tls":
        ca, ia, ib = test_ca, test_ca.issue("lync.test"), test_ca.issue("a.test")
        kw_a = dict(transport="tls", cert=ia.cert, key=ia.key, ca=ca.cert)
        kw_b = dict(transport="tls", cert=ib.cert, key=ib.key, ca=ca.cert)
    with SipPeer("a.test", B_IP, **kw_b) as b, SipPeer("lync.test", A_IP, **kw_a) as a:
        a.connect(b.ip, b.port, server_name="a.test" if request.param == "tls" else None)
        yield a, b
        assert a.errors == [] and b.errors == []


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------

def test_parser_compact_forms_folding_lists_and_params():
    raw = (b"NOTIFY sip:alice@lync.test;gruu SIP/2.0\r\n"
           b"v: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bKa;received=10.0.0.9, SIP/2.0/TCP 10.0.0.2\r\n"
           b"Via: SIP/2.0/TCP 10.0.0.3;branch=z9hG4bKc\r\n"
           b"f: \"Bob, B.\" <sip:bob@a.test>;tag=ft1;epid=e1\r\n"
           b"t: sip:alice@lync.test;tag=tt2\r\n"
           b"i: cid-1\r\n"
           b"CSeq: 7\r\n  NOTIFY\r\n"
           b"o: presence\r\n"
           b"Subscription-State: active;expires=3599\r\n"
           b"m: <sip:bob@10.0.0.1:5061;transport=tls>;expires=60, <sip:bob@10.0.0.2>\r\n"
           b"c: application/pidf+xml; charset=UTF-8\r\n"
           b"l: 5\r\n\r\nhello")
    m = parse_message(raw)
    assert m.method == "NOTIFY" and m.uri == "sip:alice@lync.test;gruu" and m.status is None
    assert m.headers_all("Via") == ["SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bKa;received=10.0.0.9",
                                    "SIP/2.0/TCP 10.0.0.2", "SIP/2.0/TCP 10.0.0.3;branch=z9hG4bKc"]
    assert m.branch == "z9hG4bKa" and m.params("v")["received"] == "10.0.0.9"
    assert m.from_tag == "ft1" and m.params("From")["epid"] == "e1" and m.to_tag == "tt2"
    assert parse_name_addr(m.header("From"))[:2] == ("Bob, B.", "sip:bob@a.test")
    assert m.uri_of("To") == "sip:alice@lync.test"
    assert m.call_id == "cid-1" and m.cseq == (7, "NOTIFY")  # folded line joined
    assert m.header("event") == "presence"
    assert m.value("Subscription-State") == "active" and m.params("Subscription-State") == {"expires": "3599"}
    assert len(m.headers_all("Contact")) == 2 and m.params("m")["expires"] == "60"
    assert m.content_type == "application/pidf+xml" and m.params("Content-Type")["charset"] == "UTF-8"
    assert m.body == b"hello" and m.text == "hello"
    assert strip_tag(m.header("From")) == '"Bob, B."<sip:bob@a.test>;epid=e1'
    r = parse_message(b"SIP/2.0 202 Accepted\r\nCSeq: 1 SUBSCRIBE\r\nContent-Length: 0\r\n\r\n")
    assert (r.status, r.reason, r.cseq) == (202, "Accepted", (1, "SUBSCRIBE"))


def test_stream_framing_keepalives_and_split_messages():
    """Messages split across reads, several in one read, keep-alive pings between them."""
    with SipPeer("a.test", B_IP) as b:
        with socket.create_connection((b.ip, b.port)) as s:
            s.settimeout(5)
            msg = (f"MESSAGE sip:bob@a.test SIP/2.0\r\nVia: SIP/2.0/TCP {A_IP}:5060;branch=z9hG4bK1\r\n"
                   "From: <sip:alice@lync.test>;tag=1\r\nTo: <sip:bob@a.test>\r\nCall-ID: c1\r\n"
                   "CSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello").encode()
            second = msg.replace(b"z9hG4bK1", b"z9hG4bK2").replace(b"1 MESSAGE", b"2 MESSAGE")
            s.sendall(b"\r\n\r\n" + msg[:40])
            assert s.recv(10) == b"\r\n"  # pong for the ping
            time.sleep(0.1)
            s.sendall(msg[40:] + second + b"\r\n\r\n")
            got = b""
            while got.count(b"SIP/2.0 200 OK") < 2 or not got.endswith(b"\r\n\r\n\r\n"):
                got += s.recv(4096)
        assert [r.cseq[0] for r in b.requests] == [1, 2]
        assert all(r.body == b"hello" for r in b.requests)
        assert b.connections[0].pings_received == 2


# ---------------------------------------------------------------------------------------------
# two peers
# ---------------------------------------------------------------------------------------------

def test_request_and_response(pair):
    a, b = pair
    resp = a.request("OPTIONS", f"sip:{b.address}", from_uri="sip:alice@lync.test", to_uri="sip:a.test")
    assert resp.status == 200 and "SUBSCRIBE" in resp.header("Allow")
    assert resp.to_tag and resp.request.method == "OPTIONS"
    req = b.wait_request("OPTIONS")
    assert req.header("Max-Forwards") == "70" and req.header("Content-Length") == "0"
    via = req.header("Via")
    assert via.startswith(f"SIP/2.0/{a.via_transport} {a.ip}:{a.port};branch=z9hG4bK") and "rport" in req.params("Via")
    assert req.local_tag == resp.to_tag
    # CSeq counts per Call-ID
    r1 = a.request("MESSAGE", "sip:bob@a.test", from_uri="sip:alice@lync.test", to_uri="sip:bob@a.test",
                   call_id="same@lync.test", body="one")
    r2 = a.request("MESSAGE", "sip:bob@a.test", from_uri="sip:alice@lync.test", to_uri="sip:bob@a.test",
                   call_id="same@lync.test", body="two")
    assert (r1.request.cseq, r2.request.cseq) == ((1, "MESSAGE"), (2, "MESSAGE"))
    assert [b.wait_request("MESSAGE").text for _ in range(2)] == ["one", "two"]
    if a.transport == "tls":
        # each side saw the other's certificate; a verified a.test's name (server_name)
        assert b.connections[0].peer_names == ["lync.test"]
        assert a.outbound.peer_names == ["a.test"]


def test_provisional_responses_are_skipped(pair):
    a, b = pair
    b.responder = lambda req: [(100,), (180, "Ringing"), (486, "Busy Here", [("Retry-After", "5")])] \
        if req.method == "INVITE" else None
    resp = a.request("INVITE", "sip:bob@a.test", from_uri="sip:alice@lync.test", to_uri="sip:bob@a.test",
                     body=lync_message_sdp(a.ip), content_type="application/sdp")
    assert resp.status == 486 and resp.header("Retry-After") == "5"
    assert [p.status for p in resp.provisional] == [100, 180]
    assert resp.provisional[0].to_tag is None and resp.provisional[1].to_tag == resp.to_tag


def test_lync_session_im_dialog(pair):
    """A Lync-style INVITE (first message in Ms-Text-Format, edge Record-Route, GRUU Contact),
    ACK, MESSAGE in the dialog, and a BYE from the callee along the route set."""
    a, b = pair
    ep = LyncEndpoint("alice", "lync.test", display="Alice Lync", edge=a.address, transport=a.transport)
    resp = a.request("INVITE", "sip:bob@a.test", from_uri=ep.from_uri, to_uri="sip:bob@a.test",
                     headers=lync_invite_headers("hello from lync", ep, to_uri="sip:bob@a.test"),
                     body=lync_message_sdp(a.ip), content_type="application/sdp")
    assert resp.status == 200 and resp.content_type == "application/sdp"
    assert f"m=message {b.port} sip sip:bob@a.test" in resp.text
    assert resp.headers_all("Record-Route") == [ep.record_route]
    inv = b.wait_request("INVITE")
    fmt = inv.header("Ms-Text-Format")
    assert fmt.startswith("text/plain; charset=UTF-8;ms-body=")
    assert base64.b64decode(fmt.split("ms-body=")[1]) == b"hello from lync"
    assert "ms-embedded-first-message" in inv.headers_all("Supported")
    assert inv.params("From")["epid"] == ep.epid and inv.header("ms-keep-alive") == "UAC;hop-hop=yes"
    assert inv.uri_of("Contact").endswith(";gruu") and "opaque=user:epid:" in inv.uri_of("Contact")
    rr = inv.header("Record-Route")
    assert ";lr;" in rr and "ms-fe=" in rr and rr == resp.header("Record-Route")  # copied into the 200
    assert "m=message 5060 sip null" in inv.text

    d = dialog_from_response(resp.request, resp)
    assert (d.local_tag, d.remote_tag) == (inv.from_tag, resp.to_tag)
    assert d.remote_target == resp.uri_of("Contact") and d.route_set == [rr]
    a.ack(d, resp.request.cseq[0])
    ack = b.wait_request("ACK")
    assert ack.cseq == (1, "ACK") and ack.branch != inv.branch
    m = a.in_dialog(d, "MESSAGE", headers=lync_message_headers(ep), body="second line",
                    content_type="text/plain; charset=UTF-8")
    assert m.status == 200 and m.request.cseq == (2, "MESSAGE")
    got = b.wait_request("MESSAGE")
    # Request-URI = remote target; our own Record-Route entry is popped (we are the edge)
    assert got.uri == d.remote_target and not got.has("Route") and got.text == "second line"
    assert got.to_tag == resp.to_tag and got.params("From")["epid"] == ep.epid

    bd = dialog_from_request(inv, inv.local_tag)  # the callee's side (= b.dialog_for(inv))
    assert bd.remote_target == inv.uri_of("Contact") and bd.route_set == [rr]
    assert b.in_dialog(bd, "MESSAGE", body=iscomposing_xml("active"),
                       content_type="application/im-iscomposing+xml").request.cseq == (1, "MESSAGE")
    bye = b.in_dialog(bd, "BYE")
    assert bye.status == 200
    got = a.wait_request("BYE")
    assert got.uri == inv.uri_of("Contact") and got.header("Route") == rr
    assert got.from_tag == resp.to_tag and got.to_tag == inv.from_tag and got.cseq == (2, "BYE")
    assert a.wait_request("MESSAGE").content_type == "application/im-iscomposing+xml"


def test_subscribe_and_notify_in_the_dialog(pair):
    a, b = pair
    ep = LyncEndpoint("alice", edge=a.address, transport=a.transport)
    resp = a.request("SUBSCRIBE", "sip:bob@a.test", from_uri=ep.from_uri, to_uri="sip:bob@a.test",
                     headers=lync_subscribe_headers(ep, expires=7200))
    assert resp.status == 202 and resp.header("Expires") == "3600" and resp.to_tag
    sub = b.wait_request("SUBSCRIBE")
    assert sub.header("Event") == "presence" and sub.header("Accept") == "application/pidf+xml"
    d = b.dialog_for(sub)
    body = lync_pidf(6500, "sip:bob@a.test", display_name="Bob")
    n = b.in_dialog(d, "NOTIFY", headers=[("Event", "presence"), ("Subscription-State", "active;expires=3600")],
                    body=body, content_type="application/pidf+xml")
    assert n.status == 200
    notify = a.wait_request("NOTIFY")
    assert notify.header("Route") == sub.header("Record-Route") and notify.uri == ep.contact[1:-1]
    assert notify.call_id == resp.request.call_id and notify.to_tag == resp.request.from_tag
    assert notify.text == body
    # The subscriber's dialog: unsubscribe
    ad = dialog_from_response(resp.request, resp)
    r = a.in_dialog(ad, "SUBSCRIBE", headers=[("Event", "presence"), ("Expires", "0")])
    assert r.status == 202 and r.header("Expires") == "0"


def test_responder_no_response_and_timeouts(pair):
    a, b = pair
    b.responder = lambda req: NO_RESPONSE if req.method == "MESSAGE" else None
    with pytest.raises(TimeoutError, match="no final response to MESSAGE sip:bob@a.test"):
        a.request("MESSAGE", "sip:bob@a.test", from_uri="sip:alice@lync.test", to_uri="sip:bob@a.test",
                  body="lost", timeout=0.5)
    # BENOTIFY is never answered; ACK is not either
    sent = a.request("BENOTIFY", "sip:bob@a.test", from_uri="sip:alice@lync.test", to_uri="sip:bob@a.test",
                     wait=False)
    assert b.wait_request("BENOTIFY").call_id == sent.call_id
    with pytest.raises(TimeoutError, match="no final response"):
        a.wait_response(sent, timeout=0.3)
    b.wait_request("MESSAGE")
    with pytest.raises(TimeoutError) as e:
        b.wait_request("NOTIFY", timeout=0.3)
    text = str(e.value)
    assert "no NOTIFY within 0.3s" in text and "MESSAGE sip:bob@a.test" in text and "BENOTIFY" in text
    with pytest.raises(TimeoutError, match="matching the predicate"):
        b.wait_request(predicate=lambda r: r.method == "INFO", timeout=0.2)


def test_default_answers(pair):
    a, b = pair
    cases = {"NOTIFY": 200, "MESSAGE": 200, "BYE": 200, "INFO": 200, "OPTIONS": 200, "REFER": 202,
             "SUBSCRIBE": 202, "FOO": 501}
    for method, code in cases.items():
        r = a.request(method, "sip:bob@a.test", from_uri="sip:alice@lync.test", to_uri="sip:bob@a.test")
        assert r.status == code, method
    sub = b.wait_request("SUBSCRIBE")
    assert sub.answer.header("Expires") == "3600"  # no Expires in the request: 3600


def test_keepalive_ping_pong(pair):
    a, b = pair
    assert a.ping() is True
    assert b.wait_connection().pings_received == 1
    assert a.outbound.pongs_received == 1
    # the other direction, on the accepted connection
    assert b.ping(b.wait_connection()) is True


def test_strict_route_and_own_route_popping():
    with SipPeer("a.test", B_IP) as p:
        d = Dialog(call_id="c", local_tag="l", remote_tag="r", local_party="<sip:a@a.test>",
                   remote_party="<sip:b@b.test>", remote_target="sip:b@10.0.0.9", local_cseq=1,
                   route_set=[f"<sip:{p.ip}:{p.port};transport=tcp;lr>", "<sip:proxy.b.test;lr>"])
        assert p._target(d) == ("sip:b@10.0.0.9", ["<sip:proxy.b.test;lr>"])
        d.route_set = ["<sip:strict.b.test>", "<sip:next.b.test;lr>"]
        assert p._target(d) == ("sip:strict.b.test", ["<sip:next.b.test;lr>", "<sip:b@10.0.0.9>"])


def test_tls_server_not_trusted_is_refused(test_ca, workdir):
    ia = test_ca.issue("lync.test")
    from certs import self_signed
    rogue = self_signed(workdir / "rogue", "a.test")
    with SipPeer("a.test", B_IP, transport="tls", cert=rogue.cert, key=rogue.key) as b, \
            SipPeer("lync.test", A_IP, transport="tls", cert=ia.cert, key=ia.key, ca=test_ca.cert) as a:
        with pytest.raises(ssl.SSLError):
            a.connect(b.ip, b.port, server_name="a.test")


def test_stop_leaves_nothing_running():
    before = {t.ident for t in threading.enumerate()}
    b = SipPeer("a.test", B_IP)
    a = SipPeer("lync.test", A_IP)
    a.connect(b.ip, b.port)
    a.request("OPTIONS", f"sip:{b.address}", from_uri="sip:alice@lync.test", to_uri="sip:a.test")
    port = b.port
    a.stop()
    b.stop()
    left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert left == []
    with pytest.raises(OSError):
        socket.create_connection((B_IP, port), timeout=1).close()


def test_presence_documents_are_well_formed():
    doc = ET.fromstring(lync_pidf(6500, "sip:alice@lync.test", display_name="A & B", note="In a call"))
    assert doc.get("entity") == "sip:alice@lync.test"
    ep = "{urn:ietf:params:xml:ns:pidf:status:rpid-status}"
    assert doc.find(f"{PIDF}tuple/{PIDF}status/{PIDF}basic").text == "open"
    assert doc.find(f"{PIDF}tuple/{PIDF}status/{ep}activities/{ep}activity").text == "busy"
    assert doc.find("{urn:ietf:params:xml:ns:pidf:cipid}display-name").text == "A & B"
    assert ET.fromstring(lync_pidf(3500, "sip:x@y")).find(f"{PIDF}tuple/{PIDF}status/{ep}activities") is None
    closed = ET.fromstring(lync_pidf(18500, "sip:x@y", with_number=True))
    assert closed.find(f"{PIDF}tuple/{PIDF}status/{PIDF}basic").text == "closed"
    assert closed.find("{http://schemas.microsoft.com/2006/09/sip/state}availability").text == "18500"
    aol = ET.fromstring(aol_pidf("open", "Gone <fishing>", "aimuser@aol.com"))
    assert aol.get("entity") == "aimuser@aol.com"
    assert aol.find(f"{PIDF}tuple/{PIDF}note").text == "Gone <fishing>"
    simple = ET.fromstring(simple_pidf("open", "busy busy", ("busy", "meeting"), entity="sip:c@d"))
    acts = simple.find("{urn:ietf:params:xml:ns:pidf:data-model}person/{urn:ietf:params:xml:ns:pidf:rpid}activities")
    assert [c.tag.split("}")[1] for c in acts] == ["busy", "meeting"]
    assert simple.find(f"{PIDF}note").text == "busy busy"
    isc = ET.fromstring(iscomposing_xml("idle", refresh=60))
    assert isc.find("{urn:ietf:params:xml:ns:im-iscomposing}state").text == "idle"


# ---------------------------------------------------------------------------------------------
# the sipp scenarios against a SipPeer standing in for the server
# ---------------------------------------------------------------------------------------------

needs_sipp = pytest.mark.skipif(SIPP is None, reason="sipp is not installed (Debian package sip-tester)")


def _run_sipp_bg(scenario, target, workdir, name, keys):
    res = {}
    t = threading.Thread(target=lambda: res.update(r=run_sipp(
        scenario, target, transport="t1", local_ip=SIPP_IP, workdir=workdir, name=name,
        extra=sipp_keys(**keys), timeout=15)), daemon=True)
    t.start()
    return t, res


@needs_sipp
def test_sipp_lync_im_inbound_against_peer(workdir):
    with SipPeer("a.test", B_IP) as srv:
        t, res = _run_sipp_bg("lync_im_inbound.xml", srv.address, workdir, "lync-im",
                              dict(touser="bob", todomain="a.test", fromuser="alice", fromdomain="lync.test"))
        t.join(40)
        rc, _, log, out = res["r"]
        assert rc == 0, out
        inv, ack, m1, m2, bye = (srv.wait_request(m) for m in ("INVITE", "ACK", "MESSAGE", "MESSAGE", "BYE"))
    assert inv.uri == "sip:bob@a.test" and inv.params("From")["epid"] == "48a4a25bb1"
    assert base64.b64decode(inv.header("Ms-Text-Format").split("ms-body=")[1]) == b"hello from lync"
    assert inv.header("Record-Route").startswith(f"<sip:{SIPP_IP}:") and "m=message 5060 sip null" in inv.text
    assert ack.uri == inv.answer.uri_of("Contact") and ack.to_tag == inv.local_tag
    assert (m1.content_type, m1.text) == ("text/plain", "second line")
    assert m2.content_type == "application/im-iscomposing+xml" and "<state>active</state>" in m2.text
    assert [r.cseq for r in (m1, m2, bye)] == [(2, "MESSAGE"), (3, "MESSAGE"), (4, "BYE")]
    assert "bye-200" in log.read_text()


@needs_sipp
@pytest.mark.parametrize("scenario,code,new_connection", [
    ("lync_subscribe.xml", 202, False),
    ("lync_subscribe.xml", 200, True),
    ("aol_subscribe.xml", 202, True),
    ("aol_subscribe.xml", 200, False),
])
def test_sipp_subscribe_scenarios_against_peer(workdir, scenario, code, new_connection):
    """The server's part played by the peer: 2xx, NOTIFY active, 2xx to the unsubscribe, NOTIFY
    terminated; the NOTIFYs on sipp's own connection or on a new one to its address."""
    fromdomain = "aol.com" if scenario.startswith("aol") else "lync.test"
    with SipPeer("a.test", B_IP) as srv:
        srv.responder = lambda req: (code, None, [("Expires", req.header("Expires"))]) \
            if req.method == "SUBSCRIBE" else None
        t, res = _run_sipp_bg(scenario, srv.address, workdir, scenario,
                              dict(touser="bob", todomain="a.test", fromuser="watcher", fromdomain=fromdomain))
        sub = srv.wait_request("SUBSCRIBE", timeout=15)
        d = srv.dialog_for(sub)
        conn = None
        if new_connection:  # to the first route, else the remote target, as a server would
            first = parse_name_addr(d.route_set[0])[1] if d.route_set else d.remote_target
            conn = srv.connect(*uri_host_port(first))
        assert srv.in_dialog(d, "NOTIFY", headers=[("Event", "presence"),
                                                    ("Subscription-State", "active;expires=3600")],
                             body=simple_pidf("open", entity="sip:bob@a.test"),
                             content_type="application/pidf+xml", conn=conn).status == 200
        unsub = srv.wait_request("SUBSCRIBE", timeout=15)
        assert srv.in_dialog(d, "NOTIFY", headers=[("Event", "presence"),
                                                    ("Subscription-State", "terminated;reason=timeout")],
                             conn=conn).status == 200
        t.join(40)
        rc, _, log, out = res["r"]
        assert rc == 0, out
    assert unsub.header("Expires") == "0" and unsub.to_tag == sub.local_tag and unsub.cseq == (2, "SUBSCRIBE")
    logged = log.read_text()
    assert "basic=open" in logged and "notify-2 substate= terminated" in logged
    if scenario.startswith("aol"):
        assert not sub.has("Record-Route") and sub.uri_of("Contact").startswith(f"sip:{SIPP_IP}:")
        assert unsub.uri == f"sip:bob@{srv.address};transport=tcp"  # the server's address, not its Contact
        assert "entity=sip:bob@a.test" in logged
    else:
        assert sub.header("Record-Route").startswith(f"<sip:{SIPP_IP}:") and sub.params("From")["epid"]
        assert unsub.uri == sub.answer.uri_of("Contact")


# ---------------------------------------------------------------------------------------------
# against a real Entente
# ---------------------------------------------------------------------------------------------

def test_against_entente(make_server):
    """OPTIONS gets 200 with Allow; a MESSAGE from lync.test (not a permitted SIP domain) is
    refused: 403 today, 403 or 404 once the gateway lands; CRLF keep-alives are answered."""
    port = free_port(ENTENTE_IP)
    s = make_server(f"""
[sip]
enabled = true
listen_udp = []
listen_tcp = ["{ENTENTE_IP}:{port}"]
listen_tls = []
t1_ms = 50
""", domain="a.sip.test")
    s.start()
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection((ENTENTE_IP, port), timeout=0.5).close()
            break
        except OSError:
            assert time.time() < deadline, "SIP listener did not start"
            time.sleep(0.05)
    with SipPeer("lync.test", A_IP) as peer:
        peer.connect(ENTENTE_IP, port)
        r = peer.request("OPTIONS", f"sip:{ENTENTE_IP}:{port}", from_uri="sip:probe@lync.test",
                         to_uri=f"sip:{ENTENTE_IP}:{port}")
        assert r.status == 200, r.raw
        assert "MESSAGE" in r.header("Allow") and "SUBSCRIBE" in r.header("Allow")
        assert r.call_id == r.request.call_id and r.from_tag == r.request.from_tag
        r = peer.request("MESSAGE", "sip:alice@a.sip.test", from_uri="sip:bob@lync.test",
                         to_uri="sip:alice@a.sip.test", body="hello", content_type="text/plain")
        assert r.status in (403, 404), r.raw
        assert peer.ping() is True
        assert peer.errors == []
