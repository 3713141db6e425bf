"""The messenger-neutral core: decide, admit, enqueue, wait briefly, answer.

It knows no messenger's JSON: it takes an Event and returns an Outcome.
"""

from __future__ import annotations

import logging
import secrets
import time

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from bot import handover, intents, slots
from bot.events import Ack, Event, Outcome, QuickReply, Reply, Text
from bot.sessions import Sessions
from bot.settings import Settings
from bot.texts import help_quick_replies, quick, say
from workers import recovery
from workers.job import Job, Request

log = logging.getLogger(__name__)


class Core:
    """Turns events into outcomes; one per web process."""

    def __init__(self, settings: Settings, r: redis.Redis) -> None:
        self.settings = settings
        self.r = r
        self.sessions = Sessions(r, settings.session_ttl_s, settings.kept_ttl_s)
        self._queues: dict[str, Queue] = {}

    def queue(self, name: str) -> Queue:
        """The rq queue of a model family (JSON serializer: jobs are plain JSON)."""
        if name not in self._queues:
            self._queues[name] = Queue(name, connection=self.r, serializer=JSONSerializer)
        return self._queues[name]

    # 1. Decide --------------------------------------------------------------------------------
    def handle(self, event: Event) -> Outcome:
        """Answer one message."""
        lang = event.lang
        action = intents.decide(event.text)
        if action.name == "results":
            return self._results(event)
        kept = self._kept_first(event)
        if kept is not None:
            return kept
        if action.name == "help":
            return _reply(Reply((Text(say("help", lang)),), help_quick_replies(lang)), event)
        if action.name == "welcome":
            return _reply(Reply((Text(say("welcome", lang)),), help_quick_replies(lang)), event)
        if action.name == "redraw":
            last = self.sessions.last_prompt(event.messenger, event.user)
            if last is None:
                return _reply(
                    Reply((Text(say("no_last_prompt", lang)),), help_quick_replies(lang)), event
                )
            request = Request(**{**last, "seed": new_seed()})
            return self.submit(event, request)
        if len(action.text) > self.settings.max_prompt_chars:
            text = say("too_long", lang, n=self.settings.max_prompt_chars)
            return _reply(Reply((Text(text),), kind="error"), event)
        return self.submit(event, Request(prompt=action.text, seed=new_seed(), language=lang))

    def _results(self, event: Event) -> Outcome:
        reply, remaining = self.sessions.take_kept(event.messenger, event.user)
        if reply is None:
            return _reply(
                Reply((Text(say("nothing_kept", event.lang)),), help_quick_replies(event.lang)),
                event,
            )
        note = say("kept_note_plain", event.lang)
        if remaining:
            note += " " + say("kept_more", event.lang, n=remaining)
        extra = (quick("quick_result", event.lang),) if remaining else ()
        return _reply(reply.with_prefix(note, extra), event)

    def _kept_first(self, event: Event) -> Outcome | None:
        """A kept result is served first; one tap re-sends what the user just wrote."""
        if not self.sessions.kept_count(event.messenger, event.user):
            return None
        reply, remaining = self.sessions.take_kept(event.messenger, event.user)
        if reply is None:
            return None
        extra: tuple[QuickReply, ...] = ()
        note = say("kept_note_plain", event.lang)
        if event.text:
            extra = (QuickReply(say("quick_resend", event.lang), event.text),)
            note = say("kept_note", event.lang)
        if remaining:
            note += " " + say("kept_more", event.lang, n=remaining)
            extra += (quick("quick_result", event.lang),)
        return _reply(reply.with_prefix(note, extra), event)

    # 2. Admit and enqueue ------------------------------------------------------------------------
    def submit(self, event: Event, request: Request, task: str = "draw") -> Outcome:
        """Queue a job for the user unless one is already in flight, then wait briefly."""
        s = self.settings
        life = s.callback_deadline_s if event.callback_url else s.pull_deadline_s
        job = Job(
            request_id=event.request_id,
            messenger=event.messenger,
            user=event.user,
            deadline=event.received_at + life,
            preset=s.preset,
            request=request,
            task=task,
            reply_to=event.callback_url,
            received_at=event.received_at,
            lang=event.lang,
        )
        slot_ttl = int(life + s.job_timeout_s + 60)
        if not self._take_slot(event, slot_ttl):
            return _reply(Reply((Text(say("busy_slot", event.lang)),), kind="busy"), event)
        try:
            self.queue(job.queue).enqueue(
                job.function,
                job.to_dict(),
                job_id=job.request_id,
                job_timeout=s.job_timeout_s,
                result_ttl=3600,
                failure_ttl=86400,
                description=f"{task} {job.request_id}",
            )
        except Exception:
            slots.release(self.r, event.messenger, event.user, event.request_id)
            raise
        if task == "draw":
            self.sessions.remember_prompt(event.messenger, event.user, _redraw_fields(request))
        log.info("enqueued", extra={"queue": job.queue, "task": task})
        return self.wait(event)

    def _take_slot(self, event: Event, ttl_s: int) -> bool:
        if slots.acquire(self.r, event.messenger, event.user, event.request_id, ttl_s):
            return True
        held_by = slots.holder(self.r, event.messenger, event.user)
        if held_by and slots.owner_is_dead(self.r, held_by):
            if slots.release(self.r, event.messenger, event.user, held_by):
                recovery.fail_lost_job(self.r, held_by, "worker stopped heartbeating")
            return slots.acquire(self.r, event.messenger, event.user, event.request_id, ttl_s)
        return False

    # 3. Answer --------------------------------------------------------------------------------
    def wait(self, event: Event) -> Outcome:
        """Wait for a direct answer until the budget ends, then acknowledge or say it's coming."""
        budget = event.received_at + self.settings.sync_wait_s - time.time()
        how = "callback" if event.callback_url else "pull"
        reply = handover.webhook_wait(self.r, event.request_id, budget, how)
        if reply is not None:
            log.info("answered directly")
            return _reply(reply, event)
        if how == "callback":
            return Outcome(ack=Ack(say("drawing", event.lang)), request_id=event.request_id)
        still = Reply(
            (Text(say("still_drawing", event.lang)),), (quick("quick_result", event.lang),)
        )
        return _reply(still, event)


def new_seed() -> int:
    """A fresh random seed in 0..2**32-1."""
    return secrets.randbelow(2**32)


def _redraw_fields(request: Request) -> dict[str, object]:
    fields = dict(vars(request))
    fields.pop("seed", None)
    return fields


def _reply(reply: Reply, event: Event) -> Outcome:
    return Outcome(reply=reply, request_id=event.request_id)
