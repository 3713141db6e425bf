"""Every KoalaTalk setting, read from the environment once at start (prefix KOALATALK_).

No other module reads `os.environ`. docs/settings.md's table is generated from the fields below
(`scripts/settings-table`), and tests/test_docs.py keeps the two from drifting apart.
"""

from __future__ import annotations

import dataclasses
import os
import re
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
    media_backend: str = _setting("local", "Image store: `local` (MEDIA_DIR), `redis` or `s3`.")
    s3_bucket: str = _setting("", "S3 bucket of the image store.")
    s3_prefix: str = _setting("koalatalk/", "Key prefix inside the bucket.")
    s3_endpoint_url: str = _setting("", "S3-compatible endpoint (MinIO, R2, …); empty: AWS.")
    s3_region: str = _setting("us-east-1", "S3 region.")
    s3_public_base: str = _setting(
        "", "Public base URL of the bucket (CDN); empty: presigned URLs."
    )
    s3_access_key: str = _setting("", "S3 access key (empty: boto3's usual credential chain).")
    s3_secret_key: str = _setting("", "S3 secret key.")
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
    record_ttl_s: int = _setting(
        3600,
        "Seconds a finished job's record, hand-over claim and stored answer stay in Redis.",
        int,
    )
    job_timeout_s: int = _setting(120, "rq job_timeout for one job.", int)
    heartbeat_s: float = _setting(
        2.0, "Seconds between worker heartbeats (dead after 3 missed).", float
    )
    max_body_bytes: int = _setting(262144, "Largest webhook body accepted (413 above).", int)
    max_prompt_chars: int = _setting(1000, "Longest prompt accepted.", int)
    translation: bool = _setting(
        True,
        "Translate prompts with Hangul into English before KOALA (text-to-image worker).",
        _bool,
    )
    translation_model: str = _setting(
        "opus-mt-tc-big-ko-en",
        "Translation preset (`opus-mt-tc-big-ko-en`, `opus-mt-ko-en`, `tiny`) or a Marian repo id.",
    )
    translation_cache_ttl_s: int = _setting(
        30 * 86400, "Seconds a translation stays cached in Redis.", int
    )
    safety_policy: str = _setting(
        "block",
        "What happens to a picture the image safety checker flags: `allow` (no check), `blur` "
        "(publish it blurred) or `block` (never publish it).",
    )
    safety_model: str = _setting(
        "Falconsai/nsfw_image_detection", "Image-classification repo of the safety checker."
    )
    safety_threshold: float = _setting(
        0.5, "Probability of an unsafe label above which a picture is flagged.", float
    )
    blocklist_path: Path | None = _setting(
        None,
        "File of blocked prompt terms, one per line, in any language (checked before and "
        "after translation; read at start).",
        Path,
    )
    log_prompts: bool = _setting(
        False, "Write prompts into refusal logs (false: only their length and a hash).", _bool
    )
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
    vlm_preset: str = _setting(
        "ko-llava-13b", "Vision-language preset the worker loads for the `vision` queue."
    )
    vlm_max_new_tokens: int = _setting(
        256, "Cap on an answer's tokens (keeps a photo answer inside the callback minute).", int
    )
    max_question_chars: int = _setting(500, "Longest question about a photo accepted.", int)
    photo_dir: Path | None = _setting(
        None, "Private folder of received photos, never served (default DATA_DIR/photos).", Path
    )
    photo_ttl_s: int = _setting(
        3600, "Seconds a received photo and the conversation about it are kept.", int
    )
    photo_followup_s: int = _setting(
        300,
        "Seconds after the last photo or answer in which a message that is neither a drawing "
        "request nor a question is read as a follow-up question about the photo; after it, "
        "such a message is drawn (docs/chat.md).",
        int,
    )
    photo_max_bytes: int = _setting(15_000_000, "Largest photo file accepted.", int)
    photo_max_pixels: int = _setting(
        50_000_000, "Largest photo in pixels (width x height) accepted.", int
    )
    photo_fetch_budget_s: float = _setting(
        3.5,
        "Seconds from arrival the webhook spends fetching photos before it hands the rest "
        "to the worker.",
        float,
    )
    clip_max_s: float = _setting(60.0, "Longest video clip accepted, in seconds.", float)
    clip_max_bytes: int = _setting(20_000_000, "Largest video clip file accepted.", int)
    clip_frames: int = _setting(8, "Frames sampled evenly from a clip.", int)
    compile_unet: bool = _setting(
        False,
        "torch.compile the UNet on CUDA (warmed up at start; the first compile takes minutes).",
        _bool,
    )
    rate_limit: int = _setting(
        10, "Requests a user may queue per RATE_WINDOW_S (0: no limit).", int
    )
    rate_window_s: float = _setting(60.0, "Sliding window of the per-user rate limit.", float)
    daily_quota: int = _setting(200, "Jobs per user per UTC day (0: no quota).", int)
    dedupe_s: int = _setting(10, "Identical requests from a user within this become one job.", int)
    default_service_s: float = _setting(
        3.0, "Seconds per job assumed until workers have measured their own.", float
    )
    operators: tuple[str, ...] = _setting(
        (), "User ids (`messenger:id` or bare id) with admin commands and queue priority.", _csv
    )
    blocked_users: tuple[str, ...] = _setting(
        (), "User ids (`messenger:id` or bare id) refused by configuration.", _csv
    )
    maintenance: str = _setting(
        "", "When set, new requests get this message and nothing is queued (queues drain)."
    )
    max_batch: int = _setting(4, "Largest text-to-image batch a worker runs in one call.", int)
    batch_wait_ms: float = _setting(
        10.0, "Milliseconds a worker waits to fill a batch after its first job.", float
    )
    vlm_quant: str = _setting(
        "none",
        "Load the VLM's language model quantized: `none` (fp16), `int8` or `int4` "
        "(torchao weight-only; the vision tower and projector stay fp16).",
    )
    draw_memory: str = _setting(
        "normal",
        "Drawing memory mode: `normal`, `low` (VAE tiling and slicing, attention "
        "slicing), `offload` (low, plus model CPU offload: for 8 GB cards).",
    )
    gpu_memory: str = _setting(
        "",
        "GPU memory the start-up memory plan assumes (`24GiB`, `8GB`); empty: the free "
        "memory the GPU reports.",
    )
    dequeue: str = _setting(
        "round_robin",
        "How a worker serving several queues picks the next job: "
        "`round_robin` (fair, no queue starves), `random`, or `default` (strict order).",
    )
    debug_job_delay_s: float = _setting(
        0.0, "Development only: seconds a worker sleeps before each job (a test seam).", float
    )
    playground: bool | None = _setting(
        None,
        "Serve the chat playground at /playground (default: on in development, off in "
        "production; development only).",
        _bool,
    )
    ready_queues: tuple[str, ...] = _setting(
        (), "Queues /readyz requires a live worker for (default: every queue jobs go to).", _csv
    )
    telegram_token: str = _setting("", "Telegram bot token from @BotFather (empty: no Telegram).")
    telegram_secret: str = _setting(
        "",
        "Secret Telegram sends in X-Telegram-Bot-Api-Secret-Token (set with setWebhook); "
        "required in production when TELEGRAM_TOKEN is set. Letters, digits, _ and -.",
    )
    telegram_api_base: str = _setting("https://api.telegram.org", "Telegram Bot API base URL.")
    telegram_bot_username: str = _setting(
        "",
        "The bot's Telegram username (without @): in groups the bot answers mentions of it, "
        "replies to its messages and `/command@username`. Empty: asked of Telegram (getMe) "
        "on the first update.",
    )
    group_answer_all: bool = _setting(
        False,
        "In Telegram and LINE groups, answer every message (false: only those addressed to the "
        "bot: a mention, a reply to the bot, a command).",
        _bool,
    )
    line_channel_secret: str = _setting(
        "", "LINE channel secret: checks X-Line-Signature (empty: no LINE)."
    )
    line_access_token: str = _setting("", "LINE channel access token for replies and pushes.")
    line_api_base: str = _setting("https://api.line.me", "LINE Messaging API base URL.")
    line_content_base: str = _setting(
        "https://api-data.line.me", "LINE content API base URL (image bytes by message id)."
    )
    line_reply_window_s: float = _setting(
        50.0, "Seconds after arrival a LINE reply token is still used (then push).", float
    )
    log_level: str = _setting("INFO", "Log level.")
    log_json: bool = _setting(True, "Structured JSON log lines (false: plain text).", _bool)

    @property
    def development(self) -> bool:
        return self.mode == "development"

    @property
    def playground_on(self) -> bool:
        """The playground is served (development only)."""
        return self.development and self.playground is not False

    @property
    def media_path(self) -> Path:
        return self.media_dir or self.data_dir / "media"

    @property
    def photo_path(self) -> Path:
        return self.photo_dir or self.data_dir / "photos"

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
            if self.translation_model == "tiny" or self.safety_model.startswith("koalatalk/"):
                raise SettingsError(
                    f"{PREFIX}TRANSLATION_MODEL=tiny and the koalatalk/tiny-safety checkers are "
                    "only allowed in development mode."
                )
            if self.vlm_preset.startswith("tiny"):
                raise SettingsError(
                    f"{PREFIX}VLM_PRESET={self.vlm_preset} is only allowed in development mode."
                )
            if self.playground:
                raise SettingsError(f"{PREFIX}PLAYGROUND is only allowed in development mode.")
            if self.telegram_token and not self.telegram_secret:
                raise SettingsError(
                    f"{PREFIX}TELEGRAM_SECRET is required in production with TELEGRAM_TOKEN: "
                    "set a long random value (letters, digits, _ and -), then run "
                    "`python -m workers.cli telegram-set-webhook`."
                )
            if self.line_channel_secret and not self.line_access_token:
                raise SettingsError(
                    f"{PREFIX}LINE_ACCESS_TOKEN is required with LINE_CHANNEL_SECRET."
                )
        if self.safety_policy not in {"allow", "blur", "block"}:
            raise SettingsError(
                f"{PREFIX}SAFETY_POLICY must be allow, blur or block, not {self.safety_policy!r}"
            )
        if self.telegram_secret and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", self.telegram_secret):
            raise SettingsError(
                f"{PREFIX}TELEGRAM_SECRET may hold only letters, digits, _ and - (1 to 256)."
            )
        if self.media_backend not in {"local", "redis", "s3"}:
            raise SettingsError(f"{PREFIX}MEDIA_BACKEND must be local, redis or s3.")
        if self.media_backend == "s3" and not self.s3_bucket:
            raise SettingsError(f"{PREFIX}S3_BUCKET is required with MEDIA_BACKEND=s3.")
        for name, allowed in (
            ("vlm_quant", ("none", "int8", "int4")),
            ("draw_memory", ("normal", "low", "offload")),
            ("dequeue", ("round_robin", "random", "default")),
        ):
            if getattr(self, name) not in allowed:
                raise SettingsError(
                    f"{PREFIX}{name.upper()} must be {', '.join(allowed[:-1])} or {allowed[-1]}, "
                    f"not {getattr(self, name)!r}."
                )
        if self.gpu_memory:
            from bot.core.sizes import parse_bytes

            try:
                parse_bytes(self.gpu_memory)
            except ValueError as exc:
                raise SettingsError(f"{PREFIX}GPU_MEMORY: {exc}") from exc
        if self.sync_wait_s < 0 or self.sync_wait_s > 4.5:
            raise SettingsError(f"{PREFIX}SYNC_WAIT_S must be between 0 and 4.5 (Kakao waits 5 s).")
        if self.photo_fetch_budget_s < 0 or self.photo_fetch_budget_s > 4.5:
            raise SettingsError(
                f"{PREFIX}PHOTO_FETCH_BUDGET_S must be between 0 and 4.5 (Kakao waits 5 s)."
            )

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests and tools)."""
        return dataclasses.replace(self, **changes)


def markdown_table() -> str:
    """The settings table of docs/settings.md."""
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
