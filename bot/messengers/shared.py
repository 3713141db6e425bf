"""What every messenger adapter shares: the constant-time check of a shared secret, and taking
mentions of the bot out of a message."""

from __future__ import annotations

import hmac

from bot.core.errors import Unauthorized


def check_secret(header: str | None, secret: str, development: bool) -> None:
    """Constant-time comparison of a shared secret; development may run without one."""
    if not secret:
        if development:
            return
        raise Unauthorized("no secret configured")
    if header is None or not hmac.compare_digest(header.encode(), secret.encode()):
        raise Unauthorized("wrong secret")


def strip_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """The text without the given (start, end) spans (mentions of the bot), its spaces tidied;
    without spans, the text as it is, trimmed."""
    if not spans:
        return text.strip()
    kept, at = [], 0
    for start, end in sorted(spans):
        if start >= at:
            kept.append(text[at:start])
            at = end
    kept.append(text[at:])
    return " ".join("".join(kept).split())


def utf16_span(text: str, offset: int, length: int) -> tuple[int, int]:
    """An (offset, length) counted in UTF-16 code units (Telegram's entities, LINE's mentions)
    as a (start, end) span of Python characters."""
    units = text.encode("utf-16-le")
    start = len(units[: 2 * offset].decode("utf-16-le", "ignore"))
    end = len(units[: 2 * (offset + length)].decode("utf-16-le", "ignore"))
    return start, end
