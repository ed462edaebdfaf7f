"""Entente on PostgreSQL: `[database] url = "postgres://…"` through the same store code as SQLite.

A fresh database on the real PostgreSQL server of ENTENTE_TEST_PG_URL (scripts/pg-test-instance,
started by ./scripts/test); skipped when the variable is unset. The scenario mirrors
test_persistence.py (users from the CLI, subscriptions, a roster item with a name and groups,
a pending request, offline messages, a block list entry, a pre-approval, plus a presence policy
rule), restarts the server, checks that everything is still there, and looks at the rows with
psql: the state lives in PostgreSQL, not in a stray SQLite file.
"""
import asyncio

from conftest import EntenteServer
from postgres import psql
from xmpp_client import (
    Client,
    avail_from,
    befriend,
    delay_stamp,
    error_condition,
    next_matching,
    nothing_matching,
    sub_from,
)

A = "alice@localhost"
B = "bob@localhost"
C = "carol@localhost"
D = "dave@localhost"
E = "eve@localhost"
USERS = ("alice", "bob", "carol", "dave", "eve")


def test_state_lives_in_postgres(workdir, pg_url):
    s = EntenteServer(workdir, extra_config=f'\n[database]\nurl = "{pg_url}"\n')
    # The CLI creates the schema on first use and writes the accounts to PostgreSQL.
    for u in USERS:
        s.add_user(u, f"{u}-pw")
    assert sorted(r[0] for r in psql(pg_url, "SELECT jid FROM users")) == [
        f"{u}@localhost" for u in USERS
    ]
    assert s.cli("user", "list").stdout.split() == [f"{u}@localhost" for u in USERS]
    # A presence policy rule: alice denies eve.
    s.cli("policy", "set", "alice", E, "deny")
    s.start()
    try:
        run_steps(s, pg_url)
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- server log ---\n{s.log()[-20000:]}") from e
    finally:
        s.stop()
    # Nothing went to a SQLite file beside the certificate.
    assert not (s.data_dir / "entente.db").exists()
    assert not [p for p in s.data_dir.rglob("*") if p.name.startswith("entente.db")]


def run_steps(s, url):
    async def before():
        a = await Client(s, "alice", "alice-pw").login()
        b = await Client(s, "bob", "bob-pw").login()
        d = await Client(s, "dave", "dave-pw").login()
        e = await Client(s, "eve", "eve-pw").login()
        await befriend(a, b)
        a.send_message(mto=B, mbody="hello bob", mtype="chat")
        m = await next_matching(b.messages)
        assert m["body"] == "hello bob"
        b.send_message(mto=A, mbody="hello alice", mtype="chat")
        m = await next_matching(a.messages)
        assert m["body"] == "hello alice"
        iq = a.make_iq_set()
        iq["roster"]["items"] = {B: {"name": "Bobby", "groups": ["Friends"]}}
        await iq.send(timeout=5)
        # carol is offline: a pending request for her, and offline messages.
        a.send_presence_subscription(pto=C)
        a.send_message(mto=C, mbody="before the restart", mtype="chat")
        b.send_message(mto=C, mbody="me too", mtype="chat")
        # alice blocks dave (XEP-0191).
        await a["xep_0191"].block(D, timeout=5)
        # bob pre-approves carol.
        b.send_presence(pto=C, ptype="subscribed")
        await next_matching(b.pushes, lambda p: C in p["roster"]["items"])
        # alice's rule refuses eve politely: alice is never asked.
        e.send_presence_subscription(pto=A)
        await nothing_matching(a.subscriptions, sub_from("subscribe", E), wait=0.5)
        await asyncio.sleep(0.3)
        for c in (a, b, d, e):
            await c.logout()

    asyncio.run(before())

    # The rows are in PostgreSQL.
    roster = {
        (r[0], r[1]): r[2:]
        for r in psql(url, "SELECT owner, contact, name, groups_, sub_to, sub_from, pending_out, "
                           "preapproved FROM roster")
    }
    assert roster[(A, B)] == ("Bobby", "Friends", "1", "1", "0", "0"), roster
    assert roster[(A, C)][4] == "1", roster  # pending_out
    assert roster[(B, C)][5] == "1", roster  # preapproved
    assert psql(url, "SELECT owner, COUNT(*) FROM offline GROUP BY owner") == [(C, "2")]
    assert psql(url, "SELECT owner, jid FROM blocklist") == [(A, D)]
    # (Answering a request also records an allow rule: bob and alice, carol's pre-approval.)
    rules = psql(url, "SELECT owner, target, rule FROM policy_rules")
    assert (A, E, "deny") in rules and (B, A, "allow") in rules, rules
    versions = psql(url, "SELECT version FROM entente_schema ORDER BY version")
    assert versions and versions[0] == ("1",)

    s.restart()

    async def after():
        a = await Client(s, "alice", "alice-pw").login()
        r = await a.get_roster(timeout=5)
        items = r["roster"]["items"]
        assert items[B]["subscription"] == "both"
        assert items[B]["name"] == "Bobby"
        assert items[B]["groups"] == ["Friends"]
        assert items[C]["subscription"] == "none" and items[C]["ask"] == "subscribe"
        assert E not in items
        assert {str(j) for j in await a["xep_0191"].get_blocked_jids(timeout=5)} == {D}
        b = await Client(s, "bob", "bob-pw").login()
        await next_matching(a.presences, avail_from(B))
        await next_matching(b.presences, avail_from(A))
        rb = await b.get_roster(timeout=5)
        assert rb["roster"]["items"][C]["approved"] in (True, "true")
        # carol gets the pending request and the offline messages.
        c = await Client(s, "carol", "carol-pw").login()
        req = await next_matching(c.subscriptions, sub_from("subscribe", A))
        assert req["to"].bare == C
        bodies = set()
        for _ in range(2):
            m = await next_matching(c.messages)
            assert delay_stamp(m)
            bodies.add((m["from"].bare, m["body"]))
        assert bodies == {(A, "before the restart"), (B, "me too")}
        # The pre-approval still holds.
        c.send_presence_subscription(pto=B)
        await next_matching(c.subscriptions, sub_from("subscribed", B))
        # The block still holds.
        d = await Client(s, "dave", "dave-pw").login()
        d.send_message(mto=A, mbody="still blocked?", mtype="chat")
        err = await next_matching(d.errors)
        assert error_condition(err) == "service-unavailable"
        await nothing_matching(a.messages, wait=0.3)
        # The policy rule still holds: eve asks again, alice hears nothing.
        e = await Client(s, "eve", "eve-pw").login()
        e.send_presence_subscription(pto=A)
        await nothing_matching(a.subscriptions, sub_from("subscribe", E), wait=0.7)
        # A live message still flows.
        b.send_message(mto=A, mbody="after the restart", mtype="chat")
        m = await next_matching(a.messages)
        assert m["body"] == "after the restart"
        c.send_presence(pto=A, ptype="subscribed")
        await next_matching(a.subscriptions, sub_from("subscribed", C))
        await asyncio.sleep(0.2)
        for x in (a, b, c, d, e):
            await x.logout()

    asyncio.run(after())

    # The offline messages were taken out of PostgreSQL; carol's answer was written there.
    assert psql(url, "SELECT COUNT(*) FROM offline") == [("0",)]
    assert psql(url, f"SELECT sub_to, pending_out FROM roster WHERE owner = '{A}' "
                     f"AND contact = '{C}'") == [("1", "0")]
    show = s.cli("policy", "show", "alice").stdout
    assert "deny" in show and E in show and D in show, show
