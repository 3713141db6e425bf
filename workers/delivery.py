"""Deliver a finished job's answer: direct hand-over, callback, or the kept-results store."""

from __future__ import annotations

import logging
import time

from bot import handover
from bot.events import QuickReply, Reply, Text
from bot.messengers import kakao
from bot.texts import say
from workers.job import Job
from workers.runtime import Runtime

log = logging.getLogger(__name__)


def deliver(rt: Runtime, job: Job, reply: Reply) -> str:
    """Hand the reply to whoever may deliver it; returns how it went out."""
    claim = handover.worker_finish(rt.redis, job.request_id, reply)
    if claim.how == "direct":
        log.info("delivered", extra={"how": "direct"})
        return "direct"
    if claim.how == "callback" and job.reply_to:
        # Kakao may refuse a POST that races its own acknowledgement.
        pause = claim.acked_at + rt.settings.callback_delay_s - time.time()
        if pause > 0:
            time.sleep(pause)
        status = post_callback(rt, job, reply)
        log.info("delivered", extra={"how": "callback", "status": status})
        if status == "SUCCESS":
            return "callback"
    keep(rt, job, reply)
    return "kept"


def post_callback(rt: Runtime, job: Job, reply: Reply) -> str:
    """POST the reply to the job's messenger callback."""
    assert job.reply_to is not None
    if job.messenger == kakao.NAME:
        return kakao.post_callback(rt.guard, job.reply_to, reply, job.deadline)
    return "error"


def keep(rt: Runtime, job: Job, reply: Reply) -> None:
    """Keep the reply for the user's next message or `결과 보기`."""
    rt.sessions.keep(job.messenger, job.user, reply)
    log.info("delivered", extra={"how": "kept"})


def expired_reply(job: Job) -> Reply:
    """The note kept for a job that missed its deadline, with one tap to send it again."""
    resend = QuickReply(say("quick_resend", job.lang), job.request.prompt[:200])
    return Reply(
        (Text(say("expired", job.lang, prompt=job.request.prompt[:60])),), (resend,), kind="late"
    )
