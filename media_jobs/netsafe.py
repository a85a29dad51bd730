"""Fetch user-supplied URLs without letting them reach private networks (SSRF guard).

This module is the one outbound seam for URLs that a user or partner typed in. The rules:

* Only ``https://`` URLs without userinfo are accepted; anything else is a 400.
* The hostname is resolved once per hop with ``getaddrinfo`` and *every* resolved address must be
  public (see ``check_address``); the string in the URL is never trusted, so numeric tricks such
  as ``0x7f000001``, ``127.1`` or fullwidth digits are judged by what they resolve to.
* The TCP connection goes to the address that was checked (no second lookup, so DNS rebinding
  cannot swap it), while SNI, certificate verification and the Host header use the hostname.
* Redirects are followed by hand, at most ``max_redirects``, and every target is checked again.
* One wall-clock budget covers all hops: per-socket timeouts plus a watchdog that shuts the
  socket down when the budget runs out, so a server dripping bytes cannot hold a worker.
* The body is streamed in 64 KiB chunks into the caller's file object and capped at
  ``max_bytes`` (413), both by ``Content-Length`` before reading and by counting while reading.

Address policy for IPv6 transition ranges: NAT64 ``64:ff9b::/96`` is accepted only when the
embedded IPv4 address is itself public (IPv6-only hosts reach IPv4 sites that way through
DNS64); IPv4-mapped, IPv4-compatible, SIIT, local-use NAT64 ``64:ff9b:1::/48``, 6to4
``2002::/16`` and Teredo ``2001::/32`` are refused outright, whatever they embed.

Known limit: ``getaddrinfo`` cannot be interrupted, so a slow DNS answer is bounded by the
resolver's own timeout, not by ``timeout``; the budget is checked again once it returns.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import re
import socket
import ssl
import threading
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, unquote, urljoin, urlsplit

import certifi
from urllib3.connection import HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.response import HTTPResponse
from urllib3.util.ssl_ import create_urllib3_context

__all__ = [
    "FetchError",
    "FetchResult",
    "check_address",
    "fetch_to_file",
    "resolve_public",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CHUNK_SIZE = 64 * 1024
MAX_URL_LENGTH = 8192
MAX_FILENAME_LENGTH = 200
DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "mediahub-url-intake/1.0"

# IANA special-purpose IPv4 ranges that are not globally reachable (plus the deprecated 6to4
# relay anycast). Listed explicitly because ipaddress.is_global has changed between Python
# releases and we do not want the policy to move with the interpreter.
_BLOCKED_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network", includes 0.0.0.0
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata 169.254.169.254
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes broadcast 255.255.255.255
    )
)

_BLOCKED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # unspecified, loopback and deprecated IPv4-compatible ::a.b.c.d
        "::ffff:0:0/96",  # IPv4-mapped
        "::ffff:0:0:0/96",  # SIIT IPv4-translated
        "64:ff9b:1::/48",  # local-use NAT64: site-specific, cannot be judged from here
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, includes Teredo 2001::/32
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4
        "3fff::/20",  # documentation
        "5f00::/16",  # SRv6 SIDs
        "fc00::/7",  # unique-local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
    )
)
# Everything outside 2000::/3 is unallocated or special, so only global unicast may pass.
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")

# What an ASCII host may contain once IDNA has run: DNS labels or an IPv6 literal.
_HOST_CHARS = re.compile(r"^[a-z0-9._:-]+$")


class FetchError(Exception):
    """A URL that cannot or may not be fetched; ``reason`` is safe to show to the user."""

    def __init__(self, reason: str, status_code: int = 422) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


@dataclass
class FetchResult:
    """What a successful fetch produced."""

    url: str
    filename: str
    content_type: str
    size: int


class _Writable(Protocol):
    def write(self, data: bytes, /) -> Any: ...


@dataclass(frozen=True)
class _Target:
    url: str
    host: str  # ASCII (IDNA) hostname or bare IPv6 literal, lowercase
    port: int
    request_target: str  # path and query, percent-encoded

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 443 else f"{host}:{self.port}"


def _setting(name: str, default: Any) -> Any:
    """Return a Django setting, or ``default`` when Django is absent or not configured."""
    try:
        from django.conf import settings
    except ImportError:
        return default
    if not settings.configured:
        return default
    return getattr(settings, name, default)


def _parse_networks(networks: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    """Parse CIDR strings; a bad entry is a configuration error and raises ValueError."""
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


def _embedded_nat64_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    """Return the IPv4 address carried in the low 32 bits of a NAT64 address."""
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def _refusal(ip: IPAddress) -> str | None:
    """Return why ``ip`` is not public, or None when it is."""
    if isinstance(ip, ipaddress.IPv4Address):
        if any(ip in net for net in _BLOCKED_V4) or not ip.is_global:
            return f"address {ip} is not public"
        return None
    if ip in _NAT64_WELL_KNOWN:
        # The translator will connect to the embedded IPv4 address, so judge that one.
        inner = _embedded_nat64_v4(ip)
        if _refusal(inner) is not None:
            return f"address {ip} is not public (it embeds {inner})"
        return None
    if (
        any(ip in net for net in _BLOCKED_V6)
        or ip not in _GLOBAL_UNICAST_V6
        or not ip.is_global
        or ip.is_multicast
        or ip.is_site_local
    ):
        return f"address {ip} is not public"
    return None


def check_address(ip: IPAddress | str, allow_networks: Iterable[str | IPNetwork] = ()) -> None:
    """Raise FetchError(422) unless ``ip`` is a public address or inside ``allow_networks``."""
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip)
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        # A zone index only matters for link-local addresses, which are refused anyway.
        ip = ipaddress.IPv6Address(int(ip))
    # The allow list is a test and on-premises escape hatch; it matches the address itself only,
    # never an IPv4 address embedded in an IPv6 one.
    if any(ip.version == net.version and ip in net for net in _parse_networks(allow_networks)):
        return
    reason = _refusal(ip)
    if reason is not None:
        raise FetchError(reason, 422)


def resolve_public(
    host: str, port: int, allow_networks: Iterable[str | IPNetwork] = ()
) -> list[str]:
    """Resolve ``host`` and return its addresses, refusing the host if any address is not public."""
    networks = _parse_networks(allow_networks)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except UnicodeError:
        raise FetchError(f"invalid host name {host!r}", 400) from None
    except OSError:  # socket.gaierror and friends
        raise FetchError(f"could not resolve host {host}", 422) from None
    addresses: list[str] = []
    for family, *_rest, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        ip = ipaddress.ip_address(sockaddr[0])
        # One bad address refuses the whole host: we must not depend on which one we pick.
        check_address(ip, networks)
        text = str(ip)
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise FetchError(f"could not resolve host {host}", 422)
    return addresses


def _ascii_host(host: str) -> str:
    """Return the lowercase ASCII form of a URL host, or raise FetchError(400)."""
    if ":" in host:
        if "%" in host:
            # Zone indexes only make sense for link-local addresses, which are never public.
            raise FetchError("invalid IPv6 address in URL", 400)
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise FetchError("invalid IPv6 address in URL", 400) from None
    try:
        # IDNA 2003, as socket.getaddrinfo would apply it; NFKC turns fullwidth digits into
        # ASCII here, so the host we resolve is exactly the host we verify the certificate for.
        ascii_host = host.encode("idna").decode("ascii").lower().rstrip(".")
    except UnicodeError:
        raise FetchError("invalid host name in URL", 400) from None
    if not ascii_host or not _HOST_CHARS.match(ascii_host):
        raise FetchError("invalid host name in URL", 400)
    return ascii_host


def _parse_url(url: str) -> _Target:
    """Validate a URL against the intake rules and split it into a connection target."""
    if not isinstance(url, str):
        raise FetchError("URL must be a string", 400)
    url = url.strip()
    if not url:
        raise FetchError("URL is empty", 400)
    if len(url) > MAX_URL_LENGTH:
        raise FetchError(f"URL is longer than {MAX_URL_LENGTH} characters", 400)
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise FetchError("URL contains spaces or control characters", 400)
    try:
        parts = urlsplit(url)
        port = parts.port
        hostname = parts.hostname
    except ValueError:
        raise FetchError("malformed URL", 400) from None
    if parts.scheme.lower() != "https":
        raise FetchError("only https:// URLs are accepted", 400)
    if "@" in parts.netloc:
        raise FetchError("URLs with a user name or password are not accepted", 400)
    if not hostname:
        raise FetchError("URL has no host", 400)
    if port == 0:
        raise FetchError("URL has an invalid port", 400)
    host = _ascii_host(hostname)
    path = quote(parts.path or "/", safe="/%!$&'()*+,;=:@~")
    request_target = path
    if parts.query:
        request_target += "?" + quote(parts.query, safe="/?%!$&'()*+,;=:@~")
    return _Target(url=url, host=host, port=port or 443, request_target=request_target)


def _filename_from_url(url: str) -> str:
    """Return the sanitised last path segment of ``url``, or "" when there is none."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return ""
    name = unquote(path.rsplit("/", 1)[-1], errors="replace")
    name = name.replace("/", "_").replace("\\", "_")
    # Drop control and format characters (NUL, newlines, bidi overrides that spoof extensions).
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp"))
    # Leading dots would make "." / ".." or hidden files.
    name = name.strip().lstrip(".").strip()
    if len(name) > MAX_FILENAME_LENGTH:
        stem, ext = os.path.splitext(name)
        if 0 < len(ext) <= 16:
            name = stem[: MAX_FILENAME_LENGTH - len(ext)] + ext
        else:
            name = name[:MAX_FILENAME_LENGTH]
    return name


class _Deadline:
    """One wall-clock budget for a whole fetch, enforced by a watchdog thread."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._guards: list[socket.socket] = []
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def error(self) -> FetchError:
        """Return the error reported when the budget is spent."""
        return FetchError(f"timed out after {self.seconds:g} seconds", 422)

    def remaining(self) -> float:
        """Return the seconds left, raising the timeout error when none are."""
        left = self._end - time.monotonic()
        if self.expired or left <= 0:
            raise self.error()
        return left

    def watch(self, sock: socket.socket) -> socket.socket:
        """Register ``sock`` so that the watchdog can shut it down; return the guard to release."""
        # A dup shares the TCP connection but survives the fd hand-over that TLS wrapping does,
        # so shutting it down interrupts the handshake, header parsing and body reads alike.
        guard = sock.dup()
        with self._lock:
            if self.expired:
                guard.close()
                raise TimeoutError("fetch deadline passed")
            self._guards.append(guard)
        return guard

    def release(self, guard: socket.socket | None) -> None:
        """Forget and close a guard once its connection is finished."""
        if guard is None:
            return
        with self._lock:
            if guard in self._guards:
                self._guards.remove(guard)
        guard.close()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for guard in self._guards:
                with contextlib.suppress(OSError):
                    guard.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        """Stop the watchdog and close any guards left."""
        self._timer.cancel()
        with self._lock:
            guards, self._guards = self._guards, []
        for guard in guards:
            guard.close()


def _open_socket(ip: str, port: int, timeout: float | None) -> socket.socket:
    """Open a TCP connection to exactly ``ip`` (no name resolution happens here)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _PinnedHTTPSConnection(HTTPSConnection):
    """An HTTPS connection to one checked IP address that still verifies the URL's hostname."""

    def __init__(self, ip: str, port: int, *, deadline: _Deadline, **kwargs: Any) -> None:
        super().__init__(ip, port, **kwargs)
        self._pinned_ip = ip
        self._deadline = deadline
        self.guard: socket.socket | None = None

    def _new_conn(self) -> socket.socket:
        # urllib3's own _new_conn calls getaddrinfo again; connecting to the checked address
        # directly is what closes the DNS-rebinding window.
        timeout = self.timeout if isinstance(self.timeout, int | float) else None
        try:
            sock = _open_socket(self._pinned_ip, self.port, timeout)
            try:
                self.guard = self._deadline.watch(sock)
            except BaseException:
                sock.close()
                raise
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"connection to {self._pinned_ip} timed out") from exc
        except OSError as exc:
            raise NewConnectionError(
                self, f"connection to {self._pinned_ip} failed: {exc}"
            ) from exc
        return sock


def _describe(exc: BaseException | None, host: str) -> str:
    """Turn a network exception into a short user-facing reason."""
    chain: list[BaseException] = []
    while exc is not None and len(chain) < 10:  # bounded: chains can in theory loop
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    # The most specific cause wins, wherever urllib3 or http.client put it in the chain.
    rules: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
        (ssl.SSLCertVerificationError, "TLS certificate of {host} is not valid"),
        ((ssl.SSLError, Urllib3SSLError), "TLS error talking to {host}"),
        # NewConnectionError subclasses ConnectTimeoutError, so it must be tested first.
        ((NewConnectionError, ConnectionError), "could not connect to {host}"),
        ((ConnectTimeoutError, ReadTimeoutError, TimeoutError), "{host} did not answer in time"),
        (
            (ProtocolError, http.client.IncompleteRead),
            "connection to {host} broke off before the response was complete",
        ),
        (http.client.HTTPException, "{host} sent an invalid HTTP response"),
    )
    for kinds, message in rules:
        for cause in chain:
            if isinstance(cause, kinds):
                if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
                    return f"{message.format(host=host)}: {cause.verify_message}"
                return message.format(host=host)
    return f"could not fetch from {host}"


@contextlib.contextmanager
def _network_errors(deadline: _Deadline, host: str) -> Iterator[None]:
    """Translate network exceptions into FetchError(422), preferring the timeout reason."""
    try:
        yield
    except FetchError:
        raise
    except (HTTPError, http.client.HTTPException, OSError) as exc:
        if deadline.expired:
            raise deadline.error() from exc
        raise FetchError(_describe(exc, host), 422) from exc


def _request(
    target: _Target, networks: tuple[IPNetwork, ...], context: ssl.SSLContext, deadline: _Deadline
) -> tuple[_PinnedHTTPSConnection, HTTPResponse]:
    """Resolve, check and connect to ``target``, send the GET and return the response."""
    addresses = resolve_public(target.host, target.port, networks)
    last_error: BaseException | None = None
    for ip in addresses:
        conn = _PinnedHTTPSConnection(
            ip,
            target.port,
            deadline=deadline,
            timeout=deadline.remaining(),
            ssl_context=context,
            server_hostname=target.host,
            cert_reqs="CERT_REQUIRED",
        )
        try:
            with _network_errors(deadline, target.host):
                try:
                    conn.connect()
                except (NewConnectionError, ConnectTimeoutError) as exc:
                    # Only a failed TCP connect moves on to the host's next checked address.
                    last_error = exc
                    _close(conn, None, deadline)
                    continue
                conn.request(
                    "GET",
                    target.request_target,
                    headers={
                        "Host": target.host_header,
                        "User-Agent": USER_AGENT,
                        "Accept": "*/*",
                        # Store the bytes as served and never inflate a compression bomb.
                        "Accept-Encoding": "identity",
                        "Connection": "close",
                    },
                    preload_content=False,
                    decode_content=False,
                )
                return conn, conn.getresponse()
        except BaseException:
            _close(conn, None, deadline)
            raise
    if deadline.expired:
        raise deadline.error()
    raise FetchError(_describe(last_error, target.host), 422)


def _close(
    conn: _PinnedHTTPSConnection, response: HTTPResponse | None, deadline: _Deadline
) -> None:
    """Close a hop's response and connection and release its watchdog guard."""
    with contextlib.suppress(Exception):
        if response is not None:
            response.close()
    with contextlib.suppress(Exception):
        conn.close()
    deadline.release(conn.guard)
    conn.guard = None


def _copy_body(
    response: HTTPResponse,
    fileobj: _Writable,
    max_bytes: int,
    deadline: _Deadline,
    host: str,
) -> int:
    """Stream the body into ``fileobj`` and return its size, enforcing the size and time caps."""
    too_large = FetchError(f"file exceeds {max_bytes} bytes", 413)
    # urllib3 parsed Content-Length (None when chunked or absent); refuse before reading a byte.
    if response.length_remaining is not None and response.length_remaining > max_bytes:
        raise too_large
    size = 0
    while True:
        with _network_errors(deadline, host):
            # read1 returns after one socket read, so the deadline is checked between drips.
            chunk = response.read1(CHUNK_SIZE, decode_content=False)
        if not chunk:
            break
        deadline.remaining()
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        fileobj.write(chunk)
    if deadline.expired:
        # The watchdog's shutdown looks like EOF to a body without Content-Length.
        raise deadline.error()
    return size


def _tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Build a verifying TLS context trusting ``ca_bundle`` or certifi's bundle."""
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    context.check_hostname = True
    context.load_verify_locations(cafile=ca_bundle or certifi.where())
    return context


def fetch_to_file(
    url: str,
    fileobj: _Writable,
    *,
    max_bytes: int,
    timeout: float | None = None,
    max_redirects: int | None = None,
    allow_networks: Iterable[str | IPNetwork] | None = None,
    ca_bundle: str | None = None,
) -> FetchResult:
    """Download a public https URL into ``fileobj`` under the SSRF, size and time rules."""
    # None means: the INTAKE_URL_* Django setting when Django is configured, else 120 s,
    # 5 redirects, no allowed networks and certifi's CA bundle. On FetchError the caller must
    # discard whatever was already written to fileobj.
    if timeout is None:
        timeout = float(_setting("INTAKE_URL_TIMEOUT", DEFAULT_TIMEOUT))
    if max_redirects is None:
        max_redirects = int(_setting("INTAKE_URL_MAX_REDIRECTS", DEFAULT_MAX_REDIRECTS))
    if allow_networks is None:
        allow_networks = _setting("INTAKE_URL_ALLOW_NETWORKS", ()) or ()
    if ca_bundle is None:
        ca_bundle = _setting("INTAKE_URL_CA_BUNDLE", "") or None
    original = _parse_url(url)
    networks = _parse_networks(allow_networks)
    context = _tls_context(ca_bundle)
    target = original
    redirects = 0
    deadline = _Deadline(timeout)
    try:
        while True:
            conn, response = _request(target, networks, context, deadline)
            try:
                location = response.headers.get("Location")
                if response.status in REDIRECT_STATUSES and location:
                    if redirects >= max_redirects:
                        raise FetchError("too many redirects", 422)
                    redirects += 1
                    try:
                        target = _parse_url(urljoin(target.url, location.strip()))
                    except FetchError as exc:
                        # The user's URL was fine; where the server sent us is the problem.
                        raise FetchError(f"redirect refused: {exc.reason}", 422) from None
                    continue
                if not 200 <= response.status < 300:
                    raise FetchError(f"HTTP {response.status} from server", 422)
                size = _copy_body(response, fileobj, max_bytes, deadline, target.host)
                content_type = response.headers.get("Content-Type", "")
                return FetchResult(
                    url=target.url,
                    filename=(
                        _filename_from_url(target.url)
                        or _filename_from_url(original.url)
                        or "download"
                    ),
                    content_type=content_type.split(";", 1)[0].strip().lower()
                    or "application/octet-stream",
                    size=size,
                )
            finally:
                _close(conn, response, deadline)
    finally:
        deadline.cancel()
