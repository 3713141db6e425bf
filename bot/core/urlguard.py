"""The one gate for every URL the server contacts (Kakao callbacks, photo fetches, later others).

`UrlGuard.check` parses a URL strictly, matches it against the purpose's rule, resolves the host
and refuses any address that is not globally routable, all before a socket is opened. `request`
then connects to exactly the address that was checked (no second DNS lookup to rebind), sends
the request target byte for byte as received (Kakao's callback token breaks when re-encoded),
never follows redirects, and caps time and size.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError
from urllib3.response import BaseHTTPResponse
from urllib3.util.ssl_match_hostname import CertificateError

if TYPE_CHECKING:  # only attributes are read; keeps this module free of settings' imports
    from bot.core.settings import Settings

Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}
USER_AGENT = "KoalaTalk/0.1"
READ_CHUNK = 65536
ERROR_BODY_MAX = 65536  # enough of a non-2xx body to read an API's complaint

# Printable ASCII only: no whitespace, controls, DEL or non-ASCII anywhere in the URL.
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([/?][^#]*)?$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
_REDACT = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,15}):/*([^/?#\\]*)(.*)$", re.S)
_SAFE_AUTHORITY = re.compile(r"^[A-Za-z0-9.:\[\]-]{1,255}$")
# The well-known NAT64 prefix carries an IPv4 address in its last 32 bits (RFC 6052).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UrlRefused(Exception):
    """The URL was refused before any connection was made."""

    def __init__(self, reason: str, url: str) -> None:
        super().__init__(f"{reason}: {redact(url)}")
        self.reason = reason


class FetchError(Exception):
    """The URL passed the check but the exchange failed (network, timeout, size, status)."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


@dataclass(frozen=True)
class Rule:
    """What one purpose may contact: schemes and exact host names (lower-case)."""

    schemes: frozenset[str]
    hosts: frozenset[str]


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect and what to send."""

    url: str
    scheme: str
    host: str  # lower-case, no trailing dot; an IPv6 literal is written without brackets
    port: int
    ip: str  # the checked address the connection goes to
    request_target: str  # path and query exactly as received


@dataclass(frozen=True)
class Response:
    """A final response; header names are lower-case."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class _Parts:
    scheme: str
    host: str  # lower-case, trailing dot stripped, brackets removed
    bracketed: bool
    port: int
    request_target: str

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if self.bracketed else self.host
        return f"{self.scheme}://{host}:{self.port}"


def redact(url: str) -> str:
    """`scheme://host/…` for logs: paths and queries carry tokens."""
    match = _REDACT.match(url) if isinstance(url, str) else None
    if not match:
        return "<unparsed url>"
    scheme, authority, rest = match.groups()
    authority = authority.rpartition("@")[2]
    if not _SAFE_AUTHORITY.match(authority):
        authority = "?"
    return f"{scheme.lower()}://{authority}" + ("/…" if rest else "")


def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with the operating system (DNS); addresses in the order given, deduplicated."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def static_resolver(table: Mapping[str, str], fallback: Resolver | None = None) -> Resolver:
    """Resolve names from a fixed table first, then fallback; no fallback resolves to nothing."""
    fixed = {name.lower().rstrip("."): ip for name, ip in table.items()}

    def resolve(host: str, port: int) -> list[str]:
        ip = fixed.get(host.lower().rstrip("."))
        if ip is not None:
            return [ip]
        return fallback(host, port) if fallback is not None else []

    return resolve


def _ip_literal(host: str) -> bool:
    """Whether a host would be read as an IPv4 address in any of its spellings."""
    try:
        socket.inet_aton(host)  # accepts 127.1, 0177.0.0.1, 0x7f000001, 2130706433
        return True
    except OSError:
        pass
    # WHATWG parsers also treat a numeric last label as IPv4 (e.g. 1.2.3.0x4 or 1.2.3.4.5).
    return bool(_NUMERIC_LABEL.match(host.rsplit(".", 1)[-1]))


def _parse(url: str) -> _Parts:
    """Split a URL strictly; raise UrlRefused for anything unusual."""
    if not isinstance(url, str) or not url:
        raise UrlRefused("empty url", "")
    if not _PRINTABLE.match(url):
        raise UrlRefused("whitespace, control or non-ASCII character", url)
    if "\\" in url:
        raise UrlRefused("backslash", url)
    if "#" in url:
        raise UrlRefused("fragment", url)
    match = _URL.match(url)
    if not match:
        raise UrlRefused("not an absolute URL", url)
    scheme, authority, target = match.group(1).lower(), match.group(2), match.group(3) or "/"
    if scheme not in DEFAULT_PORTS:
        raise UrlRefused(f"scheme {scheme}", url)
    if "@" in authority:
        raise UrlRefused("userinfo", url)
    if "%" in authority:
        raise UrlRefused("percent sign in host", url)
    if authority.startswith("["):
        host, bracket, port_text = authority[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise UrlRefused("malformed IPv6 literal", url)
        port_text = port_text[1:] if port_text else None
        bracketed = True
    else:
        host, colon, port_text = authority.partition(":")
        port_text = port_text if colon else None
        bracketed = False
    if port_text is None:
        port = DEFAULT_PORTS[scheme]
    elif port_text.isdigit() and port_text == str(int(port_text)) and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise UrlRefused("malformed port", url)
    host = host.lower()
    if bracketed:
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError as exc:
            raise UrlRefused("malformed IPv6 literal", url) from exc
    else:
        host = host[:-1] if host.endswith(".") else host
        if not host:
            raise UrlRefused("empty host", url)
        if len(host) > 253 or not _HOSTNAME.match(host):
            raise UrlRefused("malformed host", url)
    if target.startswith("?"):
        target = "/" + target
    return _Parts(scheme, host, bracketed, port, target)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _routable(address: IPAddress) -> bool:
    """Globally routable unicast: not private, loopback, link-local, multicast, reserved, CGNAT."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.teredo is not None or address.is_site_local:
            return False  # Teredo tunnels to anywhere; site-local is someone's inside
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            # These stand for an IPv4 host (NAT64 is how an IPv6-only server reaches Kakao).
            return _routable(embedded)
    # is_global alone lets IPv4 multicast through, so every class is named.
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


class UrlGuard:
    """Checks URLs against per-purpose rules and fetches them without surprises."""

    def __init__(
        self,
        rules: Mapping[str, Rule],
        dev_allow: Iterable[str] = (),
        resolver: Resolver = system_resolver,
        timeout_s: float = 5.0,
        max_bytes: int = 20_000_000,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.rules = {
            purpose: Rule(
                frozenset(s.lower() for s in rule.schemes),
                frozenset(h.lower().rstrip(".") for h in rule.hosts),
            )
            for purpose, rule in rules.items()
        }
        self.dev_allow = frozenset(self._dev_origin(entry) for entry in dev_allow)
        self.resolver = resolver
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.ssl_context = ssl_context  # None: urllib3's default, verifying with system CAs

    @staticmethod
    def _dev_origin(entry: str) -> str:
        """Validate a dev_allow entry `scheme://host:port` and return its canonical origin."""
        try:
            parts = _parse(entry.strip().rstrip("/"))
        except UrlRefused as exc:
            raise ValueError(f"dev_allow entry {entry!r}: {exc.reason}") from exc
        if not re.search(r":\d+/?$", entry.strip()) or parts.request_target != "/":
            raise ValueError(f"dev_allow entry {entry!r} must be scheme://host:port")
        if not parts.bracketed and _ip_literal(parts.host):
            try:
                ipaddress.IPv4Address(parts.host)
            except ValueError as exc:
                raise ValueError(f"dev_allow entry {entry!r}: write IPv4 as a.b.c.d") from exc
        return parts.origin

    def check(self, url: str, purpose: str) -> Target:
        """Check a URL for a purpose and pick the address to connect to; raises UrlRefused."""
        rule = self.rules.get(purpose)
        if rule is None:
            raise ValueError(f"unknown URL purpose {purpose!r}")
        parts = _parse(url)
        dev = parts.origin in self.dev_allow
        # 1. Scheme, port and host against the rule (a dev origin is allowed as a whole).
        if not dev:
            if parts.scheme not in rule.schemes:
                raise UrlRefused(f"scheme {parts.scheme} not allowed for {purpose}", url)
            if parts.port != DEFAULT_PORTS[parts.scheme]:
                raise UrlRefused("non-default port", url)
            if parts.bracketed or _ip_literal(parts.host):
                raise UrlRefused("IP address instead of a host name", url)
            if parts.host not in rule.hosts:
                raise UrlRefused(f"host not allowed for {purpose}", url)
        # 2. Addresses: a dev IP literal is its own address; names go to the resolver.
        if parts.bracketed or _ip_literal(parts.host):
            addresses = [parts.host]
        else:
            try:
                addresses = list(self.resolver(parts.host, parts.port))
            except (OSError, UnicodeError) as exc:
                raise UrlRefused("host does not resolve", url) from exc
        if not addresses:
            raise UrlRefused("host does not resolve", url)
        checked: list[IPAddress] = []
        for text in addresses:
            try:
                checked.append(ipaddress.ip_address(text))
            except ValueError as exc:
                raise UrlRefused("resolver gave a malformed address", url) from exc
        # 3. Every address must be public, or one rebinding answer could reach inside.
        if not dev and not all(_routable(address) for address in checked):
            raise UrlRefused("host resolves to a non-public address", url)
        return Target(
            url, parts.scheme, parts.host, parts.port, str(checked[0]), parts.request_target
        )

    def request(
        self,
        method: str,
        url: str,
        purpose: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        max_bytes: int | None = None,
    ) -> Response:
        """Send one request to a checked URL; a redirect raises FetchError, any other returns."""
        target = self.check(url, purpose)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        cap = self.max_bytes if max_bytes is None else max_bytes
        deadline = time.monotonic() + timeout
        where = redact(url)
        conn = self._connection(target, timeout)
        try:
            return self._exchange(conn, target, method, body, headers, deadline, cap)
        except (ssl.SSLCertVerificationError, CertificateError) as exc:
            # A wrong certificate will be just as wrong on the next try.
            raise FetchError(f"{where}: certificate refused: {exc}", retryable=False) from exc
        except TimeoutError as exc:
            raise FetchError(f"{where}: timed out", retryable=True) from exc
        except (OSError, HTTPError, http.client.HTTPException) as exc:
            raise FetchError(f"{where}: {type(exc).__name__}: {exc}", retryable=True) from exc
        finally:
            conn.close()

    def _exchange(
        self,
        conn: HTTPConnection,
        target: Target,
        method: str,
        body: bytes | None,
        headers: Mapping[str, str] | None,
        deadline: float,
        cap: int,
    ) -> Response:
        where = redact(target.url)
        # 1. Connect to the checked address (TLS names the host for SNI and verification).
        conn.connect()
        sock = conn.sock
        # 2. Send the request target untouched: http.client writes it as given, where
        # urllib3's pools would re-encode it.
        conn.timeout = _remaining(deadline, where)
        conn.request(
            method,
            target.request_target,
            body=body,
            headers=self._headers(target, headers),
            preload_content=False,
            decode_content=False,
        )
        conn.timeout = _remaining(deadline, where)
        response = conn.getresponse()
        status = response.status
        found = {name.lower(): value for name, value in response.headers.items()}
        # 3. Redirects are never followed: the next hop was never checked.
        if 300 <= status < 400:
            raise FetchError(
                f"{where}: redirect {status} not followed", retryable=False, status=status
            )
        length = found.get("content-length", "")
        if status < 400 and length.isdigit() and int(length) > cap:
            raise FetchError(
                f"{where}: body of {length} bytes is over {cap}", retryable=False, status=status
            )
        # 4. Stream the body against the size cap and the overall deadline; an error body is
        # only read for its gist.
        limit = cap if status < 400 else min(cap, ERROR_BODY_MAX)
        data = bytearray()
        while chunk := _read_chunk(response, sock, deadline, where):
            data += chunk
            if len(data) > limit:
                if status >= 400:
                    del data[limit:]
                    break
                raise FetchError(f"{where}: body over {cap} bytes", retryable=False, status=status)
        return Response(status, found, bytes(data))

    def post_json(
        self, url: str, purpose: str, payload: object, *, timeout_s: float | None = None
    ) -> Response:
        """POST a JSON document; any non-redirect status comes back as a Response."""
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json"}
        return self.request("POST", url, purpose, body=body, headers=headers, timeout_s=timeout_s)

    def get(
        self,
        url: str,
        purpose: str,
        *,
        timeout_s: float | None = None,
        max_bytes: int | None = None,
    ) -> Response:
        """GET a resource's bytes; any status other than 2xx raises FetchError."""
        response = self.request("GET", url, purpose, timeout_s=timeout_s, max_bytes=max_bytes)
        if not 200 <= response.status < 300:
            retryable = response.status >= 500 or response.status in {408, 429}
            raise FetchError(
                f"{redact(url)}: status {response.status}",
                retryable=retryable,
                status=response.status,
            )
        return response

    def _connection(self, target: Target, timeout: float) -> HTTPConnection:
        if target.scheme == "https":
            return HTTPSConnection(
                target.ip,
                target.port,
                timeout=timeout,
                server_hostname=target.host,
                assert_hostname=target.host,
                ssl_context=self.ssl_context,
            )
        return HTTPConnection(target.ip, target.port, timeout=timeout)

    @staticmethod
    def _headers(target: Target, given: Mapping[str, str] | None) -> dict[str, str]:
        # The guard owns Host and framing; callers cannot point the request elsewhere.
        owned = {"host", "content-length", "transfer-encoding", "accept-encoding"}
        headers = {k: v for k, v in (given or {}).items() if k.lower() not in owned}
        host = f"[{target.host}]" if ":" in target.host else target.host
        if target.port != DEFAULT_PORTS[target.scheme]:
            host = f"{host}:{target.port}"
        headers["Host"] = host
        headers["Accept-Encoding"] = "identity"  # bytes on the wire are the bytes counted
        if not any(k.lower() == "user-agent" for k in headers):
            headers["User-Agent"] = USER_AGENT
        return headers


def _read_chunk(
    response: BaseHTTPResponse, sock: socket.socket | None, deadline: float, where: str
) -> bytes:
    """One read of whatever has arrived, bounded by the time left (a trickle cannot stall us)."""
    if sock is not None and sock.fileno() != -1:  # -1: the body is complete and closed
        sock.settimeout(_remaining(deadline, where))
    return response.read1(READ_CHUNK)


def _remaining(deadline: float, where: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError(f"{where}: timed out", retryable=True)
    return left


def origin_of(url: str) -> str:
    """`scheme://host:port` of a URL, the port always written (the form dev_allow takes)."""
    parts = _parse(url)
    return parts.origin


def _api_rule(*base_urls: str) -> Rule:
    """https to the hosts of configured API base URLs (Telegram, LINE)."""
    return Rule(frozenset({"https"}), frozenset(_parse(url).host for url in base_urls if url))


def guard_from_settings(settings: Settings, resolver: Resolver | None = None) -> UrlGuard:
    """The server's guard: https callbacks to Kakao, photos from Kakao's CDN hosts, the
    Telegram and LINE APIs; in development the playground's own origin too."""
    rules = {
        "callback": Rule(frozenset({"https"}), frozenset(settings.callback_hosts)),
        # secure.kakaocdn.net hands out plain-http URLs, so photos allow both schemes.
        "photo": Rule(frozenset({"http", "https"}), frozenset(settings.photo_hosts)),
        "telegram": _api_rule(settings.telegram_api_base),
        "line": _api_rule(settings.line_api_base, settings.line_content_base),
    }
    dev_allow = tuple(settings.dev_allow) if settings.development else ()
    if settings.playground_on:
        # The playground posts Kakao-style callbacks back to this server (development only).
        dev_allow += (origin_of(settings.public_url.rstrip("/")),)
    if resolver is None:
        fallback = system_resolver if settings.system_dns else None
        resolver = static_resolver(settings.resolve, fallback=fallback)
    return UrlGuard(
        rules,
        dev_allow=dev_allow,
        resolver=resolver,
        timeout_s=settings.fetch_timeout_s,
        max_bytes=settings.fetch_max_bytes,
    )
