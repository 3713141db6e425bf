"""Who may talk to the server, what it will contact, and what its logs keep.

Secrets are required outside development and compared in constant time; every callback and
photo URL passes one guard before any connection (a counting listener proves none was made);
media URLs cannot be listed or guessed; and no log line holds a secret or a callback token.
"""

from __future__ import annotations

import ast
import json
import logging
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from bot.core import keys
from bot.core.settings import Settings, SettingsError
from bot.core.stores import new_id
from bot.messengers import line
from bot.web.app import create_app
from tests import photo_support as ps
from tests.standins import LINE_TOKEN, TELEGRAM_TOKEN
from tests.support import (
    ROOT,
    ConnectionCounter,
    kakao_payload,
    new_user,
    wait_until,
    worker_env,
)

# --- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "KOALATALK_SECRET"),
        ({"KOALATALK_SECRET": "s", "KOALATALK_TELEGRAM_TOKEN": "1:x"}, "KOALATALK_TELEGRAM_SECRET"),
        (
            {"KOALATALK_SECRET": "s", "KOALATALK_LINE_CHANNEL_SECRET": "c"},
            "KOALATALK_LINE_ACCESS_TOKEN",
        ),
        (
            {"KOALATALK_SECRET": "s", "KOALATALK_DEV_ALLOW": "http://127.0.0.1:1"},
            "KOALATALK_DEV_ALLOW",
        ),
    ],
    ids=["kakao", "telegram", "line", "dev-allow"],
)
def test_production_refuses_to_start_without_its_secrets(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env({"KOALATALK_MODE": "production", "KOALATALK_PRESET": "koala-1b", **env})


def test_a_production_worker_without_a_secret_exits_with_a_clear_message() -> None:
    env = worker_env({}, mode="production", preset="koala-1b")
    done = subprocess.run(
        [sys.executable, "-m", "workers", "text2image"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "KOALATALK_SECRET is required in production" in done.stderr
    assert "Traceback" not in done.stderr


COMPARED = ("secret", "signature", "token", "digest", "password")


def test_secrets_are_compared_in_constant_time_only() -> None:
    """No `==` or `!=` anywhere in bot/ touches a secret, a signature or a token."""
    found = []
    for path in sorted((ROOT / "bot").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(
                isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
            ):
                operands = [node.left, *node.comparators]
                names = " ".join(ast.unparse(o).lower() for o in operands)
                constants = all(isinstance(o, ast.Constant) for o in node.comparators)
                if any(word in names for word in COMPARED) and not constants:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []
    # Kakao and Telegram share one secret check; LINE checks its signature.
    sources = {
        name: (ROOT / "bot" / "messengers" / name).read_text() for name in ("shared.py", "line.py")
    }
    assert all("hmac.compare_digest(" in text for text in sources.values())
    for name in ("kakao.py", "telegram.py"):
        assert "check_secret(" in (ROOT / "bot" / "messengers" / name).read_text()


@pytest.fixture
def production(redis_url: str, tmp_path: Path, messenger_apis: Any) -> Any:
    """A production app on a database of the test's own, with every messenger's secret set."""
    settings = Settings(
        mode="production",
        secret="kakao-" + secrets.token_urlsafe(16),
        redis_url=redis_url,
        preset="koala-1b",
        media_dir=tmp_path / "media",
        photo_dir=tmp_path / "photos",
        telegram_token=TELEGRAM_TOKEN,
        telegram_secret="tg-" + secrets.token_urlsafe(16),
        line_channel_secret="line-secret",
        line_access_token=LINE_TOKEN,
        log_json=False,
        system_dns=False,
    )
    return create_app(settings)


def processed_keys(r: Any) -> list[str]:
    """Keys a processed request would leave (refusal counters do not count)."""
    return [k for k in (keys.as_text(k) for k in r.keys("*")) if not k.startswith("kt:m:")]


def test_every_webhook_refuses_wrong_secrets_and_processes_nothing(production: Any) -> None:
    s: Settings = production.extensions["koalatalk"].settings
    r = production.extensions["koalatalk"].redis
    client = production.test_client()
    kakao_body = kakao_payload(new_user(), "그림")
    telegram_body = {"update_id": 1, "message": {"chat": {"id": 5}, "text": "hi"}}
    line_body = json.dumps(
        {
            "events": [
                {
                    "type": "message",
                    "replyToken": "t",
                    "source": {"userId": "U1"},
                    "message": {"type": "text", "text": "hi"},
                }
            ]
        }
    ).encode()
    other = line.signature(line_body, "not-the-channel-secret")
    tampered = line.signature(line_body.replace(b"hi", b"ho"), s.line_channel_secret)
    attempts = [
        client.post("/kakao/skill", json=kakao_body),
        client.post("/kakao/skill", json=kakao_body, headers={s.secret_header: s.secret[:-1]}),
        client.post("/kakao/skill", json=kakao_body, headers={s.secret_header: s.secret + "x"}),
        client.post("/telegram/webhook", json=telegram_body),
        client.post(
            "/telegram/webhook",
            json=telegram_body,
            headers={"X-Telegram-Bot-Api-Secret-Token": s.secret},
        ),
        client.post("/line/webhook", data=line_body, content_type="application/json"),
        client.post(
            "/line/webhook",
            data=line_body,
            content_type="application/json",
            headers={line.SIGNATURE_HEADER: other},
        ),
        client.post(
            "/line/webhook",
            data=line_body,
            content_type="application/json",
            headers={line.SIGNATURE_HEADER: tampered},
        ),
    ]
    assert [a.status_code for a in attempts] == [401] * len(attempts)
    assert processed_keys(r) == []
    right = client.post("/kakao/skill", json=kakao_body, headers={s.secret_header: s.secret})
    assert right.status_code == 200


# --- SSRF: one guard before any connection -----------------------------------------------------


@pytest.fixture
def listener() -> Iterator[ConnectionCounter]:
    counting = ConnectionCounter()
    yield counting
    counting.close()


def hostile_urls(port: int) -> list[str]:
    """Other schemes, userinfo, odd ports, IP literals, IPv6 loopback, names inside."""
    return [
        f"ftp://127.0.0.1:{port}/cb",
        "file:///etc/passwd",
        f"gopher://127.0.0.1:{port}/_x",
        f"https://bot-api.kakao.com@127.0.0.1:{port}/cb",
        f"http://user:pw@127.0.0.1:{port}/cb",
        f"https://bot-api.kakao.com:{port}/cb",
        f"https://talk.kakaocdn.net:{port}/x.jpg",
        f"http://2130706433:{port}/cb",
        f"http://0177.0.0.1:{port}/cb",
        f"http://0x7f000001:{port}/cb",
        f"http://127.1:{port}/cb",
        f"http://[::1]:{port}/cb",
        f"http://[::ffff:127.0.0.1]:{port}/cb",
        f"http://localhost:{port}/cb",
        f"http://inside.test:{port}/cb",
        "https://inside.test/cb",
        f"http://127.0.0.1:{port}\\@bot-api.kakao.com/cb",
        f"http://127.0.0.1:{port}#@x/",
    ]


def test_callback_urls_off_the_rules_are_never_contacted_and_the_result_kept(
    make_app: Any, stack: Any, callback_server: Any, listener: ConnectionCounter
) -> None:
    """Through the webhook and the real worker; the dev-allowed port, spelled otherwise, too."""
    r = stack["redis"]
    # Twenty jobs at once: a long deadline keeps admission from calling the queue too slow.
    client = make_app(sync_wait_s=0.0, callback_deadline_s=600.0).test_client()
    allowed = callback_server.port  # the worker may reach this one only as 127.0.0.1:<port>
    urls = [
        *hostile_urls(listener.port),
        f"http://2130706433:{allowed}/v1/bots/b/callback/spelled-decimal",
        f"http://[::1]:{allowed}/v1/bots/b/callback/spelled-v6",
        f"http://localhost:{allowed}/v1/bots/b/callback/spelled-name",
    ]
    users = {url: new_user() for url in urls}
    for url, user in users.items():
        body = client.post("/kakao/skill", json=kakao_payload(user, "콜백 주소 시험", url))
        assert body.get_json().get("useCallback") is True, (url, body.get_json())
    assert wait_until(
        lambda: all(r.llen(keys.kept("kakao", u)) for u in users.values()), timeout=60
    ), [u for u, user in users.items() if not r.llen(keys.kept("kakao", user))]
    assert listener.count == 0
    assert not [t for t in callback_server.hits if t.startswith("spelled-")]


class Records(logging.Handler):
    """Keeps the records of one logger (the app's own log setup replaces the root handlers)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_photo_urls_off_the_rules_are_refused_before_any_connection(
    make_app: Any,
    stack: Any,
    redis_url: str,
    cdn: ps.CdnServer,
    listener: ConnectionCounter,
    tmp_path: Path,
) -> None:
    """Through the webhook, with names that resolve inside and a redirect off the allow-list."""
    client = make_app(
        redis_url=redis_url,
        photo_dir=tmp_path,
        dev_allow=(*stack["settings"]["dev_allow"].split(","), cdn.origin),
        resolve={
            "inside.test": "127.0.0.1",
            "talk.kakaocdn.net": "127.0.0.1",
            "secure.kakaocdn.net": "10.0.0.8",
        },
    ).test_client()
    redirect = cdn.serve(b"", status=302, location=f"http://127.0.0.1:{listener.port}/x.jpg")
    urls = [
        *hostile_urls(listener.port),
        "https://talk.kakaocdn.net/dna/x/img.jpg",
        "https://secure.kakaocdn.net/dna/x/img.jpg",
        redirect,
        f"http://2130706433:{cdn.port}/dna/x/img.jpg",
    ]
    seen = Records()
    logging.getLogger("bot.core.photos").addHandler(seen)
    for url in urls:
        body = kakao_payload(new_user(), url)
        body["userRequest"]["params"]["media"] = {"type": "image", "url": url}
        answer = client.post("/kakao/skill", json=body).get_json()
        texts = [o["simpleText"]["text"] for o in answer["template"]["outputs"]]
        if url.startswith("http"):
            assert any("이 주소의 사진은 받을 수 없어요" in t for t in texts), (url, texts)
        else:  # not a web address: the parser never takes it for a photo
            assert not any("사진을 받았어요" in t for t in texts), (url, texts)
    assert listener.count == 0
    assert cdn.hits.get(redirect.split("?")[0].split(cdn.origin)[1]) == 1, "the redirect itself"
    logging.getLogger("bot.core.photos").removeHandler(seen)
    reasons = " ".join(str(getattr(record, "detail", "")) for record in seen.records)
    assert reasons.count("non-public address") == 2, "names resolving inside: refused as such"


# --- media --------------------------------------------------------------------------------------


def test_media_urls_are_unguessable_and_cannot_be_listed(make_app: Any, stack: Any) -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000 and all(len(i) == 32 for i in ids)
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert set("".join(ids)) <= alphabet and len(set("".join(ids))) > 60  # 6 bits a character
    client = make_app().test_client()
    for path in [
        "/media",
        "/media/",
        "/media/.jpg",
        "/media/..%2f..%2fetc%2fpasswd.jpg",
        "/media/%2e%2e/%2e%2e/bot/settings.py",
        "/media/" + "a" * 31 + ".jpg",
        "/media/" + "a" * 33 + ".jpg",
        "/media/" + new_id() + ".jpg",
        "/media/" + new_id() + ".png",
        "/photos/",
        "/data/media/",
        "/static/",
    ]:
        assert client.get(path).status_code == 404, path


# --- logs ----------------------------------------------------------------------------------------


def test_logs_never_hold_secrets_or_callback_tokens(
    make_app: Any,
    idle_stack: Any,
    stack: Any,
    callback_server: Any,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A callback delivered, one failing with 500 until its deadline, at DEBUG on the web."""
    secret = "kakao-secret-" + secrets.token_urlsafe(12)
    app = make_app(sync_wait_s=0.0, secret=secret, callback_deadline_s=4.0, log_level="DEBUG")
    queue = Queue("text2image", connection=stack["redis"], serializer=JSONSerializer)
    assert wait_until(lambda: queue.count == 0, timeout=60), "the shared worker is idle first"
    client = app.test_client()
    good, bad = "tok" + secrets.token_urlsafe(18), "tok" + secrets.token_urlsafe(18)
    users = [new_user(), new_user()]
    for user, token, how in ((users[0], good, "success"), (users[1], bad, "error500")):
        body = kakao_payload(user, "로그 시험", callback_server.url(token, how))
        response = client.post("/kakao/skill", json=body, headers={"X-KoalaTalk-Secret": secret})
        assert response.get_json()["useCallback"] is True
    assert callback_server.wait_for(good)
    assert wait_until(lambda: stack["redis"].llen(keys.kept("kakao", users[1])) == 1, timeout=20)
    out, err = capfd.readouterr()
    web_log = out + err
    worker_log = stack["log"].read_text(errors="replace")
    assert "how=callback" in worker_log and "callback error, will retry" in worker_log
    settings = stack["settings"]
    for value in (
        good,
        bad,
        secret,
        settings["telegram_secret"],
        TELEGRAM_TOKEN,
        settings["line_channel_secret"],
        LINE_TOKEN,
    ):
        assert value not in web_log, value
        assert value not in worker_log, value
