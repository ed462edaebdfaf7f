"""Blocking (XEP-0191) with real clients."""
import asyncio
import xml.etree.ElementTree as ET

import pytest

from xmpp_client import (
    Client,
    IqError,
    avail_from,
    befriend,
    error_condition,
    next_matching,
    nothing_matching,
    unavail_from,
)

A = "alice@localhost"


def block_push_jids(push, what):
    el = push.xml.find("{urn:xmpp:blocking}" + what)
    assert el is not None, push
    return {i.get("jid") for i in el.findall("{urn:xmpp:blocking}item")}



B = "bob@localhost"


def test_block_and_unblock(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        a2 = await Client(server, "alice", "alice-pw", resource="other").login()
        b = await Client(server, "bob", "bob-pw").login()
        await befriend(a, b)
        await next_matching(a2.presences, avail_from(B))

        await a["xep_0191"].block(B, timeout=5)
        # Every resource of alice hears of the change.
        for c in (a, a2):
            push = await next_matching(c.block_pushes)
            assert block_push_jids(push, "block") == {B}
        assert {str(j) for j in await a["xep_0191"].get_blocked_jids(timeout=5)} == {B}
        # bob sees alice go unavailable (both resources).
        await next_matching(b.presences, lambda p: p["from"] == a.boundjid and p["type"] == "unavailable")
        await next_matching(b.presences, lambda p: p["from"] == a2.boundjid and p["type"] == "unavailable")

        # bob's messages are refused with an error, and never reach alice.
        b.send_message(mto=A, mbody="let me in", mtype="chat")
        e = await next_matching(b.errors)
        assert error_condition(e) == "service-unavailable", e
        b.send_message(mto=a.boundjid, mbody="full jid too", mtype="chat")
        e = await next_matching(b.errors)
        assert error_condition(e) == "service-unavailable", e
        await nothing_matching(a.messages, wait=0.5)

        # bob's presence no longer reaches alice.
        b.send_presence(pstatus="can you see me?")
        await nothing_matching(a.presences, avail_from(B), wait=0.5)
        # alice's presence changes do not reach bob.
        a.send_presence(pstatus="hidden from bob")
        await nothing_matching(b.presences, avail_from(A), wait=0.5)
        # alice cannot message bob either (XEP-0191 §3.5).
        a.send_message(mto=B, mbody="psst", mtype="chat")
        e = await next_matching(a.errors)
        assert error_condition(e) == "not-acceptable"
        assert e.xml.find(".//{urn:xmpp:blocking:errors}blocked") is not None
        await nothing_matching(b.messages, wait=0.3)
        # A new login of bob's does not see alice either (the probe is not answered).
        b2 = await Client(server, "bob", "bob-pw", resource="b2").login()
        await nothing_matching(b2.presences, avail_from(A), wait=0.7)
        # Nor does alice's new resource get bob's presence.
        a3 = await Client(server, "alice", "alice-pw", resource="third").login()
        await nothing_matching(a3.presences, avail_from(B), wait=0.7)
        await a3.logout()
        # Stanzas from the blocked contact are not stored offline either.
        # (alice's remaining resources are still online here; checked in persistence tests.)

        await a["xep_0191"].unblock(B, timeout=5)
        for c in (a, a2):
            push = await next_matching(c.block_pushes)
            assert block_push_jids(push, "unblock") == {B}
        # bob gets alice's current presence again, and alice bob's.
        p = await next_matching(b.presences, avail_from(A))
        assert p["type"] != "unavailable"
        p = await next_matching(a.presences, avail_from(B))
        b.send_message(mto=A, mbody="welcome back", mtype="chat")
        await next_matching(a.messages, lambda m: m["body"] == "welcome back")
        assert await a["xep_0191"].get_blocked_jids(timeout=5) == set()
        for c in (a, a2, b, b2):
            await c.logout()

    asyncio.run(scenario())


def test_blocked_contact_sees_user_unavailable_at_login(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        b = await Client(server, "bob", "bob-pw").login()
        await befriend(a, b)
        await a["xep_0191"].block(B, timeout=5)
        await next_matching(b.presences, unavail_from(A))
        await b.logout()
        # While bob is offline, alice changes presence; at his next login he still sees nothing.
        a.send_presence(pshow="chat", pstatus="talkative")
        b = await Client(server, "bob", "bob-pw").login()
        await nothing_matching(b.presences, avail_from(A), wait=0.7)
        # bob's IQs to alice are refused too.
        with pytest.raises(IqError) as e:
            await b["xep_0199"].send_ping(jid=a.boundjid, timeout=5)
        assert e.value.condition == "service-unavailable"
        # Subscription requests from a blocked contact are dropped silently.
        iq = a.make_iq_set()
        iq["roster"]["items"] = {B: {"subscription": "remove"}}
        await iq.send(timeout=5)
        b.send_presence_subscription(pto=A)
        await nothing_matching(a.subscriptions, wait=0.7)
        await a.logout()
        await b.logout()

    asyncio.run(scenario())


def test_block_domain_and_unblock_all(server):
    server.add_user("carol", "carol-pw")

    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        b = await Client(server, "bob", "bob-pw").login()
        c = await Client(server, "carol", "carol-pw").login()
        await a["xep_0191"].block(["localhost/nothing", "carol@localhost"], timeout=5)
        c.send_message(mto=A, mbody="from carol", mtype="chat")
        e = await next_matching(c.errors)
        assert error_condition(e) == "service-unavailable"
        b.send_message(mto=A, mbody="from bob", mtype="chat")
        await next_matching(a.messages, lambda m: m["body"] == "from bob")
        # An empty <unblock/> clears the list (XEP-0191 §3.4).
        iq = a.make_iq_set()
        iq.append(ET.Element("{urn:xmpp:blocking}unblock"))
        await iq.send(timeout=5)
        assert await a["xep_0191"].get_blocked_jids(timeout=5) == set()
        c.send_message(mto=A, mbody="carol again", mtype="chat")
        await next_matching(a.messages, lambda m: m["body"] == "carol again")
        for x in (a, b, c):
            await x.logout()

    asyncio.run(scenario())
