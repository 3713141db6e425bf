"""One worker process serving both queues (`python -m workers text2image vision`), fairly, and
admission estimates that know the worker is shared."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image
from rq import Queue
from rq.job import Job as RqJob
from rq.serializers import JSONSerializer

from bot.core import admission, keys, photos
from bot.core.job import Job, Request
from bot.core.operator import Operations
from bot.core.settings import Settings
from tests.support import (
    new_user,
    wait_until,
)


@pytest.fixture(scope="module")
def shared(private_workers: Any, tmp_path_factory: Any) -> Iterator[dict[str, Any]]:
    """One worker with both tiny models, serving both queues, on its own database."""
    folder = tmp_path_factory.mktemp("shared")
    with private_workers(
        "shared",
        delay_s=0.15,
        queues=("text2image", "vision"),
        vlm_preset="tiny-kollava",
        max_batch=1,
        media_dir=folder / "media",
        photo_dir=folder / "photos",
    ) as workers:
        (proc,) = workers.workers.values()
        yield {"redis": workers.redis, "settings": workers.settings, "proc": proc}


def enqueue(r: redis.Redis, task: str, request: Request, preset: str) -> str:
    job = Job(
        request_id=uuid.uuid4().hex,
        messenger="kakao",
        user=new_user(),
        deadline=time.time() + 300,
        preset=preset,
        request=request,
        task=task,
    )
    Queue(job.queue, connection=r, serializer=JSONSerializer).enqueue_call(
        job.function, args=(job.to_dict(),), job_id=job.request_id, timeout=120, result_ttl=600
    )
    return job.request_id


def started_at(r: redis.Redis, job_id: str) -> float | None:
    job = RqJob.fetch(job_id, connection=r, serializer=JSONSerializer)
    return job.started_at.timestamp() if job.started_at else None


def test_photo_questions_start_while_drawings_keep_arriving(shared: dict[str, Any]) -> None:
    r, s = shared["redis"], shared["settings"]
    store = photos.store_from_settings(
        Settings.from_env({f"KOALATALK_{k.upper()}": v for k, v in s.items()})
    )
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 40)).save(buf, "JPEG")
    photo = store.put(buf.getvalue(), "photo")
    draws = [enqueue(r, "draw", Request(prompt=f"a koala {i}"), "tiny") for i in range(6)]
    asks = [
        enqueue(r, "ask", Request(question="무엇이 보이나요?", images=(photo,)), "tiny-kollava")
        for _ in range(3)
    ]
    text2image = Queue("text2image", connection=r, serializer=JSONSerializer)
    # Keep the drawing queue full: each time it runs low, more drawings arrive.
    end = time.time() + 150
    while time.time() < end and not all(started_at(r, a) for a in asks):
        if text2image.count < 4:
            draws.append(enqueue(r, "draw", Request(prompt="more koalas"), "tiny"))
        time.sleep(0.05)
    ask_starts = [started_at(r, a) for a in asks]
    assert all(ask_starts), "photo questions starved behind a stream of drawings"
    assert text2image.count > 0, "drawings were still waiting when the questions started"
    draw_starts = sorted(t for t in (started_at(r, d) for d in draws) if t)
    for k, start in enumerate(sorted(t for t in ask_starts if t)):
        before = sum(1 for t in draw_starts if t < start)
        assert before <= k + 2, f"question {k} waited for {before} drawings (round robin: ~{k + 1})"
    assert wait_until(
        lambda: all(
            RqJob.fetch(a, connection=r, serializer=JSONSerializer).get_status() == "finished"
            for a in asks
        ),
        timeout=60,
    )


def test_operations_count_the_shared_worker(shared: dict[str, Any]) -> None:
    s = Settings.from_env({f"KOALATALK_{k.upper()}": v for k, v in shared["settings"].items()})
    ops = Operations(s, shared["redis"])
    assert ops.workers("text2image") == 1 and ops.workers("vision") == 1
    assert ops.shared("vision", "text2image") == 1 == ops.shared("text2image", "vision")


def _ticket(
    queue_key: str, field: str, other_key: str, other_field: str, shared: int, workers: int = 1
) -> admission.Ticket:
    request_id = uuid.uuid4().hex
    return admission.Ticket(
        messenger="kakao",
        user=new_user(),
        text=f"shared {request_id}",
        request_id=request_id,
        queue_key=queue_key,
        service_field=field,
        workers=workers,
        budget_s=1000.0,
        slot_ttl_s=60,
        quota_day=time.strftime("%Y%m%d", time.gmtime()),
        job_key=RqJob.key_for(request_id),
        # rq's hash, as a HeldQueue writes it; the admission script pushes the job
        save_job=lambda pipe: pipe.hset(RqJob.key_for(request_id), "status", "queued"),
        other_queue_key=other_key,
        other_field=other_field,
        shared=shared,
    )


def test_estimate_counts_the_other_queues_jobs_on_a_shared_worker(redis_client: Any) -> None:
    r = redis_client
    tag = uuid.uuid4().hex[:8]
    photos_key, draws_key = f"{tag}:vision", f"{tag}:text2image"
    r.hset(keys.SERVICE_TIMES, mapping={f"{tag}:ask": 2.0, f"{tag}:draw": 3.0})
    limits = admission.Limits(
        rate_window_s=60, rate_limit=0, daily_quota=0, dedupe_ttl_s=30, default_service_s=1.0
    )
    r.rpush(photos_key, "p1", "p2")
    r.rpush(draws_key, *[f"d{i}" for i in range(5)])
    try:
        alone = admission.admit(r, _ticket(photos_key, f"{tag}:ask", "", "", 0), limits)
        assert (alone.ahead, alone.estimate_s) == (2, 6.0)  # 3 questions of 2 s
        # Shared: round robin takes a drawing (3 s) before each of the 3 questions.
        mixed = admission.admit(
            r, _ticket(photos_key, f"{tag}:ask", draws_key, f"{tag}:draw", 1), limits
        )
        assert (mixed.ahead, mixed.estimate_s) == (3, 4 * 2.0 + 4 * 3.0)
        # The reverse: a drawing behind 5 drawings, with 4 questions waiting (at most 4 taken).
        drawing = admission.admit(
            r, _ticket(draws_key, f"{tag}:draw", photos_key, f"{tag}:ask", 1), limits
        )
        assert (drawing.ahead, drawing.estimate_s) == (5, 6 * 3.0 + 4 * 2.0)
        # Two workers, one of them shared: the other queue costs half as much per round.
        half = admission.admit(
            r, _ticket(photos_key, f"{tag}:ask", draws_key, f"{tag}:draw", 1, workers=2), limits
        )
        assert half.ahead == 4 and half.estimate_s == 3 * 2.0 + min(6, 3) / 2 * 3.0
    finally:
        r.delete(photos_key, draws_key)
        r.hdel(keys.SERVICE_TIMES, f"{tag}:ask", f"{tag}:draw")


def test_procfile_and_run_script_show_both_ways() -> None:
    root = Path(__file__).resolve().parents[1]
    procfile = (root / "Procfile").read_text()
    assert "-m workers text2image vision" in procfile
    assert "-m workers text2image\n" in procfile and "-m workers vision\n" in procfile
    assert "SHARED_WORKER=1" in (root / "scripts/run").read_text()
