"""One job in flight per user, across every model family.

The slot is a Redis key holding the job's request id, taken with SET NX and freed with a
compare-and-delete, so a late release can never free somebody else's newer slot. A slot whose
job runs on a worker that stopped heartbeating is recovered by bot/core/recovery.py.
"""

from __future__ import annotations

import redis

from bot.core import keys

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


_ADMIT = """
local kept = redis.call('LLEN', KEYS[1])
if kept > 0 then
  return {0, kept}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return {1, 0}
end
return {2, redis.call('GET', KEYS[2])}
"""

KEPT_WAITING, ADMITTED, BUSY = 0, 1, 2


def admit(
    r: redis.Redis, messenger: str, user: str, request_id: str, ttl_s: int
) -> tuple[int, str]:
    """Kept results waiting, or the slot taken, or busy (with the holder), in one round trip."""
    status, value = r.eval(
        _ADMIT, 2, keys.kept(messenger, user), keys.slot(messenger, user), request_id, max(1, ttl_s)
    )
    return int(status), keys.as_text(value) if isinstance(value, bytes | str) else ""


def acquire(r: redis.Redis, messenger: str, user: str, request_id: str, ttl_s: int) -> bool:
    """Take the user's slot for this request; False when another job holds it."""
    return bool(r.set(keys.slot(messenger, user), request_id, nx=True, ex=max(1, ttl_s)))


def holder(r: redis.Redis, messenger: str, user: str) -> str | None:
    """The request id that holds the user's slot, if any."""
    raw = r.get(keys.slot(messenger, user))
    return keys.as_text(raw) if raw else None


def release(r: redis.Redis, messenger: str, user: str, request_id: str) -> bool:
    """Free the slot if this request still holds it; True when this call freed it."""
    return bool(r.eval(_RELEASE, 1, keys.slot(messenger, user), request_id))
