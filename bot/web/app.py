"""The Flask application factory. Serve with gunicorn's gevent workers (see the Procfile)."""

from __future__ import annotations

import logging

import redis
from flask import Flask, Response, jsonify
from werkzeug.middleware.proxy_fix import ProxyFix

from bot.core import logs
from bot.core.service import Core
from bot.core.settings import Settings
from bot.core.stores import store_from_settings
from bot.messengers.telegram import BotApi, BotName
from bot.web.context import KEY, AppContext
from bot.web.health import health
from bot.web.kakao import kakao_webhook
from bot.web.line import line_webhook
from bot.web.media import media
from bot.web.metrics import metrics
from bot.web.openapi import openapi
from bot.web.telegram import telegram_webhook

log = logging.getLogger("bot")


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
    app = Flask(__name__, static_folder=None)  # bot/web/static is the playground's, served by it
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Answers as UTF-8 (Korean text half the bytes of \u escapes), compact, in the order built.
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    r = connect(settings)
    core = Core(settings, r, waiter=connect(settings, waiting=True))
    app.extensions[KEY] = AppContext(
        settings=settings,
        redis=r,
        store=store_from_settings(settings, r),
        core=core,
        guard=core.guard,
        telegram_name=BotName(BotApi(core.guard, settings), settings.telegram_bot_username),
    )
    app.register_blueprint(kakao_webhook)
    app.register_blueprint(media)
    app.register_blueprint(health)
    app.register_blueprint(metrics)
    app.register_blueprint(telegram_webhook)
    app.register_blueprint(line_webhook)
    app.register_blueprint(openapi)
    if settings.playground_on:
        from bot.web.playground import playground

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
