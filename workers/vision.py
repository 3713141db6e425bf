"""The `ask` job on the vision-language queue: a question about the user's photo or clip.

Importable without torch; the model lives in the runtime (`rt.models["vision"]`). The job may
first fetch photos the webhook could not fetch in time. The answer is plain text (markdown
stripped) over at most three bubbles of at most 1000 characters; a clip's answer says how many
frames the model looked at.
"""

from __future__ import annotations

import io
import logging
import re
import time
from typing import Any

from PIL import Image

from bot.core import logs, photos, video
from bot.core.conversation import Conversations, error_reply, received_reply
from bot.core.events import Reply, Text
from bot.core.job import Job
from bot.core.photos import Limits, PhotoError, PhotoStore
from bot.core.texts import quick, say
from bot.messengers import line, telegram
from workers.runtime import Runtime, current
from workers.tasks import _run as run_job

log = logging.getLogger(__name__)
MAX_BUBBLES = 3
BUBBLE_CHARS = 1000

_stores: dict[tuple[str, int], PhotoStore] = {}


def ask(payload: dict[str, Any]) -> dict[str, Any]:
    """Answer one question about the user's photos and deliver the answer."""
    rt = current()
    job = Job.from_dict(payload)
    with logs.context(job.request_id):
        return run_job(rt, job, _ask)


def photo_store(rt: Runtime) -> PhotoStore:
    """The private photo store, one per worker."""
    key = (str(rt.settings.photo_path), rt.settings.photo_ttl_s)
    if key not in _stores:
        _stores[key] = photos.store_from_settings(rt.settings)
    return _stores[key]


def _ask(rt: Runtime, job: Job) -> tuple[Reply, dict[str, Any]]:
    store = photo_store(rt)
    chats = Conversations(rt.redis, store, rt.settings.photo_ttl_s)
    request = job.request
    ids, is_clip = photos.select(store, request.images)
    # 1. Photos the webhook handed over: fetch them now, then start the conversation.
    if request.photo_urls or request.photo_refs:
        fetch_by = time.time() + 2 * rt.settings.fetch_timeout_s
        limits = Limits.from_settings(rt.settings)
        received = photos.receive(
            rt.guard, store, request.photo_urls, limits, fetch_by, hand_over=False
        )
        if request.photo_refs:
            received = _merge(received, fetch_refs(rt, store, job, limits, fetch_by))
        ids, is_clip = photos.select(store, (*request.images, *received.ids))
        if not ids:
            return error_reply(received.errors, job.lang), {"status": "no_photo"}
        chats.start(job.messenger, job.room, ids, is_clip, owner=job.user)
        if not request.question:
            shown = photos.Received(ids, is_clip, (), received.errors)
            return received_reply(shown, job.lang), {"status": "received"}
    store.purge_if_due(rt.redis)
    # 2. The pictures: the photos, or frames sampled evenly from the clip.
    try:
        images = load_images(store, ids, is_clip, rt.settings.clip_frames)
    except PhotoError as exc:
        return error_reply((exc,), job.lang), {"status": exc.key}
    # 3. The model, within the answer-length cap.
    model = rt.models["vision"]
    limit = min(rt.settings.vlm_max_new_tokens, model.preset.max_new_tokens)
    started = time.perf_counter()
    raw = model.answer(
        images, list(request.history), request.question, max_new_tokens=limit, video=is_clip
    )
    model_s = time.perf_counter() - started
    # 4. Plain text in bubbles; the turn is remembered for follow-ups.
    answer = plain_text(raw) or say("empty_answer", job.lang)
    chats.add_turn(job.messenger, job.room, ids, request.question, answer)
    note = say("frames_note", job.lang, n=len(images)) if is_clip else ""
    log.info("answered", extra={"model_s": round(model_s, 4), "chars": len(answer)})
    return answer_reply(answer, note, job.lang), {"status": "ok", "model_s": model_s}


def fetch_refs(
    rt: Runtime, store: PhotoStore, job: Job, limits: Limits, deadline: float
) -> photos.Received:
    """Photos the webhook handed over by the messenger's own reference: a Telegram file_id
    (getFile, then the file, with the bot token this worker holds) or a LINE message id."""
    cap = max(limits.max_bytes, limits.clip_max_bytes)
    ids: list[str] = []
    errors: list[PhotoError] = []
    for ref in job.request.photo_refs:
        try:
            if job.messenger == telegram.NAME:
                data = telegram.BotApi(rt.guard, rt.settings).download(ref, cap, deadline)
            elif job.messenger == line.NAME:
                data = line.LineApi(rt.guard, rt.settings).content_bytes(ref, cap, deadline)
            else:
                raise PhotoError("photo_unreachable", f"no photo API for {job.messenger}")
            kind, data = photos.check(data, limits)
            ids.append(store.put(data, kind))
        except PhotoError as exc:
            log.info("photo not used", extra={"why": exc.key, "detail": str(exc)})
            errors.append(exc)
        except OSError as exc:
            log.error("photo not stored", extra={"error": str(exc)})
            errors.append(PhotoError("photo_unreachable"))
    return photos.Received(tuple(ids), False, (), tuple(errors))


def _merge(a: photos.Received, b: photos.Received) -> photos.Received:
    return photos.Received((*a.ids, *b.ids), a.video or b.video, (), (*a.errors, *b.errors))


def load_images(
    store: PhotoStore, ids: tuple[str, ...], is_clip: bool, frames: int
) -> list[Image.Image]:
    """The stored photos as RGB images, or a clip's sampled frames; PhotoError when gone."""
    loaded = [store.read(photo_id) for photo_id in ids]
    if not ids or any(item is None for item in loaded):
        raise PhotoError("photo_gone")
    if is_clip:
        assert loaded[0] is not None
        try:
            return video.sample_frames(loaded[0][1], frames)
        except video.ClipError as exc:
            raise PhotoError(exc.key, str(exc), **exc.values) from exc
    images = []
    for item in loaded:
        assert item is not None
        with Image.open(io.BytesIO(item[1]), formats=["JPEG"]) as image:
            images.append(image.convert("RGB"))
    return images


def answer_reply(answer: str, note: str, lang: str) -> Reply:
    """The answer's bubbles (and the note as the last one) with follow-up quick replies."""
    bubbles = split_bubbles(answer, MAX_BUBBLES - (1 if note else 0))
    parts = tuple(Text(b) for b in bubbles) + ((Text(note),) if note else ())
    return Reply(parts, (quick("quick_new_photo", lang), quick("quick_help", lang)), "result")


_FENCE = re.compile(r"^[ \t]*```[^\n]*$", re.M)
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+", re.M)
_QUOTE = re.compile(r"^[ \t]{0,3}>[ \t]?", re.M)
_RULE = re.compile(r"^[ \t]{0,3}([-*_])([ \t]*\1){2,}[ \t]*$", re.M)
_BULLET = re.compile(r"^([ \t]*)[-*+][ \t]+", re.M)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)[^)]*\)")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", re.S)
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_CODE = re.compile(r"`([^`\n]+)`")
_BREAK = re.compile(r"<br\s*/?>", re.I)
_BLANKS = re.compile(r"\n{3,}")


def plain_text(text: str) -> str:
    """Markdown as the plain text a chat shows: no fences, headings, emphasis or link syntax."""
    text = text.replace("\r\n", "\n")
    text = _FENCE.sub("", text)
    text = _RULE.sub("", text)
    text = _HEADING.sub("", text)
    text = _QUOTE.sub("", text)
    text = _BULLET.sub(r"\1• ", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1 (\2)", text)
    text = _BOLD.sub(r"\2", text)
    text = _ITALIC.sub(r"\1", text)
    text = _CODE.sub(r"\1", text)
    text = _BREAK.sub("\n", text)
    lines = [line.rstrip() for line in text.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def _cut(text: str, limit: int) -> int:
    """Where to end a bubble: a paragraph, line, sentence or word boundary within `limit`."""
    window = text[:limit]
    for mark in ("\n\n", "\n", ". ", "다. ", "요. ", "? ", "! ", "。", " "):
        at = window.rfind(mark)
        if at >= limit // 2:
            return at + len(mark.rstrip()) if mark.strip() else at
    return limit


def split_bubbles(text: str, bubbles: int = MAX_BUBBLES, limit: int = BUBBLE_CHARS) -> list[str]:
    """At most `bubbles` pieces of at most `limit` characters; what is left over is cut with …."""
    rest = text.strip()
    out: list[str] = []
    while rest and len(out) < bubbles:
        if len(rest) <= limit:
            out.append(rest)
            return out
        if len(out) == bubbles - 1:
            out.append(rest[: limit - 1].rstrip() + "…")
            return out
        at = _cut(rest, limit)
        out.append(rest[:at].rstrip())
        rest = rest[at:].lstrip()
    return out
