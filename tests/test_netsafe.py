"""Tests for media_jobs.netsafe, the SSRF-guarded URL fetcher.

No database and no Django settings are needed. Nothing here may reach a non-loopback address:
an autouse guard refuses such connections, and refusals are asserted to happen before any
connection is attempted. Loopback vectors aim at a canary listener that must never be hit.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import ipaddress
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import urllib3.response

from media_jobs import netsafe
from media_jobs.netsafe import FetchError, check_address, fetch_to_file, resolve_public
from tests.tls import TLSFiles, make_tls_files

# The HTTPS test server lives on 127.0.0.2 and only that address is allowed, so the canary on
# 127.0.0.1 stays forbidden even in tests that use the allow-list escape hatch.
SERVER_IP = "127.0.0.2"
ALLOW = ["127.0.0.2/32"]
CERT_NAMES = ("localhost", "files.example.test")
PAYLOAD = random.Random(1234).randbytes(300_000)
MAX = 10 * 1024 * 1024


# --------------------------------------------------------------------------- canary


class Canary:
    """Plain TCP listeners on 127.0.0.1 and ::1 (same port) that record every connection."""

    def __init__(self) -> None:
        self.connections: list[tuple[Any, ...]] = []
        self._stop = threading.Event()
        self._listeners: list[socket.socket] = []
        v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        v4.bind(("127.0.0.1", 0))
        self.port: int = v4.getsockname()[1]
        self._listeners.append(v4)
        try:
            v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            v6.bind(("::1", self.port))
            self._listeners.append(v6)
        except OSError:
            pass  # no IPv6 loopback here; [::1] vectors then cannot connect anywhere anyway
        self._threads = []
        for listener in self._listeners:
            listener.listen(16)
            listener.settimeout(0.1)
            thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(addr)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        for listener in self._listeners:
            listener.close()


@pytest.fixture(scope="session")
def canary() -> Iterator[Canary]:
    """Yield the canary and fail the session teardown if anything ever connected to it."""
    listener = Canary()
    yield listener
    listener.close()
    assert listener.connections == [], f"SSRF canary was reached: {listener.connections}"


@pytest.fixture(autouse=True)
def connect_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record every connect netsafe makes and refuse non-loopback ones (no network in tests)."""
    real_open = netsafe._open_socket
    attempts: list[tuple[str, int]] = []

    def guarded(ip: str, port: int, timeout: float | None) -> socket.socket:
        attempts.append((ip, port))
        if not ipaddress.ip_address(ip).is_loopback:
            raise ConnectionRefusedError(f"test guard: no connections to {ip}")
        return real_open(ip, port, timeout)

    monkeypatch.setattr(netsafe, "_open_socket", guarded)
    return attempts


class FakeDNS:
    """A getaddrinfo stand-in: scripted answers per host, the real resolver for anything else."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.calls: list[str] = []
        self._real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", self)

    def script(self, host: str, *answers: list[str]) -> None:
        """Answer successive lookups of ``host`` with ``answers``; the last one repeats."""
        self.answers[host] = list(answers)

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in self.answers:
            return self._real(host, port, *args, **kwargs)
        self.calls.append(host)
        queue = self.answers[host]
        ips = queue.pop(0) if len(queue) > 1 else queue[0]
        result = []
        for ip in ips:
            if ":" in ip:
                result.append(
                    (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port, 0, 0))
                )
            else:
                result.append(
                    (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port))
                )
        return result


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    return FakeDNS(monkeypatch)


# --------------------------------------------------------------------------- TLS material


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"), CERT_NAMES, SERVER_IP)


# --------------------------------------------------------------------------- HTTPS server


@dataclass
class Seen:
    path: str
    host: str | None


class Handler(http.server.BaseHTTPRequestHandler):
    """Routes for the fetcher: files, redirects, framing variants, errors and slow servers."""

    protocol_version = "HTTP/1.1"
    server: TLSServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.server.seen.append(Seen(self.path, self.headers.get("Host")))
        route = parts.path.split("/")[1]
        getattr(self, "route_" + route.replace("-", "_"), self.route_missing)(parts.path, query)

    def send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        headers.setdefault("Content-Type", "application/octet-stream")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def route_media(self, path: str, query: dict[str, str]) -> None:
        self.send(200, PAYLOAD, Content_Type="audio/mpeg; charset=binary")

    def route_files(self, path: str, query: dict[str, str]) -> None:
        self.send(200, b"named file", Content_Type="text/plain")

    def route_redirect(self, path: str, query: dict[str, str]) -> None:
        # /redirect/<n>: n more redirects, the last one (relative) lands on the media file.
        left = int(path.rsplit("/", 1)[-1])
        self.send(302, Location=f"/redirect/{left - 1}" if left > 1 else "/media/clip.mp3")

    def route_to(self, path: str, query: dict[str, str]) -> None:
        status = int(query.get("status", "302"))
        if "location" in query:
            self.send(status, Location=query["location"])
        else:
            self.send(status)

    def route_loop(self, path: str, query: dict[str, str]) -> None:
        self.send(301, Location=path)

    def route_missing(self, path: str, query: dict[str, str]) -> None:
        self.send(404, b"not here", Content_Type="text/plain")

    def route_chunked(self, path: str, query: dict[str, str]) -> None:
        size = int(query["n"])
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, size, 50_000):
            chunk = b"x" * min(50_000, size - start)
            try:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                return  # the client gave up, as it should
        self.wfile.write(b"0\r\n\r\n")

    def route_eof(self, path: str, query: dict[str, str]) -> None:
        # No Content-Length and no chunking: the body ends when the connection closes.
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        with_suppress_write(self.wfile, b"y" * int(query["n"]))

    def route_huge(self, path: str, query: dict[str, str]) -> None:
        # Declares far more than allowed and then sends nothing: a client that waited for the
        # body would hang until the test's timeout.
        self.send_response(200)
        self.send_header("Content-Length", str(10**12))
        self.end_headers()
        self.wfile.flush()
        self.server.release.wait(5)

    def route_truncated(self, path: str, query: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"z" * 10)
        self.close_connection = True

    def route_drip(self, path: str, query: dict[str, str]) -> None:
        # A valid response whose body arrives one byte every 100 ms.
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self._drip(b"d")

    def route_drip_headers(self, path: str, query: dict[str, str]) -> None:
        # A header line that never ends, one byte every 100 ms.
        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        self._drip(b"a")

    def route_stall(self, path: str, query: dict[str, str]) -> None:
        # Headers and a little body, then silence.
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"s" * 100)
        self.wfile.flush()
        self.server.release.wait(5)

    def _drip(self, byte: bytes) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not self.server.release.is_set():
            try:
                self.wfile.write(byte)
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.1)


def with_suppress_write(stream: Any, data: bytes) -> None:
    # The client may hang up early (size cap); that is the point of some tests.
    with contextlib.suppress(OSError):
        stream.write(data)


class TLSServer(http.server.ThreadingHTTPServer):
    """A threaded HTTPS server that does each TLS handshake in its connection's thread."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.seen: list[Seen] = []
        self.sni: list[str | None] = []
        self.release = threading.Event()
        context.sni_callback = self._record_sni
        super().__init__((SERVER_IP, 0), Handler)

    def _record_sni(self, sock: Any, name: str | None, ctx: Any) -> None:
        self.sni.append(name)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except OSError:
            return  # the client refused our certificate: that is some tests' point
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except OSError:
            pass  # the client hung up mid-response (size or time cap)
        finally:
            tls.close()


@dataclass
class Server:
    httpd: TLSServer
    tls: TLSFiles
    port: int

    def url(self, path: str, host: str = SERVER_IP) -> str:
        return f"https://{host}:{self.port}{path}"

    def fetch(self, path: str, **kwargs: Any) -> tuple[netsafe.FetchResult, bytes]:
        """Fetch ``path`` from this server with the test allow-list and CA."""
        kwargs.setdefault("max_bytes", MAX)
        kwargs.setdefault("allow_networks", ALLOW)
        kwargs.setdefault("ca_bundle", str(self.tls.ca))
        kwargs.setdefault("timeout", 10)
        url = path if path.startswith("https://") else self.url(path)
        buffer = io.BytesIO()
        result = fetch_to_file(url, buffer, **kwargs)
        return result, buffer.getvalue()


@pytest.fixture(scope="module")
def server(tls_files: TLSFiles) -> Iterator[Server]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    httpd = TLSServer(context)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield Server(httpd=httpd, tls=tls_files, port=httpd.server_address[1])
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _reset_server_log(request: pytest.FixtureRequest) -> None:
    if "server" in request.fixturenames:
        server = request.getfixturevalue("server")
        server.httpd.seen.clear()
        server.httpd.sni.clear()


def refused(call: Callable[[], Any]) -> FetchError:
    """Run ``call`` and return the FetchError it must raise."""
    with pytest.raises(FetchError) as info:
        call()
    return info.value


# --------------------------------------------------------------------------- URL rules (400)

BAD_URLS = [
    pytest.param("http://127.0.0.1:{port}/x", "only https://", id="http-scheme"),
    pytest.param("ftp://127.0.0.1:{port}/x", "only https://", id="ftp-scheme"),
    pytest.param("file:///etc/passwd", "only https://", id="file-scheme"),
    pytest.param("gopher://127.0.0.1:{port}/_GET", "only https://", id="gopher-scheme"),
    pytest.param("data:text/plain,hello", "only https://", id="data-scheme"),
    pytest.param("javascript:alert(1)", "only https://", id="javascript-scheme"),
    pytest.param("//127.0.0.1:{port}/x", "only https://", id="scheme-relative"),
    pytest.param("https://user:pass@127.0.0.1:{port}/", "user name or password", id="userinfo"),
    pytest.param("https://user@example.com/", "user name or password", id="userinfo-user-only"),
    pytest.param("https://example.com\\@127.0.0.1:{port}/", "user name", id="userinfo-backslash"),
    pytest.param("https:///path", "no host", id="missing-host"),
    pytest.param("https://", "no host", id="empty-authority"),
    pytest.param("not a url", "spaces", id="garbage"),
    pytest.param("https://exa mple.com/", "spaces", id="space-in-host"),
    pytest.param("https://example.com/\r\nX-Injected: 1", "control", id="crlf-injection"),
    pytest.param("https://example.com:99999/", "malformed", id="port-out-of-range"),
    pytest.param("https://example.com:0/", "invalid port", id="port-zero"),
    pytest.param("https://[::1/", "malformed", id="unclosed-ipv6"),
    pytest.param("https://[fe80::1%25eth0]:{port}/", "invalid IPv6", id="ipv6-zone-id"),
    pytest.param("https://evil.com\\.example.com/", "invalid host", id="backslash-in-host"),
    pytest.param("https://" + "a" * 64 + ".com/", "invalid host", id="label-too-long"),
    pytest.param("https://a..b/", "invalid host", id="empty-label"),
    pytest.param("", "empty", id="empty"),
]


@pytest.mark.parametrize(("template", "reason"), BAD_URLS)
def test_malformed_or_non_https_urls_are_bad_requests(
    template: str, reason: str, canary: Canary, connect_log: list[Any], fake_dns: FakeDNS
) -> None:
    """Refuse with 400 before resolving or connecting."""
    url = template.format(port=canary.port)
    error = refused(lambda: fetch_to_file(url, io.BytesIO(), max_bytes=MAX, allow_networks=()))
    assert error.status_code == 400
    assert reason in error.reason
    assert fake_dns.calls == []
    assert connect_log == []
    assert canary.connections == []


def test_bad_request_never_touches_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rejected URL must not even be resolved (a DNS lookup can leak data)."""

    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("resolved a refused URL")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    error = refused(lambda: fetch_to_file("http://example.com/", io.BytesIO(), max_bytes=1))
    assert error.status_code == 400


# --------------------------------------------------------------------------- SSRF vectors (422)

# Loopback targets use the canary's port so that a missed check would show up as a connection.
LOOPBACK_VECTORS = [
    pytest.param("https://127.0.0.1:{port}/x", id="ipv4-loopback"),
    pytest.param("https://127.0.0.2:{port}/x", id="ipv4-loopback-other"),
    pytest.param("https://localhost:{port}/x", id="localhost"),
    pytest.param("https://LOCALHOST.:{port}/x", id="localhost-trailing-dot-uppercase"),
    pytest.param("https://[::1]:{port}/x", id="ipv6-loopback"),
    pytest.param("https://0.0.0.0:{port}/x", id="unspecified-v4"),
    pytest.param("https://0:{port}/x", id="zero-shorthand"),
    pytest.param("https://[::]:{port}/x", id="unspecified-v6"),
    pytest.param("https://[::ffff:127.0.0.1]:{port}/x", id="ipv4-mapped-loopback"),
    pytest.param("https://[::127.0.0.1]:{port}/x", id="ipv4-compatible-loopback"),
    pytest.param("https://[64:ff9b::7f00:1]:{port}/x", id="nat64-loopback"),
    pytest.param("https://[2002:7f00:1::]:{port}/x", id="6to4-loopback"),
    pytest.param("https://0x7f000001:{port}/x", id="hex-integer"),
    pytest.param("https://0x7f.0x0.0x0.0x1:{port}/x", id="hex-dotted"),
    pytest.param("https://017700000001:{port}/x", id="octal-integer"),
    pytest.param("https://2130706433:{port}/x", id="decimal-integer"),
    pytest.param("https://127.1:{port}/x", id="short-form"),
    pytest.param("https://0177.0.0.1:{port}/x", id="octal-dotted"),
]

OTHER_VECTORS = [
    pytest.param("https://10.0.0.1/x", id="rfc1918-10"),
    pytest.param("https://172.16.0.1/x", id="rfc1918-172"),
    pytest.param("https://192.168.1.1/x", id="rfc1918-192"),
    pytest.param("https://169.254.169.254/latest/meta-data/", id="cloud-metadata"),
    pytest.param("https://100.64.0.1/x", id="cgnat"),
    pytest.param("https://224.0.0.1/x", id="multicast-v4"),
    pytest.param("https://240.0.0.1/x", id="reserved-v4"),
    pytest.param("https://255.255.255.255/x", id="broadcast"),
    pytest.param("https://198.18.0.1/x", id="benchmarking"),
    pytest.param("https://192.0.2.1/x", id="documentation-v4"),
    pytest.param("https://192.0.0.9/x", id="ietf-protocol-assignments"),
    pytest.param("https://[fc00::1]/x", id="unique-local"),
    pytest.param("https://[fd12:3456::1]/x", id="unique-local-fd"),
    pytest.param("https://[fe80::1]/x", id="link-local-v6"),
    pytest.param("https://[fec0::1]/x", id="site-local-v6"),
    pytest.param("https://[ff02::1]/x", id="multicast-v6"),
    pytest.param("https://[2001:db8::1]/x", id="documentation-v6"),
    pytest.param("https://[::ffff:10.0.0.1]/x", id="ipv4-mapped-private"),
    pytest.param("https://[::ffff:8.8.8.8]/x", id="ipv4-mapped-public"),
    pytest.param("https://[::ffff:169.254.169.254]/x", id="ipv4-mapped-metadata"),
    pytest.param("https://[64:ff9b::a9fe:a9fe]/x", id="nat64-metadata"),
    pytest.param("https://[64:ff9b:1::808:808]/x", id="nat64-local-use"),
    pytest.param("https://[2002:a00:1::]/x", id="6to4-private"),
    pytest.param("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x", id="teredo"),
    pytest.param("https://[100::1]/x", id="discard-v6"),
]


@pytest.mark.parametrize("template", LOOPBACK_VECTORS + OTHER_VECTORS)
def test_non_public_address_is_refused_before_connecting(
    template: str, canary: Canary, connect_log: list[Any]
) -> None:
    """Refuse with 422 'address ... is not public' and open no connection at all."""
    url = template.format(port=canary.port)
    error = refused(lambda: fetch_to_file(url, io.BytesIO(), max_bytes=MAX, allow_networks=()))
    assert error.status_code == 422
    assert "is not public" in error.reason
    assert connect_log == []
    assert canary.connections == []


def fullwidth(text: str) -> str:
    """Spell ASCII digits and letters with their fullwidth forms (U+FF10...)."""
    return "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in text)


@pytest.mark.parametrize(
    "host",
    [
        pytest.param(fullwidth("127.0.0.1"), id="fullwidth-digits"),
        pytest.param("127\u30020\u30020\u30021", id="ideographic-full-stops"),
        pytest.param(fullwidth("localhost"), id="fullwidth-localhost"),
        pytest.param(fullwidth("0x7f000001"), id="fullwidth-hex-integer"),
    ],
)
def test_unicode_host_tricks_are_refused(host: str, canary: Canary, connect_log: list[Any]) -> None:
    """Unicode that normalises to loopback is refused (IDNA maps it to 127.0.0.1/localhost)."""
    url = f"https://{host}:{canary.port}/x"
    error = refused(lambda: fetch_to_file(url, io.BytesIO(), max_bytes=MAX, allow_networks=()))
    assert error.status_code in (400, 422)
    assert connect_log == []
    assert canary.connections == []


def test_fullwidth_digits_are_judged_by_resolved_address(canary: Canary) -> None:
    """Fullwidth digits resolve to 127.0.0.1 here, so the refusal names that address."""
    url = f"https://{fullwidth('127')}.{fullwidth('0')}.0.{fullwidth('1')}:{canary.port}/x"
    error = refused(lambda: fetch_to_file(url, io.BytesIO(), max_bytes=MAX, allow_networks=()))
    assert error.reason == "address 127.0.0.1 is not public"


def test_host_with_one_private_address_among_public_ones_is_refused(
    fake_dns: FakeDNS, canary: Canary, connect_log: list[Any]
) -> None:
    """Every resolved address is checked, not just the first."""
    fake_dns.script("mixed.example.test", ["8.8.8.8", "127.0.0.1"])
    url = f"https://mixed.example.test:{canary.port}/x"
    error = refused(lambda: fetch_to_file(url, io.BytesIO(), max_bytes=MAX, allow_networks=()))
    assert (error.status_code, error.reason) == (422, "address 127.0.0.1 is not public")
    assert connect_log == []
    assert canary.connections == []


def test_host_resolving_to_ipv6_private_is_refused(
    fake_dns: FakeDNS, connect_log: list[Any]
) -> None:
    """An AAAA record into a private range is refused like an A record."""
    fake_dns.script("aaaa.example.test", ["2606:4700::1111", "fd00::1"])
    error = refused(
        lambda: fetch_to_file("https://aaaa.example.test/", io.BytesIO(), max_bytes=MAX)
    )
    assert error.status_code == 422
    assert "fd00::1" in error.reason
    assert connect_log == []


def test_dns_rebinding_connects_to_the_checked_address(
    fake_dns: FakeDNS, canary: Canary, connect_log: list[Any]
) -> None:
    """Resolve once per hop and connect to that very address, whatever DNS says later."""
    # First answer public, every later answer loopback: a second lookup would hit the canary.
    fake_dns.script("rebind.example.test", ["8.8.8.8"], ["127.0.0.1"])
    url = f"https://rebind.example.test:{canary.port}/x"
    error = refused(lambda: fetch_to_file(url, io.BytesIO(), max_bytes=MAX, allow_networks=()))
    # The test guard refuses the public address, standing in for "no network here".
    assert error.status_code == 422
    assert error.reason == "could not connect to rebind.example.test"
    assert fake_dns.calls == ["rebind.example.test"]
    assert connect_log == [("8.8.8.8", canary.port)]
    assert canary.connections == []


def test_pinned_connection_keeps_sni_host_header_and_certificate_check(
    server: Server, fake_dns: FakeDNS, connect_log: list[Any]
) -> None:
    """Connect to the checked IP but speak TLS and HTTP as the URL's hostname."""
    fake_dns.script("files.example.test", [SERVER_IP], ["169.254.169.254"])
    result, body = server.fetch(server.url("/media/clip.mp3", host="files.example.test"))
    assert body == PAYLOAD
    assert result.url == f"https://files.example.test:{server.port}/media/clip.mp3"
    assert fake_dns.calls == ["files.example.test"]
    assert connect_log == [(SERVER_IP, server.port)]
    assert server.httpd.sni == ["files.example.test"]
    assert [s.host for s in server.httpd.seen] == [f"files.example.test:{server.port}"]


def test_certificate_for_another_name_is_refused(server: Server, fake_dns: FakeDNS) -> None:
    """The certificate is verified against the hostname, not the IP we connected to."""
    fake_dns.script("other.example.test", [SERVER_IP])
    error = refused(lambda: server.fetch(server.url("/media/clip.mp3", host="other.example.test")))
    assert error.status_code == 422
    assert error.reason.startswith("TLS certificate of other.example.test is not valid")
    assert server.httpd.seen == []


def test_untrusted_certificate_is_refused_by_default(server: Server) -> None:
    """Without the test CA the self-signed chain fails certifi's verification."""
    error = refused(lambda: server.fetch("/media/clip.mp3", ca_bundle=None))
    assert error.status_code == 422
    assert "TLS certificate" in error.reason
    assert server.httpd.seen == []


# --------------------------------------------------------------------------- redirects


def test_redirect_to_canary_on_loopback_is_refused(
    server: Server, canary: Canary, connect_log: list[Any]
) -> None:
    """A redirect target is checked again: 127.0.0.1 is outside the allow-list."""
    target = f"https://127.0.0.1:{canary.port}/admin"
    error = refused(lambda: server.fetch(f"/to?location={quote(target, safe='')}"))
    assert (error.status_code, error.reason) == (422, "address 127.0.0.1 is not public")
    assert connect_log == [(SERVER_IP, server.port)]
    assert canary.connections == []


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        pytest.param(
            "https://169.254.169.254/latest/meta-data", "is not public", id="cloud-metadata"
        ),
        pytest.param("https://10.0.0.1/", "is not public", id="rfc1918"),
        pytest.param("https://[::1]:{port}/", "is not public", id="ipv6-loopback"),
        pytest.param("https://localhost:{port}/", "is not public", id="localhost"),
        pytest.param("https://0x7f000001:{port}/", "is not public", id="hex-integer"),
        pytest.param("http://127.0.0.2:{port}/", "redirect refused: only https://", id="http"),
        pytest.param("ftp://example.com/", "redirect refused: only https://", id="ftp"),
        pytest.param("file:///etc/passwd", "redirect refused: only https://", id="file"),
        pytest.param("https://u:p@127.0.0.2:{port}/", "redirect refused: URLs with", id="userinfo"),
    ],
)
def test_redirect_to_forbidden_target_is_refused(
    location: str,
    reason: str,
    server: Server,
    canary: Canary,
    connect_log: list[Any],
) -> None:
    """Each redirect target goes through the scheme, userinfo and address rules again."""
    target = location.format(port=canary.port)
    error = refused(lambda: server.fetch(f"/to?location={quote(target, safe='')}"))
    assert error.status_code == 422
    assert reason in error.reason
    assert connect_log == [(SERVER_IP, server.port)]
    assert canary.connections == []


def test_five_redirects_are_followed(server: Server, connect_log: list[Any]) -> None:
    """Follow up to max_redirects relative redirects, re-checking and reconnecting each hop."""
    result, body = server.fetch("/redirect/5")
    assert body == PAYLOAD
    assert result.url == server.url("/media/clip.mp3")
    assert len(connect_log) == 6
    assert [s.path for s in server.httpd.seen][-1] == "/media/clip.mp3"


def test_more_than_five_redirects_are_refused(server: Server) -> None:
    """The sixth redirect is one too many."""
    error = refused(lambda: server.fetch("/redirect/6"))
    assert (error.status_code, error.reason) == (422, "too many redirects")
    assert len(server.httpd.seen) == 6


def test_redirect_loop_is_refused(server: Server) -> None:
    """A redirect to itself stops at the limit."""
    error = refused(lambda: server.fetch("/loop", max_redirects=2))
    assert (error.status_code, error.reason) == (422, "too many redirects")
    assert [s.path for s in server.httpd.seen] == ["/loop"] * 3


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_statuses_are_followed(status: int, server: Server) -> None:
    """All redirect codes lead to a GET of the new location."""
    result, body = server.fetch(f"/to?status={status}&location=%2Fmedia%2Fclip.mp3")
    assert body == PAYLOAD
    assert result.filename == "clip.mp3"


def test_redirect_without_location_is_an_error(server: Server) -> None:
    """A 3xx with no Location is just a non-2xx answer."""
    error = refused(lambda: server.fetch("/to?status=302"))
    assert (error.status_code, error.reason) == (422, "HTTP 302 from server")


# --------------------------------------------------------------------------- status, size, time


def test_success_path(server: Server, connect_log: list[Any]) -> None:
    """Stream the body into the file and describe it."""
    result, body = server.fetch("/media/clip.mp3?sig=abc")
    assert body == PAYLOAD
    assert result == netsafe.FetchResult(
        url=server.url("/media/clip.mp3?sig=abc"),
        filename="clip.mp3",
        content_type="audio/mpeg",
        size=len(PAYLOAD),
    )
    assert connect_log == [(SERVER_IP, server.port)]
    assert server.httpd.sni == [None]  # an IP literal gets no SNI, yet its IP SAN was verified
    assert server.httpd.seen == [Seen("/media/clip.mp3?sig=abc", f"{SERVER_IP}:{server.port}")]


def test_not_found_is_422(server: Server) -> None:
    """Non-2xx after redirects is 422 with the status in the reason."""
    error = refused(lambda: server.fetch("/missing/file.mp3"))
    assert (error.status_code, error.reason) == (422, "HTTP 404 from server")


def test_exactly_max_bytes_is_accepted(server: Server) -> None:
    """The cap is inclusive."""
    result, body = server.fetch("/media/clip.mp3", max_bytes=len(PAYLOAD))
    assert result.size == len(body) == len(PAYLOAD)


def test_content_length_over_cap_is_413(server: Server) -> None:
    """A declared length over the cap is refused from the headers alone."""
    error = refused(lambda: server.fetch("/media/clip.mp3", max_bytes=len(PAYLOAD) - 1))
    assert (error.status_code, error.reason) == (413, f"file exceeds {len(PAYLOAD) - 1} bytes")


def test_huge_content_length_is_413_without_reading_the_body(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refuse before reading: no body read is attempted and nothing is written."""
    reads: list[str] = []
    for name in ("read", "read1", "stream", "read_chunked"):
        original = getattr(urllib3.response.HTTPResponse, name)

        def spy(self: Any, *args: Any, _name: str = name, _orig: Any = original, **kw: Any) -> Any:
            reads.append(_name)
            return _orig(self, *args, **kw)

        monkeypatch.setattr(urllib3.response.HTTPResponse, name, spy)
    buffer = io.BytesIO()
    started = time.monotonic()
    error = refused(
        lambda: fetch_to_file(
            server.url("/huge"),
            buffer,
            max_bytes=MAX,
            allow_networks=ALLOW,
            ca_bundle=str(server.tls.ca),
            timeout=10,
        )
    )
    assert (error.status_code, error.reason) == (413, f"file exceeds {MAX} bytes")
    assert reads == []
    assert buffer.getvalue() == b""
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("route", ["chunked", "eof"])
def test_body_over_cap_without_content_length_is_413(route: str, server: Server) -> None:
    """Count while streaming when the size is not declared (chunked or read-to-EOF)."""
    buffer = io.BytesIO()
    error = refused(
        lambda: fetch_to_file(
            server.url(f"/{route}?n=1000000"),
            buffer,
            max_bytes=120_000,
            allow_networks=ALLOW,
            ca_bundle=str(server.tls.ca),
            timeout=10,
        )
    )
    assert (error.status_code, error.reason) == (413, "file exceeds 120000 bytes")
    assert len(buffer.getvalue()) <= 120_000


@pytest.mark.parametrize("route", ["chunked", "eof"])
def test_body_under_cap_without_content_length_is_accepted(route: str, server: Server) -> None:
    """Undeclared sizes within the cap stream through completely."""
    result, body = server.fetch(f"/{route}?n=200000", max_bytes=200_000)
    assert result.size == len(body) == 200_000
    assert result.content_type == "audio/wav"


def test_truncated_body_is_an_error(server: Server) -> None:
    """A body shorter than its Content-Length is not a successful download."""
    error = refused(lambda: server.fetch("/truncated"))
    assert error.status_code == 422
    assert "broke off" in error.reason


@pytest.mark.parametrize("route", ["drip", "drip-headers", "stall"])
def test_overall_timeout(route: str, server: Server) -> None:
    """One wall-clock budget: dripping bodies, dripping headers and stalls all stop at it."""
    started = time.monotonic()
    error = refused(lambda: server.fetch(f"/{route}", timeout=1))
    elapsed = time.monotonic() - started
    assert (error.status_code, error.reason) == (422, "timed out after 1 seconds")
    assert elapsed < 2


def test_connection_refused_is_422(connect_log: list[Any]) -> None:
    """An allowed but closed port gives a clear 422."""
    with socket.socket() as probe:
        probe.bind((SERVER_IP, 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    url = f"https://{SERVER_IP}:{port}/"
    error = refused(lambda: fetch_to_file(url, io.BytesIO(), max_bytes=MAX, allow_networks=ALLOW))
    assert (error.status_code, error.reason) == (422, f"could not connect to {SERVER_IP}")
    assert connect_log == [(SERVER_IP, port)]


def test_non_tls_server_is_a_tls_error() -> None:
    """A server that does not speak TLS gives a 422."""
    with socket.socket() as listener:
        listener.bind((SERVER_IP, 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def hang_up() -> None:
            conn, _ = listener.accept()
            conn.sendall(b"SSH-2.0-nope\r\n")
            conn.close()

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        url = f"https://{SERVER_IP}:{port}/"
        error = refused(
            lambda: fetch_to_file(url, io.BytesIO(), max_bytes=MAX, allow_networks=ALLOW, timeout=5)
        )
        thread.join(2)
    assert error.status_code == 422
    assert error.reason == f"TLS error talking to {SERVER_IP}"


# --------------------------------------------------------------------------- filenames


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/files/My%20Song.mp3?x=1#frag", "My Song.mp3", id="percent-decoded"),
        pytest.param("/files/a%2F..%2F..%2Fetc%2Fpasswd", "a_.._.._etc_passwd", id="slashes"),
        pytest.param("/files/..%5C..%5Cwin.ini", "_.._win.ini", id="backslashes"),
        pytest.param("/files/evil%00name%0A.mp3", "evilname.mp3", id="control-chars"),
        pytest.param("/files/invoice%E2%80%AE3pm.exe", "invoice3pm.exe", id="bidi-override"),
        pytest.param("/files/..", "download", id="dot-dot"),
        pytest.param("/files/", "download", id="trailing-slash"),
        pytest.param("/files/.hidden", "hidden", id="leading-dot"),
        pytest.param("/files/%C3%A9t%C3%A9.wav", "été.wav", id="utf8"),
        pytest.param("/files/" + "n" * 300 + ".flac", "n" * 195 + ".flac", id="long-keeps-ext"),
    ],
)
def test_filename_is_sanitised(path: str, expected: str, server: Server) -> None:
    """Take the final URL's last segment, decoded and made safe to use as a file name."""
    result, _ = server.fetch(path)
    assert result.filename == expected
    assert len(result.filename) <= 200


def test_filename_comes_from_final_url(server: Server) -> None:
    """After redirects the name is the final URL's."""
    result, _ = server.fetch("/to/start.bin?location=%2Ffiles%2Ffinal.ogg")
    assert result.filename == "final.ogg"


def test_filename_falls_back_to_original_url(server: Server) -> None:
    """When the final URL has no name, use the original one."""
    result, _ = server.fetch("/to/original.ogg?location=%2Ffiles%2F")
    assert result.filename == "original.ogg"


# --------------------------------------------------------------------------- address policy


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "0.0.0.0",
        "10.1.2.3",
        "100.127.255.255",
        "169.254.169.254",
        "172.31.255.255",
        "192.0.0.170",
        "192.88.99.1",
        "192.168.0.1",
        "198.19.255.255",
        "198.51.100.7",
        "203.0.113.9",
        "224.0.0.251",
        "239.255.255.250",
        "255.255.255.255",
        "::",
        "::1",
        "::127.0.0.1",
        "::8.8.8.8",
        "::ffff:127.0.0.1",
        "::ffff:8.8.8.8",
        "::ffff:0:808:808",
        "64:ff9b::7f00:1",
        "64:ff9b::a00:1",
        "64:ff9b:1::808:808",
        "100::1",
        "2001::1",
        "2001:db8::1",
        "2002:7f00:1::1",
        "2002:808:808::1",
        "3fff::1",
        "5f00::1",
        "fc00::1",
        "fe80::1",
        "fe80::1%1",
        "fec0::1",
        "ff02::1",
        "4000::1",
    ],
)
def test_check_address_refuses(address: str) -> None:
    """Every non-public range, IPv6 transition forms included, is refused with 422."""
    ip = ipaddress.ip_address(address)
    error = refused(lambda: check_address(ip))
    assert error.status_code == 422
    assert error.reason.startswith("address ")


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450::1", "64:ff9b::808:808"]
)
def test_check_address_accepts_public(address: str) -> None:
    """Public unicast, and NAT64 of a public IPv4, pass."""
    check_address(ipaddress.ip_address(address))


def test_allow_networks_is_an_exact_escape_hatch() -> None:
    """The allow-list admits its own networks only, never IPv4 embedded in IPv6."""
    check_address(ipaddress.ip_address("127.0.0.1"), ["127.0.0.0/8"])
    check_address(ipaddress.ip_address("10.9.8.7"), [ipaddress.ip_network("10.0.0.0/8")])
    for address in ("::ffff:127.0.0.1", "64:ff9b::7f00:1", "127.0.0.1"):
        networks = ["127.0.0.0/8"] if address != "127.0.0.1" else ["10.0.0.0/8"]
        with pytest.raises(FetchError):
            check_address(ipaddress.ip_address(address), networks)


def test_resolve_public_returns_every_checked_address(fake_dns: FakeDNS) -> None:
    """Return each distinct resolved address in resolver order."""
    fake_dns.script("multi.example.test", ["8.8.8.8", "2606:4700::1111", "8.8.8.8"])
    assert resolve_public("multi.example.test", 443) == ["8.8.8.8", "2606:4700::1111"]


def test_resolve_public_unknown_host_is_422(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that does not resolve is unreachable, not a bad request."""

    def nxdomain(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", nxdomain)
    error = refused(lambda: resolve_public("nx.example.test", 443))
    assert (error.status_code, error.reason) == (422, "could not resolve host nx.example.test")


# --------------------------------------------------------------------------- settings


def test_defaults_come_from_django_settings(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When Django is configured, INTAKE_URL_* settings supply the defaults."""
    import django.conf

    fake = SimpleNamespace(
        configured=True,
        INTAKE_URL_ALLOW_NETWORKS=ALLOW,
        INTAKE_URL_CA_BUNDLE=str(server.tls.ca),
        INTAKE_URL_TIMEOUT=10,
        INTAKE_URL_MAX_REDIRECTS=1,
    )
    monkeypatch.setattr(django.conf, "settings", fake)
    buffer = io.BytesIO()
    result = fetch_to_file(server.url("/redirect/1"), buffer, max_bytes=MAX)
    assert buffer.getvalue() == PAYLOAD
    assert result.size == len(PAYLOAD)
    error = refused(lambda: fetch_to_file(server.url("/redirect/2"), io.BytesIO(), max_bytes=MAX))
    assert error.reason == "too many redirects"
    # An explicit empty allow-list overrides the setting.
    error = refused(
        lambda: fetch_to_file(
            server.url("/media/a"), io.BytesIO(), max_bytes=MAX, allow_networks=[]
        )
    )
    assert "is not public" in error.reason


def test_without_django_settings_nothing_is_allowed(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unconfigured Django means production defaults: no allow-list, certifi CAs."""
    import django.conf

    monkeypatch.setattr(django.conf, "settings", SimpleNamespace(configured=False))
    error = refused(lambda: fetch_to_file(server.url("/media/a"), io.BytesIO(), max_bytes=MAX))
    assert (error.status_code, error.reason) == (422, f"address {SERVER_IP} is not public")
