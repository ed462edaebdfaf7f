"""Helpers for Entente<->Entente federation tests: configuration text for [s2s]/[dns], a factory
that starts one federating Entente, the shared "subscribe, presence, chat, logout" scenario, a
raw server-to-server socket for the security tests, and a recording TCP relay.

Every instance's c2s port is picked by EntenteServer (127.0.0.1:free); its s2s listener is on
`s2s_host:free` (127.0.0.1 unless a test needs a fixed address such as 127.0.0.2x:5269).
"""
import asyncio
import re
import socket
import threading
import time
import types

import raw_xmpp

from conftest import free_port
from xmpp_client import Client, avail_from, next_matching, sub_from, unavail_from


def s2s_extra(*, listen, cert=None, ca=None, peers=(), nameservers=(), s2s=""):
    """The configuration text appended to EntenteServer's: [tls], [s2s], [[s2s.peer]], [dns].

    peers: dicts with domain, optional tls ("required"/"optional"/"never") and routes."""
    out = []
    if cert is not None:
        out.append(f'[tls]\ncert = "{cert.cert}"\nkey = "{cert.key}"\n')
    out.append("[s2s]\nenabled = true")
    out.append(f'listen = ["{listen}"]')
    out.append("system_roots = false")
    out.append("connect_timeout_secs = 5")
    if ca is not None:
        out.append(f'ca_file = "{ca}"')
    if s2s:
        out.append(s2s.strip())
    out.append("")
    for p in peers:
        out.append("[[s2s.peer]]")
        out.append(f'domain = "{p["domain"]}"')
        if p.get("tls"):
            out.append(f'tls = "{p["tls"]}"')
        if p.get("routes"):
            out.append("routes = [" + ", ".join(f'"{r}"' for r in p["routes"]) + "]")
        if p.get("profile"):
            out.append(f'profile = "{p["profile"]}"')
        out.append("")
    if nameservers:
        out.append("[dns]")
        out.append("nameservers = [" + ", ".join(f'"{n}"' for n in nameservers) + "]")
        out.append("timeout_secs = 2")
        out.append("")
    return "\n".join(out) + "\n"


def federating(make_server, domain, *, ca=None, s2s_host="127.0.0.1", s2s_port=None, peers=(),
               nameservers=(), s2s="", users=(("alice", "alice-pw"),), start=True):
    """An EntenteServer for `domain` with federation on. With `ca` (a certs.TestCA) it gets a
    certificate from that CA and trusts it (SASL EXTERNAL); without, its generated self-signed
    certificate and no trust anchors at all (so peers authenticate it by dialback only).

    The returned server has .s2s_addr ("host:port") for routes and SRV records."""
    port = s2s_port or free_port(s2s_host)
    cert = ca.issue(domain) if ca is not None else None
    extra = s2s_extra(listen=f"{s2s_host}:{port}", cert=cert, ca=ca.cert if ca else None,
                      peers=peers, nameservers=nameservers, s2s=s2s)
    e = make_server(extra, domain=domain, sub=domain)
    if ca is not None:
        e.trust = ca.cert
    e.s2s_host, e.s2s_port, e.s2s_addr = s2s_host, port, f"{s2s_host}:{port}"
    for u, pw in users:
        e.add_user(u, pw)
    if start:
        e.start()
    return e


def wait_for_log(server, pattern, timeout=10):
    """Waits until server's log matches `pattern` (a regex); returns the match."""
    rx = re.compile(pattern, re.M)
    deadline = time.monotonic() + timeout
    while True:
        m = rx.search(server.log())
        if m:
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"{server.domain}: no log line matching {pattern!r} in {timeout}s:\n"
                                 + server.log()[-3000:])
        time.sleep(0.1)


async def mutual_subscription_and_chat(a, b):
    """The federation scenario, between two logged-in clients of different domains: mutual
    subscription, presence with show/status, messages with the right full `from` both ways, a
    message to a user that does not exist on the other side (service-unavailable), and
    unavailable presence at logout."""
    aj, bj = a.boundjid.bare, b.boundjid.bare

    # a subscribes to b, b approves; b's presence reaches a.
    a.send_presence_subscription(pto=bj)
    req = await next_matching(b.subscriptions, sub_from("subscribe", aj))
    assert req["from"].bare == aj
    b.send_presence(pto=aj, ptype="subscribed")
    await next_matching(a.subscriptions, sub_from("subscribed", bj))
    p = await next_matching(a.presences, avail_from(bj))
    assert p["from"] == b.boundjid.full, p

    # b subscribes to a, a approves.
    b.send_presence_subscription(pto=aj)
    await next_matching(a.subscriptions, sub_from("subscribe", bj))
    a.send_presence(pto=bj, ptype="subscribed")
    await next_matching(b.subscriptions, sub_from("subscribed", aj))
    p = await next_matching(b.presences, avail_from(aj))
    assert p["from"] == a.boundjid.full, p

    # Both rosters hold the other with subscription both.
    for c, other in ((a, bj), (b, aj)):
        deadline = asyncio.get_running_loop().time() + 10
        while c.client_roster[other]["subscription"] != "both":
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{c.boundjid}: roster item {other} is "
                                     f"{c.client_roster[other]['subscription']!r}, not both")
            await asyncio.sleep(0.05)

    # Presence with show and status, both ways.
    a.send_presence(pshow="dnd", pstatus="in a meeting")
    p = await next_matching(b.presences, lambda x: x["from"].bare == aj and x["show"] == "dnd")
    assert p["status"] == "in a meeting" and p["from"] == a.boundjid.full
    b.send_presence(pshow="away", pstatus="lunch")
    p = await next_matching(a.presences, lambda x: x["from"].bare == bj and x["show"] == "away")
    assert p["status"] == "lunch" and p["from"] == b.boundjid.full

    # Messages both ways, stamped with the sender's full JID, addressed to the recipient.
    a.send_message(mto=bj, mbody=f"hello from {a.boundjid.domain}", mtype="chat")
    m = await next_matching(b.messages, lambda x: x["body"] == f"hello from {a.boundjid.domain}")
    assert m["from"] == a.boundjid.full and m["to"].bare == bj, m
    b.send_message(mto=aj, mbody=f"hello from {b.boundjid.domain}", mtype="chat")
    m = await next_matching(a.messages, lambda x: x["body"] == f"hello from {b.boundjid.domain}")
    assert m["from"] == b.boundjid.full and m["to"].bare == aj, m

    # A user that does not exist on the other side: service-unavailable comes back.
    from xmpp_client import error_condition
    ghost = f"nobody@{b.boundjid.domain}"
    a.send_message(mto=ghost, mbody="anyone?", mtype="chat")
    err = await next_matching(a.errors, lambda x: x["from"].bare == ghost)
    assert error_condition(err) == "service-unavailable", err

    # Unavailable at logout, both ways: b leaves and a sees it; b comes back (its server probes
    # a's, so a's presence reaches the new session), then a leaves and b sees it.
    await b.logout()
    p = await next_matching(a.presences, unavail_from(bj))
    assert p["from"] == b.boundjid.full, p
    b2 = await Client(b.ent, b.boundjid.user, b.password, resource="again").login()
    p = await next_matching(b2.presences, avail_from(aj))
    assert p["from"] == a.boundjid.full and p["show"] == "dnd", p
    await a.logout()
    p = await next_matching(b2.presences, unavail_from(aj))
    assert p["from"] == a.boundjid.full, p
    await b2.logout()


async def logout_seen(leaving, watcher):
    """`leaving` logs out; `watcher` sees its unavailable presence."""
    j = leaving.boundjid.full
    await leaving.logout()
    await next_matching(watcher.presences, lambda p: p["type"] == "unavailable" and p["from"] == j)


async def login(server, user, password, resource="test"):
    return await Client(server, user, password, resource=resource).login()


# ---- a recording TCP relay ----


class Relay:
    """A TCP relay on 127.0.0.1:free to `target` (host, port) that keeps a copy of every byte
    in both directions, to check what crosses the wire (e.g. plain text over plain TCP)."""

    def __init__(self, target):
        self.target = target
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.data = bytearray()
        self.lock = threading.Lock()
        self.closed = False
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            self.socks += [c, u]
            for s, d in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(s, d), daemon=True).start()

    def _pump(self, src, dst):
        src.settimeout(None)
        while True:
            try:
                b = src.recv(65536)
            except OSError:
                b = b""
            if not b:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            with self.lock:
                self.data += b
            try:
                dst.sendall(b)
            except OSError:
                return

    def seen(self):
        with self.lock:
            return bytes(self.data)

    def close(self):
        self.closed = True
        for s in [self.lsock, *self.socks]:
            try:
                s.close()
            except OSError:
                pass


# ---- raw server-to-server sockets, for the security tests ----

S2S_HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
    "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
    "from='{frm}' to='{to}' version='1.0'>"
)


class RawS2s(raw_xmpp.Raw):
    """A blocking raw s2s stream (no TLS) to an Entente s2s listener on 127.0.0.1:`port`; reads
    have deadlines (raw_xmpp.Raw's read_until / expect_stream_error)."""

    def __init__(self, port, timeout=10):
        super().__init__(types.SimpleNamespace(port=port, domain=None), timeout=timeout)

    def open(self, frm, to):
        """Sends the stream header; returns (the stream id, the features text)."""
        self.send(S2S_HEADER.format(frm=frm, to=to))
        head = self.read_until(r"<stream:stream[^>]*>")
        m = re.search(r"\bid='([^']+)'", head) or re.search(r'\bid="([^"]+)"', head)
        feats = self.read_until(r"</stream:features>|<stream:features/>|<stream:error>")
        return (m.group(1) if m else None), feats

class FakeAuthoritative:
    """A fake authoritative server for `domain` (plain TCP) that answers XEP-0220 db:verify
    requests: `valid` when the key equals `good_key`, else `invalid`. Entente's verification
    call-back reaches it through a static route with `tls = "never"`."""

    def __init__(self, domain, good_key):
        self.domain = domain
        self.good_key = good_key
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.requests = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(10)
        buf = b""
        try:
            while b"<stream:stream" not in buf or b">" not in buf.split(b"<stream:stream", 1)[1]:
                b = c.recv(4096)
                if not b:
                    return
                buf += b
            peer = re.search(rb"from=['\"]([^'\"]+)", buf.split(b"<stream:stream", 1)[1])
            peer = peer.group(1).decode() if peer else ""
            c.sendall(S2S_HEADER.format(frm=self.domain, to=peer).replace(
                "version='1.0'>", "version='1.0' id='fake-auth-1'>").encode()
                + b"<stream:features/>")
            while True:
                m = re.search(rb"<db:verify([^>]*)>([^<]*)</db:verify>", buf)
                if m:
                    break
                b = c.recv(4096)
                if not b:
                    return
                buf += b
            attrs = m.group(1).decode()
            key = m.group(2).decode().strip()
            get = lambda a: re.search(a + r"=['\"]([^'\"]*)", attrs).group(1)  # noqa: E731
            self.requests.append((get("from"), get("to"), get("id"), key))
            t = "valid" if key == self.good_key else "invalid"
            c.sendall(f"<db:verify from='{get('to')}' to='{get('from')}' id='{get('id')}' "
                      f"type='{t}'/></stream:stream>".encode())
            c.recv(4096)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.closed = True
        try:
            self.lsock.close()
        except OSError:
            pass
