"""Bad input on raw sockets: each case gets the right stream error (or SASL failure), and a
client connected at the same time keeps being served."""
import asyncio
import base64

import pytest

from raw_xmpp import Raw
from xmpp_client import Client

LIMITS = """max_stanza_bytes = 4096
max_depth = 16
"""


@pytest.fixture
def limited(make_server):
    s = make_server(LIMITS)
    s.add_user("alice", "alice-pw")
    s.add_user("bob", "bob-pw")
    return s.start()


async def ping(c):
    rtt = await c["xep_0199"].ping(jid=c.ent.domain, timeout=5)
    assert rtt is not None


def with_watcher(server, raw_fn):
    """Runs raw_fn (blocking, in a thread) while a slixmpp client is logged in; checks that the
    client is served before and after."""

    async def scenario():
        w = await Client(server, "bob", "bob-pw", resource="watcher").login()
        await ping(w)
        result = await asyncio.to_thread(raw_fn)
        await ping(w)
        # The watcher still gets messages routed to it, too.
        w.send_message(mto=w.boundjid, mbody="still here")
        from xmpp_client import next_matching

        m = await next_matching(w.messages, lambda m: m["body"] == "still here")
        assert m["from"] == w.boundjid
        assert not w.stream_errors.qsize()
        await w.logout()
        return result

    return asyncio.run(scenario())


def test_malformed_xml_after_login(limited):
    def raw():
        r = Raw(limited).login("alice", "alice-pw")
        r.send("<message to='bob@localhost'><body>hi</presence>")
        r.expect_stream_error("not-well-formed")

    with_watcher(limited, raw)


def test_malformed_xml_before_auth(limited):
    def raw():
        r = Raw(limited)
        r.header()
        r.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><<</starttls>")
        r.expect_stream_error("not-well-formed")

    with_watcher(limited, raw)


def test_oversized_stanza_after_login(limited):
    def raw():
        r = Raw(limited).login("alice", "alice-pw")
        # A stanza just under the limit passes...
        r.send(f"<message to='alice@localhost/raw' id='m1'><body>{'x' * 3000}</body></message>")
        r.read_until(r"</message>")
        # ...one over it does not.
        r.send_tolerant(f"<message to='bob@localhost'><body>{'x' * 8000}</body></message>")
        r.expect_stream_error("policy-violation")

    with_watcher(limited, raw)


def test_oversized_stanza_before_auth(limited):
    def raw():
        r = Raw(limited)
        r.header()
        r.starttls()
        r.send_tolerant(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
            + "A" * 20000
            + "</auth>"
        )
        r.expect_stream_error("policy-violation")

    with_watcher(limited, raw)


def test_oversized_stanza_never_ending(limited):
    """A stanza that keeps growing without closing is cut off once it passes the limit."""

    def raw():
        r = Raw(limited).login("alice", "alice-pw")
        r.send("<message to='bob@localhost'><body>")
        for _ in range(20):
            if not r.send_tolerant("y" * 1000):
                break
        r.expect_stream_error("policy-violation")

    with_watcher(limited, raw)


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>
<message to='bob@localhost'><body>&lol9;</body></message>
"""


def test_billion_laughs(limited):
    def raw():
        r = Raw(limited)
        r.send_tolerant(BILLION_LAUGHS)
        r.expect_stream_error(("restricted-xml", "not-well-formed"))

    with_watcher(limited, raw)


def test_undeclared_entity_in_stanza(limited):
    def raw():
        r = Raw(limited).login("alice", "alice-pw")
        r.send_tolerant("<message to='bob@localhost'><body>&lol9;</body></message>")
        r.expect_stream_error(("restricted-xml", "not-well-formed"))

    with_watcher(limited, raw)


def test_deep_nesting(limited):
    def raw():
        r = Raw(limited).login("alice", "alice-pw")
        r.send_tolerant("<message to='bob@localhost'>" + "<x>" * 200)
        r.expect_stream_error("policy-violation")

    with_watcher(limited, raw)


def test_deep_nesting_before_auth(limited):
    def raw():
        r = Raw(limited)
        r.header()
        r.send_tolerant("<a>" * 200)
        r.expect_stream_error("policy-violation")

    with_watcher(limited, raw)


def test_wrong_password_then_right_one(limited):
    def raw():
        r = Raw(limited)
        r.header()
        r.starttls()
        resp = r.auth_plain("alice", "not-the-password")
        assert "<not-authorized/>" in resp and "<failure" in resp, resp
        # An unknown user looks the same.
        resp = r.auth_plain("mallory", "whatever")
        assert "<not-authorized/>" in resp and "<failure" in resp, resp
        # The stream is still open: a correct attempt succeeds.
        resp = r.auth_plain("alice", "alice-pw")
        assert "<success" in resp, resp
        r.close()

    with_watcher(limited, raw)


def test_too_many_auth_failures(limited):
    def raw():
        r = Raw(limited)
        r.header()
        r.starttls()
        for _ in range(2):
            assert "<not-authorized/>" in r.auth_plain("alice", "wrong")
        r.send(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
            + base64.b64encode(b"\0alice\0wrong").decode()
            + "</auth>"
        )
        r.expect_stream_error("policy-violation")

    with_watcher(limited, raw)


def test_auth_before_starttls_when_tls_required(limited):
    def raw():
        r = Raw(limited)
        feats = r.header()
        assert "<required/>" in feats, feats
        assert "<mechanisms" not in feats, feats
        token = base64.b64encode(b"n,,n=alice,r=abcdefgh").decode()
        r.send(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>"
            f"{token}</auth>"
        )
        resp = r.read_until(r"</failure>")
        assert "<encryption-required/>" in resp, resp
        r.close()

    with_watcher(limited, raw)


def test_plain_before_tls_when_tls_optional(make_server):
    s = make_server("require_tls = false\n")
    s.add_user("alice", "alice-pw")
    s.add_user("bob", "bob-pw")
    s.start()

    def raw():
        r = Raw(s)
        feats = r.header()
        # SCRAM is offered in the clear, PLAIN is not.
        assert "<mechanism>SCRAM-SHA-256</mechanism>" in feats, feats
        assert "<mechanism>PLAIN</mechanism>" not in feats, feats
        resp = r.auth_plain("alice", "alice-pw")
        assert "<failure" in resp and "<encryption-required/>" in resp, resp
        # And a stanza before authentication on this server is not-authorized.
        r.send("<message to='bob@localhost'><body>hi</body></message>")
        r.expect_stream_error("not-authorized")

    with_watcher(s, raw)


def test_stanza_before_auth(limited):
    def raw():
        r = Raw(limited)
        r.header()
        r.starttls()
        r.send("<message to='bob@localhost'><body>sneaky</body></message>")
        r.expect_stream_error("not-authorized")

    with_watcher(limited, raw)


def test_stanza_after_auth_before_bind(limited):
    def raw():
        r = Raw(limited)
        r.header()
        r.starttls()
        assert "<success" in r.auth_plain("alice", "alice-pw")
        r.header()
        r.send("<message to='bob@localhost'><body>sneaky</body></message>")
        r.expect_stream_error("not-authorized")

    with_watcher(limited, raw)


def test_unknown_host(limited):
    def raw():
        r = Raw(limited)
        r.send(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams' to='elsewhere.example' version='1.0'>"
        )
        r.expect_stream_error("host-unknown")

    with_watcher(limited, raw)


def test_handshake_timeout(make_server):
    s = make_server("handshake_timeout_secs = 1\n")
    s.add_user("alice", "alice-pw")
    s.add_user("bob", "bob-pw")
    s.start()

    def raw():
        # Silent after connecting, and silent after the header: both are cut off.
        r1 = Raw(s)
        r2 = Raw(s)
        r2.header()
        r1.expect_stream_error("connection-timeout", timeout=6)
        r2.expect_stream_error("connection-timeout", timeout=6)

    with_watcher(s, raw)


def test_features_after_auth(limited):
    """After SASL: bind is offered, mechanisms and STARTTLS are not, and the server announces
    subscription pre-approval (RFC 6121 §3.4)."""

    def raw():
        r = Raw(limited)
        r.header()
        feats = r.starttls()
        assert "<starttls" not in feats and "<mechanism>PLAIN</mechanism>" in feats, feats
        assert "<success" in r.auth_plain("alice", "alice-pw")
        feats = r.header()
        assert "urn:ietf:params:xml:ns:xmpp-bind" in feats, feats
        assert "<mechanisms" not in feats and "<starttls" not in feats, feats
        assert "urn:xmpp:features:pre-approval" in feats, feats
        # A second STARTTLS after TLS is refused and the stream closed.
        r.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        text = r.read_all()
        assert "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" in text, text

    with_watcher(limited, raw)
