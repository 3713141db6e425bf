"""Admission: who may queue a job now, and an honest estimate of when it will be done.

One Lua script (admission.lua beside this file) decides atomically: kept results first,
duplicates, the per-user rate limit and daily quota, the per-user slot, and whether the
estimated wait fits the reply's deadline. Nothing is counted unless the job is admitted, and a
refused estimate leaves no slot behind. The estimate is the job's place in its queue, divided
among the live workers, times a moving average of recent service times that the workers keep in
Redis; when some of those workers also serve the other queue (one process, both models, taking
jobs in turn), the other queue's jobs they take before this one are added.

The same round trip queues the job: rq writes its job hash in a MULTI as always, through a
HeldQueue that leaves the push of the job's id to the script; the script, last in that MULTI,
pushes the id when it admits and deletes the hash when it refuses. What this relies on of rq is
that it writes the hash inside the caller's pipeline and pushes through `Queue.push_job_id`,
which a test checks.

The script goes by EVALSHA (sending its 7 KB text each time cost about 85 us of CPU per request,
packing and hashing: some 4 % of the webhook's work). Redis forgets scripts when it restarts:
then the EVALSHA fails inside the MULTI, nothing was pushed, so no worker can have seen the job;
the hash is deleted, the script loaded and the attempt made again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError
from rq import Queue

from bot.core import keys, metrics, slots

SCRIPT = (Path(__file__).with_name("admission.lua")).read_text()
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()  # what Redis names it once loaded


class HeldQueue(Queue):
    """rq's queue for admission's MULTI: rq writes the job hash as always, and the push of the
    job's id is left to admission.lua, which pushes only what it admits."""

    def push_job_id(
        self, job_id: str, pipeline: Pipeline | None = None, at_front: bool = False
    ) -> None:
        """Nothing: admission.lua pushes the job when it admits it (enqueue only through
        admission, in its MULTI)."""


class Status(IntEnum):
    """What admission decided; admission.lua numbers them the same (a test checks)."""

    KEPT = 0  # results are kept for the user: they go first
    DUPLICATE = 1  # the same text within the dedupe window
    RATE = 2  # too many requests in the rate window
    QUOTA = 3  # the daily quota is used up
    BUSY = 4  # the user has a job in flight
    TOO_SLOW = 5  # the estimated wait does not fit the reply's deadline
    ADMITTED = 6
    BLOCKED = 7  # on the operators' block list
    PHOTO = 8  # first look: the user has a photo session; decide again with it
    PINNED = 9  # first look: the user kept a seed; write the job again with it
    SHORTER = 10  # a storybook of this many pictures fits the deadline: write it again shorter


@dataclass(frozen=True)
class Call:
    """The script's inputs. Fields up to `claim_key` are KEYS, the rest ARGV, in this order,
    which is the order of the locals at the top of admission.lua (a test checks)."""

    kept_key: str
    dedupe_key: str
    rate_key: str
    quota_key: str
    slot_key: str
    queue_key: str
    service_key: str
    blocked_key: str
    photo_key: str
    pin_key: str
    seen_key: str
    metric_key: str
    job_key: str
    prompt_key: str
    claim_key: str
    other_queue_key: str
    request_id: str
    slot_ttl: int
    now: float
    rate_window: float
    rate_limit: int
    quota_limit: int
    dedupe_ttl: int
    service_field: str
    default_service: float
    workers: int
    budget: float
    check_limits: bool
    at_front: bool
    member: str
    first_look: bool
    seen_ttl: int
    metric_field: str
    prompt_json: str
    prompt_ttl: int
    claim_value: str
    claim_ttl: int
    deferred_seed: bool
    take_pin: bool
    claim_over: float
    pictures: int
    min_pictures: int
    other_field: str
    shared: int

    def keys(self) -> list[str]:
        """KEYS, in order."""
        return [getattr(self, name) for name in _CALL_FIELDS[:KEY_COUNT]]

    def argv(self) -> list[str]:
        """ARGV, in order: flags as '1'/'0', numbers as text."""
        return [_arg(getattr(self, name)) for name in _CALL_FIELDS[KEY_COUNT:]]


KEY_COUNT = 16  # Call's first fields are keys
_CALL_FIELDS = tuple(f.name for f in dataclasses.fields(Call))


def _arg(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


@dataclass(frozen=True)
class Limits:
    """The admission rules in force for one request."""

    rate_window_s: float
    rate_limit: int
    daily_quota: int  # 0: none
    dedupe_ttl_s: int
    default_service_s: float
    check_limits: bool = True  # operators skip rate and quota
    at_front: bool = False  # operators go to the front of the queue


@dataclass(frozen=True)
class Ticket:
    """What one admission attempt needs besides the limits: who, what, where, and what an
    admitted request writes with its admission (last prompt, hand-over claim)."""

    messenger: str
    user: str
    text: str  # what the dedupe window compares
    request_id: str
    queue_key: str
    service_field: str
    workers: int
    budget_s: float
    slot_ttl_s: int
    quota_day: str  # the UTC day the job counts against
    job_key: str  # rq's job hash
    save_job: Callable[[Pipeline], object]  # rq's enqueue into the MULTI, by a HeldQueue
    prompt: tuple[str, str, int] | None = None  # last prompt: key, JSON, TTL
    claim: tuple[str, str, int] | None = None  # hand-over claim: key, value, TTL
    claim_over_s: float = -1.0  # the claim is taken when the estimate passes this
    first_look: bool = False  # also read the user's state (the webhook's fast path)
    seen_ttl_s: int = 86400
    deferred_seed: bool = False  # a seed of our own choosing: a pinned seed wins (PINNED)
    take_pin: bool = False  # the job carries the pinned seed: delete the pin when admitted
    chat: str = ""  # where the person wrote (a group): its photo session; empty: their own
    pictures: int = 1  # a storybook counts as its pictures against the quota, one batched job
    min_pictures: int = 1  # a book may be shortened to this many to fit its deadline
    # Workers serving this queue and another one (one process, both models): the estimate
    # counts the other queue's jobs those workers take in turn (round-robin dequeue).
    other_queue_key: str = ""
    other_field: str = ""  # the other queue's service-time field
    shared: int = 0

    def call(self, limits: Limits, now: float) -> Call:
        """The script's inputs for this attempt: built here, and only here."""
        m, u = self.messenger, self.user
        return Call(
            kept_key=keys.kept(m, u),
            dedupe_key=dedupe_key(m, u, self.text),
            rate_key=keys.user("rate", m, u),
            quota_key=quota_key(m, u, self.quota_day),
            slot_key=keys.slot(m, u),
            queue_key=self.queue_key,
            service_key=keys.SERVICE_TIMES,
            blocked_key=keys.BLOCKED,
            photo_key=keys.photo_session(m, self.chat or u),
            pin_key=keys.seed_pin(m, u),
            seen_key=keys.seen_user(m, u),
            metric_key=metrics.key("requests"),
            job_key=self.job_key,
            prompt_key=self.prompt[0] if self.prompt else keys.last_prompt(m, u),
            claim_key=self.claim[0] if self.claim else keys.claim(self.request_id),
            other_queue_key=self.other_queue_key or self.queue_key,
            request_id=self.request_id,
            slot_ttl=max(1, self.slot_ttl_s),
            now=now,
            rate_window=limits.rate_window_s,
            rate_limit=limits.rate_limit,
            quota_limit=limits.daily_quota,
            dedupe_ttl=limits.dedupe_ttl_s,
            service_field=self.service_field,
            default_service=limits.default_service_s,
            workers=self.workers,
            budget=self.budget_s,
            check_limits=limits.check_limits,
            at_front=limits.at_front,
            member=f"{m}:{u}",
            first_look=self.first_look,
            seen_ttl=self.seen_ttl_s,
            metric_field=metrics.request_field(m),
            prompt_json=self.prompt[1] if self.prompt else "",
            prompt_ttl=self.prompt[2] if self.prompt else 0,
            claim_value=self.claim[1] if self.claim else "",
            claim_ttl=self.claim[2] if self.claim else 0,
            deferred_seed=self.deferred_seed,
            take_pin=self.take_pin,
            claim_over=self.claim_over_s,
            pictures=max(1, self.pictures),
            min_pictures=max(1, min(self.min_pictures, self.pictures)),
            other_field=self.other_field or self.service_field,
            shared=self.shared if self.other_queue_key else 0,
        )


@dataclass(frozen=True)
class Decision:
    """The outcome of one attempt, and what the user should hear about it."""

    status: Status
    ahead: int = 0  # jobs in front of this one
    estimate_s: float = 0.0  # expected seconds until done
    retry_after_s: float = 0.0  # for rate and too_slow refusals
    holder: str = ""  # the request holding the slot, or the duplicate's request id
    count: int = 0  # kept results waiting, or the quota used
    pin: int | None = None  # first look: the seed `같은 시드로` kept
    first_contact: bool = False  # first look: this is the first message seen from the user
    claimed: bool = False  # admitted with the slow-path claim taken: acknowledge at once

    @property
    def name(self) -> str:
        return self.status.name.lower()


def dedupe_key(messenger: str, user: str, text: str) -> str:
    """Identical requests from one user within the dedupe window share this key."""
    digest = hashlib.sha256(" ".join(text.split()).lower().encode()).hexdigest()[:24]
    return keys.user("dedupe", messenger, user) + ":" + digest


def quota_key(messenger: str, user: str, day: str | None = None) -> str:
    """The user's daily counter (UTC day)."""
    day = day or time.strftime("%Y%m%d", time.gmtime())
    return keys.user("quota", messenger, user) + ":" + day


def admit(r: redis.Redis, ticket: Ticket, limits: Limits) -> Decision:
    """One attempt: decide atomically whether this request is queued, and queue it if so.

    One round trip: rq's enqueue and the script in one MULTI."""
    call = ticket.call(limits, time.time())
    try:
        status, value, pin, fresh = _run(r, ticket, call)
    except _SavedBadly as exc:  # admitted, but rq's job hash is not whole: take it all back
        r.lrem(call.queue_key, 0, call.request_id)
        r.delete(call.job_key)
        slots.release(r, ticket.messenger, ticket.user, call.request_id)
        refund(r, ticket.messenger, ticket.user, call.request_id, ticket.quota_day)
        raise exc.error from None
    text = keys.as_text(value) if isinstance(value, bytes | str) else str(value)
    pin_text = keys.as_text(pin) if isinstance(pin, bytes | str) else ""
    found = Decision(
        Status(int(status)),
        pin=int(pin_text) if pin_text.isdigit() else None,
        first_contact=bool(fresh),
    )
    if found.status == Status.ADMITTED:
        ahead, estimate, claimed = text.split(":")
        return dataclasses.replace(
            found, ahead=int(ahead), estimate_s=float(estimate), claimed=claimed == "1"
        )
    if found.status == Status.KEPT:
        return dataclasses.replace(found, count=int(text))
    if found.status == Status.RATE:
        return dataclasses.replace(found, retry_after_s=float(text))
    if found.status == Status.SHORTER:
        return dataclasses.replace(found, count=int(text))
    if found.status == Status.QUOTA:
        return dataclasses.replace(found, count=int(float(text)))
    if found.status == Status.TOO_SLOW:
        retry = max(30.0, float(text) - ticket.budget_s)
        return dataclasses.replace(found, estimate_s=float(text), retry_after_s=retry)
    return dataclasses.replace(found, holder=text)


def _run(r: redis.Redis, ticket: Ticket, call: Call) -> Any:
    """rq's job hash and the admission script in one MULTI (one round trip); the script pushes
    the job when it admits."""
    results = _transaction(r, ticket, call)
    if isinstance(results[-1], NoScriptError):  # Redis restarted: nothing was pushed
        r.delete(call.job_key)
        r.script_load(SCRIPT)
        results = _transaction(r, ticket, call)
    outcome = results[-1]
    if isinstance(outcome, Exception):  # the script failed: nothing was pushed
        r.delete(call.job_key)
        raise outcome
    failed = next((x for x in results[:-1] if isinstance(x, Exception)), None)
    if failed is not None:
        if int(outcome[0]) == Status.ADMITTED:
            raise _SavedBadly(failed)
        raise failed
    return outcome


def _transaction(r: redis.Redis, ticket: Ticket, call: Call) -> list[Any]:
    with r.pipeline(transaction=True) as pipe:
        ticket.save_job(pipe)
        pipe.evalsha(SCRIPT_SHA, KEY_COUNT, *call.keys(), *call.argv())
        return pipe.execute(raise_on_error=False)


class _SavedBadly(Exception):
    """The script admitted and pushed a job whose save failed in the same MULTI."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def refund(
    r: redis.Redis, messenger: str, user: str, request_id: str, day: str, pictures: int = 1
) -> None:
    """Give back what an admitted job counted (a storybook: its pictures), when it is cancelled
    or never ran."""
    with r.pipeline() as pipe:
        pipe.zrem(keys.user("rate", messenger, user), request_id)
        pipe.eval(
            "local n = tonumber(redis.call('GET', KEYS[1]) or '0') "
            "local back = math.min(n, tonumber(ARGV[1])) "
            "if back > 0 then return redis.call('DECRBY', KEYS[1], back) end return 0",
            1,
            quota_key(messenger, user, day),
            max(1, pictures),
        )
        pipe.execute()


def record_service_time(r: redis.Redis, field: str, seconds: float, alpha: float = 0.3) -> None:
    """Fold one job's service time into the moving average the estimate reads."""
    r.eval(
        "local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or ARGV[2]) "
        "redis.call('HSET', KEYS[1], ARGV[1], tostring(old + tonumber(ARGV[3]) * "
        "(tonumber(ARGV[2]) - old))) return 1",
        1,
        keys.SERVICE_TIMES,
        field,
        f"{seconds:.6f}",
        alpha,
    )


def service_field(queue: str, preset: str) -> str:
    """The moving average's field: per queue and preset."""
    return f"{queue}:{preset}"


def batch_field(field: str, size: int) -> str:
    """The moving average of one batched call of `size` pictures (a storybook), beside the
    queue's per-job average `field`; admission.lua builds the same name."""
    return f"{field}:b{size}"


def retry_phrase(seconds: float, lang: str) -> str:
    """`약 2분` / `about 2 minutes`, rounded up."""
    minutes = max(1, math.ceil(seconds / 60))
    if lang == "en":
        return f"about {minutes} minute{'s' if minutes > 1 else ''}"
    return f"약 {minutes}분"


def describe(decision: Decision) -> str:
    """A compact form for logs."""
    return json.dumps(
        {
            "status": decision.name,
            "ahead": decision.ahead,
            "estimate_s": round(decision.estimate_s, 2),
        }
    )
