"""The messenger-neutral core: one message as a pipeline.

    parse (bot/messengers) -> read the user's state -> decide the action (bot/core/intents.py)
    -> the action's handler returns a request to queue or a reply -> admit and enqueue
    (bot/core/admission.py) -> wait briefly for the worker (bot/core/handover.py) -> answer

It knows no messenger's JSON: it takes an Event and returns an Outcome.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    storybook,
)
from bot.core.actions import DRAWING, Action, ActionName, Planned, ToQueue
from bot.core.admission import Status
from bot.core.events import Ack, Event, Outcome, QuickReply, Reply, Text
from bot.core.job import TEXT_TO_IMAGE_QUEUE, VISION_LANGUAGE_QUEUE, Job, Request
from bot.core.operator import Operations
from bot.core.photos import store_from_settings as photo_store_from_settings
from bot.core.sessions import Sessions
from bot.core.settings import Settings
from bot.core.texts import help_quick_replies, quick, say
from bot.core.urlguard import guard_from_settings

log = logging.getLogger(__name__)

# Answers that come after any result kept for the user (`결과 보기` serves one itself).
KEPT_FIRST = frozenset(
    {
        ActionName.HELP,
        ActionName.WELCOME,
        ActionName.REDRAW,
        ActionName.NEW_PHOTO,
        ActionName.PHOTO_HINT,
        ActionName.SMALL_TALK,
    }
)
OTHER_READING_TTL_S = 600  # how long the quick reply that does the other reading works
MAX_ADMISSION_TRIES = 4  # each retry below has its reason; none repeats without a change
# The webhook does not wait for a job whose estimate passes the wait's end by more than this:
# waiting would only show the user nothing for seconds. Within it, the moving average is too
# noisy to give up a direct answer, so the webhook waits (docs/architecture.md).
ESTIMATE_MARGIN_S = 0.5


@dataclass(frozen=True)
class UserState:
    """What the core reads about the user before deciding, in one round trip."""

    photo: conversation.PhotoSession | None = None
    seed_pin: bytes | None = None  # the seed `같은 시드로` kept for the next prompt
    first_contact: bool = False
    read: bool = True  # False: not read; admission reads it with the enqueue (the fast path)


UNREAD = UserState(read=False)


@dataclass(frozen=True)
class Admitted:
    """What admitting and answering a request gave: the outcome, and what admission read
    about a user whose state was not read before (UNREAD)."""

    outcome: Outcome | None = None  # None only while being admitted, or with `photo`
    state_read: bool = False  # admission counted the request and looked for first contact
    first_contact: bool = False
    photo: bool = False  # admission found a photo session: decide again with it
    claimed: bool = False  # queued with the slow-path claim taken: acknowledge at once


class Core:
    """Turns events into outcomes; one per web process."""

    def __init__(
        self, settings: Settings, r: redis.Redis, waiter: redis.Redis | None = None
    ) -> None:
        self.settings = settings
        self.r = r
        self.waiter = waiter or r  # the blocking wait for a hand-over (bot/web/app.py `connect`)
        self.sessions = Sessions(r, settings.session_ttl_s, settings.kept_ttl_s)
        self.ops = Operations(settings, r)
        self.guard = guard_from_settings(settings)
        self.photos = photo_store_from_settings(settings)
        self.conversations = conversation.Conversations(r, self.photos, settings.photo_ttl_s)
        self.desk = conversation.PhotoDesk(settings, self.guard, self.photos, self.conversations)
        self.drawing = drawing.Drawing(settings, r, self.sessions)
        self._queues: dict[tuple[str, bool], Queue] = {}

    def queue(self, name: str, held: bool = False) -> Queue:
        """The rq queue of a model family (JSON serializer: jobs are plain JSON). `held`: the
        same queue for admission's MULTI, whose script pushes the jobs it admits."""
        if (name, held) not in self._queues:
            kind = admission.HeldQueue if held else Queue
            self._queues[name, held] = kind(name, connection=self.r, serializer=JSONSerializer)
        return self._queues[name, held]

    # The pipeline -------------------------------------------------------------------------------
    def handle(self, event: Event) -> Outcome:
        """Answer one message; a new user's first answer carries the notice.

        A prompt from a user without a photo session is the common message. It is decided
        before the user's state is read (UNREAD): admission reads that state in the round trip
        that queues the job. When the user turns out to have a photo session, the message is
        decided once more, with the state read.
        """
        prompt = self._prompt_unread(event)
        if prompt is not None:
            return self._handle(event, UNREAD, prompt)
        return self._handle(event, self.read_state(event))

    def _handle(self, event: Event, state: UserState, action: Action | None = None) -> Outcome:
        """Decide (unless the fast path has), plan, admit and enqueue, wait, answer."""
        # 1. Decide the action.
        action = action or self.decide(event, state)
        if action.name in KEPT_FIRST:
            kept = self._kept_first(event)
            if kept is not None:
                return self._noticed(kept, state.first_contact, event.lang)
        # 2. The action's handler: a request to queue, or a reply.
        planned = self.plan(event, action, state)
        if isinstance(planned, Reply):
            if not state.read:  # the answer may carry the notice: read the state now
                state = self.read_state(event)
                if state.photo is not None:  # with a photo the same words may be a question
                    return self._handle(event, state)
            return self._noticed(_reply(planned, event), state.first_contact, event.lang)
        # 3. Admit and enqueue, wait briefly, answer.
        admitted = self._submit(event, planned, first_look=not state.read)
        if admitted.photo:  # the user has a photo session after all: decide again with it
            return self._handle(event, self.read_state(event))
        assert admitted.outcome is not None
        first_contact = state.first_contact or admitted.first_contact
        if not state.read and not admitted.state_read:  # refused before admission read it
            first_contact = self.read_state(event).first_contact
        return self._noticed(admitted.outcome, first_contact, event.lang)

    def read_state(self, event: Event) -> UserState:
        """The user's state this message needs, and the request count, in one round trip."""
        m, u = event.messenger, event.user
        with self.r.pipeline(transaction=False) as pipe:
            pipe.get(keys.photo_session(m, event.room))  # the chat's; the rest is the person's
            pipe.get(keys.seed_pin(m, u))
            pipe.set(keys.seen_user(m, u), "1", nx=True, ex=self.settings.session_ttl_s)
            metrics.inc(pipe, "requests", messenger=m)
            photo, pin, first, _ = pipe.execute(raise_on_error=False)
        if isinstance(photo, Exception) or isinstance(pin, Exception):
            raise photo if isinstance(photo, Exception) else pin
        session = conversation.PhotoSession.from_json(photo) if photo else None
        return UserState(session, pin if isinstance(pin, bytes) else None, first is True)

    def _prompt_unread(self, event: Event) -> Action | None:
        """The DRAW action of a text that is a prompt when the user has no photo session (the
        fast path), decided once; None for any other message."""
        if event.image_urls or event.text.startswith("/"):
            return None
        action = intents.decide(event.text, has_photo=False)
        return action if action.name == ActionName.DRAW else None

    def decide(self, event: Event, state: UserState) -> Action:
        """What the message asks for (UNREAD: as if the user had no photo session)."""
        if event.image_urls:
            return Action(ActionName.PHOTOS)
        if event.command == "draw" and event.text:  # `/draw <prompt>`: a prompt, whatever it says
            return Action(ActionName.DRAW, event.text)
        if self.ops.is_command(event):
            return Action(ActionName.ADMIN, event.text)
        photo = state.photo
        followup = photo is not None and photo.in_followup(
            event.received_at, self.settings.photo_followup_s
        )
        return intents.decide(event.text, has_photo=photo is not None, followup=followup)

    def plan(self, event: Event, action: Action, state: UserState) -> Planned:
        """The action's handler: a request to queue, or a reply. Handlers never call the core.
        A message read one way of two carries one quick reply that does the other."""
        planned = self._plan(event, action, state)
        return self._offer_other(event, action, planned) if action.other else planned

    def _plan(self, event: Event, action: Action, state: UserState) -> Planned:
        name, lang = action.name, event.lang
        if name in DRAWING or name in (ActionName.REDRAW, ActionName.STORYBOOK):
            photo = drawing.photo_id(state.photo)
            return self.drawing.plan(event, action, photo, state.seed_pin, not state.read)
        if name == ActionName.ASK and state.photo is not None:
            return self.desk.ask(event, action.text, state.photo)
        if name == ActionName.PHOTOS:
            return self.desk.photos_in(event)
        if name == ActionName.ADMIN:
            return self.ops.command(event) or _help(self.desk, lang)
        if name == ActionName.RESULTS:
            return self._results(event)
        if name == ActionName.CANCEL:
            return self.cancel(event)
        if name == ActionName.FORGET:
            return self.desk.forget(event)
        if name == ActionName.NEW_PHOTO:
            return self.desk.start_over(event)
        if name == ActionName.PHOTO_HINT:
            return conversation.hint(event)
        if name == ActionName.WELCOME:
            return Reply((Text(say("welcome", lang)),), help_quick_replies(lang))
        if name == ActionName.SMALL_TALK:
            return conversation.small_talk(event, state.photo is not None)
        if name in (ActionName.DRAW_INSTEAD, ActionName.ASK_INSTEAD):
            return self._instead(event, action, state)
        return _help(self.desk, lang)  # HELP, and ASK without a photo session (cannot happen)

    # The other reading of an ambiguous message ---------------------------------------------------
    def _offer_other(self, event: Event, action: Action, planned: Planned) -> Planned:
        """Keep the other reading behind its fixed quick-reply label (a tap sends the label as
        text), and attach that quick reply: to the reply now, or to the worker's answer."""
        assert action.other is not None
        kept = json.dumps({"action": str(action.other), "text": action.text}, ensure_ascii=False)
        self.r.set(keys.other_reading(event.messenger, event.user), kept, ex=OTHER_READING_TTL_S)
        label = say(
            "quick_draw_instead" if action.other == ActionName.DRAW else "quick_ask_instead",
            event.lang,
        )
        offer = QuickReply(label, label)
        if isinstance(planned, Reply):
            rest = tuple(q for q in planned.quick_replies if q != offer)
            return dataclasses.replace(planned, quick_replies=(offer, *rest))
        return dataclasses.replace(planned, quick_replies=(offer, *planned.quick_replies))

    def _instead(self, event: Event, action: Action, state: UserState) -> Planned:
        """`이 문장으로 그리기` / `사진에 대해 묻기`: the kept message, read the other way."""
        wanted = ActionName.DRAW if action.name == ActionName.DRAW_INSTEAD else ActionName.ASK
        raw = self.r.get(keys.other_reading(event.messenger, event.user))
        kept = json.loads(raw) if raw else {}
        if kept.get("action") != str(wanted) or not kept.get("text"):
            return Reply((Text(say("other_gone", event.lang)),), help_quick_replies(event.lang))
        if wanted == ActionName.ASK and state.photo is None:
            return Reply((Text(say("photo_gone", event.lang)),), help_quick_replies(event.lang))
        return self._plan(event, Action(wanted, str(kept["text"])), state)

    def photo_in(self, event: Event, fetch: conversation.Fetch, ref: str) -> Outcome:
        """A photo or clip whose bytes a push messenger's adapter fetches (`fetch(max_bytes,
        deadline)`), its caption a question at once; what does not arrive within
        PHOTO_FETCH_BUDGET_S goes to the worker by `ref` (conversation.PhotoDesk.bytes_in)."""
        planned = self.desk.bytes_in(event, fetch, ref)
        if isinstance(planned, Reply):
            outcome = _reply(planned, event)
        else:
            outcome = self._submit(event, planned).outcome or Outcome()
        first = self.sessions.first_contact(event.messenger, event.user)
        return self._noticed(outcome, first, event.lang)

    def submit(self, event: Event, request: Request, task: str = "draw") -> Outcome:
        """Queue a job for the user unless one is already in flight, then wait briefly."""
        outcome = self._submit(event, ToQueue(request, task)).outcome
        assert outcome is not None  # only a first look can find a photo session
        return outcome

    def _noticed(self, outcome: Outcome, first_contact: bool, lang: str) -> Outcome:
        """A new user's first answer carries the notice."""
        if first_contact:
            return drawing.with_notice(outcome, self.drawing.notice(lang))
        return outcome

    # Handlers the core keeps: kept results and cancelling -------------------------------------
    def _results(self, event: Event) -> Reply:
        reply, remaining = self.sessions.take_kept(event.messenger, event.user)
        if reply is None:
            return Reply((Text(say("nothing_kept", event.lang)),), help_quick_replies(event.lang))
        note = say("kept_note_plain", event.lang)
        if remaining:
            note += " " + say("kept_more", event.lang, n=remaining)
        extra = (quick("quick_result", event.lang),) if remaining else ()
        return reply.with_prefix(note, extra)

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
        pull = min(s.pull_deadline_s, s.kept_ttl_s)
        if not event.waits:
            return s.pull_deadline_s if event.callback_url else pull
        return s.callback_deadline_s if event.callback_url else pull

    # Admit and enqueue --------------------------------------------------------------------------
    def _submit(self, event: Event, planned: ToQueue, first_look: bool = False) -> Admitted:
        """Admit and enqueue (one round trip), then wait briefly and answer.

        `first_look`: the user's state was not read; admission reads it (Admitted says what it
        found). A request queued without the user's slot (`hold_slot=False`) skips admission."""
        s = self.settings
        request, task = planned.request, planned.task
        deferred = request.seed == drawing.DEFERRED_SEED
        if deferred:  # our own choice, unless admission finds a seed the user pinned
            request = dataclasses.replace(request, seed=new_seed())
        life = self._life(event)
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
            chat=event.chat if event.in_group else "",
            reply_to_message=event.reply_to_message,
            meta={"extra_quick": [[q.label, q.message] for q in planned.quick_replies]}
            if planned.quick_replies
            else {},
        )
        # When there is no time left to wait, or the job cannot be done before the wait ends,
        # the slow-path claim is taken with the enqueue, in the same transaction, so the worker
        # cannot finish in between: the user is acknowledged at once.
        wait_s = event.received_at + self._sync_wait(event) - time.time()
        operator = self.ops.is_operator(event)
        if not planned.hold_slot:
            claim_now = wait_s < 0.01
            reply = self._enqueue_unadmitted(event, job, operator, claim_now)
            admitted = Admitted()
        else:
            admitted, job = self._admit(event, job, life, operator, first_look, deferred, wait_s)
            if admitted.photo or admitted.outcome is not None:
                return admitted  # a photo session was found, or refused or served otherwise
            claim_now = admitted.claimed
            reply = None  # the claim was taken at admission: the worker cannot be done yet
        log.info("enqueued", extra={"queue": job.queue, "task": task})
        outcome = self.answer(event, reply, job) if claim_now else self.wait(event, job)
        return dataclasses.replace(admitted, outcome=outcome)

    def _enqueue_unadmitted(
        self, event: Event, job: Job, operator: bool, claim_now: bool
    ) -> Reply | None:
        """Queue without admission (no slot, no limits); the claim with it when due."""
        with self.r.pipeline() as pipe:
            self._enqueue(pipe, job, at_front=operator)
            if claim_now:
                handover.webhook_claim(
                    pipe, event.request_id, _slow_path(event), self.settings.record_ttl_s
                )
            results = pipe.execute()
        return handover.claimed(results[-1]) if claim_now else None

    def _enqueue(
        self, pipe: redis.client.Pipeline, job: Job, at_front: bool, held: bool = False
    ) -> None:
        """rq's enqueue, into the caller's MULTI (`held`: admission's, whose script pushes)."""
        self.queue(job.queue, held).enqueue_call(
            job.function,
            args=(job.to_dict(),),
            job_id=job.request_id,
            timeout=self.settings.job_timeout_s,
            result_ttl=self.settings.record_ttl_s,
            failure_ttl=86400,
            description=f"{job.task} {job.request_id}",
            pipeline=pipe,
            at_front=at_front,
        )

    def _admit(
        self,
        event: Event,
        job: Job,
        life: float,
        operator: bool,
        first_look: bool,
        deferred: bool,
        wait_s: float,
    ) -> tuple[Admitted, Job]:
        """Admission (bot/core/admission.py), which also queues the job.

        Returns Admitted with no outcome when the job is queued (or, on a first look, when the
        user has a photo session), else with the answer; and the job as finally written."""
        s, lang = self.settings, event.lang
        if self.ops.is_blocked_by_settings(event):
            return Admitted(self._refuse(event, "blocked", say("user_blocked", lang))), job
        maintenance = self.ops.maintenance()
        if maintenance and not operator:
            return Admitted(self._refuse(event, "maintenance", maintenance)), job
        workers = self.ops.workers(job.queue)
        if not workers:  # the user's previous job may have died with the last worker
            lost = self._lost_job(event, slots.holder(self.r, event.messenger, event.user))
            return Admitted(lost or self._refuse(event, "no_worker", say("no_worker", lang))), job
        limits = admission.Limits(
            rate_window_s=s.rate_window_s,
            rate_limit=s.rate_limit,
            daily_quota=s.daily_quota,
            dedupe_ttl_s=s.dedupe_s,
            default_service_s=s.default_service_s,
            check_limits=not operator,
            at_front=operator,
        )
        quota_day = time.strftime("%Y%m%d", time.gmtime())
        meta = {**job.meta, "quota_day": quota_day}
        if job.request.scenes:
            meta["pictures"] = len(job.request.scenes)
        job = dataclasses.replace(job, meta=meta)
        ticket = admission.Ticket(
            messenger=event.messenger,
            user=event.user,
            text=event.text or job.task,
            request_id=event.request_id,
            queue_key=self.queue(job.queue).key,
            service_field=admission.service_field(job.queue, job.preset),
            workers=workers,
            budget_s=event.received_at + life - time.time() - 1.0,
            slot_ttl_s=int(life + s.job_timeout_s + 60),
            quota_day=quota_day,
            job_key=RqJob.key_for(job.request_id),
            save_job=self._saver(job, operator),  # written again when the job is rewritten
            prompt=self._prompt_record(event, job),
            claim=handover.claim_record(event.request_id, _slow_path(event), s.record_ttl_s),
            claim_over_s=-1.0 if wait_s < 0.01 else wait_s + ESTIMATE_MARGIN_S,
            first_look=first_look,
            seen_ttl_s=s.session_ttl_s,
            deferred_seed=deferred,
            chat=event.room,
            pictures=len(job.request.scenes) or 1,
            min_pictures=min(storybook.MIN_SCENES, len(job.request.scenes)) or 1,
            **self._shared_workers(job.queue),
        )
        seen = Admitted()
        for _ in range(MAX_ADMISSION_TRIES):
            decision = admission.admit(self.r, ticket, limits)
            if ticket.first_look:  # admission read the user's state this once
                seen = Admitted(state_read=True, first_contact=decision.first_contact)
                ticket = dataclasses.replace(ticket, first_look=False)
            if decision.pin is not None:  # the pin is for this prompt: deleted when admitted
                ticket = dataclasses.replace(ticket, take_pin=True, deferred_seed=False)
            if decision.status == Status.ADMITTED:
                meta = {
                    **job.meta,
                    "ahead": decision.ahead,
                    "estimate_s": round(decision.estimate_s, 2),
                }
                return dataclasses.replace(seen, claimed=decision.claimed), dataclasses.replace(
                    job, meta=meta
                )
            if decision.status == Status.PHOTO:  # decide again, the long way, with the photo
                return Admitted(photo=True), job
            if decision.status == Status.PINNED and decision.pin is not None:
                # The user kept a seed with `같은 시드로`: write the job again with it.
                job = dataclasses.replace(
                    job, request=dataclasses.replace(job.request, seed=decision.pin)
                )
                ticket = self._rewritten(ticket, event, job, operator)
                continue
            if decision.status == Status.SHORTER and decision.count < ticket.pictures:
                # A storybook that fits its deadline with scenes dropped from its end.
                scenes = job.request.scenes[: decision.count]
                dropped = len(job.request.scenes) - decision.count + int(job.meta.get("dropped", 0))
                job = dataclasses.replace(
                    job,
                    request=dataclasses.replace(job.request, scenes=scenes),
                    meta={**job.meta, "pictures": decision.count, "dropped": dropped},
                )
                ticket = self._rewritten(ticket, event, job, operator)
                ticket = dataclasses.replace(ticket, pictures=decision.count)
                continue
            if decision.status == Status.KEPT:
                kept = self._kept_first(event)  # kept results go first
                if kept is not None:
                    return dataclasses.replace(seen, outcome=kept), job
                continue  # another request of the user's took them meanwhile
            if decision.status == Status.BUSY and decision.holder:
                lost = self._lost_job(event, decision.holder)
                if lost is not None:
                    return dataclasses.replace(seen, outcome=lost), job
                if slots.holder(self.r, event.messenger, event.user) != decision.holder:
                    continue  # the slot was freed meanwhile
            if decision.status == Status.QUOTA and ticket.pictures > 1:
                left = max(0, s.daily_quota - decision.count)
                text = say("book_quota", lang, n=ticket.pictures, left=left)
                return dataclasses.replace(seen, outcome=self._refuse(event, "quota", text)), job
            return dataclasses.replace(seen, outcome=self._refusal(event, decision)), job
        return dataclasses.replace(seen, outcome=self._refusal(event, decision)), job

    def _shared_workers(self, queue: str) -> dict[str, Any]:
        """The other queue, for the estimate, when workers serve both (one process, two models)."""
        other = VISION_LANGUAGE_QUEUE if queue == TEXT_TO_IMAGE_QUEUE else TEXT_TO_IMAGE_QUEUE
        shared = self.ops.shared(queue, other)
        if not shared:
            return {}
        s = self.settings
        preset = s.vlm_preset if other == VISION_LANGUAGE_QUEUE else s.preset
        return {
            "other_queue_key": self.queue(other).key,
            "shared": shared,
            "other_field": admission.service_field(other, preset),
        }

    def _saver(self, job: Job, operator: bool) -> Callable[[redis.client.Pipeline], None]:
        """rq's enqueue of this job, for admission to run in its MULTI."""
        return lambda pipe: self._enqueue(pipe, job, operator, held=True)

    def _prompt_record(self, event: Event, job: Job) -> tuple[str, str, int] | None:
        """The last prompt (`다시 그리기`) that admitting a drawing writes."""
        if job.task not in ("draw", "storybook"):
            return None
        return self.sessions.prompt_record(event.messenger, event.user, dict(vars(job.request)))

    def _rewritten(
        self, ticket: admission.Ticket, event: Event, job: Job, operator: bool
    ) -> admission.Ticket:
        """The ticket for a job written again (a pinned seed, a shorter book)."""
        return dataclasses.replace(
            ticket, save_job=self._saver(job, operator), prompt=self._prompt_record(event, job)
        )

    def _refusal(self, event: Event, decision: admission.Decision) -> Outcome:
        lang, s = event.lang, self.settings
        texts = {
            Status.DUPLICATE: say("duplicate", lang),
            Status.RATE: say("rate_limited", lang, seconds=int(decision.retry_after_s) or 1),
            Status.QUOTA: say("quota_reached", lang, n=s.daily_quota),
            Status.BUSY: say("busy_slot", lang),
            Status.TOO_SLOW: say(
                "too_slow", lang, when=admission.retry_phrase(decision.retry_after_s, lang)
            ),
            Status.BLOCKED: say("user_blocked", lang),
        }
        return self._refuse(
            event, decision.name, texts.get(decision.status, say("busy_slot", lang))
        )

    def _lost_job(self, event: Event, holder: str | None) -> Outcome | None:
        """The job holding the user's slot lost its worker: retried (the user is still busy),
        else its answer or an apology now. None when it did not (or another process saw to it)."""
        owner = recovery.dead_owner(self.r, holder) if holder else None
        lost = (
            recovery.recover(self.r, holder, owner, self.settings.default_service_s)
            if holder and owner
            else None
        )
        if lost is None:
            return None
        if lost.how == recovery.RETRIED:
            return self._refuse(event, "busy", say("busy_slot", event.lang))
        if lost.reply is not None:
            self.sessions.keep(event.messenger, event.user, lost.reply)
        elif lost.how == recovery.FAILED:
            self.sessions.keep(event.messenger, event.user, recovery.lost_reply(lost.job))
        return self._kept_first(event)

    def _refuse(self, event: Event, reason: str, text: str) -> Outcome:
        log.info("refused", extra={"reason": reason})
        metrics.refused(self.r, reason)
        return _reply(Reply((Text(text),), kind="busy"), event)

    def cancel(self, event: Event) -> Reply:
        """`취소`: a queued job is removed; a running one finishes but its result is dropped."""
        lang = event.lang
        holder = slots.holder(self.r, event.messenger, event.user)
        if not holder:
            return Reply((Text(say("nothing_to_cancel", lang)),))
        self.r.set(keys.dropped(holder), "1", ex=3600)
        try:
            rq_job = RqJob.fetch(holder, connection=self.r, serializer=JSONSerializer)
            queued = rq_job.get_status() == JobStatus.QUEUED
            if queued:
                rq_job.cancel()
            meta = (rq_job.args[0].get("meta") or {}) if rq_job.args else {}
            day, pictures = meta.get("quota_day", ""), int(meta.get("pictures", 1))
        except NoSuchJobError:
            queued, day, pictures = True, "", 1
        slots.release(self.r, event.messenger, event.user, holder)
        if queued:
            admission.refund(self.r, event.messenger, event.user, holder, day, pictures)
        log.info("cancelled", extra={"job": holder, "queued": queued})
        text = say("cancelled" if queued else "cancelled_running", lang)
        return Reply((Text(text),), help_quick_replies(lang))

    # Wait and answer ----------------------------------------------------------------------------
    def wait(self, event: Event, job: Job) -> Outcome:
        """Wait for a direct answer until the budget ends, then take the slow path."""
        budget = event.received_at + self._sync_wait(event) - time.time()
        reply = handover.webhook_wait(
            self.r,
            event.request_id,
            budget,
            _slow_path(event),
            self.settings.record_ttl_s,
            waiter=self.waiter,
        )
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


def _reply(reply: Reply, event: Event) -> Outcome:
    return Outcome(reply=reply, request_id=event.request_id)


def _help(desk: conversation.PhotoDesk, lang: str) -> Reply:
    """The help text (one bubble), with the help quick replies."""
    return Reply((desk.help_text(lang),), help_quick_replies(lang))
