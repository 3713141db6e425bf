"""Job functions, enqueued by dotted name. Importable without torch; models live in the runtime.

Each function gets the job as a plain dict, runs it on the resident model, stores the picture,
renders the reply and delivers it. Every path releases the user's slot. A failure sends the user
an apology through the same delivery path and is re-raised so rq records the job as failed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bot import keys, logs, slots
from bot.events import Picture, Reply, Text
from bot.media import public_url
from bot.texts import quick, say
from workers import delivery
from workers.imaging import to_jpeg
from workers.job import Job
from workers.runtime import Runtime, current

log = logging.getLogger(__name__)


def draw(payload: dict[str, Any]) -> dict[str, Any]:
    """Draw one prompt with KOALA and deliver the picture."""
    rt = current()
    job = Job.from_dict(payload)
    with logs.context(job.request_id):
        return _run(rt, job, _draw)


def _run(rt: Runtime, job: Job, work: Any) -> dict[str, Any]:
    """Deadline check, running mark, apology on failure, slot release on every path."""
    if time.time() > job.deadline:
        log.info("expired before start", extra={"late_s": round(time.time() - job.deadline, 3)})
        delivery.keep(rt, job, delivery.expired_reply(job))
        slots.release(rt.redis, job.messenger, job.user, job.request_id)
        return {"status": "expired"}
    rt.redis.set(keys.running(job.request_id), rt.name, ex=rt.settings.job_timeout_s + 60)
    try:
        if rt.settings.development and rt.settings.debug_job_delay_s:
            time.sleep(rt.settings.debug_job_delay_s)  # test seam: widen the mid-job window
        reply, result = work(rt, job)
        how = delivery.deliver(rt, job, reply)
        return {**result, "delivered": how}
    except Exception:
        log.exception("job failed")
        try:
            delivery.deliver(
                rt,
                job,
                Reply(
                    (Text(say("failed", job.lang)),), (quick("quick_help", job.lang),), kind="error"
                ),
            )
        except Exception:
            log.exception("could not deliver the apology")
        raise
    finally:
        rt.redis.delete(keys.running(job.request_id))
        slots.release(rt.redis, job.messenger, job.user, job.request_id)


def _draw(rt: Runtime, job: Job) -> tuple[Reply, dict[str, Any]]:
    model = rt.models["text2image"]
    request = job.request
    started = time.perf_counter()
    image = model.generate(
        [request.prompt],
        [request.seed],
        negative_prompts=[request.negative_prompt or model.preset.negative_prompt],
        width=request.width,
        height=request.height,
        steps=request.steps,
        guidance=request.guidance,
    )[0]
    model_s = time.perf_counter() - started
    media_id = rt.store.put(to_jpeg(image))
    log.info("drawn", extra={"model_s": round(model_s, 4), "media": media_id[:6]})
    return picture_reply(rt, job, media_id), {"status": "ok", "model_s": model_s}


def picture_reply(rt: Runtime, job: Job, media_id: str) -> Reply:
    """The picture, one short line that says AI drew it, and the follow-up quick replies."""
    line = say("done_line", job.lang, prompt=job.request.prompt[:200])
    return Reply(
        (Picture(public_url(rt.settings, media_id), say("alt_picture", job.lang)), Text(line)),
        (quick("quick_redraw", job.lang), quick("quick_help", job.lang)),
        kind="result",
    )
