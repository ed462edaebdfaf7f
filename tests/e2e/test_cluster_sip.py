"""SIP federation in a cluster (docs/cluster.md, "SIP federation"): dialog ownership and takeover.

Real engines only: a fresh PostgreSQL database (pg_url), a private nats-server (make_nats) on
127.0.0.150, and three `entente serve` nodes of a.test: n1 (127.0.0.151) and n2 (127.0.0.152)
with SIP federation (each its own SIP listener: the two SRV targets of the domain), n3
(127.0.0.153) without SIP. The foreign domain lync.test is a sip_peer.SipPeer on 127.0.0.155
over TCP, which reaches a.test at n1 first and turns to n2 when n1 fails (its "route lists the
two routing nodes").

alice is on n3, which has no SIP: what she sends to lync.test goes to a SIP node through NATS.
Every dialog is created while n1 is the only SIP node (so n1 holds them all): carol@lync.test
and erin@lync.test watch alice, alice watches dave@lync.test, alice and carol chat in a Lync IM
session. Then n2 starts; alice's second resource, on n2, writes to carol too (n2 hands the
message to n1, which holds the session). n1 is SIGKILLed while alice writes to carol every
100 ms, and the peer turns to n2: carol's subscription refresh and her in-dialog MESSAGE reach
n2, which adopts their dialogs from the database instead of answering 481 (and NOTIFYs carol);
once n1 is declared dead, n2 takes over the rest (erin gets a NOTIFY from n2 in her old dialog,
our subscription to dave is refreshed in its old dialog); dave's NOTIFYs are taken by n2, and
every message alice sent reached carol in the one IM session or bounced back to alice: none is
lost. n1, restarted, takes none of them back.
"""
import asyncio
import re
import subprocess
import time

import pytest

from cluster_helpers import ClusterNode
from sip_helpers import free_port, sip_config, tcp_peer
from sip_peer import SipPeer, LyncEndpoint, dialog_from_response, lync_pidf
from xmpp_client import Client, avail_from, next_matching, sub_from

DOMAIN = "a.test"
ALICE = f"alice@{DOMAIN}"
CAROL = "carol@lync.test"
ERIN = "erin@lync.test"
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
    """A cluster node of a.test listening for clients on its own loopback address; with
    `sip_port`, a SIP routing node listening on ip:sip_port."""

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
        super().__init__(workdir, ip, node_id, pg_url, nats_url, DOMAIN, extra)
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

    async def watch(a, user):
        """`user`@lync.test subscribes to alice through n1; alice (n3, no SIP) approves,
        through NATS to n1, which NOTIFYs her presence. Returns (the 202, the watcher's
        dialog, the CSeq of that NOTIFY)."""
        ep = LyncEndpoint(user, edge=lync.address)
        sub = await athread(
            lync.request, "SUBSCRIBE", f"sip:{ALICE}", from_uri=ep.from_uri,
            to_uri=f"sip:{ALICE}",
            headers=[("Event", "presence"), ("Accept", "application/pidf+xml"),
                     ("Expires", "600"), ("Contact", ep.contact)])
        assert sub.status == 202, sub.summary()
        d = dialog_from_response(sub.request, sub)
        d.local_contact = ep.contact
        await next_matching(a.subscriptions, sub_from("subscribe", f"{user}@lync.test"))
        a.send_presence(pto=f"{user}@lync.test", ptype="subscribed")
        n = await athread(lync.wait_request, "NOTIFY",
                          lambda r: r.call_id == sub.call_id and availability(r.text) == 3500, 10)
        return sub, d, n.cseq[0]

    async def scenario():
        a = await Client(n3, "alice", "alice-pw").login()

        # carol and erin (lync.test) watch alice: their SUBSCRIBEs reach n1.
        sub, carol_watch, last_carol_cseq = await watch(a, "carol")
        erin_sub, _, last_erin_cseq = await watch(a, "erin")

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
        assert set(owners.values()) == {"n1"} and len(owners) == 4, owners
        # alice's second resource, on n2 (a SIP node that does not hold the session; priority
        # -1: bare-JID messages stay with the first), writes to carol: n2 hands the message to
        # n1, and it goes out in the session.
        phone = await Client(n2, "alice", "alice-pw", resource="phone", priority=-1).login()
        phone.send_message(mto=CAROL, mbody="from the phone", mtype="chat")
        m = await athread(lync.wait_request, "MESSAGE", lambda r: r.text == "from the phone", 10)
        assert m.call_id == inv.call_id

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
        # The peer turns to the other target of a.test, and goes on there before the cluster
        # has noticed n1's death: n2 adopts carol's subscription and the IM session on demand.
        await athread(lync.connect, N2_IP, n2.sip_port)
        carol_watch.conn = None
        r = await athread(lync.in_dialog, carol_watch, "SUBSCRIBE",
                          [("Event", "presence"), ("Expires", "600")], timeout=10)
        assert r.status == 200, r.summary()
        n = await athread(lync.wait_request, "NOTIFY",
                          lambda r: r.call_id == sub.call_id and r.cseq[0] > last_carol_cseq
                          and availability(r.text) == 3500, 10)
        assert n.header("Subscription-State").startswith("active"), n.summary()
        chat.conn = None
        r = await athread(lync.in_dialog, chat, "MESSAGE", [], "still there?",
                          "text/plain; charset=UTF-8", timeout=10)
        assert r.status == 200, r.summary()
        assert (await next_matching(a.messages, lambda m: m["body"] == "still there?"))
        assert n2.log().count("adopted a SIP dialog for a request that reached this node") >= 1

        # Once n1 is dead, n2 takes over the rest: erin gets a NOTIFY in her old dialog (alice
        # still available), and our subscription to dave is refreshed in its old dialog.
        n = await athread(lync.wait_request, "NOTIFY",
                          lambda r: r.call_id == erin_sub.call_id and r.cseq[0] > last_erin_cseq
                          and availability(r.text) == 3500, 15)
        assert n.header("Subscription-State").startswith("active"), n.summary()
        refresh = await athread(lync.wait_request, "SUBSCRIBE",
                                lambda r: r.call_id == out.call_id and r.to_tag, 15)
        assert refresh.cseq[0] > out.cseq[0] and refresh.header("Expires") != "0"
        assert "adopted SIP dialogs: notifying watchers" in n2.log()
        # dave's next NOTIFY is taken by n2.
        dave.conn = None
        r = await athread(lync.in_dialog, dave, "NOTIFY",
                          [("Event", "presence"), ("Subscription-State", "active;expires=600")],
                          lync_pidf(15500, f"sip:{DAVE}", with_number=True), "application/pidf+xml",
                          timeout=10)
        assert r.status == 200, r.summary()
        # (Earlier presences of dave may be queued: the phone's login probed him, through n2
        # to n1, which answered with what dave last said.)
        await next_matching(a.presences, lambda p: p["from"].bare == DAVE and p["show"] == "away")
        # The phone's messages go out in the same session, from n2 now.
        phone.send_message(mto=CAROL, mbody="phone again", mtype="chat")
        m = await athread(lync.wait_request, "MESSAGE", lambda r: r.text == "phone again", 10)
        assert m.call_id == inv.call_id

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
        assert set(owners.values()) == {"n2"} and len(owners) == 4, owners

        # n1 comes back with the same node id: it restores none of them (n2 holds them all).
        before = len(n1.log())
        n1.start()
        wait_for(lambda: n1.peers_seen(before) >= 2, "n1 to meet n2 and n3 again")
        await asyncio.sleep(1.0)
        assert "restored SIP dialogs" not in n1.log()[before:]
        assert "adopted" not in n1.log()[before:]
        assert sip_dialog_owners(pg_url) == owners
        await phone.logout()
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
