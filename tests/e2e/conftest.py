"""Fixtures for the end-to-end suite: a real `entente` binary on loopback, real slixmpp clients.

Every server gets its own temporary data directory (a real SQLite file, unless a test points
`[database] url` at a fresh PostgreSQL database from the `pg_url` fixture) and a free port on
127.0.0.1. Nothing here touches the machine's resolver or any address outside 127.0.0.0/8.
"""
import asyncio
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from certs import TestCA
from nats import NatsServer, nats_bin
from postgres import PG_URL, fresh_database, psql_bin
from prosody import ProsodyServer, prosody_installed

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(os.environ.get("ENTENTE_BIN", ROOT / "target" / "debug" / "entente"))


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EntenteServer:
    """One `entente serve` process with its own data directory and config file."""

    def __init__(self, workdir: pathlib.Path, domain="localhost", extra_config=""):
        self.workdir = workdir
        self.domain = domain
        self.data_dir = workdir / "data"
        self.port = free_port()
        self.config = workdir / "entente.toml"
        self.config.write_text(
            f"""domain = "{domain}"
data_dir = "{self.data_dir}"

[c2s]
listen = ["127.0.0.1:{self.port}"]
{extra_config}

[log]
level = "debug,sqlx=warn,rustls=info,hickory_proto=info,hickory_resolver=info"
"""
        )
        self.proc = None
        self.log_path = workdir / "entente.log"

    #: A CA file clients should trust instead of the generated self-signed certificate.
    trust = None

    @property
    def cert(self):
        return self.trust or (self.data_dir / "tls" / "cert.pem")

    def cli(self, *args, input=None, check=True):
        r = subprocess.run(
            [str(BIN), "--config", str(self.config), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"entente {' '.join(args)} failed: {r.stderr}")
        return r

    def add_user(self, name, password):
        self.cli("user", "add", name, input=password + "\n")

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(BIN), "--config", str(self.config), "serve"],
            stdout=log,
            stderr=log,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"entente exited: {self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("entente did not start listening")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def log(self):
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def workdir():
    d = pathlib.Path(tempfile.mkdtemp(prefix="entente-e2e-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def server(workdir):
    s = EntenteServer(workdir)
    s.add_user("alice", "alice-pw")
    s.add_user("bob", "bob-pw")
    s.start()
    yield s
    s.stop()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Remembers each phase's outcome on the test item, so fixtures can dump logs on failure."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is not None and rep.failed


@pytest.fixture
def make_server(workdir, request):
    """Factory for servers with extra configuration. On failure, their logs are printed."""
    made = []

    def make(extra_config="", domain="localhost", sub="srv"):
        d = workdir / sub
        d.mkdir(exist_ok=True)
        s = EntenteServer(d, domain=domain, extra_config=extra_config)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()
        if _failed(request) and s.log_path.exists():
            print(f"\n----- entente log ({s.domain}, last 6000 chars) -----\n{s.log()[-6000:]}")


@pytest.fixture
def pg_url():
    """The URL of a fresh, empty database on the real PostgreSQL server named by
    ENTENTE_TEST_PG_URL (postgres.py); dropped after the test. Skips when the variable is unset."""
    if not PG_URL:
        pytest.skip("ENTENTE_TEST_PG_URL is not set: ./scripts/test starts a private PostgreSQL "
                    "(scripts/pg-test-instance) and sets it")
    if not psql_bin():
        pytest.skip("psql is not installed (Debian package postgresql-client)")
    with fresh_database() as url:
        yield url


@pytest.fixture
def make_nats(workdir, request):
    """Factory: make_nats(ip) starts a private nats-server (nats.NatsServer) on `ip` at a free
    port and returns it (.url); it is stopped at the end of the test. Skips when nats-server is
    not installed (Debian package `nats-server`; ./scripts/test installs it)."""
    if not nats_bin():
        pytest.skip("nats-server is not installed (Debian package `nats-server`)")
    made = []

    def make(ip="127.0.0.1"):
        n = NatsServer(workdir / f"nats-{len(made)}", ip)
        made.append(n)
        return n.start()

    yield make
    for n in made:
        n.stop()
        if _failed(request):
            print(f"\n----- nats-server log (last 3000 chars) -----\n{n.log()[-3000:]}")


@pytest.fixture
def test_ca(workdir):
    """A private CA for this test (certs.TestCA): .cert is the CA file, .issue(domain) makes certs."""
    return TestCA(workdir / "ca")


@pytest.fixture
def make_prosody(workdir, request):
    """Factory for real Prosody peers (prosody.ProsodyServer), started unless start=False, and
    stopped at the end of the test. Skips the test when the `prosody` package is not installed."""
    if not prosody_installed():
        pytest.skip("prosody is not installed (Debian package `prosody`; .ci installs it)")
    made = []

    def make(domain, ip, *, start=True, **kw):
        p = ProsodyServer(workdir / f"prosody-{domain}", domain, ip, **kw)
        made.append(p)
        return p.start() if start else p

    yield make
    for p in made:
        p.stop()
        if _failed(request):
            print(f"\n----- prosody log ({p.domain}, last 6000 chars) -----\n{p.tail() if hasattr(p, 'tail') else ''}")


# ---- a test DNS server (crates/dns, binary `entente-testdns`) ----

TESTDNS_BIN = pathlib.Path(
    os.environ.get("ENTENTE_TESTDNS_BIN", ROOT / "target" / "debug" / "entente-testdns")
)


class TestDnsServer:
    """One `entente-testdns --listen IP:0 --zone FILE` process (UDP and TCP on the same port).

    Zone text: one record a line, e.g. `_xmpp-server._tcp.b.test. SRV 10 50 5269 xmpp1.b.test.`
    and `xmpp1.b.test. A 127.0.0.1` (see crates/dns/src/testserver.rs). Unlisted names get
    NXDOMAIN. `.addr` is "ip:port", for `[dns] nameservers`."""

    __test__ = False

    def __init__(self, workdir, zone, ip="127.0.0.1"):
        self.zone_path = pathlib.Path(workdir) / "zone.txt"
        self.zone_path.write_text(zone)
        self.log_path = pathlib.Path(workdir) / "testdns.log"
        self.ip = ip
        self.proc = None
        self.addr = None

    def start(self, timeout=10):
        import select

        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(TESTDNS_BIN), "--listen", f"{self.ip}:0", "--zone", str(self.zone_path)],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise AssertionError(f"entente-testdns did not start: {line!r} "
                                     f"{self.log_path.read_text(errors='replace')}")
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                b = os.read(self.proc.stdout.fileno(), 1)
                if not b:
                    continue
                line += b
        text = line.decode().strip()
        assert text.startswith("listening on "), text
        self.addr = text.removeprefix("listening on ")
        return self

    def stop(self):
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        if p.stdout:
            p.stdout.close()


@pytest.fixture
def make_testdns(workdir):
    """Factory: make_testdns(zone_text) starts a test DNS server on 127.0.0.1:free and returns
    it (.addr); it is stopped at the end of the test. Skips when the binary is not built
    (`cargo build -p entente-dns --features test-server --bin entente-testdns`, or point
    ENTENTE_TESTDNS_BIN at it)."""
    if not TESTDNS_BIN.exists():
        pytest.skip(f"{TESTDNS_BIN} is not built (cargo build -p entente-dns --features test-server "
                    "--bin entente-testdns; or set ENTENTE_TESTDNS_BIN)")
    made = []

    def make(zone, sub="dns"):
        d = workdir / sub
        d.mkdir(exist_ok=True)
        s = TestDnsServer(d, zone)
        made.append(s)
        return s.start()

    yield make
    for s in made:
        s.stop()
