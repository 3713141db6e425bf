"""The worker heartbeat: which queues it serves and that its models are loaded.

The web reads it for readiness and for slot recovery. Each beat also looks for jobs of dead
workers (retried here, or their users told, within seconds) and for direct hand-overs no webhook
took (kept for the user), and, now and then, purges old pictures.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time

import redis

from bot.core import handover, keys, photos, recovery
from bot.core.events import Reply
from bot.core.job import Job
from workers import delivery
from workers.runtime import Runtime

log = logging.getLogger(__name__)
PURGE_EVERY_S = 300.0


def beat(rt: Runtime, state: str = "ready") -> None:
    """Write one heartbeat; it expires after three missed beats."""
    info = {
        "name": rt.name,
        "queues": rt.queues,
        "state": state,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "at": time.time(),
        "models": {k: getattr(v, "preset", None) and v.preset.name for k, v in rt.models.items()},
        "load_seconds": rt.load_seconds,
        "loaded": state == "ready",
        "gpu": gpu_memory(),
    }
    # Three missed beats, and never under beat + 2 s: a busy CPU must not look like a dead worker.
    ttl_ms = int(max(rt.settings.heartbeat_s * 3, rt.settings.heartbeat_s + 2.0) * 1000)
    with rt.redis.pipeline() as pipe:
        pipe.set(keys.heartbeat(rt.name), json.dumps(info), px=ttl_ms)
        pipe.sadd(keys.WORKERS, rt.name)
        pipe.execute()


def gpu_memory() -> dict[str, dict[str, int]]:
    """CUDA memory per device (allocated, reserved, peak) when this worker uses CUDA, else {}."""
    torch = sys.modules.get("torch")  # never imported here: only read when a model did
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {
        f"cuda:{i}": {
            "allocated": int(torch.cuda.memory_allocated(i)),
            "reserved": int(torch.cuda.memory_reserved(i)),
            "peak": int(torch.cuda.max_memory_allocated(i)),
        }
        for i in range(torch.cuda.device_count())
    }


def stop(rt: Runtime, r: redis.Redis | None = None) -> None:
    """Remove this worker's heartbeat at a clean exit; `r`: the client to use (a fail-fast one
    when Redis may be gone: the heartbeat expires by itself anyway)."""
    with (r if r is not None else rt.redis).pipeline() as pipe:
        pipe.delete(keys.heartbeat(rt.name))
        pipe.srem(keys.WORKERS, rt.name)
        pipe.execute()


def rescue_lost_jobs(rt: Runtime) -> int:
    """Retry the jobs of dead workers, or tell their users; returns how many were found."""
    lost = recovery.lost_jobs(rt.redis, rt.queues, rt.settings.default_service_s)
    for found in lost:
        job = found.job
        if found.how == recovery.ANSWERED and found.reply is not None:
            delivery.keep(rt, job, found.reply)  # it finished but nobody delivered it
        if found.how != recovery.FAILED:
            continue
        # Delivery may wait on a callback; never let it hold up the next heartbeat.
        threading.Thread(
            target=_deliver_quietly, args=(rt, job, recovery.lost_reply(job)), daemon=True
        ).start()
    return len(lost)


def rescue_unanswered(rt: Runtime, batches: int = 20) -> int:
    """Keep the results of direct hand-overs that no webhook took in time; returns how many.

    Every direct hand-over is looked at once it is due, taken or not, so the watch list stays
    as short as the last few seconds of direct answers."""
    kept = 0
    for _ in range(batches):
        found, looked = handover.unanswered(rt.redis, time.time())
        for messenger, user, reply in found:
            log.warning("direct hand-over not taken by the webhook; result kept for the user")
            delivery.keep_for(rt, messenger, user, reply)
        kept += len(found)
        if looked < handover.UNANSWERED_BATCH:
            break
    return kept


def _deliver_quietly(rt: Runtime, job: Job, reply: Reply) -> None:
    try:
        delivery.deliver(rt, job, reply)
    except Exception:
        log.exception("could not tell the user about a lost job")


def start(rt: Runtime) -> threading.Event:
    """Run the heartbeat loop in a daemon thread; set the returned event to stop it."""
    stopping = threading.Event()

    def loop() -> None:
        last_purge = 0.0
        while not stopping.is_set():
            try:
                beat(rt)
                rescue_lost_jobs(rt)
                rescue_unanswered(rt)
                if time.time() - last_purge > PURGE_EVERY_S:
                    last_purge = time.time()
                    removed = rt.store.purge()
                    if removed:
                        log.info("purged old pictures", extra={"count": removed})
                    # Private photos expire too, even when nobody sends one for a while.
                    photos.store_from_settings(rt.settings).purge_if_due(rt.redis)
            except Exception:
                log.exception("heartbeat failed; retrying")
            stopping.wait(rt.settings.heartbeat_s)

    threading.Thread(target=loop, name="heartbeat", daemon=True).start()
    return stopping
