"""Dynamic batching for the text-to-image worker, on top of rq's own bookkeeping.

After rq hands the worker a draw job, the worker looks at the head of its queue for compatible
jobs (same preset, size, steps and guidance), waiting at most BATCH_WAIT_MS, and takes up to
MAX_BATCH - 1 of them. Taking is one atomic move from the queue into rq's intermediate queue,
so two workers never take the same job and a crash leaves it where rq's maintenance finds it.
One pipeline call draws the whole batch, with a generator per prompt (each seed is respected).
Then every job runs through rq's normal execution, one by one, so the started, finished and
failed registries tell the truth; each job's function finds its picture already drawn. A bad
item never costs the others: if the batched call fails, each job simply draws alone.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from rq import Queue
from rq.job import Job as RqJob
from rq.worker import WorkerStatus

from bot.core import keys
from bot.core.job import TEXT_TO_IMAGE_QUEUE, Job
from workers import prompting
from workers.rqworker import ResidentWorker
from workers.runtime import Runtime, current

log = logging.getLogger(__name__)

# Take a job from the queue into rq's intermediate queue and mark it as running here, so that
# if this worker dies before the job starts, the heartbeat rescue finds it (workers/recovery).
_TAKE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class Precomputed:
    """A picture drawn in a batch, waiting for its job's turn."""

    prepared: prompting.Prepared
    image: Any
    share_s: float  # this job's share of the batch's model time


def record_model_call(
    rt: Runtime, started: float, ended: float, size: int, gather_s: float = 0.0
) -> None:
    """Append one model call to the worker timeline (utilisation, bench/throughput's overhead)."""
    entry = json.dumps(
        {
            "worker": rt.name,
            "start": round(started, 6),
            "end": round(ended, 6),
            "size": size,
            "gather_s": round(gather_s, 6),
        }
    )
    with rt.redis.pipeline(transaction=False) as pipe:
        pipe.lpush(keys.MODEL_CALLS, entry)
        pipe.ltrim(keys.MODEL_CALLS, 0, 4999)
        pipe.expire(keys.MODEL_CALLS, 3600)
        pipe.execute()


def running_ttl(rt: Runtime) -> int:
    """How long a running mark outlives a job that never ends it."""
    return rt.settings.job_timeout_s + 60


def batch_key(payload: dict[str, Any]) -> tuple[Any, ...] | None:
    """Jobs with equal keys can share one pipeline call; None: this job never batches."""
    request = payload.get("request", {})
    if payload.get("task") != "draw" or request.get("source_image"):
        return None
    return (
        payload.get("preset"),
        request.get("width"),
        request.get("height"),
        request.get("steps"),
        request.get("guidance"),
    )


def gather(rt: Runtime, queue: Queue, first: RqJob) -> list[RqJob]:
    """Take compatible jobs from the head of the queue, waiting at most batch_wait_ms."""
    wanted = batch_key(first.args[0]) if first.args else None
    room = rt.settings.max_batch - 1
    if wanted is None or room <= 0:
        return []
    until = time.monotonic() + rt.settings.batch_wait_ms / 1000
    taken: list[RqJob] = []
    while True:
        ids = queue.get_job_ids(0, 4 * rt.settings.max_batch)
        for job in RqJob.fetch_many(ids, connection=rt.redis, serializer=queue.serializer):
            if len(taken) >= room:
                break
            if job is None or not job.args or batch_key(job.args[0]) != wanted:
                continue
            if time.time() > job.args[0].get("deadline", 0):
                continue  # left for its own run, which tells the user
            if rt.redis.eval(
                _TAKE,
                3,
                queue.key,
                queue.intermediate_queue_key,
                keys.running(job.id),
                job.id,
                rt.name,
                running_ttl(rt),
            ):
                taken.append(job)
        if len(taken) >= room or time.monotonic() >= until:
            return taken
        time.sleep(0.002)


def precompute(rt: Runtime, batch: list[RqJob], gather_s: float = 0.0) -> int:
    """Draw a batch in one call; returns how many pictures were stored for their jobs."""
    items: list[tuple[Job, prompting.Prepared]] = []
    for rq_job in batch:
        job = Job.from_dict(rq_job.args[0])
        if rt.redis.exists(keys.dropped(job.request_id)):
            continue
        try:
            prepared = prompting.prepare(rt, job.request)
        except Exception:
            log.exception("could not prepare a batch item; it will run alone")
            continue
        if not prepared.blocked:
            items.append((job, prepared))
    if len(items) < 2:
        return 0
    request = items[0][0].request
    started, wall = time.perf_counter(), time.time()
    try:
        images = rt.models["text2image"].generate(
            [p.prompt for _, p in items],
            [j.request.seed for j, _ in items],
            negative_prompts=[p.negative for _, p in items],
            width=request.width,
            height=request.height,
            steps=request.steps,
            guidance=request.guidance,
        )
    except Exception:
        log.exception("batched call failed; each job draws alone")
        return 0
    share = (time.perf_counter() - started) / len(items)
    record_model_call(rt, wall, time.time(), len(items), gather_s)
    for (job, prepared), image in zip(items, images, strict=True):
        rt.precomputed[job.request_id] = Precomputed(prepared, image, share)
    log.info("batch drawn", extra={"size": len(items), "model_s": round(share * len(items), 4)})
    return len(items)


class BatchingWorker(ResidentWorker):
    """rq's SimpleWorker (no fork, workers/rqworker.py) that draws compatible text-to-image jobs
    together."""

    def execute_job(self, job: RqJob, queue: Queue) -> None:
        rt = current()
        # Busy before gathering: a SIGTERM now is a warm shutdown after the batch, not a
        # StopRequested that would leave the gathered jobs stranded.
        self.set_state(WorkerStatus.BUSY)
        rt.turn_started, rt.turn_share_s = time.time(), 0.0  # the service time's start
        try:
            self._turn(rt, job, queue)
        finally:
            rt.turn_started, rt.turn_share_s = 0.0, 0.0  # idle time is no service time

    def _turn(self, rt: Runtime, job: RqJob, queue: Queue) -> None:
        """The job, or the batch it leads, from gathering to the last delivery."""
        # Marked before anything else: a death from here on is noticed within seconds.
        rt.redis.set(keys.running(job.id), rt.name, ex=running_ttl(rt))
        gather_started = time.perf_counter()
        extra = gather(rt, queue, job) if queue.name == TEXT_TO_IMAGE_QUEUE else []
        gather_s = time.perf_counter() - gather_started
        if not extra:
            super().execute_job(job, queue)
            return
        batch = [job, *extra]
        try:
            precompute(rt, batch, gather_s)
            # Gathering, preparing and drawing the batch: each of its jobs bears an equal share.
            now = time.time()
            rt.turn_started, rt.turn_share_s = now, (now - rt.turn_started) / len(batch)
            for item in batch:
                super().execute_job(item, queue)
        finally:
            for item in batch:
                rt.precomputed.pop(item.id, None)
