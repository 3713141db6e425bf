"""Redis killed and restarted, and an image store that cannot be written, with real processes.

The module runs its own redis-server (AOF, fsync on every write, in a temporary folder) and one
text-to-image worker whose image store starts out unwritable: its folder's parent is a regular
file, which stops writes even for root.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue
from rq.serializers import JSONSerializer
from rq.suspension import resume, suspend

from bot.core import admission, keys
from bot.core.settings import Settings
from bot.messengers.line import signature
from bot.web.app import create_app
from tests.support import (
    LOG_DIR,
    RedisServer,
    blocked_in,
    has_picture,
    kakao_payload,
    new_user,
    start_worker,
    stop_process,
    text_of,
    wait_ready,
    wait_until,
    worker_env,
)

KAKAO_LIMIT_S = 4.5  # Kakao waits 5 s; the busy answer must come well inside
LOOP_END_S = 20.0  # the worker's rq loop gives up on a dead Redis well within this


@pytest.fixture(scope="module")
def outage(
    stack: Any, fresh_redis_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Our own AOF Redis and one worker on it, whose image store cannot be written yet."""
    folder = tmp_path_factory.mktemp("outage")
    server: RedisServer = fresh_redis_server(appendonly=True, fsync_always=True)
    url = server.url()
    blocker = folder / "store"
    blocker.write_text("a regular file where the image folder's parent should be")
    state: dict[str, Any] = {"server": server}
    settings = {**stack["settings"], "redis_url": url, "media_dir": str(blocker / "media")}
    log_path = LOG_DIR / "worker-outage.log"
    worker = start_worker(worker_env({}, **settings), log_path=log_path)
    # The test's own client reconnects after the restart (one retry on a dropped connection).
    r = redis.Redis.from_url(url, socket_timeout=5, retry=Retry(NoBackoff(), 2))
    try:
        name = wait_ready(r, worker, log_path=log_path)
        # One job first, so the tests below time a warm worker, not its first translation and
        # drawing (seconds on a loaded 2-core machine): the store is unwritable, so it fails.
        user = new_user()
        env = {f"KOALATALK_{k.upper()}": v for k, v in settings.items()}
        primer = create_app(Settings.from_env(env, sync_wait_s=0.0)).test_client()
        primer.post("/kakao/skill", json=kakao_payload(user, "처음 한 장"))
        assert wait_until(lambda: r.exists(keys.kept("kakao", user)), timeout=60)
        r.delete(keys.kept("kakao", user))
        # The first test's answer is timed: start once the worker waits in rq's dequeue.
        assert wait_until(lambda: listening(r), timeout=30)
        state.update(
            url=url,
            folder=folder,
            blocker=blocker,
            worker=worker,
            name=name,
            r=r,
            settings=settings,
            log=log_path,
        )
        yield state
    finally:
        stop_process(worker)
        r.close()


def listening(r: redis.Redis) -> bool:
    """The worker waits in rq's blocking dequeue (BLMOVE, blocked), past its suspension check."""
    return any(c.get("cmd") == "blmove" and "b" in c.get("flags", "") for c in r.client_list())


def loop_ends(outage: dict[str, Any]) -> int:
    """How many times the worker's rq loop has ended for want of Redis (its log)."""
    return outage["log"].read_text().count("rq worker loop ended")


def app_for(outage: dict[str, Any], **overrides: Any) -> Any:
    env = {f"KOALATALK_{k.upper()}": v for k, v in outage["settings"].items()}
    settings = Settings.from_env(env, **overrides)
    # These tests wait for direct answers: the service time admission reads is pinned to an idle
    # tiny model's, as the worker's own average on a loaded machine could say `not in time`
    # and acknowledge at once (tests/test_early_ack.py covers that).
    with contextlib.suppress(redis.RedisError):
        r = redis.Redis.from_url(settings.redis_url, socket_timeout=1)
        r.hset(keys.SERVICE_TIMES, admission.service_field("text2image", "tiny"), "0.3")
        r.close()
    return create_app(settings)


def timed_post(client: Any, path: str, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    response = client.post(path, **kwargs)
    return response, time.perf_counter() - started


def test_an_unwritable_image_store_apologises_and_the_worker_stays_up(
    outage: dict[str, Any],
) -> None:
    client = app_for(outage, sync_wait_s=4.0).test_client()
    user = new_user()
    body = client.post("/kakao/skill", json=kakao_payload(user, "저장할 수 없는 그림")).get_json()
    assert "문제가 생겼어요" in text_of(body) and not has_picture(body)
    # Two heartbeats later the worker is still there.
    answered_at, beats = time.time(), set()

    def beat_after_the_answer() -> bool:
        raw = outage["r"].get(keys.heartbeat(outage["name"]))
        at = json.loads(raw)["at"] if raw else 0.0
        if at > answered_at:
            beats.add(at)
        return len(beats) >= 2

    assert wait_until(beat_after_the_answer, timeout=10, step=0.1)
    assert outage["worker"].poll() is None
    assert outage["r"].exists(keys.heartbeat(outage["name"]))
    assert outage["r"].get(keys.slot("kakao", user)) is None
    outage["blocker"].unlink()  # the disk is writable again: the same worker draws
    body = client.post("/kakao/skill", json=kakao_payload(user, "이제 저장되는 그림")).get_json()
    assert has_picture(body), body


def test_redis_killed_and_restarted_loses_no_queued_job_and_the_worker_reconnects(
    outage: dict[str, Any], callback_server: Any
) -> None:
    r = outage["r"]
    queue = Queue("text2image", connection=r, serializer=JSONSerializer)
    client = app_for(outage, sync_wait_s=0.0).test_client()
    user = new_user()
    token = "outage" + user
    # 1. A job waits in the queue: the worker is alive but suspended (rq suspend). rq looks at
    # the suspension between jobs, so one job goes first. The worker may still be finishing the
    # last test's job after its picture was handed over: wait until it listens again (blocked
    # in rq's dequeue, past its suspension check; rq marks it idle as soon as a job ends, before
    # that check), or it would see the suspension before "먼저".
    worker_key = f"rq:worker:{outage['name']}"
    assert wait_until(lambda: listening(r), timeout=10)
    suspend(r)
    warm = app_for(outage, sync_wait_s=4.0).test_client()
    assert has_picture(warm.post("/kakao/skill", json=kakao_payload(new_user(), "먼저")).get_json())
    assert wait_until(lambda: r.hget(worker_key, "state") == b"suspended", timeout=10)
    ack = client.post(
        "/kakao/skill", json=kakao_payload(user, "정전 뒤의 그림", callback_server.url(token))
    )
    assert ack.get_json()["useCallback"] is True
    request_id = keys.as_text(r.get(keys.slot("kakao", user)) or b"")
    assert queue.get_job_ids() == [request_id]
    # 2. Redis dies without warning.
    server: RedisServer = outage["server"]
    ends_before = loop_ends(outage)
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)
    # 3. While it is down every webhook answers at once, a friendly text for Kakao, never a 500.
    cold = app_for(outage, sync_wait_s=3.0).test_client()  # a web process starting now
    for c, text in ((client, "정전 중의 그림"), (cold, "도움말"), (cold, "고양이")):
        response, took = timed_post(c, "/kakao/skill", json=kakao_payload(new_user(), text))
        assert response.status_code == 200 and took < KAKAO_LIMIT_S, (response.status, took)
        assert "잠시 쉬고 있어요" in text_of(response.get_json())
    line_body = b'{"events": []}'
    others = [
        timed_post(
            cold,
            "/telegram/webhook",
            json={"update_id": 7, "message": {"chat": {"id": 7}, "text": "hi"}},
            headers={"X-Telegram-Bot-Api-Secret-Token": outage["settings"]["telegram_secret"]},
        ),
        timed_post(
            cold,
            "/line/webhook",
            data=line_body,
            content_type="application/json",
            headers={
                "X-Line-Signature": signature(line_body, outage["settings"]["line_channel_secret"])
            },
        ),
    ]
    for path in ("/healthz", "/readyz", "/metrics", "/media/" + "a" * 32 + ".jpg"):
        started = time.perf_counter()
        others.append((cold.get(path), time.perf_counter() - started))
    for response, took in others:
        assert response.status_code != 500 and took < KAKAO_LIMIT_S, (response.request.path,)
    assert cold.get("/healthz").status_code == 200
    assert cold.get("/readyz").get_json()["redis"] is False
    # 4. Longer than the worker's own retries (about 3.5 s): rq's loop ends and the worker
    # must reconnect by itself (its log says so). Then Redis comes back from its append-only
    # file.
    assert wait_until(lambda: loop_ends(outage) > ends_before, timeout=LOOP_END_S, step=0.1)
    server.start()  # the same port, folder and append-only file
    assert queue.get_job_ids() == [request_id], "a queued job must survive the crash"
    first = client.post("/kakao/skill", json=kakao_payload(new_user(), "도움말"))
    assert "잠시 쉬고 있어요" not in text_of(first.get_json()), "the web reconnects at once"
    # 5. The same worker process reconnects by itself, and the user gets the picture.
    assert wait_until(lambda: r.exists(keys.heartbeat(outage["name"])), timeout=10)
    resume(r)
    calls = callback_server.wait_for(token, timeout=30)
    assert calls and has_picture(calls[0].body), calls
    assert outage["worker"].poll() is None, "the worker never exited"
    assert len([c for c in callback_server.calls if c.token == token]) == 1


def test_a_stalled_redis_answers_within_kakaos_budget_and_the_picture_is_kept(
    outage: dict[str, Any],
) -> None:
    r, proc = outage["r"], outage["server"].proc
    worker_key = f"rq:worker:{outage['name']}"
    assert wait_until(lambda: r.exists(keys.heartbeat(outage["name"])), timeout=10)
    assert wait_until(lambda: listening(r), timeout=10)
    # The worker holds the next job (suspended after one more), so Redis can stall while the
    # webhook waits for it.
    suspend(r)
    warm = app_for(outage, sync_wait_s=3.0).test_client()
    assert has_picture(warm.post("/kakao/skill", json=kakao_payload(new_user(), "먼저")).get_json())
    assert wait_until(lambda: r.hget(worker_key, "state") == b"suspended", timeout=10)
    user = new_user()
    answers: list[tuple[Any, float]] = []
    waiting = threading.Thread(
        target=lambda: answers.append(
            timed_post(warm, "/kakao/skill", json=kakao_payload(user, "멈춘 서버의 그림"))
        )
    )
    waiting.start()
    # The webhook is waiting for the worker's hand-over (parked in its BLPOP).
    assert wait_until(lambda: blocked_in(r) == 1, timeout=5)
    # Redis stops answering without closing anything (a stalled host, a full network buffer).
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        stalled = app_for(outage, sync_wait_s=3.0).test_client()  # its first read stalls too
        response, took = timed_post(
            stalled, "/kakao/skill", json=kakao_payload(new_user(), "고양이")
        )
        assert took < 2.0 and "잠시 쉬고 있어요" in text_of(response.get_json()), took
        waiting.join(KAKAO_LIMIT_S + 1)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    ((response, took),) = answers
    assert took < KAKAO_LIMIT_S and "잠시 쉬고 있어요" in text_of(response.get_json()), took
    # Redis is back: the worker draws the job; its webhook is gone, so a heartbeat keeps the
    # picture and the user's next message gets it.
    resume(r)
    assert wait_until(lambda: r.llen(keys.kept("kakao", user)) > 0, timeout=20)
    body = warm.post("/kakao/skill", json=kakao_payload(user, "도움말")).get_json()
    assert has_picture(body), body
