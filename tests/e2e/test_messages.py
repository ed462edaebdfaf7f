"""Message routing (RFC 6121 §8.5) and offline storage (XEP-0160) with real clients."""
import asyncio
import datetime
import xml.etree.ElementTree as ET

from xmpp_client import (
    Client,
    delay_stamp,
    error_condition,
    next_matching,
    nothing_matching,
)

A = "alice@localhost"
B = "bob@localhost"


def test_exchange_messages(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        b = await Client(server, "bob", "bob-pw").login()
        # No subscription is needed to exchange messages.
        a.send_message(mto=B, mbody="hi bob", mtype="chat")
        m = await next_matching(b.messages, lambda m: m["body"] == "hi bob")
        assert m["from"] == a.boundjid and m["type"] == "chat"
        assert delay_stamp(m) is None
        b.send_message(mto=m["from"], mbody="hi alice", mtype="chat", msubject="re")
        m = await next_matching(a.messages, lambda m: m["body"] == "hi alice")
        assert m["from"] == b.boundjid and m["subject"] == "re"
        # To an account that does not exist: an error comes back.
        a.send_message(mto="nobody@localhost", mbody="anyone?", mtype="chat")
        e = await next_matching(a.errors)
        assert e["from"].bare == "nobody@localhost"
        assert error_condition(e) == "service-unavailable"
        # To another domain (no federation): remote-server-not-found.
        a.send_message(mto="carol@elsewhere.example", mbody="far away", mtype="chat")
        e = await next_matching(a.errors)
        assert error_condition(e) == "remote-server-not-found"
        await a.logout()
        await b.logout()

    asyncio.run(scenario())


def test_bare_jid_to_highest_priority_full_jid_to_named(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        low = await Client(server, "bob", "bob-pw", resource="low", priority=1).login()
        high = await Client(server, "bob", "bob-pw", resource="high", priority=10).login()
        neg = await Client(server, "bob", "bob-pw", resource="neg", priority=-5).login()
        a.send_message(mto=B, mbody="to the bare jid", mtype="chat")
        m = await next_matching(high.messages, lambda m: m["body"] == "to the bare jid")
        assert m["to"] == high.boundjid or m["to"].bare == B
        await nothing_matching(low.messages, lambda m: m["body"] == "to the bare jid", wait=0.5)
        await nothing_matching(neg.messages, lambda m: m["body"] == "to the bare jid", wait=0.1)
        # A full JID reaches exactly that resource, even one with negative priority.
        for target in (low, neg):
            body = f"only for {target.boundjid.resource}"
            a.send_message(mto=target.boundjid, mbody=body, mtype="chat")
            m = await next_matching(target.messages, lambda m: m["body"] == body)
            assert m["to"] == target.boundjid
            await nothing_matching(high.messages, lambda m: m["body"] == body, wait=0.3)
        # Priorities change: now "low" is the highest.
        low.send_presence(ppriority=20)
        await asyncio.sleep(0.3)
        a.send_message(mto=B, mbody="second round", mtype="chat")
        await next_matching(low.messages, lambda m: m["body"] == "second round")
        await nothing_matching(high.messages, lambda m: m["body"] == "second round", wait=0.5)
        # Full JID of a resource that is gone: a chat message falls back to the bare JID.
        await high.logout()
        a.send_message(mto=f"{B}/high", mbody="where did high go", mtype="chat")
        await next_matching(low.messages, lambda m: m["body"] == "where did high go")
        for c in (a, low, neg):
            await c.logout()

    asyncio.run(scenario())


def test_offline_messages_delivered_with_delay(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        for i in range(3):
            a.send_message(mto=B, mbody=f"offline {i}", mtype="chat")
        # A message without a body (a chat state) is not stored.
        m = a.make_message(mto=B, mtype="chat")
        m.append(ET.Element("{http://jabber.org/protocol/chatstates}composing"))
        m.send()
        await asyncio.sleep(0.5)
        b = await Client(server, "bob", "bob-pw").login()
        got = []
        for i in range(3):
            m = await next_matching(b.messages, lambda m: m["body"].startswith("offline"))
            got.append(m)
        assert [m["body"] for m in got] == ["offline 0", "offline 1", "offline 2"]
        for m in got:
            assert m["from"] == a.boundjid
            stamp = delay_stamp(m)
            assert stamp, m
            t = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=datetime.timezone.utc
            )
            now = datetime.datetime.now(datetime.timezone.utc)
            assert before - datetime.timedelta(seconds=2) <= t <= now + datetime.timedelta(seconds=2)
        # Delivered once only.
        await b.logout()
        b = await Client(server, "bob", "bob-pw").login()
        await nothing_matching(b.messages, wait=0.7)
        await a.logout()
        await b.logout()

    asyncio.run(scenario())


def test_offline_not_delivered_to_negative_priority(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        a.send_message(mto=B, mbody="wait for a real client", mtype="chat")
        await asyncio.sleep(0.3)
        neg = await Client(server, "bob", "bob-pw", resource="neg", priority=-1).login()
        await nothing_matching(neg.messages, wait=0.7)
        b = await Client(server, "bob", "bob-pw", resource="main").login()
        m = await next_matching(b.messages, lambda m: m["body"] == "wait for a real client")
        assert delay_stamp(m)
        for c in (a, neg, b):
            await c.logout()

    asyncio.run(scenario())


def test_offline_limit(make_server):
    s = make_server("\n[limits]\noffline_messages_per_user = 3\n")
    s.add_user("alice", "alice-pw")
    s.add_user("bob", "bob-pw")
    s.start()

    async def scenario():
        a = await Client(s, "alice", "alice-pw").login()
        for i in range(5):
            m = a.make_message(mto=B, mbody=f"n{i}", mtype="chat")
            m["id"] = f"id{i}"
            m.send()
        errs = []
        for _ in range(2):
            errs.append(await next_matching(a.errors))
        assert sorted(e["id"] for e in errs) == ["id3", "id4"]
        for e in errs:
            assert error_condition(e) == "resource-constraint"
            assert e["error"]["type"] == "wait"
            assert e["from"].bare == B
        await nothing_matching(a.errors, wait=0.3)
        b = await Client(s, "bob", "bob-pw").login()
        bodies = [(await next_matching(b.messages))["body"] for _ in range(3)]
        assert bodies == ["n0", "n1", "n2"]
        await nothing_matching(b.messages, wait=0.5)
        await b.logout()
        # The store has room again.
        a.send_message(mto=B, mbody="again", mtype="chat")
        await nothing_matching(a.errors, wait=0.5)
        b = await Client(s, "bob", "bob-pw").login()
        m = await next_matching(b.messages)
        assert m["body"] == "again"
        await a.logout()
        await b.logout()

    asyncio.run(scenario())


def test_headline_and_error_messages_not_stored(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        a.send_message(mto=B, mbody="headline news", mtype="headline")
        await asyncio.sleep(0.3)
        b = await Client(server, "bob", "bob-pw").login()
        await nothing_matching(b.messages, wait=0.7)
        await a.logout()
        await b.logout()

    asyncio.run(scenario())


def test_messages_between_own_resources(server):
    async def scenario():
        a1 = await Client(server, "alice", "alice-pw", resource="one").login()
        a2 = await Client(server, "alice", "alice-pw", resource="two").login()
        a1.send_message(mto=a2.boundjid, mbody="note to self", mtype="chat")
        m = await next_matching(a2.messages, lambda m: m["body"] == "note to self")
        assert m["from"] == a1.boundjid
        await a1.logout()
        await a2.logout()

    asyncio.run(scenario())
