"""Cluster nodes for the end-to-end tests (docs/cluster.md): an `entente serve` process with a
[cluster] section, the shared PostgreSQL database and NATS, listening for clients on its own
loopback address."""
import socket
import subprocess
import time

from conftest import BIN, EntenteServer
from xmpp_client import Client


class ClusterNode(EntenteServer):
    """One node: `extra` is more configuration (SIP, [cluster] keys after node_id/nats_url)."""

    def __init__(self, workdir, ip, node_id, pg_url, nats_url, domain="localhost", extra=""):
        super().__init__(
            workdir,
            domain=domain,
            extra_config=(
                f'\n[database]\nurl = "{pg_url}"\n'
                f'\n[cluster]\nnode_id = "{node_id}"\nnats_url = "{nats_url}"\n{extra}'
            ),
        )
        self.host = ip
        self.node_id = node_id
        text = (
            self.config.read_text()
            .replace(f"127.0.0.1:{self.port}", f"{ip}:{self.port}")
            .replace('level = "debug,', 'level = "debug,async_nats=info,')
        )
        self.config.write_text(text)

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(BIN), "--config", str(self.config), "serve"], stdout=log, stderr=log
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"entente exited: {self.log()[-3000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"node {self.node_id} did not start listening")

    def peers_seen(self, since=0):
        """How many times this node logged meeting another node (in the log after `since`)."""
        return self.log()[since:].count("a cluster node joined")


def stop_nodes(nodes, request):
    """Stops the nodes; prints their logs' ends when the test failed."""
    for n in nodes:
        n.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for n in nodes:
            print(f"\n----- node {n.node_id} log (last 8000 chars) -----\n{n.log()[-8000:]}")


def login(node, user, resource="test"):
    """A logged-in client of `user` (password `user-pw`) on `node`."""
    return Client(node, user, f"{user}-pw", resource=resource).login()
