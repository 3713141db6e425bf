"""Honest admission, fairness and operator controls, through the real webhook and workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job as RqJob
from rq.registry import CanceledJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from bot.core import admission, keys
from tests.support import Workers, jobs_of, new_user, post_kakao, text_of, wait_until


def queued(r: redis.Redis) -> int:
    return Queue("text2image", connection=r, serializer=JSONSerializer).count


@pytest.fixture(scope="module")
def slow(private_workers: Any) -> Iterator[Workers]:
    """A private worker on its own database that sleeps 1.5 s before each job, so jobs queue up."""
    with private_workers("admission", delay_s=1.5, max_batch=1) as workers:
        yield workers


def test_refuses_at_once_when_the_estimate_misses_the_deadline(
    make_app: Any, stack: Any, callback_server: Any
) -> None:
    r = stack["redis"]
    field = admission.service_field("text2image", "tiny")
    before = r.hget(keys.SERVICE_TIMES, field)
    # What workers would have measured on a model far slower than the callback's minute.
    r.hset(keys.SERVICE_TIMES, field, "120")
    try:
        client = make_app(sync_wait_s=0.0).test_client()
        user = new_user()
        depth = queued(r)
        body = post_kakao(client, user, "아주 느린 서버", callback_server.url("slow" + user))
        assert "useCallback" not in body
        assert "다시 보내 주세요" in text_of(body)
        assert queued(r) == depth
        assert r.get(keys.slot("kakao", user)) is None
        assert r.get(admission.quota_key("kakao", user)) is None, "a refusal counts nothing"
    finally:
        if before is None:
            r.hdel(keys.SERVICE_TIMES, field)
        else:
            r.hset(keys.SERVICE_TIMES, field, before)


def test_waiting_message_states_the_expected_seconds(make_app: Any, callback_server: Any) -> None:
    client = make_app(sync_wait_s=0.0).test_client()
    user = new_user()
    body = post_kakao(client, user, "기다리는 동안", callback_server.url("wait" + user))
    assert body["useCallback"] is True
    assert "초" in body["data"]["text"]
    assert callback_server.wait_for("wait" + user)


def test_no_live_worker_says_so_at_once(make_app: Any, redis_url: str) -> None:
    # redis_url: a database of this test's own, where no worker listens
    client = make_app(redis_url=redis_url, sync_wait_s=0.0).test_client()
    body = post_kakao(client, new_user(), "아무도 없는 서버")
    assert "쉬고 있어요" in text_of(body)
    assert queued(redis.Redis.from_url(redis_url)) == 0


def test_rate_limit_over_a_sliding_window(make_app: Any, stack: Any) -> None:
    r = stack["redis"]
    client = make_app(sync_wait_s=0.0, rate_limit=2, rate_window_s=60).test_client()
    user = new_user()
    for prompt in ("첫째 그림", "둘째 그림"):
        assert "아직 그리는 중" in text_of(post_kakao(client, user, prompt))
        # The worker frees the slot before it keeps the picture (the pull path): wait for both.
        assert wait_until(lambda: r.get(keys.slot("kakao", user)) is None, timeout=30)
        assert wait_until(lambda: r.llen(keys.kept("kakao", user)) > 0)
        r.delete(keys.kept("kakao", user))
    refused = post_kakao(client, user, "셋째 그림")
    assert "천천히" in text_of(refused)
    assert r.get(keys.slot("kakao", user)) is None


def test_identical_requests_within_the_window_become_one_job(
    make_app: Any, stack: Any, callback_server: Any
) -> None:
    r = stack["redis"]
    client = make_app(sync_wait_s=0.0).test_client()
    user = new_user()
    first = post_kakao(client, user, "두 번 누른 요청", callback_server.url("dup1" + user))
    second = post_kakao(client, user, "두 번 누른 요청", callback_server.url("dup2" + user))
    assert first["useCallback"] is True
    assert "방금 받았어요" in text_of(second)
    assert callback_server.wait_for("dup1" + user)
    # The one job has ended, its delivery done, and no other holds the user's slot.
    assert wait_until(
        lambda: len(jobs_of(r, user)) == 1 and r.get(keys.slot("kakao", user)) is None
    )
    assert not [c for c in callback_server.calls if c.token == "dup2" + user]


def test_cancel_a_queued_job_and_drop_a_running_one(make_app: Any, slow: Any) -> None:
    r = slow.redis
    client = make_app(redis_url=slow.url, sync_wait_s=0.0).test_client()
    runner, waiter = new_user(), new_user()
    post_kakao(client, runner, "먼저 그리는 그림")
    running_job = keys.as_text(r.get(keys.slot("kakao", runner)) or b"-")
    assert wait_until(lambda: r.get(keys.running(running_job)) is not None)
    post_kakao(client, waiter, "줄 서 있는 그림")
    waiting_job = keys.as_text(r.get(keys.slot("kakao", waiter)))
    assert "취소했어요" in text_of(post_kakao(client, waiter, "취소"))
    assert r.get(keys.slot("kakao", waiter)) is None
    registry = CanceledJobRegistry("text2image", connection=r, serializer=JSONSerializer)
    assert waiting_job in registry.get_job_ids()
    assert "결과를 보내지 않을게요" in text_of(post_kakao(client, runner, "취소"))
    assert r.get(keys.slot("kakao", runner)) is None
    # The running job finishes; its result must go nowhere.
    finished = FinishedJobRegistry("text2image", connection=r, serializer=JSONSerializer)
    assert wait_until(lambda: running_job in finished.get_job_ids(), timeout=15)
    assert (
        RqJob.fetch(running_job, connection=r, serializer=JSONSerializer).return_value()[
            "delivered"
        ]
        == "dropped"
    )
    assert r.llen(keys.kept("kakao", runner)) == 0
    assert r.llen(keys.kept("kakao", waiter)) == 0
    assert "취소할 요청이 없어요" in text_of(post_kakao(client, waiter, "취소"))


def test_operator_jobs_go_to_the_front(make_app: Any, slow: Any) -> None:
    r = slow.redis
    operator = new_user()
    client = make_app(redis_url=slow.url, sync_wait_s=0.0, operators=(operator,)).test_client()
    users = [new_user() for _ in range(3)]
    for user in users:
        post_kakao(client, user, f"보통 요청 {user[:6]}")
    post_kakao(client, operator, "운영자 요청")
    op_job = keys.as_text(r.get(keys.slot("kakao", operator)))
    ids = Queue("text2image", connection=r, serializer=JSONSerializer).get_job_ids()
    assert ids and ids[0] == op_job


def test_admission_queues_in_the_same_transaction_and_a_refusal_leaves_no_job(
    make_app: Any, slow: Any
) -> None:
    from rq.job import Job as RqJob

    from bot.core.events import Event
    from bot.core.job import Request

    r = slow.redis
    core = make_app(redis_url=slow.url, sync_wait_s=0.0).extensions["koalatalk"].core
    user = new_user()
    queue = Queue("text2image", connection=r, serializer=JSONSerializer)

    def submit(request_id: str, prompt: str) -> Any:
        event = Event(
            messenger="kakao",
            user=user,
            text=prompt,
            received_at=time.time(),
            request_id=request_id,
            callback_url=None,
            lang="ko",
        )
        return core.submit(event, Request(prompt=prompt, seed=3))

    # Redis forgot its scripts (a restart, SCRIPT FLUSH): the EVALSHA fails before anything is
    # pushed, admission loads the script and tries again, so the job is queued once all the same.
    r.script_flush()
    first, second = "first" + user[:20], "second" + user[:20]
    assert submit(first, "한 번에 들어가는 그림").reply is not None  # the pull path's answer
    # queued once: in the queue, or already taken by the slow worker (rq's intermediate queue,
    # then its started registry)
    where = [
        *queue.get_job_ids(),
        *(keys.as_text(x) for x in r.lrange(queue.intermediate_queue_key, 0, -1)),
        *queue.started_job_registry.get_job_ids(),
    ]
    assert r.exists(RqJob.key_for(first)) and where.count(first) == 1, where
    assert keys.as_text(r.get(keys.slot("kakao", user))) == first
    # A refused request (the user's slot is taken) leaves neither a job nor a queue entry.
    r.script_flush()
    refused = submit(second, "기다리지 못한 그림")
    assert "아직 처리하고 있어요" in " ".join(getattr(p, "text", "") for p in refused.reply.parts)
    assert not r.exists(RqJob.key_for(second)) and second not in queue.get_job_ids()
    assert not r.exists(keys.claim(second))


def test_a_job_admitted_but_not_saved_is_taken_back_whole(make_app: Any, slow: Any) -> None:
    from bot.core.events import Event
    from bot.core.job import Request

    r = slow.redis
    core = make_app(redis_url=slow.url, sync_wait_s=0.0, daily_quota=5).extensions["koalatalk"].core
    user = new_user()
    request_id = "broken" + user[:20]
    # rq's HSET of the job fails inside the MULTI (the key holds a string), after the script
    # admitted and pushed it: the push, the slot and the quota are all given back.
    r.set(f"rq:job:{request_id}", "not a hash")
    event = Event(
        messenger="kakao",
        user=user,
        text="저장되지 않는 그림",
        received_at=time.time(),
        request_id=request_id,
        callback_url=None,
        lang="ko",
    )
    with pytest.raises(redis.ResponseError):
        core.submit(event, Request(prompt="저장되지 않는 그림", seed=3))
    assert request_id not in Queue("text2image", connection=r).get_job_ids()
    assert r.get(keys.slot("kakao", user)) is None
    assert int(r.get(admission.quota_key("kakao", user)) or 0) == 0


def test_maintenance_and_block_list_by_admin_command(make_app: Any, stack: Any) -> None:
    r = stack["redis"]
    operator, user = new_user(), new_user()
    client = make_app(sync_wait_s=0.0, operators=(operator,)).test_client()
    try:
        started = post_kakao(client, operator, "/점검 오후 3시까지 쉬어요")
        assert "점검을 시작했어요" in text_of(started)
        # Web processes read operator state with a one-second cache; the one that ran the
        # command has dropped its own, so it refuses the next request at once.
        depth = queued(r)
        assert "오후 3시까지 쉬어요" in text_of(post_kakao(client, user, "점검 중 요청"))
        assert queued(r) == depth
        assert "점검을 끝냈어요" in text_of(post_kakao(client, operator, "/점검 끝"))
        assert "차단했어요" in text_of(post_kakao(client, operator, f"/차단 {user}"))
        assert "이용할 수 없어요" in text_of(post_kakao(client, user, "차단된 요청"))
        assert "풀었어요" in text_of(post_kakao(client, operator, f"/차단 해제 {user}"))
        assert "이용할 수 없어요" not in text_of(post_kakao(client, user, "풀린 요청"))
    finally:
        r.delete(keys.MAINTENANCE)
        r.srem(keys.BLOCKED, f"kakao:{user}")


def test_a_non_operator_cannot_run_admin_commands(make_app: Any, stack: Any) -> None:
    client = make_app(sync_wait_s=0.0).test_client()
    post_kakao(client, new_user(), "/점검 모두 멈춰")
    assert stack["redis"].get(keys.MAINTENANCE) is None


def test_maintenance_and_block_list_by_settings(make_app: Any) -> None:
    blocked = new_user()
    client = make_app(sync_wait_s=0.0, maintenance="점검 중이에요").test_client()
    assert "점검 중이에요" in text_of(post_kakao(client, new_user(), "요청"))
    client = make_app(sync_wait_s=0.0, blocked_users=(f"kakao:{blocked}",)).test_client()
    assert "이용할 수 없어요" in text_of(post_kakao(client, blocked, "요청"))


def test_daily_quota_and_refund_on_failure(make_app: Any, stack: Any, callback_server: Any) -> None:
    from bot.core.events import Event
    from bot.core.job import Request

    r = stack["redis"]
    user = new_user()
    app = make_app(sync_wait_s=0.0, daily_quota=1)
    client = app.test_client()
    # A job that fails in the worker gives its quota back.
    core = app.extensions["koalatalk"].core
    event = Event(
        messenger="kakao",
        user=user,
        text="망가진 요청",
        received_at=time.time(),
        request_id="quota" + user[:20],
        callback_url=None,
        lang="ko",
    )
    core.submit(event, Request(prompt="망가진 요청", width=30, height=30, seed=1))
    assert wait_until(lambda: r.get(keys.slot("kakao", user)) is None)
    assert wait_until(lambda: int(r.get(admission.quota_key("kakao", user)) or 0) == 0)
    assert wait_until(lambda: r.llen(keys.kept("kakao", user)) > 0)  # the apology, kept
    r.delete(keys.kept("kakao", user))
    assert "아직 그리는 중" in text_of(post_kakao(client, user, "오늘의 그림"))
    assert wait_until(lambda: r.get(keys.slot("kakao", user)) is None, timeout=30)
    assert wait_until(lambda: r.llen(keys.kept("kakao", user)) > 0)
    r.delete(keys.kept("kakao", user))
    assert "내일 다시 만나요" in text_of(post_kakao(client, user, "하나 더"))
