"""DNS look-up metrics (issue #8): `entente_dns_lookups_total{kind,outcome}` and the histogram
`entente_dns_lookup_duration_seconds{kind}` at GET /metrics, after real federation through the
test DNS server (`entente-testdns`): a.test finds b.test by SRV and its target's address
(outcome `ok`), and a domain the DNS server does not know counts as `nxdomain` (its SRV
look-ups, then the RFC 6120 fallback to its own address) while the stanza bounces. The
exposition is parsed strictly (tests/e2e/test_metrics_links.py's parser)."""
import asyncio

from admin_helpers import Api, admin_config, value
from conftest import free_port
from federation import federating, login
from xmpp_client import error_condition, next_matching



def dns_counts(api):
    types, samples = api.metrics()
    assert types.get("entente_dns_lookups_total") == "counter", types
    assert types.get("entente_dns_lookup_duration_seconds") == "histogram", types
    counts = {}
    for (name, labels), v in samples.items():
        if name == "entente_dns_lookups_total":
            d = dict(labels)
            counts[(d["kind"], d["outcome"])] = v
    # Every kind and outcome is there from the start; the histogram agrees with the counters.
    for kind in ("srv", "naptr", "address"):
        for outcome in ("ok", "nxdomain", "no-records", "timeout", "error"):
            assert (kind, outcome) in counts, (kind, outcome)
        total = sum(v for (k, _), v in counts.items() if k == kind)
        assert value(samples, "entente_dns_lookup_duration_seconds_count", kind=kind) == total
        buckets = sorted(
            (float(dict(labels)["le"].replace("Inf", "inf")), v)
            for (name, labels), v in samples.items()
            if name == "entente_dns_lookup_duration_seconds_bucket" and dict(labels)["kind"] == kind
        )
        assert len(buckets) >= 5 and buckets[-1] == (float("inf"), total), buckets
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), buckets
        s = value(samples, "entente_dns_lookup_duration_seconds_sum", kind=kind)
        assert s is not None and s >= 0 and (total > 0 or s == 0), s
    return counts, samples


def test_dns_lookups_are_counted_and_timed(make_server, make_testdns, test_ca, workdir):
    pa, pb = free_port(), free_port()
    dns = make_testdns(
        f"_xmpp-server._tcp.a.test. SRV 10 50 {pa} xmpp.a.test.\nxmpp.a.test. A 127.0.0.1\n"
        f"_xmpp-server._tcp.b.test. SRV 10 50 {pb} xmpp.b.test.\nxmpp.b.test. A 127.0.0.1\n"
    )
    a = federating(make_server, "a.test", ca=test_ca, s2s_port=pa, nameservers=[dns.addr],
                   s2s="retry_timeout_secs = 2", start=False)
    admin_port, admin_lines = admin_config(workdir)
    with open(a.config, "a") as f:
        f.write(admin_lines)
    a.start()
    b = federating(make_server, "b.test", ca=test_ca, s2s_port=pb, nameservers=[dns.addr],
                   users=(("bob", "bob-pw"),))
    api = Api(admin_port).wait_up()

    before, _ = dns_counts(api)
    assert all(v == 0 for v in before.values()), before

    async def go():
        alice = await login(a, "alice", "alice-pw")
        bob = await login(b, "bob", "bob-pw")
        alice.send_message(mto="bob@b.test", mbody="found by SRV", mtype="chat")
        await next_matching(bob.messages, lambda x: x["body"] == "found by SRV")
        found, _ = await asyncio.to_thread(dns_counts, api)
        # _xmpp-server._tcp.b.test answered; _xmpps-server._tcp.b.test does not exist;
        # xmpp.b.test has an address. Nothing failed yet.
        assert found[("srv", "ok")] >= 1, found
        assert found[("address", "ok")] >= 1, found
        assert found[("address", "nxdomain")] == 0, found
        assert found[("srv", "error")] == found[("srv", "timeout")] == 0, found

        alice.send_message(mto="carol@missing.test", mbody="anyone?", mtype="chat")
        e = await next_matching(alice.errors, lambda x: x["from"].bare == "carol@missing.test",
                                timeout=15)
        assert error_condition(e) == "remote-server-not-found", e
        missing, _ = await asyncio.to_thread(dns_counts, api)
        # Both SRV names and then the domain itself, at every retry: NXDOMAIN, counted as such.
        assert missing[("srv", "nxdomain")] >= found[("srv", "nxdomain")] + 2, (found, missing)
        assert missing[("address", "nxdomain")] >= 1, missing
        assert missing[("srv", "ok")] == found[("srv", "ok")], (found, missing)
        await alice.logout()
        await bob.logout()

    asyncio.run(go())
