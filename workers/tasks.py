"""Job functions, enqueued by dotted name. Importable without torch; models live in the runtime.

Each function gets the job as a plain dict, runs it on the resident model, stores the picture,
renders the reply and delivers it. Every path releases the user's slot. A failure sends the user
an apology through the same delivery path and is re-raised so rq records the job as failed.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

from bot.core import admission, keys, logs, metrics, slots, storybook
from bot.core.blocklist import log_refusal
from bot.core.events import Picture, QuickReply, Reply, Text
from bot.core.job import Job, Request
from bot.core.options import STRENGTH_DEFAULT, style_label, style_quick_reply, suggest_styles
from bot.core.stores import picture_url
from bot.core.texts import quick, say
from workers import delivery, prompting, safety
from workers.batching import record_model_call
from workers.imaging import to_jpeg
from workers.runtime import Runtime, current

log = logging.getLogger(__name__)
FAILED_TEXT = {"ask": "failed_ask"}  # the apology's text by task (default "failed")


def draw(payload: dict[str, Any]) -> dict[str, Any]:
    """Draw one prompt with KOALA and deliver the picture."""
    rt = current()
    job = Job.from_dict(payload)
    with logs.context(job.request_id):
        return _run(rt, job, _draw)


def _record_service(rt: Runtime, job: Job, result: dict[str, Any], started: float) -> None:
    """Fold this job's service time into the average admission's estimate reads: the worker's
    wall time for it, from the start of its turn (its dequeue, or the end of the job before it
    in a batch) to the end of its delivery, plus its share of the batch. That is what a job
    queued behind it waits, so rq's bookkeeping, the batch's preparation and the delivery count;
    the model's time alone made the estimate a third of the real wait on a busy machine.
    A storybook records its own batch size's average (admission estimates books by it)."""
    now = time.time()
    seconds = now - (rt.turn_started or started) + rt.turn_share_s
    field = result.get("service_field") or admission.service_field(job.queue, job.preset)
    admission.record_service_time(rt.redis, field, seconds)
    rt.turn_started = now  # the next job of the batch starts its turn here (its share stays)


def _run(rt: Runtime, job: Job, work: Any) -> dict[str, Any]:
    """Deadline check, running mark, apology on failure, slot release on every path."""
    if time.time() > job.deadline:
        log.info("expired before start", extra={"late_s": round(time.time() - job.deadline, 3)})
        delivery.keep(rt, job, delivery.expired_reply(job))
        slots.release(rt.redis, job.messenger, job.user, job.request_id)
        _refund(rt, job)
        metrics.inc(rt.redis, "jobs", queue=job.queue, status="expired")
        return {"status": "expired"}
    rt.redis.set(keys.running(job.request_id), rt.name, ex=rt.settings.job_timeout_s + 60)
    started = time.time()
    if job.received_at:
        metrics.observe(rt.redis, "wait", started - job.received_at, queue=job.queue)
    try:
        if rt.settings.development and rt.settings.debug_job_delay_s:
            time.sleep(rt.settings.debug_job_delay_s)  # test seam: widen the mid-job window
        reply, result = work(rt, job)
        reply = with_extra_quick(reply, job)
        elapsed = time.time() - started + result.get("batch_share_s", 0.0)
        metrics.job_done(rt.redis, job.queue, elapsed)
        # Free the slot before the hand-over: a user who answers the picture at once is not busy.
        slots.release(rt.redis, job.messenger, job.user, job.request_id)
        if rt.redis.exists(keys.dropped(job.request_id)):
            log.info("result dropped: the user cancelled")
            _record_service(rt, job, result, started)
            return {**result, "delivered": "dropped"}
        how = delivery.deliver(rt, job, reply)
        _record_service(rt, job, result, started)
        return {**result, "delivered": how}
    except Exception:
        metrics.inc(rt.redis, "jobs", queue=job.queue, status="failed")
        log.exception("job failed")
        slots.release(rt.redis, job.messenger, job.user, job.request_id)
        _refund(rt, job)
        try:
            delivery.deliver(
                rt,
                job,
                Reply(
                    (Text(say(FAILED_TEXT.get(job.task, "failed"), job.lang)),),
                    (quick("quick_help", job.lang),),
                    kind="error",
                ),
            )
        except Exception:
            log.exception("could not deliver the apology")
        raise
    finally:
        rt.redis.delete(keys.running(job.request_id))
        slots.release(rt.redis, job.messenger, job.user, job.request_id)


def with_extra_quick(reply: Reply, job: Job) -> Reply:
    """The answer with the quick replies the web side asked it to carry first (`extra_quick` in
    the job's meta: the other reading of an ambiguous message, bot/core/service.py)."""
    extra = tuple(
        QuickReply(str(label), str(message)) for label, message in job.meta.get("extra_quick") or ()
    )
    if not extra:
        return reply
    rest = tuple(q for q in reply.quick_replies if q not in extra)
    return Reply(reply.parts, extra + rest, reply.kind)


def _refund(rt: Runtime, job: Job) -> None:
    """A job that never gave the user a result does not count against their limits."""
    admission.refund(
        rt.redis,
        job.messenger,
        job.user,
        job.request_id,
        str(job.meta.get("quota_day", "")),
        int(job.meta.get("pictures", 1)),
    )


def _draw(rt: Runtime, job: Job) -> tuple[Reply, dict[str, Any]]:
    model = rt.models["text2image"]
    request = job.request
    # 1. The English prompt (translated, checked, styled, fitted to CLIP); a batch did it already
    batched = rt.precomputed.pop(job.request_id, None)
    prepared = batched.prepared if batched else prompting.prepare(rt, request)
    result: dict[str, Any] = {"status": "ok", **prepared.timings}
    if prepared.blocked:
        log_refusal("blocklist_translated", request.prompt, rt.settings.log_prompts)
        return _note(job, "blocked"), {**result, "status": "refused"}
    # 2. Draw, or redraw the user's photo
    started = time.perf_counter()
    if request.source_image:
        photo = _photo(rt, request.source_image)
        if photo is None:
            return _note(job, "photo_gone"), {**result, "status": "photo_gone"}
        image = model.redraw(
            photo,
            prepared.prompt,
            request.seed,
            strength=request.strength or STRENGTH_DEFAULT,
            negative_prompt=prepared.negative,
            steps=request.steps,
            guidance=request.guidance,
        )
    elif batched is not None:
        image = batched.image
        result["batch_share_s"] = batched.share_s
    else:
        image = model.generate(
            [prepared.prompt],
            [request.seed],
            negative_prompts=[prepared.negative],
            width=request.width,
            height=request.height,
            steps=request.steps,
            guidance=request.guidance,
        )[0]
    result["model_s"] = batched.share_s if batched else time.perf_counter() - started
    if batched is None:
        record_model_call(rt, time.time() - result["model_s"], time.time(), 1)
    # 3. The safety policy decides what, if anything, gets a public URL
    screened = safety.screen(rt, image, request.prompt)
    if screened.image is None:
        return _note(job, screened.note or "image_blocked"), {**result, "status": "flagged"}
    media_id = rt.store.put(to_jpeg(screened.image))
    log.info("drawn", extra={"model_s": round(result["model_s"], 4), "media": media_id[:6]})
    return picture_reply(rt, job, media_id, prepared, screened.note), result


def picture_reply(
    rt: Runtime,
    job: Job,
    media_id: str,
    prepared: prompting.Prepared | None = None,
    note: str | None = None,
) -> Reply:
    """The picture, a few short lines (AI drew it, from which English, seed), quick replies."""
    request, lang = job.request, job.lang
    shown = request.prompt or (style_label(request.style, lang) if request.style else "")
    lines = [say("done_line", lang, prompt=shown[:200])]
    if prepared is not None and (prepared.translated or prepared.cut or request.style):
        lines.append(say("drawn_from", lang, english=prepared.prompt[:400]))
    if prepared is not None and prepared.cut:
        lines.append(say("prompt_cut", lang))
    if note:
        lines.append(say(note, lang))
    lines.append(say("drawn_seed", lang, seed=request.seed))
    styles = suggest_styles(request.style or None, request.seed)
    return Reply(
        (
            Picture(picture_url(rt.settings, rt.store, media_id), say("alt_picture", lang)),
            Text("\n".join(lines)),
        ),
        (
            quick("quick_redraw", lang),
            quick("quick_same_seed", lang),
            *(style_quick_reply(key, lang) for key in styles),
            *book_offer(request, lang),
            quick("quick_help", lang),
        ),
        kind="result",
    )


def book_offer(request: Request, lang: str) -> tuple[QuickReply, ...]:
    """After a prompt of several sentences: one tap draws it as a storybook instead."""
    if request.source_image or len(storybook.sentences(request.prompt)) < 2:
        return ()
    prefix = "story: " if lang == "en" else "동화: "
    return (QuickReply(say("quick_book", lang), prefix + request.prompt),)


def _note(job: Job, key: str) -> Reply:
    """A text-only answer instead of a picture (a refusal), with a way on."""
    return Reply((Text(say(key, job.lang)),), (quick("quick_help", job.lang),), kind="error")


def _photo(rt: Runtime, photo_id: str) -> Any:
    """The user's private photo as a PIL image, or None when it is gone."""
    from PIL import Image

    from bot.core import photos

    found = photos.store_from_settings(rt.settings).read(photo_id)
    if found is None or found[0] != "photo":
        return None
    return Image.open(io.BytesIO(found[1]))
