"""A conversation about a photo: the per-chat photo session in Redis, and the handlers for
photos and questions (each returns a request to queue or a reply; none calls the core).

The session (one JSON value per chat, `kt:photo:<messenger>:<chat>`; in a private chat the chat
is the person) holds the private photo ids, who sent them, and the recent (question, answer)
turns: in a group its members talk about the same photo. It expires with its photos:
PHOTO_TTL_S after they arrived, however long the conversation goes on, so the help text can
state one keeping time.
A new photo or `새 사진` starts over (the old photos are deleted at once); `기록 삭제` deletes
the person's kept results and last prompt, and the photos they sent with their session.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from bot.core import intents, keys
from bot.core.actions import ActionName, Planned, ToQueue
from bot.core.events import Event, Reply, Text
from bot.core.job import Request
from bot.core.photos import Limits, PhotoError, PhotoStore, Received, check, receive
from bot.core.settings import Settings
from bot.core.texts import duration, help_quick_replies, photo_quick_replies, quick, say
from bot.core.urlguard import UrlGuard

log = logging.getLogger(__name__)
MAX_TURNS = 6  # recent turns sent with a follow-up; the model trims further to its context
# An adapter's fetch of a photo's bytes: fetch(max_bytes, deadline as epoch s) -> bytes, raising
# PhotoError (retryable when the deadline passed or the fault may pass).
Fetch = Callable[[int, float], bytes]


@dataclass(frozen=True)
class PhotoSession:
    """What a user's conversation about a photo holds. `last_at`: when the last photo or answer
    came (epoch seconds; 0 for a session written before it was kept): the follow-up window
    (PHOTO_FOLLOWUP_S, bot/core/intents.py) runs from it."""

    photos: tuple[str, ...]
    video: bool
    turns: tuple[tuple[str, str], ...]
    expires_at: float
    last_at: float = 0.0  # the last photo or answer (the follow-up window starts there)
    owner: str = ""  # the person who sent the photos ('' in sessions written before)

    def to_json(self) -> str:
        return json.dumps(
            {
                "photos": list(self.photos),
                "video": self.video,
                "turns": [list(t) for t in self.turns],
                "expires_at": self.expires_at,
                "last_at": self.last_at,
                "owner": self.owner,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> PhotoSession:
        data = json.loads(raw)
        return cls(
            tuple(data.get("photos", ())),
            bool(data.get("video", False)),
            tuple((str(q), str(a)) for q, a in data.get("turns", ())),
            float(data.get("expires_at", 0.0)),
            float(data.get("last_at", 0.0)),
            str(data.get("owner", "")),
        )

    def in_followup(self, now: float, window_s: float) -> bool:
        """Whether `now` is inside the follow-up window after the last photo or answer."""
        return now - self.last_at <= window_s


class Conversations:
    """Reads and writes chats' photo sessions; deletes their photos with them. `chat` is the
    chat's id (Event.room), which in a private chat is the person's."""

    def __init__(
        self, r: redis.Redis, store: PhotoStore, ttl_s: int, max_turns: int = MAX_TURNS
    ) -> None:
        self.r = r
        self.store = store
        self.ttl_s = ttl_s
        self.max_turns = max_turns

    def current(self, messenger: str, chat: str) -> PhotoSession | None:
        """The chat's photo session, if one is live."""
        raw = self.r.get(keys.photo_session(messenger, chat))
        return PhotoSession.from_json(raw) if raw else None

    def start(
        self, messenger: str, chat: str, photos: tuple[str, ...], video: bool, owner: str = ""
    ) -> PhotoSession:
        """Start over with new photos (sent by `owner`); the previous session's photos are
        deleted."""
        now = time.time()
        session = PhotoSession(photos, video, (), now + self.ttl_s, now, owner or chat)
        old = self.r.set(
            keys.photo_session(messenger, chat),
            session.to_json(),
            exat=int(session.expires_at) + 1,
            get=True,
        )
        if isinstance(old, bytes | str) and old:
            self.store.delete(p for p in PhotoSession.from_json(old).photos if p not in photos)
        self.store.purge_if_due(self.r)
        return session

    def add_turn(
        self, messenger: str, chat: str, photos: tuple[str, ...], question: str, answer: str
    ) -> bool:
        """Record a turn, unless the session moved on to other photos meanwhile."""
        key = keys.photo_session(messenger, chat)
        for _ in range(5):
            with self.r.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if not raw:
                        return False
                    session = PhotoSession.from_json(raw)
                    if session.photos != tuple(photos):
                        return False
                    turns = (*session.turns, (question, answer))[-self.max_turns :]
                    updated = dataclasses.replace(session, turns=turns, last_at=time.time())
                    pipe.multi()
                    pipe.set(key, updated.to_json(), keepttl=True)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue
        return False

    def clear(self, messenger: str, chat: str) -> int:
        """End the session and delete its photos; returns how many files went."""
        raw = self.r.getdel(keys.photo_session(messenger, chat))
        if not raw:
            return 0
        return self.store.delete(PhotoSession.from_json(raw).photos)

    def forget(self, messenger: str, user: str, chat: str = "") -> None:
        """`기록 삭제`: the person's last prompt, kept results and seed pin, the photos they
        sent with their conversation (in a group, another member's photo stays), and the ids
        kept of group photos they sent (LINE). The mark that the notice was shown stays: it
        holds nothing the user said."""
        chat = chat or user
        key = keys.photo_session(messenger, chat)
        for _ in range(5):
            with self.r.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    session = PhotoSession.from_json(raw) if raw else None
                    theirs = session is not None and (session.owner or chat) == user
                    pipe.multi()
                    if theirs:
                        pipe.delete(key)
                    pipe.execute()
                except redis.WatchError:
                    continue
            if theirs and session is not None:
                self.store.delete(session.photos)
            break
        sent = keys.group_photos_by(messenger, user)  # ids of group photos they sent (LINE)
        self.r.delete(
            *(keys.as_text(k) for k in self.r.smembers(sent)),
            sent,
            keys.kept(messenger, user),
            keys.last_prompt(messenger, user),
            keys.seed_pin(messenger, user),
        )


# The handlers ----------------------------------------------------------------------------------


class PhotoDesk:
    """The handlers for photos and questions about them, for one web process."""

    def __init__(
        self, settings: Settings, guard: UrlGuard, store: PhotoStore, sessions: Conversations
    ) -> None:
        self.settings = settings
        self.guard = guard
        self.store = store
        self.sessions = sessions

    def photos_in(self, event: Event) -> Planned:
        """Photos arrived by URL (Kakao): fetch and keep them now, hand the rest to the worker,
        then ask (a caption that is a question) or answer."""
        s = self.settings
        received = receive(
            self.guard,
            self.store,
            event.image_urls,
            Limits.from_settings(s),
            event.received_at + s.photo_fetch_budget_s,
            hand_over=True,
        )
        caption = _caption(event.text)
        if received.pending:
            log.info("photo fetch handed to the worker", extra={"pending": len(received.pending)})
            request = Request(
                images=received.ids,
                photo_urls=received.pending,
                question=caption if len(caption) <= s.max_question_chars else "",
                language=event.lang,
            )
            return ToQueue(request, task="ask", hold_slot=False)
        if not received.ids:
            return error_reply(received.errors, event.lang)
        return self._received(event, received, caption)

    def bytes_in(self, event: Event, fetch: Fetch, ref: str) -> Planned:
        """A photo or clip whose bytes the adapter fetches with the bot's credentials (Telegram,
        LINE: `fetch(max_bytes, deadline)`, raising PhotoError): the same checks, the same
        private store and the same conversation as a photo by URL, and the same budget
        (PHOTO_FETCH_BUDGET_S): what does not arrive in time, or fails for a passing fault, is
        handed to the worker by `ref` (Telegram's file_id, LINE's message id), never by URL."""
        s = self.settings
        limits = Limits.from_settings(s)
        deadline = event.received_at + s.photo_fetch_budget_s
        caption = _caption(event.text)
        try:
            if time.time() >= deadline:
                raise PhotoError("photo_unreachable", "no time left", retryable=True)
            data = fetch(max(limits.max_bytes, limits.clip_max_bytes), deadline)
            kind, data = check(data, limits, deadline)
            photo_id = self.store.put(data, kind)
        except PhotoError as exc:
            log.info("photo not used", extra={"why": exc.key, "detail": str(exc)})
            if exc.retryable:
                log.info("photo fetch handed to the worker", extra={"pending": 1})
                request = Request(
                    photo_refs=(ref,),
                    question=caption if len(caption) <= s.max_question_chars else "",
                    language=event.lang,
                )
                return ToQueue(request, task="ask", hold_slot=False)
            return error_reply((exc,), event.lang)
        except OSError as exc:
            log.error("photo not stored", extra={"error": str(exc)})
            return error_reply((PhotoError("photo_unreachable"),), event.lang)
        received = Received((photo_id,), kind == "clip", (), ())
        return self._received(event, received, caption)

    def _received(self, event: Event, received: Received, caption: str) -> Planned:
        session = self.sessions.start(
            event.messenger, event.room, received.ids, received.video, owner=event.user
        )
        log.info("photos received", extra={"count": len(received.ids), "video": received.video})
        if caption:
            return self.ask(event, caption, session)
        return received_reply(received, event.lang)

    def ask(self, event: Event, question: str, session: PhotoSession) -> Planned:
        """A question about the session's photo goes to the vision-language queue."""
        limit = self.settings.max_question_chars
        if len(question) > limit:
            text = say("question_too_long", event.lang, n=limit)
            return Reply((Text(text),), kind="error")
        request = Request(
            question=question,
            images=session.photos,
            history=session.turns[-MAX_TURNS:],
            language=event.lang,
        )
        return ToQueue(request, task="ask")

    def start_over(self, event: Event) -> Reply:
        """`새 사진`: forget the current photo and its conversation."""
        self.sessions.clear(event.messenger, event.room)
        return Reply((Text(say("new_photo", event.lang)),), (quick("quick_help", event.lang),))

    def forget(self, event: Event) -> Reply:
        """`기록 삭제`: delete the person's data and the photos they sent, at once."""
        self.sessions.forget(event.messenger, event.user, event.room)
        log.info("user history deleted")
        return Reply((Text(say("forgotten", event.lang)),), (quick("quick_help", event.lang),))

    def help_text(self, lang: str) -> Text:
        """The help text, with the photos' keeping time from the settings."""
        return Text(say("help", lang, keep=duration(self.settings.photo_ttl_s, lang)))


def _caption(text: str) -> str:
    """A caption (other messengers) that is a question is asked at once."""
    return text if intents.decide(text, has_photo=True).name == ActionName.ASK else ""


def received_reply(received: Received, lang: str) -> Reply:
    """`사진을 받았어요. 무엇이 궁금하세요?` with its quick replies (and a note on any rejects)."""
    if received.video:
        first = say("clip_received", lang)
    elif len(received.ids) > 1:
        first = say("photos_received", lang, n=len(received.ids))
    else:
        first = say("photo_received", lang)
    parts = [Text(first)]
    if received.errors:
        why = error_text(received.errors[0], lang)
        parts.append(Text(say("photo_partial", lang, bad=len(received.errors), why=why)))
    return Reply(tuple(parts), photo_quick_replies(lang), kind="info")


def error_text(error: PhotoError, lang: str) -> str:
    """The user's message for a photo that could not be used."""
    return say(error.key, lang, **error.values)


def error_reply(errors: tuple[PhotoError, ...], lang: str) -> Reply:
    """Nothing usable arrived: say why, in one short message."""
    error = errors[0] if errors else PhotoError("photo_unreachable")
    return Reply((Text(error_text(error, lang)),), (quick("quick_help", lang),), kind="error")


def small_talk(event: Event, has_photo: bool) -> Reply:
    """Thanks, praise, laughter, `응`, emoji: a short friendly answer with the help quick
    replies."""
    thanks = any(
        w in event.text.lower() for w in ("고마", "감사", "땡큐", "thank", "thx", "ㄱㅅ", "ㄳ")
    )
    key = "small_thanks" if thanks else "small_talk_photo" if has_photo else "small_talk"
    return Reply((Text(say(key, event.lang)),), help_quick_replies(event.lang))


def hint(event: Event) -> Reply:
    """A question with no photo in the session: ask for the photo, draw nothing."""
    return Reply((Text(say("photo_hint", event.lang)),), (quick("quick_help", event.lang),))
