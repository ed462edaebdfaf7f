"""Subscriptions, presence and roster management between real clients (RFC 6121 §2–§4)."""
import asyncio

from xmpp_client import (
    Client,
    avail_from,
    befriend,
    next_matching,
    nothing_matching,
    sub_from,
    unavail_from,
)

A = "alice@localhost"
B = "bob@localhost"


async def roster_item(c, jid):
    r = await c.get_roster(timeout=5)
    items = r["roster"]["items"]
    return items.get(jid) if hasattr(items, "get") else None


def item_of(push, jid):
    items = push["roster"]["items"]
    return items.get(jid)


def test_mutual_subscription_both_orders(server):
    """alice asks first and bob approves, then bob asks and alice approves; rosters agree."""

    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        b = await Client(server, "bob", "bob-pw").login()
        a.send_presence_subscription(pto=B)
        push = await next_matching(a.pushes, lambda p: B in p["roster"]["items"])
        assert item_of(push, B)["subscription"] == "none"
        assert item_of(push, B)["ask"] == "subscribe"
        req = await next_matching(b.subscriptions, sub_from("subscribe", A))
        assert req["to"].bare == B
        b.send_presence(pto=A, ptype="subscribed")
        await next_matching(a.subscriptions, sub_from("subscribed", B))
        p = await next_matching(a.presences, avail_from(B))
        assert p["from"] == b.boundjid
        # bob's roster: from; alice's: to.
        assert (await roster_item(b, A))["subscription"] == "from"
        assert (await roster_item(a, B))["subscription"] == "to"
        # alice's presence does not go to bob yet (he is not subscribed to her).
        a.send_presence(pstatus="only to subscribers")
        await nothing_matching(b.presences, avail_from(A), wait=0.5)
        # Now the other order.
        b.send_presence_subscription(pto=A)
        await next_matching(a.subscriptions, sub_from("subscribe", B))
        a.send_presence(pto=B, ptype="subscribed")
        await next_matching(b.subscriptions, sub_from("subscribed", A))
        p = await next_matching(b.presences, avail_from(A))
        assert p["status"] == "only to subscribers"
        assert (await roster_item(a, B))["subscription"] == "both"
        assert (await roster_item(b, A))["subscription"] == "both"
        await a.logout()
        await b.logout()

    asyncio.run(scenario())


def test_subscription_request_to_offline_contact(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        a.send_presence(pto=B, ptype="subscribe", pstatus="it's alice")
        await next_matching(a.pushes, lambda p: B in p["roster"]["items"])
        await asyncio.sleep(0.3)
        b = await Client(server, "bob", "bob-pw").login()
        req = await next_matching(b.subscriptions, sub_from("subscribe", A))
        assert req["status"] == "it's alice"
        b.send_presence(pto=A, ptype="subscribed")
        await next_matching(a.subscriptions, sub_from("subscribed", B))
        await next_matching(a.presences, avail_from(B))
        await a.logout()
        await b.logout()

    asyncio.run(scenario())


def test_presence_show_status_priority(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        b = await Client(server, "bob", "bob-pw").login()
        await befriend(a, b)
        b.send_presence(pshow="away", pstatus="at lunch", ppriority=7)
        p = await next_matching(a.presences, lambda p: avail_from(B)(p) and p["show"] == "away")
        assert p["status"] == "at lunch"
        assert p["priority"] == 7
        assert p["from"] == b.boundjid
        b.send_presence(pshow="dnd", pstatus="busy", ppriority=-1)
        p = await next_matching(a.presences, lambda p: avail_from(B)(p) and p["show"] == "dnd")
        assert p["status"] == "busy"
        assert p["priority"] == -1
        # A contact that logs in later gets the current presence through the probe.
        a2 = await Client(server, "alice", "alice-pw", resource="second").login()
        # It also gets alice's other resource's presence, in whichever order.
        seen = {}
        while len(seen) < 2:
            p = await next_matching(
                a2.presences, lambda p: avail_from(B)(p) or p["from"] == a.boundjid
            )
            seen[p["from"].bare] = p
        p = seen[B]
        assert p["show"] == "dnd" and p["status"] == "busy" and p["priority"] == -1
        # ...and the first resource sees the new one.
        await next_matching(a.presences, lambda p: p["from"] == a2.boundjid)
        for c in (a, a2, b):
            await c.logout()

    asyncio.run(scenario())


def test_unavailable_on_logout_and_on_cut_connection(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        b = await Client(server, "bob", "bob-pw").login()
        await befriend(a, b)
        await b.logout()
        p = await next_matching(a.presences, unavail_from(B))
        assert p["from"].resource == "test"
        b = await Client(server, "bob", "bob-pw").login()
        await next_matching(a.presences, avail_from(B))
        b.abort_connection()
        p = await next_matching(a.presences, unavail_from(B))
        assert p["from"].resource == "test"
        # And a client that logs in while bob is offline hears nothing available from him.
        a2 = await Client(server, "alice", "alice-pw", resource="late").login()
        await nothing_matching(a2.presences, avail_from(B), wait=0.5)
        await a.logout()
        await a2.logout()

    asyncio.run(scenario())


def test_explicit_unavailable_then_back(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        b = await Client(server, "bob", "bob-pw").login()
        await befriend(a, b)
        b.send_presence(ptype="unavailable", pstatus="brb")
        p = await next_matching(a.presences, unavail_from(B))
        assert p["status"] == "brb"
        b.send_presence(pstatus="back")
        p = await next_matching(a.presences, avail_from(B))
        assert p["status"] == "back"
        await a.logout()
        await b.logout()

    asyncio.run(scenario())


def test_cancel_subscription_request(server):
    """alice asks, then takes it back (unsubscribe) before bob answers: bob is told, and the
    request is not delivered again at his next login."""

    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        b = await Client(server, "bob", "bob-pw").login()
        a.send_presence_subscription(pto=B)
        await next_matching(b.subscriptions, sub_from("subscribe", A))
        a.send_presence(pto=B, ptype="unsubscribe")
        await next_matching(b.subscriptions, sub_from("unsubscribe", A))
        push = await next_matching(
            a.pushes, lambda p: B in p["roster"]["items"] and item_of(p, B)["ask"] != "subscribe"
        )
        assert item_of(push, B)["subscription"] == "none"
        await b.logout()
        b = await Client(server, "bob", "bob-pw").login()
        await nothing_matching(b.subscriptions, sub_from("subscribe", A), wait=0.7)
        await a.logout()
        await b.logout()

    asyncio.run(scenario())


def test_deny_subscription_request(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        b = await Client(server, "bob", "bob-pw").login()
        a.send_presence_subscription(pto=B)
        await next_matching(b.subscriptions, sub_from("subscribe", A))
        b.send_presence(pto=A, ptype="unsubscribed")
        await next_matching(a.subscriptions, sub_from("unsubscribed", B))
        await nothing_matching(a.presences, avail_from(B), wait=0.5)
        item = await roster_item(a, B)
        assert item["subscription"] == "none" and item["ask"] != "subscribe"
        await a.logout()
        await b.logout()

    asyncio.run(scenario())


def test_unsubscribe_after_mutual(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        b = await Client(server, "bob", "bob-pw").login()
        await befriend(a, b)
        # alice stops her subscription to bob: she gets his unavailable, he is told.
        a.send_presence(pto=B, ptype="unsubscribe")
        await next_matching(b.subscriptions, sub_from("unsubscribe", A))
        await next_matching(a.presences, unavail_from(B))
        assert (await roster_item(a, B))["subscription"] == "from"
        assert (await roster_item(b, A))["subscription"] == "to"
        # bob changes presence: alice no longer hears it.
        b.send_presence(pstatus="secret")
        await nothing_matching(a.presences, avail_from(B), wait=0.5)
        # bob revokes alice's... rather, alice revokes bob's subscription to her.
        a.send_presence(pto=B, ptype="unsubscribed")
        await next_matching(b.subscriptions, sub_from("unsubscribed", A))
        await next_matching(b.presences, unavail_from(A))
        assert (await roster_item(b, A))["subscription"] == "none"
        await a.logout()
        await b.logout()

    asyncio.run(scenario())


def test_pre_approval(server):
    """bob pre-approves alice (RFC 6121 §3.4): her later request is approved without him."""

    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        b = await Client(server, "bob", "bob-pw").login()
        b.send_presence(pto=A, ptype="subscribed")
        push = await next_matching(b.pushes, lambda p: A in p["roster"]["items"])
        assert item_of(push, A)["approved"]
        await nothing_matching(a.subscriptions, wait=0.5)
        a.send_presence_subscription(pto=B)
        await next_matching(a.subscriptions, sub_from("subscribed", B))
        await next_matching(a.presences, avail_from(B))
        await nothing_matching(b.subscriptions, sub_from("subscribe", A), wait=0.5)
        assert (await roster_item(b, A))["subscription"] == "from"
        await a.logout()
        await b.logout()

    asyncio.run(scenario())


def test_roster_set_and_remove_push_to_every_resource(server):
    async def scenario():
        a1 = await Client(server, "alice", "alice-pw", resource="one").login()
        a2 = await Client(server, "alice", "alice-pw", resource="two").login()
        # A connected resource that never sent presence gets pushes too (RFC 6121 §2.1.6).
        a3 = Client(server, "alice", "alice-pw", resource="three")
        a3.send_initial_presence = False
        await a3.login()
        iq = a1.make_iq_set()
        iq["roster"]["items"] = {"carol@localhost": {"name": "Carol", "groups": ["Friends", "Work"]}}
        await iq.send(timeout=5)
        for c in (a1, a2, a3):
            push = await next_matching(c.pushes, lambda p: "carol@localhost" in p["roster"]["items"])
            it = item_of(push, "carol@localhost")
            assert it["name"] == "Carol"
            assert set(it["groups"]) == {"Friends", "Work"}
            assert it["subscription"] == "none"
        r = await a2.get_roster(timeout=5)
        assert "carol@localhost" in r["roster"]["items"]
        # Update the item.
        iq = a2.make_iq_set()
        iq["roster"]["items"] = {"carol@localhost": {"name": "C.", "groups": []}}
        await iq.send(timeout=5)
        for c in (a1, a2, a3):
            push = await next_matching(
                c.pushes,
                lambda p: "carol@localhost" in p["roster"]["items"]
                and item_of(p, "carol@localhost")["name"] == "C.",
            )
            assert item_of(push, "carol@localhost")["groups"] == []
        # Remove it.
        iq = a3.make_iq_set()
        iq["roster"]["items"] = {"carol@localhost": {"subscription": "remove"}}
        await iq.send(timeout=5)
        for c in (a1, a2, a3):
            push = await next_matching(
                c.pushes,
                lambda p: "carol@localhost" in p["roster"]["items"]
                and item_of(p, "carol@localhost")["subscription"] == "remove",
            )
        r = await a1.get_roster(timeout=5)
        assert "carol@localhost" not in r["roster"]["items"]
        # Removing what is not there is an error.
        iq = a1.make_iq_set()
        iq["roster"]["items"] = {"carol@localhost": {"subscription": "remove"}}
        from xmpp_client import IqError
        import pytest

        with pytest.raises(IqError) as e:
            await iq.send(timeout=5)
        assert e.value.condition == "item-not-found"
        for c in (a1, a2, a3):
            await c.logout()

    asyncio.run(scenario())


def test_roster_remove_cancels_subscriptions(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        b = await Client(server, "bob", "bob-pw").login()
        await befriend(a, b)
        iq = a.make_iq_set()
        iq["roster"]["items"] = {B: {"subscription": "remove"}}
        await iq.send(timeout=5)
        await next_matching(b.subscriptions, sub_from("unsubscribe", A))
        await next_matching(b.subscriptions, sub_from("unsubscribed", A))
        await next_matching(b.presences, unavail_from(A))
        assert (await roster_item(b, A))["subscription"] == "none"
        r = await a.get_roster(timeout=5)
        assert B not in r["roster"]["items"]
        await a.logout()
        await b.logout()

    asyncio.run(scenario())
