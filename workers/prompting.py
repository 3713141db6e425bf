"""The English prompt KOALA draws: translate, check the block list again, add the style, fit CLIP.

1. Hangul phrases go through the resident Marian model (models/translation.py) unless the user
   opted out (`!` prefix) or translation is off; English phrases stay as written. Each source
   text's translation is cached in Redis for TRANSLATION_CACHE_TTL_S, keyed by the model and a
   SHA-256 of the text, so a redraw or a popular prompt costs one GET.
2. The operator's block list is checked again on the English text: a Korean prompt that
   translates into a blocked English word is refused here.
3. The style's words follow the user's. CLIP reads 77 tokens (75 after its start and end
   tokens); a longer prompt is cut at the end of the user's part, the style kept, and the
   reply says so.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.core import keys
from bot.core.job import Request
from bot.core.options import STYLES
from bot.core.settings import Settings
from workers.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """What the worker draws, and what the reply tells the user about it."""

    prompt: str  # the full positive prompt: the user's part in English, then the style
    negative: str
    translated: bool = False
    cut: bool = False
    blocked: str | None = None  # the block-list term the prompt matched
    timings: dict[str, Any] = field(default_factory=dict)


def prepare(rt: Runtime, request: Request) -> Prepared:
    """Translate, check, add the style and fit CLIP's window."""
    model = rt.models["text2image"]
    started = time.perf_counter()
    # 1. Translate (cached)
    english, hits, misses = request.prompt, 0, 0
    negative = request.negative_prompt
    translator = rt.models.get("translation")
    if request.translate and translator is not None:
        english, hit = translate(rt, translator, request.prompt)
        negative, negative_hit = translate(rt, translator, request.negative_prompt)
        hits = int(hit is True) + int(negative_hit is True)
        misses = int(hit is False) + int(negative_hit is False)
    translate_s = time.perf_counter() - started
    # 2. The block list again: on the English text, and on the source (a redraw is not rechecked
    # by the web)
    blocked = rt.blocklist.match(english) or rt.blocklist.match(request.prompt)
    # 3. The style, and CLIP's window
    style = STYLES.get(request.style)
    suffix = f", {style.prompt}" if style else ""
    if suffix:
        drawn, cut = fit(english, suffix, model.count_tokens, model.max_prompt_tokens)
    else:
        drawn, cut = model.truncate_prompt(english)
    if style:
        negatives = [negative, style.negative]
    else:
        negatives = [negative, model.preset.negative_prompt]
    return Prepared(
        prompt=", ".join(part for part in (drawn, style.prompt if style else "") if part),
        negative=", ".join(part for part in negatives if part.strip()),
        translated=english != request.prompt,
        cut=cut,
        blocked=blocked,
        timings={
            "translate_s": round(translate_s, 5),
            "cache_hits": hits,
            "cache_misses": misses,
        },
    )


def translate(rt: Runtime, translator: Any, text: str) -> tuple[str, bool | None]:
    """English for `text`, and whether it came from the cache (None: nothing to translate)."""
    from models.translation import has_hangul

    if not text.strip() or not has_hangul(text):
        return text, None
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    key = keys.translation(translator.repo_id, digest)
    cached = rt.redis.get(key)
    if cached is not None:
        return keys.as_text(cached), True
    started = time.perf_counter()
    english = translator.translate_prompt(text)
    rt.redis.set(key, english, ex=rt.settings.translation_cache_ttl_s)
    log.info("translated", extra={"model_s": round(time.perf_counter() - started, 4)})
    return english, False


def fit(text: str, suffix: str, count: Callable[[str], int], limit: int) -> tuple[str, bool]:
    """The longest word-prefix of `text` that fits `limit` tokens with `suffix`; was it cut."""
    if count(text + suffix) <= limit:
        return text, False
    words = text.split(" ")
    low, high = 0, len(words) - 1  # words[:low] fits (none at worst); words[:high + 1] does not
    while low < high:
        middle = (low + high + 1) // 2
        if count(" ".join(words[:middle]) + suffix) <= limit:
            low = middle
        else:
            high = middle - 1
    kept = " ".join(words[:low]).rstrip(" ,")
    if not kept:
        # One very long word: keep as many of its characters as fit.
        word = words[0]
        while word and count(word + suffix) > limit:
            word = word[:-1]
        kept = word
    return kept, True


def load_aux_models(settings: Settings) -> tuple[dict[str, Any], dict[str, float]]:
    """The translator and the safety checker the text-to-image worker keeps resident, once."""
    from models.translation import Translator

    models: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    if settings.translation:
        started = time.perf_counter()
        translator = Translator.load(settings.translation_model, settings.device)
        translator.translate(["고양이"])  # warm up before the first user waits on it
        models["translation"] = translator
        seconds["translation"] = round(time.perf_counter() - started, 3)
    if settings.safety_policy != "allow":
        started = time.perf_counter()
        models["safety"] = load_checker(settings)
        from PIL import Image

        models["safety"].check([Image.new("RGB", (64, 64))])  # warm up like the others
        seconds["safety"] = round(time.perf_counter() - started, 3)
    return models, seconds


def load_checker(settings: Settings) -> Any:
    """The image safety checker; ModelUnavailable when it cannot be had or cannot flag."""
    from models.common import ModelUnavailable
    from models.safety import SafetyChecker

    try:
        return SafetyChecker.load(
            settings.safety_model, settings.device, threshold=settings.safety_threshold
        )
    except ValueError as exc:  # no unsafe label, or a threshold out of range
        raise ModelUnavailable(f"safety checker {settings.safety_model!r}: {exc}") from exc
