"""The Flask application factory. Serve with gunicorn's gevent workers (see the Procfile)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from flask import Flask, Response, jsonify
from werkzeug.middleware.proxy_fix import ProxyFix

from bot import logs
from bot.health import health
from bot.media import ImageStore, media, store_from_settings
from bot.messengers.line import line_webhook
from bot.messengers.telegram import telegram_webhook
from bot.metrics import metrics
from bot.openapi import openapi
from bot.service import Core
from bot.settings import Settings
from bot.webhook import kakao_webhook

log = logging.getLogger("bot")


@dataclass
class AppContext:
    """What request handlers share in one web process."""

    settings: Settings
    redis: redis.Redis
    store: ImageStore
    core: Core


COMMAND_TIMEOUT_S = 1.0  # a healthy Redis answers in well under a millisecond
WAIT_MARGIN_S = 0.5


def connect(settings: Settings, waiting: bool = False) -> redis.Redis:
    """A Redis client whose timeouts keep the webhook inside Kakao's 5 seconds.

    A command gives up after COMMAND_TIMEOUT_S, so a stalled Redis (one that takes connections
    but never answers) costs a user a second, not Kakao's whole budget. `waiting`: the client for
    the webhook's blocking wait for a worker's hand-over, whose reads last up to that wait."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=COMMAND_TIMEOUT_S,
        socket_timeout=(settings.sync_wait_s + WAIT_MARGIN_S) if waiting else COMMAND_TIMEOUT_S,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app from settings (read from the environment when not given)."""
    settings = settings or Settings.from_env()
    logs.setup(settings.log_level, settings.log_json)
    app = Flask(__name__, static_folder=None)  # bot/static is the playground's, served by it
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Answers as UTF-8 (Korean text half the bytes of \u escapes), compact, in the order built.
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    r = connect(settings)
    app.extensions["koalatalk"] = AppContext(
        settings, r, store_from_settings(settings, r),
        Core(settings, r, waiter=connect(settings, waiting=True))
    )
    app.register_blueprint(kakao_webhook)
    app.register_blueprint(media)
    app.register_blueprint(health)
    app.register_blueprint(metrics)
    app.register_blueprint(telegram_webhook)
    app.register_blueprint(line_webhook)
    app.register_blueprint(openapi)
    if settings.playground_on:
        from bot.playground import playground

        app.register_blueprint(playground)

    @app.errorhandler(413)
    def too_large(_exc: Exception) -> tuple[Response, int]:
        return jsonify({"error": "BodyTooLarge"}), 413

    @app.errorhandler(redis.RedisError)
    def redis_unavailable(exc: Exception) -> tuple[Response, int]:
        # The webhooks answer Redis trouble themselves; any other route says it, not a 500.
        log.error("redis unavailable", extra={"error": type(exc).__name__})
        return jsonify({"error": "Unavailable"}), 503

    if settings.development:
        log.warning(
            "development mode: no secret needed, tiny model and loopback targets from "
            "DEV_ALLOW allowed",
            extra={"dev_allow": ",".join(settings.dev_allow)},
        )
    log.info("koalatalk web ready", extra={"mode": settings.mode, "preset": settings.preset})
    return app
