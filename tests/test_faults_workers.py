"""Worker faults with real processes: SIGKILL mid-job (retried, or the user told) and SIGTERM.

Three text-to-image workers share a Redis database of their own; each sleeps 1.5 s inside every
job (the development seam DEBUG_JOB_DELAY_S) so a test can kill the one running a job. Each test
checks what the user received: one picture, or one honest apology. Never silence, never two.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from rq.job import Job as RqJob
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from bot.core import admission, keys, recovery
from tests.support import (
    Workers,
    counter,
    has_picture,
    new_user,
    post_kakao,
    text_of,
    wait_until,
)

DELAY_S = 1.5


@pytest.fixture(scope="module")
def fleet(private_workers: Any) -> Iterator[Workers]:
    """Three workers on a database of their own, started together; tests kill or stop them one
    by one."""
    with private_workers("fleet", count=3, delay_s=DELAY_S, batch_wait_ms=300) as workers:
        yield workers


def running_on(r: redis.Redis, request_id: str) -> str | None:
    raw = r.get(keys.running(request_id))
    return keys.as_text(raw) if raw else None


def send(fleet: Workers, client: Any, user: str, callback: str) -> str:
    """Send a prompt; returns its request id."""
    assert post_kakao(client, user, f"그림 {user[-6:]}", callback)["useCallback"] is True
    request_id = keys.as_text(fleet.redis.get(keys.slot("kakao", user)) or b"")
    assert request_id
    return request_id


def start_job(fleet: Workers, client: Any, user: str, callback: str) -> tuple[str, str]:
    """Send a prompt; returns its request id and the worker that runs it."""
    return running(fleet, send(fleet, client, user, callback))


def running(fleet: Workers, request_id: str) -> tuple[str, str]:
    """Wait until a worker runs the job; returns its request id and that worker."""
    r = fleet.redis
    assert wait_until(lambda: running_on(r, request_id) is not None, timeout=15)
    owner = running_on(r, request_id)
    assert owner in fleet.workers, owner
    return request_id, owner


def kill(fleet: Workers, name: str, signum: int) -> subprocess.Popen[bytes]:
    proc: subprocess.Popen[bytes] = fleet.workers.pop(name)
    os.kill(proc.pid, signum)
    return proc


def test_a_killed_workers_job_is_retried_on_another_worker(
    make_app: Any, fleet: Workers, callback_server: Any
) -> None:
    r = fleet.redis
    client = make_app(redis_url=fleet.url, sync_wait_s=0.0).test_client()
    user = new_user()
    token = "retry" + user
    request_id, victim = start_job(fleet, client, user, callback_server.url(token))
    kill(fleet, victim, signal.SIGKILL).wait(10)
    killed_at = time.time()
    # Noticed through the heartbeats (2.5 s here) and taken up by a live worker at once.
    assert wait_until(lambda: running_on(r, request_id) not in (None, victim), timeout=8)
    assert time.time() - killed_at < 5
    calls = callback_server.wait_for(token, timeout=20)
    assert calls and has_picture(calls[0].body), calls
    # The retried run has ended, so everything it delivers has gone out; the killed one is gone.
    finished = FinishedJobRegistry("text2image", connection=r, serializer=JSONSerializer)
    assert wait_until(lambda: request_id in finished.get_job_ids(), timeout=10)
    assert len([c for c in callback_server.calls if c.token == token]) == 1, "one picture only"
    job = RqJob.fetch(request_id, connection=r, serializer=JSONSerializer)
    assert job.meta.get(recovery.RETRIES) == 1
    assert job.worker_name in fleet.workers
    assert r.get(keys.slot("kakao", user)) is None
    assert r.llen(keys.kept("kakao", user)) == 0


def test_a_killed_workers_job_without_time_for_a_retry_is_apologised_for(
    make_app: Any, fleet: Workers, callback_server: Any
) -> None:
    r = fleet.redis
    # Another run would take 3 s (+1 s margin); the callback's 6 s are gone by the time the
    # heartbeat has expired, so the user hears at once instead of waiting for nothing.
    r.hset(keys.SERVICE_TIMES, admission.service_field("text2image", "tiny"), "3.0")
    app = make_app(redis_url=fleet.url, sync_wait_s=0.0, callback_deadline_s=6.0)
    delivered = counter(r, "deliveries", "kakao", "callback")
    user = new_user()
    token = "late" + user
    request_id, victim = start_job(fleet, app.test_client(), user, callback_server.url(token))
    kill(fleet, victim, signal.SIGKILL).wait(10)
    calls = callback_server.wait_for(token, timeout=10)
    assert calls, "the user must hear back"
    assert "서버가 멈췄어요" in text_of(calls[0].body) and not has_picture(calls[0].body)
    # The one clean-up has run to its end: the job is failed, its running mark (which the
    # clean-up takes, once) is gone, and the apology's delivery is counted as done.
    failed = FailedJobRegistry("text2image", connection=r, serializer=JSONSerializer)
    assert wait_until(
        lambda: (
            request_id in failed.get_job_ids()
            and r.get(keys.running(request_id)) is None
            and counter(r, "deliveries", "kakao", "callback") == delivered + 1
        ),
        timeout=10,
    )
    assert len([c for c in callback_server.calls if c.token == token]) == 1
    assert r.get(keys.slot("kakao", user)) is None, "the slot is freed"
    assert r.get(admission.quota_key("kakao", user)) in (None, b"0"), "the quota is given back"


def test_sigterm_finishes_the_running_batch_then_exits_cleanly(
    make_app: Any, fleet: Workers, callback_server: Any
) -> None:
    r = fleet.redis
    r.hset(keys.SERVICE_TIMES, admission.service_field("text2image", "tiny"), "2.5")
    client = make_app(redis_url=fleet.url, sync_wait_s=0.0).test_client()
    users = [new_user(), new_user()]
    tokens = ["term" + u for u in users]
    # Both within the batch window: the worker that takes the first may draw both at once.
    first = send(fleet, client, users[0], callback_server.url(tokens[0]))
    send(fleet, client, users[1], callback_server.url(tokens[1]))
    _, name = running(fleet, first)
    proc = kill(fleet, name, signal.SIGTERM)
    assert proc.wait(30) == 0, "a warm shutdown exits with 0"
    for token in tokens:
        calls = callback_server.wait_for(token, timeout=30)
        assert calls and has_picture(calls[0].body), (token, calls)
    assert RqJob.fetch(first, connection=r, serializer=JSONSerializer).get_status() == "finished"
    assert r.get(keys.heartbeat(name)) is None, "a clean exit removes the heartbeat"
    info = [json.loads(raw) for raw in r.mget([keys.heartbeat(n) for n in fleet.workers]) if raw]
    assert all(i["name"] != name for i in info)
    for user in users:
        assert r.get(keys.slot("kakao", user)) is None
