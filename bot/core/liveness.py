"""Which workers are alive, and which queues have one ready (for /readyz and admission)."""

from __future__ import annotations

import json
from typing import Any

import redis

from bot.core import keys
from bot.core.job import TASKS


def live_workers(r: redis.Redis) -> list[dict[str, Any]]:
    """Heartbeats of workers that beat recently (expired ones have vanished)."""
    names = sorted(keys.as_text(n) for n in r.smembers(keys.WORKERS))
    if not names:
        return []
    beats = r.mget([keys.heartbeat(n) for n in names])
    alive = []
    for name, raw in zip(names, beats, strict=True):
        if raw is None:
            r.srem(keys.WORKERS, name)
        else:
            alive.append(json.loads(raw))
    return alive


def queue_readiness(r: redis.Redis, queues: list[str]) -> dict[str, bool]:
    """For each queue: is there a live worker with its models loaded?"""
    workers = live_workers(r)
    return {q: any(q in w.get("queues", []) and w.get("loaded") for w in workers) for q in queues}


def configured_queues(ready_queues: tuple[str, ...]) -> list[str]:
    """The queues readiness requires: the configured ones, else every queue a job can go to."""
    return list(ready_queues) or sorted({queue for _function, queue in TASKS.values()})
