"""Runtime editing of the federation (issue #8): federated domains and the federation policy
changed through the admin API (PUT/DELETE /api/federation/domains/{domain},
GET/PUT/DELETE /api/federation/policy) and the `entente admin domains|policy` CLI, against the
real binary with real peers, without a restart.

- XMPP: Entente (e.test, allowlist policy naming nobody) and a real Prosody (p1.test on
  127.0.0.110). Messages to p1.test bounce; adding p1.test (its static route through the API,
  the policy through the CLI) makes federation work both ways at once; taking it out of the
  policy drains the links and messages bounce again; the changes survive a restart.
- SIP: a SIP peer domain added at run time is accepted (and reached through the static route
  given with it), and refused again once removed; its dialogs are ended first (a final NOTIFY
  `terminated;reason=noresource` to its watcher, BYE for the IM session, an unsubscribing
  SUBSCRIBE for our subscription), over its former route.
- Bad input answers 400 with a reason naming the field.
- Two servers on one database (SQLite file, PostgreSQL): a change through one's API reaches
  the other through the store's federation version.
"""
import asyncio
import socket
import time
import urllib.error
import urllib.request

import pytest

from admin_helpers import TOKEN, Api, acli, admin_config, cli
from conftest import free_port
from xmpp_client import Client, error_condition, next_matching

P_IP = "127.0.0.110"
SIP_IP, SIP_PEER_IP = "127.0.0.111", "127.0.0.112"


async def bounced(alice, body):
    """Sends `body` to romeo@p1.test and returns the error that comes back."""
    alice.send_message(mto="romeo@p1.test", mbody=body, mtype="chat")
    err = await next_matching(alice.errors, lambda m: m["from"].bare == "romeo@p1.test")
    return err


async def federation_works(alice, romeo, tag):
    alice.send_message(mto="romeo@p1.test", mbody=f"hello {tag}", mtype="chat")
    m = await next_matching(romeo.messages, lambda x: x["body"] == f"hello {tag}")
    assert m["from"].bare == "alice@e.test"
    romeo.send_message(mto="alice@e.test", mbody=f"back {tag}", mtype="chat")
    m = await next_matching(alice.messages, lambda x: x["body"] == f"back {tag}")
    assert m["from"].bare == "romeo@p1.test"


async def eventually(check, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        r = await check()
        if r:
            return r
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


def test_xmpp_domain_and_policy_at_run_time(make_server, make_prosody, workdir):
    s2s_port = free_port()
    api_port, extra = admin_config(workdir)
    e = make_server(f"""
[s2s]
enabled = true
listen = ["127.0.0.1:{s2s_port}"]
system_roots = false
connect_timeout_secs = 5
retry_timeout_secs = 5
policy = "allowlist"
domains = ["nobody.test"]
{extra}
""", domain="e.test")
    e.add_user("alice", "alice-pw")
    e.start()
    api = Api(api_port).wait_up()
    p = make_prosody("p1.test", P_IP, static_routes={"e.test": ("127.0.0.1", s2s_port)},
                     users={"romeo": "romeo-pw"})

    async def before_restart():
        alice = await Client(e, "alice", "alice-pw").login()
        romeo = await Client(p, "romeo", "romeo-pw").login()

        # Not permitted yet: the message bounces, saying why.
        err = await bounced(alice, "too early")
        assert error_condition(err) == "remote-server-not-found", err
        assert "policy" in err["error"]["text"], err

        # The policy as it stands: the file's.
        st, pol = await api.acall("GET", "/api/federation/policy")
        assert st == 200 and pol == {"policy": "allowlist", "domains": ["nobody.test"],
                                     "source": "config"}, pol

        # The route through the API, the policy through the CLI: works at once.
        st, d = await api.acall("PUT", "/api/federation/domains/p1.test",
                                {"protocol": "xmpp", "tls": "optional", "routes": [f"{P_IP}:5269"]})
        assert st == 200, d
        assert d["domain"] == "p1.test" and d["protocol"] == "xmpp" and d["source"] == "api", d
        assert d["transport"] == "optional" and d["routes"] == [f"{P_IP}:5269"], d
        out = (await acli(e, "policy", "set", "allowlist", "nobody.test", "P1.test")).stdout
        assert "allowlist: nobody.test, p1.test (from the admin API)" in out, out
        await federation_works(alice, romeo, "one")
        # alice sees romeo's presence.
        alice.send_presence_subscription(pto="romeo@p1.test")
        await next_matching(romeo.subscriptions, lambda x: x["type"] == "subscribe")
        romeo.send_presence(pto="alice@e.test", ptype="subscribed")
        await next_matching(alice.presences,
                            lambda x: x["from"].bare == "romeo@p1.test" and x["type"] == "available")
        st, doms = await api.acall("GET", "/api/federation/domains")
        assert st == 200 and doms["xmpp_policy_source"] == "api", doms
        assert [x for x in doms["domains"] if x["domain"] == "p1.test"][0]["source"] == "api"
        out = (await acli(e, "domains")).stdout
        assert "p1.test\txmpp\tprofile=-\ttransport=optional" in out and "source=api" in out, out

        async def links_with_p1():
            st, links = await api.acall("GET", "/api/federation/links")
            assert st == 200
            return [l for l in links["links"] if l["peer"] == "p1.test"]
        assert await eventually(links_with_p1)

        # Out of the policy again: the links are drained, messages bounce.
        st, pol = await api.acall("PUT", "/api/federation/policy",
                                  {"policy": "allowlist", "domains": ["nobody.test"]})
        assert st == 200 and pol["source"] == "api" and pol["domains"] == ["nobody.test"], pol
        await eventually(lambda: no_links(links_with_p1))
        # romeo's presence is gone for alice.
        await next_matching(alice.presences,
                            lambda x: x["from"].bare == "romeo@p1.test" and x["type"] == "unavailable")
        err = await bounced(alice, "too late")
        assert error_condition(err) == "remote-server-not-found" and "policy" in err["error"]["text"]
        assert "draining the links" in e.log()

        # Permitted again (through the CLI) before the restart.
        await acli(e, "policy", "set", "allowlist", "p1.test")
        await romeo.logout()
        await alice.logout()

    async def no_links(f):
        return not await f()

    asyncio.run(before_restart())

    # After a restart the store's settings are in effect: route and policy.
    e.restart()
    api.wait_up()

    async def after_restart():
        st, pol = await api.acall("GET", "/api/federation/policy")
        assert pol == {"policy": "allowlist", "domains": ["p1.test"], "source": "api"}, pol
        alice = await Client(e, "alice", "alice-pw").login()
        romeo = await Client(p, "romeo", "romeo-pw").login()
        await federation_works(alice, romeo, "two")

        # Removing the domain's settings leaves no route: the file knows no p1.test, so the
        # API's row is dropped; the CLI's `remove` of an unknown domain fails with 404.
        await acli(e, "domains", "remove", "p1.test")
        st, doms = await api.acall("GET", "/api/federation/domains")
        assert not [x for x in doms["domains"] if x["domain"] == "p1.test"], doms
        r = await acli(e, "domains", "remove", "p1.test", check=False)
        assert r.returncode != 0 and "404" in r.stderr, r.stderr

        # Back to the file's policy.
        out = (await acli(e, "policy", "reset")).stdout
        assert "allowlist: nobody.test (from the configuration file)" in out, out
        err = await bounced(alice, "after reset")
        assert error_condition(err) == "remote-server-not-found"
        st, body = await api.acall("DELETE", "/api/federation/policy")
        assert st == 404 and "error" in body, body
        await romeo.logout()
        await alice.logout()

    asyncio.run(after_restart())


def test_bad_input_is_refused_with_a_reason(make_server, workdir):
    api_port, extra = admin_config(workdir)
    e = make_server(f"""
[s2s]
enabled = true
listen = ["127.0.0.1:{free_port()}"]

[[s2s.peer]]
domain = "file.test"
routes = ["127.0.0.1:5269"]
{extra}
""", domain="e.test")
    e.start()
    api = Api(api_port).wait_up()
    for path, body, needle in [
        ("/api/federation/domains/x.test", {"protocol": "xmpp", "routes": ["ftp://x"]}, "routes[0]"),
        ("/api/federation/domains/x.test", {"protocol": "xmpp", "tls": "sometimes"}, "sometimes"),
        ("/api/federation/domains/x.test", {"protocol": "xmpp", "colour": "red"}, "colour"),
        ("/api/federation/domains/x.test", {"protocol": "carrier-pigeon"}, "protocol"),
        ("/api/federation/domains/x.test", {}, "protocol"),
        ("/api/federation/domains/x.test", {"protocol": "sip"}, "SIP is not enabled"),
        ("/api/federation/domains/e.test", {"protocol": "xmpp"}, "own domain"),
        ("/api/federation/domains/bad%20domain", {"protocol": "xmpp"}, "domain"),
        ("/api/federation/domains/x.test", {"protocol": "xmpp", "domain": "x.test"}, "in the path only"),
        ("/api/federation/policy", {"policy": "closed"}, "closed"),
        ("/api/federation/policy", {"policy": "allowlist", "domains": ["a b"]}, "domains[0]"),
        ("/api/federation/policy", {"policy": "allowlist", "domains": "x.test"}, "domains"),
        ("/api/federation/policy", {"domains": []}, "policy"),
    ]:
        st, err = api.call("PUT", path, body)
        assert st == 400, (path, body, st, err)
        assert needle in err["error"], (body, err)
    out = cli(e, "policy", "get").stdout
    assert out.strip() == "policy open (from the configuration file)", out
    st, pol = api.call("GET", "/api/federation/policy")
    assert pol == {"policy": "open", "domains": [], "source": "config"}, pol
    st, err = api.call("PUT", "/api/federation/policy", raw=b"{not json")
    assert st == 400 and "JSON" in err["error"], err
    st, err = api.call("PUT", "/api/federation/domains/x.test", raw=b"[1]")
    assert st == 400 and "object" in err["error"], err
    r = cli(e, "domains", "set", "x.test", "--protocol", "xmpp", "--route", "ftp://x", check=False)
    assert r.returncode != 0 and "400" in r.stderr and "routes[0]" in r.stderr, r.stderr
    # Nothing was stored.
    st, doms = api.call("GET", "/api/federation/domains")
    assert [x["domain"] for x in doms["domains"]] == ["file.test"], doms
    assert doms["removed"] == [] and doms["xmpp_policy_source"] == "config"

    # A file domain: removed through the API (hidden, listed as removed), then reset.
    st, _ = api.call("DELETE", "/api/federation/domains/file.test")
    assert st == 204
    st, doms = api.call("GET", "/api/federation/domains")
    assert doms["domains"] == [] and doms["removed"] == ["file.test"], doms
    st, err = api.call("DELETE", "/api/federation/domains/file.test")
    assert st == 404, err
    out = cli(e, "domains", "reset", "file.test").stdout
    assert "file.test" in out
    st, doms = api.call("GET", "/api/federation/domains")
    assert [(x["domain"], x["source"]) for x in doms["domains"]] == [("file.test", "config")], doms
    st, err = api.call("DELETE", "/api/federation/domains/file.test/override")
    assert st == 404, err
    # A file domain overridden through the CLI.
    out = cli(e, "domains", "set", "file.test", "--protocol", "xmpp", "--tls", "never").stdout
    assert "file.test set: xmpp transport=never" in out, out
    st, doms = api.call("GET", "/api/federation/domains")
    assert [(x["domain"], x["source"], x["transport"], x["routes"]) for x in doms["domains"]] \
        == [("file.test", "api", "never", [])], doms


def test_sip_peer_added_at_run_time_is_accepted(make_server, workdir):
    from sip_peer import SipPeer

    with socket.socket() as probe:
        probe.bind((SIP_IP, 0))
        sip_port = probe.getsockname()[1]
    api_port, extra = admin_config(workdir)
    with SipPeer("lync.test", SIP_PEER_IP) as peer:
        e = make_server(extra + f"""
[policy]
default = "allow"

[sip]
enabled = true
listen_udp = []
listen_tcp = ["{SIP_IP}:{sip_port}"]
listen_tls = []
""", domain="a.test")
        e.add_user("alice", "pw")
        e.start()
        api = Api(api_port).wait_up()
        peer.connect(SIP_IP, sip_port)

        def subscribe():
            return peer.request("SUBSCRIBE", "sip:alice@a.test", from_uri="sip:carol@lync.test",
                                to_uri="sip:alice@a.test",
                                headers=[("Event", "presence"), ("Expires", "600")])

        r = subscribe()
        assert r.status == 403, r.summary()

        st, d = api.call("PUT", "/api/federation/domains/lync.test", {
            "protocol": "sip", "profile": "lync", "transport": "tcp",
            "source_addrs": [SIP_PEER_IP], "routes": [f"tcp://{SIP_PEER_IP}:{peer.port}"]})
        assert st == 200, d
        assert d == {"domain": "lync.test", "protocol": "sip", "profile": "lync",
                     "transport": "tcp", "mutual_tls": False,
                     "routes": [f"tcp://{SIP_PEER_IP}:{peer.port}"],
                     "source_addrs": [SIP_PEER_IP], "im": "session", "source": "api"}, d
        r = subscribe()
        assert r.status == 202, r.summary()
        peer.wait_request("NOTIFY", timeout=10)
        # The SIP peer is permitted in the admin layer too.
        st, pol = api.call("GET", "/api/policy")
        assert st == 200 and pol["federation"]["policy"] == "open", pol

        def inbound_subscriptions():
            req = urllib.request.Request(api.base + "/metrics")
            req.add_header("Authorization", f"Bearer {TOKEN}")
            text = urllib.request.urlopen(req, timeout=10).read().decode()
            for line in text.splitlines():
                if line.startswith('entente_sip_subscriptions{direction="in"} '):
                    return float(line.split()[-1])
            return None

        assert inbound_subscriptions() == 1

        async def remove_with_dialogs():
            # alice opens an IM session with carol (lync: INVITE, then MESSAGE in it) and
            # subscribes to her presence: three dialogs with lync.test.
            alice = await Client(e, "alice", "pw").login()
            alice.send_message(mto="carol@lync.test", mbody="hello carol", mtype="chat")
            invite = await asyncio.to_thread(peer.wait_request, "INVITE", None, 10)
            await asyncio.to_thread(peer.wait_request, "MESSAGE",
                                    lambda m: m.call_id == invite.call_id, 10)
            alice.send_presence_subscription(pto="carol@lync.test")
            sub = await asyncio.to_thread(peer.wait_request, "SUBSCRIBE", None, 10)

            # Removed: each dialog is ended over the domain's former route before it is
            # forgotten, as a notifier and a UA should.
            r = await acli(e, "domains", "remove", "lync.test")
            assert "removed lync.test" in r.stdout
            final = await asyncio.to_thread(
                peer.wait_request, "NOTIFY",
                lambda m: (m.header("Subscription-State") or "").startswith("terminated"), 10)
            assert final.header("Subscription-State") == "terminated;reason=noresource", final.summary()
            assert not final.body, final.summary()
            bye = await asyncio.to_thread(peer.wait_request, "BYE", None, 10)
            assert bye.call_id == invite.call_id, bye.summary()
            unsub = await asyncio.to_thread(peer.wait_request, "SUBSCRIBE", None, 10)
            assert unsub.call_id == sub.call_id and unsub.header("Expires") == "0", unsub.summary()
            await alice.logout()

        asyncio.run(remove_with_dialogs())
        # Refused again, and its subscription is forgotten.
        deadline = time.time() + 10
        while inbound_subscriptions() != 0:
            assert time.time() < deadline, "the removed domain's subscription is still there"
            time.sleep(0.2)
        assert "SIP domains are no longer permitted: ending and forgetting their dialogs" in e.log()
        r = peer.request("MESSAGE", "sip:alice@a.test", from_uri="sip:carol@lync.test",
                         to_uri="sip:alice@a.test", body="hi")
        assert r.status == 403, r.summary()

        # Back through the CLI, with every SIP flag.
        out = cli(e, "domains", "set", "lync.test", "--protocol", "sip", "--profile", "lync",
                  "--transport", "tcp", "--source-addr", SIP_PEER_IP, "--mutual-tls", "false",
                  "--im", "page", "--route", f"tcp://{SIP_PEER_IP}:{peer.port}").stdout
        assert "lync.test set: sip transport=tcp" in out, out
        st, doms = api.call("GET", "/api/federation/domains")
        assert [(x["domain"], x["im"], x["mutual_tls"], x["source"]) for x in doms["domains"]] \
            == [("lync.test", "page", False, "api")], doms
        r = peer.request("MESSAGE", "sip:alice@a.test", from_uri="sip:carol@lync.test",
                         to_uri="sip:alice@a.test", body="hi again")
        assert r.status in (200, 202), r.summary()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_change_made_by_another_process_is_picked_up(make_server, workdir, backend, request):
    """Two servers on one database (a cluster's shape): a change through one's API reaches the
    other by the store's federation version, without a restart."""
    if backend == "postgres":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite://{workdir / 'shared.db'}"
    servers = []
    for sub in ("a", "b"):
        port, extra = admin_config(workdir)
        s = make_server(f"""
[database]
url = "{url}"

[s2s]
enabled = true
listen = ["127.0.0.1:{free_port()}"]
{extra}""", domain="e.test", sub=sub)
        servers.append((s, Api(port)))
    servers[0][0].add_user("alice", "alice-pw")
    for s, api in servers:
        s.start()
        api.wait_up()
    (a, api_a), (b, api_b) = servers

    st, pol = api_a.call("PUT", "/api/federation/policy", {"policy": "denylist", "domains": ["far.test"]})
    assert st == 200, pol
    st, d = api_a.call("PUT", "/api/federation/domains/near.test", {"protocol": "xmpp", "tls": "never"})
    assert st == 200, d

    async def seen_by_b():
        st, pol = await api_b.acall("GET", "/api/federation/policy")
        st2, doms = await api_b.acall("GET", "/api/federation/domains")
        return pol["source"] == "api" and [x["domain"] for x in doms["domains"]] == ["near.test"]

    async def scenario():
        await eventually(seen_by_b, timeout=10)
        alice = await Client(b, "alice", "alice-pw").login()
        alice.send_message(mto="x@far.test", mbody="denied", mtype="chat")
        err = await next_matching(alice.errors, lambda m: m["from"].bare == "x@far.test")
        assert error_condition(err) == "remote-server-not-found" and "policy" in err["error"]["text"]
        await alice.logout()

    asyncio.run(scenario())
    assert "the federation settings changed; reloaded" in b.log()
