"""Deliver a finished job's answer: direct hand-over, callback, or the kept-results store."""

from __future__ import annotations

import logging
import time

from bot.core import handover, metrics, storybook
from bot.core.events import QuickReply, Reply, Text
from bot.core.job import Job
from bot.core.texts import say
from bot.messengers import kakao, line, telegram
from workers.runtime import Runtime

log = logging.getLogger(__name__)


# How long after its wait ends a webhook may still take a direct hand-over (it answers at once
# when woken); after that a worker keeps the result for the user instead.
HANDOVER_GRACE_S = 3.0


def deliver(rt: Runtime, job: Job, reply: Reply) -> str:
    """Hand the reply to whoever may deliver it; returns how it went out."""
    wait_ends = max(job.received_at + rt.settings.sync_wait_s, time.time())
    claim = handover.worker_finish(
        rt.redis,
        job.request_id,
        reply,
        rt.settings.record_ttl_s,
        owner=(job.messenger, job.user),
        taken_by=wait_ends + HANDOVER_GRACE_S,
    )
    if claim.how == "direct":
        log.info("delivered", extra={"how": "direct"})
        metrics.inc(rt.redis, "deliveries", messenger=job.messenger, how="direct")
        return "direct"
    if claim.how == "callback" and job.reply_to:
        if job.messenger == kakao.NAME:
            # Kakao may refuse a POST that races its own acknowledgement.
            pause = claim.acked_at + rt.settings.callback_delay_s - time.time()
            if pause > 0:
                time.sleep(pause)
        status = post_callback(rt, job, reply)
        log.info("delivered", extra={"how": "callback", "status": status})
        if status == "SUCCESS":
            metrics.inc(rt.redis, "deliveries", messenger=job.messenger, how="callback")
            return "callback"
    keep(rt, job, reply)
    return "kept"


def post_callback(rt: Runtime, job: Job, reply: Reply) -> str:
    """Send the reply through the job's messenger: Kakao's callback, Telegram's Bot API, or
    LINE's reply token (push once it has expired). Returns SUCCESS when it went out."""
    assert job.reply_to is not None
    if job.messenger == kakao.NAME:
        status = kakao.post_callback(rt.guard, job.reply_to, reply, job.deadline)
        metrics.inc(rt.redis, "callbacks", result=status)
        return status
    # In a group (a chat that is not the person's own) the answer replies to the asker.
    quoted = job.reply_to_message if job.room != job.user else ""
    if job.messenger == telegram.NAME:
        api = telegram.BotApi(rt.guard, rt.settings)
        return telegram.send(api, rt.settings, rt.store, job.reply_to, reply, quoted)
    if job.messenger == line.NAME:
        sent: list[str] = []
        how = line.reply_or_push(
            line.LineApi(rt.guard, rt.settings), reply, job.reply_to, job.room,
            job.received_at, rt.settings.line_reply_window_s, job.request_id, quoted, sent,
        )  # fmt: skip
        if job.room != job.user:
            line.remember_sent(rt.redis, sent)
        return "SUCCESS" if how in {"reply", "push"} else "error"
    return "error"


def keep(rt: Runtime, job: Job, reply: Reply) -> None:
    """Keep the reply for the user's next message or `결과 보기`."""
    keep_for(rt, job.messenger, job.user, reply)


def keep_for(rt: Runtime, messenger: str, user: str, reply: Reply) -> None:
    """Keep a reply for a user's next message or `결과 보기`."""
    rt.sessions.keep(messenger, user, reply)
    metrics.inc(rt.redis, "deliveries", messenger=messenger, how="kept")
    log.info("delivered", extra={"how": "kept"})


def expired_reply(job: Job) -> Reply:
    """The note kept for a job that missed its deadline, with one tap to send it again."""
    if job.task == "ask":
        question = job.request.question
        return Reply(
            (Text(say("expired_ask", job.lang, question=question[:60])),),
            (QuickReply(say("quick_resend", job.lang), question[:200]),) if question else (),
            kind="late",
        )
    resend = QuickReply(say("quick_resend", job.lang), job.request.prompt[:200])
    if job.request.scenes:  # a storybook is sent again as one
        prefix = storybook.prefix_for(job.request.book, job.lang)
        resend = QuickReply(resend.label, f"{prefix} {job.request.prompt}"[:1000])
    return Reply(
        (Text(say("expired", job.lang, prompt=job.request.prompt[:60])),), (resend,), kind="late"
    )
