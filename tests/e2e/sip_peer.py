"""A small SIP user agent (and "edge") over TCP and TLS for the end-to-end tests: it plays a foreign
SIP domain on a loopback address. Standard library only (socket, ssl, threading); every socket is
served by a daemon thread, so plain synchronous pytest code can drive it.

    with SipPeer("lync.test", "127.0.0.61") as peer:          # listens on 127.0.0.61:<free port>
        peer.connect("127.0.0.60", 5060)                     # outbound connection to the server
        resp = peer.request("OPTIONS", "sip:a.test", from_uri="sip:alice@lync.test",
                            to_uri="sip:a.test")              # final response (1xx skipped)
        assert resp.status == 200
        sub = peer.wait_request("SUBSCRIBE")                  # a request the server sent us;
        dialog = peer.dialog_for(sub)                         # it was auto-answered 202
        peer.in_dialog(dialog, "NOTIFY", headers=[("Event", "presence"),
                       ("Subscription-State", "active;expires=3600")],
                       body=simple_pidf("open", entity="sip:alice@lync.test"),
                       content_type="application/pidf+xml")

What it does (RFC 3261 unless noted):

* Framing by Content-Length over streams; a CRLFCRLF keep-alive ping is answered with a CRLF pong
  (RFC 5626 §4.4.1), and `ping()` sends one and waits for the pong.
* Requests we send: Via `SIP/2.0/TCP|TLS ip:port;branch=z9hG4bK…;rport`, Max-Forwards, From tag,
  Call-ID, CSeq counted per Call-ID, Contact for dialog-forming methods, Content-Length always.
  Responses are matched to the request by Via branch and CSeq method (§17.1.3).
* Every request that arrives (on accepted or outbound connections) is answered on the same
  connection (§18.2.2) by `responder` or the defaults (see `SipPeer._default_response`), then
  recorded in `requests` for `wait_request`.
* Dialogs (§12): `dialog_from_response` (UAC) and `dialog_from_request` (UAS); `in_dialog` builds
  in-dialog requests from the route set (loose and strict routing) and `ack` the 2xx ACK. Route
  entries that name this peer's own listening address are skipped when sending: the peer plays the
  edge proxy too, and a proxy pops its own entry (§16.4) before forwarding.

Profiles at the bottom build what the retired peers put on the wire (Lync/OCS, AOL, plain
SIMPLE); each says where its shape comes from and what is inferred.
"""
from __future__ import annotations

import base64
import dataclasses
import itertools
import re
import secrets
import select
import socket
import ssl
import threading
import time
from xml.sax.saxutils import escape as _xml_escape
from xml.sax.saxutils import quoteattr as _xml_attr

__all__ = [
    "SipPeer", "SipMessage", "Dialog", "Connection", "NO_RESPONSE",
    "dialog_from_response", "dialog_from_request", "parse_message", "parse_name_addr",
    "split_list", "strip_tag", "uri_host_port", "uri_user", "build_message",
    "LyncEndpoint", "lync_invite_headers", "lync_message_headers", "lync_subscribe_headers",
    "lync_message_sdp", "lync_pidf", "lync_typing_info", "LYNC_USER_AGENT",
    "aol_pidf", "simple_pidf", "iscomposing_xml",
]

#: RFC 3261 §7.3.3 and later RFCs' compact header forms.
COMPACT = {
    "m": "contact", "f": "from", "t": "to", "i": "call-id", "v": "via", "l": "content-length",
    "c": "content-type", "k": "supported", "e": "content-encoding", "o": "event",
    "u": "allow-events", "s": "subject", "r": "refer-to", "b": "referred-by",
    "x": "session-expires", "a": "accept-contact", "j": "reject-contact",
    "d": "request-disposition", "y": "identity", "n": "identity-info",
}

#: Headers whose values are comma-separated lists (several values may share one line).
LIST_HEADERS = {
    "via", "route", "record-route", "contact", "allow", "supported", "require",
    "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
    "allow-events", "content-encoding", "path", "service-route", "in-reply-to",
}

#: List headers whose values are addresses or hops: `header()` gives the first one.
#: For the other list headers (Allow, Supported...) `header()` joins every value with ", ".
ELEMENT_HEADERS = {"via", "route", "record-route", "contact", "path", "service-route"}

#: Largest message a connection buffers before giving up on it.
MAX_MESSAGE = 1 << 20

#: Return this from a responder to send no response at all.
NO_RESPONSE = object()


def _key(name: str) -> str:
    """The lower-case full name of a header (compact forms expanded)."""
    n = name.strip().lower()
    return COMPACT.get(n, n)


def _token(n=8) -> str:
    return secrets.token_hex(n // 2)


def _split_outside(value: str, sep: str, maxsplit=-1) -> list[str]:
    """Splits on `sep` outside double quotes and <...>."""
    out, cur, depth, quoted, esc = [], [], 0, False, False
    for ch in value:
        if esc:
            cur.append(ch)
            esc = False
            continue
        if quoted:
            if ch == "\\":
                esc = True
            elif ch == '"':
                quoted = False
            cur.append(ch)
            continue
        if ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0 and maxsplit != 0:
            out.append("".join(cur))
            cur = []
            maxsplit -= 1
            continue
        cur.append(ch)
    out.append("".join(cur))
    return out


def split_list(value: str) -> list[str]:
    """A list header's value split at top-level commas (not inside quotes or <...>)."""
    return [v.strip() for v in _split_outside(value, ",") if v.strip()]


def _params(text: str) -> dict:
    out = {}
    for p in _split_outside(text, ";"):
        p = p.strip()
        if not p:
            continue
        k, eq, v = p.partition("=")
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] == '"':
            v = v[1:-1]
        out[k.strip().lower()] = v if eq else None
    return out


def parse_name_addr(value: str):
    """(display name, URI, header params) of a From/To/Contact/Route value, name-addr
    (`"Bob" <sip:bob@b.test>;tag=1`) or addr-spec (`sip:bob@b.test;tag=1`) form."""
    value = value.strip()
    quoted, lt = False, -1
    for i, ch in enumerate(value):
        if ch == '"':
            quoted = not quoted
        elif ch == "<" and not quoted:
            lt = i
            break
    if lt >= 0:
        gt = value.find(">", lt)
        display = value[:lt].strip().strip('"')
        uri = value[lt + 1:gt if gt >= 0 else len(value)]
        rest = value[gt + 1:] if gt >= 0 else ""
        return display, uri, _params(rest)
    uri, _, rest = value.partition(";")
    return "", uri.strip(), _params(rest)


def strip_tag(value: str) -> str:
    """A From/To value without its `tag` parameter (other parameters, e.g. epid, are kept)."""
    display, uri, params = parse_name_addr(value)
    params.pop("tag", None)
    prefix = f'"{display}"' if display else ""
    tail = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
    return f"{prefix}<{uri}>{tail}"


def uri_host_port(uri: str):
    """(host, port or None) of a sip:/sips: URI."""
    u = uri.split(":", 1)[1] if ":" in uri else uri
    u = u.split(";", 1)[0].split("?", 1)[0]
    u = u.rsplit("@", 1)[-1]
    if u.startswith("["):
        host, _, rest = u[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    host, _, port = u.partition(":")
    return host, int(port) if port.isdigit() else None


def uri_user(uri: str) -> str:
    u = uri.split(":", 1)[1] if ":" in uri else uri
    return u.split("@", 1)[0] if "@" in u else ""


class SipMessage:
    """One parsed SIP request or response. Header look-ups are case-insensitive and know the
    compact forms. `headers_all` splits list headers (Via, Route, Contact, Allow, ...) into
    their values, whether they shared a line or not; see `header` for the single-value view."""

    def __init__(self, start_line: str, headers: list, body: bytes = b"", raw: bytes = b""):
        self.start_line = start_line
        self.headers = list(headers)  # [(name as sent, value)]
        self.body = body
        self.raw = raw
        self.method = self.uri = self.status = self.reason = None
        if start_line.startswith("SIP/"):
            parts = start_line.split(" ", 2)
            self.status = int(parts[1])
            self.reason = parts[2] if len(parts) > 2 else ""
        else:
            parts = start_line.split(" ")
            if len(parts) != 3:
                raise ValueError(f"bad request line {start_line!r}")
            self.method, self.uri = parts[0], parts[1]
        #: The connection it arrived on (None for messages we built).
        self.conn = None
        self.received_at = None
        #: For requests we answered: the To tag we used.
        self.local_tag = None
        #: For requests we answered: the response we sent (a SipMessage), if any.
        self.answer = None
        #: For final responses to our requests: the request, and the 1xx that came before.
        self.request = None
        self.provisional = []

    # -- headers ---------------------------------------------------------------------------
    def _values(self, name):
        k = _key(name)
        return [v for n, v in self.headers if _key(n) == k]

    def headers_all(self, name) -> list[str]:
        vals = self._values(name)
        if _key(name) in LIST_HEADERS:
            return [x for v in vals for x in split_list(v)]
        return vals

    def header(self, name, default=None):
        """The first value for Via, Route, Record-Route, Contact (the top one); every value
        joined with ", " for other list headers (Allow, Supported, Accept...); else the first
        line's value."""
        vals = self.headers_all(name)
        if not vals:
            return default
        k = _key(name)
        if k in LIST_HEADERS and k not in ELEMENT_HEADERS:
            return ", ".join(vals)
        return vals[0]

    def has(self, name) -> bool:
        return bool(self._values(name))

    def params(self, name) -> dict:
        """Parameters of the (first) value of a header: `;tag=` of From, `;branch=` of Via,
        `;expires=` of Subscription-State, `;charset=` of Content-Type... Keys lower-case,
        flag parameters map to None."""
        v = self.header(name)
        if v is None:
            return {}
        if "<" in v and _key(name) != "via":
            return parse_name_addr(v)[2]
        parts = _split_outside(v, ";", 1)
        return _params(parts[1]) if len(parts) > 1 else {}

    def value(self, name):
        """The (first) value of a header without its parameters ("active" for
        `Subscription-State: active;expires=60`)."""
        v = self.header(name)
        return None if v is None else _split_outside(v, ";", 1)[0].strip()

    def uri_of(self, name):
        """The URI inside a From/To/Contact/Route value."""
        v = self.header(name)
        return None if v is None else parse_name_addr(v)[1]

    # -- common fields --------------------------------------------------------------------
    @property
    def is_request(self):
        return self.method is not None

    @property
    def from_tag(self):
        return self.params("From").get("tag")

    @property
    def to_tag(self):
        return self.params("To").get("tag")

    @property
    def call_id(self):
        return self.header("Call-ID")

    @property
    def cseq(self):
        v = self.header("CSeq")
        if not v:
            return None
        num, _, method = v.strip().partition(" ")
        return int(num), method.strip()

    @property
    def branch(self):
        return self.params("Via").get("branch")

    @property
    def text(self):
        return self.body.decode("utf-8", errors="replace")

    @property
    def content_type(self):
        return self.value("Content-Type")

    def to_bytes(self) -> bytes:
        return build_message(self.start_line, self.headers, self.body)

    def summary(self) -> str:
        if self.is_request:
            return f"{self.method} {self.uri}"
        cs = self.cseq
        return f"{self.status} {self.reason} ({cs[1] if cs else '?'})"

    def __repr__(self):
        return f"<SipMessage {self.summary()}>"


def build_message(start_line: str, headers, body: bytes = b"") -> bytes:
    """Serialises a message; Content-Length is always (re)computed and written last."""
    lines = [start_line]
    for n, v in headers:
        if _key(n) == "content-length":
            continue
        lines.append(f"{n}: {v}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


_CL = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*\r?$", re.I | re.M)


def parse_message(data: bytes) -> SipMessage:
    """Parses one complete message (head and body)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, _, body = data.partition(b"\n\n")
    text = head.decode("utf-8", errors="replace").replace("\r\n", "\n")
    lines = text.split("\n")
    start, headers = lines[0].strip(), []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation (§7.3.1)
            n, v = headers[-1]
            headers[-1] = (n, v + " " + line.strip())
            continue
        if not line.strip():
            continue
        n, colon, v = line.partition(":")
        if not colon:
            raise ValueError(f"bad header line {line!r}")
        headers.append((n.strip(), v.strip()))
    m = SipMessage(start, headers, body, raw=data)
    cl = m.header("Content-Length")
    if cl is not None and cl.isdigit():
        m.body = body[:int(cl)]
    return m


# ---------------------------------------------------------------------------------------------
# dialogs
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Dialog:
    """RFC 3261 §12 dialog state, from one side's point of view. `local_party`/`remote_party`
    are the From/To values without tags (parameters such as `epid` kept); `route_set` holds
    Route header values in sending order."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_party: str
    remote_party: str
    remote_target: str
    route_set: list
    local_cseq: int
    remote_cseq: int | None = None
    conn: "Connection | None" = None
    #: The Contact we put in in-dialog requests (None: SipPeer's default for the method).
    local_contact: str | None = None

    @property
    def local_uri(self):
        return parse_name_addr(self.local_party)[1]

    @property
    def remote_uri(self):
        return parse_name_addr(self.remote_party)[1]


def dialog_from_response(req: SipMessage, resp: SipMessage) -> Dialog:
    """The UAC side of the dialog a 1xx (with To tag) or 2xx to `req` created (§12.1.2):
    route set = the response's Record-Route reversed, remote target = its Contact."""
    contact = resp.uri_of("Contact") if resp.has("Contact") else None
    return Dialog(
        call_id=req.call_id,
        local_tag=req.from_tag,
        remote_tag=resp.to_tag,
        local_party=strip_tag(req.header("From")),
        remote_party=strip_tag(resp.header("To")),
        remote_target=contact or req.uri,
        route_set=list(reversed(resp.headers_all("Record-Route"))),
        local_cseq=req.cseq[0],
        conn=req.conn,
    )


def dialog_from_request(req: SipMessage, our_to_tag: str) -> Dialog:
    """The UAS side of the dialog `req` (INVITE, SUBSCRIBE...) created when we answered it with
    To tag `our_to_tag` (§12.1.1): route set = its Record-Route in order, remote target = its
    Contact. Our CSeq starts at 0 (the first in-dialog request has 1)."""
    contact = req.uri_of("Contact") if req.has("Contact") else None
    return Dialog(
        call_id=req.call_id,
        local_tag=our_to_tag,
        remote_tag=req.from_tag,
        local_party=strip_tag(req.header("To")),
        remote_party=strip_tag(req.header("From")),
        remote_target=contact,
        route_set=list(req.headers_all("Record-Route")),
        local_cseq=0,
        remote_cseq=req.cseq[0],
        conn=req.conn,
    )


# ---------------------------------------------------------------------------------------------
# connections
# ---------------------------------------------------------------------------------------------

class Connection:
    """One TCP or TLS connection and its reader thread. The socket is non-blocking; reads and
    writes are serialised by `lock` (an SSL object must not be read and written from two
    threads at once), and the reader waits in select() without holding it."""

    def __init__(self, peer, sock, outbound: bool, remote):
        self.peer = peer
        self.sock = sock
        self.outbound = outbound
        self.remote = remote  # (ip, port)
        self.local = None
        self.lock = threading.Lock()
        self.buf = bytearray()
        self.closed = False
        self.pings_received = 0
        self.pongs_received = 0
        self.awaiting_pong = 0
        #: TLS: the peer certificate (dict from getpeercert) and its subjectAltName DNS names.
        self.peer_cert = None
        self.peer_names = []
        self.thread = None

    def __repr__(self):
        kind = "out" if self.outbound else "in"
        return f"<Connection {kind} {self.remote[0]}:{self.remote[1]}{' closed' if self.closed else ''}>"

    @property
    def is_tls(self):
        return isinstance(self.sock, ssl.SSLSocket)

    def send(self, data: bytes, timeout=10):
        """Writes all of `data` (the socket is non-blocking; waits for room up to `timeout`)."""
        if self.closed:
            raise ConnectionError(f"{self!r} is closed")
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        with self.lock:
            while view:
                try:
                    n = self.sock.send(view)
                    view = view[n:]
                    continue
                except (BlockingIOError, ssl.SSLWantWriteError):
                    want = ([], [self.sock])
                except ssl.SSLWantReadError:
                    want = ([self.sock], [])
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"could not write to {self!r} within {timeout}s")
                select.select(want[0], want[1], [], min(left, 0.5))

    def close(self):
        if self.closed:
            return
        self.closed = True
        got = self.lock.acquire(timeout=1)
        try:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                self.sock.close()
            except OSError:
                pass
        finally:
            if got:
                self.lock.release()
        with self.peer._cond:
            self.peer._cond.notify_all()

    def _note_cert(self):
        if not self.is_tls:
            return
        try:
            self.peer_cert = self.sock.getpeercert() or None
        except (ValueError, OSError):
            self.peer_cert = None
        if self.peer_cert:
            self.peer_names = [v for k, v in self.peer_cert.get("subjectAltName", ()) if k == "DNS"]

    def run(self):
        try:
            while not self.closed:
                try:
                    pending = self.sock.pending() if self.is_tls else 0
                    if not pending:
                        r, _, _ = select.select([self.sock], [], [], 0.2)
                        if not r:
                            continue
                    with self.lock:
                        if self.closed:
                            break
                        data = self.sock.recv(65536)
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError,
                        socket.timeout, InterruptedError):
                    continue
                except (OSError, ValueError):
                    break
                if not data:
                    break
                self.buf += data
                if not self._extract():
                    break
        finally:
            self.close()

    def _extract(self) -> bool:
        """Takes complete messages and keep-alives off the buffer; False to drop the
        connection (unframeable input)."""
        buf = self.buf
        while buf:
            if buf.startswith(b"\r\n"):
                if buf.startswith(b"\r\n\r\n"):
                    del buf[:4]
                    self.pings_received += 1
                    try:
                        self.send(b"\r\n")  # RFC 5626 §4.4.1 pong
                    except OSError:
                        return False
                    continue
                if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)) and not self.awaiting_pong:
                    return True  # maybe the start of a ping: wait for more
                del buf[:2]
                self.pongs_received += 1
                self.awaiting_pong = max(0, self.awaiting_pong - 1)
                with self.peer._cond:
                    self.peer._cond.notify_all()
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return len(buf) <= MAX_MESSAGE
            m = _CL.search(bytes(buf[:end + 2]))
            total = end + 4 + (int(m.group(1)) if m else 0)
            if total > MAX_MESSAGE:
                return False
            if len(buf) < total:
                return True
            data = bytes(buf[:total])
            del buf[:total]
            try:
                msg = parse_message(data)
            except ValueError as e:
                self.peer.errors.append(f"unparseable message from {self.remote}: {e}: {data[:200]!r}")
                continue
            msg.conn = self
            msg.received_at = time.monotonic()
            self.peer._dispatch(msg, self)
        return True


# ---------------------------------------------------------------------------------------------
# the peer
# ---------------------------------------------------------------------------------------------

class SipPeer:
    """A SIP UA for domain `domain` listening on ip:port (port 0: a free one, see `.port`) over
    `transport` "tcp" or "tls" (`cert`/`key`: our certificate, served to clients and presented as
    client certificate; `ca`: trust anchor for the other side's certificate).

    Attributes a test reads: `requests` (every request received, in order), `responses` (every
    response received), `connections`, `outbound` (the default connection for sending),
    `errors` (unparseable input, TLS handshake failures, responder exceptions)."""

    DEFAULT_ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY, INFO, BENOTIFY"

    def __init__(self, domain, ip, port=0, *, transport="tcp", cert=None, key=None, ca=None,
                 require_client_cert=False, user_agent=None):
        if transport not in ("tcp", "tls"):
            raise ValueError("transport is 'tcp' or 'tls'")
        if transport == "tls" and not (cert and key):
            raise ValueError("a TLS peer needs cert and key")
        self.domain, self.ip, self.transport = domain, ip, transport
        self.cert, self.key, self.ca = cert, key, ca
        self.user_agent = user_agent
        #: Called with each incoming request; see `_answer` for what it may return.
        self.responder = None
        self.requests: list[SipMessage] = []
        self.responses: list[SipMessage] = []
        self.connections: list[Connection] = []
        self.outbound: Connection | None = None
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._consumed: set[int] = set()
        self._txns: dict = {}  # (branch, method) -> [provisional list, final or None, conn]
        self._cseq: dict = {}
        self._stopping = False
        self._server_ctx = None
        if transport == "tls":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(cert), str(key))
            if ca:
                ctx.load_verify_locations(str(ca))
                ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
            self._server_ctx = ctx
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((ip, port))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._threads = []
        t = threading.Thread(target=self._accept_loop, name=f"sip-peer-accept-{domain}", daemon=True)
        t.start()
        self._threads.append(t)

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return f"<SipPeer {self.domain} {self.transport}://{self.ip}:{self.port}>"

    @property
    def address(self):
        """"ip:port" of the listener."""
        return f"{self.ip}:{self.port}"

    @property
    def via_transport(self):
        return self.transport.upper()

    def stop(self):
        """Closes the listener and every connection and joins the threads."""
        self._stopping = True
        try:
            self._listener.close()
        except OSError:
            pass
        for c in list(self.connections):
            c.close()
        for t in list(self._threads):
            if t is not threading.current_thread():
                t.join(timeout=3)
        with self._cond:
            self._cond.notify_all()

    def _accept_loop(self):
        while not self._stopping:
            try:
                s, addr = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            t = threading.Thread(target=self._serve_accepted, args=(s, addr), daemon=True,
                                 name=f"sip-peer-in-{addr[0]}:{addr[1]}")
            t.start()
            self._threads.append(t)

    def _serve_accepted(self, s, addr):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._server_ctx is not None:
            s.settimeout(10)
            try:
                s = self._server_ctx.wrap_socket(s, server_side=True)
            except (ssl.SSLError, OSError) as e:
                self.errors.append(f"TLS handshake with {addr} failed: {e}")
                s.close()
                return
        s.setblocking(False)
        conn = Connection(self, s, False, addr)
        conn.local = s.getsockname()
        conn._note_cert()
        conn.thread = threading.current_thread()
        with self._cond:
            if self._stopping:
                s.close()
                return
            self.connections.append(conn)
            self._cond.notify_all()
        conn.run()

    def connect(self, host, port, server_name=None, *, timeout=10) -> Connection:
        """Opens an outbound connection (from our ip) to host:port and makes it `outbound`, the
        default for sending. TLS: verifies the server with `ca` (and its name against
        `server_name` when given, also sent as SNI) and presents cert/key as client
        certificate."""
        raw = socket.create_connection((host, port), timeout=timeout, source_address=(self.ip, 0))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s = raw
        if self.transport == "tls":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if self.ca:
                ctx.load_verify_locations(str(self.ca))
                ctx.check_hostname = server_name is not None
            else:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if self.cert and self.key:
                ctx.load_cert_chain(str(self.cert), str(self.key))
            try:
                s = ctx.wrap_socket(raw, server_hostname=server_name)
            except BaseException:
                raw.close()
                raise
        s.setblocking(False)
        conn = Connection(self, s, True, (host, port))
        conn.local = s.getsockname()
        conn._note_cert()
        t = threading.Thread(target=conn.run, daemon=True, name=f"sip-peer-out-{host}:{port}")
        conn.thread = t
        with self._cond:
            self.connections.append(conn)
            self.outbound = conn
        t.start()
        self._threads.append(t)
        return conn

    def wait_connection(self, timeout=5, predicate=None) -> Connection:
        """The first accepted (inbound) connection matching `predicate`, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for c in self.connections:
                    if not c.outbound and (predicate is None or predicate(c)):
                        return c
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self!r}: no inbound connection within {timeout}s; "
                                       f"have {self.connections}")
                self._cond.wait(left)

    def _pick_conn(self, conn=None, dialog=None) -> Connection:
        if conn is not None:
            return conn
        if dialog is not None and dialog.conn is not None and not dialog.conn.closed:
            return dialog.conn
        if self.outbound is not None and not self.outbound.closed:
            return self.outbound
        live = [c for c in self.connections if not c.closed]
        if not live:
            raise ConnectionError(f"{self!r} has no open connection (call connect() first)")
        return live[-1]

    # -- keep-alives and raw bytes --------------------------------------------------------
    def send_raw(self, data: bytes, conn=None):
        self._pick_conn(conn).send(data)

    def ping(self, conn=None, timeout=5) -> bool:
        """Sends a CRLFCRLF keep-alive ping and waits for the CRLF pong (RFC 5626 §4.4.1)."""
        c = self._pick_conn(conn)
        before = c.pongs_received
        c.awaiting_pong += 1
        c.send(b"\r\n\r\n")
        deadline = time.monotonic() + timeout
        with self._cond:
            while c.pongs_received <= before:
                left = deadline - time.monotonic()
                if left <= 0 or c.closed:
                    raise TimeoutError(f"no CRLF pong on {c!r} within {timeout}s")
                self._cond.wait(min(left, 0.2))
        return True

    # -- sending requests -----------------------------------------------------------------
    def _next_cseq(self, call_id, cseq):
        if cseq is None:
            cseq = self._cseq.get(call_id, 0) + 1
        self._cseq[call_id] = max(cseq, self._cseq.get(call_id, 0))
        return cseq

    def default_contact(self, user=""):
        at = f"{user}@" if user else ""
        return f"<sip:{at}{self.ip}:{self.port};transport={self.transport}>"

    @staticmethod
    def _party(value, tag):
        v = value.strip()
        if "<" not in v:
            v = f"<{v}>"
        return f"{v};tag={tag}" if tag else v

    def request(self, method, uri, *, from_uri, to_uri, from_tag=None, to_tag=None, call_id=None,
                cseq=None, headers=(), body=b"", content_type=None, route=(), contact=None,
                timeout=5, conn=None, wait=True):
        """Sends a request and returns its final response (1xx are collected in
        `resp.provisional`; `resp.request` is what we sent). from_uri/to_uri may be bare URIs or
        whole name-addr values with parameters (`"A"<sip:a@x>;epid=1`); tags are added. `headers`
        ((name, value) pairs) come after ours; one named Max-Forwards, Contact, Content-Type or
        User-Agent replaces ours. `contact`: None = our default for INVITE, SUBSCRIBE, NOTIFY,
        REFER and UPDATE, "" = none. ACK, and wait=False, return the sent request instead."""
        method = method.upper()
        call_id = call_id or f"{secrets.token_hex(8)}@{self.domain}"
        if from_tag is None:
            from_tag = _token(10)
        cseq = self._next_cseq(call_id, cseq)
        cseq_method = method
        branch = "z9hG4bK" + secrets.token_hex(8)
        user_names = {_key(n) for n, _ in headers}
        hdrs = [("Via", f"SIP/2.0/{self.via_transport} {self.ip}:{self.port};branch={branch};rport")]
        if "max-forwards" not in user_names:
            hdrs.append(("Max-Forwards", "70"))
        for r in route:
            hdrs.append(("Route", r if "<" in r else f"<{r}>"))
        hdrs += [("From", self._party(from_uri, from_tag)), ("To", self._party(to_uri, to_tag)),
                 ("Call-ID", call_id), ("CSeq", f"{cseq} {cseq_method}")]
        if "contact" not in user_names:
            if contact is None and method in ("INVITE", "SUBSCRIBE", "NOTIFY", "REFER", "UPDATE"):
                contact = self.default_contact(uri_user(parse_name_addr(from_uri)[1]))
            if contact:
                hdrs.append(("Contact", contact if "<" in contact or contact == "*" else f"<{contact}>"))
        if self.user_agent and "user-agent" not in user_names:
            hdrs.append(("User-Agent", self.user_agent))
        hdrs += [(n, v) for n, v in headers]
        if isinstance(body, str):
            body = body.encode("utf-8")
        if body and content_type is None and "content-type" not in user_names:
            content_type = "text/plain;charset=UTF-8"
        if content_type and "content-type" not in user_names:
            hdrs.append(("Content-Type", content_type))
        c = self._pick_conn(conn)
        data = build_message(f"{method} {uri} SIP/2.0", hdrs, body)
        req = parse_message(data)
        req.conn = c
        if method != "ACK":
            with self._cond:
                self._txns[(branch, cseq_method)] = [[], None, c]
        c.send(data)
        if method == "ACK" or not wait:
            return req
        return self.wait_response(req, timeout)

    def wait_response(self, req: SipMessage, timeout=5) -> SipMessage:
        """The final response to `req` (sent with wait=False), waiting for it."""
        key = (req.branch, req.cseq[1])
        deadline = time.monotonic() + timeout
        with self._cond:
            txn = self._txns.get(key)
            if txn is None:
                raise KeyError(f"no transaction for {req!r}")
            while txn[1] is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    got = ", ".join(p.summary() for p in txn[0]) or "nothing"
                    raise TimeoutError(
                        f"{self!r}: no final response to {req.method} {req.uri} (Call-ID "
                        f"{req.call_id}) within {timeout}s; received {got} for it")
                if txn[2].closed:
                    raise ConnectionError(
                        f"{self!r}: {txn[2]!r} closed before a final response to {req.method}")
                self._cond.wait(min(left, 0.2))
            resp = txn[1]
        resp.request = req
        resp.provisional = list(txn[0])
        return resp

    def in_dialog(self, dialog: Dialog, method, headers=(), body=b"", content_type=None, *,
                  timeout=5, conn=None, wait=True, contact=None):
        """Sends an in-dialog request (CSeq = ++dialog.local_cseq; Request-URI = remote target,
        Route = route set; strict routing when the first route has no `lr`) and returns the
        final response. Route entries naming our own listener are left out (see module doc)."""
        method = method.upper()
        if method == "ACK":
            raise ValueError("use ack() for ACK")
        dialog.local_cseq += 1
        ruri, routes = self._target(dialog)
        return self.request(
            method, ruri, from_uri=dialog.local_party, to_uri=dialog.remote_party,
            from_tag=dialog.local_tag, to_tag=dialog.remote_tag, call_id=dialog.call_id,
            cseq=dialog.local_cseq, headers=headers, body=body, content_type=content_type,
            route=routes, contact=dialog.local_contact if contact is None else contact,
            timeout=timeout, conn=self._pick_conn(conn, dialog), wait=wait)

    def ack(self, dialog: Dialog, invite_cseq, *, headers=(), body=b"", content_type=None, conn=None):
        """The ACK for a 2xx to INVITE (§13.2.2.4): its own transaction, CSeq number of the
        INVITE, sent along the dialog's route set. Returns the sent ACK."""
        ruri, routes = self._target(dialog)
        return self.request(
            "ACK", ruri, from_uri=dialog.local_party, to_uri=dialog.remote_party,
            from_tag=dialog.local_tag, to_tag=dialog.remote_tag, call_id=dialog.call_id,
            cseq=invite_cseq, headers=headers, body=body, content_type=content_type,
            route=routes, contact="", conn=self._pick_conn(conn, dialog))

    def _is_own(self, route_value):
        host, port = uri_host_port(parse_name_addr(route_value)[1])
        return host == self.ip and (port or (5061 if self.transport == "tls" else 5060)) == self.port

    def _target(self, dialog):
        routes = [r for r in dialog.route_set if not self._is_own(r)]
        if routes and "lr" not in _params(parse_name_addr(routes[0])[1].partition(";")[2]):
            # strict routing (§12.2.1.1): first route becomes the Request-URI
            first = parse_name_addr(routes[0])[1]
            return first, routes[1:] + [f"<{dialog.remote_target}>"]
        return dialog.remote_target, routes

    def dialog_for(self, req: SipMessage) -> Dialog:
        """The UAS dialog for a request we answered (with `req.local_tag` as our tag)."""
        if req.local_tag is None:
            raise ValueError(f"{req!r} was not answered with a To tag")
        return dialog_from_request(req, req.local_tag)

    # -- receiving ------------------------------------------------------------------------
    def _dispatch(self, msg: SipMessage, conn: Connection):
        if msg.is_request:
            try:
                self._answer(msg, conn)
            except Exception as e:  # a broken responder must not kill the reader
                self.errors.append(f"answering {msg!r}: {e!r}")
            with self._cond:
                self.requests.append(msg)
                self._cond.notify_all()
            return
        with self._cond:
            self.responses.append(msg)
            cs = msg.cseq
            txn = self._txns.get((msg.branch, cs[1] if cs else None))
            if txn is not None and txn[1] is None:
                if msg.status < 200:
                    txn[0].append(msg)
                else:
                    txn[1] = msg
            self._cond.notify_all()

    def _answer(self, req: SipMessage, conn: Connection):
        """Answers `req` on `conn`. `responder(req)` may return None (the default answer),
        NO_RESPONSE, or one response or a list of them, each a tuple (code[, reason[, headers[,
        body]]]): headers are (name, value) pairs that replace ours of the same name
        (Via excepted)."""
        answers = None
        if self.responder is not None:
            answers = self.responder(req)
        if answers is None:
            answers = self._default_response(req)
        if answers is None or answers is NO_RESPONSE:
            return
        if isinstance(answers, int) or (isinstance(answers, tuple) and answers and isinstance(answers[0], int)):
            answers = [answers]
        for a in answers:
            if isinstance(a, int):
                a = (a,)
            code = a[0]
            reason = a[1] if len(a) > 1 and a[1] else _REASONS.get(code, "Unknown")
            hdrs = list(a[2]) if len(a) > 2 and a[2] else []
            body = a[3] if len(a) > 3 and a[3] else b""
            data = self.make_response(req, code, reason, hdrs, body)
            req.answer = parse_message(data)
            conn.send(data)

    def make_response(self, req: SipMessage, code, reason="", headers=(), body=b"") -> bytes:
        """A response to `req`: Via, From, Call-ID, CSeq copied, To with our tag (one per
        request, kept in `req.local_tag`, not added to 100), Record-Route copied for
        dialog-forming requests, Contact for their 2xx."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        user = {_key(n) for n, _ in headers}
        hdrs = [("Via", v) for n, v in req.headers if _key(n) == "via"]
        hdrs.append(("From", req.header("From")))
        to = req.header("To")
        if req.to_tag:
            req.local_tag = req.to_tag
        elif code > 100:
            if req.local_tag is None:
                req.local_tag = _token(10)
            to = f"{to};tag={req.local_tag}"
        hdrs += [("To", to), ("Call-ID", req.call_id), ("CSeq", req.header("CSeq"))]
        forming = req.method in ("INVITE", "SUBSCRIBE", "REFER")
        if forming and 100 < code < 300:
            hdrs += [("Record-Route", v) for n, v in req.headers if _key(n) == "record-route"]
            hdrs.append(("Contact", self.default_contact(uri_user(req.uri_of("To") or ""))))
        if self.user_agent:
            hdrs.append(("Server", self.user_agent))
        hdrs = [(n, v) for n, v in hdrs if _key(n) == "via" or _key(n) not in user]
        hdrs += [(n, v) for n, v in headers]
        if body and "content-type" not in user:
            hdrs.append(("Content-Type", "text/plain;charset=UTF-8"))
        return build_message(f"SIP/2.0 {code} {reason}", hdrs, body)

    def _default_response(self, req: SipMessage):
        m = req.method
        if m in ("ACK", "BENOTIFY"):
            return None
        if m == "SUBSCRIBE":
            exp = req.header("Expires")
            exp = min(int(exp), 3600) if exp and exp.strip().isdigit() else 3600
            return (202, "Accepted", [("Expires", str(exp))])
        if m == "INVITE":
            user = uri_user(req.uri_of("To") or "") or "peer"
            sdp = (f"v=0\r\no=- 0 0 IN IP4 {self.ip}\r\ns=session\r\nc=IN IP4 {self.ip}\r\n"
                   f"t=0 0\r\nm=message {self.port} sip sip:{user}@{self.domain}\r\n"
                   f"a=accept-types:text/plain\r\n")
            return (200, "OK", [("Content-Type", "application/sdp")], sdp)
        if m == "OPTIONS":
            return (200, "OK", [("Allow", self.DEFAULT_ALLOW),
                                ("Accept", "application/sdp, application/pidf+xml, text/plain, "
                                           "application/im-iscomposing+xml")])
        if m in ("NOTIFY", "MESSAGE", "BYE", "INFO", "CANCEL", "UPDATE", "PRACK", "PUBLISH", "REGISTER"):
            return (200, "OK")
        if m == "REFER":
            return (202, "Accepted")
        return (501, "Not Implemented")

    def wait_request(self, method=None, predicate=None, timeout=5) -> SipMessage:
        """The first received request not yet returned by wait_request that has `method` (a
        name or a tuple of names; None: any) and satisfies `predicate`. Raises TimeoutError
        naming everything that did arrive."""
        methods = None if method is None else {m.upper() for m in ((method,) if isinstance(method, str) else method)}
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, r in enumerate(self.requests):
                    if i in self._consumed:
                        continue
                    if methods is not None and r.method not in methods:
                        continue
                    if predicate is not None and not predicate(r):
                        continue
                    self._consumed.add(i)
                    return r
                left = deadline - time.monotonic()
                if left <= 0:
                    what = "/".join(sorted(methods)) if methods else "request"
                    seen = "; ".join(
                        f"{r.summary()} [Call-ID {r.call_id}]{' (already taken)' if i in self._consumed else ''}"
                        for i, r in enumerate(self.requests)) or "nothing"
                    cond = " matching the predicate" if predicate else ""
                    raise TimeoutError(f"{self!r}: no {what}{cond} within {timeout}s; received: {seen}")
                self._cond.wait(min(left, 0.2))


_REASONS = {
    100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK", 202: "Accepted",
    400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 415: "Unsupported Media Type", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 486: "Busy Here", 488: "Not Acceptable Here",
    489: "Bad Event", 500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
    603: "Decline",
}


# ---------------------------------------------------------------------------------------------
# profiles: what the retired peers put on the wire
# ---------------------------------------------------------------------------------------------
#
# Lync / OCS. Sources:
#  * A Skype for Business (Lync server 2015 family) IM INVITE captured in a public test fixture
#    (sip_raw.h, `invite_with_two_records_route`, a TrueConf gateway's tests): From
#    `"Name"<sip:…>;tag=…;epid=48a4a25bb1`, GRUU Contact
#    `<sip:user@domain;opaque=user:epid:4BYPlX2Wv1mCQSyyYpXsJQAA;gruu>`, `Record-Route:
#    <sip:pool:5061;transport=tls;ms-fe=FE;opaque=state:T;lr>;tag=…` (and one with
#    `ms-route-sig`/`ms-rrsig`), `ms-text-format: text/plain; charset=UTF-8; ms-body=<base64>`,
#    `ms-im-format: text/rtf; …`, the `Supported:` list below, `Ms-Conversation-ID`,
#    `Roster-Manager`, `EndPoints`, `ms-keep-alive: UAC;hop-hop=yes`, and the SDP
#    `m=message 5060 sip null` / `a=accept-types:…`. In-dialog MESSAGEs of the same fixture:
#    `Supported: ms-dialog-route-set-update`, `Supported: timer`, `text/plain; charset=UTF-8`.
#  * [MS-SDP] §3.1.5.3 (RTC 1.2 `m=x-ms-message 5060 sip null`, 1.3 `m=message 5060 sip
#    sip:peer`) and pidgin-sipe's sipe-im.c (OCS 2007 clients send `m=message <port> sip null`).
#  * User-Agent of Lync 2010: `UCCAPI/4.0.7577.0 OC/4.0.7577.0 (Microsoft Lync 2010)` (the
#    string pidgin-sipe users configure to pass as Lync 2010).
#  * SUBSCRIBE: pidgin-sipe sipe-subscriptions.c (`Event: presence`, `Supported:
#    com.microsoft.autoextend`, `ms-piggyback-first-notify`, `ms-benotify`).

LYNC_USER_AGENT = "UCCAPI/4.0.7577.0 OC/4.0.7577.0 (Microsoft Lync 2010)"

#: Supported: values of the captured Lync IM INVITE, in its order (ms-dialog-route-set-update
#: comes first, before Ms-Text-Format).
LYNC_INVITE_SUPPORTED = [
    "ms-embedded-first-message", "ms-delayed-accept", "ms-renders-isf", "ms-renders-gif",
    "ms-renders-mime-alternative", "timer", "histinfo", "ms-safe-transfer", "ms-sender",
    "ms-early-media", "com.microsoft.rtc-multiparty", "ms-conf-invite",
]
LYNC_ALLOW = "INVITE, BYE, ACK, CANCEL, INFO, MESSAGE, UPDATE, REFER, NOTIFY, BENOTIFY"


@dataclasses.dataclass
class LyncEndpoint:
    """One Lync user's endpoint as its edge presents it: `from_uri` (with `;epid=`), the GRUU
    `contact`, and `record_route` when `edge` ("host:port" of the edge, usually the SipPeer's
    own address) is set."""

    user: str
    domain: str = "lync.test"
    display: str | None = None
    epid: str = dataclasses.field(default_factory=lambda: secrets.token_hex(5))
    gruu_opaque: str = dataclasses.field(
        default_factory=lambda: base64.urlsafe_b64encode(secrets.token_bytes(16) + b"\0\0").decode())
    edge: str | None = None
    transport: str = "tcp"
    front_end: str = "fe01"
    route_sig: str = dataclasses.field(
        default_factory=lambda: base64.urlsafe_b64encode(secrets.token_bytes(30)).decode())
    route_tag: str = dataclasses.field(default_factory=lambda: secrets.token_hex(16).upper())

    @property
    def uri(self):
        return f"sip:{self.user}@{self.domain}"

    @property
    def from_uri(self):
        name = f'"{self.display}"' if self.display else ""
        return f"{name}<{self.uri}>;epid={self.epid}"

    @property
    def contact(self):
        return f"<{self.uri};opaque=user:epid:{self.gruu_opaque};gruu>"

    @property
    def record_route(self):
        if not self.edge:
            return None
        sig = self.route_sig
        return (f"<sip:{self.edge};transport={self.transport};ms-fe={self.front_end}.{self.domain};"
                f"opaque=state:T;lr;ms-route-sig={sig}>;ms-rrsig={sig[::-1]};tag={self.route_tag}")


def _rtf(text: str) -> str:
    out = []
    for ch in text:
        if ch in "\\{}":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\par\r\n")
        elif ord(ch) > 127:
            code = ord(ch)
            out.append(f"\\u{code - 65536 if code > 32767 else code}?")
        else:
            out.append(ch)
    return ("{\\rtf1\\fbidis\\ansi\\ansicpg1252\\deff0\\nouicompat\\deflang1033{\\fonttbl{\\f0\\fnil\\fcharset0 Segoe UI;}}\r\n"
            "{\\*\\generator Riched20 15.0.4971}\\viewkind4\\uc1\r\n"
            f"\\pard\\f0\\fs20 {''.join(out)}\\par\r\n}}\r\n")


def lync_invite_headers(text, endpoint: LyncEndpoint | None = None, *, to_uri="sip:bob@a.test",
                        conversation_id=None, rtf=True):
    """The header set of a Lync session-mode IM INVITE carrying `text` as its first message
    (`Supported: ms-embedded-first-message`, `Ms-Text-Format ... ms-body=base64(text)`), with the
    endpoint's GRUU Contact and its edge's Record-Route. Send it with
    `from_uri=endpoint.from_uri`, `body=lync_message_sdp(...)`, `content_type="application/sdp"`."""
    ep = endpoint or LyncEndpoint("alice")
    b64 = base64.b64encode(text.encode("utf-8")).decode()
    conv = conversation_id or base64.b64encode(secrets.token_bytes(20)).decode()
    h = [("Supported", "ms-dialog-route-set-update"),
         ("Ms-Text-Format", f"text/plain; charset=UTF-8;ms-body={b64}")]
    if rtf:
        h.append(("Ms-Im-Format", "text/rtf; charset=UTF-8;ms-body="
                  + base64.b64encode(_rtf(text).encode("utf-8")).decode()))
    sup = iter(LYNC_INVITE_SUPPORTED)
    h += [("Supported", s) for s in itertools.islice(sup, 5)]
    h.append(("Ms-Conversation-ID", conv))
    h += [("Supported", s) for s in itertools.islice(sup, 5)]
    h += [("Roster-Manager", ep.uri), ("EndPoints", f"<{ep.uri}>, <{to_uri}>")]
    h += [("Supported", s) for s in sup]
    h += [("ms-keep-alive", "UAC;hop-hop=yes"), ("Allow", LYNC_ALLOW),
          ("User-Agent", LYNC_USER_AGENT), ("Contact", ep.contact)]
    if ep.record_route:
        h.insert(0, ("Record-Route", ep.record_route))
    return h


def lync_message_headers(endpoint: LyncEndpoint | None = None):
    """Headers of a Lync in-dialog MESSAGE (besides Content-Type)."""
    return [("User-Agent", LYNC_USER_AGENT), ("Supported", "ms-dialog-route-set-update"),
            ("Supported", "timer")]


def lync_subscribe_headers(endpoint: LyncEndpoint | None = None, *, accept="application/pidf+xml",
                           expires=3600, ms_extensions=False):
    """A Lync presence SUBSCRIBE's headers: Event, Accept (a federated subscriber toward a
    non-Microsoft server asks for PIDF), Expires, GRUU Contact, edge Record-Route. With
    ms_extensions, also the OCS client extensions `com.microsoft.autoextend`,
    `ms-piggyback-first-notify` and `ms-benotify` (pidgin-sipe's SUBSCRIBE), which let a
    Microsoft server put the first NOTIFY in the 200 and send BENOTIFYs."""
    ep = endpoint or LyncEndpoint("alice")
    h = [("Event", "presence"), ("Accept", accept), ("Expires", str(expires)),
         ("Supported", "ms-dialog-route-set-update")]
    if ms_extensions:
        h += [("Supported", "com.microsoft.autoextend"), ("Supported", "ms-piggyback-first-notify"),
              ("Supported", "ms-benotify")]
    h += [("ms-keep-alive", "UAC;hop-hop=yes"), ("User-Agent", LYNC_USER_AGENT),
          ("Contact", ep.contact)]
    if ep.record_route:
        h.insert(0, ("Record-Route", ep.record_route))
    return h


def lync_message_sdp(ip="127.0.0.1", port=5060, accept_types="text/plain"):
    """The SDP offer of a Lync IM INVITE: `m=message 5060 sip null` (MS-SDP §3.1.5.3)."""
    return (f"v=0\r\no=- 0 0 IN IP4 {ip}\r\ns=session\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=message {port} sip null\r\na=accept-types:{accept_types}\r\n")


def lync_typing_info(typing=True):
    """The body (Content-Type application/xml) of the INFO a Lync/OCS client sends in an IM
    dialog while typing (pidgin-sipe sipe-user.c). Lync *accepts* RFC 3994 iscomposing in
    MESSAGE (its SDP accept-types list application/im-iscomposing+xml); see iscomposing_xml."""
    return ('<?xml version="1.0"?><KeyboardActivity> <status status="%s" /></KeyboardActivity>'
            % ("type" if typing else "idle"))


# OCS/Lync availability number ranges (Lync `state/availability` documentation, as in
# docs/availability-mapping.md): the RPID-draft activity an OCS PIDF document carries for each.
_LYNC_RANGES = [
    (4500, "open", None),        # 0-4499 Available
    (6000, "open", "away"),      # 4500-5999 Available-Idle ("inactive")
    (9000, "open", "busy"),      # 6000-8999 Busy, Busy-Idle
    (12000, "open", "busy"),     # 9000-11999 Do Not Disturb (PIDF has no DND)
    (15000, "open", "away"),     # 12000-14999 Be Right Back
    (18000, "open", "away"),     # 15000-17999 Away
]


def lync_pidf(availability_number, entity, *, display_name=None, note=None, with_number=False,
              tuple_id="0"):
    """The PIDF document an OCS 2007 R2 / Lync server sends a federated PIDF subscriber.

    Shape from [MS-PRES] §1.3.3 ("PIDF/RPID and MSRTC Support"): the server prefers
    msrtc-event-categories, then text/xml+msrtc.pidf, then application/pidf+xml, by the
    subscriber's Accept; a federated non-Microsoft watcher that accepts only PIDF gets PIDF, with
    a *single tuple* holding the basic status and an RPID activity, plus the CIPID display-name.
    The activity is written in the pre-RFC RPID namespace
    `urn:ietf:params:xml:ns:pidf:status:rpid-status` (`ep:`), the form OCS-era SIP software used
    (pidgin-sipe's OCS PIDF generator; linphone/eXosip) and that Entente's decoder documents as
    OCS's. No capture of such a NOTIFY from a live OCS was found: the element layout is inferred
    from that text. The availability number itself is *not* in MS-PRES's PIDF; with_number=True
    adds it as `<st:availability>` (the state namespace), the extension Entente itself writes.

    Number → basic/activity: <4500 open; <6000 open+away (idle); <12000 open+busy (busy, DND);
    <18000 open+away (BRB, away); otherwise closed."""
    basic, activity = "closed", None
    for limit, b, a in _LYNC_RANGES:
        if availability_number < limit:
            basic, activity = b, a
            break
    ns = ('xmlns="urn:ietf:params:xml:ns:pidf" '
          'xmlns:ep="urn:ietf:params:xml:ns:pidf:status:rpid-status" '
          'xmlns:ci="urn:ietf:params:xml:ns:pidf:cipid"')
    if with_number:
        ns += ' xmlns:st="http://schemas.microsoft.com/2006/09/sip/state"'
    act = (f"<ep:activities><ep:activity>{activity}</ep:activity></ep:activities>"
           if activity else "")
    parts = [f'<?xml version="1.0" encoding="UTF-8"?>\r\n<presence {ns} entity={_xml_attr(entity)}>\r\n',
             f"<tuple id={_xml_attr(tuple_id)}>\r\n<status>\r\n<basic>{basic}</basic>\r\n{act}</status>\r\n</tuple>\r\n"]
    if note:
        parts.append(f"<note>{_xml_escape(note)}</note>\r\n")
    if display_name:
        parts.append(f"<ci:display-name>{_xml_escape(display_name)}</ci:display-name>\r\n")
    if with_number:
        parts.append(f"<st:availability>{int(availability_number)}</st:availability>\r\n")
    parts.append("</presence>")
    return "".join(parts)


def aol_pidf(basic, note, entity_without_sip_prefix, *, tuple_id="aim", note_at="tuple"):
    """A PIDF document as the AOL SIP gateway sent it: `entity="user@aol.com"` with no `sip:`
    prefix (pidgin-sipe's PIDF reader notes "AOL comes without the prefix"), basic open/closed,
    and the away message as a note. Where the note sat (tuple or presence level) is not known
    (no capture survives); note_at chooses. A falsy note writes none."""
    note_xml = f"<note>{_xml_escape(note)}</note>\r\n" if note else ""
    tuple_note = note_xml if note_at == "tuple" else ""
    top_note = note_xml if note_at != "tuple" else ""
    return ('<?xml version="1.0" encoding="UTF-8"?>\r\n'
            f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity={_xml_attr(entity_without_sip_prefix)}>\r\n'
            f"<tuple id={_xml_attr(tuple_id)}>\r\n<status>\r\n<basic>{basic}</basic>\r\n</status>\r\n"
            f"{tuple_note}</tuple>\r\n{top_note}</presence>")


def simple_pidf(basic, note=None, activities=(), *, entity="sip:user@sip.test", tuple_id="t1",
                person_id="p1", contact=None):
    """RFC 3863 PIDF with RFC 4479 `<dm:person>` carrying RFC 4480 activities (element names,
    e.g. ("away",) or ("busy", "meeting")), the note at presence level."""
    acts = "".join(f"<rpid:{a}/>" for a in activities)
    contact_xml = f"<contact>{_xml_escape(contact)}</contact>\r\n" if contact else ""
    out = ['<?xml version="1.0" encoding="UTF-8"?>\r\n'
           '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
           'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
           f'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity={_xml_attr(entity)}>\r\n',
           f"<tuple id={_xml_attr(tuple_id)}>\r\n<status><basic>{basic}</basic></status>\r\n{contact_xml}</tuple>\r\n"]
    if note:
        out.append(f"<note>{_xml_escape(note)}</note>\r\n")
    if acts:
        out.append(f"<dm:person id={_xml_attr(person_id)}>\r\n<rpid:activities>{acts}</rpid:activities>\r\n</dm:person>\r\n")
    out.append("</presence>")
    return "".join(out)


def iscomposing_xml(state="active", *, refresh=None, content_type="text/plain"):
    """An RFC 3994 isComposing document (Content-Type application/im-iscomposing+xml)."""
    refresh_xml = f"<refresh>{int(refresh)}</refresh>\r\n" if refresh else ""
    return ('<?xml version="1.0" encoding="UTF-8"?>\r\n'
            '<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">\r\n'
            f"<state>{state}</state>\r\n<contenttype>{_xml_escape(content_type)}</contenttype>\r\n"
            f"{refresh_xml}</isComposing>")
