"""GET /metrics: the Prometheus text exposition of the counters in Redis (bot/core/metrics.py)."""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST

from bot.core.metrics import render
from bot.web.context import context

metrics = Blueprint("metrics", __name__)


@metrics.get("/metrics")
def scrape() -> Any:
    """Prometheus text format; 503 when Redis does not answer."""
    app = context()
    try:
        body = render(app.redis, app.settings.ready_queues)
    except redis.RedisError as exc:
        return Response(f"# redis unavailable: {type(exc).__name__}\n", 503, mimetype="text/plain")
    return Response(body, content_type=CONTENT_TYPE_LATEST)
