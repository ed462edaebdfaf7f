"""`entente check-federation`: the admin's diagnosis tool, run against a real Prosody, a closed
port, and a peer whose certificate names the wrong domain."""
import subprocess

from conftest import BIN, free_port

P_IP = "127.0.0.11"


def run_check(server, domain, *extra):
    return subprocess.run(
        [str(BIN), "--config", str(server.config), "check-federation", domain, *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def config(route, ca=None):
    ca_line = f'ca_file = "{ca}"\n' if ca else ""
    return f"""
[s2s]
enabled = true
listen = ["127.0.0.1:{free_port()}"]
system_roots = false
{ca_line}
[[s2s.peer]]
domain = "p1.test"
routes = ["{route}"]
"""


def test_check_against_prosody(make_server, make_prosody, test_ca):
    make_prosody("p1.test", P_IP, ca=test_ca, users={"romeo": "pw"})
    e = make_server(config(f"{P_IP}:5269", ca=test_ca.cert), domain="e.test")
    r = run_check(e, "p1.test", "--xmpp-only")
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "[ok  ] XMPP DNS" in out
    assert "TCP: connected" in out
    assert "STARTTLS" in out
    assert "certificate: valid for p1.test" in out, out
    assert "features after TLS" in out and "dialback" in out, out


def test_check_wrong_certificate_name(make_server, make_prosody, test_ca):
    make_prosody("p1.test", P_IP, ca=test_ca, cert=test_ca.issue_wrong_name("p1.test"), users={"romeo": "pw"})
    e = make_server(config(f"{P_IP}:5269", ca=test_ca.cert), domain="e.test")
    r = run_check(e, "p1.test", "--xmpp-only")
    assert "[WARN]" in r.stdout and "NOT valid for p1.test" in r.stdout, r.stdout
    assert "fix:" in r.stdout


def test_check_closed_port(make_server):
    port = free_port()  # nothing listens there
    e = make_server(config(f"127.0.0.1:{port}"), domain="e.test")
    r = run_check(e, "p1.test", "--xmpp-only")
    assert r.returncode != 0
    assert "[FAIL]" in r.stdout and "TCP" in r.stdout, r.stdout
    assert "fix:" in r.stdout
    assert "failed for p1.test" in r.stderr


def test_check_unknown_domain_dns(make_server):
    # No route and no resolvable name: the DNS step fails with a fix (the name server given is
    # a loopback port where nothing answers, so the machine's resolver is never asked).
    e = make_server(
        f'\n[s2s]\nenabled = true\nlisten = ["127.0.0.1:{free_port()}"]\n'
        f'\n[dns]\nnameservers = ["127.0.0.1:{free_port()}"]\ntimeout_secs = 1\n',
        domain="e.test",
    )
    r = run_check(e, "nowhere.test", "--xmpp-only")
    assert r.returncode != 0
    assert "[FAIL] XMPP DNS" in r.stdout, r.stdout
