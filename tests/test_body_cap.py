"""Bodies over MAX_BODY_BYTES get 413 on every webhook, chunked or not, before any secret,
signature or JSON check. The app is served for real (werkzeug's threaded server) and the bodies
are sent with http.client, chunked (no Content-Length) or with their length declared."""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from bot.core.settings import Settings
from bot.messengers import line
from bot.web.app import create_app
from tests.standins import LINE_TOKEN, TELEGRAM_TOKEN
from tests.support import kakao_payload, new_user

CAP = 4096
KAKAO_SECRET = "kakao-cap-secret-value"
TG_SECRET = "tg-cap-secret"
LINE_SECRET = "line-cap-secret"


@pytest.fixture(scope="module")
def served(module_redis_url: str, tmp_path_factory: Any) -> Iterator[int]:
    """A production app (every secret set) on a loopback port; yields the port."""
    folder: Path = tmp_path_factory.mktemp("bodycap")
    settings = Settings(
        mode="production",
        secret=KAKAO_SECRET,
        redis_url=module_redis_url,
        preset="koala-1b",
        media_dir=folder / "media",
        photo_dir=folder / "photos",
        telegram_token=TELEGRAM_TOKEN,
        telegram_secret=TG_SECRET,
        line_channel_secret=LINE_SECRET,
        line_access_token=LINE_TOKEN,
        log_json=False,
        system_dns=False,
        max_body_bytes=CAP,
    )
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(timeout=10)


def send(port: int, path: str, body: bytes, headers: dict[str, str], chunked: bool) -> Any:
    """POST the body, chunked in 1000-byte pieces or with Content-Length; (status, JSON)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        if chunked:
            pieces = [body[i : i + 1000] for i in range(0, len(body), 1000)]
            conn.request("POST", path, body=iter(pieces), headers=headers, encode_chunked=True)
        else:
            conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        conn.close()


JSON = {"Content-Type": "application/json"}


def padded(data: dict[str, Any], size: int) -> bytes:
    """JSON text padded with spaces to exactly `size` bytes (still valid JSON)."""
    raw = json.dumps(data, ensure_ascii=False).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def kakao_body(size: int) -> bytes:
    body = kakao_payload(new_user(), "안녕")
    body["userRequest"]["user"]["id"] = ""  # unreadable: answered 200 without queueing
    return padded(body, size)


def telegram_body(size: int) -> bytes:
    update_id = int(uuid.uuid4().int % 10**9)
    edited = {"chat": {"id": 5}, "text": "x"}
    return padded({"update_id": update_id, "edited_message": edited}, size)


def line_body(size: int) -> bytes:
    return padded({"destination": "Ubot", "events": []}, size)


# Over the cap: wrong secrets, no signature, a wrong content type, not JSON: all 413.
OVER = [
    ("/kakao/skill", lambda: kakao_body(CAP + 1), {}),
    ("/kakao/skill", lambda: b"{" * (3 * CAP), {"X-KoalaTalk-Secret": "wrong"}),
    ("/kakao/skill", lambda: kakao_body(3 * CAP), {"Content-Type": "text/plain"}),
    ("/telegram/webhook", lambda: telegram_body(CAP + 1), {}),
    ("/telegram/webhook", lambda: b"not json" * CAP, {}),
    ("/line/webhook", lambda: line_body(CAP + 1), {}),
    ("/line/webhook", lambda: line_body(3 * CAP), {line.SIGNATURE_HEADER: "forged"}),
]


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
@pytest.mark.parametrize("case", range(len(OVER)))
def test_a_body_over_the_cap_is_413_before_any_other_check(
    served: int, case: int, chunked: bool
) -> None:
    path, make, extra = OVER[case]
    status, answer = send(served, path, make(), {**JSON, **extra}, chunked)
    assert status == 413, (path, extra, answer)
    assert answer == {"error": "BodyTooLarge"} or answer["error"] == "BodyTooLarge"


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_body_at_the_cap_is_read_whole(served: int, chunked: bool) -> None:
    """At exactly the cap, a chunked body is read to its end (not cut) and checked as usual."""
    kakao = kakao_body(CAP)
    status, answer = send(
        served, "/kakao/skill", kakao, {**JSON, "X-KoalaTalk-Secret": KAKAO_SECRET}, chunked
    )
    assert status == 200 and answer["version"] == "2.0", answer
    wrong = {**JSON, "X-KoalaTalk-Secret": "wrong"}
    status, _ = send(served, "/kakao/skill", kakao, wrong, chunked)
    assert status == 401
    tg = telegram_body(CAP)
    headers = {**JSON, "X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
    status, answer = send(served, "/telegram/webhook", tg, headers, chunked)
    assert (status, answer) == (200, {"ok": True})
    status, _ = send(served, "/telegram/webhook", tg, JSON, chunked)
    assert status == 401
    body = line_body(CAP)
    signed = {**JSON, line.SIGNATURE_HEADER: line.signature(body, LINE_SECRET)}
    status, answer = send(served, "/line/webhook", body, signed, chunked)
    assert (status, answer) == (200, {}), "the signature is over the whole body"
    cut = {**JSON, line.SIGNATURE_HEADER: line.signature(body[:-1], LINE_SECRET)}
    status, _ = send(served, "/line/webhook", body, cut, chunked)
    assert status == 401
