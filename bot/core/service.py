"""The messenger-neutral core: decide, admit, enqueue, wait briefly, answer.

It knows no messenger's JSON: it takes an Event and returns an Outcome.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job as RqJob
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from bot.core import (
    admission,
    conversation,
    drawing,
    handover,
    intents,
    keys,
    metrics,
    recovery,
    slots,
)
from bot.core.events import Ack, Event, Outcome, QuickReply, Reply, Text
from bot.core.job import Job, Request
from bot.core.operator import Operations
from bot.core.photos import Limits, PhotoError, Received
from bot.core.photos import check as check_photo
from bot.core.photos import store_from_settings as photo_store_from_settings
from bot.core.sessions import Sessions
from bot.core.settings import Settings
from bot.core.texts import help_quick_replies, quick, say
from bot.core.urlguard import guard_from_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UserState:
    """What Core.handle reads about the user before deciding, fetched in one round trip."""

    photo: conversation.PhotoSession | None
    seed_pin: bytes | None  # the seed `같은 시드로` kept for the next prompt
    first_contact: bool


@dataclass
class FirstLook:
    """What the fast path's admission read about the user, who was not looked up before."""

    photo: bool = False  # a photo session is live: decide again, the long way
    first_contact: bool = False
    looked: bool = False  # admission may run twice (kept results, a lost job); one look


class Core:
    """Turns events into outcomes; one per web process."""

    def __init__(self, settings: Settings, r: redis.Redis,
                 waiter: redis.Redis | None = None) -> None:
        self.settings = settings
        self.r = r
        self.waiter = waiter or r  # the blocking wait for a hand-over (bot/web/app.py `connect`)
        self.sessions = Sessions(r, settings.session_ttl_s, settings.kept_ttl_s)
        self.ops = Operations(settings, r)
        self.guard = guard_from_settings(settings)
        self.photos = photo_store_from_settings(settings)
        self.conversations = conversation.Conversations(r, self.photos, settings.photo_ttl_s)
        self.drawing = drawing.Drawing(settings, r, self.sessions)
        self._queues: dict[str, Queue] = {}

    def queue(self, name: str, held: bool = False) -> Queue:
        """The rq queue of a model family (JSON serializer: jobs are plain JSON); `held`: its
        twin whose push the admission script makes."""
        key = ("held:" if held else "") + name
        if key not in self._queues:
            kind = admission.HeldQueue if held else Queue
            self._queues[key] = kind(name, connection=self.r, serializer=JSONSerializer)
        return self._queues[key]

    # 1. Decide --------------------------------------------------------------------------------
    def handle(self, event: Event) -> Outcome:
        """Answer one message; a new user's first answer carries the notice."""
        fast = self._fast_draw(event)
        if fast is not None:
            return fast
        return self._long_way(event, self._prefetch(event))

    def _long_way(self, event: Event, state: UserState) -> Outcome:
        outcome = self._handle(event, state)
        if state.first_contact:
            return drawing.with_notice(outcome, self.drawing.notice(event.lang))
        return outcome

    def _fast_draw(self, event: Event) -> Outcome | None:
        """The common message, a prompt from a user with no photo session, in one round trip.

        Admission itself reads what `_prefetch` would (photo session, pinned seed, first
        contact) and counts the request; a user with a photo session goes the long way.
        """
        if event.image_urls or event.text.startswith("/"):
            return None
        action = intents.decide(event.text, has_photo=False)
        if action.name != "draw":
            return None
        planned = self.drawing.plan(event, action, None, None, defer_seed=True)
        if not isinstance(planned, Request):  # refused or a bad option: no admission needed
            state = self._prefetch(event)
            if state.photo is not None:  # with a photo the same words may be a question
                return self._long_way(event, state)
            outcome = _reply(planned, event)
            if state.first_contact:
                return drawing.with_notice(outcome, self.drawing.notice(event.lang))
            return outcome
        look = FirstLook()
        outcome = self.submit(event, planned, look=look)
        if look.photo:
            return None
        if not look.looked:  # refused before admission (maintenance, no worker): count it here
            look.first_contact = self._prefetch(event).first_contact
        if look.first_contact:
            return drawing.with_notice(outcome, self.drawing.notice(event.lang))
        return outcome

    def _prefetch(self, event: Event) -> UserState:
        """The user's state this message needs, and the request count, in one round trip."""
        m, u = event.messenger, event.user
        with self.r.pipeline(transaction=False) as pipe:
            pipe.get(keys.photo_session(m, u))
            pipe.get(keys.seed_pin(m, u))
            pipe.set(keys.seen_user(m, u), "1", nx=True, ex=self.settings.session_ttl_s)
            metrics.inc(pipe, "requests", messenger=m)
            photo, pin, first, _ = pipe.execute(raise_on_error=False)
        if isinstance(photo, Exception) or isinstance(pin, Exception):
            raise photo if isinstance(photo, Exception) else pin
        session = conversation.PhotoSession.from_json(photo) if photo else None
        return UserState(session, pin if isinstance(pin, bytes) else None, first is True)

    def _handle(self, event: Event, state: UserState) -> Outcome:
        lang = event.lang
        command = self.ops.command(event)
        if command is not None:
            return _reply(command, event)
        if event.image_urls:  # fetched at once: the URLs expire
            return conversation.photos_in(self, event)
        photo = state.photo
        action = intents.decide(event.text, has_photo=photo is not None)
        if action.name == "results":
            return self._results(event)
        if action.name == "cancel":
            return self.cancel(event)
        if action.name == "forget":
            return conversation.forget(self, event)
        if action.name == "ask" and photo is not None:
            return conversation.ask(self, event, action.text, photo)
        if action.name in drawing.ACTIONS:  # draw, restyle, same seed, photo redraw
            planned = self.drawing.plan(event, action, drawing.photo_id(photo), state.seed_pin)
            if isinstance(planned, Request):
                return self.submit(event, planned)
            return _reply(planned, event)
        if action.name == "redraw":
            last = self.sessions.last_prompt(event.messenger, event.user)
            if last is not None:
                return self.submit(event, Request(**{**last, "seed": new_seed()}))
        kept = self._kept_first(event)
        if kept is not None:
            return kept
        if action.name == "redraw":
            return _reply(Reply((Text(say("no_last_prompt", lang)),), help_quick_replies(lang)),
                          event)
        if action.name == "new_photo":
            return conversation.start_over(self, event)
        if action.name == "photo_hint":
            return conversation.hint(event)
        if action.name == "welcome":
            return _reply(Reply((Text(say("welcome", lang)),), help_quick_replies(lang)), event)
        help_parts = (Text(say("help", lang)), conversation.help_bubble(self, lang))
        return _reply(Reply(help_parts, help_quick_replies(lang)), event)

    def photo_in(self, event: Event, fetch: Callable[[int], bytes]) -> Outcome:
        """A photo or clip whose bytes the adapter fetches with the bot's credentials
        (Telegram, LINE: `fetch(max_bytes)`, raising PhotoError); its caption a question at once.

        Kakao hands over URLs that anyone may fetch, so the core fetches those itself
        (Event.image_urls, `conversation.photos_in`). These bytes go through the same checks, the
        same private store and the same conversation."""
        lang = event.lang
        limits = Limits.from_settings(self.settings)
        try:
            kind, data = check_photo(fetch(max(limits.max_bytes, limits.clip_max_bytes)), limits)
            photo_id = self.photos.put(data, kind)
        except PhotoError as exc:
            log.info("photo not used", extra={"why": exc.key, "detail": str(exc)})
            outcome = _reply(conversation.error_reply((exc,), lang), event)
        except OSError as exc:
            log.error("photo not stored", extra={"error": str(exc)})
            outcome = _reply(conversation.error_reply((PhotoError("photo_unreachable"),), lang),
                             event)
        else:
            received = Received((photo_id,), kind == "clip", (), ())
            session = self.conversations.start(
                event.messenger, event.user, received.ids, received.video
            )
            caption = intents.decide(event.text, has_photo=True)
            if caption.name == "ask":
                outcome = conversation.ask(self, event, caption.text, session)
            else:
                outcome = _reply(conversation.received_reply(received, lang), event)
        if self.sessions.first_contact(event.messenger, event.user):
            outcome = drawing.with_notice(outcome, self.drawing.notice(lang))
        return outcome

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

    def _sync_wait(self, event: Event) -> float:
        """How long the webhook waits for a direct answer: none where the bot can send later."""
        return self.settings.sync_wait_s if event.waits else 0.0

    def _life(self, event: Event) -> float:
        """How long the job may take: Kakao's callback lives a minute; a messenger that can send
        later (Telegram, LINE) or a pull-path user waits as long as the pull path allows."""
        s = self.settings
        if not event.waits:
            return s.pull_deadline_s if event.callback_url else min(s.pull_deadline_s,
                                                                    s.kept_ttl_s)
        return s.callback_deadline_s if event.callback_url else min(s.pull_deadline_s,
                                                                     s.kept_ttl_s)

    # 2. Admit and enqueue ------------------------------------------------------------------------
    def submit(
        self, event: Event, request: Request, task: str = "draw", hold_slot: bool = True,
        look: FirstLook | None = None,
    ) -> Outcome:
        """Queue a job for the user unless one is already in flight, then wait briefly.

        `hold_slot=False` queues without the user's slot (a photo fetch handed to the worker:
        its URLs expire, so it must not wait for the user's other job). `look`: the fast path,
        whose admission also reads the user's state into it."""
        s = self.settings
        life = self._life(event)
        deferred = request.seed == drawing.DEFERRED_SEED
        if deferred:  # our own choice, unless admission finds a seed the user pinned
            request = dataclasses.replace(request, seed=new_seed())
        job = Job(
            request_id=event.request_id,
            messenger=event.messenger,
            user=event.user,
            deadline=event.received_at + life,
            preset=s.vlm_preset if task == "ask" else s.preset,
            request=request,
            task=task,
            reply_to=event.callback_url,
            received_at=event.received_at,
            lang=event.lang,
        )
        # When there is no time left to wait, the slow-path claim is taken with the enqueue,
        # in the same transaction, so the worker cannot finish in between.
        claim_now = event.received_at + self._sync_wait(event) - time.time() < 0.01
        operator = self.ops.is_operator(event)
        if not hold_slot:
            with self.r.pipeline() as pipe:
                self._enqueue(pipe, job, at_front=operator)
                if claim_now:
                    handover.webhook_claim(pipe, event.request_id, _slow_path(event),
                                           s.record_ttl_s)
                results = pipe.execute()
            reply = handover.claimed(results[-1]) if claim_now else None
        else:
            refusal, job = self._admit(event, job, life, operator, look, deferred, claim_now)
            if refusal is not None:
                return refusal
            reply = None  # admission took the claim: the worker cannot have finished yet
        log.info("enqueued", extra={"queue": job.queue, "task": task})
        if claim_now:
            return self.answer(event, reply, job)
        return self.wait(event, job)

    def _enqueue(self, pipe: redis.client.Pipeline, job: Job, at_front: bool,
                 held: bool = False) -> None:
        """rq's enqueue into a MULTI; `held`: the admission script makes the push."""
        queue = self.queue(job.queue, held=held)
        queue.enqueue_call(
            job.function, args=(job.to_dict(),), job_id=job.request_id,
            timeout=self.settings.job_timeout_s, result_ttl=self.settings.record_ttl_s,
            failure_ttl=86400, description=f"{job.task} {job.request_id}", pipeline=pipe,
            at_front=at_front)

    def _admit(self, event: Event, job: Job, life: float, operator: bool,
               look: FirstLook | None, deferred: bool, claim_now: bool,
               ) -> tuple[Outcome | None, Job]:
        """Admission (bot/core/admission.py), which also queues the job: (None, the job queued) when
        admitted, else (the answer, the job)."""
        s, lang = self.settings, event.lang
        if self.ops.is_blocked_by_settings(event):
            return self._refuse(event, "blocked", say("user_blocked", lang)), job
        maintenance = self.ops.maintenance()
        if maintenance and not operator:
            return self._refuse(event, "maintenance", maintenance), job
        workers = self.ops.workers(job.queue)
        if not workers:  # the user's previous job may have died with the last worker
            lost = self._lost_job(event, slots.holder(self.r, event.messenger, event.user))
            return lost or self._refuse(event, "no_worker", say("no_worker", lang)), job
        limits = admission.Limits(
            rate_window_s=s.rate_window_s, rate_limit=s.rate_limit, daily_quota=s.daily_quota,
            dedupe_ttl_s=s.dedupe_s, default_service_s=s.default_service_s,
            check_limits=not operator, at_front=operator)
        budget = event.received_at + life - time.time() - 1.0
        job.meta["quota_day"] = time.strftime("%Y%m%d", time.gmtime())
        take_pin = False

        def decide() -> admission.Decision:
            return self._decide(event, job, workers, budget, int(life + s.job_timeout_s + 60),
                                limits, look, deferred and not take_pin, take_pin, claim_now)

        decision = decide()
        if look is not None and not look.looked:
            look.photo, look.looked = decision.status == admission.PHOTO, True
            look.first_contact = decision.first_contact
            if look.photo:
                return Outcome(), job  # not an answer: the caller decides again with the photo
        if decision.pin is not None and decision.status != admission.ADMITTED:
            take_pin = True  # the user's pinned seed: a later attempt deletes it when admitted
            if decision.status == admission.PINNED:  # `같은 시드로`: write the job again with it
                request = dataclasses.replace(job.request, seed=decision.pin)
                job = dataclasses.replace(job, request=request)
                decision = decide()
        if decision.status == admission.KEPT:
            kept = self._kept_first(event)
            if kept is not None:
                return kept, job
            decision = decide()
        if decision.status == admission.BUSY and decision.holder:
            lost = self._lost_job(event, decision.holder)
            if lost is not None:
                return lost, job
            if slots.holder(self.r, event.messenger, event.user) != decision.holder:
                decision = decide()
        if decision.status == admission.ADMITTED:
            job.meta.update(ahead=decision.ahead, estimate_s=round(decision.estimate_s, 2))
            return None, job
        texts = {
            admission.DUPLICATE: say("duplicate", lang),
            admission.RATE: say("rate_limited", lang, seconds=int(decision.retry_after_s) or 1),
            admission.QUOTA: say("quota_reached", lang, n=s.daily_quota),
            admission.BUSY: say("busy_slot", lang),
            admission.TOO_SLOW: say("too_slow", lang,
                                    when=admission.retry_phrase(decision.retry_after_s, lang)),
            admission.BLOCKED: say("user_blocked", lang),
        }
        return self._refuse(event, decision.name, texts.get(decision.status, say("busy_slot",
                                                                                  lang))), job

    def _lost_job(self, event: Event, holder: str | None) -> Outcome | None:
        """The job holding the user's slot lost its worker: retried (the user is still busy),
        else its answer or an apology now. None when it did not (or another process saw to it)."""
        owner = recovery.dead_owner(self.r, holder) if holder else None
        lost = (recovery.recover(self.r, holder, owner, self.settings.default_service_s)
                if holder and owner else None)
        if lost is None:
            return None
        if lost.how == recovery.RETRIED:
            return self._refuse(event, "busy", say("busy_slot", event.lang))
        if lost.reply is not None:
            self.sessions.keep(event.messenger, event.user, lost.reply)
        elif lost.how == recovery.FAILED:
            self.sessions.keep(event.messenger, event.user, recovery.lost_reply(lost.job))
        return self._kept_first(event)

    def _decide(self, event: Event, job: Job, workers: int, budget: float, slot_ttl: int,
                limits: admission.Limits, look: FirstLook | None, deferred: bool,
                take_pin: bool, claim_now: bool) -> admission.Decision:
        """One admission attempt, which queues the job when admitted (one round trip)."""
        m, u = event.messenger, event.user
        enqueue = admission.Enqueue(
            save_job=lambda pipe: self._enqueue(pipe, job, limits.at_front, held=True),
            job_key=RqJob.key_for(job.request_id),
            prompt=(self.sessions.prompt_record(m, u, _redraw_fields(job.request))
                    if job.task == "draw" else None),
            claim=(handover.claim_record(event.request_id, _slow_path(event),
                                         self.settings.record_ttl_s) if claim_now else None),
            quota_day=job.meta["quota_day"],
            deferred_seed=deferred, take_pin=take_pin)
        return admission.admit(
            self.r, messenger=m, user=u, text=event.text or job.task,
            request_id=event.request_id, queue_key=self.queue(job.queue).key,
            service_field=admission.service_field(job.queue, job.preset), workers=workers,
            budget_s=budget, slot_ttl_s=slot_ttl, limits=limits, enqueue=enqueue,
            first_look=look is not None and not look.looked,
            seen_ttl_s=self.settings.session_ttl_s)

    def _refuse(self, event: Event, reason: str, text: str) -> Outcome:
        log.info("refused", extra={"reason": reason})
        metrics.refused(self.r, reason)
        return _reply(Reply((Text(text),), kind="busy"), event)

    def cancel(self, event: Event) -> Outcome:
        """`취소`: a queued job is removed; a running one finishes but its result is dropped."""
        lang = event.lang
        holder = slots.holder(self.r, event.messenger, event.user)
        if not holder:
            return _reply(Reply((Text(say("nothing_to_cancel", lang)),)), event)
        self.r.set(keys.dropped(holder), "1", ex=3600)
        try:
            rq_job = RqJob.fetch(holder, connection=self.r, serializer=JSONSerializer)
            queued = rq_job.get_status() == JobStatus.QUEUED
            if queued:
                rq_job.cancel()
            day = (rq_job.args[0].get("meta") or {}).get("quota_day", "") if rq_job.args else ""
        except NoSuchJobError:
            queued, day = True, ""
        slots.release(self.r, event.messenger, event.user, holder)
        if queued:
            admission.refund(self.r, event.messenger, event.user, holder, day)
        log.info("cancelled", extra={"job": holder, "queued": queued})
        return _reply(Reply((Text(say("cancelled" if queued else "cancelled_running", lang)),),
                            help_quick_replies(lang)), event)

    # 3. Answer --------------------------------------------------------------------------------
    def wait(self, event: Event, job: Job) -> Outcome:
        """Wait for a direct answer until the budget ends, then take the slow path."""
        budget = event.received_at + self._sync_wait(event) - time.time()
        reply = handover.webhook_wait(self.r, event.request_id, budget, _slow_path(event),
                                      self.settings.record_ttl_s, waiter=self.waiter)
        return self.answer(event, reply, job)

    def answer(self, event: Event, reply: Reply | None, job: Job) -> Outcome:
        """The finished reply, or the acknowledgement of the slow path the webhook claimed."""
        task = job.task
        if reply is not None:
            log.info("answered directly")
            return _reply(reply, event)
        if event.callback_url:
            text = say("thinking" if task == "ask" else "drawing", event.lang)
            if "estimate_s" in job.meta and task != "ask":
                text = waiting_text(job, event.lang)
            return Outcome(ack=Ack(text), request_id=event.request_id)
        still_key = "still_thinking" if task == "ask" else "still_drawing"
        still = Reply((Text(say(still_key, event.lang)),), (quick("quick_result", event.lang),))
        return _reply(still, event)


def waiting_text(job: Job, lang: str) -> str:
    """The waiting message: the place in line and the expected seconds."""
    seconds = max(1, round(float(job.meta.get("estimate_s", 0))))
    ahead = int(job.meta.get("ahead", 0))
    if ahead:
        return say("queued_ahead", lang, ahead=ahead, seconds=seconds)
    return say("queued_soon", lang, seconds=seconds)


def _slow_path(event: Event) -> str:
    return "callback" if event.callback_url else "pull"


def new_seed() -> int:
    """A fresh random seed in 0..2**32-1."""
    return secrets.randbelow(2**32)


def _redraw_fields(request: Request) -> dict[str, object]:
    return dict(vars(request))  # the seed too: `같은 시드로` reads it; a redraw draws a new one


def _reply(reply: Reply, event: Event) -> Outcome:
    return Outcome(reply=reply, request_id=event.request_id)
