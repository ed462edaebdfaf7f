"""Fixtures for the end-to-end suite: a real `entente` binary on loopback, real slixmpp clients.

Every server gets its own temporary data directory (a real SQLite file) and a free port on
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
