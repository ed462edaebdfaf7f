"""`entente check-federation`: the admin's diagnosis tool, run against a real Prosody, a closed
port, and a peer whose certificate names the wrong domain; and with a domain and policy set
through the admin API (the federation in effect, not the file's alone)."""
import json
import subprocess
import time
import urllib.error
import urllib.request

from conftest import BIN, free_port

P_IP = "127.0.0.11"
API_P_IP = "127.0.0.113"
TOKEN = "check-federation-token-3"


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


def api_call(port, method, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode())
    req.add_header("Authorization", f"Bearer {TOKEN}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status


def wait_api(port):
    deadline = time.time() + 15
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return
        except OSError:
            assert time.time() < deadline, "the admin API did not come up"
            time.sleep(0.05)


def test_check_domain_added_through_the_api(make_server, make_prosody, test_ca, workdir):
    # The file names no peer and permits nobody; the admin API adds p1.test (with its static
    # route) and permits it. The check follows the API's settings: the route is used (the
    # name server given answers nothing, so DNS alone would fail) and the policy is the API's.
    make_prosody("p1.test", API_P_IP, ca=test_ca, users={"romeo": "pw"})
    token_file = workdir / "admin-token"
    token_file.write_text(TOKEN + "\n")
    api_port = free_port()
    e = make_server(f"""
[s2s]
enabled = true
listen = ["127.0.0.1:{free_port()}"]
system_roots = false
ca_file = "{test_ca.cert}"
policy = "allowlist"
domains = ["nobody.test"]

[dns]
nameservers = ["127.0.0.1:{free_port()}"]
timeout_secs = 1

[admin]
enabled = true
listen = "127.0.0.1:{api_port}"
token_file = "{token_file}"
""", domain="e.test")
    e.start()
    wait_api(api_port)

    before = run_check(e, "p1.test", "--xmpp-only")
    assert before.returncode != 0
    assert "[ok  ] XMPP settings: no [[s2s.peer]] entry" in before.stdout, before.stdout
    assert "[WARN] XMPP policy: the federation policy (allowlist, from the configuration file)" \
        in before.stdout, before.stdout
    assert "[FAIL] XMPP DNS" in before.stdout, before.stdout

    assert api_call(api_port, "PUT", "/api/federation/domains/p1.test",
                    {"protocol": "xmpp", "routes": [f"{API_P_IP}:5269"]}) == 200
    assert api_call(api_port, "PUT", "/api/federation/policy",
                    {"policy": "allowlist", "domains": ["p1.test"]}) == 200

    r = run_check(e, "p1.test", "--xmpp-only")
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert f"[ok  ] XMPP settings: from the admin API: tls required, routes [{API_P_IP}:5269]" \
        in out, out
    assert "XMPP policy" not in out, out
    assert f"({API_P_IP}:5269) TCP: connected" in out, out
    assert "certificate: valid for p1.test" in out, out
