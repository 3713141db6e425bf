"""The Kakao skill endpoint: validate, parse, hand to the core, render.

Validation order: secret (401), content type and size (400/413), envelope (400), then a request
Kakao shows the user: from here on every answer is 200 with a Kakao body.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from typing import Any

import redis
from flask import Blueprint, Response, current_app, jsonify, request

from bot import logs, metrics
from bot.errors import NotAMessengerRequest, Unauthorized, Unreadable, WebhookError, http_status
from bot.events import Outcome, Reply, Text
from bot.messengers import kakao
from bot.texts import say

log = logging.getLogger(__name__)
kakao_webhook = Blueprint("kakao", __name__)


def check_secret(header: str | None, secret: str, development: bool) -> None:
    """Constant-time comparison of the shared secret; development may run without one."""
    if not secret:
        if development:
            return
        raise Unauthorized("no secret configured")
    if header is None or not hmac.compare_digest(header.encode(), secret.encode()):
        raise Unauthorized("wrong secret")


def read_json_body(max_bytes: int) -> bytes:
    """The raw body, after the content-type and size checks."""
    if request.mimetype != "application/json":
        raise NotAMessengerRequest("content type is not application/json")
    if request.content_length is not None and request.content_length > max_bytes:
        from bot.errors import BodyTooLarge

        raise BodyTooLarge("body over the cap")
    return request.get_data(cache=False)


def refusal_reason(exc: WebhookError) -> str:
    """The /metrics reason for a refused request."""
    return {401: "unauthorized", 413: "too_large"}.get(exc.status, "bad_request")


def error_response(exc: WebhookError) -> tuple[Response, int]:
    """JSON error body for non-Kakao failures."""
    return jsonify({"error": type(exc).__name__, "detail": str(exc)}), http_status(exc)


@kakao_webhook.post("/kakao/skill")
def skill() -> Any:
    """Kakao i Open Builder skill request (v2.0)."""
    received_at = time.time()
    request_id = uuid.uuid4().hex
    app = current_app.extensions["koalatalk"]
    settings = app.settings
    with logs.context(request_id):
        try:
            check_secret(
                request.headers.get(settings.secret_header), settings.secret, settings.development
            )
            body = read_json_body(settings.max_body_bytes)
            event, photos = kakao.parse(body, received_at, request_id)
        except Unreadable as exc:
            log.info("unreadable request", extra={"why": str(exc)})
            metrics.refused(app.redis, "unreadable")
            return jsonify(kakao.render(Reply((Text(say(exc.message_key)),), kind="error")))
        except WebhookError as exc:
            log.info("refused request", extra={"status": http_status(exc), "why": str(exc)})
            metrics.refused(app.redis, refusal_reason(exc))
            return error_response(exc)
        # The request is counted by core.handle, in the round trip that reads the user's state.
        if photos.refused and not photos.urls:
            log.info("photos refused: no privacy agreement")
            refused = Reply((Text(say("photo_refused", event.lang)),), kind="error")
            return jsonify(kakao.render(refused))
        try:
            outcome = app.core.handle(event)
        except redis.RedisError as exc:
            log.error("redis unavailable", extra={"error": type(exc).__name__})
            return jsonify(
                kakao.render(Reply((Text(say("server_busy", event.lang)),), kind="busy"))
            )
        except Exception:  # the outermost handler: Kakao shows an error page for a 500
            log.exception("unexpected error in the skill webhook")
            return jsonify(kakao.render(Reply((Text(say("failed", event.lang)),), kind="error")))
        log.info(
            "answered",
            extra={
                "ms": round((time.time() - received_at) * 1000, 1),
                "ack": outcome.ack is not None,
            },
        )
        return jsonify(render(outcome))


def render(outcome: Outcome) -> dict[str, Any]:
    """The Kakao body for an outcome."""
    if outcome.ack is not None:
        return kakao.render_ack(outcome.ack)
    assert outcome.reply is not None
    return kakao.render(outcome.reply)
