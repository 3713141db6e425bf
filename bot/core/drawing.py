"""From a drawing message to a Request: options, the block list, seeds, styles and photos.

The core (bot/core/service.py) asks `Drawing.plan` what to do with a drawing action and gets either
a request to queue or a Reply that says what to fix. Nothing here waits on a model.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from typing import TYPE_CHECKING, Any

import redis

from bot.core import keys, options, storybook
from bot.core.actions import Action, ActionName, Planned, ToQueue
from bot.core.blocklist import BlockList, log_refusal
from bot.core.events import Ack, Event, Outcome, Part, Reply, Text
from bot.core.job import Request
from bot.core.options import MAX_SEED, STYLES, OptionError, style_label
from bot.core.sessions import Sessions
from bot.core.settings import Settings
from bot.core.texts import duration, help_quick_replies, quick, say
from models.presets import TEXT_TO_IMAGE

if TYPE_CHECKING:
    from bot.core.conversation import PhotoSession

log = logging.getLogger(__name__)

REQUEST_FIELDS = frozenset(f.name for f in dataclasses.fields(Request))


DEFERRED_SEED = -1  # web process only: the seed is chosen at admission, never enqueued as -1


class Drawing:
    """Plans drawing requests for one web process."""

    def __init__(self, settings: Settings, r: redis.Redis, sessions: Sessions) -> None:
        self.settings = settings
        self.r = r
        self.sessions = sessions
        self.blocklist = BlockList.load(settings.blocklist_path)  # read once, at start
        preset = TEXT_TO_IMAGE.get(settings.preset)
        self.canvas = (preset.width, preset.height) if preset else (1024, 1024)
        self._notices: dict[str, str] = {}

    def plan(
        self,
        event: Event,
        action: Action,
        photo: str | None = None,
        pin: bytes | None = None,
        defer_seed: bool = False,
    ) -> Planned:
        """A request to queue, or a Reply, for a drawing action (actions.DRAWING) or a redraw;
        `photo` is the session's photo id, if any, and `pin` the seed `같은 시드로` kept (read by
        the caller with the user's other state). `defer_seed`: admission reads the pin."""
        lang = event.lang
        if action.name == ActionName.REDRAW:
            return self._redraw(event)
        if action.name == ActionName.STORYBOOK:
            return self._book(event, action.text, pin)
        if action.name == ActionName.SAME_SEED:
            return self._same_seed(event)
        if action.name == ActionName.RESTYLE:
            return self._restyle(event, action.text)
        if action.name == ActionName.PHOTO_FIRST or (
            action.name == ActionName.PHOTO_RESTYLE and photo is None
        ):
            return Reply((Text(say("photo_first", lang)),), help_quick_replies(lang), kind="error")
        if action.name == ActionName.PHOTO_RESTYLE and photo is not None:
            return self._photo(event, action.text, photo, pin)
        return self._prompt(event, action.text, pin, defer_seed)

    def notice(self, lang: str) -> str:
        """The one-line notice a new user's first answer carries (settings are read once)."""
        if lang not in self._notices:
            s = self.settings
            keep = max(s.session_ttl_s, s.media_retention_s)
            self._notices[lang] = say(
                "notice", lang, keep=duration(keep, lang), photo_keep=duration(s.photo_ttl_s, lang)
            )
        return self._notices[lang]

    # --- one per action ----------------------------------------------------------------------

    def _prompt(
        self, event: Event, text: str, pin: bytes | None, defer_seed: bool = False
    ) -> Planned:
        lang = event.lang
        try:
            found = options.parse(text, self.settings.max_prompt_chars)
        except OptionError as exc:
            log.info("options refused", extra={"why": exc.key})
            return problem(exc, lang)
        refused = self._refuse(event, found.prompt)
        if refused is not None:
            return refused
        # Deferred: admission reads the pinned seed in its own round trip (Core.handle).
        pinned = DEFERRED_SEED if defer_seed else self._take_pin(event, pin)
        width, height = options.size_for(found.shape, *self.canvas)
        return ToQueue(
            Request(
                prompt=found.prompt,
                negative_prompt=found.negative,
                width=width,
                height=height,
                seed=found.seed if found.seed is not None else pinned,
                language=lang,
                style=found.style or "",
                translate=found.translate,
            )
        )

    def _redraw(self, event: Event) -> Planned:
        """`다시 그리기`: the last request with a new seed."""
        last = self.sessions.last_prompt(event.messenger, event.user)
        if last is None:
            return no_last_prompt(event.lang)
        return again(request_from(last, seed=new_seed()))

    def _restyle(self, event: Event, style: str) -> Planned:
        """The last request in another style, with the same seed so the two compare."""
        last = self.sessions.last_prompt(event.messenger, event.user)
        if last is None:
            return no_last_prompt(event.lang)
        return again(request_from(last, style=style))

    def _book(self, event: Event, text: str, pin: bytes | None) -> Planned:
        """`동화: …`: the story's scenes, drawn in one batch (bot/core/storybook.py). A block-list
        word in any scene refuses the whole book, naming that sentence; one sentence is one
        picture in the kind's style."""
        lang = event.lang
        story = storybook.book_text(text)
        if story is None or not story.text:
            return Reply((Text(say("book_empty", lang)),), help_quick_replies(lang), kind="error")
        try:
            book = storybook.read(story, self.settings.max_prompt_chars)
        except OptionError as exc:
            return problem(exc, lang)
        if not book.scenes:
            return Reply((Text(say("book_empty", lang)),), help_quick_replies(lang), kind="error")
        for scene in book.scenes:
            term = self.blocklist.match(scene)
            if term is not None:
                log_refusal("blocklist", scene, self.settings.log_prompts, term=term)
                return Reply(
                    (Text(say("book_blocked", lang, sentence=scene[:60])),),
                    (quick("quick_help", lang),),
                    kind="error",
                )
        found = book.found
        width, height = options.size_for(found.shape, *self.canvas)
        seed = found.seed if found.seed is not None else self._take_pin(event, pin)
        request = Request(
            prompt=" ".join(book.scenes) if len(book.scenes) > 1 else book.scenes[0],
            negative_prompt=found.negative,
            width=width,
            height=height,
            seed=seed,
            language=lang,
            style=book.style,
            translate=found.translate,
        )
        if len(book.scenes) == 1:  # one sentence: one picture in the kind's style
            return ToQueue(request)
        return ToQueue(
            dataclasses.replace(request, book=book.kind, scenes=book.scenes), task="storybook"
        )

    def _same_seed(self, event: Event) -> Reply:
        """`같은 시드로`: keep the last seed for the user's next prompt only."""
        last = self.sessions.last_prompt(event.messenger, event.user)
        if last is None or not isinstance(last.get("seed"), int):
            return no_last_prompt(event.lang)
        seed = last["seed"]
        self.r.set(keys.seed_pin(event.messenger, event.user), seed, ex=self.settings.session_ttl_s)
        return Reply((Text(say("same_seed_set", event.lang, seed=seed)),))

    def _photo(self, event: Event, text: str, photo: str, pin: bytes | None) -> Planned:
        """`이 사진을 수채화로`: redraw the session's photo."""
        restyle = options.photo_restyle(text)
        if restyle is None:  # decide() saw one; keep the two in step
            return Reply((Text(say("photo_first", event.lang)),), kind="error")
        refused = self._refuse(event, restyle.prompt)
        if refused is not None:
            return refused
        return ToQueue(
            Request(
                prompt=restyle.prompt,
                seed=self._take_pin(event, pin),
                language=event.lang,
                style=restyle.style or "",
                source_image=photo,
                strength=restyle.strength,
            )
        )

    # --- helpers -------------------------------------------------------------------------------

    def _refuse(self, event: Event, prompt: str) -> Reply | None:
        term = self.blocklist.match(prompt)
        if term is None:
            return None
        log_refusal("blocklist", prompt, self.settings.log_prompts, term=term)
        return Reply(
            (Text(say("blocked", event.lang)),), (quick("quick_help", event.lang),), kind="error"
        )

    def _take_pin(self, event: Event, raw: bytes | None) -> int:
        """The seed `같은 시드로` kept for this prompt (and only this one), else a new one."""
        if raw is not None:
            self.r.delete(keys.seed_pin(event.messenger, event.user))
            try:
                seed = int(raw)
            except ValueError:
                seed = -1
            if 0 <= seed <= MAX_SEED:
                return seed
        return new_seed()


def photo_id(session: PhotoSession | None) -> str | None:
    """The photo a redraw starts from: the first of the user's photo session (not a clip)."""
    if session is None or session.video or not session.photos:
        return None
    return session.photos[0]


def new_seed() -> int:
    """A fresh random seed in 0..2**32-1."""
    return secrets.randbelow(MAX_SEED + 1)


def request_from(stored: dict[str, Any], **changes: Any) -> Request:
    """A Request from a stored one (unknown keys from other versions are dropped)."""
    fields = {k: v for k, v in stored.items() if k in REQUEST_FIELDS}
    if "scenes" in fields:  # JSON brings lists back
        fields["scenes"] = tuple(fields["scenes"])
    return Request(**{**fields, **changes})


def again(request: Request) -> ToQueue:
    """A stored request drawn again: a storybook stays a storybook."""
    return ToQueue(request, task="storybook") if request.scenes else ToQueue(request)


def no_last_prompt(lang: str) -> Reply:
    """`다시 그리기` and its kin with nothing drawn yet."""
    return Reply((Text(say("no_last_prompt", lang)),), help_quick_replies(lang))


def problem(exc: OptionError, lang: str) -> Reply:
    """The answer to a message whose options cannot be drawn."""
    styles = ", ".join(style_label(key, lang) for key in STYLES)
    text = say(exc.key, lang, flags=", ".join(options.FLAG_NAMES), styles=styles, **exc.values)
    return Reply((Text(text),), help_quick_replies(lang), kind="error")


def with_notice(outcome: Outcome, note: str) -> Outcome:
    """The outcome with the first-contact notice: a bubble first, or in the acknowledgement."""
    if outcome.ack is not None:
        return dataclasses.replace(outcome, ack=Ack(f"{outcome.ack.text}\n{note}"))
    reply = outcome.reply
    if reply is None or any(isinstance(p, Text) and note in p.text for p in reply.parts):
        return outcome
    if len(reply.parts) < 3:  # Kakao shows at most three bubbles
        parts: tuple[Part, ...] = (Text(note), *reply.parts)
    else:
        texts = [i for i, p in enumerate(reply.parts) if isinstance(p, Text)]
        if not texts:
            return outcome
        first = reply.parts[texts[0]]
        assert isinstance(first, Text)
        merged = Text(f"{note}\n{first.text}")
        parts = (*reply.parts[: texts[0]], merged, *reply.parts[texts[0] + 1 :])
    return dataclasses.replace(outcome, reply=Reply(parts, reply.quick_replies, reply.kind))
