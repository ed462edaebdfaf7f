"""A minimal blocking XMPP client on a raw socket, for feeding the server bad input.

It speaks just enough (stream header, STARTTLS, SASL PLAIN, bind) to reach any point of the
negotiation, and then reads bytes until a pattern shows up or the server closes the socket.
Every read has a deadline."""
import base64
import re
import socket
import ssl
import time

STREAM_HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>"
)
NS_STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"


class Raw:
    def __init__(self, server, timeout=10):
        self.server = server
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
        self.buf = b""
        self.eof = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def send_tolerant(self, data):
        """Sends, ignoring a reset: the server may close while we are still writing."""
        try:
            self.send(data)
            return True
        except OSError:
            return False

    def read_until(self, pattern, timeout=None):
        """Reads until `pattern` (a regex on the text received since the last match) appears.
        Returns the text up to and including the match; fails on timeout or on EOF first."""
        rx = re.compile(pattern, re.S)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            text = self.buf.decode(errors="replace")
            m = rx.search(text)
            if m:
                cut = len(text[: m.end()].encode(errors="replace"))
                self.buf = self.buf[cut:]
                return text[: m.end()]
            if self.eof:
                raise AssertionError(f"connection closed before {pattern!r}; got {text!r}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; got {text!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, ssl.SSLError, OSError):
                chunk = b""
            if not chunk:
                self.eof = True
            self.buf += chunk

    def read_all(self, timeout=None):
        """Reads until the server closes the connection; returns everything received."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"server did not close the connection; got {self.buf!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, ssl.SSLError, OSError):
                chunk = b""
            if not chunk:
                self.eof = True
            self.buf += chunk
        text = self.buf.decode(errors="replace")
        self.buf = b""
        return text

    def expect_stream_error(self, condition, timeout=None):
        """Reads until the connection closes; asserts the stream error condition was sent and
        that the stream was closed."""
        text = self.read_all(timeout)
        m = re.search(r"<stream:error><([a-z-]+) xmlns='" + re.escape(NS_STREAMS), text)
        assert m, f"no stream error in {text!r}"
        if isinstance(condition, str):
            condition = (condition,)
        assert m.group(1) in condition, f"expected {condition}, got {m.group(1)}: {text!r}"
        assert text.rstrip().endswith("</stream:stream>"), text
        return m.group(1)

    def header(self, to=None):
        self.send(STREAM_HEADER.format(to=to or self.server.domain))
        return self.read_until(r"</stream:features>")

    def starttls(self):
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.read_until(r"<proceed[^>]*/>")
        ctx = ssl.create_default_context(cafile=str(self.server.cert))
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.server.domain)
        self.buf = b""
        return self.header()

    def auth_plain(self, user, password):
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"
        )
        return self.read_until(r"<success[^>]*(/>|>.*?</success>)|</failure>")

    def login(self, user, password, resource="raw"):
        """STARTTLS, PLAIN, bind: returns once the session is bound."""
        self.header()
        self.starttls()
        r = self.auth_plain(user, password)
        assert "<success" in r, r
        self.header()
        self.send(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        self.read_until(r"</iq>")
        return self

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
