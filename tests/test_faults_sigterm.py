"""SIGTERM to an idle worker whose Redis is gone: it exits within 10 s, with 0.

Each test runs its own redis-server and one text-to-image worker (tiny model) on it, lets the
worker settle in rq's blocking dequeue, then kills Redis (connections refused) or freezes it
(SIGSTOP: connections accepted, nothing answered) and sends SIGTERM a few seconds later. A busy
worker finishing its batch before it exits is tests/test_faults_workers.py's
test_sigterm_finishes_the_running_batch_then_exits_cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.support import (
    LOG_DIR,
    free_port,
    start_redis,
    start_worker,
    stop_process,
    wait_ready,
    wait_until,
    worker_env,
)

EXIT_LIMIT_S = 10.0  # an idle worker exits within this long after SIGTERM
OUTAGE_S = 3.0  # how long the worker has been meeting the outage when SIGTERM comes


def idle_worker(
    settings: dict[str, str], folder: Path, label: str
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], Path]:
    """A redis-server and a ready, idle worker on it; returns both processes and the log."""
    port = free_port()
    redis_proc = start_redis(folder / "redis", port)
    url = f"redis://127.0.0.1:{port}/0"
    log_path = LOG_DIR / f"worker-sigterm-{label}.log"
    worker = start_worker(worker_env({}, **{**settings, "redis_url": url}), log_path=log_path)
    r = redis.Redis.from_url(url, socket_timeout=5)
    try:
        name = wait_ready(r, worker, log_path=log_path)
        # Listening: rq marks the worker idle right before its blocking dequeue.
        assert wait_until(lambda: r.hget(f"rq:worker:{name}", "state") == b"idle", timeout=15)
    except BaseException:
        stop_process(worker)
        stop_process(redis_proc)
        raise
    finally:
        r.close()
    return redis_proc, worker, log_path


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
    stack: dict, tmp_path: Path, outage: str
) -> None:
    redis_proc, worker, log_path = idle_worker(stack["settings"], tmp_path, outage)
    frozen = False
    try:
        if outage == "killed":  # connections refused
            redis_proc.kill()
            redis_proc.wait(10)
        else:  # connections accepted, nothing answered: the worker's dequeue just waits
            os.kill(redis_proc.pid, signal.SIGSTOP)
            frozen = True
        time.sleep(OUTAGE_S)
        assert worker.poll() is None, "the worker rides out an outage by itself"
        code, took = time_exit(worker, log_path)
        assert took < EXIT_LIMIT_S, f"exited {took:.1f} s after SIGTERM"
        assert code == 0, log_path.read_text(errors="replace")[-3000:]
    finally:
        if frozen:
            os.kill(redis_proc.pid, signal.SIGCONT)
        stop_process(worker)
        stop_process(redis_proc)
