"""A real Prosody (Debian package `prosody`, 0.12) as a foreign XMPP domain for federation tests.

Each ProsodyServer is a private process: its own config, data, pidfile and log under `workdir`,
c2s and s2s bound to its own loopback address (127.0.0.x) so several can use 5222/5269 at once,
and never the system service. Peer domains are resolved by our plugin
prosody_modules/mod_test_dns.lua from `static_routes`, never by the machine's resolver
(unlisted names get NXDOMAIN).

    ca = TestCA(workdir / "ca")
    p = ProsodyServer(workdir / "p1", "p1.test", "127.0.0.11", ca=ca,
                      static_routes={"e.test": ("127.0.0.1", 5269)}, users={"romeo": "pw"})
    with p:                       # start(), register users ... stop()
        c = Client(p, "romeo", "pw", host=p.host)   # xmpp_client.Client; p.cert = trust anchor
"""
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time

from certs import Issued, TestCA, self_signed

HERE = pathlib.Path(__file__).resolve().parent
PLUGIN_DIR = HERE / "prosody_modules"
PROSODY = shutil.which("prosody") or "/usr/bin/prosody"
PROSODYCTL = shutil.which("prosodyctl") or "/usr/bin/prosodyctl"


def prosody_installed():
    return shutil.which("prosody") is not None and shutil.which("prosodyctl") is not None


def _lua_str(s):
    s = str(s)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _lua(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, pathlib.Path)):
        return _lua_str(v)
    if isinstance(v, dict):
        return "{ " + " ".join(f"[{_lua_str(k)}] = {_lua(x)};" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple, set)):
        return "{ " + " ".join(f"{_lua(x)};" for x in v) + " }"
    raise TypeError(f"cannot write {v!r} as Lua")


class ProsodyServer:
    """One `prosody -F --config FILE` process serving `domain` on `ip` (127.0.0.x).

    Certificates: `cert`/`key` are PEM paths, or `cert` may be a certs.Issued. Without them, a
    certificate is issued by `ca` when it is a TestCA, else a self-signed one is made.
    Trust for s2s: `ca` (a TestCA or a PEM bundle path) becomes ssl.cafile; capath points to an
    empty folder, so the system CAs are not trusted. Without `ca`, nothing is trusted and s2s
    falls back to dialback (if enabled and s2s_secure_auth is false).

    require_encryption -> s2s_require_encryption (c2s always requires TLS); dialback=False leaves
    mod_dialback out; bidi=True adds mod_s2s_bidi (XEP-0288); extra_config is appended verbatim
    to the global section (Lua).

    Attributes for xmpp_client.Client: .domain, .host (= ip), .port (c2s), .cert (the file a
    client should trust for c2s: the CA, or the self-signed certificate itself).
    """

    def __init__(self, workdir, domain, ip, *, ca=None, cert=None, key=None, dialback=True,
                 s2s_secure_auth=False, require_encryption=True, static_routes=None, users=None,
                 c2s_port=5222, s2s_port=5269, bidi=False, modules=(), extra_config="",
                 secure_domains=(), insecure_domains=()):
        if not ip.startswith("127."):
            raise ValueError("test peers live on loopback (127.0.0.0/8) only")
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.domain = domain
        self.ip = self.host = ip
        self.port = self.c2s_port = c2s_port
        self.s2s_port = s2s_port
        self.users = dict(users or {})
        self.static_routes = dict(static_routes or {})
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.data_dir.chmod(0o700)
        capath = self.workdir / "capath-empty"
        capath.mkdir(exist_ok=True)
        (self.workdir / "certs").mkdir(exist_ok=True)  # Prosody's cert auto-discovery folder, kept empty
        self.config = self.workdir / "prosody.cfg.lua"
        self.log_path = self.workdir / "prosody.log"
        self.console_path = self.workdir / "prosody.console.log"
        self.pidfile = self.workdir / "prosody.pid"
        self.proc = None

        if isinstance(cert, Issued):
            cert, key = cert.cert, cert.key
        if cert is None:
            issued = ca.issue(domain) if isinstance(ca, TestCA) else self_signed(self.workdir / "certs", domain)
            cert, key = issued.cert, issued.key
        elif key is None:
            raise ValueError("cert given without key")
        self.cert_file = pathlib.Path(cert)
        self.key_file = pathlib.Path(key)
        if isinstance(ca, TestCA):
            self.ca_file = ca.cert
        else:
            self.ca_file = pathlib.Path(ca) if ca is not None else None
        # What a c2s client should trust to accept this server's certificate.
        self.cert = self.ca_file if isinstance(ca, TestCA) else self.cert_file

        ssl = {"certificate": self.cert_file, "key": self.key_file, "capath": capath}
        if self.ca_file is not None:
            ssl["cafile"] = self.ca_file
        mods = ["roster", "saslauth", "tls", "disco", "ping", "posix", "test_dns"]
        if dialback:
            mods.append("dialback")
        if bidi:
            mods.append("s2s_bidi")
        mods += list(modules)
        # A route is (host, port), or a list of them: SRV targets tried in that order.
        routes = {
            d: ([[str(h), int(p)] for h, p in r] if isinstance(r, list) else [str(r[0]), int(r[1])])
            for d, r in self.static_routes.items()
        }
        opts = {
            "pidfile": self.pidfile,
            "data_path": self.data_dir,
            "plugin_paths": [PLUGIN_DIR],
            "modules_enabled": mods,
            "interfaces": [ip],
            "local_interfaces": [ip],
            "c2s_ports": [c2s_port],
            "s2s_ports": [s2s_port],
            "c2s_direct_tls_ports": [],
            "s2s_direct_tls_ports": [],
            "authentication": "internal_hashed",
            "password_hash": "SHA-256",  # so SCRAM-SHA-256 (xmpp_client's default) is offered
            "storage": "internal",
            "allow_registration": False,
            "c2s_require_encryption": True,
            "s2s_require_encryption": require_encryption,
            "s2s_secure_auth": s2s_secure_auth,
            "s2s_secure_domains": list(secure_domains),
            "s2s_insecure_domains": list(insecure_domains),
            "s2s_timeout": 15,
            "certificates": self.workdir / "certs",
            "ssl": ssl,
            "test_dns_srv": routes,
            "test_dns_strict": True,
            "use_ipv6": False,
        }
        if os.geteuid() == 0:
            opts["run_as_root"] = True
        lines = ["-- Written by tests/e2e/prosody.py; a private test instance, not the system service."]
        lines += [f"{k} = {_lua(v)}" for k, v in opts.items()]
        lines.append(f"log = {{ {{ levels = {{ min = \"debug\" }}, to = \"file\", filename = {_lua(self.log_path)} }} }}")
        lines.append(extra_config)
        lines.append(f"VirtualHost {_lua_str(domain)}")
        self.config.write_text("\n".join(lines) + "\n")

    # -- process control ---------------------------------------------------------------------

    def start(self, timeout=20):
        if not prosody_installed():
            raise RuntimeError("prosody is not installed (Debian package `prosody`)")
        self._check_ports_free()
        console = open(self.console_path, "ab")
        self.proc = subprocess.Popen(
            [PROSODY, "-F", "--config", str(self.config)],
            stdout=console, stderr=console, stdin=subprocess.DEVNULL, cwd=self.workdir,
        )
        console.close()
        deadline = time.monotonic() + timeout
        pending = [self.c2s_port, self.s2s_port]
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prosody for {self.domain} exited ({self.proc.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prosody for {self.domain} did not listen on {self.ip}:{pending}:\n{self.tail()}")
            try:
                with socket.create_connection((self.ip, pending[0]), timeout=0.5):
                    pending.pop(0)
            except OSError:
                time.sleep(0.05)
        for user, password in self.users.items():
            self.register(user, password)
        return self

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL after `timeout` seconds; always bounded."""
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)

    def kill(self):
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _check_ports_free(self):
        for port in (self.c2s_port, self.s2s_port):
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex((self.ip, port)) == 0:
                    raise RuntimeError(f"{self.ip}:{port} is already in use (a stray prosody?)")

    # -- users and admin ---------------------------------------------------------------------

    def ctl(self, *args, check=True, timeout=30):
        r = subprocess.run([PROSODYCTL, "--config", str(self.config), *map(str, args)],
                           capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                           cwd=self.workdir)
        if check and r.returncode != 0:
            raise RuntimeError(f"prosodyctl {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        return r

    def register(self, user, password):
        self.ctl("register", user, self.domain, password)
        self.users[user] = password

    def jid(self, user):
        return f"{user}@{self.domain}"

    # -- logs --------------------------------------------------------------------------------

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, n=60):
        text = self.log()
        try:
            text += self.console_path.read_text(errors="replace")
        except FileNotFoundError:
            pass
        return "\n".join(text.splitlines()[-n:])

    def log_matches(self, pattern):
        return re.findall(pattern, self.log(), re.M)

    def wait_for_log(self, pattern, timeout=10):
        """Waits until the log has a line matching `pattern` (a regex); returns the match."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.M)
        while True:
            m = rx.search(self.log())
            if m:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.domain}: no log line matching {pattern!r} in {timeout}s:\n{self.tail()}")
            time.sleep(0.1)
