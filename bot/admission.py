"""Admission: who may queue a job now, and an honest estimate of when it will be done.

One Lua script decides atomically, in one round trip: kept results first, duplicates, the
per-user rate limit and daily quota, the per-user slot, and whether the estimated wait fits the
reply's deadline. Nothing is counted unless the job is admitted, and a refused estimate leaves
no slot behind. The estimate is the job's place in its queue, divided among the live workers,
times a moving average of recent service times that the workers keep in Redis.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass

import redis

from bot import keys

KEPT, DUPLICATE, RATE, QUOTA, BUSY, TOO_SLOW, ADMITTED, BLOCKED = range(8)
NAMES = ("kept", "duplicate", "rate", "quota", "busy", "too_slow", "admitted", "blocked")

_ADMIT = """
-- KEYS: kept, dedupe, rate, quota, slot, queue, svc, blocked
-- ARGV: rid, slot_ttl, now, rate_window, rate_limit, quota_limit, dedupe_ttl,
--       svc_field, default_svc, workers, budget, check_limits, at_front, member
local now = tonumber(ARGV[3])
if redis.call('SISMEMBER', KEYS[8], ARGV[14]) == 1 then return {7, ''} end
local kept = redis.call('LLEN', KEYS[1])
if kept > 0 then return {0, kept} end
local dup = redis.call('GET', KEYS[2])
if dup then return {1, dup} end
local limits = ARGV[12] == '1'
if limits then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]))
  local recent = redis.call('ZCARD', KEYS[3])
  if recent >= tonumber(ARGV[5]) then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {2, tostring(math.ceil(tonumber(oldest[2]) + tonumber(ARGV[4]) - now))}
  end
  local used = tonumber(redis.call('GET', KEYS[4]) or '0')
  if tonumber(ARGV[6]) > 0 and used >= tonumber(ARGV[6]) then return {3, tostring(used)} end
end
if not redis.call('SET', KEYS[5], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return {4, redis.call('GET', KEYS[5])}
end
local svc = tonumber(redis.call('HGET', KEYS[7], ARGV[8]) or ARGV[9])
local ahead = 0
if ARGV[13] ~= '1' then ahead = redis.call('LLEN', KEYS[6]) end
local workers = math.max(1, tonumber(ARGV[10]))
local estimate = (math.floor(ahead / workers) + 1) * svc
if estimate > tonumber(ARGV[11]) then
  redis.call('DEL', KEYS[5])
  return {5, tostring(estimate)}
end
if limits then
  redis.call('ZADD', KEYS[3], now, ARGV[1])
  redis.call('EXPIRE', KEYS[3], math.ceil(tonumber(ARGV[4])) + 1)
  redis.call('INCR', KEYS[4])
  redis.call('EXPIRE', KEYS[4], 172800)
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[7])
return {6, tostring(ahead) .. ':' .. tostring(estimate)}
"""


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
) -> Decision:
    """Decide in one atomic step whether this request is queued."""
    now = time.time()
    status, value = r.eval(
        _ADMIT,
        8,
        keys.kept(messenger, user),
        dedupe_key(messenger, user, text),
        keys.user("rate", messenger, user),
        quota_key(messenger, user),
        keys.slot(messenger, user),
        queue_key,
        keys.SERVICE_TIMES,
        keys.BLOCKED,
        request_id,
        max(1, slot_ttl_s),
        f"{now:.6f}",
        limits.rate_window_s,
        limits.rate_limit,
        limits.daily_quota,
        limits.dedupe_ttl_s,
        service_field,
        limits.default_service_s,
        workers,
        f"{budget_s:.3f}",
        "1" if limits.check_limits else "0",
        "1" if limits.at_front else "0",
        f"{messenger}:{user}",
    )
    text_value = keys.as_text(value) if isinstance(value, bytes | str) else str(value)
    status = int(status)
    if status == ADMITTED:
        ahead, estimate = text_value.split(":")
        return Decision(status, ahead=int(ahead), estimate_s=float(estimate))
    if status == KEPT:
        return Decision(status, count=int(text_value))
    if status == RATE:
        return Decision(status, retry_after_s=float(text_value))
    if status == QUOTA:
        return Decision(status, count=int(float(text_value)))
    if status == TOO_SLOW:
        return Decision(
            status,
            estimate_s=float(text_value),
            retry_after_s=max(30.0, float(text_value) - budget_s),
        )
    return Decision(status, holder=text_value)


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
