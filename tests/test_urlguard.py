"""The URL guard: strict checks before any connection, and fetches against loopback servers only.

No test here reaches DNS: every guard gets a static resolver, and anything it would contact is a
server on 127.0.0.1 started by the test.
"""

from __future__ import annotations

import datetime
import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.core.urlguard import (
    FetchError,
    Rule,
    Target,
    UrlGuard,
    UrlRefused,
    guard_from_settings,
    redact,
    static_resolver,
)

PUBLIC = "211.249.220.24"  # ipaddress counts it as global; check() never connects to it
TOKEN_URL = "https://bot-api.kakao.com/v1/bots/abc/callback/TOKEN%2Bx?y=1"
BAD_NAMES = {
    "loop.test": "127.0.0.1",
    "ten.test": "10.1.2.3",
    "meta.test": "169.254.169.254",
    "six.test": "::1",
    "cgnat.test": "100.64.1.1",
    "mapped.test": "::ffff:10.0.0.1",
    "sixtofour.test": "2002:7f00:1::1",
    "nat64.test": "64:ff9b::a00:1",
    "nat64-local.test": "64:ff9b:1::d3f9:dc18",
    "teredo.test": "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "multicast.test": "224.0.0.1",
    "zero.test": "0.0.0.0",
    "reserved.test": "240.0.0.1",
    "ula.test": "fd00::1",
    "linklocal6.test": "fe80::1",
}


def public_guard(**kwargs: Any) -> UrlGuard:
    """Kakao-like rules; every allowed name resolves statically, bad names to inside addresses."""
    table = {"bot-api.kakao.com": PUBLIC, "secure.kakaocdn.net": PUBLIC, **BAD_NAMES}
    table["nat64-public.test"] = "64:ff9b::d3f9:dc18"  # NAT64 of 211.249.220.24: fine
    table["v6-public.test"] = "2001:4860:4860::8888"
    rules = {
        "callback": Rule(frozenset({"https"}), frozenset({"bot-api.kakao.com"})),
        "photo": Rule(frozenset({"http", "https"}), frozenset({"secure.kakaocdn.net"})),
        "lab": Rule(frozenset({"http", "https"}), frozenset({*table, "nowhere.test"})),
    }
    return UrlGuard(rules, resolver=static_resolver(table), **kwargs)


# --- check(): accepted ------------------------------------------------------------------------


def test_callback_url_is_accepted_with_target_untouched() -> None:
    target = public_guard().check(TOKEN_URL, "callback")
    assert target == Target(
        url=TOKEN_URL,
        scheme="https",
        host="bot-api.kakao.com",
        port=443,
        ip=PUBLIC,
        request_target="/v1/bots/abc/callback/TOKEN%2Bx?y=1",
    )


CALLBACK = ("callback", "bot-api.kakao.com", 443)
PHOTO = ("photo", "secure.kakaocdn.net", 80)


@pytest.mark.parametrize(
    ("url", "where", "request_target"),
    [
        ("HTTPS://BOT-API.KAKAO.COM./v1/Cb/%2b", CALLBACK, "/v1/Cb/%2b"),
        ("https://bot-api.kakao.com:443/x", CALLBACK, "/x"),
        ("https://bot-api.kakao.com", CALLBACK, "/"),
        ("https://bot-api.kakao.com?a=%zz", CALLBACK, "/?a=%zz"),
        (
            "http://secure.kakaocdn.net/a.jpg?credential=x&expires=1",
            PHOTO,
            "/a.jpg?credential=x&expires=1",
        ),
        ("http://secure.kakaocdn.net:80/a.jpg", PHOTO, "/a.jpg"),
        ("https://nat64-public.test/", ("lab", "nat64-public.test", 443), "/"),
        ("https://v6-public.test/", ("lab", "v6-public.test", 443), "/"),
    ],
)
def test_normalised_hosts_and_default_ports_are_accepted(
    url: str, where: tuple[str, str, int], request_target: str
) -> None:
    purpose, host, port = where
    target = public_guard().check(url, purpose)
    assert (target.host, target.port, target.request_target) == (host, port, request_target)


def test_static_resolver_is_case_insensitive_and_falls_back() -> None:
    asked: list[tuple[str, int]] = []

    def fallback(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return [PUBLIC]

    resolve = static_resolver({"Bot-API.kakao.com": "1.2.3.4"}, fallback=fallback)
    assert resolve("BOT-api.kakao.com.", 443) == ["1.2.3.4"]
    assert resolve("other.test", 80) == [PUBLIC]
    assert asked == [("other.test", 80)]
    assert static_resolver({})("other.test", 80) == []


# --- check(): refused -------------------------------------------------------------------------

REFUSED = [
    # userinfo and authority tricks
    "https://bot-api.kakao.com@evil.test/v1/x",
    "https://user:pw@bot-api.kakao.com/v1/x",
    "https://@bot-api.kakao.com/v1/x",
    "https://bot-api.kakao.com\\@evil.test/",
    "https:\\\\bot-api.kakao.com/x",
    "https://bot-api.kakao.com%2f@evil.test/",
    "https://bot-api%2ekakao.com/",
    "https://bot-api.kakao.com:443:443/",
    "https://bot-api.kakao.com/x#@evil.test",
    "https://bot_api.kakao.com/",
    # ports
    "https://bot-api.kakao.com:8443/x",
    "https://bot-api.kakao.com:80/x",
    "https://bot-api.kakao.com:/x",
    "https://bot-api.kakao.com:+443/x",
    "https://bot-api.kakao.com:0443/x",
    "https://bot-api.kakao.com:99999/x",
    # schemes
    "http://bot-api.kakao.com/x",
    "file:///etc/passwd",
    "ftp://bot-api.kakao.com/x",
    "gopher://bot-api.kakao.com/x",
    "javascript:alert(1)",
    "data:text/plain,hi",
    "//bot-api.kakao.com/x",
    "bot-api.kakao.com/x",
    "https:/bot-api.kakao.com/x",
    "https:///x",
    "https://",
    "",
    # whitespace, controls, non-ASCII
    " https://bot-api.kakao.com/x",
    "https://bot-api.kakao.com /x",
    "https://bot-api.kakao.com/x y",
    "https://bot-api.kakao.com/x\r\nHost: evil.test",
    "https://bot-api.kakao.com/x\t",
    "https://bot-api.kakao.com\x00.evil.test/",
    "https://bot-api.kakao.com/x\x7f",
    "https://bot-api.kakao.com/ü",
    "https://bot-api.kаkao.com/",  # Cyrillic а
    # IP literals, however spelled, even public ones
    "https://2130706433/",
    "https://0177.0.0.1/",
    "https://0x7f000001/",
    "https://0x7f.1/",
    "https://127.1/",
    "https://127.0.0.1/",
    f"https://{PUBLIC}/",
    "https://1.2.3.4.5/",
    "https://[::1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:7f00:1]/",
    "https://[fe80::1%25eth0]/",
    "https://[v1.x]/",
    # hosts not on the list
    "https://evil.test/x",
    "https://bot-api.kakao.com.evil.test/x",
    "https://evilbot-api.kakao.com/x",
    "https://kakao.com/x",
    "https://secure.kakaocdn.net/x",  # a photo host is no callback host
]


@pytest.mark.parametrize("url", REFUSED)
def test_tricks_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused) as caught:
        public_guard().check(url, "callback")
    assert caught.value.reason
    assert "TOKEN" not in str(caught.value)


@pytest.mark.parametrize("name", sorted(BAD_NAMES))
def test_names_resolving_inside_are_refused(name: str) -> None:
    with pytest.raises(UrlRefused) as caught:
        public_guard().check(f"https://{name}/x", "lab")
    assert caught.value.reason == "host resolves to a non-public address"


def test_one_inside_address_among_public_ones_is_refused() -> None:
    rules = {"lab": Rule(frozenset({"https"}), frozenset({"mixed.test"}))}
    guard = UrlGuard(rules, resolver=lambda host, port: [PUBLIC, "10.0.0.1"])
    with pytest.raises(UrlRefused, match="non-public"):
        guard.check("https://mixed.test/", "lab")


def test_unresolvable_and_malformed_answers_are_refused() -> None:
    with pytest.raises(UrlRefused, match="does not resolve"):
        public_guard().check("https://nowhere.test/", "lab")

    def failing(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "unknown")

    rules = {"lab": Rule(frozenset({"https"}), frozenset({"a.test"}))}
    with pytest.raises(UrlRefused, match="does not resolve"):
        UrlGuard(rules, resolver=failing).check("https://a.test/", "lab")
    with pytest.raises(UrlRefused, match="malformed address"):
        UrlGuard(rules, resolver=lambda h, p: ["not-an-ip"]).check("https://a.test/", "lab")


def test_unknown_purpose_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="purpose"):
        public_guard().check(TOKEN_URL, "calback")


@pytest.mark.parametrize(
    "entry",
    [
        "http://127.0.0.1",
        "http://127.0.0.1:8765/path",
        "http://127.1:8765",
        "ftp://a.test:21",
        "http://u@127.0.0.1:8765",
    ],
)
def test_dev_allow_entries_must_be_exact_origins(entry: str) -> None:
    with pytest.raises(ValueError, match="dev_allow"):
        UrlGuard({}, dev_allow=[entry])


def test_redact_keeps_only_scheme_and_host() -> None:
    assert redact(TOKEN_URL) == "https://bot-api.kakao.com/…"
    assert redact("https://user:secret@h.test:8443/tok") == "https://h.test:8443/…"
    assert redact("https://h.test") == "https://h.test"
    assert redact("https://h\r\n.test/x") == "https://?/…"
    assert redact("not a url") == "<unparsed url>"


# --- refused before any connection ------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP listener on loopback that nothing should ever connect to."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.05)
    yield sock
    sock.close()


def assert_no_connection(sock: socket.socket) -> None:
    with pytest.raises(TimeoutError):
        conn, _ = sock.accept()
        conn.close()


def test_refusals_open_no_connection(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    table = {"loop.test": "127.0.0.1", "localhost": "127.0.0.1"}
    rules = {"lab": Rule(frozenset({"http", "https"}), frozenset({"loop.test", "localhost"}))}
    # Dev origins that are near misses of the listener's own origin.
    dev = [f"https://127.0.0.1:{port}", f"http://localhost:{port + 1}"]
    guard = UrlGuard(rules, dev_allow=dev, resolver=static_resolver(table))
    urls = [
        f"http://127.0.0.1:{port}/",  # IP literal, scheme differs from the dev origin
        f"http://loop.test:{port}/",  # allowed name, other port, resolves to loopback
        f"http://localhost:{port}/",  # dev origin for another port
        f"http://2130706433:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",
        f"http://bot-api.kakao.com@127.0.0.1:{port}/",
        f"http://127.0.0.1:{port}\\@loop.test/",
        "http://loop.test/",  # default port, resolves to loopback
    ]
    for url in urls:
        with pytest.raises(UrlRefused):
            guard.get(url, "lab", timeout_s=0.5)
        with pytest.raises(UrlRefused):
            guard.post_json(url, "lab", {"x": 1}, timeout_s=0.5)
    assert_no_connection(listener)


# --- end to end against a local server (dev_allow) --------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    port: int
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    redirect_to: str = ""
    sni: list[str | None] = field(default_factory=list)


class Handler(http.server.BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        state: Server = self.server.state
        state.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))

    def _send(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self._record()
        if self.path.startswith("/fail"):
            self._send(400, b'{"status": "FAIL", "message": "invalid token"}')
        else:
            self._send(200, b'{"status": "SUCCESS"}', **{"Content-Type": "application/json"})

    def do_GET(self) -> None:
        self._record()
        state: Server = self.server.state
        if self.path == "/small":
            self._send(200, b"hello", **{"X-Kind": "small"})
        elif self.path == "/declared-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            state.release.wait(5)
        elif self.path == "/undeclared-big":
            self.send_response(200)
            self.end_headers()  # HTTP/1.0 without length: body runs to the close
            for _ in range(50):
                self.wfile.write(b"x" * 10_000)
        elif self.path == "/stall":
            state.release.wait(5)
        elif self.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                if state.release.wait(0.05):
                    return
                self.wfile.write(b"x")
                self.wfile.flush()
        elif self.path == "/redirect":
            self._send(302, b"", Location=state.redirect_to)
        elif self.path == "/missing":
            self._send(404, b"no such photo")
        else:
            self._send(500, b"unexpected path")


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up early (size cap, timeouts) is what these tests do


def serve(context: ssl.SSLContext | None = None) -> tuple[QuietServer, Server]:
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    state = Server(port=httpd.server_address[1])
    if context is not None:
        context.sni_callback = lambda sock, name, ctx: state.sni.append(name)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.state = state  # type: ignore[attr-defined]
    threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return httpd, state


@pytest.fixture
def server() -> Iterator[Server]:
    httpd, state = serve()
    yield state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()


def dev_guard(state: Server, **kwargs: Any) -> UrlGuard:
    rules = {
        "callback": Rule(frozenset({"https"}), frozenset({"bot-api.kakao.com"})),
        "photo": Rule(frozenset({"https"}), frozenset({"secure.kakaocdn.net"})),
    }
    return UrlGuard(
        rules, dev_allow=[f"http://127.0.0.1:{state.port}"], resolver=static_resolver({}), **kwargs
    )


def test_post_json_sends_exact_path_and_bytes(server: Server) -> None:
    path = "/v1/bots/abc/callback/TOKEN%2Bx%2b~!$'()*,;=:@/?y=1&z=%E2%9C%93"
    payload = {"version": "2.0", "template": {"outputs": [{"simpleText": {"text": "코알라"}}]}}
    response = dev_guard(server).post_json(
        f"http://127.0.0.1:{server.port}{path}", "callback", payload
    )
    assert response.status == 200
    assert json.loads(response.body) == {"status": "SUCCESS"}
    assert response.headers["content-type"] == "application/json"
    [seen] = server.seen
    assert (seen.method, seen.path) == ("POST", path)
    assert seen.body == json.dumps(payload, ensure_ascii=False).encode("utf-8")
    assert seen.headers["Host"] == f"127.0.0.1:{server.port}"
    assert seen.headers["Content-Type"] == "application/json; charset=utf-8"


def test_error_statuses_come_back_to_post_but_raise_from_get(server: Server) -> None:
    guard = dev_guard(server)
    base = f"http://127.0.0.1:{server.port}"
    response = guard.post_json(f"{base}/fail/TOKEN", "callback", {})
    assert response.status == 400
    assert json.loads(response.body)["status"] == "FAIL"
    with pytest.raises(FetchError) as caught:
        guard.get(f"{base}/missing", "photo")
    assert (caught.value.status, caught.value.retryable) == (404, False)


def test_get_reads_a_body_and_caller_cannot_move_host(server: Server) -> None:
    guard = dev_guard(server)
    response = guard.request(
        "GET",
        f"http://127.0.0.1:{server.port}/small",
        "photo",
        headers={"Host": "evil.test", "X-Trace": "1"},
    )
    assert (response.status, response.body) == (200, b"hello")
    assert response.headers["x-kind"] == "small"
    [seen] = server.seen
    assert seen.headers["Host"] == f"127.0.0.1:{server.port}"
    assert seen.headers["X-Trace"] == "1"


def test_size_cap_stops_large_bodies(server: Server) -> None:
    guard = dev_guard(server, max_bytes=100_000)
    base = f"http://127.0.0.1:{server.port}"
    started = time.monotonic()
    with pytest.raises(FetchError, match="over 100000") as declared:
        guard.get(f"{base}/declared-huge", "photo")
    assert time.monotonic() - started < 2  # refused on the header, not after reading
    assert declared.value.retryable is False
    with pytest.raises(FetchError, match="body over 100000"):
        guard.get(f"{base}/undeclared-big", "photo")
    assert len(guard.get(f"{base}/undeclared-big", "photo", max_bytes=600_000).body) == 500_000


def test_stalled_and_trickling_servers_time_out(server: Server) -> None:
    guard = dev_guard(server)
    base = f"http://127.0.0.1:{server.port}"
    for path in ("/stall", "/trickle"):  # a trickle never trips a per-read timeout alone
        started = time.monotonic()
        with pytest.raises(FetchError) as caught:
            guard.get(f"{base}{path}", "photo", timeout_s=0.5)
        elapsed = time.monotonic() - started
        assert caught.value.retryable is True
        assert 0.4 < elapsed < 1.5, (path, elapsed)


def test_redirects_are_not_followed(server: Server, listener: socket.socket) -> None:
    server.redirect_to = f"http://127.0.0.1:{listener.getsockname()[1]}/elsewhere"
    with pytest.raises(FetchError) as caught:
        dev_guard(server).get(f"http://127.0.0.1:{server.port}/redirect", "photo")
    assert (caught.value.status, caught.value.retryable) == (302, False)
    assert_no_connection(listener)


def test_connection_goes_to_the_address_checked_once(server: Server) -> None:
    answers = ["127.0.0.1", "10.9.9.9"]  # a rebinding resolver: loopback, then elsewhere
    asked: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return [answers[min(len(asked), 2) - 1]]

    guard = UrlGuard(
        {"photo": Rule(frozenset({"https"}), frozenset())},
        dev_allow=[f"http://rebind.test:{server.port}"],
        resolver=rebinding,
    )
    response = guard.get(f"http://rebind.test:{server.port}/small", "photo")
    assert response.body == b"hello"
    assert asked == ["rebind.test"]
    assert server.seen[0].headers["Host"] == f"rebind.test:{server.port}"


def test_refused_connection_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connecting is refused
        rules = {"photo": Rule(frozenset({"https"}), frozenset())}
        guard = UrlGuard(rules, dev_allow=[f"http://127.0.0.1:{port}"])
        with pytest.raises(FetchError) as caught:
            guard.get(f"http://127.0.0.1:{port}/", "photo")
    assert caught.value.retryable is True
    assert caught.value.status is None


# --- TLS: SNI and certificate checks use the host name while connecting to the checked IP -----


@dataclass
class Pki:
    ca_pem: bytes
    good: tuple[Path, Path]  # cert, key for bot-api.kakao.com
    wrong: tuple[Path, Path]  # cert, key for another name


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "KoalaTalk test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(name: str) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path

    return Pki(
        ca.public_bytes(serialization.Encoding.PEM), leaf("bot-api.kakao.com"), leaf("other.test")
    )


@pytest.fixture
def tls_server(request: pytest.FixtureRequest, pki: Pki) -> Iterator[Server]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert, key = pki.good if request.param == "good" else pki.wrong
    context.load_cert_chain(cert, key)
    httpd, state = serve(context)
    yield state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()


def tls_guard(state: Server, pki: Pki | None) -> UrlGuard:
    """bot-api.kakao.com pinned to loopback as a dev origin, trusting the test CA."""
    context = ssl.create_default_context(cadata=pki.ca_pem.decode()) if pki else None
    rules = {"callback": Rule(frozenset({"https"}), frozenset({"bot-api.kakao.com"}))}
    return UrlGuard(
        rules,
        dev_allow=[f"https://bot-api.kakao.com:{state.port}"],
        resolver=static_resolver({"bot-api.kakao.com": "127.0.0.1"}),
        ssl_context=context,
    )


@pytest.mark.parametrize("tls_server", ["good"], indirect=True)
def test_tls_names_the_host_while_connecting_to_the_ip(tls_server: Server, pki: Pki) -> None:
    url = f"https://bot-api.kakao.com:{tls_server.port}/v1/bots/abc/callback/T%2B"
    response = tls_guard(tls_server, pki).post_json(url, "callback", {"version": "2.0"})
    assert response.status == 200
    assert tls_server.sni == ["bot-api.kakao.com"]
    assert tls_server.seen[0].path == "/v1/bots/abc/callback/T%2B"
    assert tls_server.seen[0].headers["Host"] == f"bot-api.kakao.com:{tls_server.port}"


@pytest.mark.parametrize(
    ("tls_server", "trust_test_ca"), [("good", False), ("wrong", True)], indirect=["tls_server"]
)
def test_untrusted_or_misnamed_certificates_are_final(
    tls_server: Server, pki: Pki, trust_test_ca: bool
) -> None:
    # good: a fine name, but only system CAs trusted; wrong: trusted issuer, another name.
    guard = tls_guard(tls_server, pki if trust_test_ca else None)
    with pytest.raises(FetchError, match="certificate") as caught:
        guard.get(f"https://bot-api.kakao.com:{tls_server.port}/x", "callback", timeout_s=2)
    assert caught.value.retryable is False
    assert tls_server.seen == []


# --- settings ---------------------------------------------------------------------------------


def test_guard_from_settings_builds_rules_and_dev_origins() -> None:
    from bot.core.settings import Settings

    settings = Settings(
        mode="development",
        dev_allow=("http://127.0.0.1:8765",),
        resolve={"bot-api.kakao.com": PUBLIC, "secure.kakaocdn.net": PUBLIC},
        fetch_timeout_s=7.0,
        fetch_max_bytes=1234,
    )
    guard = guard_from_settings(settings)
    assert guard.rules["callback"] == Rule(frozenset({"https"}), frozenset({"bot-api.kakao.com"}))
    assert guard.rules["photo"] == Rule(
        frozenset({"http", "https"}), frozenset(settings.photo_hosts)
    )
    assert (guard.timeout_s, guard.max_bytes) == (7.0, 1234)
    assert guard.check(TOKEN_URL, "callback").ip == PUBLIC
    assert guard.check("http://secure.kakaocdn.net/a.jpg", "photo").ip == PUBLIC
    with pytest.raises(UrlRefused):
        guard.check("http://bot-api.kakao.com/x", "callback")
    assert guard.check("http://127.0.0.1:8765/cb", "callback").ip == "127.0.0.1"

    production = settings.with_(mode="production", secret="s")
    with pytest.raises(UrlRefused):
        guard_from_settings(production).check("http://127.0.0.1:8765/cb", "callback")
    custom = guard_from_settings(production, resolver=static_resolver({}))
    with pytest.raises(UrlRefused, match="does not resolve"):
        custom.check(TOKEN_URL, "callback")
