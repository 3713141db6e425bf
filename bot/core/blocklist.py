"""The operator's prompt block list: one term per line in a UTF-8 file, in any language.

The bot checks the prompt as the user wrote it, before any job exists; the worker checks it
again after translation, so a Korean prompt that becomes a blocked English word is caught too.

Matching is case-insensitive, after Unicode NFKC folding and with zero-width characters removed.
- A term with Latin letters matches whole words (an `s` or `es` plural included), so `gore`
  never blocks `Gregory`.
- A term in Hangul (or any other script) matches anywhere, because Korean particles attach to
  the word (`마약을`); spaces and punctuation inside the prompt are ignored for it (`마 약`).
Lines starting with `#` are comments. The file is read once, when a process starts.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

INVISIBLE = re.compile(r"[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")
LATIN = re.compile(r"[a-z]")
GAPS = re.compile(r"[\W_]+")


class BlockListError(ValueError):
    """The block-list file cannot be read."""


def fold(text: str) -> str:
    """NFKC, lower case, no invisible characters, single spaces."""
    folded = INVISIBLE.sub("", unicodedata.normalize("NFKC", text)).casefold()
    return " ".join(folded.split())


class BlockList:
    """Terms that refuse a prompt."""

    def __init__(self, terms: Iterable[str] = ()) -> None:
        self.terms = tuple(dict.fromkeys(term for term in map(fold, terms) if term))
        words = [
            r"\s+".join(re.escape(part) for part in term.split())
            for term in self.terms
            if LATIN.search(term)
        ]
        # Latin terms are whole words: no Latin letter or digit right before or after.
        self._words = (
            re.compile(rf"(?<![a-z0-9])(?:{'|'.join(words)})(?:e?s)?(?![a-z0-9])")
            if words
            else None
        )
        self._anywhere = tuple(
            GAPS.sub("", term) or term for term in self.terms if not LATIN.search(term)
        )

    @classmethod
    def load(cls, path: Path | None) -> BlockList:
        """Read the file at `path` (None or an empty path: an empty list)."""
        if path is None or not str(path):
            return cls()
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BlockListError(f"cannot read the block list {path}: {exc}") from exc
        return cls(line for line in text.splitlines() if not line.lstrip().startswith("#"))

    def __len__(self) -> int:
        return len(self.terms)

    def match(self, text: str) -> str | None:
        """The first blocked term found in `text`, or None."""
        if not self.terms:
            return None
        folded = fold(text)
        found = self._words.search(folded) if self._words is not None else None
        if found:
            return found.group(0)
        squeezed = GAPS.sub("", folded)
        return next((term for term in self._anywhere if term in squeezed), None)


def log_refusal(reason: str, prompt: str, log_prompts: bool, **extra: object) -> None:
    """One log line per refusal: the reason, and the prompt only when the operator allows it."""
    if log_prompts:
        shown = prompt[:300]
    else:
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:12]
        shown = f"<{len(prompt)} chars, sha256 {digest}>"
    log.warning("refused", extra={"reason": reason, "prompt": shown, **extra})
