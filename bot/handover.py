"""The race-free hand-over between the waiting webhook and the worker that finishes the job.

One claim key per job, written only with SET NX, decides who delivers:
- the worker stores the result, then claims `direct`; if it wins it wakes the webhook;
- the webhook, when its budget runs out, claims `callback:<ack time>` or `pull`; if it loses,
  the result is already stored (the worker stores it before claiming) and it answers directly.
Each side's step is one Lua script, so it is atomic in Redis. Exactly one side delivers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

from bot import keys
from bot.events import Reply

CLAIM_TTL_S = 3600

_WORKER_FINISH = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if redis.call('SET', KEYS[2], 'direct', 'NX', 'EX', ARGV[2]) then
  redis.call('LPUSH', KEYS[3], '1')
  redis.call('EXPIRE', KEYS[3], 60)
  return 'direct'
end
return redis.call('GET', KEYS[2])
"""

_WEBHOOK_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return {1, false}
end
return {0, redis.call('GET', KEYS[2])}
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


def worker_finish(r: redis.Redis, request_id: str, reply: Reply,
                  ttl_s: int = CLAIM_TTL_S) -> Claim:
    """Store the job's reply and claim its delivery; returns the claim that holds."""
    raw = r.eval(
        _WORKER_FINISH,
        3,
        keys.result(request_id),
        keys.claim(request_id),
        keys.wake(request_id),
        json.dumps(reply.to_dict()),
        ttl_s,
    )
    return Claim.parse(raw)


def webhook_claim(r: redis.Redis | Pipeline, request_id: str, how: str,
                  ttl_s: int = CLAIM_TTL_S) -> Any:
    """Claim delivery for the slow path (`callback` or `pull`).

    On a client: None when the claim is ours (acknowledge now), or the finished reply when the
    worker claimed first (answer it directly). On a pipeline the claim is queued; pass its
    result to `claimed`.
    """
    value = f"{how}:{time.time():.3f}"
    result = r.eval(
        _WEBHOOK_CLAIM, 2, keys.claim(request_id), keys.result(request_id), value, ttl_s
    )
    if isinstance(r, Pipeline):
        return result
    return claimed(result)


def claimed(result: Any) -> Reply | None:
    """None when the webhook's claim won, else the reply the worker stored first."""
    won, raw = result
    return None if won else _reply(raw)


def webhook_wait(r: redis.Redis, request_id: str, budget_s: float, how: str,
                 ttl_s: int = CLAIM_TTL_S) -> Reply | None:
    """Wait up to budget_s for the worker's direct hand-over, then claim the slow path.

    Returns the reply to answer directly, or None when the slow path (`how`) is ours.
    """
    if budget_s >= 0.01:
        woke = r.blpop([keys.wake(request_id)], timeout=budget_s)
        if woke is not None:
            return _reply(r.get(keys.result(request_id)))
    return webhook_claim(r, request_id, how, ttl_s)


def _reply(raw: Any) -> Reply:
    if raw is None:
        raise RuntimeError("hand-over lost its result")  # the worker stores it before claiming
    return Reply.from_dict(json.loads(raw))
