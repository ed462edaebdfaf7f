"""Helpers for the SIP end-to-end tests: running sipp, reading its -trace_msg file, a TLS relay
for sipps-less sipp builds, and raw SIP over sockets.

sipp comes from the Debian package `sip-tester`. Debian builds it without OpenSSL, so `-t l1`
is refused there ("To use a TLS transport you must compile SIPp with OpenSSL"); the TLS tests
then run sipp over TCP (`-t t1`) into `TlsRelay`, which carries the bytes over TLS (with a
client certificate) to Entente. A sipp with TLS support is used directly with `-t l1`.
"""
import asyncio
import datetime
import pathlib
import re
import shutil
import socket
import ssl
import subprocess
import threading

SIPP = shutil.which("sipp")
SCENARIOS = pathlib.Path(__file__).resolve().parents[1] / "sipp"


def free_port(host, kind=socket.SOCK_STREAM):
    """A port free for both TCP and UDP on `host` (SIP uses the same number for both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((host, port))
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind((host, port))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no free port on {host}")


def sipp_has_tls():
    if SIPP is None:
        return False
    r = subprocess.run([SIPP, "-t", "l1", "-m", "1", "-timeout", "1", "127.0.0.1:9"],
                       capture_output=True, text=True, timeout=20)
    return "compile SIPp with OpenSSL" not in (r.stdout + r.stderr)


def run_sipp(scenario, target, *, transport="u1", local_ip="127.0.0.31", workdir, name,
             extra=(), timeout=20, port=None):
    """Runs one sipp call (`-m 1`, global `-timeout`) and returns (returncode, trace path,
    log path, output). Each run binds its own loopback address and `port` (default: a free
    one; pass one when the server under test must reach sipp there, e.g. in a route)."""
    workdir = pathlib.Path(workdir)
    trace = workdir / f"{name}.msg"
    log = workdir / f"{name}.log"
    if port is None:
        port = free_port(local_ip)
    cmd = [SIPP, "-sf", str(SCENARIOS / scenario), "-t", transport, "-i", local_ip,
           "-bind_local", "-p", str(port), "-m", "1", "-timeout", str(timeout), "-timeout_error",
           "-trace_msg", "-message_file", str(trace), "-trace_logs", "-log_file", str(log),
           "-trace_err", "-error_file", str(workdir / f"{name}.err"), *extra, target]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30,
                       stdin=subprocess.DEVNULL, cwd=workdir)
    return r.returncode, trace, log, r.stdout + r.stderr


_SEP = re.compile(r"^-{10,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\s*$", re.M)


def read_trace(path):
    """sipp's -trace_msg file as a list of (datetime, 'sent'|'received', message text)."""
    text = pathlib.Path(path).read_text(errors="replace")
    out = []
    parts = _SEP.split(text)
    # parts: [before, ts1, body1, ts2, body2, ...]
    for ts, body in zip(parts[1::2], parts[2::2]):
        when = datetime.datetime.strptime(ts, "%Y-%m-%d %H:%M:%S.%f")
        head, _, msg = body.lstrip("\n").partition("\n")
        direction = "sent" if " sent" in head else "received"
        out.append((when, direction, msg.lstrip("\r\n")))
    return out


class TlsRelay:
    """Accepts plain TCP on (ip, port) and relays each connection over TLS to `target`,
    presenting `cert`/`key` as client certificate. Runs its own event loop in a thread."""

    def __init__(self, ip, target, cert, key):
        self.ip, self.target = ip, target
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE
        self.ctx.load_cert_chain(str(cert), str(key))
        self.port = free_port(ip)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = None

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _handle(self, reader, writer):
        try:
            tr, tw = await asyncio.open_connection(*self.target, ssl=self.ctx)
        except (ConnectionError, OSError, ssl.SSLError):
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, tw), self._pipe(tr, writer))

    def start(self):
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, self.ip, self.port), self.loop)
        self.server = fut.result(timeout=10)
        return self

    def stop(self):
        if self.server is not None:
            self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def sip_request(method, target_host, target_port, transport, local, *, branch, call_id,
                cseq=None, extra_headers="", body="", content_length=None):
    """A SIP request as bytes (for raw-socket tests). `local` is (ip, port) for the Via."""
    cl = len(body.encode()) if content_length is None else content_length
    return (
        f"{method} sip:{target_host}:{target_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {local[0]}:{local[1]};branch=z9hG4bK{branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:probe@peer.test>;tag=f{branch}\r\n"
        f"To: <sip:{target_host}:{target_port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq or '1 ' + method}\r\n"
        f"{extra_headers}"
        f"Content-Length: {cl}\r\n\r\n{body}"
    ).encode()


def status_line(data):
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


def sipp_keys(**keys):
    """sipp arguments setting scenario keywords: sipp_keys(touser="bob") == ["-key", "touser",
    "bob"]; the scenarios use them as [touser] (tests/sipp/lync_*.xml, aol_*.xml)."""
    out = []
    for k, v in keys.items():
        out += ["-key", k, str(v)]
    return out


def sip_config(*, ca=None, cert=None, tcp=None, tls=None, policy=None, s2s_extra="", sip_extra="",
               peers=()):
    """The config of an Entente with SIP federation, for make_server/EntenteServer: its
    certificate (`cert`, from certs.TestCA.issue) with the test CA (`ca`: a path) as the only
    trust anchor, SIP listeners (`tcp`/`tls`: "ip:port" or None; never UDP), the default presence
    `policy`, more [s2s] keys, more [sip] keys (`sip_extra`), then the [[sip.peer]] sections
    (`peers`: strings from tcp_peer() or written out)."""
    out = ""
    if cert is not None:
        out += f'\n[tls]\ncert = "{cert.cert}"\nkey = "{cert.key}"\n'
    if ca is not None or s2s_extra:
        out += "\n[s2s]\n"
        if ca is not None:
            out += f'ca_file = "{ca}"\nsystem_roots = false\n'
        out += s2s_extra + "\n"
    if policy:
        out += f'\n[policy]\ndefault = "{policy}"\n'
    out += f"""
[sip]
enabled = true
listen_udp = []
listen_tcp = [{f'"{tcp}"' if tcp else ""}]
listen_tls = [{f'"{tls}"' if tls else ""}]
{sip_extra}
"""
    return out + "".join(peers)


def tcp_peer(domain, profile, ip, port, extra=""):
    """A [[sip.peer]] over plain TCP: authenticated by its source address `ip`, reached at
    ip:port."""
    return f"""
[[sip.peer]]
domain = "{domain}"
profile = "{profile}"
transport = "tcp"
source_addrs = ["{ip}"]
routes = ["tcp://{ip}:{port}"]
{extra}
"""


def wait_sip_listening(server, before=0, timeout=10):
    """Waits until the server's log says its SIP listeners are up (more than `before` times:
    for a restart, pass the count seen before it)."""
    import time

    deadline = time.time() + timeout
    while server.log().count("accepting SIP") <= before:
        assert time.time() < deadline, "SIP listeners did not start"
        time.sleep(0.05)
