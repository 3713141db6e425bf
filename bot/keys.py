"""Every Redis key KoalaTalk writes, in one place. All carry a TTL except the worker set."""

from __future__ import annotations

P = "kt:"


def user(kind: str, messenger: str, user_id: str) -> str:
    """A per-user key, e.g. kt:last:kakao:<id>."""
    return f"{P}{kind}:{messenger}:{user_id}"


def last_prompt(messenger: str, user_id: str) -> str:
    return user("last", messenger, user_id)


def kept(messenger: str, user_id: str) -> str:
    return user("kept", messenger, user_id)


def slot(messenger: str, user_id: str) -> str:
    return user("slot", messenger, user_id)


def seen_user(messenger: str, user_id: str) -> str:
    return user("seen", messenger, user_id)


def claim(request_id: str) -> str:
    return f"{P}claim:{request_id}"


def result(request_id: str) -> str:
    return f"{P}result:{request_id}"


def wake(request_id: str) -> str:
    return f"{P}wake:{request_id}"


def running(request_id: str) -> str:
    """Which worker runs this job right now (set at start, removed at the end)."""
    return f"{P}run:{request_id}"


def heartbeat(worker_name: str) -> str:
    return f"{P}hb:{worker_name}"


WORKERS = f"{P}workers"


def as_text(raw: bytes | str) -> str:
    """Redis answers bytes; make them text."""
    return raw.decode() if isinstance(raw, bytes) else raw
