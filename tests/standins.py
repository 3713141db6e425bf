"""A local HTTP server standing in for the Telegram Bot API and the LINE Messaging API.

One server answers both (their paths do not collide), so one loopback origin goes on the test
run's development list. It records every call and answers the way the real APIs do, including
their refusals: a wrong token, a used or expired LINE reply token, a chat that blocked the bot.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TELEGRAM_TOKEN = "123456:TEST-telegram-token"
LINE_TOKEN = "line-test-access-token"

_TG_METHOD = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>[A-Za-z]+)$")
_TG_FILE = re.compile(r"^/file/bot(?P<token>[^/]+)/(?P<path>[A-Za-z0-9_./-]+)$")
_LINE_CONTENT = re.compile(r"^/v2/bot/message/(?P<id>[A-Za-z0-9]+)/content$")


@dataclass
class ApiCall:
    """One request the stand-in received."""

    api: str  # telegram | line
    method: str  # Bot API method, or the LINE path
    params: dict[str, Any]  # JSON body, or multipart fields (file parts as bytes)
    headers: dict[str, str]
    at: float
    answer: Any = None  # what the stand-in answered, when a test needs it (LINE's sentMessages)


@dataclass
class ApiStandIn:
    """The stand-in; tests add files, contents and refusals, then read `calls`."""

    port: int = 0  # 0: a free one, chosen when it starts
    calls: list[ApiCall] = field(default_factory=list)
    telegram_files: dict[str, bytes] = field(default_factory=dict)  # file_id -> bytes
    blocked_chats: set[str] = field(default_factory=set)  # Telegram answers 403
    line_contents: dict[str, bytes] = field(default_factory=dict)  # message id -> bytes
    # Seconds a download waits before its answer (a slow content server), by file or message id.
    telegram_file_delays: dict[str, float] = field(default_factory=dict)
    line_content_delays: dict[str, float] = field(default_factory=dict)
    used_reply_tokens: set[str] = field(default_factory=set)
    bot: str = "KoalaTalkBot"  # the username getMe answers
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def find(self, api: str, method: str, **match: Any) -> list[ApiCall]:
        """Calls to one method whose params hold the given values (as strings)."""
        with self.lock:
            calls = list(self.calls)
        return [
            c
            for c in calls
            if c.api == api
            and c.method == method
            and all(str(c.params.get(k)) == str(v) for k, v in match.items())
        ]

    def wait_for(self, api: str, method: str, timeout: float = 30.0, **match: Any) -> list[ApiCall]:
        """Calls as `find`, once at least one has arrived (or [] after the timeout)."""
        end = time.time() + timeout
        while time.time() < end:
            found = self.find(api, method, **match)
            if found:
                return found
            time.sleep(0.05)
        return []

    def start(self) -> ThreadingHTTPServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))

            def _answer(self, code: int, body: Any, content_type: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a slow download past its deadline)

            def _record(self, api: str, method: str, params: dict[str, Any]) -> ApiCall:
                call = ApiCall(api, method, params, dict(self.headers.items()), time.time())
                with outer.lock:
                    outer.calls.append(call)
                return call

            def do_GET(self) -> None:
                tg = _TG_FILE.match(self.path)
                if tg:
                    file_id = tg["path"].rsplit("/", 1)[-1].split(".")[0]
                    found = outer.telegram_files.get(file_id)
                    self._record("telegram", "file", {"file_id": file_id})
                    time.sleep(outer.telegram_file_delays.get(file_id, 0.0))
                    if tg["token"] != TELEGRAM_TOKEN or found is None:
                        self._answer(404, {"ok": False, "error_code": 404})
                    else:
                        self._answer(200, found, "application/octet-stream")
                    return
                content = _LINE_CONTENT.match(self.path)
                if content:
                    if self.headers.get("Authorization") != f"Bearer {LINE_TOKEN}":
                        self._answer(401, {"message": "Authentication failed"})
                        return
                    self._record("line", "content", {"id": content["id"]})
                    time.sleep(outer.line_content_delays.get(content["id"], 0.0))
                    data = outer.line_contents.get(content["id"])
                    if data is None:
                        self._answer(404, {"message": "Not found"})
                    else:
                        self._answer(200, data, "image/jpeg")
                    return
                self._answer(404, {"message": "Not found"})

            def do_POST(self) -> None:
                raw = self._body()
                tg = _TG_METHOD.match(self.path)
                if tg:
                    self._telegram(tg["token"], tg["method"], raw)
                elif self.path.startswith("/v2/bot/"):
                    self._line(self.path, raw)
                else:
                    self._answer(404, {"message": "Not found"})

            def _params(self, raw: bytes) -> dict[str, Any]:
                kind = self.headers.get("Content-Type", "")
                if kind.startswith("multipart/form-data"):
                    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                        f"Content-Type: {kind}\r\n\r\n".encode() + raw
                    )
                    params: dict[str, Any] = {}
                    for part in message.iter_parts():
                        name = part.get_param("name", header="content-disposition")
                        payload = part.get_payload(decode=True)
                        if part.get_filename():
                            params[name] = payload
                        else:
                            params[name] = payload.decode()
                    return params
                try:
                    data = json.loads(raw or b"{}")
                except ValueError:
                    return {}
                return data if isinstance(data, dict) else {}

            def _telegram(self, token: str, method: str, raw: bytes) -> None:
                if token != TELEGRAM_TOKEN:
                    self._answer(
                        401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
                    )
                    return
                params = self._params(raw)
                self._record("telegram", method, params)
                if str(params.get("chat_id")) in outer.blocked_chats:
                    self._answer(
                        403,
                        {
                            "ok": False,
                            "error_code": 403,
                            "description": "Forbidden: bot was blocked by the user",
                        },
                    )
                    return
                if method == "getMe":
                    me = {"id": 1, "is_bot": True, "first_name": "코알라톡", "username": outer.bot}
                    self._answer(200, {"ok": True, "result": me})
                    return
                if method == "getFile":
                    file_id = str(params.get("file_id"))
                    if file_id not in outer.telegram_files:
                        self._answer(
                            400, {"ok": False, "error_code": 400, "description": "file not found"}
                        )
                        return
                    result = {
                        "file_id": file_id,
                        "file_size": len(outer.telegram_files[file_id]),
                        "file_path": f"photos/{file_id}.jpg",
                    }
                    self._answer(200, {"ok": True, "result": result})
                    return
                self._answer(200, {"ok": True, "result": {"message_id": len(outer.calls)}})

            def _line(self, path: str, raw: bytes) -> None:
                if self.headers.get("Authorization") != f"Bearer {LINE_TOKEN}":
                    self._answer(401, {"message": "Authentication failed"})
                    return
                params = self._params(raw)
                call = self._record("line", path, params)
                if path == "/v2/bot/message/reply":
                    token = str(params.get("replyToken"))
                    with outer.lock:
                        used = token in outer.used_reply_tokens or token.startswith("expired")
                        outer.used_reply_tokens.add(token)
                    if used:
                        self._answer(400, {"message": "Invalid reply token"})
                        return
                answer: dict[str, Any] = {}
                if path in {"/v2/bot/message/reply", "/v2/bot/message/push"}:
                    # As LINE answers: the id and quote token of each message sent.
                    messages = params.get("messages")
                    count = len(messages) if isinstance(messages, list) else 0
                    answer = {
                        "sentMessages": [
                            {"id": str(uuid.uuid4().int)[:18], "quoteToken": uuid.uuid4().hex}
                            for _ in range(count)
                        ]
                    }
                call.answer = answer
                self._answer(200, answer)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])  # port 0: the one the system chose
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server
