"""Logging in with real clients: STARTTLS plus each SASL mechanism, resource conflicts, and the
server's own services (ping, disco#info, version)."""
import asyncio

import pytest

from xmpp_client import Client, IqError, next_matching


def tls_in_use(c):
    t = c.transport
    return t is not None and t.get_extra_info("ssl_object") is not None


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
def test_login_over_starttls(server, mech):
    async def scenario():
        a = await Client(server, "alice", "alice-pw", resource="r1", mech=mech).login()
        assert tls_in_use(a)
        assert str(a.boundjid) == "alice@localhost/r1"
        rtt = await a["xep_0199"].ping(jid="localhost", timeout=5)
        assert rtt is not None
        await a.logout()

    asyncio.run(scenario())


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "PLAIN"])
def test_wrong_password_fails(server, mech):
    async def scenario():
        c = Client(server, "alice", "wrong-pw", mech=mech)
        with pytest.raises(AssertionError, match="could not log in"):
            await c.login()
        assert c.failed.is_set()
        c.disconnect()
        # A correct login still works afterwards.
        a = await Client(server, "alice", "alice-pw").login()
        await a.logout()

    asyncio.run(scenario())


def test_password_change_applies(server):
    server.cli("user", "passwd", "alice", input="new-secret\n")

    async def scenario():
        c = Client(server, "alice", "alice-pw")
        with pytest.raises(AssertionError):
            await c.login()
        c.disconnect()
        a = await Client(server, "alice", "new-secret").login()
        await a.logout()

    asyncio.run(scenario())


def test_resource_conflict_newer_wins(server):
    async def scenario():
        old = await Client(server, "alice", "alice-pw", resource="phone").login()
        b = await Client(server, "bob", "bob-pw").login()
        new = await Client(server, "alice", "alice-pw", resource="phone").login()
        err = await next_matching(old.stream_errors)
        assert err["condition"] == "conflict", err
        await asyncio.wait_for(old.disconnected_evt.wait(), 10)
        # The newer session is the one that gets messages for the full JID.
        b.send_message(mto="alice@localhost/phone", mbody="who has it?", mtype="chat")
        m = await next_matching(new.messages, lambda m: m["body"] == "who has it?")
        assert m["from"] == b.boundjid
        assert new.stream_errors.empty()
        await new.logout()
        await b.logout()

    asyncio.run(scenario())


def test_server_ping_disco_version(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        assert await a["xep_0199"].ping(jid="localhost", timeout=5) is not None
        info = await a["xep_0030"].get_info(jid="localhost", local=False, timeout=5)
        feats = set(info["disco_info"]["features"])
        for f in (
            "http://jabber.org/protocol/disco#info",
            "urn:xmpp:ping",
            "jabber:iq:version",
            "urn:xmpp:blocking",
        ):
            assert f in feats, feats
        ids = info["disco_info"]["identities"]
        assert any(i[0] == "server" and i[1] == "im" for i in ids), ids
        ver = await a["xep_0092"].get_version(jid="localhost", timeout=5)
        assert ver["software_version"]["name"] == "Entente"
        assert ver["software_version"]["version"]
        # An unknown IQ to the server is answered with an error, not dropped.
        iq = a.make_iq_get(ito="localhost", queryxmlns="urn:example:nothing")
        with pytest.raises(IqError) as e:
            await iq.send(timeout=5)
        assert e.value.condition == "service-unavailable"
        await a.logout()

    asyncio.run(scenario())


def test_ping_between_clients(server):
    async def scenario():
        a = await Client(server, "alice", "alice-pw").login()
        b = await Client(server, "bob", "bob-pw").login()
        # To a full JID, the IQ reaches the client (slixmpp answers pings itself)...
        assert await a["xep_0199"].ping(jid=b.boundjid, timeout=5) is not None
        # ...and to a resource that does not exist it bounces.
        with pytest.raises(IqError) as e:
            await a["xep_0199"].send_ping(jid="bob@localhost/nowhere", timeout=5)
        assert e.value.condition == "service-unavailable"
        await a.logout()
        await b.logout()

    asyncio.run(scenario())


def test_conflict_presence_seen_by_contacts(server):
    """The replaced session goes unavailable for contacts, and the new one comes online."""
    from xmpp_client import avail_from, befriend, unavail_from

    async def scenario():
        old = await Client(server, "alice", "alice-pw", resource="phone").login()
        b = await Client(server, "bob", "bob-pw").login()
        await befriend(old, b)
        new = Client(server, "alice", "alice-pw", resource="phone")
        new.send_initial_presence = False
        await new.login()
        await next_matching(old.stream_errors, lambda e: e["condition"] == "conflict")
        await next_matching(b.presences, unavail_from("alice@localhost/phone"))
        new.send_presence(pstatus="new phone")
        p = await next_matching(b.presences, avail_from("alice@localhost/phone"))
        assert p["status"] == "new phone"
        await new.logout()
        await next_matching(b.presences, unavail_from("alice@localhost/phone"))
        await b.logout()

    asyncio.run(scenario())
