"""SIGTERM to an idle worker whose Redis is gone: it exits within 10 s, with 0.

Each test runs its own redis-server and one text-to-image worker (tiny model) on it, lets the
worker settle in rq's blocking dequeue, then kills Redis (connections refused) or freezes it
(SIGSTOP: connections accepted, nothing answered) and sends SIGTERM once the worker has run
into the outage. A busy
worker finishing its batch before it exits is tests/test_faults_workers.py's
test_sigterm_finishes_the_running_batch_then_exits_cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support import (
    LOG_DIR,
    RedisServer,
    start_worker,
    stop_process,
    unread_by_server,
    wait_ready,
    wait_until,
    worker_env,
)

EXIT_LIMIT_S = 10.0  # an idle worker exits within this long after SIGTERM
MEET_S = 15.0  # the worker meets the outage well within this (its next heartbeat or dequeue)
# What a worker logs when a Redis it talks to has been killed: rq's dequeue retrying, its own
# heartbeat failing, or its rq loop ending.
OUTAGE_LINES = ("could not connect to Redis", "heartbeat failed", "rq worker loop ended")


def idle_worker(
    settings: dict[str, str], server: RedisServer, label: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """A ready, idle worker on the server; returns its process and its log."""
    url = server.url()
    log_path = LOG_DIR / f"worker-sigterm-{label}.log"
    worker = start_worker(worker_env({}, **{**settings, "redis_url": url}), log_path=log_path)
    r = redis.Redis.from_url(url, socket_timeout=5)
    try:
        name = wait_ready(r, worker, log_path=log_path)
        # Listening: rq marks the worker idle right before its blocking dequeue.
        assert wait_until(lambda: r.hget(f"rq:worker:{name}", "state") == b"idle", timeout=15)
    except BaseException:
        stop_process(worker)
        raise
    finally:
        r.close()
    return worker, log_path


def met_the_outage(log_path: Path, before: str, server: RedisServer, frozen: bool) -> bool:
    """The worker has run into the outage: a killed Redis, it logged so; a frozen one, a
    command of its waits unread in the stopped server's socket."""
    if frozen:
        return unread_by_server(server.port) > 0
    text = log_path.read_text(errors="replace")[len(before) :]
    return any(line in text for line in OUTAGE_LINES)


def time_exit(worker: subprocess.Popen[bytes], log_path: Path) -> tuple[int, float]:
    """Send SIGTERM and wait (bounded) for the exit; returns the exit code and the seconds."""
    started = time.monotonic()
    os.kill(worker.pid, signal.SIGTERM)
    try:
        code = worker.wait(timeout=EXIT_LIMIT_S + 5)
    except subprocess.TimeoutExpired:
        tail = log_path.read_text(errors="replace")[-3000:]
        pytest.fail(f"still running {EXIT_LIMIT_S + 5:.0f} s after SIGTERM:\n{tail}")
    return code, time.monotonic() - started


@pytest.mark.parametrize("outage", ["killed", "frozen"])
def test_an_idle_worker_exits_soon_after_sigterm_while_redis_is_away(
    stack: dict, fresh_redis_server: Any, outage: str
) -> None:
    server: RedisServer = fresh_redis_server()
    worker, log_path = idle_worker(stack["settings"], server, outage)
    assert server.proc is not None
    frozen = False
    try:
        before = log_path.read_text(errors="replace")
        if outage == "killed":  # connections refused
            server.proc.kill()
            server.proc.wait(10)
        else:  # connections accepted, nothing answered: the worker's dequeue just waits
            os.kill(server.proc.pid, signal.SIGSTOP)
            frozen = True
        assert wait_until(
            lambda: met_the_outage(log_path, before, server, frozen), timeout=MEET_S, step=0.1
        ), "the worker never ran into the outage"
        assert worker.poll() is None, "the worker rides out an outage by itself"
        code, took = time_exit(worker, log_path)
        assert took < EXIT_LIMIT_S, f"exited {took:.1f} s after SIGTERM"
        assert code == 0, log_path.read_text(errors="replace")[-3000:]
    finally:
        if frozen:
            os.kill(server.proc.pid, signal.SIGCONT)
        stop_process(worker)
        server.stop()
