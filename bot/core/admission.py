"""Admission: who may queue a job now, and an honest estimate of when it will be done.

One Lua script decides atomically, in one round trip: kept results first, duplicates, the
per-user rate limit and daily quota, the per-user slot, and whether the estimated wait fits the
reply's deadline. Nothing is counted unless the job is admitted, and a refused estimate leaves
no slot behind. The estimate is the job's place in its queue, divided among the live workers,
times a moving average of recent service times that the workers keep in Redis.

The same round trip queues the job: rq saves the job hash in a MULTI, and the script, last in
that MULTI, pushes the job id when it admits and deletes the hash when it refuses.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline
from rq import Queue

from bot.core import keys, slots

KEPT, DUPLICATE, RATE, QUOTA, BUSY, TOO_SLOW, ADMITTED, BLOCKED, PHOTO, PINNED = range(10)
NAMES = ("kept", "duplicate", "rate", "quota", "busy", "too_slow", "admitted", "blocked", "photo",
         "pinned")
_SCRIPT: dict[str, str] = {}

_ADMIT = """
-- KEYS: kept, dedupe, rate, quota, slot, queue, svc, blocked, photo, pin, seen, metric,
--       job (rq's job hash), last prompt, claim
-- ARGV: rid, slot_ttl, now, rate_window, rate_limit, quota_limit, dedupe_ttl,
--       svc_field, default_svc, workers, budget, check_limits, at_front, member,
--       first_look, seen_ttl, metric_field, prompt_json, prompt_ttl, claim_value, claim_ttl,
--       deferred_seed, take_pin
-- rq saved the job hash earlier in the same MULTI, without pushing it: an admitted job is
-- pushed here; a refused one is deleted, so no worker ever sees it.
-- first_look = '1': the caller has not read the user's state yet (the webhook's fast path);
-- this call then also counts the request, marks first contact and reads the pinned seed.
local now = tonumber(ARGV[3])
local first = ARGV[15] == '1'
local function refuse(status, value, pin, fresh)
  redis.call('DEL', KEYS[13])
  return {status, value, pin, fresh}
end
if first and redis.call('EXISTS', KEYS[9]) == 1 then return refuse(8, '', '', 0) end
local pin, fresh = '', 0
if first then
  redis.call('HINCRBY', KEYS[12], ARGV[17], 1)
  if redis.call('SET', KEYS[11], '1', 'NX', 'EX', ARGV[16]) then fresh = 1 end
  pin = redis.call('GET', KEYS[10]) or ''
  -- the job carries a seed of its own choosing: the caller writes it again with the pinned one
  if pin ~= '' and ARGV[22] == '1' then return refuse(9, '', pin, fresh) end
end
if redis.call('SISMEMBER', KEYS[8], ARGV[14]) == 1 then return refuse(7, '', '', fresh) end
local kept = redis.call('LLEN', KEYS[1])
if kept > 0 then return refuse(0, kept, '', fresh) end
local dup = redis.call('GET', KEYS[2])
if dup then return refuse(1, dup, '', fresh) end
local limits = ARGV[12] == '1'
local rate_limit = tonumber(ARGV[5])
local quota_limit = tonumber(ARGV[6])
if limits and rate_limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]))
  if redis.call('ZCARD', KEYS[3]) >= rate_limit then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return refuse(2, tostring(math.ceil(tonumber(oldest[2]) + tonumber(ARGV[4]) - now)), '',
                  fresh)
  end
end
if limits and quota_limit > 0 then
  local used = tonumber(redis.call('GET', KEYS[4]) or '0')
  if used >= quota_limit then return refuse(3, tostring(used), '', fresh) end
end
if not redis.call('SET', KEYS[5], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return refuse(4, redis.call('GET', KEYS[5]), '', fresh)
end
local svc = tonumber(redis.call('HGET', KEYS[7], ARGV[8]) or ARGV[9])
local ahead = 0
if ARGV[13] ~= '1' then ahead = redis.call('LLEN', KEYS[6]) end
local workers = math.max(1, tonumber(ARGV[10]))
local estimate = (math.floor(ahead / workers) + 1) * svc
if estimate > tonumber(ARGV[11]) then
  redis.call('DEL', KEYS[5])
  return refuse(5, tostring(estimate), '', fresh)
end
if limits and rate_limit > 0 then
  redis.call('ZADD', KEYS[3], now, ARGV[1])
  redis.call('EXPIRE', KEYS[3], math.ceil(tonumber(ARGV[4])) + 1)
end
if limits and quota_limit > 0 then
  redis.call('INCR', KEYS[4])
  redis.call('EXPIRE', KEYS[4], 172800)
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[7])
if pin ~= '' or ARGV[23] == '1' then redis.call('DEL', KEYS[10]) end
if ARGV[13] == '1' then
  redis.call('LPUSH', KEYS[6], ARGV[1])
else
  redis.call('RPUSH', KEYS[6], ARGV[1])
end
if ARGV[18] ~= '' then redis.call('SET', KEYS[14], ARGV[18], 'EX', ARGV[19]) end
-- the slow-path claim of the hand-over (bot/core/handover.py), taken now when the webhook will not
-- wait: the job was pushed a moment ago, so no worker can have claimed it first
if ARGV[20] ~= '' then redis.call('SET', KEYS[15], ARGV[20], 'NX', 'EX', ARGV[21]) end
return {6, tostring(ahead) .. ':' .. tostring(estimate), pin, fresh}
"""


class HeldQueue(Queue):
    """rq's Queue, whose enqueue saves the job but leaves the push to the admission script.

    rq writes its job hash exactly as it always does, in the caller's MULTI; the script then
    pushes the job id only if the request is admitted, in the same transaction.
    """

    def push_job_id(self, job_id: str, pipeline: Pipeline | None = None,
                    at_front: bool = False) -> None:
        """The admission script pushes (or deletes) the job."""


@dataclass(frozen=True)
class Enqueue:
    """What an admitted request writes with its admission, in the same round trip."""

    save_job: Callable[[Pipeline], object]  # rq's job save on a HeldQueue, into the MULTI
    job_key: str  # rq's job hash, deleted when refused
    prompt: tuple[str, str, int] | None = None  # last prompt: key, JSON, TTL
    claim: tuple[str, str, int] | None = None  # hand-over claim: key, value, TTL
    quota_day: str | None = None  # the UTC day the job counts against (None: today)
    deferred_seed: bool = False  # a seed of our own choosing: a pinned seed wins (PINNED)
    take_pin: bool = False  # the job carries the pinned seed: delete the pin when admitted


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
class Decision:
    """The outcome: a status from NAMES, and what the user should hear about it."""

    status: int
    ahead: int = 0  # jobs in front of this one
    estimate_s: float = 0.0  # expected seconds until done
    retry_after_s: float = 0.0  # for rate and too_slow refusals
    holder: str = ""  # the request holding the slot, or the duplicate's request id
    count: int = 0  # kept results waiting, or the quota used
    pin: int | None = None  # first look: the seed `같은 시드로` kept, taken when admitted
    first_contact: bool = False  # first look: this is the first message seen from the user

    @property
    def name(self) -> str:
        return NAMES[self.status]


def dedupe_key(messenger: str, user: str, text: str) -> str:
    """Identical requests from one user within the dedupe window share this key."""
    digest = hashlib.sha256(" ".join(text.split()).lower().encode()).hexdigest()[:24]
    return keys.user("dedupe", messenger, user) + ":" + digest


def quota_key(messenger: str, user: str, day: str | None = None) -> str:
    """The user's daily counter (UTC day)."""
    day = day or time.strftime("%Y%m%d", time.gmtime())
    return keys.user("quota", messenger, user) + ":" + day


def admit(
    r: redis.Redis,
    *,
    messenger: str,
    user: str,
    text: str,
    request_id: str,
    queue_key: str,
    service_field: str,
    workers: int,
    budget_s: float,
    slot_ttl_s: int,
    limits: Limits,
    enqueue: Enqueue,
    first_look: bool = False,
    seen_ttl_s: int = 86400,
) -> Decision:
    """Decide in one atomic step whether this request is queued, and queue it if so.

    One round trip: rq's job save and this script in one MULTI."""
    from bot.core import metrics

    now = time.time()
    keys_ = (
        keys.kept(messenger, user), dedupe_key(messenger, user, text),
        keys.user("rate", messenger, user), quota_key(messenger, user, enqueue.quota_day),
        keys.slot(messenger, user), queue_key, keys.SERVICE_TIMES, keys.BLOCKED,
        keys.photo_session(messenger, user), keys.seed_pin(messenger, user),
        keys.seen_user(messenger, user), metrics.key("requests"), enqueue.job_key,
        enqueue.prompt[0] if enqueue.prompt else keys.last_prompt(messenger, user),
        enqueue.claim[0] if enqueue.claim else keys.claim(request_id),
    )
    args = (
        request_id, max(1, slot_ttl_s), f"{now:.6f}", limits.rate_window_s, limits.rate_limit,
        limits.daily_quota, limits.dedupe_ttl_s, service_field, limits.default_service_s,
        workers, f"{budget_s:.3f}", "1" if limits.check_limits else "0",
        "1" if limits.at_front else "0", f"{messenger}:{user}", "1" if first_look else "0",
        seen_ttl_s, metrics.request_field(messenger),
        enqueue.prompt[1] if enqueue.prompt else "", enqueue.prompt[2] if enqueue.prompt else 0,
        enqueue.claim[1] if enqueue.claim else "", enqueue.claim[2] if enqueue.claim else 0,
        "1" if enqueue.deferred_seed else "0", "1" if enqueue.take_pin else "0",
    )
    try:
        status, value, pin, fresh = _run_script(r, enqueue, keys_, args)
    except _SavedBadly as exc:  # admitted and pushed, but rq's job hash is not whole: undo
        r.lrem(queue_key, 0, request_id)
        r.delete(enqueue.job_key)
        slots.release(r, messenger, user, request_id)
        refund(r, messenger, user, request_id, enqueue.quota_day or "")
        raise exc.error from None
    text_value = keys.as_text(value) if isinstance(value, bytes | str) else str(value)
    pin_text = keys.as_text(pin) if isinstance(pin, bytes | str) else ""
    status = int(status)
    seen_pin, first = int(pin_text) if pin_text.isdigit() else None, bool(fresh)
    if status == ADMITTED:
        ahead, estimate = text_value.split(":")
        return Decision(status, ahead=int(ahead), estimate_s=float(estimate), pin=seen_pin,
                        first_contact=first)
    if status == KEPT:
        return Decision(status, count=int(text_value), pin=seen_pin, first_contact=first)
    if status == RATE:
        return Decision(status, retry_after_s=float(text_value), pin=seen_pin, first_contact=first)
    if status == QUOTA:
        return Decision(status, count=int(float(text_value)), pin=seen_pin, first_contact=first)
    if status == TOO_SLOW:
        return Decision(status, estimate_s=float(text_value),
                        retry_after_s=max(30.0, float(text_value) - budget_s), pin=seen_pin,
                        first_contact=first)
    return Decision(status, holder=text_value, pin=seen_pin, first_contact=first)


def _run_script(r: redis.Redis, enqueue: Enqueue, keys_: tuple[str, ...],
                args: tuple[Any, ...]) -> Any:
    """rq's job save and the admission script in one MULTI (one round trip).

    EVALSHA, with the script loaded once per Redis server: when Redis does not know it yet, the
    MULTI saved the job hash and pushed nothing; the second try writes the same hash again.
    """
    for attempt in (1, 2):
        sha = _SCRIPT.get("admit")
        if sha is None:
            _SCRIPT["admit"] = sha = keys.as_text(r.script_load(_ADMIT))
        with r.pipeline(transaction=True) as pipe:
            enqueue.save_job(pipe)
            pipe.evalsha(sha, len(keys_), *keys_, *args)
            results = pipe.execute(raise_on_error=False)
        outcome = results[-1]
        if isinstance(outcome, redis.exceptions.NoScriptError) and attempt == 1:
            _SCRIPT.pop("admit", None)
            continue
        if isinstance(outcome, Exception):
            r.delete(enqueue.job_key)  # the job hash the MULTI saved
            raise outcome
        failed = next((x for x in results[:-1] if isinstance(x, Exception)), None)
        if failed is not None:
            if int(outcome[0]) == ADMITTED:
                raise _SavedBadly(failed)
            raise failed
        return outcome
    raise AssertionError("unreachable")


class _SavedBadly(Exception):
    """The script admitted and pushed a job whose save failed in the same MULTI."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def refund(r: redis.Redis, messenger: str, user: str, request_id: str, day: str) -> None:
    """Give back what an admitted job counted, when it is cancelled or never ran."""
    with r.pipeline() as pipe:
        pipe.zrem(keys.user("rate", messenger, user), request_id)
        pipe.eval(
            "local n = tonumber(redis.call('GET', KEYS[1]) or '0') "
            "if n > 0 then return redis.call('DECR', KEYS[1]) end return 0",
            1,
            quota_key(messenger, user, day),
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
