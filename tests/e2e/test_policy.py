"""Presence policy (the seed's "Presence Subscriptions and Blocking Levels") through real XMPP
clients: the admin default for undecided watchers, the user's own list (set with the CLI or by
answering requests), and polite blocking: a refused watcher is never told anything, and the
user is never asked.

Domain-level rules (with and without subdomains) are checked through `entente policy decide`,
which runs the same decision code against the same store the server uses.
"""
import asyncio

import pytest

from conftest import EntenteServer
from xmpp_client import Client, avail_from, next_matching, nothing_matching, sub_from

USERS = ("alice", "bob", "carol", "dave")


def start(workdir, default):
    s = EntenteServer(workdir, extra_config=f'\n[policy]\ndefault = "{default}"\n')
    for u in USERS:
        s.add_user(u, f"{u}-pw")
    return s


async def login(s, *names):
    return [await Client(s, n, f"{n}-pw").login() for n in names]


@pytest.mark.parametrize(
    "default, rule, expect",
    [
        # (admin default, alice's rule for bob, what happens to bob's request)
        ("ask", None, "ask"),
        ("allow", None, "allow"),
        ("deny", None, "polite"),
        ("allow", "deny", "polite"),      # the user's rule beats the admin default
        ("allow", "block", "polite"),
        ("deny", "allow", "allow"),
        ("ask", "allow", "allow"),
        ("ask", "*.localhost block", "polite"),  # a domain rule with subdomains covers the domain
        ("allow", "localhost deny", "polite"),    # a domain rule
    ],
)
def test_admin_default_and_user_rules(workdir, default, rule, expect):
    s = start(workdir, default)
    if rule:
        parts = rule.split()
        target, r = (parts[0], parts[1]) if len(parts) == 2 else ("bob@localhost", parts[0])
        s.cli("policy", "set", "alice", target, r)
    s.start()
    try:

        async def scenario():
            alice, bob = await login(s, "alice", "bob")
            bob.send_presence_subscription(pto="alice@localhost")
            if expect == "ask":
                await next_matching(alice.subscriptions, sub_from("subscribe", "bob@localhost"))
                await nothing_matching(bob.subscriptions, wait=0.5)
            elif expect == "allow":
                # Approved on alice's behalf: bob is told and gets her presence; alice is not
                # asked, but her roster shows the new item.
                await next_matching(bob.subscriptions, sub_from("subscribed", "alice@localhost"))
                await next_matching(bob.presences, avail_from("alice@localhost"))
                await nothing_matching(alice.subscriptions, wait=0.5)
                roster = await alice.get_roster()
                item = roster["roster"]["items"].get(bob.boundjid.bare)
                assert item is not None and item["subscription"] == "from", roster
            else:
                # Polite: nobody hears anything; bob never gets alice's presence.
                await nothing_matching(alice.subscriptions, wait=1.0)
                await nothing_matching(bob.subscriptions, wait=0.2)
                await nothing_matching(bob.presences, avail_from("alice@localhost"), wait=0.2)
                # Even a probe-triggering re-login reveals nothing.
                await alice.logout()
                (alice,) = await login(s, "alice")
                await nothing_matching(bob.presences, avail_from("alice@localhost"), wait=1.0)
            await alice.logout()
            await bob.logout()

        asyncio.run(scenario())
    finally:
        s.stop()


def test_answers_are_remembered(workdir):
    """A user's answer goes into their list: a denied watcher is not asked about again (and hears
    nothing), an approved one is approved again after it unsubscribed."""
    s = start(workdir, "ask")
    s.start()
    try:

        async def scenario():
            alice, bob, carol = await login(s, "alice", "bob", "carol")
            carol.send_presence_subscription(pto="alice@localhost")
            await next_matching(alice.subscriptions, sub_from("subscribe", "carol@localhost"))
            alice.send_presence(pto="carol@localhost", ptype="unsubscribed")
            await next_matching(carol.subscriptions, sub_from("unsubscribed", "alice@localhost"))
            # carol asks again: alice is not bothered, carol is not told.
            carol.send_presence_subscription(pto="alice@localhost")
            await nothing_matching(alice.subscriptions, wait=1.0)
            await nothing_matching(carol.subscriptions, wait=0.2)

            bob.send_presence_subscription(pto="alice@localhost")
            await next_matching(alice.subscriptions, sub_from("subscribe", "bob@localhost"))
            alice.send_presence(pto="bob@localhost", ptype="subscribed")
            await next_matching(bob.subscriptions, sub_from("subscribed", "alice@localhost"))
            bob.send_presence(pto="alice@localhost", ptype="unsubscribe")
            await asyncio.sleep(0.3)
            bob.send_presence_subscription(pto="alice@localhost")
            await next_matching(bob.subscriptions, sub_from("subscribed", "alice@localhost"))
            await nothing_matching(alice.subscriptions, sub_from("subscribe", "bob@localhost"), wait=0.5)
            for c in (alice, bob, carol):
                await c.logout()

        asyncio.run(scenario())
        shown = s.cli("policy", "show", "alice").stdout
        assert "deny   carol@localhost" in shown and "allow  bob@localhost" in shown, shown
    finally:
        s.stop()


def test_decide_matrix_with_domains(workdir):
    """Domain rules with and without subdomains, the admin federation rule, most specific wins."""
    s = EntenteServer(
        workdir,
        domain="cup.example.test",
        extra_config='\n[s2s]\npolicy = "denylist"\ndomains = ["evil.test"]\n',
    )
    s.add_user("alice", "pw")
    s.cli("policy", "set", "alice", "partner.test", "deny")
    s.cli("policy", "set", "alice", "*.example.test", "block")
    s.cli("policy", "set", "alice", "boss@sales.example.test", "allow")
    s.cli("policy", "set", "alice", "eve@evil.test", "allow")
    cases = {
        "x@partner.test": "PoliteDeny",           # the domain itself
        "x@sub.partner.test": "Ask",              # no subdomains for this rule
        "x@example.test": "PoliteDeny",           # *.example.test covers the domain
        "x@sales.example.test": "PoliteDeny",     # ...and its subdomains
        "boss@sales.example.test": "Allow",       # a user rule beats a domain rule
        "x@cup.example.test": "PoliteDeny",       # a local watcher is under the same rules
        "eve@evil.test": "Refuse",                # the admin layer wins over the user's allow
        "x@notexample.test": "Ask",               # never a suffix match
    }
    for watcher, want in cases.items():
        out = s.cli("policy", "decide", "alice", watcher).stdout
        assert out.strip().endswith(want), (watcher, out)
    # Bad input gets a clear error.
    r = s.cli("policy", "set", "alice", "x@y", "maybe", check=False)
    assert r.returncode != 0 and "allow, deny or block" in r.stderr
    r = s.cli("policy", "set", "alice", "bad domain", "deny", check=False)
    assert r.returncode != 0
