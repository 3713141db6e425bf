"""The job: a small frozen dataclass that travels through rq as plain JSON.

Importable without torch: the web side builds and enqueues jobs, workers run them. Later
features fill these fields rather than add a schema.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

TEXT_TO_IMAGE_QUEUE = "text2image"
VISION_LANGUAGE_QUEUE = "vision"

# Job functions are enqueued by dotted name, so the web never imports model code.
TASKS = {
    "draw": ("workers.tasks.draw", TEXT_TO_IMAGE_QUEUE),
    "ask": ("workers.vision.ask", VISION_LANGUAGE_QUEUE),
    "storybook": ("workers.storybook.draw_book", TEXT_TO_IMAGE_QUEUE),
}


@dataclass(frozen=True)
class Request:
    """What the user asked for. Unset numbers fall back to the preset's values."""

    prompt: str = ""
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    language: str = "ko"
    # A question about photos (task "ask"): private photo ids, photo URLs the webhook could not
    # fetch in time (the worker fetches them), and the earlier (question, answer) turns.
    question: str = ""
    images: tuple[str, ...] = ()
    photo_urls: tuple[str, ...] = ()
    # Photos the webhook could not fetch in time from a messenger that holds them (Telegram's
    # file_id, LINE's message id): the worker fetches them through that messenger's API. Never
    # a URL holding a token.
    photo_refs: tuple[str, ...] = ()
    history: tuple[tuple[str, str], ...] = ()
    style: str = ""  # a bot/core/options.py STYLES key; its text is added after translation
    translate: bool = True  # False: the user asked to draw the prompt as written
    source_image: str = ""  # a private photo id (bot/core/photos.py): redraw that photo
    strength: float | None = None  # how far a redraw may move from the photo, 0..1
    # A storybook (task "storybook", bot/core/storybook.py): its kind and one sentence a scene;
    # scene i is drawn with seed + i.
    book: str = ""
    scenes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    """One unit of work for a worker, and everything needed to deliver its answer."""

    request_id: str
    messenger: str
    user: str
    deadline: float  # epoch seconds after which the job is not started
    preset: str
    request: Request
    task: str = "draw"
    reply_to: str | None = None  # the reply handle: Kakao's callback URL, or None (pull)
    received_at: float = 0.0
    lang: str = "ko"
    meta: dict[str, Any] = field(default_factory=dict)
    # Optional, so jobs queued before they existed still run. `user` is the person; `chat` where
    # they wrote (a group: the photo session's owner and where the answer goes; empty: the
    # person's own chat); `reply_to_message` the asker's message the answer replies to.
    chat: str = ""
    reply_to_message: str = ""

    @property
    def room(self) -> str:
        """Where the answer goes and whose photo session it is: the chat, else the person."""
        return self.chat or self.user

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form for rq's JSON serializer (flat, so no deep copy is needed)."""
        return {**vars(self), "request": dict(vars(self.request)), "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Inverse of to_dict; unknown keys are ignored so old workers survive new fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        request_names = {f.name for f in dataclasses.fields(Request)}
        request = {k: v for k, v in data.get("request", {}).items() if k in request_names}
        for name in ("images", "photo_urls", "photo_refs", "scenes"):  # JSON brings lists back
            request[name] = tuple(request.get(name, ()))
        request["history"] = tuple((str(q), str(a)) for q, a in request.get("history", ()))
        values["request"] = Request(**request)
        return cls(**values)

    @property
    def function(self) -> str:
        """The dotted name of the job function."""
        return TASKS[self.task][0]

    @property
    def queue(self) -> str:
        """The rq queue of this job's model family."""
        return TASKS[self.task][1]
