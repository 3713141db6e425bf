"""Jobs whose worker died: noticed through the heartbeats in seconds, not rq's slow maintenance.

A job's running mark names its worker. When that worker's heartbeat has expired, whoever
deletes the mark first (compare-and-delete: a live worker's heartbeat loop, or the web on the
user's next message) owns the clean-up, so it happens exactly once. The owner re-queues the job
at the front of its queue, keeping the user's slot, while its deadline leaves room for another
run and a live worker serves the queue (at most MAX_RETRIES times); otherwise it frees the
slot, records the job as failed and the caller tells the user. No torch here.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job as RqJob
from rq.job import JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from bot.core import admission, keys, slots
from bot.core.events import Reply, Text
from bot.core.job import Job
from bot.core.liveness import live_workers
from bot.core.texts import quick, say

log = logging.getLogger(__name__)
MAX_RETRIES = 1
RETRY_MARGIN_S = 1.0  # besides one service time: the rescuing worker may be mid-job
RETRIES = "koalatalk_retries"  # rq job.meta counter

_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

RETRIED, FAILED, ANSWERED, DROPPED = "retried", "failed", "answered", "dropped"


@dataclass(frozen=True)
class Recovered:
    """A lost job after its clean-up: what was done, and a stored answer it may have left."""

    job: Job
    how: str  # retried | failed (tell the user) | answered (it had finished) | dropped
    reply: Reply | None = None  # ANSWERED: the answer it stored, when nobody delivered it yet


def dead_owner(r: redis.Redis, request_id: str) -> str | None:
    """The worker named by the job's running mark, when that worker stopped heartbeating."""
    owner = r.get(keys.running(request_id))
    if not owner:
        return None
    name = keys.as_text(owner)
    return None if r.exists(keys.heartbeat(name)) else name


def recover(
    r: redis.Redis, request_id: str, owner: str, default_service_s: float
) -> Recovered | None:
    """Claim a job whose worker `owner` died and retry or fail it; None when another caller
    claimed it first (or the job is gone)."""
    if not r.eval(_CLAIM, 1, keys.running(request_id), owner):
        return None
    try:
        rq_job = RqJob.fetch(request_id, connection=r, serializer=JSONSerializer)
        job = Job.from_dict(rq_job.args[0])
    except (NoSuchJobError, IndexError, KeyError, TypeError) as exc:
        log.warning("lost job unreadable", extra={"job": request_id, "error": type(exc).__name__})
        return None
    stored = r.get(keys.result(request_id))
    if stored is not None:  # it died after handing its answer over
        _finish(r, rq_job, job, "worker died after answering")
        claim = keys.as_text(r.get(keys.claim(request_id)) or b"")
        reply = None if claim == "direct" else Reply.from_dict(json.loads(stored))
        return Recovered(job, ANSWERED, reply)
    if r.exists(keys.dropped(request_id)):  # the user cancelled it
        _finish(r, rq_job, job, "worker died; the user had cancelled")
        return Recovered(job, DROPPED)
    if _can_retry(r, rq_job, job, default_service_s):
        rq_job.meta[RETRIES] = int(rq_job.meta.get(RETRIES, 0)) + 1
        queue = Queue(job.queue, connection=r, serializer=JSONSerializer)
        rq_job.started_job_registry.remove_executions(rq_job)
        queue.enqueue_job(rq_job, at_front=True)  # the same id, the same slot
        log.warning("job lost with its worker: retried", extra={"job": request_id, "worker": owner})
        return Recovered(job, RETRIED)
    _finish(r, rq_job, job, "worker stopped heartbeating")
    admission.refund(r, job.messenger, job.user, request_id, str(job.meta.get("quota_day", "")))
    log.warning("job lost with its worker: failed", extra={"job": request_id, "worker": owner})
    return Recovered(job, FAILED)


def lost_reply(job: Job) -> Reply:
    """What the user of a job lost with its worker hears."""
    return Reply(
        (Text(say("worker_lost", job.lang)),), (quick("quick_help", job.lang),), kind="error"
    )


def _can_retry(r: redis.Redis, rq_job: RqJob, job: Job, default_service_s: float) -> bool:
    """Another run fits: retries left, a live worker on the queue, and time before the deadline."""
    if int(rq_job.meta.get(RETRIES, 0)) >= MAX_RETRIES:
        return False
    if not any(job.queue in w.get("queues", []) and w.get("loaded") for w in live_workers(r)):
        return False
    raw = r.hget(keys.SERVICE_TIMES, admission.service_field(job.queue, job.preset))
    service_s = float(raw) if raw is not None else default_service_s
    return job.deadline - time.time() > service_s + RETRY_MARGIN_S


def _finish(r: redis.Redis, rq_job: RqJob, job: Job, why: str) -> None:
    """Free the user's slot and record the job as failed, so rq's registries tell the truth."""
    slots.release(r, job.messenger, job.user, job.request_id)
    with r.pipeline() as pipe:
        rq_job.set_status(JobStatus.FAILED, pipeline=pipe)
        rq_job.failed_job_registry.add(
            rq_job, ttl=rq_job.failure_ttl or 86400, exc_string=why, pipeline=pipe
        )
        rq_job.started_job_registry.remove_executions(rq_job, pipeline=pipe)
        pipe.execute()


def lost_jobs(r: redis.Redis, queue_names: list[str], default_service_s: float) -> list[Recovered]:
    """Started jobs on these queues whose worker no longer heartbeats, each recovered once."""
    found: list[Recovered] = []
    for name in queue_names:
        registry = StartedJobRegistry(name, connection=r, serializer=JSONSerializer)
        # Jobs a batching worker took but had not started yet wait in rq's intermediate queue.
        waiting = Queue(name, connection=r, serializer=JSONSerializer).intermediate_queue_key
        taken = [keys.as_text(i) for i in r.lrange(waiting, 0, -1)]
        for job_id in dict.fromkeys([*registry.get_job_ids(cleanup=False), *taken]):
            owner = dead_owner(r, job_id)
            if owner is None:
                continue
            recovered = recover(r, job_id, owner, default_service_s)
            if recovered is not None:
                r.lrem(waiting, 1, job_id)
                found.append(recovered)
    return found
