"""XMPP federation on a subset of the nodes of a cluster (docs/cluster.md, issue #10 item 3).

Three nodes serve c.test (a fresh PostgreSQL database from pg_url, a private nats-server on
127.0.0.140, nodes on 127.0.0.141-143): n1 and n2 federate, n3 has `[cluster] federation =
false`, so it opens no s2s listener and no s2s connection. A real Prosody (p1.test, 127.0.0.144)
finds c.test through SRV records naming n1, then n2 (the order it tries them in). Users on n3
befriend Prosody users and chat: their stanzas go to n1/n2 through NATS and leave from there;
Prosody's come in through n1 and reach n3. Then the federation node that carries alice's
stanzas is SIGKILLed while she writes every 50 ms: her stanzas leave through the other one,
and every message she sent reaches romeo or comes back to her as an error (none is lost; one
in flight at the kill may arrive twice). With no federation node left, a message comes back as
remote-server-timeout after the relay's patience. `entente dns-records` names n1 and n2.
"""
import asyncio
import re
import socket
import time

from conftest import free_port
from cluster_helpers import ClusterNode, login, stop_nodes
from xmpp_client import Client, avail_from, befriend, error_condition, next_matching

DOMAIN = "c.test"
NATS_IP = "127.0.0.140"
NODE_IPS = ("127.0.0.141", "127.0.0.142", "127.0.0.143")
P_IP = "127.0.0.144"
P_DOMAIN = "p1.test"
ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
ROMEO, JULIET = f"romeo@{P_DOMAIN}", f"juliet@{P_DOMAIN}"


def taken_for(node, jid, since=0):
    """How many stanzas from `jid` this node took from another node for federation."""
    rx = re.compile(rf"from=\"?{re.escape(jid)}[/\" ]")
    return sum(1 for line in node.log()[since:].splitlines()
               if "taking a stanza relayed for federation" in line and rx.search(line))


def test_federation_through_a_subset_of_nodes(workdir, pg_url, make_nats, make_prosody, request):
    nats = make_nats(NATS_IP)
    s2s_ports = {ip: free_port(ip) for ip in NODE_IPS}
    fed_nodes = [f'"n{i}.{DOMAIN}:{s2s_ports[ip]}"' for i, ip in enumerate(NODE_IPS[:2], 1)]

    def extra(i, ip):
        return f"""federation = {"false" if i == 3 else "true"}
federation_nodes = [{", ".join(fed_nodes)}]

[s2s]
enabled = true
listen = ["{ip}:{s2s_ports[ip]}"]
system_roots = false
connect_timeout_secs = 5

[[s2s.peer]]
domain = "{P_DOMAIN}"
routes = ["{P_IP}:5269"]
"""

    nodes = []
    for i, ip in enumerate(NODE_IPS, 1):
        d = workdir / f"n{i}"
        d.mkdir()
        nodes.append(ClusterNode(d, ip, f"n{i}", pg_url, nats.url, DOMAIN, extra(i, ip)))
    request.addfinalizer(lambda: stop_nodes(nodes, request))
    n1, n2, n3 = nodes
    for u in ("alice", "bob"):
        n1.add_user(u, f"{u}-pw")
    for n in nodes:
        n.start()
    deadline = time.time() + 10
    while time.time() < deadline and any(n.peers_seen() < 2 for n in nodes):
        time.sleep(0.1)
    assert all(n.peers_seen() >= 2 for n in nodes), [n.peers_seen() for n in nodes]

    # n3 does not listen for federation; n1 and n2 do.
    for n in (n1, n2):
        socket.create_connection((n.host, s2s_ports[n.host]), timeout=2).close()
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex((n3.host, s2s_ports[n3.host])) != 0, "n3 listens for federation"

    # dns-records (from any node's configuration) names the federation nodes only.
    out = n3.cli("dns-records").stdout
    srv = [line for line in out.splitlines() if line.startswith("_xmpp-server.")]
    assert srv == [
        f"_xmpp-server._tcp.{DOMAIN}. 3600 IN SRV 10 50 {s2s_ports[NODE_IPS[0]]} n1.{DOMAIN}.",
        f"_xmpp-server._tcp.{DOMAIN}. 3600 IN SRV 10 50 {s2s_ports[NODE_IPS[1]]} n2.{DOMAIN}.",
    ], out

    p = make_prosody(
        P_DOMAIN,
        P_IP,
        static_routes={DOMAIN: [(n.host, s2s_ports[n.host]) for n in (n1, n2)]},
        users={"romeo": "romeo-pw", "juliet": "juliet-pw"},
    )

    async def scenario():
        a = await login(n3, "alice")
        b = await login(n3, "bob")
        r = await Client(p, "romeo", "romeo-pw").login()
        j = await Client(p, "juliet", "juliet-pw").login()
        # Subscriptions and presence both ways between n3 and Prosody.
        await befriend(a, r)
        await befriend(b, j)
        a.send_message(mto=ROMEO, mbody="from n3", mtype="chat")
        assert (await next_matching(r.messages))["body"] == "from n3"
        r.send_message(mto=ALICE, mbody="to n3", mtype="chat")
        assert (await next_matching(a.messages))["body"] == "to n3"
        b.send_message(mto=JULIET, mbody="bob from n3", mtype="chat")
        assert (await next_matching(j.messages))["body"] == "bob from n3"
        # Everything n3's users sent left through n1 or n2: n3 made no s2s connection.
        assert "federation link up" not in n3.log()
        assert taken_for(n1, ALICE) + taken_for(n2, ALICE) >= 3
        assert taken_for(n1, BOB) + taken_for(n2, BOB) >= 2

        # alice writes to romeo every 50 ms; the node carrying her stanzas is killed.
        sent = []
        stop = asyncio.Event()

        async def writer():
            i = 0
            while not stop.is_set():
                body = f"a2r {i}"
                a.send_message(mto=ROMEO, mbody=body, mtype="chat")
                sent.append(body)
                i += 1
                await asyncio.sleep(0.05)

        t = asyncio.ensure_future(writer())
        await asyncio.sleep(1.5)
        since = {n.node_id: len(n.log()) for n in (n1, n2)}
        await asyncio.sleep(0.5)
        counts = {n.node_id: taken_for(n, ALICE, since[n.node_id]) for n in (n1, n2)}
        # One node carries all of alice's stanzas (her order is kept).
        assert sorted(counts.values())[0] == 0 and max(counts.values()) > 0, counts
        carrier, other = (n1, n2) if counts["n1"] else (n2, n1)
        carrier.kill()
        await asyncio.sleep(3.0)
        stop.set()
        await t
        # The other node took over alice's stanzas.
        assert taken_for(other, ALICE, since[other.node_id]) > 0

        # Every message alice sent reached romeo or came back to her as an error.
        got, bounced = [], []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            while not r.messages.empty():
                m = r.messages.get_nowait()
                if m["body"].startswith("a2r "):
                    got.append(m["body"])
            while not a.errors.empty():
                bounced.append(a.errors.get_nowait()["body"])
            if set(sent) <= set(got) | set(bounced):
                break
            await asyncio.sleep(0.2)
        lost = sorted(set(sent) - set(got) - set(bounced), key=lambda x: int(x.split()[1]))
        assert not lost, f"lost: {lost} (got {len(got)}, bounced {len(bounced)} of {len(sent)})"
        print(f"carrier {carrier.node_id} {counts}; sent {len(sent)}, received {len(got)}, "
              f"bounced {len(bounced)}")
        # Nothing but a message in flight at the kill arrives twice.
        twice = sorted(x for x in set(got) if got.count(x) > 1)
        assert len(twice) <= 2, twice
        # Most went through: the failover bounced few, if any.
        assert len(set(got)) >= len(sent) - 5, (len(got), len(sent), bounced)

        # Prosody reaches n3's users through the surviving node, and presence still flows.
        r.send_message(mto=ALICE, mbody="after the kill", mtype="chat")
        m = await next_matching(a.messages, lambda m: m["body"] == "after the kill", timeout=30)
        assert m["from"].bare == ROMEO
        r.send_presence(pstatus="still here")
        p1 = await next_matching(a.presences, avail_from(ROMEO), timeout=15)
        while p1["status"] != "still here":
            p1 = await next_matching(a.presences, avail_from(ROMEO), timeout=15)
        a.send_presence(pstatus="me too")
        p2 = await next_matching(r.presences, avail_from(ALICE), timeout=15)
        while p2["status"] != "me too":
            p2 = await next_matching(r.presences, avail_from(ALICE), timeout=15)

        # No federation node left: alice's message comes back with an error after the relay's
        # patience (10 s), never dropped in silence.
        other.kill()
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        a.send_message(mto=ROMEO, mbody="nobody to carry this", mtype="chat")
        e = await next_matching(a.errors, lambda e: e["body"] == "nobody to carry this",
                                timeout=25)
        took = time.monotonic() - t0
        assert error_condition(e) == "remote-server-timeout", e
        assert 8 <= took <= 20, f"bounced after {took:.1f} s"
        for x in (a, b, r, j):
            await x.logout()

    asyncio.run(scenario())


def test_dns_records_of_a_cluster(workdir):
    """`entente dns-records` reads the configuration only (no database, no NATS): with
    `[cluster] federation_nodes` the server-to-server records name those nodes with their ports
    (direct TLS with this node's port); without, the domain, and a note; a bad entry is refused."""
    from conftest import EntenteServer

    def node(sub, cluster_extra, s2s_extra=""):
        d = workdir / sub
        d.mkdir()
        return EntenteServer(d, domain=DOMAIN, extra_config=(
            '\n[database]\nurl = "postgres://entente@127.0.0.140:1/none"\n'
            f'\n[cluster]\nnode_id = "n3"\nnats_url = "nats://127.0.0.140:4222"\n{cluster_extra}'
            f'\n[s2s]\nenabled = true\nlisten = ["127.0.0.143:5269"]\n{s2s_extra}'))

    out = node("a", 'federation = false\nfederation_nodes = ["x1.c.test", "x2.c.test:5999"]\n',
               'direct_tls_listen = ["127.0.0.143:5270"]\n').cli("dns-records").stdout
    lines = [x for x in out.splitlines() if not x.startswith(";")]
    assert [x for x in lines if "-server." in x] == [
        "_xmpp-server._tcp.c.test. 3600 IN SRV 10 50 5269 x1.c.test.",
        "_xmpp-server._tcp.c.test. 3600 IN SRV 10 50 5999 x2.c.test.",
        "_xmpps-server._tcp.c.test. 3600 IN SRV 10 50 5270 x1.c.test.",
        "_xmpps-server._tcp.c.test. 3600 IN SRV 10 50 5270 x2.c.test.",
    ], out

    out = node("b", "").cli("dns-records").stdout
    assert "cluster mode without [cluster] federation_nodes" in out, out
    assert "_xmpp-server._tcp.c.test. 3600 IN SRV 10 50 5269 c.test." in out, out

    r = node("c", 'federation_nodes = ["127.0.0.141:5269"]\n').cli("dns-records", check=False)
    assert r.returncode != 0 and "cluster.federation_nodes[0]" in r.stderr, r.stderr
