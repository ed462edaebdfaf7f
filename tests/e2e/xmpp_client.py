"""A scripted slixmpp client for tests: every stanza it receives lands in a queue that the test
awaits with a timeout, so a test fails (never hangs) when something does not arrive."""
import asyncio
import ssl

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout  # noqa: F401  (re-exported for tests)

TIMEOUT = 10


class Client(slixmpp.ClientXMPP):
    def __init__(self, server, user, password, resource="test", mech="SCRAM-SHA-256", priority=0):
        jid = f"{user}@{server.domain}/{resource}"
        super().__init__(jid, password, sasl_mech=mech)
        self.ent = server
        self.priority = priority
        ctx = ssl.create_default_context(cafile=str(server.cert))
        ctx.check_hostname = True
        self.ssl_context = ctx
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = None
        self.presences = asyncio.Queue()
        self.subscriptions = asyncio.Queue()
        self.messages = asyncio.Queue()
        self.pushes = asyncio.Queue()
        self.started = asyncio.Event()
        self.failed = asyncio.Event()
        self.disconnected_evt = asyncio.Event()
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0191")
        self.register_plugin("xep_0092")
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("failed_auth", lambda *_: self.failed.set())
        self.add_event_handler("disconnected", lambda *_: self.disconnected_evt.set())
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("roster_update", lambda iq: self.pushes.put_nowait(iq))
        for t in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
            self.add_event_handler(f"presence_{t}", lambda p: self.subscriptions.put_nowait(p))
        self.add_event_handler("presence_available", lambda p: self.presences.put_nowait(p))
        self.add_event_handler("presence_unavailable", lambda p: self.presences.put_nowait(p))
        self.send_initial_presence = True

    async def _start(self, _):
        await self.get_roster()
        if self.send_initial_presence:
            self.send_presence(ppriority=self.priority)
        self.started.set()

    async def login(self):
        self.connect(host="127.0.0.1", port=self.ent.port)
        done, _ = await asyncio.wait(
            [asyncio.ensure_future(self.started.wait()), asyncio.ensure_future(self.failed.wait())],
            timeout=TIMEOUT,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not self.started.is_set():
            raise AssertionError(f"{self.boundjid} could not log in")
        return self

    async def logout(self):
        self.disconnect()
        await asyncio.wait_for(self.disconnected_evt.wait(), TIMEOUT)

    def abort_connection(self):
        """Cut the TCP connection without closing the stream."""
        if self.transport:
            self.transport.abort()


async def next_matching(queue, pred=lambda x: True, timeout=TIMEOUT):
    """Awaits the next queued item that satisfies pred; others are skipped."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        left = end - loop.time()
        if left <= 0:
            raise AssertionError("timed out waiting for a stanza")
        try:
            item = await asyncio.wait_for(queue.get(), left)
        except asyncio.TimeoutError:
            raise AssertionError("timed out waiting for a stanza") from None
        if pred(item):
            return item


async def nothing_matching(queue, pred=lambda x: True, wait=1.0):
    """Asserts that no matching item arrives within `wait` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + wait
    while True:
        left = end - loop.time()
        if left <= 0:
            return
        try:
            item = await asyncio.wait_for(queue.get(), left)
        except asyncio.TimeoutError:
            return
        if pred(item):
            raise AssertionError(f"unexpected stanza: {item}")
