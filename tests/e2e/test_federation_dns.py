"""Entente finds a foreign domain through DNS only: a test DNS server (`entente-testdns`) on
loopback serves the zone, Entente is given `[dns] nameservers = ["127.0.0.1:PORT"]` and no static
route. Both instances have certificates from the test CA (SASL EXTERNAL), so no test depends on
dialback call-backs.

Covered: RFC 2782 priority and weight order with failover from a dead target to the next; the
RFC 6120 §3.2.2 fallback to the domain's A record on port 5269; the retry queue (a stanza sent
while the peer is down is delivered once it comes up; with nothing answering it bounces after
`retry_timeout_secs` with a reason); and a domain with no DNS records at all.
"""
import asyncio
import re
import socket
import time

import pytest

from conftest import free_port
from federation import federating, login
from xmpp_client import error_condition, next_matching


def closed_port():
    """A port on 127.0.0.1 with nothing listening (connections are refused)."""
    return free_port()


def a_records(pa):
    return (f"_xmpp-server._tcp.a.test. SRV 10 50 {pa} xmpp.a.test.\n"
            "xmpp.a.test. A 127.0.0.1\n")


def test_srv_priority_and_weight_with_failover(make_server, make_testdns, test_ca):
    pa, pb, dead1, dead3 = free_port(), free_port(), closed_port(), closed_port()
    # Priority 10 is preferred but down; within priority 20, weight 65535 comes before weight 0
    # (RFC 2782: a zero weight is chosen first with probability 1/65536), so xmpp2 answers and
    # xmpp3 is never tried.
    dns = make_testdns(
        a_records(pa)
        + f"_xmpp-server._tcp.b.test. SRV 20 0 {dead3} xmpp3.b.test.\n"
        + f"_xmpp-server._tcp.b.test. SRV 20 65535 {pb} xmpp2.b.test.\n"
        + f"_xmpp-server._tcp.b.test. SRV 10 50 {dead1} xmpp1.b.test.\n"
        + "xmpp1.b.test. A 127.0.0.1\nxmpp2.b.test. A 127.0.0.1\nxmpp3.b.test. A 127.0.0.1\n"
    )
    a = federating(make_server, "a.test", ca=test_ca, s2s_port=pa, nameservers=[dns.addr])
    b = federating(make_server, "b.test", ca=test_ca, s2s_port=pb, nameservers=[dns.addr],
                   users=(("bob", "bob-pw"),))

    async def go():
        alice = await login(a, "alice", "alice-pw")
        bob = await login(b, "bob", "bob-pw")
        alice.send_message(mto="bob@b.test", mbody="via srv", mtype="chat")
        m = await next_matching(bob.messages, lambda x: x["body"] == "via srv")
        assert m["from"] == alice.boundjid.full
        # And back: b.test finds a.test through DNS too.
        bob.send_message(mto="alice@a.test", mbody="srv reply", mtype="chat")
        await next_matching(alice.messages, lambda x: x["body"] == "srv reply")
        await alice.logout()
        await bob.logout()

    asyncio.run(go())
    log = a.log()
    located = re.search(r'located domain="?b\.test"? candidates=(.*)', log)
    assert located, log[-3000:]
    order = [f"xmpp{i}.b.test" for i in (1, 2, 3)]
    pos = [located.group(1).find(n) for n in order]
    assert -1 not in pos and pos == sorted(pos), located.group(0)
    assert re.search(rf"candidate failed.*127\.0\.0\.1:{dead1}", log), log[-3000:]
    assert not re.search(rf"candidate failed.*127\.0\.0\.1:{dead3}", log)
    assert "federation link up" in log


def loopback_5269():
    """A 127.0.0.2x address whose port 5269 is free, or None."""
    for last in range(21, 30):
        ip = f"127.0.0.{last}"
        with socket.socket() as s:
            try:
                s.bind((ip, 5269))
                return ip
            except OSError:
                continue
    return None


def test_fallback_to_the_domain_address_on_5269(make_server, make_testdns, test_ca):
    ip = loopback_5269()
    if ip is None:
        pytest.skip("no 127.0.0.2x address has port 5269 free")
    pa = free_port()
    # No SRV record for b.test: only its own A record, which must be tried on port 5269.
    dns = make_testdns(a_records(pa) + f"b.test. A {ip}\n")
    a = federating(make_server, "a.test", ca=test_ca, s2s_port=pa, nameservers=[dns.addr])
    b = federating(make_server, "b.test", ca=test_ca, s2s_host=ip, s2s_port=5269,
                   nameservers=[dns.addr], users=(("bob", "bob-pw"),))

    async def go():
        alice = await login(a, "alice", "alice-pw")
        bob = await login(b, "bob", "bob-pw")
        alice.send_message(mto="bob@b.test", mbody="via A fallback", mtype="chat")
        await next_matching(bob.messages, lambda x: x["body"] == "via A fallback")
        await alice.logout()
        await bob.logout()

    asyncio.run(go())
    # The only candidate was the domain itself on 5269 (b.test listens nowhere else for s2s).
    assert re.search(r'located domain="?b\.test"? candidates=\["b\.test:5269 \(tcp\)"\]', a.log())


def test_queued_while_the_peer_is_down_then_delivered(make_server, make_testdns, test_ca):
    pa, pb = free_port(), free_port()
    dns = make_testdns(a_records(pa)
                       + f"_xmpp-server._tcp.b.test. SRV 10 50 {pb} xmpp.b.test.\n"
                       + "xmpp.b.test. A 127.0.0.1\n")
    a = federating(make_server, "a.test", ca=test_ca, s2s_port=pa, nameservers=[dns.addr],
                   s2s="retry_timeout_secs = 30")
    b = federating(make_server, "b.test", ca=test_ca, s2s_port=pb, nameservers=[dns.addr],
                   users=(("bob", "bob-pw"),), start=False)

    async def go():
        alice = await login(a, "alice", "alice-pw")
        alice.send_message(mto="bob@b.test", mbody="queued 1", mtype="chat")
        alice.send_message(mto="bob@b.test", mbody="queued 2", mtype="chat")
        await asyncio.sleep(1.5)  # at least two failed attempts
        assert alice.errors.empty()
        b.start()
        bob = await login(b, "bob", "bob-pw")
        # Delivered live or from offline storage at login, in order either way.
        m1 = await next_matching(bob.messages, lambda x: x["body"].startswith("queued"), timeout=15)
        m2 = await next_matching(bob.messages, lambda x: x["body"].startswith("queued"), timeout=5)
        assert [m1["body"], m2["body"]] == ["queued 1", "queued 2"]
        assert alice.errors.empty()
        await alice.logout()
        await bob.logout()

    asyncio.run(go())
    assert re.search(rf"cannot reach the foreign domain.*127\.0\.0\.1:{pb}", a.log())


def test_nothing_answers_then_bounce_and_no_dns_records(make_server, make_testdns, test_ca):
    pa, dead = free_port(), closed_port()
    dns = make_testdns(a_records(pa)
                       + f"_xmpp-server._tcp.b.test. SRV 10 50 {dead} xmpp.b.test.\n"
                       + "xmpp.b.test. A 127.0.0.1\n")
    a = federating(make_server, "a.test", ca=test_ca, s2s_port=pa, nameservers=[dns.addr],
                   s2s="retry_timeout_secs = 2")

    async def go():
        alice = await login(a, "alice", "alice-pw")
        t0 = time.monotonic()
        alice.send_message(mto="bob@b.test", mbody="anyone there?", mtype="chat")
        await asyncio.sleep(0.5)
        alice.send_message(mto="bob@b.test", mbody="still there?", mtype="chat")
        bounced = []
        for _ in range(2):
            e = await next_matching(alice.errors, lambda x: x["from"].bare == "bob@b.test",
                                    timeout=15)
            bounced.append(e)
        elapsed = time.monotonic() - t0
        # Queued and retried for about retry_timeout_secs, not bounced at the first failure.
        assert elapsed >= 1.8, elapsed
        assert sorted(e["body"] for e in bounced) == ["anyone there?", "still there?"]
        for e in bounced:
            assert error_condition(e) in ("remote-server-not-found", "remote-server-timeout"), e
            text = e["error"]["text"]
            assert f"127.0.0.1:{dead}" in text and "connect" in text, text
            assert e["to"] == alice.boundjid.full

        # A domain with no DNS records at all (NXDOMAIN for every name).
        alice.send_message(mto="carol@nowhere.test", mbody="hello?", mtype="chat")
        e = await next_matching(alice.errors, lambda x: x["from"].bare == "carol@nowhere.test",
                                timeout=15)
        assert error_condition(e) == "remote-server-not-found", e
        text = e["error"]["text"]
        assert text.startswith("DNS") and "nowhere.test" in text, text
        await alice.logout()

    asyncio.run(go())


def test_the_retry_queue_is_bounded(make_server, make_testdns, test_ca):
    """queue_max = 2: while b.test does not answer, at most two stanzas wait for it, however
    many retries happen meanwhile; the others bounce at once with remote-server-timeout."""
    pa, dead = free_port(), closed_port()
    dns = make_testdns(a_records(pa)
                       + f"_xmpp-server._tcp.b.test. SRV 10 50 {dead} xmpp.b.test.\n"
                       + "xmpp.b.test. A 127.0.0.1\n")
    a = federating(make_server, "a.test", ca=test_ca, s2s_port=pa, nameservers=[dns.addr],
                   s2s="retry_timeout_secs = 4\nqueue_max = 2")

    async def go():
        alice = await login(a, "alice", "alice-pw")
        t0 = time.monotonic()
        for i in range(1, 6):
            alice.send_message(mto="bob@b.test", mbody=f"q{i}", mtype="chat")
            await asyncio.sleep(0.7)  # several connection attempts happen between sends
        errors = {}
        while len(errors) < 5:
            e = await next_matching(alice.errors, lambda x: x["from"].bare == "bob@b.test",
                                    timeout=15)
            errors[e["body"]] = (time.monotonic() - t0, error_condition(e), e["error"]["text"])
        # q1 and q2 waited for the retry timeout; q3..q5 found the queue full.
        for b in ("q3", "q4", "q5"):
            at, cond, text = errors[b]
            assert cond == "remote-server-timeout" and "too many" in text, errors
            assert at < 3.7, errors
        for b in ("q1", "q2"):
            at, cond, text = errors[b]
            assert at >= 3.8 and "connect" in text, errors
        await alice.logout()

    asyncio.run(go())
