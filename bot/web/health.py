"""GET /healthz and /readyz."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, jsonify

from bot.core.liveness import configured_queues, queue_readiness
from bot.web.context import context

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Any:
    """The process is alive."""
    return jsonify({"ok": True})


@health.get("/readyz")
def readyz() -> Any:
    """Redis answers and every configured queue has a live worker with its model loaded."""
    app = context()
    r: redis.Redis = app.redis
    try:
        r.ping()
        queues = queue_readiness(r, configured_queues(app.settings.ready_queues))
    except redis.RedisError as exc:
        return jsonify({"ready": False, "redis": False, "error": type(exc).__name__}), 503
    ready = all(queues.values())
    return jsonify({"ready": ready, "redis": True, "queues": queues}), 200 if ready else 503
