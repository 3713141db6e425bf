"""Korean-to-English translation of drawing prompts with a MarianMT (OPUS-MT) model."""

from __future__ import annotations

import re
import time
from typing import Any

from models.common import dtype_for, resolve_device, unavailable
from models.presets import TRANSLATION
from models.tiny_aux import ensure_tiny_marian

# Hangul Jamo, Compatibility Jamo, Jamo Extended-A/B, syllables and halfwidth Jamo.
HANGUL = re.compile(
    "[\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7a3\ud7b0-\ud7ff\uffa0-\uffdc]"
)
# Prompts are lists of phrases; each separator is kept verbatim so the layout survives.
SEPARATOR = re.compile(r"([,，、;；\n]+)")
SENTENCE_END = (".", "!", "?", "。", "…")


def has_hangul(text: str) -> bool:
    """True when `text` contains any Hangul letter (syllable or jamo)."""
    return HANGUL.search(text) is not None


def split_segments(text: str) -> list[str]:
    """Split a prompt into alternating phrases and separators (commas, newlines, semicolons)."""
    return SEPARATOR.split(text)


class Translator:
    """A resident Korean-to-English MarianMT model and its tokenizer."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: str,
        name: str,
        repo_id: str,
        num_beams: int = 4,
        load_seconds: float = 0.0,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.name = name
        self.repo_id = repo_id
        self.num_beams = num_beams
        self.load_seconds = load_seconds

    @classmethod
    def load(cls, model: str, device: str = "auto", num_beams: int = 4) -> Translator:
        """Load a TRANSLATION preset by name, or any Marian repo id, onto `device`."""
        from transformers import MarianMTModel, MarianTokenizer

        started = time.perf_counter()
        preset = TRANSLATION.get(model)
        repo_id = preset.repo_id if preset else model
        if preset and preset.tiny:
            ensure_tiny_marian(repo_id)
        device = resolve_device(device)
        try:
            network = MarianMTModel.from_pretrained(repo_id, dtype=dtype_for(device))
            tokenizer = MarianTokenizer.from_pretrained(repo_id)
        # MarianTokenizer raises TypeError, not OSError, when its vocabulary files are absent.
        except (OSError, ValueError, TypeError) as exc:
            raise unavailable(model, repo_id, exc) from exc
        # PreTrainedModel.to is @wraps(Module.to): typeshed's _Wrapped loses the self binding.
        network.to(device).eval()  # type: ignore[arg-type]
        return cls(
            network,
            tokenizer,
            device,
            model,
            repo_id,
            num_beams=num_beams,
            load_seconds=time.perf_counter() - started,
        )

    def translate(self, texts: list[str], max_new_tokens: int = 128) -> list[str]:
        """Translate a batch of Korean texts to English, one output per input, deterministically."""
        import torch

        if not texts:
            return []
        # Sinusoidal positions end at max_position_embeddings; generating past it crashes.
        positions = self.model.config.max_position_embeddings
        max_length = min(max_new_tokens + 1, positions)  # +1: the decoder start token
        if self.model.generation_config.max_length:
            max_length = min(max_length, self.model.generation_config.max_length)
        batch = self.tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=min(self.tokenizer.model_max_length, positions),
        ).to(self.device)
        with torch.inference_mode():
            output = self.model.generate(
                **batch, max_length=max_length, num_beams=self.num_beams, do_sample=False
            )
        return [
            text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)
        ]

    def translate_prompt(self, text: str) -> str:
        """Translate a prompt's Hangul phrases; other phrases and separators stay verbatim."""
        parts = split_segments(text)
        # Odd indexes are separators; only phrases with Hangul go to the model, in one batch.
        korean = [i for i, part in enumerate(parts) if i % 2 == 0 and has_hangul(part)]
        if not korean:
            return text
        translations = self.translate([parts[i].strip() for i in korean])
        for i, english in zip(korean, translations, strict=True):
            parts[i] = keep_padding(parts[i], tidy(parts[i], english))
        return "".join(parts)


def tidy(source: str, english: str) -> str:
    """Drop the full stop the model adds to a phrase that was not a sentence."""
    if not source.rstrip().endswith(SENTENCE_END):
        english = english.rstrip(".")
    return english.strip()


def keep_padding(source: str, replacement: str) -> str:
    """Give `replacement` the leading and trailing whitespace of `source`."""
    stripped = source.strip()
    if not stripped:
        return source
    start = source.index(stripped)
    return source[:start] + replacement + source[start + len(stripped) :]
