"""Federation and subdomains (the product specification's "Federation and Subdomains"): three
Ententes, cup.example.test, example.test (its parent) and foreign.example.test (a sibling),
federating by dialback through static routes. Every pair exchanges messages both ways, and the
users have the same names on each server, so a domain mistaken for local (because it is a
suffix or prefix of the local one) would deliver to the wrong user: that must never happen.
"""
import asyncio
import itertools

from conftest import free_port
from federation import federating, login
from xmpp_client import befriend, next_matching, nothing_matching

DOMAINS = ["cup.example.test", "example.test", "foreign.example.test"]
USERS = (("alice", "alice-pw"), ("user", "user-pw"))


def test_parent_child_and_sibling_domains(make_server):
    ports = {d: free_port() for d in DOMAINS}
    servers = {
        d: federating(make_server, d, s2s_port=ports[d], users=USERS, peers=[
            {"domain": o, "routes": [f"127.0.0.1:{ports[o]}"]} for o in DOMAINS if o != d
        ])
        for d in DOMAINS
    }

    async def go():
        clients = {}
        for d in DOMAINS:
            for u, pw in USERS:
                clients[(u, d)] = await login(servers[d], u, pw)

        # Every ordered pair of domains: alice@X writes to user@Y; only user@Y gets it.
        for src, dst in itertools.permutations(DOMAINS, 2):
            body = f"{src} -> {dst}"
            clients[("alice", src)].send_message(mto=f"user@{dst}", mbody=body, mtype="chat")
            m = await next_matching(clients[("user", dst)].messages, lambda x: x["body"] == body)
            assert m["from"] == f"alice@{src}/test", m
            assert m["to"].bare == f"user@{dst}", m
        # Nobody got a message meant for a same-named user on another domain.
        for (u, d), c in clients.items():
            wrong = lambda x, d=d: not x["body"].endswith(f"-> {d}")  # noqa: E731
            await nothing_matching(c.messages, wrong, wait=0.3)

        # Presence subscriptions between the parent and the child, and the sibling and the child.
        await befriend(clients[("alice", "cup.example.test")], clients[("alice", "example.test")])
        await befriend(clients[("alice", "foreign.example.test")],
                       clients[("alice", "cup.example.test")])
        for c in clients.values():
            await c.logout()

    asyncio.run(go())
    for d, s in servers.items():
        log = s.log()
        # Each server opened a link to each of the other two, and accepted one from each.
        for o in DOMAINS:
            if o == d:
                continue
            assert f"remote={o}" in log, (d, o)
            assert f"domain={o}" in log, (d, o)
