"""Webhook bodies as JSON: what no messenger sends is refused before any parser reads it."""

from __future__ import annotations

import json
import re
from typing import Any

from bot.core.errors import NotAMessengerRequest

# In UTF-8 a surrogate reaches the parsed text only as a `\u` escape or as its raw form (ED A0-BF),
# which Python's JSON parser lets through.
SURROGATE_IN_UTF8 = re.compile(rb"\\u|\xed[\xa0-\xbf]")


def loads(body: bytes) -> Any:
    """The JSON document in a body; NotAMessengerRequest for anything else.

    Refused: bytes that are not UTF-8 JSON, nesting deeper than Python's parser takes, and lone
    surrogates (`"\\ud800"` is valid JSON but not Unicode text: Redis keys, hashes and logs
    would fail on it later).
    """
    try:
        data = json.loads(body)
        if _may_hold_surrogates(body):  # else this check, a second pass, cannot fail
            json.dumps(data, ensure_ascii=False).encode()
    except (ValueError, RecursionError) as exc:  # UnicodeError is a ValueError
        raise NotAMessengerRequest("body is not JSON text") from exc
    return data


def _may_hold_surrogates(body: bytes) -> bool:
    if body[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in body[:4]:
        return True  # UTF-16 or UTF-32, which Python's JSON parser reads too
    return SURROGATE_IN_UTF8.search(body) is not None
