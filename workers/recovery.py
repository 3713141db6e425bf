"""Jobs whose worker died: noticed through the heartbeats in seconds, not rq's slow maintenance.

Whoever frees the job's per-user slot (the web on the user's next message, or a live worker's
heartbeat loop) owns the clean-up, so it happens exactly once. No torch here.
"""

from __future__ import annotations

import logging

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job as RqJob
from rq.job import JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from bot import keys, slots

log = logging.getLogger(__name__)


def fail_lost_job(r: redis.Redis, request_id: str, why: str) -> RqJob | None:
    """Record a job whose worker died as failed, so rq's registries tell the truth."""
    try:
        job = RqJob.fetch(request_id, connection=r, serializer=JSONSerializer)
    except NoSuchJobError:
        r.delete(keys.running(request_id))
        return None
    with r.pipeline() as pipe:
        job.set_status(JobStatus.FAILED, pipeline=pipe)
        job.failed_job_registry.add(
            job, ttl=job.failure_ttl or 86400, exc_string=why, pipeline=pipe
        )
        job.started_job_registry.remove_executions(job, pipeline=pipe)
        pipe.delete(keys.running(request_id))
        pipe.execute()
    log.warning("job lost with its worker", extra={"request_id": request_id, "why": why})
    return job


def lost_jobs(r: redis.Redis, queue_names: list[str]) -> list[RqJob]:
    """Started jobs whose worker no longer heartbeats, each claimed by freeing its user's slot."""
    claimed: list[RqJob] = []
    for name in queue_names:
        registry = StartedJobRegistry(name, connection=r, serializer=JSONSerializer)
        for job_id in registry.get_job_ids(cleanup=False):
            if not slots.owner_is_dead(r, job_id):
                continue
            try:
                job = RqJob.fetch(job_id, connection=r, serializer=JSONSerializer)
                payload = job.args[0]
            except (NoSuchJobError, IndexError):
                continue
            if slots.release(r, payload["messenger"], payload["user"], job_id):
                failed = fail_lost_job(r, job_id, "worker stopped heartbeating")
                if failed is not None:
                    claimed.append(failed)
    return claimed
