"""Test helpers: Kakao payloads, a stand-in for Kakao's callback API, worker processes."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The example payloads of the Kakao protocol guide (docs/kakao.md), kept in tests/data/kakao/.
SAMPLES = ROOT / "tests" / "data" / "kakao"


def new_user() -> str:
    """A fresh botUserKey-like id, so tests never share per-user state."""
    return "u" + uuid.uuid4().hex


def kakao_payload(
    user: str, text: str, callback_url: str | None = None, **user_request: Any
) -> dict[str, Any]:
    """A skill request in the shape Kakao sends (see tests/data/kakao/)."""
    body: dict[str, Any] = {
        "intent": {"id": "i1", "name": "폴백 블록"},
        "userRequest": {
            "timezone": "Asia/Seoul",
            "utterance": text,
            "lang": "ko",
            "user": {"id": user, "type": "botUserKey", "properties": {"botUserKey": user}},
            "params": {"surface": "Kakaotalk.plusfriend"},
            **user_request,
        },
        "bot": {"id": "64f0c3a1b2d4e5f60718293a", "name": "코알라톡"},
        "action": {"name": "koalatalk_skill", "params": {}, "detailParams": {}, "id": "a1"},
        "flow": {"trigger": {"type": "TEXT_INPUT"}},
    }
    if callback_url:
        body["userRequest"]["callbackUrl"] = callback_url
    return body


KAKAO_BUDGET_S = 4.9  # Kakao waits 5 s for a skill's answer


def post_kakao(client: Any, user: str, text: str, callback: str | None = None,
               budget_s: float | None = None) -> dict[str, Any]:
    """POST a skill request through a Flask test client; the answer must be a 200 (within
    `budget_s` when given). Returns the Kakao body."""
    started = time.time()
    response = client.post("/kakao/skill", json=kakao_payload(user, text, callback))
    elapsed = time.time() - started
    assert response.status_code == 200, response.data
    if budget_s is not None:
        assert elapsed < budget_s, f"Kakao's 5 s budget missed: {elapsed:.2f}s"
    return response.get_json()


def outputs(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A Kakao answer's bubbles (none for an acknowledgement)."""
    return body.get("template", {}).get("outputs", [])


def text_of(body: dict[str, Any]) -> str:
    """A Kakao answer's text: the waiting text of an acknowledgement, else its text bubbles."""
    if "useCallback" in body:
        return body["data"]["text"]
    return "\n".join(o["simpleText"]["text"] for o in outputs(body) if "simpleText" in o)


def has_picture(body: dict[str, Any]) -> bool:
    return any("simpleImage" in o for o in outputs(body))


def image_urls(body: dict[str, Any]) -> list[str]:
    return [o["simpleImage"]["imageUrl"] for o in outputs(body) if "simpleImage" in o]


@dataclass
class Call:
    """One POST the callback stand-in received."""

    token: str
    body: dict[str, Any]
    at: float


@dataclass
class CallbackServer:
    """A local HTTP server that answers like bot-api.kakao.com's callback endpoint.

    Each token's behaviour is set by the test: `success`, `fail`, `error500`, `slow:<seconds>`,
    `reset` (the connection is reset before any answer).
    """

    port: int
    behaviour: dict[str, str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)

    def url(self, token: str, behaviour: str = "success") -> str:
        self.behaviour[token] = behaviour
        return f"http://127.0.0.1:{self.port}/v1/bots/64f0c3a1b2d4e5f60718293a/callback/{token}"

    def wait_for(self, token: str, timeout: float = 30.0) -> list[Call]:
        """Calls for a token once at least one has arrived (or [] after the timeout)."""
        end = time.time() + timeout
        while time.time() < end:
            found = [c for c in self.calls if c.token == token]
            if found:
                return found
            time.sleep(0.05)
        return []

    def start(self) -> ThreadingHTTPServer:
        server_ref = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                token = self.path.rsplit("/", 1)[-1]
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                server_ref.hits[token] = server_ref.hits.get(token, 0) + 1
                how = server_ref.behaviour.get(token, "fail")
                if how.startswith("slow:"):
                    time.sleep(float(how.split(":", 1)[1]))
                    how = "success"
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                server_ref.calls.append(Call(token, body, time.time()))
                if how == "reset":  # RST instead of an answer: SO_LINGER with a zero timeout
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    self.connection.close()
                    return
                if how == "error500":
                    self._answer(500, {"status": "ERROR", "message": "internal"})
                elif how == "fail":
                    self._answer(
                        200,
                        {"taskId": token, "status": "FAIL", "message": "invalid callback token"},
                    )
                else:
                    self._answer(
                        200,
                        {
                            "taskId": token,
                            "status": "SUCCESS",
                            "message": "OK",
                            "timestamp": int(time.time() * 1000),
                        },
                    )

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def worker_env(base: dict[str, str], **settings: str) -> dict[str, str]:
    """Environment for a worker subprocess: the test run's HF cache plus KOALATALK_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOALATALK_")}
    env.update(base)
    env.update({f"KOALATALK_{k.upper()}": v for k, v in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_worker(
    env: dict[str, str], queues: tuple[str, ...] = ("text2image",), log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    """`python -m workers <queues>` as a child process."""
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "workers", *queues],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def wait_ready(
    redis_client: Any,
    proc: subprocess.Popen[bytes],
    queue: str = "text2image",
    timeout: float = 180.0,
    log_path: Path | None = None,
) -> str:
    """Wait until a worker heartbeats with its model loaded; returns the worker's name."""
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            tail = log_path.read_text()[-3000:] if log_path and log_path.exists() else ""
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{tail}")
        for key in redis_client.scan_iter("kt:hb:*"):
            raw = redis_client.get(key)
            if raw:
                info = json.loads(raw)
                if info.get("pid") == proc.pid and info.get("loaded") and queue in info["queues"]:
                    return str(info["name"])
        time.sleep(0.1)
    raise RuntimeError("worker did not become ready")


def wait_until(predicate: Any, timeout: float = 20.0, step: float = 0.05) -> bool:
    """Poll a condition, bounded in time."""
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def redis_db(url: str, db: int) -> str:
    """The same Redis server, another database number."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


class ConnectionCounter:
    """A loopback TCP listener that only counts who connects (proof that nothing was sent)."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.count = 0
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.count += 1
            conn.close()

    def close(self) -> None:
        self.running = False
        self.sock.close()
