"""XMPP federation between Entente (e.test) and a real Prosody (p1.test), both on loopback.

Prosody finds e.test through our test DNS plugin (a static answer); Entente finds p1.test
through a static route in its own configuration. Neither touches the machine's resolver.
"""
import asyncio

from conftest import free_port
from xmpp_client import Client, next_matching

P_IP = "127.0.0.11"


def entente_config(s2s_port, *, cert=None, ca=None, extra=""):
    tls = f'[tls]\ncert = "{cert.cert}"\nkey = "{cert.key}"\n' if cert else ""
    ca_line = f'ca_file = "{ca}"\n' if ca else ""
    return f"""
{tls}
[s2s]
enabled = true
listen = ["127.0.0.1:{s2s_port}"]
system_roots = false
connect_timeout_secs = 5
{ca_line}
{extra}

[[s2s.peer]]
domain = "p1.test"
routes = ["{P_IP}:5269"]
"""


def start_pair(make_server, make_prosody, test_ca, *, use_ca):
    s2s_port = free_port()
    if use_ca:
        cert = test_ca.issue("e.test")
        e = make_server(entente_config(s2s_port, cert=cert, ca=test_ca.cert), domain="e.test")
        e.trust = test_ca.cert
    else:
        e = make_server(entente_config(s2s_port), domain="e.test")
    e.add_user("alice", "alice-pw")
    e.start()
    p = make_prosody(
        "p1.test",
        P_IP,
        ca=test_ca if use_ca else None,
        s2s_secure_auth=use_ca,
        static_routes={"e.test": ("127.0.0.1", s2s_port)},
        users={"romeo": "romeo-pw"},
    )
    return e, p


async def mutual_subscription_and_chat(e, p):
    alice = await Client(e, "alice", "alice-pw").login()
    romeo = await Client(p, "romeo", "romeo-pw").login()

    # Entente → Prosody: alice subscribes to romeo; romeo approves.
    alice.send_presence_subscription(pto="romeo@p1.test")
    req = await next_matching(romeo.subscriptions, lambda x: x["type"] == "subscribe")
    assert req["from"].bare == "alice@e.test"
    romeo.send_presence(pto="alice@e.test", ptype="subscribed")
    await next_matching(alice.subscriptions, lambda x: x["type"] == "subscribed")
    pr = await next_matching(alice.presences, lambda x: x["from"].bare == "romeo@p1.test" and x["type"] == "available")
    assert pr["from"].bare == "romeo@p1.test"

    # Prosody → Entente: romeo subscribes to alice; alice approves.
    romeo.send_presence_subscription(pto="alice@e.test")
    req = await next_matching(alice.subscriptions, lambda x: x["type"] == "subscribe")
    assert req["from"].bare == "romeo@p1.test"
    alice.send_presence(pto="romeo@p1.test", ptype="subscribed")
    await next_matching(romeo.subscriptions, lambda x: x["type"] == "subscribed")
    await next_matching(romeo.presences, lambda x: x["from"].bare == "alice@e.test" and x["type"] == "available")

    # Presence with show and status crosses the border.
    alice.send_presence(pshow="dnd", pstatus="in a meeting")
    pr = await next_matching(
        romeo.presences, lambda x: x["from"].bare == "alice@e.test" and x["show"] == "dnd"
    )
    assert pr["status"] == "in a meeting"
    romeo.send_presence(pshow="away", pstatus="lunch")
    pr = await next_matching(
        alice.presences, lambda x: x["from"].bare == "romeo@p1.test" and x["show"] == "away"
    )
    assert pr["status"] == "lunch"

    # Messages both ways.
    alice.send_message(mto="romeo@p1.test", mbody="hello from e.test", mtype="chat")
    m = await next_matching(romeo.messages, lambda x: x["body"] == "hello from e.test")
    assert m["from"].bare == "alice@e.test"
    romeo.send_message(mto="alice@e.test", mbody="hello from p1.test", mtype="chat")
    m = await next_matching(alice.messages, lambda x: x["body"] == "hello from p1.test")
    assert m["from"].bare == "romeo@p1.test"

    # Unavailable on logout crosses too.
    await romeo.logout()
    await next_matching(
        alice.presences, lambda x: x["from"].bare == "romeo@p1.test" and x["type"] == "unavailable"
    )
    await alice.logout()


def test_prosody_with_certificates_sasl_external(make_server, make_prosody, test_ca):
    e, p = start_pair(make_server, make_prosody, test_ca, use_ca=True)
    asyncio.run(mutual_subscription_and_chat(e, p))
    # Both directions authenticated by certificate, none by dialback.
    assert "Accepting SASL EXTERNAL identity from e.test" in p.log()
    log = e.log()
    assert "auth=\"sasl-external\"" in log or "auth=sasl-external" in log, log[-3000:]
    assert "method=\"sasl-external\"" in log or "method=sasl-external" in log, log[-3000:]


def test_prosody_with_dialback(make_server, make_prosody, test_ca):
    e, p = start_pair(make_server, make_prosody, test_ca, use_ca=False)
    asyncio.run(mutual_subscription_and_chat(e, p))
    log = e.log()
    assert "auth=dialback" in log or "auth=\"dialback\"" in log, log[-3000:]
    assert "method=dialback" in log or "method=\"dialback\"" in log, log[-3000:]
    assert "SASL EXTERNAL" not in p.log()


def test_prosody_with_server_only_eku_certificates(make_server, make_prosody, test_ca):
    """Public CAs now issue certificates with only the serverAuth extended key usage; such a
    certificate must still authenticate a domain by SASL EXTERNAL in both directions."""
    s2s_port = free_port()
    cert = test_ca.issue("e.test", server_only_eku=True)
    e = make_server(entente_config(s2s_port, cert=cert, ca=test_ca.cert), domain="e.test")
    e.trust = test_ca.cert
    e.add_user("alice", "alice-pw")
    e.start()
    p = make_prosody(
        "p1.test",
        P_IP,
        ca=test_ca,
        cert=test_ca.issue("p1.test", server_only_eku=True),
        s2s_secure_auth=True,
        static_routes={"e.test": ("127.0.0.1", s2s_port)},
        users={"romeo": "romeo-pw"},
    )
    asyncio.run(mutual_subscription_and_chat(e, p))
    assert "Accepting SASL EXTERNAL identity from e.test" in p.log()
    assert 'method="sasl-external"' in e.log()


def test_contacts_become_unavailable_when_their_domain_is_lost(make_server, make_prosody, test_ca):
    """When the foreign server dies (SIGKILL: no unavailable presence is ever sent), Entente
    notices the broken stream, probes, fails to reach the domain for retry_timeout_secs, and
    tells its users that the domain's contacts are unavailable."""
    s2s_port = free_port()
    e = make_server(
        entente_config(s2s_port, extra="retry_timeout_secs = 2"),
        domain="e.test",
    )
    e.add_user("alice", "alice-pw")
    e.start()
    p = make_prosody(
        "p1.test", P_IP, static_routes={"e.test": ("127.0.0.1", s2s_port)}, users={"romeo": "romeo-pw"}
    )

    async def scenario():
        alice = await Client(e, "alice", "alice-pw").login()
        romeo = await Client(p, "romeo", "romeo-pw").login()
        alice.send_presence_subscription(pto="romeo@p1.test")
        await next_matching(romeo.subscriptions, lambda x: x["type"] == "subscribe")
        romeo.send_presence(pto="alice@e.test", ptype="subscribed")
        await next_matching(
            alice.presences, lambda x: x["from"].bare == "romeo@p1.test" and x["type"] == "available"
        )
        p.kill()
        pr = await next_matching(
            alice.presences,
            lambda x: x["from"].bare == "romeo@p1.test" and x["type"] == "unavailable",
            timeout=30,
        )
        assert "cannot be reached" in pr["status"]
        await alice.logout()

    asyncio.run(scenario())
