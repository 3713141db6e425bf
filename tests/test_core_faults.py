"""The per-user slot, dead workers, failing callbacks, failing jobs and missing weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from bot.core import keys
from bot.core.events import Event
from bot.core.job import Request
from tests.support import (
    ROOT,
    ConnectionCounter,
    Workers,
    has_picture,
    new_user,
    post_kakao,
    text_of,
    wait_until,
    worker_env,
)


@pytest.fixture(scope="module")
def slow(private_workers: Any) -> Iterator[Workers]:
    """A private worker on its own database that sleeps 2 s before each job (a development seam)."""
    with private_workers("slow", delay_s=2) as workers:
        yield workers


def test_one_job_in_flight_per_user(make_app: Any, slow: Workers) -> None:
    client = make_app(redis_url=slow.url, sync_wait_s=0.0).test_client()
    user, other = new_user(), new_user()
    assert "아직 그리는 중" in text_of(post_kakao(client, user, "첫 번째 그림"))
    busy = post_kakao(client, user, "두 번째 그림")
    assert "앞서 보낸 요청을 아직 처리하고 있어요" in text_of(busy)
    assert "아직 그리는 중" in text_of(post_kakao(client, other, "다른 사람의 그림"))
    r = slow.redis
    assert wait_until(lambda: r.llen(keys.kept("kakao", user)) == 1, timeout=20)
    assert r.get(keys.slot("kakao", user)) is None
    later = post_kakao(client, user, "세 번째 그림")
    assert has_picture(later), "the kept picture comes first"
    assert "앞서 보낸 요청을" not in text_of(later)


@pytest.mark.parametrize(
    "template",
    [
        "http://127.0.0.1:{port}/v1/bots/b/callback/tok",
        "https://bot-api.kakao.com@127.0.0.1:{port}/v1/bots/b/callback/tok",
        "https://bot-api.kakao.com:{port}/v1/bots/b/callback/tok",
        "http://bot-api.kakao.com/v1/bots/b/callback/tok",
        "https://localhost:{port}/v1/bots/b/callback/tok",
    ],
)
def test_callback_off_the_allow_list_is_never_contacted_and_the_result_kept(
    make_app: Any, stack: Any, template: str
) -> None:
    counter = ConnectionCounter()
    try:
        client = make_app(sync_wait_s=0.0).test_client()
        user = new_user()
        body = post_kakao(client, user, "허용되지 않은 콜백", template.format(port=counter.port))
        assert body["useCallback"] is True
        assert wait_until(lambda: stack["redis"].llen(keys.kept("kakao", user)) == 1)
        assert counter.count == 0
        later = post_kakao(client, user, "안녕")
        assert has_picture(later)
    finally:
        counter.close()


@pytest.mark.parametrize("behaviour,min_hits", [("fail", 1), ("error500", 2), ("slow:15", 1)])
def test_callback_fail_500_or_slow_keeps_the_result(
    make_app: Any,
    idle_stack: Any,
    callback_server: Any,
    behaviour: str,
    min_hits: int,
    service_time: Any,
) -> None:
    stack = idle_stack
    service_time(0.3)  # the short deadline must not make admission refuse on a loaded machine
    # 12 s: the job itself gets to its callback before the deadline on a loaded machine; a
    # callback slower than the 10 s a POST may take (slow:15) still runs the deadline out.
    client = make_app(sync_wait_s=0.0, callback_deadline_s=12.0).test_client()
    user = new_user()
    token = behaviour.replace(":", "") + user
    post_kakao(client, user, "콜백이 실패하는 그림", callback_server.url(token, behaviour))
    assert wait_until(lambda: stack["redis"].llen(keys.kept("kakao", user)) == 1, timeout=30)
    hits = callback_server.hits.get(token, 0)
    assert hits >= min_hits
    if behaviour == "fail":
        assert hits == 1, "a FAIL is final and must not be retried"
    assert has_picture(post_kakao(client, user, "결과 보기"))
    assert stack["redis"].get(keys.slot("kakao", user)) is None


def test_a_failing_job_apologises_and_is_recorded_as_failed(
    make_app: Any, stack: Any, callback_server: Any
) -> None:
    app = make_app(sync_wait_s=0.0)
    core = app.extensions["koalatalk"].core
    user = new_user()
    token = "apology" + user
    event = Event(
        messenger="kakao",
        user=user,
        text="x",
        received_at=time.time(),
        request_id="req" + user[:20],
        callback_url=callback_server.url(token),
        lang="ko",
    )
    # 30 px is not a multiple of 8: the pipeline refuses it inside the worker.
    outcome = core.submit(event, Request(prompt="망가진 요청", width=30, height=30, seed=1))
    assert outcome.ack is not None
    calls = callback_server.wait_for(token)
    assert calls and "문제가 생겼어요" in text_of(calls[0].body)
    registry = FailedJobRegistry("text2image", connection=stack["redis"], serializer=JSONSerializer)
    assert wait_until(lambda: event.request_id in registry.get_job_ids())
    assert stack["redis"].get(keys.slot("kakao", user)) is None


def test_slot_is_freed_within_seconds_after_the_worker_is_killed(
    make_app: Any, private_workers: Any
) -> None:
    with private_workers("killed", delay_s=60) as workers:
        (proc,) = workers.workers.values()
        url, r = workers.url, workers.redis
        client = make_app(redis_url=url, sync_wait_s=0.0).test_client()
        user = new_user()
        post_kakao(client, user, "중간에 죽는 워커")
        holder = r.get(keys.slot("kakao", user))
        assert holder is not None
        assert wait_until(lambda: r.get(keys.running(holder.decode())) is not None)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        killed_at = time.time()
        # Busy while the heartbeat lives; once it has expired (2.5 s) and with no live worker
        # to retry on, the user's next message hears about the lost job, and the slot is free.
        assert wait_until(
            lambda: "서버가 멈췄어요" in text_of(post_kakao(client, user, "새 그림")), timeout=10
        )
        assert time.time() - killed_at < 5
        assert r.get(keys.slot("kakao", user)) is None
        failed = FailedJobRegistry("text2image", connection=r, serializer=JSONSerializer)
        assert holder.decode() in failed.get_job_ids()


def test_worker_without_weights_stops_with_a_clear_message(make_app: Any, redis_url: str) -> None:
    # redis_url: a database of this test's own, where the stack's worker does not listen
    env = worker_env(
        {},
        mode="development",
        redis_url=redis_url,
        preset="koala-1b",
        log_json="false",
        system_dns="false",
    )
    done = subprocess.run(
        [sys.executable, "-m", "workers", "text2image"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3
    assert "koala-1b" in done.stderr and "etri-vilab/koala-1b" in done.stderr
    assert "Traceback" not in done.stderr
    # It never said it was ready: readiness stays false for its queue.
    ready = make_app(redis_url=redis_url, ready_queues=("text2image",)).test_client().get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["queues"] == {"text2image": False}
