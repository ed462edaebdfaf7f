"""The admin API from the tests: a bearer token, the [admin] lines of a server's config, a small
JSON client (Api), `entente admin` on the command line, and a strict parser of the Prometheus
text exposition that GET /metrics returns."""
import asyncio
import json
import re
import subprocess
import time
import urllib.error
import urllib.request

from conftest import BIN, free_port

TOKEN = "entente-e2e-admin-token-0123456789"


def admin_config(workdir, name="admin", *, token=TOKEN, require_token=True):
    """(port, config lines) for an admin API on 127.0.0.1:free, with `token` in a file."""
    token_file = workdir / f"{name}-token"
    token_file.write_text(token + "\n")
    port = free_port()
    extra = f'\n[admin]\nenabled = true\nlisten = "127.0.0.1:{port}"\ntoken_file = "{token_file}"\n'
    if not require_token:
        extra += "metrics_require_token = false\n"
    return port, extra


class Api:
    """The admin API of one server."""

    def __init__(self, port, token=TOKEN):
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def request(self, method, path, body=None, *, raw=None, auth=True, token=None, timeout=30):
        """(status, headers, body bytes). `body` is sent as JSON, `raw` as it is; a POST
        without either sends an empty body."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is None and method == "POST":
            data = b""
        req = urllib.request.Request(self.base + path, method=method, data=data)
        if data:
            req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {token or self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def call(self, method, path, body=None, **kw):
        """(status, parsed JSON body or None)."""
        st, _, text = self.request(method, path, body, **kw)
        return st, (json.loads(text) if text else None)

    json = call

    async def acall(self, *a, **kw):
        return await asyncio.to_thread(self.call, *a, **kw)

    ajson = acall

    def metrics(self, **kw):
        st, headers, body = self.request("GET", "/metrics", **kw)
        assert st == 200, (st, body)
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers
        return parse_exposition(body.decode())

    def wait_up(self, timeout=15):
        """Waits for /health (the admin listener is bound after the client one)."""
        deadline = time.time() + timeout
        while True:
            try:
                if self.request("GET", "/health", auth=False, timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            assert time.time() < deadline, "the admin API did not come up"
            time.sleep(0.05)


def cli(server, *args, check=True):
    """`entente --config SERVER admin ARGS…`; asserts success unless check=False."""
    r = subprocess.run([str(BIN), "--config", str(server.config), "admin", *args],
                       capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, f"entente admin {' '.join(args)}: {r.stderr}"
    return r


async def acli(server, *args, check=True):
    return await asyncio.to_thread(cli, server, *args, check=check)


# ---- a tiny parser of the Prometheus text exposition format 0.0.4 ----

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
VALUE = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?|Inf|NaN)"
SAMPLE_RX = re.compile(rf"^({NAME})(?:\{{(.*)\}})? ({VALUE})(?: -?[0-9]+)?$")
LABEL_RX = re.compile(rf'({LABEL})="((?:[^"\\\n]|\\[\\"n])*)"')


def parse_labels(text, line):
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL_RX.match(text, pos)
        assert m, f"bad labels at {pos}: {line!r}"
        name = m.group(1)
        assert name not in labels, f"duplicate label {name}: {line!r}"
        value = re.sub(r"\\(.)", lambda e: {"n": "\n"}.get(e.group(1), e.group(1)), m.group(2))
        labels[name] = value
        pos = m.end()
        if pos < len(text):
            assert text[pos] == ",", f"expected a comma at {pos}: {line!r}"
            pos += 1
    return labels


def parse_exposition(text):
    """Returns ({family: type}, {(name, frozenset(labels.items())): value}); asserts that the
    text is well formed: HELP/TYPE before a family's samples, each family's TYPE once, every
    sample belongs to a declared family, no series twice, a final line feed."""
    assert text.endswith("\n"), "the exposition must end with a line feed"
    types, helps, samples = {}, set(), {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] == "HELP":
                assert re.fullmatch(NAME, parts[2]), line
                assert parts[2] not in helps, f"HELP twice: {line!r}"
                helps.add(parts[2])
            elif len(parts) >= 4 and parts[1] == "TYPE":
                assert re.fullmatch(NAME, parts[2]), line
                assert parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
                assert parts[2] not in types, f"TYPE twice: {line!r}"
                types[parts[2]] = parts[3]
            continue
        m = SAMPLE_RX.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels = m.group(1), parse_labels(m.group(2) or "", line)
        family = name if name in types else re.sub(r"_(sum|count|bucket)$", "", name)
        assert family in types, f"sample before (or without) its TYPE: {line!r}"
        key = (name, frozenset(labels.items()))
        assert key not in samples, f"series twice: {line!r}"
        samples[key] = float(m.group(3).replace("Inf", "inf"))
    return types, samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))
