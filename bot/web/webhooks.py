"""What the three webhook routes share: the body cap, the JSON body, refusal bookkeeping."""

from __future__ import annotations

import logging

import redis
from flask import Response, jsonify, request
from werkzeug.wsgi import get_input_stream

from bot.core import keys
from bot.core.errors import BodyTooLarge, NotAMessengerRequest, WebhookError, http_status

log = logging.getLogger(__name__)

DEDUP_TTL_S = 86400  # Telegram and LINE redeliver for hours at most


READ_CHUNK = 65536


def read_body(max_bytes: int) -> bytes:
    """The raw body; BodyTooLarge when it is over the cap, declared or not.

    Every webhook reads its body with this first, before any secret, signature or JSON check.
    A body sent chunked (no Content-Length) is read up to one byte past the cap: Flask's own
    MAX_CONTENT_LENGTH would cut it silently at the cap instead, so it is not used here."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise BodyTooLarge("body over the cap")
    # The server's input as it is (a chunked body is terminated by the server: gunicorn and
    # werkzeug set wsgi.input_terminated), limited to the declared length when there is one.
    stream = get_input_stream(request.environ, safe_fallback=True, max_content_length=None)
    parts: list[bytes] = []
    size = 0
    while size <= max_bytes:
        part = stream.read(min(READ_CHUNK, max_bytes + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > max_bytes:
        raise BodyTooLarge("body over the cap")
    return b"".join(parts)


def check_json_type() -> None:
    """The content-type check, after the size and secret checks."""
    if request.mimetype != "application/json":
        raise NotAMessengerRequest("content type is not application/json")


def refusal_reason(exc: WebhookError) -> str:
    """The /metrics reason for a refused request."""
    return {401: "unauthorized", 413: "too_large"}.get(exc.status, "bad_request")


def error_response(exc: WebhookError) -> tuple[Response, int]:
    """JSON error body for non-Kakao failures."""
    return jsonify({"error": type(exc).__name__, "detail": str(exc)}), http_status(exc)


def first_delivery(r: redis.Redis, messenger: str, delivery_id: str) -> bool:
    """True the first time a delivery id is seen; a redelivered or replayed one is False."""
    return bool(r.set(keys.seen_delivery(messenger, delivery_id), "1", nx=True, ex=DEDUP_TTL_S))


def forget_delivery(r: redis.Redis, messenger: str, delivery_id: str) -> None:
    """Let the messenger's retry through after we failed to take the delivery (Redis trouble)."""
    try:
        r.delete(keys.seen_delivery(messenger, delivery_id))
    except redis.RedisError:
        log.warning("could not forget a delivery id", extra={"messenger": messenger})
