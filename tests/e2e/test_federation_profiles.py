"""Presence across an XMPP federation link rendered through the availability tables: b.test
declares a.test a Webex Connect deployment (`[[s2s.peer]] profile = "webex"`), so what a.test's
users publish is mapped by table 1-12 before b.test's XMPP clients see it."""
import asyncio

from conftest import free_port
from federation import federating, login
from xmpp_client import avail_from, next_matching, sub_from


def test_webex_profile_maps_presence(make_server):
    pa, pb = free_port(), free_port()
    a = federating(make_server, "a.test", s2s_port=pa, peers=[{"domain": "b.test", "routes": [f"127.0.0.1:{pb}"]}])
    b = federating(
        make_server,
        "b.test",
        s2s_port=pb,
        users=(("bob", "bob-pw"),),
        peers=[{"domain": "a.test", "routes": [f"127.0.0.1:{pa}"], "profile": "webex"}],
    )

    async def scenario():
        alice = await login(a, "alice", "alice-pw")
        bob = await login(b, "bob", "bob-pw")
        bob.send_presence_subscription(pto="alice@a.test")
        await next_matching(alice.subscriptions, sub_from("subscribe", "bob@b.test"))
        alice.send_presence(pto="bob@b.test", ptype="subscribed")
        await next_matching(bob.presences, avail_from("alice@a.test"))

        # Table 1-12: Webex "Away" with status "In a meeting" shows as Available, "In a meeting".
        alice.send_presence(pshow="away", pstatus="In a meeting")
        p = await next_matching(
            bob.presences, lambda x: x["from"].bare == "alice@a.test" and x["status"] == "In a meeting"
        )
        assert p["show"] == "", p  # available: no <show/>
        # Table 1-12: Webex Do Not Disturb stays Do Not Disturb.
        alice.send_presence(pshow="dnd", pstatus="busy busy")
        p = await next_matching(bob.presences, lambda x: x["from"].bare == "alice@a.test" and x["show"] == "dnd")
        assert p["status"] == "busy busy"
        # Plain away stays away.
        alice.send_presence(pshow="away", pstatus="lunch")
        p = await next_matching(bob.presences, lambda x: x["from"].bare == "alice@a.test" and x["show"] == "away")
        assert p["status"] == "lunch"
        await alice.logout()
        await bob.logout()

    asyncio.run(scenario())
