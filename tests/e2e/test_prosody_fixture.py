"""Proves the Prosody test-peer fixture: two real Prosody servers, p1.test on 127.0.0.11 and
p2.test on 127.0.0.12, find each other only through our mod_test_dns plugin and federate,
once authenticated by certificates from the test CA (SASL EXTERNAL), once with self-signed
certificates and dialback. Real slixmpp clients subscribe, see presence and chat across."""
import asyncio

from xmpp_client import Client, next_matching

P1, P2 = ("p1.test", "127.0.0.11"), ("p2.test", "127.0.0.12")


def make_pair(make_prosody, *, ca, **kw):
    p1 = make_prosody(*P1, ca=ca, static_routes={P2[0]: (P2[1], 5269)}, users={"alice": "alice-pw"}, **kw)
    p2 = make_prosody(*P2, ca=ca, static_routes={P1[0]: (P1[1], 5269)}, users={"bob": "bob-pw"}, **kw)
    return p1, p2


def run(scenario, *servers, timeout=45):
    """Runs an async scenario with an overall timeout; on failure prints the servers' log tails."""
    try:
        asyncio.run(asyncio.wait_for(scenario, timeout))
    except BaseException:
        for s in servers:
            print(f"---- {s.domain} log ----\n{s.tail(80)}")
        raise


async def federate(p1, p2):
    """alice@p1 and bob@p2 subscribe to each other, see each other's presence, and chat."""
    alice = await Client(p1, "alice", "alice-pw").login()
    bob = await Client(p2, "bob", "bob-pw").login()
    assert alice.connect_host == p1.ip and bob.connect_host == p2.ip
    try:
        alice.send_presence_subscription(pto="bob@p2.test")
        req = await next_matching(bob.subscriptions, lambda p: p["type"] == "subscribe", timeout=20)
        assert req["from"].bare == "alice@p1.test"
        bob.send_presence(pto="alice@p1.test", ptype="subscribed")
        await next_matching(alice.subscriptions, lambda p: p["type"] == "subscribed")
        # (Prosody sends an unavailable from the bare JID first, then the contact's current presence.)
        p = await next_matching(alice.presences, lambda p: p["from"].bare == "bob@p2.test" and p["type"] == "available")
        assert p["from"].resource == "test"

        bob.send_presence_subscription(pto="alice@p1.test")
        req = await next_matching(alice.subscriptions, lambda p: p["type"] == "subscribe")
        assert req["from"].bare == "bob@p2.test"
        alice.send_presence(pto="bob@p2.test", ptype="subscribed")
        await next_matching(bob.subscriptions, lambda p: p["type"] == "subscribed")
        p = await next_matching(bob.presences, lambda p: p["from"].bare == "alice@p1.test" and p["type"] == "available")
        assert p["from"].resource == "test"

        alice.send_message(mto="bob@p2.test", mbody="hello from p1", mtype="chat")
        m = await next_matching(bob.messages, lambda m: m["body"] == "hello from p1")
        assert m["from"] == alice.boundjid
        bob.send_message(mto=alice.boundjid, mbody="hello from p2", mtype="chat")
        m = await next_matching(alice.messages, lambda m: m["body"] == "hello from p2")
        assert m["from"] == bob.boundjid

        # The roster on each side shows a mutual subscription.
        assert alice.client_roster["bob@p2.test"]["subscription"] == "both"
        assert bob.client_roster["alice@p1.test"]["subscription"] == "both"
    finally:
        for c in (alice, bob):
            try:
                await c.logout()
            except Exception:  # noqa: BLE001 - cleanup must not mask the real failure
                c.abort_connection()


def test_federation_with_test_ca_certificates_uses_sasl_external(make_prosody, test_ca):
    # s2s_secure_auth: only a valid certificate may authenticate a peer, so nothing but EXTERNAL can.
    p1, p2 = make_pair(make_prosody, ca=test_ca, s2s_secure_auth=True)
    assert p1.cert == test_ca.cert  # clients trust the CA
    run(federate(p1, p2), p1, p2)
    for me, peer in ((p1, p2), (p2, p1)):
        log = me.log()
        # outgoing: we authenticated to the peer with our certificate
        assert f"SASL EXTERNAL with {peer.domain} succeeded" in log, me.tail()
        # incoming: the peer authenticated to us with its certificate
        assert f"Accepting SASL EXTERNAL identity from {peer.domain}" in log, me.tail()
        assert "certificate chain validation result: valid" in log
        assert "certificate identity validation result: valid" in log
        assert "certificate chain validation result: invalid" not in log
        assert "Initiating dialback" not in log
        # the peer's address came from our plugin, not from a resolver
        assert f"test_dns: _xmpp-server._tcp.{peer.domain} SRV -> 1 record(s)" in log


def test_federation_with_self_signed_certificates_falls_back_to_dialback(make_prosody):
    p1, p2 = make_pair(make_prosody, ca=None, s2s_secure_auth=False, dialback=True)
    assert p1.ca_file is None and p1.cert == p1.cert_file  # clients trust the self-signed cert itself
    run(federate(p1, p2), p1, p2)
    for me, peer in ((p1, p2), (p2, p1)):
        log = me.log()
        assert "certificate chain validation result: invalid" in log, me.tail()
        assert "certificate error(s) at depth 0: self-signed certificate" in log
        assert "SASL EXTERNAL" not in log  # neither offered nor tried
        # outgoing: we proved our identity by dialback ...
        assert "Initiating dialback" in log and "sent dialback key on outgoing s2s stream" in log
        # ... incoming: we asked the peer's authoritative server, and it confirmed its key
        assert f"asking {peer.domain} if key" in log
        assert "verified dialback key... it is valid" in log
        assert "Stream encrypted" in log  # require_encryption: TLS all the same


def test_wrong_name_certificate_and_unknown_domain_are_refused(make_prosody, test_ca):
    """The negative helpers work on a real peer: under s2s_secure_auth, p1 refuses p2's CA-signed
    certificate for the wrong name, and a domain missing from static_routes does not resolve."""
    p1 = make_prosody(*P1, ca=test_ca, s2s_secure_auth=True,
                      static_routes={P2[0]: (P2[1], 5269)}, users={"alice": "alice-pw"})
    p2 = make_prosody(*P2, ca=test_ca, cert=test_ca.issue_wrong_name(P2[0]),
                      static_routes={P1[0]: (P1[1], 5269)})

    async def scenario():
        alice = await Client(p1, "alice", "alice-pw").login()
        try:
            alice.send_message(mto="bob@p2.test", mbody="to a peer with the wrong name", mtype="chat")
            e = await next_matching(alice.errors, lambda m: m["from"].bare == "bob@p2.test", timeout=20)
            assert e["type"] == "error"
            alice.send_message(mto="x@nowhere.test", mbody="to nowhere", mtype="chat")
            e = await next_matching(alice.errors, lambda m: m["from"].bare == "x@nowhere.test", timeout=20)
            assert e["error"]["condition"] == "remote-server-not-found"
        finally:
            await alice.logout()

    run(scenario(), p1, p2)
    assert p1.log_matches(r"Forbidding insecure connection to/from p2\.test because its certificate is not valid for this name")
    assert p1.log_matches(r"test_dns: _xmpp-server\._tcp\.nowhere\.test SRV -> 0 record\(s\) \(NXDOMAIN\)")
    assert "to a peer with the wrong name" not in p2.log()  # never crossed
