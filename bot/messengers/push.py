"""What the messengers that can message a user at any time (Telegram, LINE) share.

Kakao must be answered within 5 seconds, so its webhook waits briefly for the result. Telegram
and LINE let the bot send later, so their webhooks never wait: they acknowledge at once and the
worker delivers through the messenger's API. That is the core with no synchronous wait and the
pull path's deadline; nothing in the core knows which messenger it serves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask

from bot import conversation, drawing, intents, keys, photos
from bot.events import Event, Outcome
from bot.media import public_url
from bot.service import Core
from bot.settings import Settings
from bot.urlguard import UrlGuard, guard_from_settings

log = logging.getLogger(__name__)

DEDUP_TTL_S = 86400  # Telegram and LINE redeliver for hours at most


def push_core(app: Flask) -> Core:
    """The core as a push messenger uses it: no waiting, jobs live as long as the pull path."""
    found = app.extensions.get("koalatalk.push_core")
    if found is None:
        ctx = app.extensions["koalatalk"]
        s: Settings = ctx.settings
        found = Core(s.with_(sync_wait_s=0.0, callback_deadline_s=s.pull_deadline_s), ctx.redis)
        app.extensions["koalatalk.push_core"] = found
    return found


def web_guard(app: Flask) -> UrlGuard:
    """The web process's URL guard, built once."""
    found = app.extensions.get("koalatalk.guard")
    if found is None:
        found = guard_from_settings(app.extensions["koalatalk"].settings)
        app.extensions["koalatalk.guard"] = found
    return found


def first_delivery(r: redis.Redis, messenger: str, delivery_id: str) -> bool:
    """True the first time a delivery id is seen; a redelivered or replayed one is False."""
    return bool(r.set(keys.seen_delivery(messenger, delivery_id), "1", nx=True, ex=DEDUP_TTL_S))


def forget_delivery(r: redis.Redis, messenger: str, delivery_id: str) -> None:
    """Let the messenger's retry through after we failed to take the delivery (Redis trouble)."""
    try:
        r.delete(keys.seen_delivery(messenger, delivery_id))
    except redis.RedisError:
        log.warning("could not forget a delivery id", extra={"messenger": messenger})


def media_id_of(settings: Settings, url: str) -> str | None:
    """The image store id when `url` is one of our own /media URLs, else None."""
    prefix = public_url(settings, "")[: -len(".jpg")]
    if url.startswith(prefix) and url.endswith(".jpg"):
        return url[len(prefix) : -len(".jpg")] or None
    return None


def picture_bytes(settings: Settings, store: Any, url: str) -> bytes | None:
    """A picture's bytes from our own store, when the URL is ours and it has not expired."""
    media_id = media_id_of(settings, url)
    return store.get(media_id) if media_id else None


def photo_outcome(app: Flask, event: Event, fetch: Callable[[int], bytes]) -> Outcome:
    """A photo or clip from a push messenger, its caption (if any) a question at once.

    Kakao hands over URLs that anyone may fetch, so the core fetches them (Event.image_urls,
    bot/conversation.py `photos_in`). Telegram and LINE need the bot's credentials for the bytes,
    so the adapter fetches them (`fetch(max_bytes)`, raising PhotoError) and this puts them
    through the same checks, the same private store and the same conversation.
    """
    core = push_core(app)
    lang = event.lang
    limits = photos.Limits.from_settings(core.settings)
    try:
        kind, data = photos.check(fetch(max(limits.max_bytes, limits.clip_max_bytes)), limits)
        photo_id = core.photos.put(data, kind)
    except photos.PhotoError as exc:
        log.info("photo not used", extra={"why": exc.key, "detail": str(exc)})
        outcome = Outcome(reply=conversation.error_reply((exc,), lang), request_id=event.request_id)
    except OSError as exc:
        log.error("photo not stored", extra={"error": str(exc)})
        error = photos.PhotoError("photo_unreachable")
        outcome = Outcome(
            reply=conversation.error_reply((error,), lang), request_id=event.request_id
        )
    else:
        received = photos.Received((photo_id,), kind == "clip", (), ())
        session = core.conversations.start(
            event.messenger, event.user, received.ids, received.video
        )
        caption = intents.decide(event.text, has_photo=True)
        if caption.name == "ask":
            outcome = conversation.ask(core, event, caption.text, session)
        else:
            outcome = Outcome(
                reply=conversation.received_reply(received, lang), request_id=event.request_id
            )
    if core.sessions.first_contact(event.messenger, event.user):
        outcome = drawing.with_notice(outcome, core.drawing.notice(lang))
    return outcome
