"""Dynamic batching and several workers on one Redis, with real worker processes."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image, ImageChops, ImageStat
from rq.job import Job as RqJob
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from bot.core import keys
from bot.core.events import Event, Reply
from bot.core.job import Request
from bot.core.stores import LocalImageStore
from tests.support import Workers, in_process_runtime, new_user, wait_until


@pytest.fixture(scope="module")
def batching(private_workers: Any) -> Iterator[Workers]:
    """A private worker on its own database that gathers up to 4 jobs for 400 ms."""
    with private_workers("batching", max_batch=4, batch_wait_ms=400) as workers:
        yield workers


def submit_many(core: Any, requests: list[tuple[str, Request]]) -> list[str]:
    """Queue one job per (user, request) through the real admission and enqueue path."""
    ids = []
    for user, request in requests:
        rid = "b" + new_user()[:24]
        event = Event(
            messenger="kakao",
            user=user,
            text=request.prompt,
            received_at=time.time(),
            request_id=rid,
            lang="en",
        )
        outcome = core.submit(event, request)
        assert outcome.reply is not None and outcome.reply.kind != "busy", outcome
        ids.append(rid)
    return ids


def kept_picture(r: redis.Redis, store: LocalImageStore, user: str) -> Image.Image:
    raw = r.lindex(keys.kept("kakao", user), 0)
    assert raw is not None
    reply = Reply.from_dict(json.loads(raw))
    url = next(p.url for p in reply.parts if hasattr(p, "url"))
    data = store.get(url.rsplit("/", 1)[-1].removesuffix(".jpg"))
    assert data is not None
    return Image.open(io.BytesIO(data)).convert("RGB")


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def test_compatible_jobs_are_drawn_together_and_each_user_gets_their_seed(
    make_app: Any, batching: Any, stack: Any
) -> None:
    from models.text2image import TextToImage
    from workers.imaging import to_jpeg

    r = batching.redis
    core = make_app(redis_url=batching.url, sync_wait_s=0.0).extensions["koalatalk"].core
    users = [new_user() for _ in range(4)]
    prompts = ["a red koala", "a blue whale", "a green frog", "a yellow bird"]
    ids = submit_many(
        core,
        [
            (u, Request(prompt=p, seed=100 + i, language="en"))
            for i, (u, p) in enumerate(zip(users, prompts, strict=True))
        ],
    )
    finished = FinishedJobRegistry("text2image", connection=r, serializer=JSONSerializer)
    assert wait_until(lambda: set(ids) <= set(finished.get_job_ids()), timeout=60)
    results = [RqJob.fetch(i, connection=r, serializer=JSONSerializer).return_value() for i in ids]
    assert sum("batch_share_s" in res for res in results) >= 2, results
    store = LocalImageStore(Path(batching.settings["media_dir"]), 3600)
    model = TextToImage.load("tiny", "cpu")
    pictures = [kept_picture(r, store, u) for u in users]
    for i, (prompt, picture) in enumerate(zip(prompts, pictures, strict=True)):
        alone = model.generate([prompt], [100 + i])[0]
        reference = Image.open(io.BytesIO(to_jpeg(alone))).convert("RGB")
        assert mean_difference(picture, reference) < 2.0, f"seed {100 + i} not respected"
    assert mean_difference(pictures[0], pictures[1]) > 2.0, "users got the same picture"


def test_one_bad_item_does_not_lose_the_others(make_app: Any, batching: Any) -> None:
    r = batching.redis
    core = make_app(redis_url=batching.url, sync_wait_s=0.0).extensions["koalatalk"].core
    users = [new_user() for _ in range(4)]
    requests = [
        Request(prompt="a calm lake", seed=1, language="en"),
        Request(prompt="a broken seed", seed=2**33, language="en"),
        Request(prompt="a quiet forest", seed=3, language="en"),
        Request(prompt="a sunny beach", seed=4, language="en"),
    ]
    ids = submit_many(core, list(zip(users, requests, strict=True)))
    finished = FinishedJobRegistry("text2image", connection=r, serializer=JSONSerializer)
    failed = FailedJobRegistry("text2image", connection=r, serializer=JSONSerializer)
    good = [ids[0], ids[2], ids[3]]
    assert wait_until(
        lambda: set(good) <= set(finished.get_job_ids()) and ids[1] in failed.get_job_ids(),
        timeout=60,
    )
    for user in (users[0], users[2], users[3]):
        assert r.llen(keys.kept("kakao", user)) == 1
    apology = Reply.from_dict(json.loads(r.lindex(keys.kept("kakao", users[1]), 0) or b"{}"))
    assert apology.kind == "error", "the bad item's user hears an apology"
    for user in users:
        assert r.get(keys.slot("kakao", user)) is None


def test_two_workers_share_the_queue_and_no_job_runs_twice(
    make_app: Any, private_workers: Any
) -> None:
    with private_workers("pair", count=2, delay_s=0.3, max_batch=1) as pair:
        url, r, names = pair.url, pair.redis, set(pair.workers)
        core = make_app(redis_url=url, sync_wait_s=0.0).extensions["koalatalk"].core
        users = [new_user() for _ in range(8)]
        ids = submit_many(
            core,
            [
                (u, Request(prompt=f"picture {n}", seed=n, language="en"))
                for n, u in enumerate(users)
            ],
        )
        finished = FinishedJobRegistry("text2image", connection=r, serializer=JSONSerializer)
        assert wait_until(lambda: set(ids) <= set(finished.get_job_ids()), timeout=60)
        ran_on = {RqJob.fetch(i, connection=r, serializer=JSONSerializer).worker_name for i in ids}
        assert ran_on == names, "both workers must take jobs"
        for user in users:
            assert r.llen(keys.kept("kakao", user)) == 1, "each job ran and delivered once"


def test_jobs_a_dead_batching_worker_had_taken_are_taken_up_again(
    make_app: Any, redis_client: Any, redis_url: str, tmp_path: Path
) -> None:
    """gather() marks what it takes; the heartbeat rescue finds it in rq's intermediate queue."""
    from rq import Queue

    from bot.core import recovery
    from bot.core.settings import Settings
    from workers import batching

    url, r = redis_url, redis_client  # a database of this test's own
    settings = Settings(
        mode="development", redis_url=url, max_batch=4, batch_wait_ms=0, log_json=False
    )
    # A worker that never heartbeats: exactly what a SIGKILLed one looks like from Redis.
    rt = in_process_runtime(
        settings, r, tmp_path / "media", name="gone-worker", queues=("text2image",)
    )
    core = make_app(redis_url=url, sync_wait_s=0.0).extensions["koalatalk"].core
    queue = Queue("text2image", connection=r, serializer=JSONSerializer)
    requests = [Request(prompt=f"batch item {n}", seed=n, language="en") for n in range(3)]
    users = [new_user() for _ in requests]
    # Admission needs a live worker on the queue: a real heartbeat from this process.
    r.set(
        keys.heartbeat("alive"),
        json.dumps({"name": "alive", "queues": ["text2image"], "loaded": True}),
        ex=60,
    )
    r.sadd(keys.WORKERS, "alive")
    ids = submit_many(core, list(zip(users, requests, strict=True)))
    # As rq's dequeue does for the worker, and as BatchingWorker marks its first job:
    r.lmove(queue.key, queue.intermediate_queue_key)
    r.set(keys.running(ids[0]), rt.name, ex=60)
    first = RqJob.fetch(ids[0], connection=r, serializer=JSONSerializer)
    taken = batching.gather(rt, queue, first)
    assert [j.id for j in taken] == ids[1:]
    waiting = [keys.as_text(i) for i in r.lrange(queue.intermediate_queue_key, 0, -1)]
    assert waiting == ids and queue.get_job_ids() == []
    assert all(r.get(keys.running(i)) == b"gone-worker" for i in ids)
    found = recovery.lost_jobs(r, ["text2image"], default_service_s=1.0)
    assert sorted(f.job.request_id for f in found) == sorted(ids)
    assert {f.how for f in found} == {recovery.RETRIED}
    assert r.llen(queue.intermediate_queue_key) == 0
    assert set(queue.get_job_ids()) == set(ids), "back in the queue, nothing lost"
    for user, rid in zip(users, ids, strict=True):
        assert r.get(keys.slot("kakao", user)) == rid.encode(), "the user keeps the slot"


def test_admission_learns_the_workers_whole_time_per_job(make_app: Any, batching: Any) -> None:
    """The service time admission's estimate reads is what a job queued behind this one waits:
    the worker's wall time for it, here a lone job's 400 ms gathering wait for companions, not
    only the time inside the model and the job function (issue 14: that made the estimate a
    third of the real wait, so a deep queue was held for the whole sync wait)."""
    from bot.core import admission

    r = batching.redis
    field = admission.service_field("text2image", "tiny")
    r.hdel(keys.SERVICE_TIMES, field)  # the first job's time is then the average itself
    core = make_app(redis_url=batching.url, sync_wait_s=0.0).extensions["koalatalk"].core
    [rid] = submit_many(core, [(new_user(), Request(prompt="a lone koala", seed=5, language="en"))])
    finished = FinishedJobRegistry("text2image", connection=r, serializer=JSONSerializer)
    assert wait_until(lambda: rid in finished.get_job_ids(), timeout=60)
    assert wait_until(lambda: r.hget(keys.SERVICE_TIMES, field) is not None, timeout=10)
    learned = float(r.hget(keys.SERVICE_TIMES, field) or 0)
    assert learned >= 0.4, f"{learned:.3f} s leaves out the wait for companions"
