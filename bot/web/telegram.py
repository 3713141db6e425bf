"""POST /telegram/webhook: verify, deduplicate, answer at once; slow answers come from the worker.

Telegram redelivers an update it did not see acknowledged, so update ids are remembered a day.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import redis
from flask import Blueprint, jsonify, request

from bot.core import logs, metrics
from bot.core.errors import WebhookError
from bot.core.events import Event, Outcome, Reply, Text
from bot.core.texts import say
from bot.messengers.telegram import (
    NAME,
    BotApi,
    Groups,
    Update,
    chat_action,
    parse,
    send,
    verify,
)
from bot.web.context import AppContext, context
from bot.web.webhooks import (
    check_json_type,
    first_delivery,
    forget_delivery,
    read_body,
    refusal_reason,
)

log = logging.getLogger(__name__)
telegram_webhook = Blueprint("telegram", __name__)


@telegram_webhook.post("/telegram/webhook")
def webhook() -> Any:
    """Telegram update: verify, deduplicate, answer at once; slow answers come from the worker."""
    received_at = time.time()
    request_id = uuid.uuid4().hex
    app = context()
    settings = app.settings
    if not settings.telegram_token:
        return jsonify({"error": "NotFound", "detail": "Telegram is not configured"}), 404
    with logs.context(request_id):
        try:
            body = read_body(settings.max_body_bytes)  # 413 first, before the secret
            verify(request.headers, body, settings)
            check_json_type()
            # The username: TELEGRAM_BOT_USERNAME, else Telegram's answer to getMe (BotName).
            groups = Groups(app.telegram_name.get(), settings.group_answer_all)
            update = parse(body, received_at, request_id, groups)
        except WebhookError as exc:
            metrics.refused(app.redis, refusal_reason(exc))
            log.info("refused telegram request", extra={"why": str(exc)})
            return jsonify({"error": type(exc).__name__, "detail": str(exc)}), exc.status
        if update.unaddressed:  # a group message for the others: nothing to do, nothing kept
            return jsonify({"ok": True})
        key = str(update.update_id)
        try:
            if not first_delivery(app.redis, NAME, key):
                metrics.refused(app.redis, "duplicate")
                log.info("duplicate update ignored", extra={"update_id": update.update_id})
                return jsonify({"ok": True, "duplicate": True})
            if (
                update.event is None
                or update.unsupported is not None
                or (update.photo_file_id is not None)
            ):
                metrics.inc(app.redis, "requests", messenger=NAME)  # else core.handle counts it
            if update.event is not None:
                answer(app, update)
        except redis.RedisError as exc:
            # Telegram retries a failed delivery: let that retry through, nothing is lost.
            forget_delivery(app.redis, NAME, key)
            log.error("redis unavailable", extra={"error": type(exc).__name__})
            return jsonify({"error": "Unavailable"}), 503
        return jsonify({"ok": True})


def answer(ctx: AppContext, update: Update) -> None:
    """Answer one message: now when the core has the answer, else a chat action."""
    assert update.event is not None
    event = update.event
    api = BotApi(ctx.guard, ctx.settings)
    if update.unsupported is not None:
        metrics.refused(ctx.redis, "unsupported")
        unsupported = _text(say("unsupported", event.lang))
        send(api, ctx.settings, ctx.store, update.chat_id, unsupported, _quoted(event))
        return
    if update.photo_file_id is not None:
        file_id = update.photo_file_id
        chat_action(api, update.chat_id, "typing")
        # Fetched within PHOTO_FETCH_BUDGET_S; later than that, the worker fetches it by file_id.
        outcome = ctx.core.photo_in(
            event, lambda cap, deadline: api.download(file_id, cap, deadline), file_id
        )
    else:
        outcome = ctx.core.handle(event)
    deliver_outcome(api, ctx, update.chat_id, event, outcome)


def deliver_outcome(
    api: BotApi, ctx: AppContext, chat_id: str, event: Event, outcome: Outcome
) -> None:
    """Send what the core answered now; an acknowledgement shows a chat action and its text."""
    if outcome.ack is not None:
        # A question about a photo is typed; anything else is a picture on its way.
        asking = ctx.core.conversations.current(NAME, event.room) is not None
        chat_action(api, chat_id, "typing" if asking else "upload_photo")
        send(api, ctx.settings, ctx.store, chat_id, _text(outcome.ack.text), _quoted(event))
        return
    assert outcome.reply is not None
    status = send(api, ctx.settings, ctx.store, chat_id, outcome.reply, _quoted(event))
    metrics.inc(ctx.redis, "deliveries", messenger=NAME, how="direct")
    if status != "SUCCESS" and outcome.reply.kind == "result":
        ctx.core.sessions.keep(NAME, event.user, outcome.reply)  # never lose a picture


def _quoted(event: Event) -> str:
    """The asker's message an answer replies to: in a group only."""
    return event.reply_to_message if event.in_group else ""


def _text(text: str) -> Reply:
    return Reply((Text(text),))
