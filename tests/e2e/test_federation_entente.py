"""XMPP federation between two Entente instances, a.test and b.test, both on loopback.

Each finds the other through a static route in its configuration; each s2s listener is on its
own 127.0.0.1 port. Once with certificates from the test CA (SASL EXTERNAL both ways, no
dialback), once with the generated self-signed certificates and no trust anchors (dialback both
ways, each server calling the other back to verify keys). Then the GoogleTalk case: plain TCP
with dialback where both sides set `tls = "never"` for each other, and a refusal where only one
side does.
"""
import asyncio
import re

from federation import Relay, federating, login, mutual_subscription_and_chat, wait_for_log
from xmpp_client import next_matching


def start_pair(make_server, ca=None):
    from conftest import free_port

    pa, pb = free_port(), free_port()
    a = federating(make_server, "a.test", ca=ca, s2s_port=pa,
                   peers=[{"domain": "b.test", "routes": [f"127.0.0.1:{pb}"]}])
    b = federating(make_server, "b.test", ca=ca, s2s_port=pb,
                   users=(("bob", "bob-pw"),),
                   peers=[{"domain": "a.test", "routes": [f"127.0.0.1:{pa}"]}])
    return a, b


async def scenario(a, b):
    alice = await login(a, "alice", "alice-pw")
    bob = await login(b, "bob", "bob-pw")
    await mutual_subscription_and_chat(alice, bob)


def auth_lines(server):
    """(outbound link auth methods, inbound stream auth methods) from a server's log."""
    log = server.log()
    out = re.findall(r'federation link up.*?auth="?([a-z-]+)', log)
    inb = re.findall(r'inbound federation stream authenticated.*?method="?([a-z-]+)', log)
    return out, inb


def test_entente_pair_with_certificates_sasl_external(make_server, test_ca):
    a, b = start_pair(make_server, ca=test_ca)
    asyncio.run(scenario(a, b))
    for s in (a, b):
        out, inb = auth_lines(s)
        assert out and set(out) == {"sasl-external"}, (s.domain, out, s.log()[-3000:])
        assert inb and set(inb) == {"sasl-external"}, (s.domain, inb, s.log()[-3000:])
    # Each side authenticated the other's domain, and no dialback took place.
    assert re.search(r'inbound federation stream authenticated.*domain=b\.test', a.log())
    assert re.search(r'inbound federation stream authenticated.*domain=a\.test', b.log())
    assert "dialback" not in a.log() + b.log()


def test_entente_pair_with_self_signed_certificates_dialback(make_server):
    a, b = start_pair(make_server)
    asyncio.run(scenario(a, b))
    for s in (a, b):
        out, inb = auth_lines(s)
        assert out and set(out) == {"dialback"}, (s.domain, out, s.log()[-3000:])
        assert inb and set(inb) == {"dialback"}, (s.domain, inb, s.log()[-3000:])
    assert "sasl-external" not in a.log() + b.log()
    assert "dialback verification failed" not in a.log() + b.log()


def test_plain_tcp_with_dialback_where_both_sides_allow_it(make_server):
    """The GoogleTalk case: `tls = "never"` for the peer on both sides. Every connection goes
    through a recording relay, which must see the message bodies in clear text."""
    from conftest import free_port

    pa, pb = free_port(), free_port()
    to_a, to_b = Relay(("127.0.0.1", pa)), Relay(("127.0.0.1", pb))
    try:
        a = federating(make_server, "a.test", s2s_port=pa,
                       peers=[{"domain": "b.test", "tls": "never", "routes": [to_b.addr]}])
        b = federating(make_server, "b.test", s2s_port=pb, users=(("bob", "bob-pw"),),
                       peers=[{"domain": "a.test", "tls": "never", "routes": [to_a.addr]}])
        asyncio.run(scenario(a, b))
        wire = to_a.seen() + to_b.seen()
    finally:
        to_a.close()
        to_b.close()
    assert b"hello from a.test" in wire and b"hello from b.test" in wire
    # STARTTLS is offered (not required) but never taken: no <proceed/> ever crosses.
    assert b"<proceed" not in wire and b"<db:result" in wire
    for s in (a, b):
        out, inb = auth_lines(s)
        assert set(out) == {"dialback"} and set(inb) == {"dialback"}, (s.domain, out, inb)


def test_plain_tcp_refused_without_the_setting_on_the_receiving_side(make_server):
    """a.test will not use TLS with b.test (`tls = "never"`), but b.test requires TLS of
    everyone: a.test's stream is refused, nothing crosses in clear, and alice gets her message
    back with a reason naming TLS."""
    from conftest import free_port

    pa, pb = free_port(), free_port()
    to_b = Relay(("127.0.0.1", pb))
    try:
        a = federating(make_server, "a.test", s2s_port=pa, s2s="retry_timeout_secs = 2",
                       peers=[{"domain": "b.test", "tls": "never", "routes": [to_b.addr]}])
        b = federating(make_server, "b.test", s2s_port=pb, users=(("bob", "bob-pw"),),
                       peers=[{"domain": "a.test", "routes": [f"127.0.0.1:{pa}"]}])

        async def go():
            alice = await login(a, "alice", "alice-pw")
            bob = await login(b, "bob", "bob-pw")
            alice.send_message(mto="bob@b.test", mbody="over plain tcp?", mtype="chat")
            err = await next_matching(alice.errors, lambda m: m["from"].bare == "bob@b.test",
                                      timeout=15)
            from xmpp_client import error_condition
            assert error_condition(err) in ("remote-server-not-found", "remote-server-timeout"), err
            text = err["error"]["text"]
            assert "TLS" in text or "policy-violation" in text, text
            assert bob.messages.empty()
            await alice.logout()
            await bob.logout()

        asyncio.run(go())
        wire = to_b.seen()
    finally:
        to_b.close()
    assert b"over plain tcp?" not in wire
    wait_for_log(b, r"inbound federation stream closed with an error.*policy-violation")


def test_iq_idle_links_and_peer_restarts(make_server, test_ca):
    """IQs cross the border (a result from the remote client, service-unavailable for a user that
    does not exist there); an outbound link closed for being idle is reopened on demand; after
    the peer restarts (graceful) or dies (killed) and comes back, messages flow again."""
    from conftest import free_port
    from slixmpp.exceptions import IqError

    pa, pb = free_port(), free_port()
    a = federating(make_server, "a.test", ca=test_ca, s2s_port=pa,
                   s2s="idle_timeout_secs = 1\nretry_timeout_secs = 20",
                   peers=[{"domain": "b.test", "routes": [f"127.0.0.1:{pb}"]}])
    b = federating(make_server, "b.test", ca=test_ca, s2s_port=pb, users=(("bob", "bob-pw"),),
                   peers=[{"domain": "a.test", "routes": [f"127.0.0.1:{pa}"]}])

    async def go():
        alice = await login(a, "alice", "alice-pw")
        bob = await login(b, "bob", "bob-pw")
        v = await alice["xep_0092"].get_version(bob.boundjid.full, timeout=10)
        assert v["type"] == "result" and v["from"] == bob.boundjid.full, v
        try:
            await alice["xep_0092"].get_version("nobody@b.test/x", timeout=10)
            raise AssertionError("an IQ to a user that does not exist got a result")
        except IqError as e:
            assert e.iq["error"]["condition"] == "service-unavailable", e.iq

        await asyncio.sleep(2.5)  # a.test's link to b.test closes for being idle (1 s)
        alice.send_message(mto="bob@b.test", mbody="after idle", mtype="chat")
        await next_matching(bob.messages, lambda x: x["body"] == "after idle")

        # b.test restarts cleanly.
        b.restart()
        bob = await login(b, "bob", "bob-pw")
        alice.send_message(mto="bob@b.test", mbody="after restart", mtype="chat")
        await next_matching(bob.messages, lambda x: x["body"] == "after restart")

        # b.test dies without a word, alice writes meanwhile, b.test comes back.
        b.kill()
        await asyncio.sleep(0.3)
        alice.send_message(mto="bob@b.test", mbody="while dead", mtype="chat")
        await asyncio.sleep(1.0)
        b.start()
        bob = await login(b, "bob", "bob-pw")
        await next_matching(bob.messages, lambda x: x["body"] == "while dead", timeout=15)
        assert alice.errors.empty()
        await alice.logout()
        await bob.logout()

    asyncio.run(go())
    assert len(re.findall(r"remote=b\.test\}: entente_server::s2s: federation link up", a.log())) >= 3
