"""Webhook bodies as JSON: what no messenger sends is refused before any parser reads it."""

from __future__ import annotations

import json
from typing import Any

from bot.errors import NotAMessengerRequest


def loads(body: bytes) -> Any:
    """The JSON document in a body; NotAMessengerRequest for anything else.

    Refused: bytes that are not UTF-8 JSON, nesting deeper than Python's parser takes, and lone
    surrogates (`"\\ud800"` is valid JSON but not Unicode text: Redis keys, hashes and logs
    would fail on it later).
    """
    try:
        data = json.loads(body)
        json.dumps(data, ensure_ascii=False).encode()
    except (ValueError, RecursionError) as exc:  # UnicodeError is a ValueError
        raise NotAMessengerRequest("body is not JSON text") from exc
    return data
