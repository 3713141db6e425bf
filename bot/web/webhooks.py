"""What the three webhook routes share: the body cap, the JSON body, refusal bookkeeping."""

from __future__ import annotations

import logging

import redis
from flask import Response, jsonify, request

from bot.core import keys
from bot.core.errors import BodyTooLarge, NotAMessengerRequest, WebhookError, http_status

log = logging.getLogger(__name__)

DEDUP_TTL_S = 86400  # Telegram and LINE redeliver for hours at most


def read_body(max_bytes: int) -> bytes:
    """The raw body, refused when its declared length is over the cap."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise BodyTooLarge("body over the cap")
    return request.get_data(cache=False)


def read_json_body(max_bytes: int) -> bytes:
    """The raw body, after the content-type and size checks."""
    if request.mimetype != "application/json":
        raise NotAMessengerRequest("content type is not application/json")
    return read_body(max_bytes)


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
