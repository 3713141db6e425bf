"""Every KoalaTalk setting, read from the environment once at start (prefix KOALATALK_).

No other module reads `os.environ`. The README's settings table is generated from FIELDS below
(`python -m bot.settings --markdown`), so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "KOALATALK_"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it and the way out."""


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _pairs(value: str) -> dict[str, str]:
    """`a=b,c=d` into a dict."""
    out: dict[str, str] = {}
    for part in _csv(value):
        name, sep, target = part.partition("=")
        if not sep or not name.strip() or not target.strip():
            raise ValueError(f"expected name=value, got {part!r}")
        out[name.strip().lower()] = target.strip()
    return out


def _setting(default: Any, doc: str, parse: Any = None) -> Any:
    metadata = {"doc": doc, "parse": parse}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """All settings. Field names map to KOALATALK_<NAME> environment variables."""

    mode: str = _setting(
        "production",
        "`development` or `production`. Development allows no secret, loopback "
        "targets from DEV_ALLOW, the tiny model and the playground.",
    )
    secret: str = _setting(
        "", "Shared secret Kakao sends in SECRET_HEADER. Required in production."
    )
    secret_header: str = _setting("X-KoalaTalk-Secret", "Header that carries the shared secret.")
    redis_url: str = _setting(
        "redis://127.0.0.1:6379/0",
        "Redis for queues, sessions and hand-over. Plain `REDIS_URL` "
        "is read too when this is unset.",
    )
    public_url: str = _setting(
        "http://127.0.0.1:8000", "Public https base URL under which Kakao fetches /media images."
    )
    data_dir: Path = _setting(Path("data"), "Folder for the embedded Redis and local media.", Path)
    media_dir: Path | None = _setting(
        None, "Folder of the local image store (default DATA_DIR/media).", Path
    )
    media_retention_s: int = _setting(86400, "Seconds a generated picture stays reachable.", int)
    preset: str = _setting("koala-lightning-700m", "Text-to-image preset the worker loads.")
    device: str = _setting("auto", "`auto`, `cuda`, `cuda:N` or `cpu`.")
    sync_wait_s: float = _setting(
        3.0,
        "Seconds, from the request's arrival, that the webhook waits for a direct answer.",
        float,
    )
    callback_deadline_s: float = _setting(
        50.0, "Seconds after arrival by which a callback answer must be posted.", float
    )
    callback_delay_s: float = _setting(
        1.0, "Least seconds between the useCallback acknowledgement and the callback POST.", float
    )
    pull_deadline_s: float = _setting(
        600.0, "Seconds after arrival a job without callback may still start.", float
    )
    kept_ttl_s: int = _setting(86400, "Seconds an undelivered result is kept for the user.", int)
    session_ttl_s: int = _setting(86400, "Seconds the last prompt and conversation are kept.", int)
    job_timeout_s: int = _setting(120, "rq job_timeout for one job.", int)
    heartbeat_s: float = _setting(
        2.0, "Seconds between worker heartbeats (dead after 3 missed).", float
    )
    max_body_bytes: int = _setting(262144, "Largest webhook body accepted (413 above).", int)
    max_prompt_chars: int = _setting(1000, "Longest prompt accepted.", int)
    callback_hosts: tuple[str, ...] = _setting(
        ("bot-api.kakao.com",), "Hosts a callback may be POSTed to (https only).", _csv
    )
    photo_hosts: tuple[str, ...] = _setting(
        ("talk.kakaocdn.net", "secure.kakaocdn.net", "dn-m.talk.kakao.com"),
        "Hosts photos may be fetched from.",
        _csv,
    )
    dev_allow: tuple[str, ...] = _setting(
        (), "Development only: exact `scheme://host:port` origins allowed although loopback.", _csv
    )
    resolve: dict[str, str] = _setting(
        {},
        "Static name resolution `host=ip,...`, consulted before DNS (like curl --resolve).",
        _pairs,
    )
    system_dns: bool = _setting(
        True, "Resolve names not in RESOLVE through the system's DNS (tests turn this off).", _bool
    )
    fetch_timeout_s: float = _setting(5.0, "Timeout of one outgoing HTTP request.", float)
    fetch_max_bytes: int = _setting(20_000_000, "Largest response body read from the network.", int)
    debug_job_delay_s: float = _setting(
        0.0, "Development only: seconds a worker sleeps before each job (a test seam).", float
    )
    log_level: str = _setting("INFO", "Log level.")
    log_json: bool = _setting(True, "Structured JSON log lines (false: plain text).", _bool)

    @property
    def development(self) -> bool:
        return self.mode == "development"

    @property
    def media_path(self) -> Path:
        return self.media_dir or self.data_dir / "media"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from an environment mapping (default os.environ), then apply overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = PREFIX + f.name.upper()
            raw = env.get(key)
            if raw is None and f.name == "redis_url":
                raw = env.get("REDIS_URL")
            if raw is None:
                continue
            parse = f.metadata.get("parse") or (lambda v: v)
            try:
                values[f.name] = parse(raw)
            except ValueError as exc:
                raise SettingsError(f"{key}: {exc}") from exc
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse combinations that must not run."""
        if self.mode not in {"development", "production"}:
            raise SettingsError(
                f"{PREFIX}MODE must be development or production, not {self.mode!r}"
            )
        if not self.development:
            if not self.secret:
                raise SettingsError(
                    f"{PREFIX}SECRET is required in production: set a long random value and add "
                    f"it as the {self.secret_header} header in the Kakao skill settings "
                    f"(or set {PREFIX}MODE=development on a test machine)."
                )
            if self.dev_allow:
                raise SettingsError(f"{PREFIX}DEV_ALLOW is only allowed in development mode.")
            if self.debug_job_delay_s:
                raise SettingsError(
                    f"{PREFIX}DEBUG_JOB_DELAY_S is only allowed in development mode."
                )
            if self.preset == "tiny":
                raise SettingsError(f"{PREFIX}PRESET=tiny is only allowed in development mode.")
        if self.sync_wait_s < 0 or self.sync_wait_s > 4.5:
            raise SettingsError(f"{PREFIX}SYNC_WAIT_S must be between 0 and 4.5 (Kakao waits 5 s).")

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests and tools)."""
        return dataclasses.replace(self, **changes)


def markdown_table() -> str:
    """The README's settings table."""
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for f in dataclasses.fields(Settings):
        default = f.default if f.default is not dataclasses.MISSING else ""
        if isinstance(default, tuple):
            default = ",".join(default)
        elif isinstance(default, dict):
            default = ""
        rows.append(f"| `{PREFIX}{f.name.upper()}` | `{default}` | {f.metadata['doc']} |")
    return "\n".join(rows)


if __name__ == "__main__" and "--markdown" in sys.argv:
    print(markdown_table())
