"""SIP federation end to end: a real Entente (a.test) with slixmpp clients on the local side, and
a real SIP peer (sip_peer.SipPeer, over TCP or TLS on loopback) playing the foreign domain with
the wire habits of a Lync/OCS edge, an AOL gateway or a plain SIMPLE server.

Addresses: Entente 127.0.0.80, the Lync peer 127.0.0.81, the AOL peer 127.0.0.82, the SIMPLE
peer 127.0.0.83, a stranger 127.0.0.84. Every peer domain reaches Entente through a static
route; Entente reaches the peer through `[[sip.peer]] routes`.
"""
import asyncio
import re

import pytest

from conftest import free_port
from sip_helpers import sip_config, tcp_peer, wait_sip_listening
from sip_peer import LyncEndpoint, SipPeer, aol_pidf, lync_invite_headers, lync_message_sdp, lync_pidf
from xmpp_client import Client, avail_from, error_condition, next_matching, nothing_matching, sub_from, unavail_from

ENTENTE_IP = "127.0.0.80"
LYNC_IP = "127.0.0.81"
AOL_IP = "127.0.0.82"
SIMPLE_IP = "127.0.0.83"
STRANGER_IP = "127.0.0.84"
DOMAIN = "a.test"
ALICE = "alice@a.test"


async def athread(f, *a, **kw):
    """Runs a blocking SipPeer call without blocking the XMPP clients' event loop."""
    return await asyncio.to_thread(f, *a, **kw)


class Fed:
    """A started Entente with SIP federation, and its peers."""

    def __init__(self, server, port, peers):
        self.server, self.port, self.peers = server, port, peers

    def connect(self, peer):
        peer.connect(ENTENTE_IP, self.port)
        return peer


@pytest.fixture
def fed(make_server, test_ca):
    made = []

    def start(peers, *, extra_sip="", policy="ask", s2s_extra=""):
        """peers: list of (SipPeer, profile, extra toml lines)."""
        port = free_port(ENTENTE_IP)
        cert = test_ca.issue(DOMAIN)
        sections = [tcp_peer(peer.domain, profile, peer.ip, peer.port, extra) for peer, profile, extra in peers]
        s = make_server(sip_config(ca=test_ca.cert, cert=cert, tcp=f"{ENTENTE_IP}:{port}", policy=policy,
                                   sip_extra=f"t1_ms = 50\nsubscribe_expires_secs = 600\n{extra_sip}",
                                   s2s_extra=s2s_extra, peers=sections), domain=DOMAIN)
        s.trust = test_ca.cert
        s.add_user("alice", "alice-pw")
        s.add_user("bob", "bob-pw")
        s.start()
        wait_sip_listening(s)
        f = Fed(s, port, [p for p, _, _ in peers])
        made.append(f)
        return f

    yield start


@pytest.fixture
def lync():
    with SipPeer("lync.test", LYNC_IP) as p:
        yield p


@pytest.fixture
def simple():
    with SipPeer("simple.test", SIMPLE_IP) as p:
        yield p


@pytest.fixture
def aol():
    with SipPeer("aol.test", AOL_IP) as p:
        yield p


def pidf_availability(body):
    m = re.search(r"availability>\s*(\d+)", body)
    return int(m.group(1)) if m else None


def basic_of(body):
    m = re.search(r"<(?:\w+:)?basic>\s*(\w+)", body)
    return m.group(1) if m else None


def lync_subscribe(peer, user="carol", *, expires=600, to=ALICE):
    ep = LyncEndpoint(user, edge=peer.address)
    return ep, peer.request(
        "SUBSCRIBE", f"sip:{to}", from_uri=ep.from_uri, to_uri=f"sip:{to}",
        headers=[("Event", "presence"), ("Accept", "application/pidf+xml"),
                 ("Expires", str(expires)), ("Contact", ep.contact),
                 ("Record-Route", ep.record_route)])


def test_inbound_subscription_asks_the_user_and_notifies_mapped_states(fed, lync):
    """A Lync watcher subscribes: alice is asked; until she answers the watcher sees offline;
    then every change arrives as a NOTIFY with Lync's availability numbers; Expires: 0 ends it."""
    f = fed([(lync, "lync", "")])
    f.connect(lync)

    async def scenario():
        a = await Client(f.server, "alice", "alice-pw").login()
        ep, resp = await athread(lync_subscribe, lync)
        assert resp.status == 202, resp.summary()
        assert resp.to_tag
        # The local user hears an ordinary subscription request.
        await next_matching(a.subscriptions, sub_from("subscribe", "carol@lync.test"))
        # Meanwhile the watcher has an active subscription that says offline.
        n1 = await athread(lync.wait_request, "NOTIFY")
        assert n1.call_id == resp.call_id
        assert n1.header("Subscription-State").startswith("active"), n1.summary()
        assert n1.header("Event") == "presence"
        assert pidf_availability(n1.text) == 18500, n1.text
        # alice accepts: the watcher sees her available (3500).
        a.send_presence(pto="carol@lync.test", ptype="subscribed")
        n2 = await athread(lync.wait_request, "NOTIFY", lambda r: pidf_availability(r.text) == 3500, 10)
        assert n2.header("Subscription-State").startswith("active")
        # Table 1-8: XMPP Do Not Disturb is Busy (6500) for Lync, Away is Away (15500).
        a.send_presence(pshow="dnd", pstatus="in a call")
        n3 = await athread(lync.wait_request, "NOTIFY", lambda r: pidf_availability(r.text) == 6500, 10)
        assert "in a call" in n3.text
        assert n3.cseq[0] > n2.cseq[0]
        a.send_presence(pshow="away")
        await athread(lync.wait_request, "NOTIFY", lambda r: pidf_availability(r.text) == 15500, 10)
        # A refresh is honoured (200 with the granted Expires) and answered with a NOTIFY.
        dialog = lync_dialog(lync, resp, ep)
        r = await athread(lync.in_dialog, dialog, "SUBSCRIBE",
                          [("Event", "presence"), ("Expires", "300")])
        assert r.status == 200 and r.header("Expires") == "300", r.summary()
        n4 = await athread(lync.wait_request, "NOTIFY", None, 10)
        assert re.match(r"active;expires=(29\d|300)$", n4.header("Subscription-State")), n4.summary()
        # Unsubscribe (Expires: 0 in the dialog): 200, then a terminated NOTIFY, then silence.
        r = await athread(lync.in_dialog, dialog, "SUBSCRIBE",
                          [("Event", "presence"), ("Expires", "0")])
        assert r.status == 200, r.summary()
        await athread(lync.wait_request, "NOTIFY",
                      lambda r: r.header("Subscription-State", "").startswith("terminated"), 10)
        before = len([r for r in lync.requests if r.method == "NOTIFY"])
        a.send_presence(pshow="chat")
        await asyncio.sleep(1)
        assert len([r for r in lync.requests if r.method == "NOTIFY"]) == before
        await a.logout()

    asyncio.run(scenario())


def lync_dialog(peer, resp, ep):
    from sip_peer import dialog_from_response
    d = dialog_from_response(resp.request, resp)
    d.local_contact = ep.contact
    return d


def test_outbound_subscription_and_notify_become_xmpp_presence(fed, lync):
    """alice adds a Lync contact: one SUBSCRIBE per watcher; the contact's NOTIFYs (PIDF with
    availability numbers) reach her as XMPP presence through the mapping tables."""
    f = fed([(lync, "lync", "")])
    f.connect(lync)

    async def scenario():
        a = await Client(f.server, "alice", "alice-pw").login()
        a.send_presence_subscription(pto="dave@lync.test")
        sub = await athread(lync.wait_request, "SUBSCRIBE", None, 10)
        assert sub.header("Event") == "presence"
        assert "application/pidf+xml" in sub.header("Accept")
        assert sub.uri.startswith("sip:dave@lync.test")
        assert sub.uri_of("From").startswith("sip:alice@a.test")
        dialog = lync.dialog_for(sub)
        # Busy (6500) reaches a third-party XMPP client as Away with status "Busy".
        r = await athread(lync.in_dialog, dialog, "NOTIFY",
                          [("Event", "presence"), ("Subscription-State", "active;expires=600")],
                          lync_pidf(6500, "sip:dave@lync.test", with_number=True), "application/pidf+xml")
        assert r.status == 200, r.summary()
        await next_matching(a.subscriptions, sub_from("subscribed", "dave@lync.test"))
        p = await next_matching(a.presences, avail_from("dave@lync.test"))
        assert p["show"] == "away" and p["status"] == "Busy", p
        # Lync's BENOTIFY (best effort, no response expected) is honoured too.
        await athread(lync.in_dialog, dialog, "BENOTIFY",
                      [("Event", "presence"), ("Subscription-State", "active;expires=600")],
                      lync_pidf(3500, "sip:dave@lync.test", with_number=True), "application/pidf+xml",
                      wait=False)
        p = await next_matching(a.presences, avail_from("dave@lync.test"))
        assert p["show"] == "" and p["type"] == "available", p
        assert not [r for r in lync.responses if r.cseq and r.cseq[1] == "BENOTIFY"]
        # Offline.
        await athread(lync.in_dialog, dialog, "NOTIFY",
                      [("Event", "presence"), ("Subscription-State", "active;expires=600")],
                      lync_pidf(18500, "sip:dave@lync.test", with_number=True), "application/pidf+xml")
        await next_matching(a.presences, unavail_from("dave@lync.test"))
        # Unsubscribing sends SUBSCRIBE Expires: 0 in the same dialog.
        a.send_presence(pto="dave@lync.test", ptype="unsubscribe")
        un = await athread(lync.wait_request, "SUBSCRIBE", None, 10)
        assert un.header("Expires") == "0" and un.call_id == sub.call_id
        await a.logout()

    asyncio.run(scenario())


def test_refused_subscription_is_unsubscribed(fed, lync):
    f = fed([(lync, "lync", "")])
    f.connect(lync)
    lync.responder = lambda req: (403, "Forbidden") if req.method == "SUBSCRIBE" else None

    async def scenario():
        a = await Client(f.server, "alice", "alice-pw").login()
        a.send_presence_subscription(pto="erin@lync.test")
        await next_matching(a.subscriptions, sub_from("unsubscribed", "erin@lync.test"))
        await a.logout()

    asyncio.run(scenario())


def test_lync_session_mode_im_both_ways(fed, lync):
    """Lync's flow: INVITE (m=message SDP, first message in Ms-Text-Format) → 200 → ACK →
    MESSAGEs in the dialog; typing notifications; alice's replies ride the same dialog; BYE."""
    f = fed([(lync, "lync", "")])
    f.connect(lync)

    async def scenario():
        a = Client(f.server, "alice", "alice-pw")
        a.register_plugin("xep_0085")
        states = asyncio.Queue()
        a.add_event_handler("chatstate", lambda m: states.put_nowait(m))
        await a.login()
        ep = LyncEndpoint("carol", edge=lync.address)
        inv = await athread(
            lync.request, "INVITE", f"sip:{ALICE}", from_uri=ep.from_uri, to_uri=f"sip:{ALICE}",
            headers=lync_invite_headers("hello from lync", ep, to_uri=f"sip:{ALICE}"),
            body=lync_message_sdp(LYNC_IP), content_type="application/sdp")
        assert inv.status == 200, inv.summary()
        assert "m=message" in inv.text
        # The Record-Route comes back verbatim, ms-* parameters included.
        assert inv.header("Record-Route") == ep.record_route
        dialog = lync_dialog(lync, inv, ep)
        await athread(lync.ack, dialog, inv.cseq[0])
        m = await next_matching(a.messages, lambda m: m["body"])
        assert m["body"] == "hello from lync" and m["from"].bare == "carol@lync.test"
        r = await athread(lync.in_dialog, dialog, "MESSAGE", [], "second line", "text/plain; charset=UTF-8")
        assert r.status == 200
        m = await next_matching(a.messages, lambda m: m["body"])
        assert m["body"] == "second line"
        typing = ('<?xml version="1.0" encoding="UTF-8"?><isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">'
                  '<state>active</state><contenttype>text/plain</contenttype><refresh>60</refresh></isComposing>')
        r = await athread(lync.in_dialog, dialog, "MESSAGE", [], typing, "application/im-iscomposing+xml")
        assert r.status == 200
        st = await next_matching(states, lambda m: m["chat_state"] == "composing")
        assert st["from"].bare == "carol@lync.test"
        # alice answers: the MESSAGE goes in the same dialog, towards the Lync GRUU.
        a.send_message(mto="carol@lync.test", mbody="hi carol", mtype="chat")
        got = await athread(lync.wait_request, "MESSAGE", None, 10)
        assert got.call_id == inv.call_id and got.text == "hi carol", got.summary()
        assert "opaque=user:epid:" in got.uri
        # Typing from alice becomes iscomposing.
        composing = a.make_message(mto="carol@lync.test", mtype="chat")
        composing["chat_state"] = "composing"
        composing.send()
        got = await athread(lync.wait_request, "MESSAGE", None, 10)
        assert got.content_type.startswith("application/im-iscomposing+xml")
        assert "<state>active</state>" in got.text.replace(" ", "")
        # BYE ends the session; the next message from alice opens a new one.
        r = await athread(lync.in_dialog, dialog, "BYE")
        assert r.status == 200
        a.send_message(mto="carol@lync.test", mbody="still there?", mtype="chat")
        inv2 = await athread(lync.wait_request, "INVITE", None, 10)
        assert inv2.call_id != inv.call_id and "m=message" in inv2.text
        msg = await athread(lync.wait_request, "MESSAGE", lambda r: r.call_id == inv2.call_id, 10)
        assert msg.text == "still there?"
        await a.logout()

    asyncio.run(scenario())


def test_outbound_session_is_reused_and_ended_when_idle(fed, lync):
    f = fed([(lync, "lync", "")], extra_sip="im_idle_secs = 2")
    f.connect(lync)

    async def scenario():
        a = await Client(f.server, "alice", "alice-pw").login()
        a.send_message(mto="dave@lync.test", mbody="one", mtype="chat")
        inv = await athread(lync.wait_request, "INVITE", None, 10)
        assert "m=message" in inv.text
        ack = await athread(lync.wait_request, "ACK", None, 10)
        assert ack.call_id == inv.call_id
        m1 = await athread(lync.wait_request, "MESSAGE", None, 10)
        a.send_message(mto="dave@lync.test", mbody="two", mtype="chat")
        m2 = await athread(lync.wait_request, "MESSAGE", None, 10)
        assert (m1.text, m2.text) == ("one", "two")
        assert m1.call_id == m2.call_id == inv.call_id and m2.cseq[0] > m1.cseq[0]
        bye = await athread(lync.wait_request, "BYE", None, 10)
        assert bye.call_id == inv.call_id
        await a.logout()

    asyncio.run(scenario())


def test_failed_im_is_bounced_with_the_mapped_error(fed, lync):
    f = fed([(lync, "lync", "")])
    f.connect(lync)
    lync.responder = lambda req: (404, "Not Found") if req.method == "INVITE" else None

    async def scenario():
        a = await Client(f.server, "alice", "alice-pw").login()
        a.send_message(mto="nobody@lync.test", mbody="hello?", mtype="chat")
        e = await next_matching(a.errors)
        assert error_condition(e) == "item-not-found", e
        a.send_message(mto="nobody@lync.test", mbody="room", mtype="groupchat")
        e = await next_matching(a.errors)
        assert error_condition(e) == "feature-not-implemented", e
        await a.logout()

    asyncio.run(scenario())


def test_simple_peer_page_mode_im_and_presence(fed, simple):
    # The XMPP allowlist is empty: SIP domains are permitted by [[sip.peer]] alone.
    f = fed([(simple, "simple", "")], policy="allow", s2s_extra='policy = "allowlist"')
    f.connect(simple)

    async def scenario():
        a = await Client(f.server, "alice", "alice-pw").login()
        a.send_message(mto="sam@simple.test", mbody="page mode", mtype="chat")
        m = await athread(simple.wait_request, "MESSAGE", None, 10)
        assert m.text == "page mode" and not m.to_tag
        r = await athread(simple.request, "MESSAGE", f"sip:{ALICE}", from_uri="sip:sam@simple.test",
                          to_uri=f"sip:{ALICE}", body="hello alice", content_type="text/plain")
        assert r.status == 200, r.summary()
        got = await next_matching(a.messages, lambda m: m["body"])
        assert got["body"] == "hello alice" and got["from"].bare == "sam@simple.test"
        # A GRUU (RFC 5627 ;gr=) is the JID resource, both ways.
        r = await athread(simple.request, "MESSAGE", f"sip:{ALICE}", from_uri="sip:sam@simple.test",
                          to_uri=f"sip:{ALICE}", body="from my phone", content_type="text/plain",
                          headers=[("Contact", "<sip:sam@simple.test;gr=urn:uuid:f81d4fae>")])
        assert r.status == 200, r.summary()
        got = await next_matching(a.messages, lambda m: m["body"] == "from my phone")
        assert str(got["from"]) == "sam@simple.test/urn:uuid:f81d4fae", got["from"]
        a.send_message(mto=got["from"], mbody="to your phone", mtype="chat")
        m = await athread(simple.wait_request, "MESSAGE", lambda r: r.text == "to your phone", 10)
        assert m.uri == "sip:sam@simple.test;gr=urn:uuid:f81d4fae", m.uri
        assert m.uri_of("To") == "sip:sam@simple.test"
        # Presence with policy "allow": no question, active NOTIFYs with RPID.
        r = await athread(simple.request, "SUBSCRIBE", f"sip:{ALICE}", from_uri="sip:sam@simple.test",
                          to_uri=f"sip:{ALICE}", headers=[("Event", "presence"), ("Expires", "600")])
        assert r.status == 202
        n = await athread(simple.wait_request, "NOTIFY", lambda r: basic_of(r.text) == "open", 10)
        assert "entity=\"sip:alice@a.test\"" in n.text
        await nothing_matching(a.subscriptions, sub_from("subscribe", "sam@simple.test"), wait=0.5)
        await a.logout()
        n = await athread(simple.wait_request, "NOTIFY", lambda r: basic_of(r.text) == "closed", 10)

    asyncio.run(scenario())


def test_blocked_watcher_sees_offline_and_user_is_not_asked(fed, lync):
    f = fed([(lync, "lync", "")])
    f.server.cli("policy", "set", ALICE, "carol@lync.test", "block")
    f.connect(lync)

    async def scenario():
        a = await Client(f.server, "alice", "alice-pw").login()
        ep, resp = await athread(lync_subscribe, lync)
        assert resp.status == 202
        n = await athread(lync.wait_request, "NOTIFY", None, 10)
        assert n.header("Subscription-State").startswith("active")
        assert pidf_availability(n.text) == 18500
        await nothing_matching(a.subscriptions, wait=1.0)
        # Messages from a blocked contact are refused like XEP-0191 refuses them.
        r = await athread(lync.request, "MESSAGE", f"sip:{ALICE}", from_uri="sip:carol@lync.test",
                          to_uri=f"sip:{ALICE}", body="let me in")
        assert 400 <= r.status < 600, r.summary()
        await nothing_matching(a.messages, wait=0.5)
        await a.logout()

    asyncio.run(scenario())


def test_security_checks(fed, lync, simple):
    f = fed([(lync, "lync", ""), (simple, "simple", "")])
    f.connect(lync)
    with SipPeer("stranger.test", STRANGER_IP) as stranger:
        f.connect(stranger)
        # A domain that is not permitted: 403.
        r = stranger.request("MESSAGE", f"sip:{ALICE}", from_uri="sip:x@stranger.test",
                             to_uri=f"sip:{ALICE}", body="hi")
        assert r.status == 403, r.summary()
        # A permitted domain's name from the wrong source: 403.
        r = stranger.request("MESSAGE", f"sip:{ALICE}", from_uri="sip:x@lync.test",
                             to_uri=f"sip:{ALICE}", body="hi")
        assert r.status == 403, r.summary()
    # The Lync peer claiming to be the SIMPLE domain: 403.
    r = lync.request("MESSAGE", f"sip:{ALICE}", from_uri="sip:x@simple.test", to_uri=f"sip:{ALICE}", body="hi")
    assert r.status == 403, r.summary()
    # Not one of our users: 404; not our domain (no relaying): 404.
    r = lync.request("MESSAGE", "sip:nobody@a.test", from_uri="sip:x@lync.test", to_uri="sip:nobody@a.test", body="hi")
    assert r.status == 404, r.summary()
    r = lync.request("MESSAGE", "sip:sam@simple.test", from_uri="sip:x@lync.test",
                     to_uri="sip:sam@simple.test", body="relay me")
    assert r.status == 404, r.summary()
    assert not simple.requests
    # Other event packages: 489.
    r = lync.request("SUBSCRIBE", f"sip:{ALICE}", from_uri="sip:x@lync.test", to_uri=f"sip:{ALICE}",
                     headers=[("Event", "dialog"), ("Expires", "60")])
    assert r.status == 489, r.summary()
    # An unknown dialog: 481.
    r = lync.request("NOTIFY", f"sip:{ALICE}", from_uri="sip:x@lync.test", to_uri=f"sip:{ALICE}",
                     to_tag="nope", headers=[("Event", "presence"), ("Subscription-State", "active")])
    assert r.status == 481, r.summary()


def test_aol_email_screen_names(fed, aol):
    f = fed([(aol, "aol", "")], policy="ask")
    f.connect(aol)

    async def scenario():
        a = await Client(f.server, "alice", "alice-pw").login()
        r = await athread(aol.request, "MESSAGE", f"sip:{ALICE}", from_uri="sip:pat(gmail.com)@aol.test",
                          to_uri=f"sip:{ALICE}", body="from an e-mail screen name")
        assert r.status == 200, r.summary()
        m = await next_matching(a.messages, lambda m: m["body"])
        assert str(m["from"].bare) == "pat\\40gmail.com@aol.test", m["from"]
        a.send_message(mto="pat\\40gmail.com@aol.test", mbody="back to you", mtype="chat")
        inv = await athread(aol.wait_request, "INVITE", None, 10)
        assert inv.uri.startswith("sip:pat(gmail.com)@aol.test"), inv.uri
        await athread(aol.wait_request, "MESSAGE", lambda r: r.text == "back to you", 10)
        # AOL ignores Record-Route and Contact: in-dialog requests come addressed to the
        # server's own address; they still reach the right session.
        from sip_peer import dialog_from_request
        d = dialog_from_request(inv, inv.local_tag)
        d.remote_target = f"sip:{ENTENTE_IP}:{f.port};transport=tcp"
        r = await athread(aol.in_dialog, d, "MESSAGE", [], "via the routing node", "text/plain")
        assert r.status == 200, r.summary()
        m = await next_matching(a.messages, lambda m: m["body"] == "via the routing node")
        assert m["from"].bare == "pat\\40gmail.com@aol.test"
        # Presence: the SUBSCRIBE goes to the screen name, the NOTIFY's entity has no sip:.
        a.send_presence_subscription(pto="pat\\40gmail.com@aol.test")
        sub = await athread(aol.wait_request, "SUBSCRIBE", None, 10)
        assert sub.uri.startswith("sip:pat(gmail.com)@aol.test"), sub.uri
        d = aol.dialog_for(sub)
        r = await athread(aol.in_dialog, d, "NOTIFY",
                          [("Event", "presence"), ("Subscription-State", "active;expires=600")],
                          aol_pidf("open", "Away", "pat(gmail.com)@aol.test"), "application/pidf+xml")
        assert r.status == 200, r.summary()
        await next_matching(a.subscriptions, sub_from("subscribed", "pat\\40gmail.com@aol.test"))
        p = await next_matching(a.presences, avail_from("pat\\40gmail.com@aol.test"))
        assert p["show"] == "away", p
        await a.logout()

    asyncio.run(scenario())


def test_restart_sends_notifies_and_refreshes_at_once(fed, lync):
    """No two-hour gap: after a restart, foreign watchers get a current NOTIFY and our own
    subscriptions are refreshed, without waiting for anyone."""
    f = fed([(lync, "lync", "")], policy="allow")
    f.connect(lync)

    async def first():
        a = await Client(f.server, "alice", "alice-pw").login()
        ep, resp = await athread(lync_subscribe, lync)
        assert resp.status == 202
        await athread(lync.wait_request, "NOTIFY", lambda r: pidf_availability(r.text) == 3500, 10)
        a.send_presence_subscription(pto="dave@lync.test")
        sub = await athread(lync.wait_request, "SUBSCRIBE", None, 10)
        d = lync.dialog_for(sub)
        await athread(lync.in_dialog, d, "NOTIFY",
                      [("Event", "presence"), ("Subscription-State", "active;expires=600")],
                      lync_pidf(3500, "sip:dave@lync.test", with_number=True), "application/pidf+xml")
        await next_matching(a.presences, avail_from("dave@lync.test"))
        await a.logout()
        await athread(lync.wait_request, "NOTIFY", lambda r: pidf_availability(r.text) == 18500, 10)
        # An IM session with bob (offline: the message waits for him).
        ep = LyncEndpoint("carol", edge=lync.address)
        inv = await athread(
            lync.request, "INVITE", "sip:bob@a.test", from_uri=ep.from_uri, to_uri="sip:bob@a.test",
            headers=lync_invite_headers("before the restart", ep, to_uri="sip:bob@a.test"),
            body=lync_message_sdp(LYNC_IP), content_type="application/sdp")
        assert inv.status == 200
        await athread(lync.ack, lync_dialog(lync, inv, ep), inv.cseq[0])
        return resp, sub, inv

    resp, sub, inv = asyncio.run(first())
    f.server.restart()
    n = lync.wait_request("NOTIFY", lambda r: r.call_id == resp.call_id, 15)
    assert n.header("Subscription-State").startswith("active")
    refresh = lync.wait_request("SUBSCRIBE", lambda r: r.call_id == sub.call_id, 15)
    assert refresh.to_tag == sub.local_tag

    async def after():
        b = await Client(f.server, "bob", "bob-pw").login()
        m = await next_matching(b.messages, lambda m: m["body"])
        assert m["body"] == "before the restart"
        # The IM session survived the restart: bob's answer rides the same dialog.
        b.send_message(mto="carol@lync.test", mbody="I was away", mtype="chat")
        got = await athread(lync.wait_request, "MESSAGE", lambda r: r.text == "I was away", 10)
        assert got.call_id == inv.call_id
        assert not [r for r in lync.requests if r.method == "INVITE"]
        # bob goes offline: the session ends with BYE.
        await b.logout()
        bye = await athread(lync.wait_request, "BYE", None, 10)
        assert bye.call_id == inv.call_id

    asyncio.run(after())


A_IP = "127.0.0.85"
B_IP = "127.0.0.86"


def test_two_ententes_over_sip_tls_only(make_server, test_ca):
    """a.test and b.test federate over SIP/TLS with mutual certificates and no XMPP between
    them: their XMPP users see each other's presence and chat."""
    ports = {A_IP: free_port(A_IP), B_IP: free_port(B_IP)}
    servers = {}
    for dom, ip, other, other_ip in (("a.test", A_IP, "b.test", B_IP), ("b.test", B_IP, "a.test", A_IP)):
        cert = test_ca.issue(dom)
        s = make_server(sip_config(ca=test_ca.cert, cert=cert, tls=f"{ip}:{ports[ip]}", sip_extra=f"""
t1_ms = 50

[[sip.peer]]
domain = "{other}"
profile = "simple"
routes = ["tls://{other_ip}:{ports[other_ip]}"]
"""), domain=dom, sub=dom)
        s.trust = test_ca.cert
        s.add_user("alice" if dom == "a.test" else "bob", "pw")
        s.start()
        servers[dom] = s

    async def scenario():
        a = await Client(servers["a.test"], "alice", "pw").login()
        b = await Client(servers["b.test"], "bob", "pw").login()
        a.send_presence_subscription(pto="bob@b.test")
        await next_matching(b.subscriptions, sub_from("subscribe", "alice@a.test"))
        b.send_presence(pto="alice@a.test", ptype="subscribed")
        await next_matching(a.subscriptions, sub_from("subscribed", "bob@b.test"))
        await next_matching(a.presences, avail_from("bob@b.test"))
        b.send_presence(pshow="away", pstatus="lunch")
        p = await next_matching(a.presences, lambda p: p["from"].bare == "bob@b.test" and p["show"] == "away")
        assert p["status"] == "lunch"
        a.send_message(mto="bob@b.test", mbody="hello over SIP", mtype="chat")
        m = await next_matching(b.messages, lambda m: m["body"])
        assert m["body"] == "hello over SIP" and m["from"].bare == "alice@a.test"
        b.send_message(mto="alice@a.test", mbody="and back", mtype="chat")
        m = await next_matching(a.messages, lambda m: m["body"])
        assert m["body"] == "and back"
        await b.logout()
        await next_matching(a.presences, unavail_from("bob@b.test"))
        await a.logout()

    asyncio.run(scenario())
    for s in servers.values():
        assert "Peer not authenticated" not in s.log()
    out = servers["a.test"].cli("dns-records").stdout
    assert f"_sipfederationtls._tcp.a.test. 3600 IN SRV 10 50 {ports[A_IP]} a.test." in out, out
    assert f"_sips._tcp.a.test. 3600 IN SRV 10 50 {ports[A_IP]} a.test." in out, out


def test_tls_peer_must_present_a_certificate_for_its_domain(make_server, test_ca):
    port = free_port(ENTENTE_IP)
    cert = test_ca.issue(DOMAIN)
    s = make_server(sip_config(ca=test_ca.cert, cert=cert, tls=f"{ENTENTE_IP}:{port}", sip_extra=f"""
[[sip.peer]]
domain = "lync.test"
profile = "lync"
routes = ["tls://{LYNC_IP}:5061"]
"""), domain=DOMAIN)
    s.add_user("alice", "pw")
    s.start()
    wait_sip_listening(s)
    good = test_ca.issue("lync.test")
    bad = test_ca.issue("evil.test")
    for c, want in ((bad, 403), (good, 200)):
        with SipPeer("lync.test", LYNC_IP, transport="tls", cert=c.cert, key=c.key, ca=test_ca.cert) as p:
            p.connect(ENTENTE_IP, port, server_name=DOMAIN)
            r = p.request("MESSAGE", f"sip:{ALICE}", from_uri="sip:carol@lync.test", to_uri=f"sip:{ALICE}",
                          body="hi", content_type="text/plain")
            assert r.status == want, (c, r.summary())


def test_peer_restart_gets_our_subscriptions_refreshed_at_once(fed, lync):
    """The other half of the seed's two-hour note: when the peer restarts it re-subscribes to our
    users with new dialogs; Entente takes that as the sign and refreshes its own subscriptions to
    that domain at once."""
    f = fed([(lync, "lync", "")], policy="allow")
    f.connect(lync)

    async def scenario():
        a = await Client(f.server, "alice", "alice-pw").login()
        a.send_presence_subscription(pto="dave@lync.test")
        sub = await athread(lync.wait_request, "SUBSCRIBE", None, 10)
        d = lync.dialog_for(sub)
        await athread(lync.in_dialog, d, "NOTIFY",
                      [("Event", "presence"), ("Subscription-State", "active;expires=600")],
                      lync_pidf(3500, "sip:dave@lync.test", with_number=True), "application/pidf+xml")
        await next_matching(a.presences, avail_from("dave@lync.test"))
        ep, r1 = await athread(lync_subscribe, lync, "dave")
        assert r1.status == 202
        # "Restart": the same watcher subscribes again with a new dialog.
        ep, r2 = await athread(lync_subscribe, lync, "dave")
        assert r2.status == 202 and r2.call_id != r1.call_id
        refresh = await athread(lync.wait_request, "SUBSCRIBE", lambda r: r.call_id == sub.call_id, 10)
        assert refresh.to_tag == sub.local_tag
        await a.logout()

    asyncio.run(scenario())


def test_dns_records_include_sip_federation(fed, lync):
    f = fed([(lync, "lync", "")])
    out = f.server.cli("dns-records").stdout
    lines = [l for l in out.splitlines() if not l.startswith(";")]
    assert any(l.startswith("_sip._tcp.a.test.") and f" {f.port} a.test." in l for l in lines), out
    # No TLS listener in this configuration: no TLS records.
    assert not any(l.startswith("_sipfederationtls._tcp.") for l in lines), out


def test_contact_becomes_unavailable_when_its_domain_stops_answering(fed, lync):
    """Once the subscription the peer granted has run out and refreshes keep failing, the
    contact's last presence is no longer true: alice sees it unavailable, with the reason."""
    f = fed([(lync, "lync", "")])
    f.connect(lync)
    seen = []

    def responder(req):
        if req.method != "SUBSCRIBE":
            return None
        seen.append(req)
        if len(seen) == 1:
            return (202, "Accepted", [("Expires", "6")])
        return (503, "Service Unavailable")

    lync.responder = responder

    async def scenario():
        a = await Client(f.server, "alice", "alice-pw").login()
        a.send_presence_subscription(pto="dave@lync.test")
        sub = await athread(lync.wait_request, "SUBSCRIBE", None, 10)
        d = lync.dialog_for(sub)
        await athread(lync.in_dialog, d, "NOTIFY",
                      [("Event", "presence"), ("Subscription-State", "active;expires=6")],
                      lync_pidf(3500, "sip:dave@lync.test", with_number=True), "application/pidf+xml")
        await next_matching(a.presences, avail_from("dave@lync.test"))
        p = await next_matching(a.presences, unavail_from("dave@lync.test"), timeout=20)
        assert "cannot be reached" in p["status"], p
        assert len(seen) >= 2
        await a.logout()

    asyncio.run(scenario())


def test_a_peer_cannot_hold_more_dialogs_than_allowed(fed, lync):
    f = fed([(lync, "lync", "")], extra_sip="max_dialogs_per_peer = 2", policy="allow")
    f.connect(lync)
    codes = []
    for w in ("w1", "w2", "w3"):
        _, r = lync_subscribe(lync, w)
        codes.append(r.status)
    assert codes == [202, 202, 503], codes
    assert r.header("Retry-After") == "60"
    # A refresh of an existing one (a new SUBSCRIBE from the same watcher) is not a new dialog.
    _, r = lync_subscribe(lync, "w1")
    assert r.status == 202
