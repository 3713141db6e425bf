"""Structured logs that carry the request id from the webhook to the delivery.

Callback URLs carry one-time tokens and must never reach a log: log `urlguard.redact(url)`.
As a last line of defence the formatter masks anything that looks like a Kakao callback path.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

_TOKEN = re.compile(r"(/callback/)[^\s\"'?]+")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def scrub(text: str) -> str:
    """Mask callback tokens."""
    return _TOKEN.sub(r"\1***", text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        rid = getattr(record, "request_id", "") or request_id.get()
        if rid:
            entry["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "request_id":
                entry[key] = value if isinstance(value, int | float | bool) else scrub(str(value))
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Readable single lines for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", "") or request_id.get()
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.name} [{rid or '-'}] {record.getMessage()}"
        if extra:
            line += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return scrub(line)


def setup(level: str = "INFO", as_json: bool = True) -> None:
    """Configure the root logger once per process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "httpx", "filelock", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def context(rid: str) -> Iterator[None]:
    """Tag every log line inside the block with this request id."""
    token = request_id.set(rid)
    try:
        yield
    finally:
        request_id.reset(token)
