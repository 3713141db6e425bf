"""Each interleaving of the hand-over between the waiting webhook and the worker.

The real functions run against real Redis; the test forces the order by calling one side first,
or by pausing one side in a thread.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

from bot.core import handover, keys
from bot.core.events import Picture, Reply, Text
from tests.support import blocked_in, wait_until


def reply(n: int = 0) -> Reply:
    return Reply((Picture(f"https://x/{n}.jpg", "alt"), Text(f"line {n}")), kind="result")


def rid() -> str:
    return uuid.uuid4().hex


def test_worker_first_webhook_answers_directly(redis_client: Any) -> None:
    job = rid()
    claim = handover.worker_finish(redis_client, job, reply(1))
    assert claim.how == "direct"
    got = handover.webhook_wait(redis_client, job, 1.0, "callback")
    assert got == reply(1)


def test_webhook_budget_ends_first_worker_calls_back_after_the_ack(redis_client: Any) -> None:
    job = rid()
    before = time.time()
    assert handover.webhook_wait(redis_client, job, 0.05, "callback") is None
    claim = handover.worker_finish(redis_client, job, reply(2))
    assert claim.how == "callback"
    assert before <= claim.acked_at <= time.time()
    assert redis_client.llen(keys.wake(job)) == 0, "the webhook must not be woken after acking"


def test_no_callback_url_means_pull(redis_client: Any) -> None:
    job = rid()
    assert handover.webhook_wait(redis_client, job, 0.0, "pull") is None
    assert handover.worker_finish(redis_client, job, reply(3)).how == "pull"


def test_worker_finishes_in_the_gap_after_the_webhook_stopped_waiting(redis_client: Any) -> None:
    # The webhook's BLPOP timed out, then the worker claims before the webhook does:
    # the webhook's claim must lose and it answers with the stored result.
    job = rid()
    assert redis_client.blpop([keys.wake(job)], timeout=0.05) is None
    assert handover.worker_finish(redis_client, job, reply(4)).how == "direct"
    assert handover.webhook_claim(redis_client, job, "callback") == reply(4)


def test_worker_wakes_a_waiting_webhook(redis_client: Any) -> None:
    job = rid()
    got: list[Reply | None] = []
    waiter = threading.Thread(
        target=lambda: got.append(handover.webhook_wait(redis_client, job, 3.0, "callback"))
    )
    waiter.start()
    assert wait_until(lambda: blocked_in(redis_client) == 1, timeout=5)  # parked in BLPOP
    assert handover.worker_finish(redis_client, job, reply(5)).how == "direct"
    waiter.join(5)
    assert got == [reply(5)]


def test_exactly_one_side_delivers_under_random_timing(redis_url: str) -> None:
    """200 races with jittered timing: never both, never neither."""
    import redis

    pool = redis.ConnectionPool.from_url(redis_url)
    seen = {"webhook": 0, "worker": 0, "both": 0, "neither": 0}
    for n in range(200):
        job = rid()
        results: dict[str, Any] = {}
        budget = random.uniform(0.0, 0.02)
        worker_delay = random.uniform(0.0, 0.03)

        def webhook(job: str = job, budget: float = budget, results: dict = results) -> None:
            results["webhook"] = handover.webhook_wait(
                redis.Redis(connection_pool=pool), job, budget, "callback"
            )

        def worker(
            job: str = job, delay: float = worker_delay, n: int = n, results: dict = results
        ) -> None:
            time.sleep(delay)
            results["worker"] = handover.worker_finish(
                redis.Redis(connection_pool=pool), job, reply(n)
            )

        threads = [threading.Thread(target=webhook), threading.Thread(target=worker)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        webhook_delivers = results["webhook"] is not None
        worker_delivers = results["worker"].how == "callback"
        if webhook_delivers:
            assert results["webhook"] == reply(n)
        key = (
            "both"
            if webhook_delivers and worker_delivers
            else "webhook"
            if webhook_delivers
            else "worker"
            if worker_delivers
            else "neither"
        )
        seen[key] += 1
    assert seen["both"] == 0 and seen["neither"] == 0, seen
    assert seen["webhook"] and seen["worker"], f"timing must exercise both winners: {seen}"
    pool.disconnect()


def test_a_direct_hand_over_nobody_took_is_kept_once(redis_client: Any) -> None:
    # The worker won `direct`, but its webhook never took the wake signal (its web process died
    # or lost Redis mid-wait): once due, the result comes back exactly once, for keeping.
    job = rid()
    owner = ("kakao", "u-" + job[:8])
    assert (
        handover.worker_finish(
            redis_client, job, reply(6), owner=owner, taken_by=time.time() + 60
        ).how
        == "direct"
    )
    assert all(r[2] != reply(6) for r in handover.unanswered(redis_client, time.time())[0])
    due, looked = handover.unanswered(redis_client, time.time() + 61)
    assert ("kakao", owner[1], reply(6)) in due and looked >= 1
    assert handover.unanswered(redis_client, time.time() + 61) == ([], 0)


def test_a_direct_hand_over_the_webhook_took_is_not_kept(redis_client: Any) -> None:
    woken, gap = rid(), rid()
    owner = ("kakao", "u-taken")
    # woken: the webhook was waiting and took the wake signal
    got: list[Reply | None] = []
    waiter = threading.Thread(
        target=lambda: got.append(handover.webhook_wait(redis_client, woken, 3.0, "callback"))
    )
    waiter.start()
    assert wait_until(lambda: blocked_in(redis_client) == 1, timeout=5)  # parked in BLPOP
    handover.worker_finish(redis_client, woken, reply(7), owner=owner, taken_by=time.time())
    waiter.join(5)
    assert got == [reply(7)]
    # gap: the webhook stopped waiting, then lost its claim to the worker and answered directly
    assert redis_client.blpop([keys.wake(gap)], timeout=0.05) is None
    handover.worker_finish(redis_client, gap, reply(8), owner=owner, taken_by=time.time())
    assert handover.webhook_claim(redis_client, gap, "callback") == reply(8)
    found, _ = handover.unanswered(redis_client, time.time() + 1)
    assert not [f for f in found if f[2] in (reply(7), reply(8))], found
    assert not redis_client.zrangebyscore(keys.HANDOVERS, "-inf", time.time() + 1), (
        "every due hand-over leaves the watch list, taken or not"
    )
