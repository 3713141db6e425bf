"""The chat playground: a KakaoTalk-like page at /playground for trying KoalaTalk at once.

The page speaks Kakao's real skill protocol to the real webhook (/kakao/skill): v2.0 payloads,
a photo uploaded first and referenced by URL as Kakao's CDN would, and a callback URL that
points back here. This module is only the rest of Kakao's side: the one-time callback endpoint
(valid for a minute, like Kakao's), a per-session inbox in Redis that the page polls, and the
upload. Development only; the guard allows this server's own origin then (bot/core/urlguard.py).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Any

import redis
from flask import Blueprint, Response, jsonify, request, send_from_directory

from bot.core import keys
from bot.core.photos import Limits, PhotoError, check
from bot.core.settings import Settings
from bot.core.stores import StoreError, public_url
from bot.core.texts import say
from bot.web.context import context

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
SESSION = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
CALLBACK_TTL_S = 60  # Kakao's callback URLs live about a minute
INBOX_TTL_S = 3600
INBOX_MAX = 50

playground = Blueprint(
    "playground", __name__, static_folder=str(STATIC), static_url_path="/playground/static"
)


def _session(value: Any) -> str:
    if not isinstance(value, str) or not SESSION.match(value):
        raise ValueError("bad session id")
    return value


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@playground.before_request
def allow_photo_uploads() -> None:
    """Photos are larger than webhook bodies: raise the cap for this blueprint only."""
    if request.endpoint == "playground.upload":
        request.max_content_length = context().settings.photo_max_bytes + 65536


@playground.get("/playground")
def page() -> Response:
    """The chat page (HTML, CSS and JS from this package only: nothing from the internet)."""
    response = send_from_directory(STATIC, "playground.html", mimetype="text/html")
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' blob: data: http: https:; "
        "style-src 'self'; script-src 'self'; connect-src 'self'"
    )
    return _no_store(response)


@playground.get("/playground/api/config")
def config() -> Response:
    """What the page needs to speak to the webhook like Kakao does."""
    s: Settings = context().settings
    limit_mb = max(1, s.photo_max_bytes // 1_000_000)
    return _no_store(
        jsonify(
            {
                "skillUrl": "/kakao/skill",
                # Development only: the page sends the secret like Kakao's custom header.
                "secretHeader": s.secret_header,
                "secret": s.secret,
                "maxUploadBytes": s.photo_max_bytes,
                "tooBig": say("upload_too_big", "ko", mb=limit_mb),
                "preset": s.preset,
            }
        )
    )


@playground.post("/playground/api/callback-url")
def new_callback_url() -> Any:
    """A one-time callback URL for the next message, valid for a minute like Kakao's."""
    try:
        session = _session((request.get_json(silent=True) or {}).get("session"))
    except (ValueError, AttributeError):
        return jsonify({"error": "bad session id"}), 400
    token = secrets.token_urlsafe(24)
    context().redis.set(keys.playground_callback(token), session, ex=CALLBACK_TTL_S)
    s: Settings = context().settings
    url = f"{s.public_url.rstrip('/')}/playground/callback/{token}"
    return _no_store(jsonify({"callbackUrl": url}))


@playground.post("/playground/callback/<token>")
def callback(token: str) -> Any:
    """Kakao's callback API, played locally: the answer goes to the page's inbox."""
    task = {"taskId": token[:12], "timestamp": int(time.time() * 1000)}
    r: redis.Redis = context().redis
    raw = r.getdel(keys.playground_callback(token)) if TOKEN.match(token) else None
    if raw is None:
        return jsonify({**task, "status": "FAIL", "message": "invalid callback token"})
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or body.get("version") != "2.0" or "template" not in body:
        return jsonify({**task, "status": "FAIL", "message": "not a skill response"}), 400
    key = keys.playground_inbox(keys.as_text(raw))
    with r.pipeline() as pipe:
        pipe.rpush(key, json.dumps(body, ensure_ascii=False))
        pipe.ltrim(key, -INBOX_MAX, -1)
        pipe.expire(key, INBOX_TTL_S)
        pipe.execute()
    return jsonify({**task, "status": "SUCCESS", "message": "OK"})


@playground.get("/playground/api/inbox/<session>")
def inbox(session: str) -> Any:
    """Callback answers that arrived for this page since it last asked."""
    try:
        key = keys.playground_inbox(_session(session))
    except ValueError:
        return jsonify({"error": "bad session id"}), 400
    r: redis.Redis = context().redis
    with r.pipeline() as pipe:
        pipe.lrange(key, 0, -1)
        pipe.delete(key)
        raw, _ = pipe.execute()
    return _no_store(jsonify({"messages": [json.loads(item) for item in raw]}))


@playground.post("/playground/upload")
def upload() -> Any:
    """A picked photo: checked, made upright, stored; its URL goes into the skill payload."""
    ctx = context()
    s: Settings = ctx.settings
    picked = request.files.get("photo")
    if picked is None:
        return jsonify({"error": say("upload_not_image")}), 400
    data = picked.read(s.photo_max_bytes + 1)
    if len(data) > s.photo_max_bytes:
        mb = max(1, s.photo_max_bytes // 1_000_000)
        return jsonify({"error": say("upload_too_big", mb=mb)}), 413
    try:
        kind, jpeg = check(data, Limits.from_settings(s))
    except PhotoError as exc:
        key = exc.key if exc.key.startswith("photo_") else "upload_not_image"
        log.info("playground upload refused", extra={"why": exc.key})
        return jsonify({"error": say(key, **exc.values)}), 400
    if kind != "photo":
        return jsonify({"error": say("upload_not_image")}), 400
    try:
        media_id = ctx.store.put(jpeg)
    except StoreError as exc:
        log.error("playground upload not stored", extra={"error": str(exc)})
        return jsonify({"error": say("server_busy")}), 503
    return jsonify({"url": public_url(s, media_id)})
