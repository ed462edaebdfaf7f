"""What survives a restart of the server: rosters, subscriptions, pending requests, offline
messages and block lists."""
import asyncio

from xmpp_client import (
    Client,
    avail_from,
    befriend,
    delay_stamp,
    error_condition,
    next_matching,
    nothing_matching,
    sub_from,
)

A = "alice@localhost"
B = "bob@localhost"
C = "carol@localhost"


def test_state_survives_restart(workdir):
    from conftest import EntenteServer

    s = EntenteServer(workdir)
    for u in ("alice", "bob", "carol", "dave"):
        s.add_user(u, f"{u}-pw")
    s.start()
    try:
        run_steps(s)
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- server log ---\n{s.log()[-20000:]}") from e
    finally:
        s.stop()


def run_steps(s):
    async def before():
        a = await Client(s, "alice", "alice-pw").login()
        b = await Client(s, "bob", "bob-pw").login()
        d = await Client(s, "dave", "dave-pw").login()
        await befriend(a, b)
        # A roster item with a name and groups.
        iq = a.make_iq_set()
        iq["roster"]["items"] = {B: {"name": "Bobby", "groups": ["Friends"]}}
        await iq.send(timeout=5)
        # carol is offline: a pending request for her, and offline messages.
        a.send_presence_subscription(pto=C)
        a.send_message(mto=C, mbody="before the restart", mtype="chat")
        b.send_message(mto=C, mbody="me too", mtype="chat")
        # alice blocks dave.
        await a["xep_0191"].block("dave@localhost", timeout=5)
        # bob pre-approves carol.
        b.send_presence(pto=C, ptype="subscribed")
        await next_matching(b.pushes, lambda p: C in p["roster"]["items"])
        await asyncio.sleep(0.3)
        for c in (a, b, d):
            await c.logout()

    asyncio.run(before())
    s.restart()

    async def after():
        a = await Client(s, "alice", "alice-pw").login()
        r = await a.get_roster(timeout=5)
        items = r["roster"]["items"]
        assert items[B]["subscription"] == "both"
        assert items[B]["name"] == "Bobby"
        assert items[B]["groups"] == ["Friends"]
        assert items[C]["subscription"] == "none" and items[C]["ask"] == "subscribe"
        assert {str(j) for j in await a["xep_0191"].get_blocked_jids(timeout=5)} == {
            "dave@localhost"
        }
        b = await Client(s, "bob", "bob-pw").login()
        # The subscriptions still carry presence both ways.
        await next_matching(a.presences, avail_from(B))
        await next_matching(b.presences, avail_from(A))
        rb = await b.get_roster(timeout=5)
        assert rb["roster"]["items"][C]["approved"] in (True, "true")
        # carol gets the pending request and the offline messages.
        c = await Client(s, "carol", "carol-pw").login()
        req = await next_matching(c.subscriptions, sub_from("subscribe", A))
        assert req["to"].bare == C
        bodies = set()
        for _ in range(2):
            m = await next_matching(c.messages)
            assert delay_stamp(m)
            bodies.add((m["from"].bare, m["body"]))
        assert bodies == {(A, "before the restart"), (B, "me too")}
        # The pre-approval still holds: carol's request to bob is approved at once.
        c.send_presence_subscription(pto=B)
        await next_matching(c.subscriptions, sub_from("subscribed", B))
        await nothing_matching(b.subscriptions, sub_from("subscribe", C), wait=0.5)
        # The block still holds.
        d = await Client(s, "dave", "dave-pw").login()
        d.send_message(mto=A, mbody="still blocked?", mtype="chat")
        e = await next_matching(d.errors)
        assert error_condition(e) == "service-unavailable"
        await nothing_matching(a.messages, wait=0.3)
        # carol answers alice's request; then restart again and check it stuck.
        c.send_presence(pto=A, ptype="subscribed")
        await next_matching(a.subscriptions, sub_from("subscribed", C))
        await asyncio.sleep(0.2)
        for x in (a, b, c, d):
            await x.logout()

    asyncio.run(after())
    s.restart()

    async def again():
        c = await Client(s, "carol", "carol-pw").login()
        # The request was answered: it is not delivered again, and no messages are left.
        await nothing_matching(c.subscriptions, sub_from("subscribe", A), wait=0.7)
        await nothing_matching(c.messages, wait=0.1)
        a = await Client(s, "alice", "alice-pw").login()
        r = await a.get_roster(timeout=5)
        assert r["roster"]["items"][C]["subscription"] == "to"
        await next_matching(a.presences, avail_from(C))
        await a.logout()
        await c.logout()

    asyncio.run(again())


def test_unanswered_request_delivered_at_every_login(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        a.send_presence_subscription(pto=B)
        await asyncio.sleep(0.3)
        await a.logout()

    asyncio.run(scenario())
    server.restart()

    async def logins():
        for _ in range(2):
            b = await Client(server, "bob", "bob-pw").login()
            await next_matching(b.subscriptions, sub_from("subscribe", A))
            await b.logout()

    asyncio.run(logins())
