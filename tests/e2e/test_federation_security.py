"""Federation security, end to end against a real Entente (a.test):

- a raw s2s peer that sends a stanza without authenticating gets `invalid-from`; without a
  plain-TCP allowance it is stopped even earlier (`policy-violation`, STARTTLS required), also
  when it claims a plain-TCP domain in its header and then asks dialback for another one;
- a raw peer that did authenticate evil.test by dialback (Entente's verification call-back is
  answered by a fake authoritative server) can deliver stanzas from evil.test, but one with a
  `from` of another domain ends its stream with `invalid-from` and is not delivered; a forged
  dialback key is refused;
- relaying: a stanza (or a stream) to a domain that is not ours gets `host-unknown`;
- refused domains (policy denylist / allowlist, between two Ententes): a subscription and a
  message from the refused domain never reach the local user, and the local user writing to the
  refused domain gets `remote-server-not-found` with a policy text.
"""
import asyncio
import re

import pytest

from conftest import free_port
from federation import S2S_HEADER, FakeAuthoritative, RawS2s, federating, login, wait_for_log
from xmpp_client import error_condition, next_matching, nothing_matching

GOOD_KEY = "0123456789abcdef-good-key"


@pytest.fixture
def evil():
    f = FakeAuthoritative("evil.test", GOOD_KEY)
    yield f
    f.close()


def target(make_server, evil):
    # b.test is a domain that must use TLS; its route leads nowhere (nothing here may ask the
    # machine's resolver).
    return federating(make_server, "a.test", s2s="retry_timeout_secs = 2", peers=[
        {"domain": "evil.test", "tls": "never", "routes": [evil.addr]},
        {"domain": "b.test", "routes": [f"127.0.0.1:{free_port()}"]},
    ])


def dialback_in(raw, key=GOOD_KEY):
    """Opens a stream from evil.test to a.test and asks for dialback authentication; returns the
    db:result answer."""
    sid, feats = raw.open("evil.test", "a.test")
    assert sid and "urn:xmpp:features:dialback" in feats, feats
    raw.send(f"<db:result from='evil.test' to='a.test'>{key}</db:result>")
    return raw.read_until(r"<db:result[^>]*type=['\"](valid|invalid|error)['\"][^>]*>")


def test_unauthenticated_and_spoofed_stanzas_are_refused(make_server, evil):
    a = target(make_server, evil)

    async def go():
        alice = await login(a, "alice", "alice-pw")

        def unauthenticated():
            # Plain TCP is allowed for evil.test, but nothing was authenticated on this stream.
            raw = RawS2s(a.s2s_port)
            raw.open("evil.test", "a.test")
            raw.send("<message from='mallory@evil.test' to='alice@a.test' type='chat'>"
                     "<body>unauthenticated</body></message>")
            cond = raw.expect_stream_error(("invalid-from", "not-authorized"))
            raw.close()
            # A domain without the plain-TCP allowance must STARTTLS first.
            raw = RawS2s(a.s2s_port)
            _, feats = raw.open("other.test", "a.test")
            assert "<required/>" in feats and "dialback" not in feats, feats
            raw.send("<message from='mallory@other.test' to='alice@a.test' type='chat'>"
                     "<body>no tls</body></message>")
            raw.expect_stream_error("policy-violation")
            raw.close()
            # Nor can a TLS-required domain ride on a stream that skipped TLS by claiming a
            # plain-TCP domain in its header (a downgrade).
            raw = RawS2s(a.s2s_port)
            raw.open("evil.test", "a.test")
            raw.send(f"<db:result from='b.test' to='a.test'>{GOOD_KEY}</db:result>")
            raw.expect_stream_error("policy-violation")
            raw.close()
            return cond

        await asyncio.to_thread(unauthenticated)

        def authenticated():
            raw = RawS2s(a.s2s_port)
            assert "type='valid'" in dialback_in(raw).replace('"', "'")
            raw.send("<message from='mallory@evil.test/x' to='alice@a.test' type='chat'>"
                     "<body>from evil, honestly</body></message>")
            raw.send("<message from='ceo@b.test/x' to='alice@a.test' type='chat'>"
                     "<body>spoofed</body></message>")
            raw.expect_stream_error("invalid-from")
            raw.close()

        await asyncio.to_thread(authenticated)
        # The honest stanza from the authenticated domain arrives, with its from unchanged...
        m = await next_matching(alice.messages, lambda x: x["body"] == "from evil, honestly")
        assert m["from"] == "mallory@evil.test/x"
        # ...the unauthenticated and spoofed ones never do.
        await nothing_matching(alice.messages, lambda x: x["body"] != "from evil, honestly",
                               wait=1.0)

        def forged_key():
            raw = RawS2s(a.s2s_port)
            assert "type='invalid'" in dialback_in(raw, key="forged").replace('"', "'")
            raw.send("<message from='mallory@evil.test' to='alice@a.test' type='chat'>"
                     "<body>forged key</body></message>")
            raw.expect_stream_error("invalid-from")
            raw.close()

        await asyncio.to_thread(forged_key)
        await nothing_matching(alice.messages, wait=0.5)
        await alice.logout()

    asyncio.run(go())
    # Entente really called evil.test back, with the key the peer gave and the stream's id.
    keys = [r[3] for r in evil.requests]
    assert GOOD_KEY in keys and "forged" in keys, evil.requests
    assert all(r[0] == "a.test" and r[1] == "evil.test" for r in evil.requests), evil.requests
    assert "invalid-from" in a.log()


def test_no_relaying_to_foreign_domains(make_server, evil):
    a = target(make_server, evil)
    # A stream addressed to a domain this server does not host.
    raw = RawS2s(a.s2s_port)
    raw.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
             "xmlns:stream='http://etherx.jabber.org/streams' from='evil.test' to='b.test' "
             "version='1.0'>")
    raw.expect_stream_error("host-unknown")
    raw.close()
    # An authenticated peer asking us to pass a stanza on to another domain.
    raw = RawS2s(a.s2s_port)
    assert "type='valid'" in dialback_in(raw).replace('"', "'")
    raw.send("<message from='mallory@evil.test' to='victim@b.test' type='chat'>"
             "<body>relay this</body></message>")
    raw.expect_stream_error("host-unknown")
    raw.close()
    # And a dialback request for a receiving domain that is not ours is an error, not a pass.
    raw = RawS2s(a.s2s_port)
    raw.open("evil.test", "a.test")
    raw.send(f"<db:result from='evil.test' to='b.test'>{GOOD_KEY}</db:result>")
    r = raw.read_until(r"<db:result[^>]*type=['\"](valid|invalid|error)['\"]")
    assert "type='error'" in r.replace('"', "'"), r
    raw.close()
    # Nothing tried to reach b.test.
    assert "b.test" not in "".join(re.findall(r"s2s-out.*", a.log()))


@pytest.mark.parametrize("policy", ["denylist", "allowlist"])
def test_refused_domain(make_server, test_ca, policy):
    """a.test refuses b.test (denylist naming it, or allowlist without it); b.test is open.
    With the denylist both use CA certificates (b.test authenticates by SASL EXTERNAL and is
    refused after it); with the allowlist, self-signed ones (b.test's dialback is refused)."""
    ca = test_ca if policy == "denylist" else None
    listed = "b.test" if policy == "denylist" else "c.test"
    pa, pb = free_port(), free_port()
    a = federating(make_server, "a.test", ca=ca, s2s_port=pa,
                   s2s=f'policy = "{policy}"\ndomains = ["{listed}"]',
                   peers=[{"domain": "b.test", "routes": [f"127.0.0.1:{pb}"]}])
    b = federating(make_server, "b.test", ca=ca, s2s_port=pb, s2s="retry_timeout_secs = 2",
                   users=(("bob", "bob-pw"),),
                   peers=[{"domain": "a.test", "routes": [f"127.0.0.1:{pa}"]}])

    async def go():
        alice = await login(a, "alice", "alice-pw")
        bob = await login(b, "bob", "bob-pw")

        # From the refused domain: nothing reaches alice; bob gets his message back.
        bob.send_presence_subscription(pto="alice@a.test")
        bob.send_message(mto="alice@a.test", mbody="let me in", mtype="chat")
        e = await next_matching(bob.errors, lambda x: x["from"].bare == "alice@a.test"
                                and x.name == "message", timeout=20)
        assert error_condition(e) in ("remote-server-not-found", "remote-server-timeout"), e
        await nothing_matching(alice.subscriptions, wait=0.5)
        await nothing_matching(alice.messages, wait=0.5)

        # To the refused domain: an immediate error with the policy as the reason.
        alice.send_message(mto="bob@b.test", mbody="hi bob", mtype="chat")
        e = await next_matching(alice.errors, lambda x: x["from"].bare == "bob@b.test", timeout=5)
        assert error_condition(e) == "remote-server-not-found", e
        assert "policy" in e["error"]["text"], e["error"]["text"]
        alice.send_presence_subscription(pto="bob@b.test")
        e = await next_matching(alice.errors, lambda x: x["from"].bare == "bob@b.test"
                                and x.name == "presence", timeout=5)
        assert error_condition(e) == "remote-server-not-found", e
        await nothing_matching(bob.subscriptions, wait=0.5)
        await nothing_matching(bob.messages, wait=0.5)
        await alice.logout()
        await bob.logout()

    asyncio.run(go())
    wait_for_log(a, r"refusing a federat")
    assert "federation link up" not in a.log()


def test_pre_xmpp_1_0_peer_on_plain_tcp(make_server, evil):
    """A GoogleTalk-era peer (no version='1.0', so no stream features) allowed plain TCP
    authenticates by dialback and delivers; the same header from a TLS-required domain is
    refused."""
    a = target(make_server, evil)
    legacy = S2S_HEADER.replace("' version='1.0'>", "'>")

    async def go():
        alice = await login(a, "alice", "alice-pw")

        def legacy_peer():
            raw = RawS2s(a.s2s_port)
            raw.send(legacy.format(frm="evil.test", to="a.test"))
            head = raw.read_until(r"<stream:stream[^>]*>")
            assert "id=" in head, head
            raw.send(f"<db:result from='evil.test' to='a.test'>{GOOD_KEY}</db:result>")
            r = raw.read_until(r"<db:result[^>]*type=['\"](valid|invalid|error)['\"][^>]*>")
            assert "type='valid'" in r.replace('"', "'"), r
            raw.send("<message from='old@evil.test/gtalk' to='alice@a.test' type='chat'>"
                     "<body>hello from 2006</body></message>")
            raw.send("</stream:stream>")
            raw.read_all()
            raw.close()
            raw = RawS2s(a.s2s_port)
            raw.send(legacy.format(frm="b.test", to="a.test"))
            raw.expect_stream_error("policy-violation")
            raw.close()

        await asyncio.to_thread(legacy_peer)
        m = await next_matching(alice.messages, lambda x: x["body"] == "hello from 2006")
        assert m["from"] == "old@evil.test/gtalk"
        await alice.logout()

    asyncio.run(go())
