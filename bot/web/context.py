"""What the request handlers of one web process share, built once by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app

from bot.core.service import Core
from bot.core.settings import Settings
from bot.core.stores import ImageStore
from bot.core.urlguard import UrlGuard
from bot.messengers.telegram import BotName

KEY = "koalatalk"


@dataclass(frozen=True)
class AppContext:
    """The settings, the Redis client, the image store, the core, the URL guard, and the
    Telegram bot's username (from the settings or asked of Telegram once)."""

    settings: Settings
    redis: redis.Redis
    store: ImageStore
    core: Core
    guard: UrlGuard
    telegram_name: BotName


def context() -> AppContext:
    """The current app's context (inside a request)."""
    ctx: AppContext = current_app.extensions[KEY]
    return ctx
