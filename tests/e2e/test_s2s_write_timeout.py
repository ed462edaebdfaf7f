"""A federation peer that stops reading cannot hold an outbound link forever
(`[s2s] write_timeout_secs`, issue #8): a Python peer on 127.0.0.121 negotiates the stream
(plain TCP, dialback accepted without checking) and then never reads again, with a tiny
receive buffer. Entente has megabytes to send it; after `write_timeout_secs` the write gives
up, the connection is dropped, and every stanza that was not written comes back to its sender
as an error (none is lost in silence). A drain of such a link answers in bounded time too."""
import asyncio
import re
import socket
import threading
import time

from admin_helpers import Api, admin_config
from conftest import free_port
from federation import S2S_HEADER, login
from xmpp_client import error_condition

PEER_IP = "127.0.0.121"


class StuckPeer:
    """Accepts s2s connections for `domain`, negotiates up to dialback, then stops reading."""

    def __init__(self, domain):
        self.domain = domain
        self.lsock = socket.socket()
        # Inherited by accepted sockets: the kernel holds very little for us.
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.lsock.bind((PEER_IP, 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.conns = []
        self.stalled = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _read_until(self, c, buf, rx):
        while not re.search(rx, buf):
            b = c.recv(4096)
            if not b:
                raise OSError("closed")
            buf += b
        return buf

    def _serve(self, c):
        c.settimeout(10)
        try:
            buf = self._read_until(c, b"", rb"<stream:stream[^>]*>")
            peer = re.search(rb"from=['\"]([^'\"]+)", buf).group(1).decode()
            c.sendall(S2S_HEADER.format(frm=self.domain, to=peer).replace(
                "version='1.0'>", "version='1.0' id='stuck-1'>").encode() + b"<stream:features/>")
            self._read_until(c, buf, rb"</db:result>")
            c.sendall(f"<db:result from='{self.domain}' to='{peer}' type='valid'/>".encode())
            self.stalled += 1
            # From here on, nothing is read: the socket stays open until the test ends or
            # Entente drops it.
        except OSError:
            pass

    def close(self):
        self.closed = True
        for s in [self.lsock, *self.conns]:
            try:
                s.close()
            except OSError:
                pass


def start(make_server, workdir, peer, write_timeout):
    admin_port, admin_lines = admin_config(workdir)
    s = make_server(
        f"""
[s2s]
enabled = true
listen = ["127.0.0.120:{free_port("127.0.0.120")}"]
write_timeout_secs = {write_timeout}
retry_timeout_secs = 5

[[s2s.peer]]
domain = "stuck.test"
tls = "never"
routes = ["{PEER_IP}:{peer.port}"]
{admin_lines}""",
        domain="a.test",
    )
    s.add_user("alice", "alice-pw")
    s.start()
    api = Api(admin_port).wait_up()
    return s, api


BODY = "x" * 100_000
COUNT = 100  # 10 MB: more than the kernel buffers of both ends hold


def sent_messages(api):
    st, _, body = api.request("GET", "/metrics")
    assert st == 200, st
    m = re.search(rb'entente_s2s_stanzas_sent_total\{kind="message"\} (\d+)', body)
    assert m, body[-2000:]
    return int(m.group(1)), body


async def collect_bounces(alice, quiet=6, limit=60):
    """Bounces for bob@stuck.test until none came for `quiet` seconds (longer than a write
    timeout plus a reconnection): {n: error stanza}."""
    seen = {}
    t0 = time.monotonic()
    while True:
        assert time.monotonic() - t0 < limit, f"still bouncing after {limit} s: {len(seen)}"
        try:
            e = await asyncio.wait_for(alice.errors.get(), quiet)
        except asyncio.TimeoutError:
            return seen
        assert e["from"].bare == "bob@stuck.test", e
        n = int(e["body"].split(" ", 1)[0])
        assert n not in seen, f"{n} bounced twice"
        seen[n] = e


def test_a_peer_that_stops_reading_gets_its_stanzas_bounced(make_server, workdir):
    peer = StuckPeer("stuck.test")
    try:
        s, api = start(make_server, workdir, peer, write_timeout=2)

        async def go():
            alice = await login(s, "alice", "alice-pw")
            for i in range(COUNT):
                alice.send_message(mto="bob@stuck.test", mbody=f"{i} {BODY}", mtype="chat")
                if i % 20 == 19:
                    await asyncio.sleep(0.05)
            seen = await collect_bounces(alice)
            await alice.logout()
            return seen

        seen = asyncio.run(go())
        # The write timed out (not the connect, not the retry timer): the peer negotiated.
        assert peer.stalled >= 1
        assert len(seen) >= COUNT // 2, sorted(seen)
        assert {error_condition(e) for e in seen.values()} == {"remote-server-timeout"}
        assert any("did not accept data for 2 seconds" in e["error"]["text"]
                   for e in seen.values())
        assert re.search(r"writing to the federation link failed.*did not take the data", s.log())
        # Every stanza is accounted for: written to the socket (what the kernel took before the
        # peer stopped reading; see docs/configuration.md, write_timeout_secs) or bounced.
        sent, body = sent_messages(api)
        assert sent + len(seen) == COUNT, (sent, sorted(seen))
        m = re.search(rb'entente_s2s_bounces_total\{reason="timeout"\} (\d+)', body)
        assert m and int(m.group(1)) == len(seen), body[-2000:]
    finally:
        peer.close()


def test_draining_a_stuck_link_is_bounded(make_server, workdir):
    """The link is up (established, the peer not reading) and has more queued than the kernel
    takes when the drain comes: the blocked write gives up after write_timeout_secs, whatever
    was not written bounces, and the API answers in bounded time."""
    peer = StuckPeer("stuck.test")
    try:
        # Long enough that the drain, not the ordinary write timeout, ends the link.
        s, api = start(make_server, workdir, peer, write_timeout=4)

        async def go():
            alice = await login(s, "alice", "alice-pw")
            # One small stanza brings the link up; then the flood, which blocks its writer.
            alice.send_message(mto="bob@stuck.test", mbody="hello", mtype="chat")
            deadline = time.monotonic() + 10
            while True:
                st, links = await asyncio.to_thread(api.json, "GET", "/api/federation/links")
                if any(l["peer"] == "stuck.test" and l["state"] == "established"
                       for l in links["links"]):
                    break
                assert time.monotonic() < deadline, links
                await asyncio.sleep(0.1)
            for i in range(COUNT):
                alice.send_message(mto="bob@stuck.test", mbody=f"{i} {BODY}", mtype="chat")
            await asyncio.sleep(0.5)
            t0 = time.monotonic()
            st, res = await asyncio.to_thread(api.json, "POST",
                                              "/api/federation/links/stuck.test/drain")
            took = time.monotonic() - t0
            assert st == 200, (st, res)
            # The answer waits 10 s at most; the write gives up after 4 s (twice, at most: the
            # write blocked when the drain came, then the drain's own final write).
            assert took < 12, took
            seen = await collect_bounces(alice)
            await alice.logout()
            return seen

        seen = asyncio.run(go())
        assert seen, "nothing bounced"
        # Written when the time ran out: timeout; still queued: bounced by the drain.
        for e in seen.values():
            assert error_condition(e) in ("remote-server-timeout", "remote-server-not-found"), e
        sent, _ = sent_messages(api)
        # "hello", and every stanza of the flood written (taken by the kernel) or bounced.
        assert sent + len(seen) == COUNT + 1, (sent, sorted(seen))
        assert "did not take the data" in s.log()
    finally:
        peer.close()
