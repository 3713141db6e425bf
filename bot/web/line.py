"""POST /line/webhook: verify the signature, then answer every new message event."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from flask import Blueprint, jsonify, request

from bot.core import logs, metrics
from bot.core.errors import WebhookError
from bot.core.events import Outcome, Reply, Text
from bot.core.texts import help_quick_replies, say
from bot.messengers.line import (
    NAME,
    LineApi,
    Message,
    loading,
    parse,
    quoted_photo,
    quotes_the_bot,
    remember_group_photo,
    remember_sent,
    reply_or_push,
    verify,
)
from bot.web.context import AppContext, context
from bot.web.webhooks import first_delivery, forget_delivery, read_body, refusal_reason

log = logging.getLogger(__name__)
line_webhook = Blueprint("line", __name__)


@line_webhook.post("/line/webhook")
def webhook() -> Any:
    """LINE webhook: verify the signature, then answer every new message event."""
    received_at = time.time()
    app = context()
    settings = app.settings
    if not settings.line_channel_secret:
        return jsonify({"error": "NotFound", "detail": "LINE is not configured"}), 404
    try:
        body = read_body(settings.max_body_bytes)
        verify(request.headers, body, settings)
        messages = parse(body, received_at, settings.group_answer_all)
    except WebhookError as exc:
        metrics.refused(app.redis, refusal_reason(exc))
        log.info("refused line request", extra={"why": str(exc)})
        return jsonify({"error": type(exc).__name__, "detail": str(exc)}), exc.status
    for message in messages:
        with logs.context(message.event.request_id):
            try:
                if message.unaddressed and not quotes_the_bot(app.redis, message):
                    # A group message for the others; a photo's id is kept, in case a member
                    # quotes it with a mention to ask about it.
                    remember_group_photo(app.redis, message, settings.photo_ttl_s)
                    continue
                if not first_delivery(app.redis, NAME, message.event_id):
                    metrics.refused(app.redis, "duplicate")
                    log.info("redelivered event ignored")
                    continue
                answer(app, message)
            except redis.RedisError as exc:
                forget_delivery(app.redis, NAME, message.event_id)
                log.error("redis unavailable", extra={"error": type(exc).__name__})
                return jsonify({"error": "Unavailable"}), 503
    return jsonify({})


def answer(ctx: AppContext, message: Message) -> None:
    """Answer one event: at once through the reply token, or leave the token to the worker."""
    event = message.event
    api = LineApi(ctx.guard, ctx.settings)
    image_id = message.image_id or quoted_photo(ctx.redis, message)
    if message.unsupported is not None:
        metrics.refused(ctx.redis, "unsupported")
        outcome = Outcome(reply=Reply((Text(say("unsupported", event.lang)),)))
    elif message.welcome:
        welcome = Reply((Text(say("welcome", event.lang)),), help_quick_replies(event.lang))
        outcome = Outcome(reply=welcome)
    elif image_id is not None:
        # A photo, or a group photo a mention quotes (its text the question, as a caption).
        # Fetched within PHOTO_FETCH_BUDGET_S; later than that, the worker fetches it by id.
        outcome = ctx.core.photo_in(
            event,
            lambda max_bytes, deadline: api.content_bytes(image_id, max_bytes, deadline),
            image_id,
        )
    else:
        outcome = ctx.core.handle(event)  # counts the request itself
    if message.unsupported is not None or message.welcome or image_id is not None:
        metrics.inc(ctx.redis, "requests", messenger=NAME)
    deliver_outcome(api, ctx, message, outcome)


def deliver_outcome(api: LineApi, ctx: AppContext, message: Message, outcome: Outcome) -> None:
    """Send what the core answered now; an acknowledgement shows the loading animation."""
    event = message.event
    if outcome.ack is not None:
        loading(api, event.room)  # the reply token stays unused: the worker answers with it
        return
    assert outcome.reply is not None
    sent: list[str] = []
    how = reply_or_push(
        api,
        outcome.reply,
        message.reply_token,
        event.room,
        event.received_at,
        ctx.settings.line_reply_window_s,
        event.request_id,
        event.reply_to_message,
        sent,
    )
    if event.in_group:
        remember_sent(ctx.redis, sent)
    metrics.inc(ctx.redis, "deliveries", messenger=NAME, how=how)
    if how == "error" and outcome.reply.kind == "result":
        ctx.core.sessions.keep(NAME, event.user, outcome.reply)
