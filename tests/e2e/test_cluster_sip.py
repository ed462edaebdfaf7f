"""SIP federation in a cluster (docs/cluster.md, "SIP federation"): dialog ownership and takeover.

Real engines only: a fresh PostgreSQL database (pg_url), a private nats-server (make_nats) on
127.0.0.150, and three `entente serve` nodes of a.test: n1 (127.0.0.151) and n2 (127.0.0.152)
with SIP federation (each its own SIP listener: the two SRV targets of the domain), n3
(127.0.0.153) without SIP. The foreign domain lync.test is a sip_peer.SipPeer on 127.0.0.155
over TCP, which reaches a.test at n1 first and turns to n2 when n1 fails (its "route lists the
two routing nodes").

alice is on n3, which has no SIP: what she sends to lync.test goes to a SIP node through NATS.
Every dialog is created while n1 is the only SIP node (so n1 holds them all): carol@lync.test
watches alice, alice watches dave@lync.test, alice and carol chat in a Lync IM session. Then n2
starts, n1 is SIGKILLed while alice writes to carol every 100 ms, and the peer turns to n2:
its in-dialog MESSAGE reaches n2 (which adopts the session from the store instead of answering
481), n2 takes over n1's dialogs (the watcher gets a NOTIFY from n2 in its old dialog, our
subscription is refreshed in its old dialog), carol's refresh and dave's NOTIFYs are taken by
n2, and every message alice sent reached carol or bounced back to alice: none is lost.
"""
import asyncio
import re
import subprocess
import time

import pytest

from sip_helpers import free_port, sip_config, tcp_peer
from sip_peer import SipPeer, LyncEndpoint, dialog_from_response, lync_pidf
from test_cluster import ClusterNode
from xmpp_client import Client, avail_from, next_matching, sub_from

DOMAIN = "a.test"
ALICE = f"alice@{DOMAIN}"
CAROL = "carol@lync.test"
DAVE = "dave@lync.test"
NATS_IP = "127.0.0.150"
N1_IP, N2_IP, N3_IP = "127.0.0.151", "127.0.0.152", "127.0.0.153"
PEER_IP = "127.0.0.155"


async def athread(f, *a, **kw):
    return await asyncio.to_thread(f, *a, **kw)


def availability(body):
    m = re.search(r"availability>\s*(\d+)", body)
    return int(m.group(1)) if m else None


def basic_of(body):
    m = re.search(r"<(?:\w+:)?basic>\s*(\w+)", body)
    return m.group(1) if m else None


class SipNode(ClusterNode):
    """A cluster node of a.test; with `sip_port`, a SIP routing node listening on ip:sip_port."""

    def __init__(self, workdir, ip, node_id, pg_url, nats_url, ca, cert, peer, sip_port=None):
        peer_section = tcp_peer(peer.domain, "lync", peer.ip, peer.port)
        if sip_port is not None:
            extra = sip_config(ca=ca, cert=cert, tcp=f"{ip}:{sip_port}", policy="ask",
                               sip_extra="t1_ms = 50\nsubscribe_expires_secs = 600\n",
                               peers=[peer_section])
        else:
            # No SIP here, but the same peer settings: the node knows lync.test is SIP.
            extra = (f'\n[tls]\ncert = "{cert.cert}"\nkey = "{cert.key}"\n'
                     '\n[policy]\ndefault = "ask"\n\n[sip]\nenabled = false\n' + peer_section)
        super().__init__(workdir, ip, node_id, pg_url, nats_url, domain=DOMAIN, extra=extra)
        self.trust = ca
        self.sip_port = sip_port


def wait_for(pred, what, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def lync():
    with SipPeer("lync.test", PEER_IP) as p:
        yield p


def test_sip_dialogs_survive_the_routing_node_that_held_them(workdir, pg_url, make_nats, test_ca,
                                                             lync, request):
    nats = make_nats(NATS_IP)
    cert = test_ca.issue(DOMAIN)
    nodes = {}

    def node(name, ip, sip):
        d = workdir / name
        d.mkdir()
        n = SipNode(d, ip, name, pg_url, nats.url, test_ca.cert, cert, lync,
                    sip_port=free_port(ip) if sip else None)
        nodes[name] = n
        return n

    def stop_all():
        for n in nodes.values():
            n.stop()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            for n in nodes.values():
                print(f"\n----- node {n.node_id} log (last 12000 chars) -----\n{n.log()[-12000:]}")

    request.addfinalizer(stop_all)
    n1, n2, n3 = node("n1", N1_IP, True), node("n2", N2_IP, True), node("n3", N3_IP, False)
    n1.add_user("alice", "alice-pw")
    n1.start()
    n3.start()
    wait_for(lambda: n1.peers_seen() >= 1 and n3.peers_seen() >= 1, "n1 and n3 to meet")
    wait_for(lambda: "accepting SIP" in n1.log(), "n1's SIP listener")
    lync.connect(N1_IP, n1.sip_port)

    async def scenario():
        a = await Client(n3, "alice", "alice-pw").login()

        # carol (lync.test) watches alice: the SUBSCRIBE reaches n1; alice, on n3, is asked.
        carol = LyncEndpoint("carol", edge=lync.address)
        sub = await athread(
            lync.request, "SUBSCRIBE", f"sip:{ALICE}", from_uri=carol.from_uri,
            to_uri=f"sip:{ALICE}",
            headers=[("Event", "presence"), ("Accept", "application/pidf+xml"),
                     ("Expires", "600"), ("Contact", carol.contact)])
        assert sub.status == 202, sub.summary()
        watch = dialog_from_response(sub.request, sub)
        watch.local_contact = carol.contact
        await next_matching(a.subscriptions, sub_from("subscribe", CAROL))
        # alice (n3, no SIP) approves: through NATS to n1, which NOTIFYs her presence.
        a.send_presence(pto=CAROL, ptype="subscribed")
        n = await athread(lync.wait_request, "NOTIFY",
                          lambda r: r.call_id == sub.call_id and availability(r.text) == 3500, 10)
        last_watch_cseq = n.cseq[0]

        # alice watches dave: n1 subscribes; dave's NOTIFY becomes presence on n3.
        a.send_presence_subscription(pto=DAVE)
        out = await athread(lync.wait_request, "SUBSCRIBE",
                            lambda r: r.uri.startswith(f"sip:{DAVE}"), 10)
        dave = lync.dialog_for(out)
        r = await athread(lync.in_dialog, dave, "NOTIFY",
                          [("Event", "presence"), ("Subscription-State", "active;expires=600")],
                          lync_pidf(3500, f"sip:{DAVE}", with_number=True), "application/pidf+xml")
        assert r.status == 200, r.summary()
        await next_matching(a.subscriptions, sub_from("subscribed", DAVE))
        await next_matching(a.presences, avail_from(DAVE))

        # An IM session (Lync: session mode): alice's first message opens it from n1.
        a.send_message(mto=CAROL, mbody="hello carol", mtype="chat")
        inv = await athread(lync.wait_request, "INVITE", None, 10)
        first = await athread(lync.wait_request, "MESSAGE", None, 10)
        assert first.text == "hello carol" and first.call_id == inv.call_id
        chat = lync.dialog_for(inv)
        r = await athread(lync.in_dialog, chat, "MESSAGE", [], "hi alice", "text/plain; charset=UTF-8")
        assert r.status == 200, r.summary()
        assert (await next_matching(a.messages, lambda m: m["body"]))["body"] == "hi alice"

        # n2 joins; n1 holds every dialog (the store says so).
        n2.start()
        wait_for(lambda: n2.peers_seen() >= 2, "n2 to meet n1 and n3")
        wait_for(lambda: "accepting SIP" in n2.log(), "n2's SIP listener")
        owners = sip_dialog_owners(pg_url)
        assert set(owners.values()) == {"n1"} and len(owners) == 3, owners

        # alice writes to carol every 100 ms (n3 hands them to n1, the holder of the session).
        sent, stop = [], asyncio.Event()

        async def writer():
            i = 0
            while not stop.is_set():
                body = f"a2c {i}"
                a.send_message(mto=CAROL, mbody=body, mtype="chat")
                sent.append(body)
                i += 1
                await asyncio.sleep(0.1)

        w = asyncio.ensure_future(writer())
        await asyncio.sleep(1.5)
        n1.kill()
        # The peer turns to the other target of a.test, and goes on in the IM session there
        # (before the cluster has noticed n1's death: n2 adopts the session on demand).
        await athread(lync.connect, N2_IP, n2.sip_port)
        chat.conn = None
        r = await athread(lync.in_dialog, chat, "MESSAGE", [], "still there?",
                          "text/plain; charset=UTF-8", timeout=10)
        assert r.status == 200, r.summary()
        assert (await next_matching(a.messages, lambda m: m["body"] == "still there?"))

        # n2 takes over the rest: the watcher gets a NOTIFY in its old dialog (alice still
        # available), and our subscription to dave is refreshed in its old dialog.
        n = await athread(lync.wait_request, "NOTIFY",
                          lambda r: r.call_id == sub.call_id and r.cseq[0] > last_watch_cseq
                          and availability(r.text) == 3500, 15)
        assert n.header("Subscription-State").startswith("active"), n.summary()
        refresh = await athread(lync.wait_request, "SUBSCRIBE",
                                lambda r: r.call_id == out.call_id and r.to_tag, 15)
        assert refresh.cseq[0] > out.cseq[0] and refresh.header("Expires") != "0"
        # carol refreshes her subscription with n2; dave's next NOTIFY is taken by n2.
        watch.conn = None
        r = await athread(lync.in_dialog, watch, "SUBSCRIBE",
                          [("Event", "presence"), ("Expires", "600")], timeout=10)
        assert r.status == 200, r.summary()
        dave.conn = None
        r = await athread(lync.in_dialog, dave, "NOTIFY",
                          [("Event", "presence"), ("Subscription-State", "active;expires=600")],
                          lync_pidf(15500, f"sip:{DAVE}", with_number=True), "application/pidf+xml",
                          timeout=10)
        assert r.status == 200, r.summary()
        p = await next_matching(a.presences, avail_from(DAVE))
        assert p["show"] == "away", p

        await asyncio.sleep(1.0)
        stop.set()
        await w
        await asyncio.sleep(2.0)
        # Nothing alice sent was lost: carol got it (in the IM session, over n1 or n2), or it
        # bounced back to alice. (At-least-once: one in flight at the kill may arrive twice.)
        got = [m.text for m in lync.requests if m.method == "MESSAGE" and m.text.startswith("a2c ")]
        calls = {m.call_id for m in lync.requests
                 if m.method == "MESSAGE" and m.text.startswith("a2c ")}
        bounced = []
        while not a.errors.empty():
            e = a.errors.get_nowait()
            if e["body"]:
                bounced.append(e["body"])
        lost = sorted(set(sent) - set(got) - set(bounced), key=lambda b: int(b.split()[1]))
        assert not lost, f"lost: {lost} (sent {len(sent)}, got {len(got)}, bounced {bounced})"
        assert len(got) - len(set(got)) <= 2, got
        # All in the session alice opened: n2 carried it on instead of opening another.
        assert calls == {inv.call_id}, calls
        # n2 holds every dialog now.
        owners = sip_dialog_owners(pg_url)
        assert set(owners.values()) == {"n2"} and len(owners) == 3, owners
        await a.logout()

    asyncio.run(scenario())


def sip_dialog_owners(pg_url):
    """{row id: owner} of the sip_dialogs table, read with psql."""
    r = subprocess.run(["psql", pg_url, "-At", "-F", "|", "-c",
                        "SELECT id, owner FROM sip_dialogs ORDER BY id"],
                       capture_output=True, text=True, timeout=30, check=True)
    out = {}
    for line in r.stdout.splitlines():
        if "|" in line:
            k, _, v = line.rpartition("|")
            out[k] = v
    return out
