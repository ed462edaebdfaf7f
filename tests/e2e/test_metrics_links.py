"""Operations (issue #8): Prometheus metrics at GET /metrics, the federation links API
(GET /api/federation/links, POST /api/federation/links/{domain}/drain) and the `entente admin`
CLI that calls them, against the real binary.

Metrics are scraped after scripted traffic between two slixmpp clients and parsed with a small,
strict parser of the text exposition format (0.0.4). Links are listed after a federated chat
between two Ententes (a.test, b.test); a drain in the middle of a burst closes both directions,
loses nothing, and the next message opens a new link. A link drained before it could connect
bounces what waits for it, with an error naming the administrator.
"""
import asyncio
import datetime
import json
import re
import subprocess
import time

import pytest

from admin_helpers import Api, acli, admin_config, cli, parse_exposition, value
from conftest import BIN, free_port
from federation import federating, login
from sip_helpers import sip_config, tcp_peer
from xmpp_client import error_condition, next_matching



def test_the_parser_itself():
    types, samples = parse_exposition(
        '# HELP a_total A thing.\n# TYPE a_total counter\n'
        'a_total{x="1",y="q\\"uo\\\\te\\n"} 3\na_total 4.5e1\n# TYPE g gauge\ng -Inf\n'
    )
    assert types == {"a_total": "counter", "g": "gauge"}
    assert value(samples, "a_total", x="1", y='q"uo\\te\n') == 3
    assert value(samples, "a_total") == 45
    assert value(samples, "g") == float("-inf")
    for bad in ["a 1\n", "# TYPE a counter\na{x=1} 1\n", "# TYPE a counter\na 1\na 2\n",
                "# TYPE a counter\na one\n", "# TYPE a counter\na 1"]:
        with pytest.raises(AssertionError):
            parse_exposition(bad)


# ---- helpers ----


def rfc3339(s):
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", s), s
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)


async def eventually(check, timeout=10):
    """Calls check() (a coroutine function returning a truthy value or None) until it returns
    something truthy; returns that."""
    deadline = time.monotonic() + timeout
    while True:
        r = await check()
        if r:
            return r
        assert time.monotonic() < deadline, "timed out waiting for a condition"
        await asyncio.sleep(0.1)


# ---- metrics ----


def test_metrics_after_two_clients_chat(make_server, workdir):
    port, extra = admin_config(workdir, "m")
    s = make_server(extra)
    s.add_user("alice", "alice-pw")
    s.add_user("bob", "bob-pw")
    s.start()
    api = Api(port).wait_up()

    types, before = api.metrics()
    for family, t in {
        "entente_build_info": "gauge", "entente_c2s_sessions": "gauge",
        "entente_s2s_links": "gauge", "entente_stanzas_total": "counter",
        "entente_s2s_bounces_total": "counter", "entente_s2s_handshake_failures_total": "counter",
        "process_start_time_seconds": "gauge",
    }.items():
        assert types.get(family) == t, (family, types)
    # SIP is off: no SIP families.
    assert not [f for f in types if f.startswith("entente_sip_")], types
    assert value(before, "entente_c2s_sessions") == 0
    assert value(before, "entente_s2s_links", direction="in") == 0
    assert value(before, "entente_s2s_links", direction="out") == 0
    (build,) = [k for k in before if k[0] == "entente_build_info"]
    assert dict(build[1])["version"] and before[build] == 1
    assert abs(value(before, "process_start_time_seconds") - time.time()) < 300
    for kind in ("message", "presence", "iq"):
        for source in ("c2s", "s2s"):
            assert value(before, "entente_stanzas_total", kind=kind, source=source) is not None

    n = 5

    async def chat():
        a = await login(s, "alice", "alice-pw")
        b = await login(s, "bob", "bob-pw")
        for i in range(n):
            a.send_message(mto="bob@localhost", mbody=f"a{i}", mtype="chat")
            b.send_message(mto="alice@localhost", mbody=f"b{i}", mtype="chat")
        for i in range(n):
            await next_matching(b.messages, lambda m, i=i: m["body"] == f"a{i}")
            await next_matching(a.messages, lambda m, i=i: m["body"] == f"b{i}")
        _, during = await asyncio.to_thread(api.metrics)
        assert value(during, "entente_c2s_sessions") == 2
        # The CLI lists the sessions and disconnects one.
        lines = (await acli(s, "sessions")).stdout.splitlines()
        assert sorted(l.split("\t")[0] for l in lines) == sorted([str(a.boundjid), str(b.boundjid)]), lines
        await acli(s, "kick", str(b.boundjid))
        await asyncio.wait_for(b.disconnected_evt.wait(), 10)
        r = await acli(s, "kick", str(b.boundjid), check=False)
        assert r.returncode != 0 and "no session" in r.stderr, r.stderr
        await a.logout()

    asyncio.run(chat())
    _, after = api.metrics()

    def grew(kind, source="c2s"):
        k = dict(kind=kind, source=source)
        return value(after, "entente_stanzas_total", **k) - value(before, "entente_stanzas_total", **k)

    assert grew("message") >= 2 * n
    assert grew("presence") >= 2  # initial presence of each client
    assert grew("iq") >= 2  # roster gets
    assert grew("message", "s2s") == 0
    assert value(after, "process_start_time_seconds") == value(before, "process_start_time_seconds")

    # The CLI prints the same page.
    out = cli(s, "metrics").stdout
    types2, cli_samples = parse_exposition(out)
    assert types2 == types
    assert value(cli_samples, "entente_stanzas_total", kind="message", source="c2s") >= 2 * n


def test_metrics_token_required_or_not(make_server, workdir):
    port, extra = admin_config(workdir, "strict")
    strict = make_server(extra, sub="strict")
    strict.start()
    api = Api(port).wait_up()
    assert api.request("GET", "/metrics", auth=False)[0] == 401
    st, headers, _ = api.request("GET", "/metrics", token="wrong")
    assert st == 401 and headers["WWW-Authenticate"] == "Bearer"
    api.metrics()

    port2, extra2 = admin_config(workdir, "open", require_token=False)
    open_ = make_server(extra2, sub="open")
    open_.start()
    api2 = Api(port2).wait_up()
    types, _ = api2.metrics(auth=False)
    assert "entente_c2s_sessions" in types
    # Only /metrics is opened: the rest of the API still needs the token.
    assert api2.json("GET", "/api/users", auth=False)[0] == 401
    assert api2.json("GET", "/api/federation/links", auth=False)[0] == 401
    assert api2.json("GET", "/api/federation/links")[0] == 200

    # The CLI without a token: a clear error from the strict server, the page from the open one.
    bare = strict.workdir / "no-token.toml"
    bare.write_text(re.sub(r'token_file = ".*"\n', "", strict.config.read_text()).replace(
        "enabled = true\nlisten", "listen"))
    r = subprocess.run([str(BIN), "--config", str(bare), "admin", "--url", api.base, "metrics"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "401" in r.stderr and "token" in r.stderr, r.stderr
    r = subprocess.run([str(BIN), "--config", str(bare), "admin", "--url", api2.base, "metrics"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "entente_c2s_sessions" in r.stdout, r.stderr
    # An explicit --token-file works against the strict server.
    r = subprocess.run([str(BIN), "--config", str(bare), "admin", "--url", api.base,
                        "--token-file", str(workdir / "strict-token"), "links"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "no federation links" in r.stdout, r.stderr


# ---- federation links ----


def start_pair(make_server, workdir, test_ca, *, a_s2s=""):
    pa, pb = free_port(), free_port()
    a_port, a_admin = admin_config(workdir, "a")
    b_port, b_admin = admin_config(workdir, "b")
    a = federating(make_server, "a.test", ca=test_ca, s2s_port=pa, s2s=a_s2s + a_admin,
                   peers=[{"domain": "b.test", "routes": [f"127.0.0.1:{pb}"]}])
    b = federating(make_server, "b.test", ca=test_ca, s2s_port=pb, s2s=b_admin,
                   users=(("bob", "bob-pw"),),
                   peers=[{"domain": "a.test", "routes": [f"127.0.0.1:{pa}"]}])
    return a, Api(a_port).wait_up(), b, Api(b_port).wait_up()


def by_dir(links, peer="b.test"):
    return {l["direction"]: l for l in links if l["peer"] == peer}


def test_links_listed_then_drained_without_loss(make_server, workdir, test_ca):
    a, api_a, b, api_b = start_pair(make_server, workdir, test_ca)
    assert api_a.json("GET", "/api/federation/links") == (200, {"links": [], "sip_connections": []})

    async def go():
        alice = await login(a, "alice", "alice-pw")
        bob = await login(b, "bob", "bob-pw")
        alice.send_message(mto="bob@b.test", mbody="hello b", mtype="chat")
        await next_matching(bob.messages, lambda m: m["body"] == "hello b")
        bob.send_message(mto="alice@a.test", mbody="hello a", mtype="chat")
        await next_matching(alice.messages, lambda m: m["body"] == "hello a")

        async def both_up():
            _, body = await api_a.ajson("GET", "/api/federation/links")
            d = by_dir(body["links"])
            ok = {x.get("state") for x in d.values()} == {"established"} and len(d) == 2
            return d if ok else None

        links = await eventually(both_up)
        out, inb = links["out"], links["in"]
        for l in (out, inb):
            assert l["local"] == "a.test" and l["auth"] == "sasl-external" and l["tls"] is True, l
            since = rfc3339(l["since"])
            assert abs((datetime.datetime.now(datetime.timezone.utc) - since).total_seconds()) < 120
        assert out["stanzas_out"] >= 1 and out["queued"] == 0 and out["stanzas_in"] == 0, out
        assert inb["stanzas_in"] >= 1 and inb["stanzas_out"] == 0, inb
        _, body_b = await api_b.ajson("GET", "/api/federation/links")
        assert set(by_dir(body_b["links"], "a.test")) == {"in", "out"}, body_b

        table = (await acli(a, "links")).stdout
        assert re.search(r"^b\.test\s+in\s+established\s+sasl-external\s+yes\s", table, re.M), table
        assert re.search(r"^b\.test\s+out\s+established\s+sasl-external\s+yes\s", table, re.M), table
        as_json = json.loads((await acli(a, "links", "--json")).stdout)
        assert {l["direction"] for l in as_json["links"]} == {"in", "out"}

        _, m = await asyncio.to_thread(api_a.metrics)
        assert value(m, "entente_s2s_links", direction="in") == 1
        assert value(m, "entente_s2s_links", direction="out") == 1
        assert value(m, "entente_stanzas_total", kind="message", source="s2s") >= 1
        assert value(m, "entente_s2s_stanzas_sent_total", kind="message") >= 1

        # A burst from alice with a drain in its middle (through the CLI), then more: bob gets
        # every message, alice no error.
        bodies = [f"burst {i}" for i in range(40)]
        for t in bodies[:20]:
            alice.send_message(mto="bob@b.test", mbody=t, mtype="chat")
        t0 = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        r = await acli(a, "drain", "b.test", "--json")
        drained = json.loads(r.stdout)
        assert drained["peer"] == "b.test"
        dirs = {d["link"]["direction"]: d for d in drained["drained"]}
        assert set(dirs) == {"in", "out"}, drained
        assert all(d["closed"] for d in drained["drained"]), drained
        assert dirs["out"]["bounced"] == 0, drained
        for t in bodies[20:]:
            alice.send_message(mto="bob@b.test", mbody=t, mtype="chat")
        got = set()
        while got != set(bodies):
            m = await next_matching(bob.messages, lambda m: m["body"].startswith("burst"), timeout=15)
            got.add(m["body"])
        assert alice.errors.empty()

        # The link came back (a new one, established after the drain), and bob's answer comes
        # through too, though a.test closed b.test's stream to it.
        async def new_out():
            _, body = await api_a.ajson("GET", "/api/federation/links")
            o = by_dir(body["links"]).get("out")
            return o if o and o["state"] == "established" else None

        again = await eventually(new_out)
        assert rfc3339(again["since"]) >= t0, (again, t0)
        bob.send_message(mto="alice@a.test", mbody="after the drain", mtype="chat")
        await next_matching(alice.messages, lambda m: m["body"] == "after the drain")
        assert bob.errors.empty()
        await alice.logout()
        await bob.logout()

    asyncio.run(go())
    log_a, log_b = a.log(), b.log()
    assert "federation link drained by an administrator" in log_a
    assert "inbound federation stream drained by an administrator" in log_a
    # b.test saw its stream to a.test closed in order (not broken).
    assert re.search(r"federation link closed.*the peer closed the stream", log_b), log_b[-3000:]
    assert len(re.findall(r"remote=b\.test\}: entente_server::s2s: federation link up", log_a)) >= 2

    # Nothing open with other domains: 404 (API and CLI); not a domain: 400.
    st, body = api_a.json("POST", "/api/federation/links/nowhere.test/drain")
    assert st == 404 and "nowhere.test" in body["error"], body
    r = cli(a, "drain", "nowhere.test", check=False)
    assert r.returncode != 0 and "404" in r.stderr, r.stderr
    st, body = api_a.json("POST", "/api/federation/links/bad%20domain/drain")
    assert st == 400 and body["error"].startswith("domain"), body
    assert api_a.json("GET", "/api/federation/links/b.test/drain")[0] == 405
    assert api_a.json("POST", "/api/federation/links/b.test/drain", auth=False)[0] == 401

    st, doc = api_a.json("GET", "/openapi.json")
    assert {"/metrics", "/api/federation/links", "/api/federation/links/{domain}/drain"} <= set(doc["paths"])
    assert "FederationLink" in doc["components"]["schemas"]


def test_draining_a_link_that_cannot_connect_bounces_its_queue(make_server, workdir):
    dead = free_port()  # nothing listens there
    port, admin_extra = admin_config(workdir, "a")
    a = federating(make_server, "a.test", s2s="retry_timeout_secs = 120\n" + admin_extra,
                   peers=[{"domain": "b.test", "routes": [f"127.0.0.1:{dead}"]}])
    api = Api(port).wait_up()

    async def go():
        alice = await login(a, "alice", "alice-pw")
        alice.send_message(mto="bob@b.test", mbody="into the void", mtype="chat")

        async def waiting():
            _, body = await api.ajson("GET", "/api/federation/links")
            o = by_dir(body["links"]).get("out")
            return o if o and o["queued"] == 1 else None

        link = await eventually(waiting)
        assert link["state"] == "connecting" and link["auth"] == "none" and not link["tls"], link
        st, body = await api.ajson("POST", "/api/federation/links/b.test/drain")
        assert st == 200, body
        (d,) = body["drained"]
        assert d["link"]["direction"] == "out" and d["bounced"] == 1 and d["flushed"] == 0, d
        assert d["closed"] is True, d
        err = await next_matching(alice.errors, lambda m: m["from"].bare == "bob@b.test")
        assert error_condition(err) == "remote-server-not-found", err
        assert "administrator" in err["error"]["text"], err
        assert (await api.ajson("GET", "/api/federation/links"))[1] == {"links": [], "sip_connections": []}
        await alice.logout()

    asyncio.run(go())
    _, m = api.metrics()
    assert value(m, "entente_s2s_bounces_total", reason="drained") == 1
    assert value(m, "entente_s2s_handshake_failures_total", reason="connect") >= 1


def test_sip_metrics(make_server, workdir):
    """With [sip] enabled, the SIP gauges and counters appear: a TCP connection is counted, a
    malformed request answered 400 is counted."""
    import socket

    from sip_helpers import sip_request, status_line

    ip = "127.0.0.70"
    with socket.socket() as probe:
        probe.bind((ip, 0))
        sip_port = probe.getsockname()[1]
    port, extra = admin_config(workdir, "sip")
    s = make_server(extra + f'\n[sip]\nenabled = true\nlisten_tcp = ["{ip}:{sip_port}"]\n')
    s.start()
    api = Api(port).wait_up()
    types, before = api.metrics()
    for family, t in {
        "entente_sip_connections": "gauge", "entente_sip_bad_requests_total": "counter",
        "entente_sip_unparseable_responses_total": "counter",
        "entente_sip_rate_limited_total": "counter", "entente_sip_dropped_requests_total": "counter",
    }.items():
        assert types.get(family) == t, (family, types)
    assert value(before, "entente_sip_connections") == 0
    assert value(before, "entente_sip_bad_requests_total") == 0

    with socket.create_connection((ip, sip_port), timeout=10) as c:
        local = c.getsockname()
        c.sendall(sip_request("OPTIONS", ip, sip_port, "TCP", local, branch="m1", call_id="m1@x",
                              cseq="x OPTIONS"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(4096)
            assert chunk, data
            data += chunk
        assert status_line(data) == "SIP/2.0 400 Bad CSeq", data
        _, during = api.metrics()
        assert value(during, "entente_sip_connections") == 1
        assert value(during, "entente_sip_bad_requests_total") == 1


def test_sip_federation_metrics(make_server, workdir):
    """The SIP gateway's gauges (subscriptions, IM sessions) and its refusal counters."""
    from sip_peer import SipPeer

    ip, peer_ip = "127.0.0.71", "127.0.0.72"
    with socket_port(ip) as sip_port, SipPeer("lync.test", peer_ip) as peer:
        port, extra = admin_config(workdir, "sipfed")
        s = make_server(extra + sip_config(tcp=f"{ip}:{sip_port}", policy="allow",
                                           peers=[tcp_peer("lync.test", "lync", peer_ip, peer.port)]),
                        domain="a.test")
        s.add_user("alice", "pw")
        s.start()
        api = Api(port).wait_up()
        types, before = api.metrics()
        assert types.get("entente_sip_subscriptions") == "gauge", types
        assert value(before, "entente_sip_subscriptions", direction="in") == 0
        peer.connect(ip, sip_port)
        r = peer.request("SUBSCRIBE", "sip:alice@a.test", from_uri="sip:carol@lync.test",
                         to_uri="sip:alice@a.test", headers=[("Event", "presence"), ("Expires", "600")])
        assert r.status == 202, r.summary()
        r = peer.request("MESSAGE", "sip:alice@a.test", from_uri="sip:x@elsewhere.test",
                         to_uri="sip:alice@a.test", body="hi")
        assert r.status == 403
        peer.wait_request("NOTIFY", timeout=10)
        _, after = api.metrics()
        assert value(after, "entente_sip_subscriptions", direction="in") == 1
        assert value(after, "entente_sip_federation_requests_total", outcome="accepted") == 1
        assert value(after, "entente_sip_federation_requests_total", outcome="domain-not-permitted") == 1
        assert value(after, "entente_offline_messages") == 0
        st, links = api.json("GET", "/api/federation/links")
        assert st == 200 and links["links"] == [], links
        conns = links["sip_connections"]
        assert [(c["transport"], c["direction"]) for c in conns if c["remote"].startswith(peer_ip + ":")] \
            and all(c["transport"] in ("tcp", "tls") and c["direction"] in ("in", "out") for c in conns), conns
        rfc3339(conns[0]["since"])
        st, doms = api.json("GET", "/api/federation/domains")
        assert st == 200, doms
        assert doms["sip_enabled"] is True
        assert doms["domains"] == [{
            "domain": "lync.test", "protocol": "sip", "profile": "lync", "transport": "tcp",
            "mutual_tls": False, "routes": [f"tcp://{peer_ip}:{peer.port}"],
            "source_addrs": [peer_ip], "im": "session", "source": "config"}]
        out = cli(s, "domains").stdout
        assert "lync.test\tsip\tprofile=lync\ttransport=tcp mutual_tls=false" in out, out


class socket_port:
    """A free TCP port on `ip` (context manager, for symmetry with the SipPeer)."""

    def __init__(self, ip):
        self.ip = ip

    def __enter__(self):
        import socket
        with socket.socket() as probe:
            probe.bind((self.ip, 0))
            return probe.getsockname()[1]

    def __exit__(self, *exc):
        return False
