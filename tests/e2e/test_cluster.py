"""A cluster of three Entente nodes serving one domain (docs/cluster.md).

Real engines only: a fresh database on the PostgreSQL server of ENTENTE_TEST_PG_URL (pg_url), a
private nats-server (make_nats), and three `entente serve` processes, each with its own loopback
address (127.0.0.131-133) and data directory, sharing the database and the NATS server. Clients
on different nodes subscribe to each other, exchange messages and presence (broadcasts, and
probes answered by another node on login); then one node is SIGKILLed while messages flow: the
watchers of its users see them go unavailable within seconds, messages sent to them afterwards go
to offline storage and arrive when they log in on another node, and every message the senders
sent is accounted for (received live, received from offline storage, or bounced; a message in
flight at the kill may arrive both live and from offline storage, never not at all).
"""
import asyncio
import json
import signal
import socket
import time
import urllib.request

import pytest

from cluster_helpers import ClusterNode, login, stop_nodes
from conftest import EntenteServer, free_port
from xmpp_client import (
    Client,
    avail_from,
    befriend,
    delay_stamp,
    next_matching,
    nothing_matching,
    sub_from,
    unavail_from,
)

DOMAIN = "localhost"
A, B, C, D = (f"{u}@{DOMAIN}" for u in ("alice", "bob", "carol", "dave"))
USERS = ("alice", "bob", "carol", "dave")
NATS_IP = "127.0.0.130"
NODE_IPS = ("127.0.0.131", "127.0.0.132", "127.0.0.133")


def start_nodes(workdir, pg_url, nats_url, request, domain=DOMAIN, extra=lambda i, ip: ""):
    """Three nodes, started one after the other (the first creates the schema and the shared
    dialback secret), once each has heard of the two others."""
    nodes = []
    for i, ip in enumerate(NODE_IPS, 1):
        d = workdir / f"n{i}"
        d.mkdir()
        nodes.append(ClusterNode(d, ip, f"n{i}", pg_url, nats_url, domain, extra(i, ip)))
    request.addfinalizer(lambda: stop_nodes(nodes, request))
    for u in USERS:
        nodes[0].add_user(u, f"{u}-pw")
    for n in nodes:
        n.start()
    # Heartbeats are sent every second.
    deadline = time.time() + 10
    while time.time() < deadline and any(n.peers_seen() < 2 for n in nodes):
        time.sleep(0.1)
    assert all(n.peers_seen() >= 2 for n in nodes), [n.peers_seen() for n in nodes]
    return nodes


@pytest.fixture
def cluster(workdir, pg_url, make_nats, request):
    nats = make_nats(NATS_IP)
    return start_nodes(workdir, pg_url, nats.url, request)


def test_three_nodes_route_presence_and_survive_a_killed_node(cluster, pg_url):
    n1, n2, n3 = cluster

    async def scenario():
        # alice on n1, bob on n2, carol on n3, dave on n2.
        a = await login(n1, "alice")
        b = await login(n2, "bob")
        c = await login(n3, "carol")
        d = await login(n2, "dave")
        # Subscriptions across nodes: requests, answers, and the presence that follows them.
        await befriend(a, b)
        await befriend(a, c)
        await befriend(c, d)

        # Messages both ways between nodes.
        a.send_message(mto=B, mbody="n1 to n2", mtype="chat")
        assert (await next_matching(b.messages))["body"] == "n1 to n2"
        b.send_message(mto=A, mbody="n2 to n1", mtype="chat")
        assert (await next_matching(a.messages))["body"] == "n2 to n1"
        c.send_message(mto=f"{A}/test", mbody="to a full JID on n1", mtype="chat")
        m = await next_matching(a.messages)
        assert m["body"] == "to a full JID on n1" and m["from"] == f"{C}/test"

        # A presence broadcast from n3 reaches watchers on n1 and n2.
        c.send_presence(pshow="away", pstatus="lunch")
        for w in (a, d):
            p = await next_matching(w.presences, avail_from(C))
            assert p["show"] == "away" and p["status"] == "lunch"

        # bob leaves n2 (alice on n1 sees it) and comes back on n3: alice sees him arrive, and
        # the probes of his login are answered for alice (n1) with her current presence.
        await b.logout()
        await next_matching(a.presences, unavail_from(B))
        a.send_presence(pstatus="working")
        await next_matching(a.presences, avail_from(A))
        b = await login(n3, "bob")
        await next_matching(a.presences, avail_from(B))
        p = await next_matching(b.presences, avail_from(A))
        assert p["status"] == "working"
        # The same user on two nodes: a message to the bare JID reaches the higher priority.
        b2 = Client(n1, "bob", "bob-pw", resource="second", priority=5)
        await b2.login()
        # Once alice has its presence, the server has it too (login does not wait for that).
        await next_matching(a.presences, avail_from(f"{B}/second"))
        a.send_message(mto=B, mbody="to bob's best resource", mtype="chat")
        assert (await next_matching(b2.messages))["body"] == "to bob's best resource"
        await nothing_matching(b.messages, wait=0.5)
        await b2.logout()
        await next_matching(a.presences, unavail_from(f"{B}/second"))

        # Traffic: alice (n1) writes to carol (n3), dave (n2) writes to alice (n1), every 50 ms.
        sent_to_carol, sent_to_alice = [], []
        stop = asyncio.Event()

        async def writer(client, to, log, prefix):
            i = 0
            while not stop.is_set():
                body = f"{prefix} {i}"
                client.send_message(mto=to, mbody=body, mtype="chat")
                log.append(body)
                i += 1
                await asyncio.sleep(0.05)

        t1 = asyncio.ensure_future(writer(a, C, sent_to_carol, "a2c"))
        t2 = asyncio.ensure_future(writer(d, A, sent_to_alice, "d2a"))
        await asyncio.sleep(1.5)

        # n3 (carol and bob) dies without a word.
        killed_at = time.monotonic()
        n3.kill()
        # Their watchers on n1 (alice) and n2 (dave) are told within seconds.
        gone = set()
        while gone != {C, B}:
            p = await next_matching(
                a.presences, lambda p: p["type"] == "unavailable", timeout=10
            )
            gone.add(p["from"].bare)
        await next_matching(d.presences, unavail_from(C), timeout=10)
        noticed = time.monotonic() - killed_at
        assert noticed < 8, f"unavailable took {noticed:.1f} s"
        # Traffic keeps flowing between the survivors, and to carol's offline storage.
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(t1, t2)
        await asyncio.sleep(0.5)

        # What carol received live before the kill.
        live = []
        while not c.messages.empty():
            live.append(c.messages.get_nowait()["body"])
        bounced = []
        while not a.errors.empty():
            bounced.append(a.errors.get_nowait()["body"])
        # dave's messages to alice all arrived, in order.
        got = []
        while len(got) < len(sent_to_alice):
            m = await next_matching(a.messages, lambda m: m["body"].startswith("d2a "))
            got.append(m["body"])
        assert got == sent_to_alice

        # carol logs in again, on n2: the rest arrives from offline storage, stamped.
        c2 = await login(n2, "carol")
        offline = []
        while True:
            try:
                m = await next_matching(
                    c2.messages, lambda m: m["body"].startswith("a2c "), timeout=1.5
                )
            except AssertionError:
                break
            assert delay_stamp(m), m
            offline.append(m["body"])
        accounted = live + offline + bounced
        lost = sorted(set(sent_to_carol) - set(accounted))
        assert not lost, f"lost: {lost}"
        # Each was delivered once, except a message in flight at the kill: the dead node may
        # have written it to carol and died before confirming, so it was stored offline too
        # (at-least-once). Nothing else is duplicated.
        twice = sorted(x for x in set(accounted) if accounted.count(x) > 1)
        assert len(twice) <= 2 and all(x in live and x in offline for x in twice), twice
        assert len(accounted) == len(sent_to_carol) + len(twice)
        assert offline, "no message went to offline storage after the kill"
        # alice on n1 sees carol back (now on n2), and carol gets alice's presence by probe.
        await next_matching(a.presences, avail_from(C))
        await next_matching(c2.presences, avail_from(A))
        # A message to carol now reaches n2.
        a.send_message(mto=C, mbody="welcome back", mtype="chat")
        assert (await next_matching(c2.messages, lambda m: m["body"] == "welcome back"))
        for x in (a, d, c2):
            await x.logout()

    asyncio.run(scenario())


def test_cluster_needs_a_shared_database(workdir):
    s = EntenteServer(
        workdir,
        extra_config='\n[cluster]\nnode_id = "n1"\nnats_url = "nats://127.0.0.130:4222"\n',
    )
    r = s.cli("user", "list", check=False)
    assert r.returncode != 0
    assert "database.url" in r.stderr and "postgres" in r.stderr, r.stderr


def test_node_refuses_to_start_without_nats(workdir, pg_url):
    # Nothing listens on this port: the node says so and exits.
    with socket.socket() as s:
        s.bind((NATS_IP, 0))
        port = s.getsockname()[1]
    n = ClusterNode(workdir, NODE_IPS[0], "n1", pg_url, f"nats://{NATS_IP}:{port}")
    with pytest.raises(AssertionError) as e:
        n.start()
    assert "cluster.nats_url" in str(e.value) or "cluster.nats_url" in n.log(), n.log()[-2000:]


P_IP = "127.0.0.134"
P_DOMAIN = "p1.test"
ROMEO = f"romeo@{P_DOMAIN}"


def test_prosody_reaches_users_on_every_node(workdir, pg_url, make_nats, make_prosody, request):
    """A real Prosody (p1.test) federates with the cluster (c.test) through n1 only (its static
    route); alice is on n2 and bob on n3. Stanzas from Prosody reach them through n1 and NATS;
    their answers leave through their own nodes, whose dialback keys Prosody verifies with n1
    (the shared dialback secret). When n3 dies, Prosody's romeo is told bob is unavailable."""
    nats = make_nats(NATS_IP)
    s2s_ports = {ip: free_port(ip) for ip in NODE_IPS}

    def s2s(i, ip):
        return f"""
[s2s]
enabled = true
listen = ["{ip}:{s2s_ports[ip]}"]
system_roots = false
connect_timeout_secs = 5

[[s2s.peer]]
domain = "{P_DOMAIN}"
routes = ["{P_IP}:5269"]
"""

    n1, n2, n3 = start_nodes(workdir, pg_url, nats.url, request, domain="c.test", extra=s2s)
    p = make_prosody(
        P_DOMAIN,
        P_IP,
        static_routes={"c.test": (n1.host, s2s_ports[n1.host])},
        users={"romeo": "romeo-pw"},
    )
    alice_jid, bob_jid = "alice@c.test", "bob@c.test"

    async def scenario():
        a = await login(n2, "alice")
        b = await login(n3, "bob")
        r = await Client(p, "romeo", "romeo-pw").login()
        for user, jid in ((a, alice_jid), (b, bob_jid)):
            # Prosody → n1 → the user's node; the answer leaves through the user's node.
            r.send_presence_subscription(pto=jid)
            req = await next_matching(user.subscriptions, sub_from("subscribe", ROMEO))
            assert req["to"].bare == jid
            user.send_presence(pto=ROMEO, ptype="subscribed")
            await next_matching(r.subscriptions, sub_from("subscribed", jid))
            await next_matching(r.presences, avail_from(jid))
        r.send_message(mto=alice_jid, mbody="to n2 through n1", mtype="chat")
        assert (await next_matching(a.messages))["body"] == "to n2 through n1"
        r.send_message(mto=f"{bob_jid}/test", mbody="to n3 through n1", mtype="chat")
        assert (await next_matching(b.messages))["body"] == "to n3 through n1"
        a.send_message(mto=ROMEO, mbody="from n2", mtype="chat")
        b.send_message(mto=ROMEO, mbody="from n3", mtype="chat")
        got = {(await next_matching(r.messages))["body"] for _ in range(2)}
        assert got == {"from n2", "from n3"}
        # n3 dies: a surviving node tells romeo (federated watcher) that bob is unavailable.
        n3.kill()
        await next_matching(r.presences, unavail_from(bob_jid), timeout=15)
        # alice (n2) still talks to romeo.
        a.send_message(mto=ROMEO, mbody="still here", mtype="chat")
        assert (await next_matching(r.messages))["body"] == "still here"
        for x in (a, r):
            await x.logout()

    asyncio.run(scenario())


TOKEN = "cluster-admin-token-0123456789"


def admin_status(node):
    """GET /api/cluster on a node started with `admin_extra`."""
    req = urllib.request.Request(f"http://{node.host}:{node.admin_port}/api/cluster")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


def metrics_text(node):
    req = urllib.request.Request(f"http://{node.host}:{node.admin_port}/metrics")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read().decode()


def test_a_paused_node_is_declared_dead_then_comes_back(workdir, pg_url, make_nats, request):
    """n3 stops (SIGSTOP) for longer than the 3 s liveness limit: alice (n1) sees carol (n3)
    unavailable, and n1's admin API no longer lists n3; once n3 runs again (SIGCONT) and is
    heard from, alice sees carol available again without carol doing anything, and messages
    reach her again."""
    (workdir / "token").write_text(TOKEN + "\n")
    ports = {ip: free_port(ip) for ip in NODE_IPS}

    def admin(i, ip):
        return (f'\n[admin]\nenabled = true\nlisten = "{ip}:{ports[ip]}"\n'
                f'token_file = "{workdir / "token"}"\n')

    nats = make_nats(NATS_IP)
    n1, n2, n3 = start_nodes(workdir, pg_url, nats.url, request, extra=admin)
    for n in (n1, n2, n3):
        n.admin_port = ports[n.host]

    async def scenario():
        a = await login(n1, "alice")
        c = await login(n3, "carol")
        await befriend(a, c)
        st = admin_status(n1)
        assert st["enabled"] and st["node_id"] == "n1" and st["sessions"] == 1, st
        assert st["peers"] == [{"node_id": "n2", "sessions": 0}, {"node_id": "n3", "sessions": 1}]
        n3.proc.send_signal(signal.SIGSTOP)
        try:
            await next_matching(a.presences, unavail_from(C), timeout=10)
            assert [p["node_id"] for p in admin_status(n1)["peers"]] == ["n2"]
            assert "entente_cluster_nodes 2" in metrics_text(n1)
        finally:
            n3.proc.send_signal(signal.SIGCONT)
        await next_matching(a.presences, avail_from(C), timeout=10)
        assert [p["node_id"] for p in admin_status(n1)["peers"]] == ["n2", "n3"]
        assert "entente_cluster_nodes 3" in metrics_text(n1)
        out = n1.cli("admin", "cluster").stdout.splitlines()
        assert out == ["n1\tthis node\tsessions=1", "n2\talive\tsessions=0",
                       "n3\talive\tsessions=1"], out
        a.send_message(mto=C, mbody="you are back", mtype="chat")
        await next_matching(c.messages, lambda m: m["body"] == "you are back")
        for x in (a, c):
            await x.logout()

    asyncio.run(scenario())


def test_a_stopped_node_says_goodbye_and_a_restarted_one_rejoins(cluster):
    """n2 stops cleanly (SIGTERM): its users' watchers hear unavailable from the node itself,
    before the liveness limit would have declared it dead. Restarted with the same node_id
    (a new instance), it rejoins: a user logging in there is seen by, and sees, the others."""
    n1, n2, n3 = cluster

    async def scenario():
        a = await login(n1, "alice")
        b = await login(n2, "bob")
        await befriend(a, b)
        t = time.monotonic()
        n2.stop()
        await next_matching(a.presences, unavail_from(B), timeout=10)
        took = time.monotonic() - t
        assert took < 2.5, f"unavailable after {took:.1f} s: the stopping node did not send it"
        since = len(n2.log())
        n2.start()
        deadline = time.time() + 10
        while time.time() < deadline and n2.peers_seen(since) < 2:
            await asyncio.sleep(0.1)
        assert n2.peers_seen(since) >= 2
        b = await login(n2, "bob")
        await next_matching(a.presences, avail_from(B))
        await next_matching(b.presences, avail_from(A))
        b.send_message(mto=A, mbody="back on n2", mtype="chat")
        assert (await next_matching(a.messages))["body"] == "back on n2"
        for x in (a, b):
            await x.logout()

    asyncio.run(scenario())
