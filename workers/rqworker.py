"""rq's SimpleWorker as KoalaTalk runs it: jobs run in this process, and it stops in bounded time.

SIGTERM keeps rq's meaning: an idle worker stops at once; a busy one finishes its job (or batch)
first (warm shutdown). What changes is the way out. rq records the warm-shutdown date, registers
the worker's death and drops its command subscription through the worker's own connection, whose
socket timeout is WORKER_TTL_S (45 s) with three retries: an idle worker told to stop while
Redis was frozen (SIGSTOP) waited minutes on those writes, and one whose Redis had been killed
spent seconds retrying them. Here they get one try each on a fail-fast client (QUICK_TIMEOUT_S,
no retries) and are best effort: rq's worker key expires by itself (worker_ttl), and KoalaTalk's
own recovery reads the heartbeat (workers/heartbeat.py), which expires within seconds.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import SimpleWorker
from rq.utils import now, utcformat

log = logging.getLogger(__name__)
QUICK_TIMEOUT_S = 1.0  # each write on the way out: connect and answer
RECONNECT_MAX_S = 5.0  # longest pause between two tries while Redis is away
PUBSUB_JOIN_S = 0.5  # rq's command listener is a daemon thread: never wait long for it


def quick_client(url: str) -> redis.Redis:
    """A client that gives up after QUICK_TIMEOUT_S, without retries: for the last writes."""
    return redis.Redis.from_url(
        url,
        socket_timeout=QUICK_TIMEOUT_S,
        socket_connect_timeout=QUICK_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )


class ResidentWorker(SimpleWorker):
    """SimpleWorker (no fork after the models are loaded) whose shutdown never waits on Redis.

    `quick`: the fail-fast client for the last writes. `stop`: set by SIGTERM or SIGINT, so the
    caller knows a stop was asked for, even between two of rq's loops.
    """

    # rq retries a failed dequeue itself (rq 3: timeouts too), pausing 1, 2, 4 ... up to 60 s;
    # come back within a few seconds of Redis instead.
    max_connection_wait_time = RECONNECT_MAX_S

    def __init__(
        self,
        *args: Any,
        quick: redis.Redis | None = None,
        stop: threading.Event | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.quick = quick if quick is not None else self.connection
        self.stop_event = stop if stop is not None else threading.Event()
        self._loop_over = False

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        if self.stop_event.is_set():  # told to stop while this loop was starting: do not serve
            self._shutdown_requested_date = now()
            self._stop_requested = True

    def request_stop(self, signum: Any, frame: Any) -> None:
        """rq's warm shutdown; once this loop is over (a signal between two loops) only noted."""
        self.stop_event.set()
        if self._loop_over:
            return
        super().request_stop(signum, frame)

    def set_shutdown_requested_date(self) -> None:
        """Recorded for rq's dashboards with one quick try: this runs in the signal handler."""
        try:
            self.quick.hset(
                self.key,
                "shutdown_requested_date",
                utcformat(self._shutdown_requested_date or now()),
            )
        except redis.RedisError as exc:
            log.warning("shutdown date not recorded", extra={"error": type(exc).__name__})

    def teardown(self) -> None:
        """rq's tear-down: the death record on the fail-fast client, then the command listener
        stopped whatever Redis said (a loop that ends on a Redis error is followed by another)."""
        self._loop_over = True
        if self.scheduler:
            self.stop_scheduler()
        slow, self.connection = self.connection, self.quick
        try:
            self.register_death()
        except redis.RedisError as exc:
            log.warning(
                "death not recorded: Redis unavailable", extra={"error": type(exc).__name__}
            )
        finally:
            self.connection = slow
            self.unsubscribe()

    def unsubscribe(self) -> None:
        """Stop rq's command listener. Closing its connection ends the subscription: no
        UNSUBSCRIBE round trip, which rq retried for seconds against a dead Redis."""
        if self.pubsub_thread:
            self.pubsub_thread.stop()
            self.pubsub_thread.join(timeout=PUBSUB_JOIN_S)
            # Still waiting for a message: it closes its connection itself when that wait ends
            # (closing it under the thread makes it die with a traceback); exit never waits.
            if not self.pubsub_thread.is_alive():
                self.pubsub.close()
