"""POST /kakao/skill: verify, parse, hand to the core, render.

Validation order: size (413, chunked bodies too), secret (401), content type (400), envelope
(400), then a request Kakao shows the user: from here on every answer is 200 with a Kakao body.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import redis
from flask import Blueprint, jsonify, request

from bot.core import logs, metrics
from bot.core.errors import Unreadable, WebhookError, http_status
from bot.core.events import Outcome, Reply, Text
from bot.core.texts import say
from bot.messengers import kakao
from bot.web.context import context
from bot.web.webhooks import check_json_type, error_response, read_body, refusal_reason

log = logging.getLogger(__name__)
kakao_webhook = Blueprint("kakao", __name__)


@kakao_webhook.post("/kakao/skill")
def skill() -> Any:
    """Kakao i Open Builder skill request (v2.0)."""
    received_at = time.time()
    request_id = uuid.uuid4().hex
    app = context()
    settings = app.settings
    with logs.context(request_id):
        try:
            body = read_body(settings.max_body_bytes)  # 413 first, before the secret
            kakao.verify(request.headers, body, settings)
            check_json_type()
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
