"""Per-user state in Redis, each with a TTL: last prompt, kept results, first-contact mark."""

from __future__ import annotations

import json
from typing import Any

import redis

from bot.core import keys
from bot.core.events import Reply


class Sessions:
    """Reads and writes one messenger user's state."""

    def __init__(self, r: redis.Redis, session_ttl_s: int, kept_ttl_s: int) -> None:
        self.r = r
        self.session_ttl_s = session_ttl_s
        self.kept_ttl_s = kept_ttl_s

    def prompt_record(
        self, messenger: str, user: str, request: dict[str, Any]
    ) -> tuple[str, str, int]:
        """The user's last drawing request for `다시 그리기`, as admission writes it when the
        job is admitted: key, JSON, TTL."""
        return keys.last_prompt(messenger, user), json.dumps(request), self.session_ttl_s

    def last_prompt(self, messenger: str, user: str) -> dict[str, Any] | None:
        """The user's last drawing request, if still kept."""
        raw = self.r.get(keys.last_prompt(messenger, user))
        return json.loads(raw) if raw else None

    def keep(self, messenger: str, user: str, reply: Reply) -> None:
        """Keep a result the user did not receive, for their next message."""
        key = keys.kept(messenger, user)
        pipe = self.r.pipeline()
        pipe.rpush(key, json.dumps(reply.to_dict()))
        pipe.ltrim(key, -20, -1)
        pipe.expire(key, self.kept_ttl_s)
        pipe.execute()

    def kept_count(self, messenger: str, user: str) -> int:
        """How many kept results wait for the user."""
        return int(self.r.llen(keys.kept(messenger, user)))

    def take_kept(self, messenger: str, user: str) -> tuple[Reply | None, int]:
        """Remove and return the oldest kept result, and how many remain."""
        key = keys.kept(messenger, user)
        pipe = self.r.pipeline()
        pipe.lpop(key)
        pipe.llen(key)
        raw, remaining = pipe.execute()
        return (Reply.from_dict(json.loads(raw)) if raw else None), int(remaining)

    def first_contact(self, messenger: str, user: str) -> bool:
        """True once per user per session TTL: the first message we see from them."""
        return bool(
            self.r.set(keys.seen_user(messenger, user), "1", nx=True, ex=self.session_ttl_s)
        )
