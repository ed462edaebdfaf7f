"""The admin API against its own OpenAPI document (issue #8): schemathesis reads
`GET /openapi.json` from the running binary and sends generated requests, valid and invalid, to
every operation the document lists, with all of its checks (server errors, status codes and
content types the document does not list, bodies that do not match the response schemas, invalid
input accepted, valid input refused, missing or ignored authentication, …). Any finding fails the
test, with schemathesis' report (and the server log) in the output.

The server has federation (XMPP and SIP over TCP, on 127.0.0.120) and a few users, so every
route exists and the user routes find accounts. The run is bounded (`--max-examples`,
`--max-time`), a minute or two on a small machine; `ENTENTE_SCHEMATHESIS_EXAMPLES` changes the
number of examples per operation.
"""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import urllib.request

import pytest

from admin_helpers import TOKEN, Api, admin_config
from conftest import free_port

IP = "127.0.0.120"
EXAMPLES = int(os.environ.get("ENTENTE_SCHEMATHESIS_EXAMPLES", "25"))


def schemathesis_bin():
    """The `schemathesis` next to this Python (the venv of tests/requirements.txt)."""
    here = pathlib.Path(sys.executable).parent / "schemathesis"
    return str(here) if here.exists() else shutil.which("schemathesis")


@pytest.fixture
def api(make_server, workdir):
    """A started Entente with the admin API, XMPP and SIP federation and three users; yields
    the API's base URL."""
    port, admin_lines = admin_config(workdir)
    s = make_server(
        admin_lines + f"""
[s2s]
enabled = true
listen = ["{IP}:{free_port(IP)}"]

[sip]
enabled = true
listen_udp = []
listen_tcp = ["{IP}:{free_port(IP)}"]
listen_tls = []

[[sip.peer]]
domain = "sip.partner.test"
transport = "tcp"
routes = ["tcp://{IP}:5999"]
source_addrs = ["{IP}"]
""",
        domain="a.test",
    )
    for name in ("alice", "bob", "carol"):
        s.add_user(name, name + "-pw")
    s.start()
    yield Api(port).wait_up().base


def test_schemathesis_finds_nothing(api, workdir):
    exe = schemathesis_bin()
    assert exe, "schemathesis is not installed (tests/requirements.txt)"
    req = urllib.request.Request(api + "/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        paths = json.loads(r.read())["paths"]
    operations = sum(
        len([m for m in ops if m in ("get", "put", "post", "delete", "patch")])
        for ops in paths.values()
    )
    assert operations >= 10, operations
    report = workdir / "schemathesis-report"
    cmd = [
        exe, "run", f"{api}/openapi.json",
        "--header", f"Authorization: Bearer {TOKEN}",
        "--checks", "all",
        "--max-examples", str(EXAMPLES),
        "--max-time", "90",
        "--seed", os.environ.get("ENTENTE_SCHEMATHESIS_SEED", "8"),
        "--request-timeout", "20",
        "--workers", "1",
        "--no-color",
        "--report", "ndjson",
        "--report-dir", str(report),
        "--output-truncate", "false",
    ]
    env = dict(os.environ, SCHEMATHESIS_HOOKS="", NO_COLOR="1")
    # In the temporary directory: schemathesis keeps its example database in ./.schemathesis.
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=workdir)
    out = r.stdout + r.stderr
    print(out[-20000:])
    assert r.returncode == 0, f"schemathesis reported problems (exit {r.returncode}); see above"
    # It ran every operation (a run that tested nothing would also exit 0).
    selected = re.search(r"Selected: (\d+)/(\d+)", out)
    tested = re.search(r"Tested: (\d+)", out)
    assert selected and tested, out[-3000:]
    assert selected.group(1) == selected.group(2) == tested.group(1), out[-3000:]
    # Every operation but GET /openapi.json, which schemathesis leaves out as the location it
    # loaded the schema from.
    expected = operations - (1 if "get" in paths.get("/openapi.json", {}) else 0)
    assert int(tested.group(1)) == expected, (tested.group(1), expected)
    events = [line for p in report.glob("*.ndjson") for line in p.read_text().splitlines() if line]
    assert events, "schemathesis wrote no events"
