"""Draw a storybook: every scene in one batched model call, delivered as one message.

1. Each scene is translated (cached like any prompt, workers/prompting.py) and checked against
   the block list again, in English: a scene that stops there refuses the whole book, naming it.
2. The scenes share the book's style words and a "character" phrase, the first scene's subject
   noun phrase (bot/core/storybook.py `character`); within CLIP's 77 tokens the scene's own
   words stay whole and the character phrase is cut first, then the style words.
3. One `generate` call draws them all, scene i with seed + i; a worker whose MAX_BATCH is smaller
   draws them in as few calls as it can. Other users' jobs do not fill the leftover room of a
   book's batch: a book is one rq job that runs alone (workers/batching.py never gathers it).
4. Each picture goes through the safety policy and gets the AI mark (workers/imaging.py); a
   flagged picture is withheld (a grey placeholder whose card says so), the others delivered.
5. A combined picture (a grid, each sentence under its panel, an "AI" footer) is stored too and
   offered by a button and a link.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from bot.core import admission, logs, storybook
from bot.core.blocklist import log_refusal
from bot.core.events import Card, Cards, Reply, Text
from bot.core.job import Job
from bot.core.options import STYLES, style_quick_reply, suggest_styles
from bot.core.stores import picture_url
from bot.core.texts import quick, say
from workers import prompting, safety, tasks
from workers.batching import record_model_call
from workers.imaging import hangul_font, to_jpeg
from workers.runtime import Runtime, current

log = logging.getLogger(__name__)
SEED_SPACE = 2**32

# The combined picture: panels this wide, the sentence under each in this many lines at most.
PANEL_WIDTH = 320
CAPTION_SIZE = 18
CAPTION_LINES = 4
MARGIN = 16
THUMB = 1024  # a card's thumbnail: square (LINE's image carousel shows 1:1), at most this wide
FOOTER = "AI 생성 · KoalaTalk (KOALA)"


def draw_book(payload: dict[str, Any]) -> dict[str, Any]:
    """Draw a storybook's scenes in one batch and deliver them as one message."""
    rt = current()
    job = Job.from_dict(payload)
    with logs.context(job.request_id):
        return tasks._run(rt, job, _book)


@dataclass(frozen=True)
class Scene:
    """One scene: its sentence, the prompt drawn, and its seed."""

    sentence: str
    prompt: str
    seed: int


def prepare(rt: Runtime, job: Job) -> tuple[list[Scene], str, bool, str | None]:
    """The scenes' prompts, the negative prompt, whether shared words were cut, and the
    sentence the block list stopped (None: none)."""
    model = rt.models["text2image"]
    request = job.request
    translator = rt.models.get("translation") if request.translate else None
    english: list[str] = []
    for sentence in request.scenes:
        text = prompting.translate(rt, translator, sentence)[0] if translator else sentence
        if rt.blocklist.match(text) or rt.blocklist.match(sentence):
            log_refusal("blocklist_translated", sentence, rt.settings.log_prompts)
            return [], "", False, sentence
        english.append(text.strip().rstrip("."))
    negative = request.negative_prompt
    if translator and negative:
        negative = prompting.translate(rt, translator, negative)[0]
    style = STYLES.get(request.style)
    shared = storybook.character(english[0]) if english else ""
    scenes: list[Scene] = []
    cut = False
    for i, (sentence, text) in enumerate(zip(request.scenes, english, strict=True)):
        composed = storybook.compose(
            text, shared, style.prompt if style else "", model.count_tokens, model.max_prompt_tokens
        )
        cut = cut or composed.character_cut or composed.style_cut
        scenes.append(Scene(sentence, composed.prompt, (request.seed + i) % SEED_SPACE))
    negatives = [negative, style.negative if style else model.preset.negative_prompt]
    return scenes, ", ".join(n for n in negatives if n.strip()), cut, None


def draw(rt: Runtime, job: Job, scenes: list[Scene], negative: str) -> tuple[list[Any], int]:
    """All scenes in as few model calls as MAX_BATCH allows; the images and the call count."""
    model = rt.models["text2image"]
    request = job.request
    size = max(1, rt.settings.max_batch)
    images: list[Any] = []
    calls = 0
    for start in range(0, len(scenes), size):
        chunk = scenes[start : start + size]
        wall = time.time()
        images.extend(
            model.generate(
                [s.prompt for s in chunk],
                [s.seed for s in chunk],
                negative_prompts=[negative] * len(chunk),
                width=request.width,
                height=request.height,
                steps=request.steps,
                guidance=request.guidance,
            )
        )
        calls += 1
        record_model_call(rt, wall, time.time(), len(chunk))
    return images, calls


def _book(rt: Runtime, job: Job) -> tuple[Reply, dict[str, Any]]:
    request, lang = job.request, job.lang
    started = time.perf_counter()
    scenes, negative, cut, blocked = prepare(rt, job)
    if blocked is not None:
        reply = Reply(
            (Text(say("book_blocked", lang, sentence=blocked[:60])),),
            (quick("quick_help", lang),),
            kind="error",
        )
        return reply, {"status": "refused"}
    model_started = time.perf_counter()
    images, calls = draw(rt, job, scenes, negative)
    model_s = time.perf_counter() - model_started
    cards, shown = screened_cards(rt, [s.sentence for s in scenes], images, lang)
    withheld = shown.count(None)
    combined_url = ""
    if any(image is not None for image in shown):
        combined = combine(shown, [s.sentence for s in scenes], lang)
        combined_url = picture_url(rt.settings, rt.store, rt.store.put(to_jpeg(combined)))
    kind = say(f"kind_{request.book}", lang) if request.book in storybook.KINDS else ""
    lines = [say("book_done", lang, kind=kind, n=len(scenes), seed=request.seed)]
    dropped = int(job.meta.get("dropped", 0))
    if dropped:
        lines.append(say("book_dropped", lang, n=dropped))
    if withheld:
        lines.append(say("book_withheld_note", lang, n=withheld))
    if cut:
        lines.append(say("book_cut", lang))
    styles = suggest_styles(request.style or None, request.seed, n=1)
    reply = Reply(
        (
            Cards(tuple(cards), combined_url, say("label_open", lang), say("label_all", lang)),
            Text("\n".join(lines)),
        ),
        (
            quick("quick_redraw", lang),
            quick("quick_same_seed", lang),
            *(style_quick_reply(key, lang) for key in styles),
            quick("quick_help", lang),
        ),
        kind="result",
    )
    field = admission.batch_field(admission.service_field(job.queue, job.preset), len(scenes))
    log.info(
        "book drawn",
        extra={"size": len(scenes), "model_calls": calls, "model_s": round(model_s, 4)},
    )
    return reply, {
        "status": "ok",
        "pictures": len(scenes),
        "model_calls": calls,
        "withheld": withheld,
        "model_s": round(model_s, 4),
        "book_s": round(time.perf_counter() - started, 4),
        "service_field": field,
    }


def screened_cards(
    rt: Runtime, sentences: list[str], images: list[Any], lang: str
) -> tuple[list[Card], list[Any]]:
    """Each picture through the safety policy, stored, as its card; and the pictures shown, None
    where one was withheld (a grey placeholder whose card says so; the others are delivered)."""
    cards: list[Card] = []
    shown: list[Any] = []
    for sentence, image in zip(sentences, images, strict=True):
        screened = safety.screen(rt, image, sentence)
        if screened.image is None:
            shown.append(None)
            placeholder = rt.store.put(to_jpeg(square(blank(image.size))))
            text = f"{sentence} ({say('book_withheld', lang)})"
            cards.append(Card(picture_url(rt.settings, rt.store, placeholder), text))
            continue
        shown.append(screened.image)
        url = picture_url(rt.settings, rt.store, rt.store.put(to_jpeg(screened.image)))
        thumb = url
        if screened.image.size[0] != screened.image.size[1] or screened.image.size[0] > THUMB:
            thumb = picture_url(
                rt.settings, rt.store, rt.store.put(to_jpeg(square(screened.image)))
            )
        cards.append(Card(thumb, sentence, link=url, alt=say("alt_picture", lang)))
    return cards, shown


def square(image: Any, limit: int = THUMB) -> Any:
    """A card's thumbnail: the whole picture on a white square at most `limit` wide, so a
    landscape or portrait picture is neither cropped nor too wide for a carousel."""
    from PIL import Image

    side = min(limit, max(image.size))
    scale = side / max(image.size)
    fitted = image.convert("RGB").resize(
        (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    )
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(fitted, ((side - fitted.size[0]) // 2, (side - fitted.size[1]) // 2))
    return canvas


def blank(size: tuple[int, int]) -> Any:
    """The grey placeholder of a withheld picture."""
    from PIL import Image

    return Image.new("RGB", size, (200, 200, 200))


def wrap(text: str, font: Any, width: float, lines: int) -> list[str]:
    """`text` in at most `lines` lines of at most `width` pixels: broken between words, and
    inside a word only when it is wider than a line; the last line ends in … when cut."""
    out: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width:
            current = candidate
            continue
        if current:
            out.append(current)
            current = ""
        for char in word:  # a word on a line of its own, split where it must be
            if font.getlength(current + char) > width:
                out.append(current)
                current = ""
            current += char
    if current:
        out.append(current)
    if len(out) <= lines:
        return out
    last = out[lines - 1]
    while last and font.getlength(last + "…") > width:
        last = last[:-1]
    return [*out[: lines - 1], last.rstrip() + "…"]


def combine(images: list[Any], sentences: list[str], lang: str = "ko") -> Any:
    """One picture of the whole book: a grid of panels, each sentence under its panel, and a
    footer that says AI drew it. A withheld picture is a grey panel."""
    from PIL import Image, ImageDraw

    font = hangul_font(CAPTION_SIZE)
    small = hangul_font(CAPTION_SIZE - 4)
    size = next((im.size for im in images if im is not None), (PANEL_WIDTH, PANEL_WIDTH))
    panel_h = max(1, round(PANEL_WIDTH * size[1] / size[0]))
    n = len(images)
    cols = n if n <= 3 else (2 if n == 4 else 3)
    rows = -(-n // cols)
    line_h = CAPTION_SIZE + 6
    cell_h = panel_h + MARGIN // 2 + CAPTION_LINES * line_h
    width = cols * PANEL_WIDTH + (cols + 1) * MARGIN
    height = rows * (cell_h + MARGIN) + MARGIN + line_h
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    pen = ImageDraw.Draw(sheet)
    for i, (image, sentence) in enumerate(zip(images, sentences, strict=True)):
        x = MARGIN + (i % cols) * (PANEL_WIDTH + MARGIN)
        y = MARGIN + (i // cols) * (cell_h + MARGIN)
        panel = (image if image is not None else blank(size)).convert("RGB")
        sheet.paste(panel.resize((PANEL_WIDTH, panel_h)), (x, y))
        text = f"{i + 1}. {sentence}"
        for j, line in enumerate(wrap(text, font, PANEL_WIDTH, CAPTION_LINES)):
            pen.text(
                (x, y + panel_h + MARGIN // 2 + j * line_h), line, fill=(20, 20, 20), font=font
            )
    footer = FOOTER if lang != "en" else "Made by AI · KoalaTalk (KOALA)"
    pen.text((MARGIN, height - line_h), footer, fill=(110, 110, 110), font=small)
    return sheet
