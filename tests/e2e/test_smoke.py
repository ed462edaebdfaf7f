import asyncio

from xmpp_client import Client, next_matching


def test_two_users_chat(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        b = await Client(server, "bob", "bob-pw").login()
        a.send_presence_subscription(pto="bob@localhost")
        req = await next_matching(b.subscriptions, lambda p: p["type"] == "subscribe")
        assert req["from"].bare == "alice@localhost"
        b.send_presence(pto="alice@localhost", ptype="subscribed")
        await next_matching(a.subscriptions, lambda p: p["type"] == "subscribed")
        p = await next_matching(a.presences, lambda p: p["from"].bare == "bob@localhost")
        assert p["type"] == "available"
        a.send_message(mto="bob@localhost", mbody="hello bob", mtype="chat")
        m = await next_matching(b.messages)
        assert m["body"] == "hello bob"
        assert m["from"] == a.boundjid
        await a.logout()
        await b.logout()

    asyncio.run(scenario())
