"""Operator controls: maintenance, block list, status, by settings or by admin command.

Admin commands come as chat messages from an operator id (KOALATALK_OPERATORS):

| command                    | effect                                                  |
| -------------------------- | ------------------------------------------------------- |
| `/점검 <message>`           | maintenance on: new requests get the message, queues drain |
| `/점검 끝`                  | maintenance off                                         |
| `/차단 <user id>`           | refuse a user (`messenger:id`, or an id on this messenger) |
| `/차단 해제 <user id>`       | accept the user again                                   |
| `/상태`                     | queue depths, live workers, service times, maintenance  |

English forms: `/maintenance <message>`, `/maintenance off`, `/block <id>`, `/unblock <id>`,
`/status`. State set by command lives in Redis, so every web process and host sees it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from rq import Queue

from bot.core import keys
from bot.core.events import Event, Reply, Text
from bot.core.liveness import live_workers
from bot.core.settings import Settings

CACHE_S = 1.0


COMMANDS = frozenset({"점검", "maintenance", "차단", "block", "unblock", "상태", "status"})


class Operations:
    """Reads operator state with a one-second cache, and runs admin commands."""

    def __init__(self, settings: Settings, r: redis.Redis) -> None:
        self.settings = settings
        self.r = r
        self._cached_at = 0.0
        self._maintenance = ""
        self._workers: dict[str, int] = {}
        self._shared: dict[frozenset[str], int] = {}

    def is_operator(self, event: Event) -> bool:
        """Operator ids may be written as `messenger:id` or as a bare id."""
        ops = self.settings.operators
        return f"{event.messenger}:{event.user}" in ops or event.user in ops

    def is_blocked_by_settings(self, event: Event) -> bool:
        """Users refused by configuration (the Redis block list is checked at admission)."""
        blocked = self.settings.blocked_users
        return f"{event.messenger}:{event.user}" in blocked or event.user in blocked

    def _refresh(self) -> None:
        now = time.monotonic()
        previous = self._cached_at
        if now - previous < CACHE_S:
            return
        if previous:
            # One greenlet refreshes; the others meanwhile use the values a second old, rather
            # than every request that arrives in that moment reading them again.
            self._cached_at = now
        try:
            with self.r.pipeline() as pipe:
                pipe.get(keys.MAINTENANCE)
                raw = pipe.execute()[0]
            workers = live_workers(self.r)
        except Exception:
            self._cached_at = previous  # the next request tries again
            raise
        self._maintenance = keys.as_text(raw) if raw else ""
        counts: dict[str, int] = {}
        shared: dict[frozenset[str], int] = {}
        for worker in workers:
            if worker.get("loaded"):
                served = worker.get("queues", [])
                for queue in served:
                    counts[queue] = counts.get(queue, 0) + 1
                for i, queue in enumerate(served):
                    for other in served[i + 1 :]:
                        pair = frozenset((queue, other))
                        shared[pair] = shared.get(pair, 0) + 1
        self._workers = counts
        self._shared = shared
        self._cached_at = now

    def maintenance(self) -> str:
        """The maintenance message in force ('' when none)."""
        if self.settings.maintenance:
            return self.settings.maintenance
        self._refresh()
        return self._maintenance

    def workers(self, queue: str) -> int:
        """Live workers with their models loaded, serving `queue`."""
        self._refresh()
        return self._workers.get(queue, 0)

    def shared(self, queue: str, other: str) -> int:
        """Live workers with their models loaded, serving both `queue` and `other`."""
        self._refresh()
        return self._shared.get(frozenset((queue, other)), 0)

    def is_command(self, event: Event) -> bool:
        """An operator's `/점검`, `/차단` or `/상태` (other `/…` words are read as anyone's)."""
        text = event.text.strip()
        word = text[1:].partition(" ")[0]
        return text.startswith("/") and word in COMMANDS and self.is_operator(event)

    def command(self, event: Event) -> Reply | None:
        """Run an admin command from an operator; None when the text is not one."""
        if not self.is_command(event):
            return None
        word, _, rest = event.text.strip()[1:].partition(" ")
        rest = rest.strip()
        if word in {"점검", "maintenance"}:
            if rest in {"끝", "해제", "off", "end"}:
                self.r.delete(keys.MAINTENANCE)
                answer = "점검을 끝냈어요. 새 요청을 받아요."
            else:
                message = rest or "지금은 점검 중이에요. 잠시 뒤에 다시 찾아 주세요."
                self.r.set(keys.MAINTENANCE, message)
                answer = f"점검을 시작했어요. 새 요청에는 이렇게 답해요: {message}"
        elif word in {"차단", "block", "unblock"}:
            unblock = word == "unblock" or rest.startswith("해제")
            target = rest.removeprefix("해제").strip()
            if not target:
                return Reply((Text("누구를 차단할지 사용자 id를 적어 주세요."),))
            member = target if ":" in target else f"{event.messenger}:{target}"
            if unblock:
                self.r.srem(keys.BLOCKED, member)
                answer = f"{member} 차단을 풀었어요."
            else:
                self.r.sadd(keys.BLOCKED, member)
                answer = f"{member} 을(를) 차단했어요."
        elif word in {"상태", "status"}:
            answer = json.dumps(self.status(), ensure_ascii=False, indent=1)
        else:
            return None
        self._cached_at = 0.0
        return Reply((Text(answer),))

    def status(self) -> dict[str, Any]:
        """Queue depths, live workers, service-time averages and maintenance."""
        from bot.core.job import TEXT_TO_IMAGE_QUEUE, VISION_LANGUAGE_QUEUE

        self._cached_at = 0.0
        self._refresh()
        depth = {
            q: Queue(q, connection=self.r).count
            for q in (TEXT_TO_IMAGE_QUEUE, VISION_LANGUAGE_QUEUE)
        }
        service = {
            keys.as_text(k): round(float(v), 3)
            for k, v in self.r.hgetall(keys.SERVICE_TIMES).items()
        }
        return {
            "queues": depth,
            "workers": self._workers,
            "service_s": service,
            "maintenance": self.maintenance() or None,
            "blocked": self.r.scard(keys.BLOCKED),
        }
