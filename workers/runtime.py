"""What a worker process holds for its whole life: settings, connections, resident models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from bot.core.blocklist import BlockList
from bot.core.sessions import Sessions
from bot.core.settings import Settings
from bot.core.stores import ImageStore
from bot.core.urlguard import UrlGuard


@dataclass
class Runtime:
    """The worker's resident state; job functions read it through `current()`."""

    name: str
    settings: Settings
    redis: redis.Redis
    store: ImageStore
    guard: UrlGuard
    sessions: Sessions
    queues: list[str]
    models: dict[str, Any] = field(default_factory=dict)
    load_seconds: dict[str, float] = field(default_factory=dict)
    blocklist: BlockList = field(default_factory=BlockList)  # read once at start
    precomputed: dict[str, Any] = field(default_factory=dict)  # request id -> batch picture
    # The worker's wall time per job, which admission's estimate reads (workers/tasks.py): when
    # this job's turn began (its dequeue, or the end of the job before it in a batch), and each
    # batch job's share of gathering and drawing the batch. 0: not set by the worker class.
    turn_started: float = 0.0
    turn_share_s: float = 0.0


_current: Runtime | None = None


def install(runtime: Runtime) -> None:
    """Make `runtime` the one job functions use."""
    global _current
    _current = runtime


def current() -> Runtime:
    """The installed runtime; job functions only run inside a started worker."""
    if _current is None:
        raise RuntimeError("no worker runtime: start jobs with `python -m workers`")
    return _current
