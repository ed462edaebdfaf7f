"""A scripted slixmpp client for tests: every stanza it receives lands in a queue that the test
awaits with a timeout, so a test fails (never hangs) when something does not arrive."""
import asyncio
import ssl

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout  # noqa: F401  (re-exported for tests)

TIMEOUT = 10


class Client(slixmpp.ClientXMPP):
    def __init__(self, server, user, password, resource="test", mech="SCRAM-SHA-256", priority=0,
                 host=None):
        jid = f"{user}@{server.domain}/{resource}"
        super().__init__(jid, password, sasl_mech=mech)
        self.ent = server
        self.priority = priority
        # The address to connect to (server.host if it has one, else 127.0.0.1); TLS checks server.domain.
        self.connect_host = host or getattr(server, "host", "127.0.0.1")
        ctx = ssl.create_default_context(cafile=str(server.cert))
        ctx.check_hostname = True
        self.ssl_context = ctx
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = None
        self.presences = asyncio.Queue()
        self.subscriptions = asyncio.Queue()
        self.messages = asyncio.Queue()
        self.pushes = asyncio.Queue()
        self.errors = asyncio.Queue()
        self.stream_errors = asyncio.Queue()
        self.block_pushes = asyncio.Queue()
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
        # Errors with a body also fire "message"; they go to `errors` only.
        self.add_event_handler(
            "message", lambda m: m["type"] != "error" and self.messages.put_nowait(m)
        )
        self.add_event_handler("roster_update", lambda iq: self.pushes.put_nowait(iq))
        self.add_event_handler("message_error", lambda m: self.errors.put_nowait(m))
        self.add_event_handler("stream_error", lambda e: self.stream_errors.put_nowait(e))
        self.add_event_handler("blocked", lambda iq: self.block_pushes.put_nowait(iq))
        self.add_event_handler("unblocked", lambda iq: self.block_pushes.put_nowait(iq))
        # slixmpp names presence events after <show> ("presence_away"), so take them all here.
        self.add_event_handler("presence", self._on_presence)
        self.send_initial_presence = True

    def _on_presence(self, p):
        t = p["type"]
        if t in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
            self.subscriptions.put_nowait(p)
        elif t == "error":
            self.errors.put_nowait(p)
        else:
            self.presences.put_nowait(p)

    async def _start(self, _):
        await self.get_roster()
        if self.send_initial_presence:
            self.send_presence(ppriority=self.priority)
        self.started.set()

    async def login(self):
        self.connect(host=self.connect_host, port=self.ent.port)
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


def avail_from(jid):
    """Predicate: available presence (any show) from this bare or full JID."""
    return lambda p: p["type"] != "unavailable" and (p["from"] == jid or p["from"].bare == jid)


def unavail_from(jid):
    return lambda p: p["type"] == "unavailable" and (p["from"] == jid or p["from"].bare == jid)


def sub_from(ptype, jid):
    return lambda p: p["type"] == ptype and p["from"].bare == jid


def domain_of(c):
    return c.ent.domain


async def befriend(a, b):
    """Mutual subscription between two logged-in clients; returns once both see each other."""
    aj, bj = a.boundjid.bare, b.boundjid.bare
    a.send_presence_subscription(pto=bj)
    await next_matching(b.subscriptions, sub_from("subscribe", aj))
    b.send_presence(pto=aj, ptype="subscribed")
    await next_matching(a.subscriptions, sub_from("subscribed", bj))
    await next_matching(a.presences, avail_from(bj))
    b.send_presence_subscription(pto=aj)
    await next_matching(a.subscriptions, sub_from("subscribe", bj))
    a.send_presence(pto=bj, ptype="subscribed")
    await next_matching(b.subscriptions, sub_from("subscribed", aj))
    await next_matching(b.presences, avail_from(aj))


def delay_stamp(stanza):
    d = stanza.xml.find("{urn:xmpp:delay}delay")
    return None if d is None else d.get("stamp")


def error_condition(stanza):
    """The defined condition of a stanza error, e.g. 'service-unavailable'."""
    e = stanza.xml.find("{jabber:client}error")
    if e is None:
        return None
    for c in e:
        if c.tag.startswith("{urn:ietf:params:xml:ns:xmpp-stanzas}") and not c.tag.endswith("}text"):
            return c.tag.split("}", 1)[1]
    return None
