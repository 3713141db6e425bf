"""The race-free hand-over between the waiting webhook and the worker that finishes the job.

One claim key per job, written only with SET NX, decides who delivers:
- the worker stores the result, then claims `direct`; if it wins it wakes the webhook;
- the webhook, when its budget runs out, claims `callback:<ack time>` or `pull`; if it loses,
  the result is already stored (the worker stores it before claiming) and it answers directly.
Each side's step is one Lua script, so it is atomic in Redis. Exactly one side delivers.

A direct hand-over is also watched: if no webhook takes the wake signal in time (its web process
died, or lost Redis while it waited), a worker's heartbeat keeps the result for the user's next
message (`unanswered`), so the user is never left with nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

from bot.core import keys
from bot.core.events import Reply

CLAIM_TTL_S = 3600
WAKE_TTL_S = 300  # outlives any watch on a direct hand-over (bot/core/keys.py HANDOVERS)
UNANSWERED_BATCH = 500

_WORKER_FINISH = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if redis.call('SET', KEYS[2], 'direct', 'NX', 'EX', ARGV[2]) then
  redis.call('LPUSH', KEYS[3], '1')
  redis.call('EXPIRE', KEYS[3], ARGV[5])
  if ARGV[3] ~= '' then redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3]) end
  return 'direct'
end
return redis.call('GET', KEYS[2])
"""

# The webhook's claim. Losing it means the worker claimed `direct` first: the webhook answers
# with the stored result now, so it takes the worker's wake signal too.
_WEBHOOK_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return {1, false}
end
redis.call('DEL', KEYS[3])
return {0, redis.call('GET', KEYS[2])}
"""

# A watched direct hand-over that is due: if its wake signal is still there, no webhook took it.
_UNANSWERED = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return false end
if redis.call('DEL', KEYS[2]) == 1 then return redis.call('GET', KEYS[3]) or false end
return false
"""


@dataclass(frozen=True)
class Claim:
    """Who won a job's delivery: `direct` (the webhook answers), `callback` or `pull`."""

    how: str
    acked_at: float = 0.0

    @classmethod
    def parse(cls, raw: bytes | str | None) -> Claim:
        text = raw.decode() if isinstance(raw, bytes) else (raw or "")
        how, _, stamp = text.partition(":")
        return cls(how or "pull", float(stamp) if stamp else 0.0)


def worker_finish(
    r: redis.Redis,
    request_id: str,
    reply: Reply,
    ttl_s: int = CLAIM_TTL_S,
    owner: tuple[str, str] | None = None,
    taken_by: float = 0.0,
) -> Claim:
    """Store the job's reply and claim its delivery; returns the claim that holds.

    `owner` (messenger, user) and `taken_by` (a time): when the worker wins `direct`, the
    hand-over is watched, and `unanswered` returns it if no webhook took it by then."""
    member = json.dumps({"id": request_id, "m": owner[0], "u": owner[1]}) if owner else ""
    raw = r.eval(
        _WORKER_FINISH,
        4,
        keys.result(request_id),
        keys.claim(request_id),
        keys.wake(request_id),
        keys.HANDOVERS,
        json.dumps(reply.to_dict()),
        ttl_s,
        member,
        f"{taken_by:.3f}",
        WAKE_TTL_S,
    )
    return Claim.parse(raw)


def unanswered(
    r: redis.Redis, now: float, limit: int = UNANSWERED_BATCH
) -> tuple[list[tuple[str, str, Reply]], int]:
    """Direct hand-overs due by `now` that no webhook took: (messenger, user, reply) each, and
    how many due ones were looked at (at most `limit`, in one round trip after the read).

    Each is returned once, whichever process asks first; a hand-over a webhook took is dropped.
    """
    due = [
        m
        for m in r.zrangebyscore(keys.HANDOVERS, "-inf", f"{now:.3f}", start=0, num=limit)
        if isinstance(m, bytes | str)
    ]
    if not due:
        return [], 0
    owners = [json.loads(member) for member in due]
    with r.pipeline(transaction=False) as pipe:
        for member, owner in zip(due, owners, strict=True):
            pipe.eval(
                _UNANSWERED,
                3,
                keys.HANDOVERS,
                keys.wake(owner["id"]),
                keys.result(owner["id"]),
                member,
            )
        results = pipe.execute()
    found = [
        (owner["m"], owner["u"], _reply(raw))
        for owner, raw in zip(owners, results, strict=True)
        if raw
    ]
    return found, len(due)


def webhook_claim(
    r: redis.Redis | Pipeline, request_id: str, how: str, ttl_s: int = CLAIM_TTL_S
) -> Any:
    """Claim delivery for the slow path (`callback` or `pull`).

    On a client: None when the claim is ours (acknowledge now), or the finished reply when the
    worker claimed first (answer it directly). On a pipeline the claim is queued; pass its
    result to `claimed`.
    """
    key, value, _ = claim_record(request_id, how, ttl_s)
    result = r.eval(
        _WEBHOOK_CLAIM, 3, key, keys.result(request_id), keys.wake(request_id), value, ttl_s
    )
    if isinstance(r, Pipeline):
        return result
    return claimed(result)


def claim_record(request_id: str, how: str, ttl_s: int = CLAIM_TTL_S) -> tuple[str, str, int]:
    """The webhook's slow-path claim as written with `SET NX`: key, value, TTL. Admission takes
    it in the enqueue's own transaction when the webhook will not wait (bot/core/admission.py)."""
    return keys.claim(request_id), f"{how}:{time.time():.3f}", ttl_s


def claimed(result: Any) -> Reply | None:
    """None when the webhook's claim won, else the reply the worker stored first."""
    won, raw = result
    return None if won else _reply(raw)


def webhook_wait(
    r: redis.Redis,
    request_id: str,
    budget_s: float,
    how: str,
    ttl_s: int = CLAIM_TTL_S,
    waiter: redis.Redis | None = None,
) -> Reply | None:
    """Wait up to budget_s for the worker's direct hand-over, then claim the slow path.

    Returns the reply to answer directly, or None when the slow path (`how`) is ours. `waiter`:
    the client for the blocking wait, whose reads may last the whole budget (bot/web/app.py).
    """
    if budget_s >= 0.01:
        woke = (waiter or r).blpop([keys.wake(request_id)], timeout=budget_s)
        if woke is not None:
            return _reply(r.get(keys.result(request_id)))
    return webhook_claim(r, request_id, how, ttl_s)


def _reply(raw: Any) -> Reply:
    if raw is None:
        raise RuntimeError("hand-over lost its result")  # the worker stores it before claiming
    return Reply.from_dict(json.loads(raw))
