"""The sipp scenarios of tests/sipp/ (lync_im_inbound.xml, lync_subscribe.xml,
aol_subscribe.xml) against a real Entente with SIP federation: sipp plays the foreign edge
(lync.test or aol.test), a slixmpp client plays the local user bob@a.test.

Each test checks both sides: what sipp reports (exit code, its statistics file, its
<log> lines and the messages it traced) and what reached bob over XMPP.

Addresses: Entente 127.0.0.90, sipp as lync.test 127.0.0.91, sipp as aol.test 127.0.0.92,
sipp as simple.test 127.0.0.93.
sipp's port is chosen here and written into the peer's `routes`, since Entente sends every
request to a SIP domain to its configured route (never to a Contact or Record-Route host).
sipp runs with `-t t1 -bind_local -p PORT`: its one TCP connection is bound to PORT, so
Entente finds it open for the route and sends its NOTIFYs on it, as on an edge's connection
(see the comment in tests/sipp/lync_subscribe.xml for `-t tn`).

The subscribe scenarios accept a NOTIFY before or after the 2xx to its SUBSCRIBE, as RFC 6665
§4.1.2.4 requires of a subscriber (Entente queues its answer before the NOTIFY it triggers, but
a peer must not rely on that).
"""
import asyncio
import csv
import pathlib
import re

import pytest

from sip_helpers import SIPP, free_port, read_trace, run_sipp, sip_config, sipp_keys, tcp_peer, wait_sip_listening
from xmpp_client import Client, next_matching

ENTENTE_IP = "127.0.0.90"
LYNC_IP = "127.0.0.91"
AOL_IP = "127.0.0.92"
DOMAIN = "a.test"

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp is not installed (Debian package sip-tester)")


async def athread(f, *a, **kw):
    """Runs a blocking call (sipp) without blocking the XMPP client's event loop."""
    return await asyncio.to_thread(f, *a, **kw)


class Gw:
    """A started Entente (a.test) with one SIP peer played by sipp on (sipp_ip, sipp_port)."""

    def __init__(self, server, port, sipp_ip, sipp_port):
        self.server, self.port, self.sipp_ip, self.sipp_port = server, port, sipp_ip, sipp_port

    @property
    def target(self):
        return f"{ENTENTE_IP}:{self.port}"


@pytest.fixture
def gateway(make_server, test_ca):
    def start(peer_domain, profile, sipp_ip):
        port = free_port(ENTENTE_IP)
        sipp_port = free_port(sipp_ip)
        cert = test_ca.issue(DOMAIN)
        s = make_server(sip_config(ca=test_ca.cert, cert=cert, tcp=f"{ENTENTE_IP}:{port}", policy="allow",
                                   sip_extra="t1_ms = 50", peers=[tcp_peer(peer_domain, profile, sipp_ip, sipp_port)]),
                        domain=DOMAIN)
        s.trust = test_ca.cert
        s.add_user("bob", "bob-pw")
        s.start()
        wait_sip_listening(s)
        return Gw(s, port, sipp_ip, sipp_port)

    return start


def sipp_run(gw, workdir, scenario, name, keys, transport="t1"):
    """Runs one sipp call as the peer: its fixed address and port, -key values; returns
    (returncode, output, trace messages, log text, statistics row)."""
    stat = pathlib.Path(workdir) / f"{name}.csv"
    rc, trace, log, out = run_sipp(
        scenario, gw.target, transport=transport, local_ip=gw.sipp_ip, port=gw.sipp_port,
        workdir=workdir, name=name, timeout=15,
        extra=[*sipp_keys(**keys), "-trace_stat", "-stf", str(stat)])
    msgs = read_trace(trace) if trace.exists() else []
    logtext = log.read_text(errors="replace") if log.exists() else ""
    return rc, out, msgs, logtext, last_stats(stat)


def last_stats(path):
    """The last row of sipp's -trace_stat CSV (semicolon separated) as a dict."""
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text().splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1]))


def assert_sipp_ok(rc, out, msgs, logtext, stats, workdir, name):
    err = pathlib.Path(workdir) / f"{name}.err"
    errtext = err.read_text(errors="replace") if err.exists() else ""
    detail = (f"sipp exit {rc}\n--- output ---\n{out[-3000:]}\n--- errors ---\n{errtext[-3000:]}"
              f"\n--- log ---\n{logtext[-2000:]}\n--- trace ---\n"
              + "\n".join(f"{d}: {m[:300]}" for _, d, m in msgs))
    assert rc == 0, detail
    assert stats.get("SuccessfulCall(C)") == "1" and stats.get("FailedCall(C)") == "0", (stats, detail)


def first_line(msg):
    return msg.split("\r\n", 1)[0].split("\n", 1)[0]


def header(msg, name):
    m = re.search(rf"^{name}:\s*(.*?)\r?$", msg, re.M | re.I)
    return m.group(1) if m else None


def test_lync_inbound_session_im(gateway, workdir):
    """sipp (a Lync edge) opens a session-mode IM to bob: INVITE with the first message in
    Ms-Text-Format, ACK, a MESSAGE, an isComposing MESSAGE, BYE. bob hears both messages (the
    embedded one first) and the typing notification."""
    gw = gateway("lync.test", "lync", LYNC_IP)

    async def scenario():
        bob = Client(gw.server, "bob", "bob-pw")
        bob.register_plugin("xep_0085")
        states = asyncio.Queue()
        bob.add_event_handler("chatstate", lambda m: states.put_nowait(m))
        await bob.login()
        r = await athread(sipp_run, gw, workdir, "lync_im_inbound.xml", "lync_im",
                          dict(touser="bob", todomain=DOMAIN, fromuser="alice", fromdomain="lync.test"))
        m1 = await next_matching(bob.messages, lambda m: m["body"])
        m2 = await next_matching(bob.messages, lambda m: m["body"])
        st = await next_matching(states, lambda m: m["chat_state"] == "composing")
        await bob.logout()
        return r, m1, m2, st

    r, m1, m2, st = asyncio.run(scenario())
    rc, out, msgs, logtext, stats = r
    assert_sipp_ok(*r, workdir, "lync_im")
    # The 200 to the INVITE: an m=message answer and a Contact (checked by the scenario's
    # <ereg check_it>, logged here), and the Record-Route echoed back.
    assert "invite-200 contact=" in logtext and "mline=m=message" in logtext, logtext
    assert "message-200" in logtext and "iscomposing-200" in logtext and "bye-200" in logtext, logtext
    ok = [m for _, d, m in msgs if d == "received" and first_line(m).startswith("SIP/2.0 200")
          and "INVITE" in (header(m, "CSeq") or "")]
    assert ok and "ms-route-sig=" in (header(ok[0], "Record-Route") or ""), ok
    # Nothing but responses came from Entente (the scenario fails on any request anyway).
    assert all(first_line(m).startswith("SIP/2.0") for _, d, m in msgs if d == "received")
    # The XMPP side: both lines, in order, from alice@lync.test; then composing.
    assert m1["body"] == "hello from lync" and m1["from"].bare == "alice@lync.test", m1
    assert m2["body"] == "second line" and m2["from"].bare == "alice@lync.test", m2
    assert st["from"].bare == "alice@lync.test" and st["chat_state"] == "composing", st


def test_lync_subscribe(gateway, workdir):
    """sipp (a Lync edge) subscribes to bob's presence. Default policy allow: bob is not asked,
    the NOTIFYs say available (open) while bob is online; the unsubscribe gets 200 and a
    terminated NOTIFY."""
    gw = gateway("lync.test", "lync", LYNC_IP)

    async def scenario():
        bob = await Client(gw.server, "bob", "bob-pw").login()
        r = await athread(sipp_run, gw, workdir, "lync_subscribe.xml", "lync_sub",
                          dict(touser="bob", todomain=DOMAIN, fromuser="alice", fromdomain="lync.test"))
        asked = [p for p in drain(bob.subscriptions) if p["type"] == "subscribe"]
        await bob.logout()
        return r, asked

    r, asked = asyncio.run(scenario())
    rc, out, msgs, logtext, stats = r
    assert_sipp_ok(*r, workdir, "lync_sub")
    # Default allow: bob was not asked.
    assert not asked, asked
    # sipp's own checks (<ereg check_it>), as it logged them.
    assert re.search(r"subscribe-response=202", logtext), logtext
    assert re.search(r"notify-1 substate= *active ctype=application/pidf\+xml basic=open", logtext), logtext
    assert re.search(r"unsubscribe-response=200", logtext), logtext
    assert re.search(r"notify-2 substate= *terminated", logtext), logtext
    # The NOTIFYs as sipp received them: to the watcher's GRUU through the edge's
    # Record-Route (now a Route), bob online = Lync availability 3500, then terminated.
    notifies = received_requests(msgs, "NOTIFY")
    assert len(notifies) == 2, [first_line(m) for m in notifies]
    n1, n2 = notifies
    assert "opaque=user:epid:" in first_line(n1) and "gruu" in first_line(n1), first_line(n1)
    assert "ms-route-sig=" in (header(n1, "Route") or ""), n1
    assert (header(n1, "Event") or "").startswith("presence")
    assert re.search(r"availability>\s*3500", n1), n1
    assert 'entity="sip:bob@a.test"' in n1, n1
    assert (header(n2, "Subscription-State") or "").startswith("terminated"), n2
    assert cseq_number(n2) > cseq_number(n1)
    assert_notifies_answered(msgs)


def test_aol_subscribe(gateway, workdir):
    """sipp (the AOL gateway) subscribes to bob's presence: no Record-Route, a bare-IP
    Contact, the unsubscribe sent to Entente's address instead of its Contact. Same outcome:
    no question to bob, open, then terminated."""
    gw = gateway("aol.test", "aol", AOL_IP)

    async def scenario():
        bob = await Client(gw.server, "bob", "bob-pw").login()
        r = await athread(sipp_run, gw, workdir, "aol_subscribe.xml", "aol_sub",
                          dict(touser="bob", todomain=DOMAIN, fromuser="aimuser", fromdomain="aol.test"))
        asked = [p for p in drain(bob.subscriptions) if p["type"] == "subscribe"]
        await bob.logout()
        return r, asked

    r, asked = asyncio.run(scenario())
    rc, out, msgs, logtext, stats = r
    assert_sipp_ok(*r, workdir, "aol_sub")
    assert not asked, asked
    assert re.search(r"notify-1 substate= *active ctype=application/pidf\+xml basic=open", logtext), logtext
    assert re.search(r"unsubscribe-response=200", logtext), logtext
    assert re.search(r"notify-2 substate= *terminated", logtext), logtext
    notifies = received_requests(msgs, "NOTIFY")
    assert len(notifies) == 2, [first_line(m) for m in notifies]
    n1, n2 = notifies
    # No Record-Route from AOL: the NOTIFY's Request-URI is the gateway's bare Contact, and
    # it carries no Route.
    assert first_line(n1).startswith(f"NOTIFY sip:{AOL_IP}:"), first_line(n1)
    assert header(n1, "Route") is None, n1
    # Plain PIDF for AOL: no Microsoft availability numbers.
    assert "availability" not in n1, n1
    assert (header(n2, "Subscription-State") or "").startswith("terminated"), n2
    assert_notifies_answered(msgs)


def received_requests(msgs, method):
    return [m for _, d, m in msgs if d == "received" and first_line(m).startswith(method + " ")]


def assert_notifies_answered(msgs):
    """Every NOTIFY sipp received got a 200 with its Via, CSeq, Call-ID and tags (when it
    overtook the 2xx, the scenario builds that 200 from the NOTIFY's headers it kept)."""
    sent = [m for _, d, m in msgs if d == "sent" and first_line(m).startswith("SIP/2.0 200")]
    for n in received_requests(msgs, "NOTIFY"):
        same = [r for r in sent if all((header(r, h) or "").strip() == (header(n, h) or "").strip()
                                       for h in ("Via", "CSeq", "Call-ID", "From", "To"))]
        assert same, (n, sent)


def cseq_number(msg):
    return int((header(msg, "CSeq") or "0").split()[0])


def drain(q):
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


SIMPLE_IP = "127.0.0.93"


def test_simple_server_page_mode_and_presence(gateway, workdir):
    """sipp as a plain SIP/SIMPLE server (profile simple): page-mode MESSAGEs (RFC 3428) with an
    isComposing in between reach bob; then it watches bob's presence with a plain RFC 3856
    subscription (the AOL scenario's flow carries no AOL-specific header) and gets PIDF
    without Microsoft numbers."""
    gw = gateway("simple.test", "simple", SIMPLE_IP)

    async def scenario():
        bob = Client(gw.server, "bob", "bob-pw")
        bob.register_plugin("xep_0085")
        states = asyncio.Queue()
        bob.add_event_handler("chatstate", lambda m: states.put_nowait(m))
        await bob.login()
        r1 = await athread(sipp_run, gw, workdir, "simple_message.xml", "simple_msg",
                           dict(touser="bob", todomain=DOMAIN, fromuser="sam", fromdomain="simple.test"))
        assert_sipp_ok(*r1, workdir, "simple_msg")
        m1 = await next_matching(bob.messages, lambda m: m["body"])
        st = await next_matching(states, lambda m: m["chat_state"] == "composing")
        m2 = await next_matching(bob.messages, lambda m: m["body"])
        r2 = await athread(sipp_run, gw, workdir, "aol_subscribe.xml", "simple_sub",
                           dict(touser="bob", todomain=DOMAIN, fromuser="sam", fromdomain="simple.test"))
        await bob.logout()
        return r1, r2, m1, m2, st

    r1, r2, m1, m2, st = asyncio.run(scenario())
    assert_sipp_ok(*r1, workdir, "simple_msg")
    assert (m1["body"].strip(), m2["body"].strip()) == ("hello from simple", "second page")
    assert m1["from"].bare == "sam@simple.test" and st["from"].bare == "sam@simple.test"
    assert_sipp_ok(*r2, workdir, "simple_sub")
    rc, out, msgs, logtext, stats = r2
    assert re.search(r"notify-1 substate= *active ctype=application/pidf\+xml basic=open", logtext), logtext
    n1 = received_requests(msgs, "NOTIFY")[0]
    # Standard PIDF (plus Entente's exact-state extension), no Microsoft availability number.
    assert 'entity="sip:bob@a.test"' in n1 and not re.search(r"availability>\s*\d", n1), n1
