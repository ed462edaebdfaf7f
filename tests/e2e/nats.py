"""A private nats-server (Debian package `nats-server`) for the cluster tests.

Each test that needs one starts its own on a loopback address at a free port, with no
configuration file (core NATS only: no JetStream, no authentication; it carries test traffic
only) and stops it at the end. It never touches the system's nats-server service.
"""
import pathlib
import shutil
import socket
import subprocess
import time


def nats_bin():
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if pathlib.Path("/usr/sbin/nats-server").exists() else None
    )


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class NatsServer:
    """`nats-server -a IP -p PORT`; `.url` is nats://IP:PORT once started."""

    __test__ = False

    def __init__(self, workdir, ip="127.0.0.1"):
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ip = ip
        self.port = free_port(ip)
        self.url = f"nats://{ip}:{self.port}"
        self.log_path = self.dir / "nats.log"
        self.proc = None

    def start(self, timeout=10):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [nats_bin(), "-a", self.ip, "-p", str(self.port), "-n", "entente-test"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nats-server exited: {self.log()}")
            try:
                with socket.create_connection((self.ip, self.port), timeout=0.5) as s:
                    # The server greets every client with INFO {...}.
                    if s.recv(4).startswith(b"INFO"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"nats-server did not start: {self.log()}")

    def stop(self):
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
