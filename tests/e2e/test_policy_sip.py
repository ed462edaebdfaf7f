"""Presence policy through the SIP path: the admin × user × protocol table of docs/policy.md,
with a SIP watcher (sip_peer.SipPeer playing a foreign edge) subscribing to a local user of a
real Entente (a.test) who is, or is not, logged in with slixmpp. Each row checks what the
watcher sees (its NOTIFYs: offline = <basic>closed</basic>, available = open), whether the
local user was asked, and what the watcher's instant messages get.

The layers (docs/policy.md): the admin layer for SIP is the list of `[[sip.peer]]` domains
(any other domain gets 403); then the user's rules (a user, a domain, or `*.domain` with its
subdomains; the most specific wins); then the admin default `[policy] default`.
Polite blocking over SIP: a denied or blocked watcher gets 202 and an active subscription whose
documents always say offline; the user is not asked. `block` also refuses messages, `deny` does
not.

Outcomes:
  ASK      the user is asked (at once when online, at the next login when offline, across a
           restart too); the watcher sees offline until the user approves, then available.
  ALLOW    the user is not asked; the watcher sees available while the user is online.
  POLITE   the user is not asked; 202, the subscription stays active, every NOTIFY says
           offline, also after the user changes presence and logs in again.
  REFUSED  the SUBSCRIBE and the MESSAGE get 403; nothing reaches the user; no NOTIFY.

IM column: "delivered" (a MESSAGE gets 200 and reaches the user), "refused" (MESSAGE, and
INVITE from Lync, get an error; nothing reaches the user), "403".

  row                                   default rules of the user              watcher            user        outcome  IM
  ask-online                            ask     -                              ann@lync.test      online      ASK      delivered
  ask-offline                           ask     -                              ben@lync.test      offline     ASK      delivered
  ask-offline-restart                   ask     -                              cat@lync.test      off+restart ASK      delivered
  block-user                            ask     dan@lync.test block            dan@lync.test      online      POLITE   refused
  block-domain                          ask     lync.test block                eve@lync.test      online      POLITE   refused
  block-domain-spares-subdomain         ask     lync.test block                fay@sub.lync.test  online      ASK      delivered
  block-subdomains-covers-domain        ask     *.lync.test block              gus@lync.test      online      POLITE   refused
  block-subdomains-covers-subdomain     ask     *.lync.test block              hal@sub.lync.test  online      POLITE   refused
  user-allow-beats-domain-block         ask     *.lync.test block,             ivy@sub.lync.test  online      ALLOW    delivered
                                                ivy@sub.lync.test allow
  not-permitted-domain                  ask     -                              jon@other.test     online      REFUSED  403
  not-permitted-despite-user-allow      ask     kay@other.test allow           kay@other.test     online      REFUSED  403
  default-allow                         allow   -                              lou@lync.test      online      ALLOW    delivered
  default-allow-offline                 allow   -                              max@lync.test      offline     ALLOW    delivered
  default-allow-user-deny               allow   meg@lync.test deny             meg@lync.test      online      POLITE   delivered
  default-allow-user-block              allow   nat@lync.test block            nat@lync.test      online      POLITE   refused
  default-deny                          deny    -                              ola@lync.test      online      POLITE   delivered
  default-deny-user-allow               deny    pam@lync.test allow            pam@lync.test      online      ALLOW    delivered
  default-deny-subdomains-allow         deny    *.lync.test allow              roy@sub.lync.test  online      ALLOW    delivered

Each row has its own local user (named after the row) and watcher, so the rows of one admin
default share one Entente (rules are set with the CLI before it starts). Addresses: Entente
127.0.0.95, lync.test (profile lync) 127.0.0.96, sub.lync.test (profile simple) 127.0.0.97,
other.test (not a [[sip.peer]]) 127.0.0.98.
"""
import asyncio
import dataclasses
import pathlib
import re
import shutil
import tempfile

import pytest

from certs import TestCA
from conftest import EntenteServer, _failed
from sip_helpers import free_port, sip_config, tcp_peer, wait_sip_listening
from sip_peer import LyncEndpoint, SipPeer, lync_invite_headers, lync_message_sdp
from xmpp_client import Client, next_matching, nothing_matching, sub_from

ENTENTE_IP = "127.0.0.95"
LYNC_IP = "127.0.0.96"
SUB_IP = "127.0.0.97"
STRANGER_IP = "127.0.0.98"
DOMAIN = "a.test"

ASK, ALLOW, POLITE, REFUSED = "ASK", "ALLOW", "POLITE", "REFUSED"


@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    default: str      # [policy] default
    rules: tuple      # the local user's rules: (target, allow|deny|block)
    watcher: str      # the SIP watcher
    user: str         # "online", "offline" (logs in later), "offline+restart" (Entente restarts first)
    expect: str       # ASK, ALLOW, POLITE, REFUSED
    im: str           # "delivered", "refused", "403"

    @property
    def local(self):
        return self.id

    @property
    def jid(self):
        return f"{self.id}@{DOMAIN}"


ROWS = [
    Row("ask-online", "ask", (), "ann@lync.test", "online", ASK, "delivered"),
    Row("ask-offline", "ask", (), "ben@lync.test", "offline", ASK, "delivered"),
    Row("ask-offline-restart", "ask", (), "cat@lync.test", "offline+restart", ASK, "delivered"),
    Row("block-user", "ask", (("dan@lync.test", "block"),), "dan@lync.test", "online", POLITE, "refused"),
    Row("block-domain", "ask", (("lync.test", "block"),), "eve@lync.test", "online", POLITE, "refused"),
    Row("block-domain-spares-subdomain", "ask", (("lync.test", "block"),), "fay@sub.lync.test",
        "online", ASK, "delivered"),
    Row("block-subdomains-covers-domain", "ask", (("*.lync.test", "block"),), "gus@lync.test",
        "online", POLITE, "refused"),
    Row("block-subdomains-covers-subdomain", "ask", (("*.lync.test", "block"),), "hal@sub.lync.test",
        "online", POLITE, "refused"),
    Row("user-allow-beats-domain-block", "ask", (("*.lync.test", "block"), ("ivy@sub.lync.test", "allow")),
        "ivy@sub.lync.test", "online", ALLOW, "delivered"),
    Row("not-permitted-domain", "ask", (), "jon@other.test", "online", REFUSED, "403"),
    Row("not-permitted-despite-user-allow", "ask", (("kay@other.test", "allow"),), "kay@other.test",
        "online", REFUSED, "403"),
    Row("default-allow", "allow", (), "lou@lync.test", "online", ALLOW, "delivered"),
    Row("default-allow-offline", "allow", (), "max@lync.test", "offline", ALLOW, "delivered"),
    Row("default-allow-user-deny", "allow", (("meg@lync.test", "deny"),), "meg@lync.test", "online",
        POLITE, "delivered"),
    Row("default-allow-user-block", "allow", (("nat@lync.test", "block"),), "nat@lync.test", "online",
        POLITE, "refused"),
    Row("default-deny", "deny", (), "ola@lync.test", "online", POLITE, "delivered"),
    Row("default-deny-user-allow", "deny", (("pam@lync.test", "allow"),), "pam@lync.test", "online",
        ALLOW, "delivered"),
    Row("default-deny-subdomains-allow", "deny", (("*.lync.test", "allow"),), "roy@sub.lync.test",
        "online", ALLOW, "delivered"),
]


async def athread(f, *a, **kw):
    """Runs a blocking SipPeer call without blocking the XMPP clients' event loop."""
    return await asyncio.to_thread(f, *a, **kw)


# ---------------------------------------------------------------------------------------------
# one Entente per admin default, with its SIP peers
# ---------------------------------------------------------------------------------------------

class World:
    """A started Entente whose [policy] default is `default`, with the users and rules of
    `rows`, and the SIP peers lync.test, sub.lync.test (permitted) and other.test (not)."""

    def __init__(self, base, ca, default, rows):
        self.default = default
        self.peers = {
            "lync.test": SipPeer("lync.test", LYNC_IP),
            "sub.lync.test": SipPeer("sub.lync.test", SUB_IP),
            "other.test": SipPeer("other.test", STRANGER_IP),
        }
        self.port = free_port(ENTENTE_IP)
        cert = ca.issue(DOMAIN)
        lync, sub = self.peers["lync.test"], self.peers["sub.lync.test"]
        d = pathlib.Path(tempfile.mkdtemp(prefix=f"{default}-", dir=base))
        self.server = EntenteServer(d, domain=DOMAIN, extra_config=sip_config(
            ca=ca.cert, cert=cert, tcp=f"{ENTENTE_IP}:{self.port}", policy=default,
            sip_extra="t1_ms = 50\nsubscribe_expires_secs = 600",
            peers=[tcp_peer("lync.test", "lync", LYNC_IP, lync.port),
                   tcp_peer("sub.lync.test", "simple", SUB_IP, sub.port)]))
        self.server.trust = ca.cert
        for row in rows:
            self.server.add_user(row.local, "pw")
            for target, rule in row.rules:
                self.server.cli("policy", "set", row.jid, target, rule)
        self._start(self.server.start)

    def _start(self, how):
        before = self.server.log().count("accepting SIP") if self.server.log_path.exists() else 0
        how()
        wait_sip_listening(self.server, before)
        for p in self.peers.values():
            p.connect(ENTENTE_IP, self.port)

    def restart(self):
        self._start(self.server.restart)

    def peer_for(self, watcher):
        return self.peers[watcher.split("@", 1)[1]]

    def close(self):
        self.server.stop()
        for p in self.peers.values():
            p.stop()


CURRENT = {}


@pytest.fixture(scope="module")
def worlds():
    """worlds(default) -> the World for that admin default (one at a time: the rows are
    grouped by default, so each default starts one Entente)."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="entente-e2e-policy-sip-"))
    ca = TestCA(base / "ca")

    def get(default):
        w = CURRENT.get("world")
        if w is None or w.default != default:
            if w is not None:
                w.close()
            CURRENT["world"] = None
            w = World(base, ca, default, [r for r in ROWS if r.default == default])
            CURRENT["world"] = w
        return w

    yield get
    if CURRENT.get("world") is not None:
        CURRENT.pop("world").close()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def _entente_log_on_failure(request):
    yield
    w = CURRENT.get("world")
    if _failed(request) and w is not None:
        print(f"\n----- entente log (policy default {w.default}, last 8000 chars) -----\n"
              f"{w.server.log()[-8000:]}")


# ---------------------------------------------------------------------------------------------
# what the watcher does and sees
# ---------------------------------------------------------------------------------------------

def basic_of(body):
    m = re.search(r"<(?:\w+:)?basic>\s*(\w+)", body)
    return m.group(1) if m else None


def is_open(r):
    return basic_of(r.text) == "open"


def lync_endpoint(peer, watcher):
    user, domain = watcher.split("@", 1)
    return LyncEndpoint(user, domain=domain, edge=peer.address)


def subscribe(peer, watcher, to):
    """A presence SUBSCRIBE from `watcher` to `to`, Lync-shaped for lync.test."""
    headers = [("Event", "presence"), ("Accept", "application/pidf+xml"), ("Expires", "600")]
    if peer.domain == "lync.test":
        ep = lync_endpoint(peer, watcher)
        from_uri = ep.from_uri
        headers += [("Contact", ep.contact), ("Record-Route", ep.record_route)]
    else:
        from_uri = f"sip:{watcher}"
    return peer.request("SUBSCRIBE", f"sip:{to}", from_uri=from_uri, to_uri=f"sip:{to}", headers=headers)


def notify(peer, call_id, pred=None, timeout=10):
    """The next NOTIFY of the subscription `call_id` (matching pred)."""
    return peer.wait_request("NOTIFY", lambda r: r.call_id == call_id and (pred is None or pred(r)), timeout)


def no_notify(peer, call_id, pred, wait):
    """Asserts that no NOTIFY of `call_id` matching pred arrives within `wait` seconds."""
    try:
        r = peer.wait_request("NOTIFY", lambda r: r.call_id == call_id and pred(r), wait)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected NOTIFY: {r.summary()}\n{r.text}")


def notifies_of(peer, call_id):
    return [r for r in peer.requests if r.method == "NOTIFY" and r.call_id == call_id]


def send_message(peer, watcher, to, text):
    return peer.request("MESSAGE", f"sip:{to}", from_uri=f"sip:{watcher}", to_uri=f"sip:{to}",
                        body=text, content_type="text/plain;charset=UTF-8")


def send_invite(peer, watcher, to, text):
    ep = lync_endpoint(peer, watcher)
    return peer.request("INVITE", f"sip:{to}", from_uri=ep.from_uri, to_uri=f"sip:{to}",
                        headers=lync_invite_headers(text, ep, to_uri=f"sip:{to}"),
                        body=lync_message_sdp(LYNC_IP), content_type="application/sdp")


async def login(w, row):
    return await Client(w.server, row.local, "pw").login()


async def not_asked(client, row, wait=0.5):
    await nothing_matching(client.subscriptions, sub_from("subscribe", row.watcher), wait=wait)


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_sip_watcher_policy(worlds, row):
    w = worlds(row.default)
    peer = w.peer_for(row.watcher)

    async def scenario():
        client = await login(w, row) if row.user == "online" else None
        resp = await athread(subscribe, peer, row.watcher, row.jid)

        if row.expect == REFUSED:
            assert resp.status == 403, resp.summary()
            r = await athread(send_message, peer, row.watcher, row.jid, "may I?")
            assert r.status == 403, r.summary()
            await nothing_matching(client.subscriptions, wait=0.5)
            await nothing_matching(client.messages, wait=0.1)
            assert not [r for r in peer.requests if r.method == "NOTIFY"], peer.requests
            await client.logout()
            return

        assert resp.status == 202, resp.summary()
        call_id = resp.call_id
        first = await athread(notify, peer, call_id)
        assert first.header("Subscription-State", "").startswith("active"), first.summary()

        if row.expect == ASK:
            # Offline until the user answers.
            assert basic_of(first.text) == "closed", first.text
            if row.user == "offline+restart":
                w.restart()
                # The subscription survived: a current NOTIFY (still offline) at once.
                again = await athread(notify, peer, call_id, None, 15)
                assert again.header("Subscription-State", "").startswith("active"), again.summary()
                assert basic_of(again.text) == "closed", again.text
            if client is None:
                # The request waited for the user; it is delivered at login.
                client = await login(w, row)
            await next_matching(client.subscriptions, sub_from("subscribe", row.watcher))
            await athread(no_notify, peer, call_id, is_open, 0.5)
            client.send_presence(pto=row.watcher, ptype="subscribed")
            n = await athread(notify, peer, call_id, is_open)
            assert n.header("Subscription-State", "").startswith("active"), n.summary()
        elif row.expect == ALLOW:
            if client is None:
                assert basic_of(first.text) == "closed", first.text
                client = await login(w, row)
            if not is_open(first):
                await athread(notify, peer, call_id, is_open)
            await not_asked(client, row)
        elif row.expect == POLITE:
            assert basic_of(first.text) == "closed", first.text
            await not_asked(client, row)
            # Nothing the user does reveals them: a presence change, a new login.
            client.send_presence(pshow="chat", pstatus="here")
            await client.logout()
            client = await login(w, row)
            await not_asked(client, row, wait=0.2)
            await athread(no_notify, peer, call_id, is_open, 1.0)
            for n in notifies_of(peer, call_id):
                assert n.header("Subscription-State", "").startswith("active"), n.summary()
                assert basic_of(n.text) == "closed", n.text
        else:
            raise AssertionError(f"unknown outcome {row.expect}")

        # Instant messages from the watcher.
        text = f"hello from {row.watcher}"
        r = await athread(send_message, peer, row.watcher, row.jid, text)
        if row.im == "delivered":
            assert r.status == 200, r.summary()
            m = await next_matching(client.messages, lambda m: m["body"])
            assert m["body"] == text and m["from"].bare == row.watcher, m
        elif row.im == "refused":
            assert 400 <= r.status < 700, r.summary()
            if peer.domain == "lync.test":
                inv = await athread(send_invite, peer, row.watcher, row.jid, text + " (session)")
                assert 400 <= inv.status < 700, inv.summary()
            await nothing_matching(client.messages, wait=0.5)
        else:
            raise AssertionError(f"unknown IM outcome {row.im}")
        await client.logout()

    asyncio.run(scenario())
