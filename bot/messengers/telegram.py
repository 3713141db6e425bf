"""Telegram Bot API: update parsing, rendering and sending (the route is bot/web/telegram.py).

The only module that knows Telegram's JSON. Slow answers are sent by the worker through the Bot
API (`send`). Pictures are uploaded as bytes
(multipart), so Telegram never needs to reach our /media URLs.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

from urllib3 import encode_multipart_formdata

from bot.core import payload
from bot.core.errors import NotAMessengerRequest
from bot.core.events import Cards, Event, Picture, Reply, Text
from bot.core.photos import PhotoError
from bot.core.settings import Settings
from bot.core.stores import picture_bytes
from bot.core.texts import detect_lang
from bot.core.urlguard import FetchError, UrlGuard, UrlRefused
from bot.messengers.shared import check_secret, strip_spans, utf16_span

NAME = "telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_BUTTON = 64
MAX_ALBUM = 10  # sendMediaGroup: 2 to 10 items
# Message kinds we answer with "text and photos only" rather than silence.
UNSUPPORTED = (
    "sticker",
    "location",
    "venue",
    "document",
    "video",
    "video_note",
    "voice",
    "audio",
    "animation",
    "contact",
    "poll",
    "dice",
    "game",
    "story",
)

log = logging.getLogger(__name__)


class TelegramError(Exception):
    """The Bot API refused a call or could not be reached."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Headers(Protocol):
    """What verify reads of the request headers: werkzeug's Headers and a plain dict both fit."""

    def get(self, key: str, /) -> str | None: ...


def verify(headers: Headers, body: bytes, settings: Settings) -> None:
    """The secret token set with setWebhook, in SECRET_HEADER; raises Unauthorized."""
    check_secret(headers.get(SECRET_HEADER), settings.telegram_secret, settings.development)


@dataclass(frozen=True)
class Update:
    """A parsed update: the event to answer, or why there is none."""

    update_id: int
    chat_id: str = ""
    event: Event | None = None  # None: an update we do not answer (edits, channel posts, ...)
    photo_file_id: str | None = None  # the largest size of a photo (or an image sent as a file)
    unsupported: str | None = None  # the kind of a message we cannot read
    unaddressed: bool = False  # a group message not addressed to the bot: left alone


@dataclass(frozen=True)
class Groups:
    """How the bot behaves in groups: its username (mentions, replies, `/command@name`) and
    whether it answers every message."""

    username: str = ""
    answer_all: bool = False


# --- parsing ---------------------------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _lang(text: str, language_code: Any) -> str:
    """The user's language: from the words when there are any, else from the Telegram client."""
    if text and not text.startswith("/"):
        return detect_lang(text)
    code = language_code if isinstance(language_code, str) else ""
    return "en" if code and not code.lower().startswith("ko") else "ko"


COMMANDS = frozenset({"/start", "/help", "/draw"})
GROUP_CHATS = frozenset({"group", "supergroup"})


def _command(text: str) -> tuple[str, str, str]:
    """A command's text, our command's name, and the bot it names (`/cmd@name`), if any.

    `/start@KoalaTalkBot payload` -> `/start`; `/draw@KoalaTalkBot 고양이` -> `고양이` with
    `draw`. Other commands keep their words; other text is returned as it is."""
    if not text.startswith("/"):
        return text, "", ""
    head, _, rest = text.partition(" ")
    head, _, name = head.partition("@")
    if head == "/draw":
        return rest.strip(), "draw", name
    if head in COMMANDS:
        return head, head[1:], name
    return f"{head} {rest}".strip(), "", name


def _mentions_of(text: str, entities: Any, username: str) -> list[tuple[int, int]]:
    """Where the text mentions the bot (`@username`), as (start, end) in Python characters.

    Telegram counts entity offsets in UTF-16 code units; a mention entity is used when there
    is one, and a plain `@username` word in the text is found either way."""
    if not username:
        return []
    spans: list[tuple[int, int]] = []
    for entity in entities if isinstance(entities, list) else []:
        entity = _dict(entity)
        offset, length = entity.get("offset"), entity.get("length")
        if entity.get("type") != "mention" or not isinstance(offset, int):
            continue
        if not isinstance(length, int) or offset < 0 or length <= 0:
            continue
        start, end = utf16_span(text, offset, length)
        if text[start:end].lower() == "@" + username.lower():
            spans.append((start, end))
    pattern = re.compile(r"(?<![\w@])@" + re.escape(username) + r"(?!\w)", re.IGNORECASE)
    spans.extend(m.span() for m in pattern.finditer(text))
    return sorted(set(spans))


def _to_bot(message: dict[str, Any], username: str) -> bool:
    """A reply to one of the bot's own messages."""
    author = _dict(_dict(message.get("reply_to_message")).get("from"))
    name = author.get("username")
    return (
        author.get("is_bot") is True
        and isinstance(name, str)
        and bool(username)
        and name.lower() == username.lower()
    )


def _area(size: dict[str, Any]) -> int:
    """Width times height of a photo size; 0 when either is not a number."""
    width, height = size.get("width"), size.get("height")
    return width * height if isinstance(width, int) and isinstance(height, int) else 0


def _media_file_id(message: dict[str, Any]) -> str | None:
    """The file of a photo (its largest size), an image or clip sent as a file, or a video."""
    sizes = message.get("photo")
    if isinstance(sizes, list) and sizes:
        largest = max(
            (s for s in sizes if isinstance(s, dict) and isinstance(s.get("file_id"), str)),
            key=_area,
            default=None,
        )
        return largest["file_id"] if largest else None
    for kind in ("video", "animation", "video_note"):
        file_id = _dict(message.get(kind)).get("file_id")
        if isinstance(file_id, str):
            return file_id  # a clip: bot/core/photos.py tells it from a photo by its bytes
    document = _dict(message.get("document"))
    mime = document.get("mime_type")
    file_id = document.get("file_id")
    if isinstance(mime, str) and mime.startswith(("image/", "video/")) and isinstance(file_id, str):
        return file_id  # sent "as a file", uncompressed: still a photo or a clip
    return None


def _person(message: dict[str, Any], chat_id: int | str) -> str:
    """Who wrote: `from.id` (an anonymous group admin or a channel: `sender_chat.id`)."""
    for field in ("sender_chat", "from"):
        found = _dict(message.get(field)).get("id")
        if isinstance(found, int | str) and not isinstance(found, bool):
            return str(found)
    return str(chat_id)


def parse(body: bytes, received_at: float, request_id: str, groups: Groups = Groups()) -> Update:
    """Parse a webhook update; NotAMessengerRequest when it is not one.

    The event's `user` is the person (`from.id`) and its `chat` the chat: in a group its members
    share the photo session while each keeps their own limits, results and last prompt. In a
    group only what is addressed to the bot is answered (a mention, a reply to the bot, a
    command), unless `groups.answer_all`; mentions of the bot are taken out of the text."""
    data = payload.loads(body)  # JSON text, or NotAMessengerRequest
    if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
        raise NotAMessengerRequest("no update_id")
    update_id = data["update_id"]
    message = _dict(data.get("message"))
    chat = _dict(message.get("chat"))
    chat_id = chat.get("id")
    if not message or not isinstance(chat_id, int | str) or isinstance(chat_id, bool):
        return Update(update_id)  # edited messages, channel posts, callback queries, ...
    sender = _dict(message.get("from"))
    raw_text: str | None = message["text"] if isinstance(message.get("text"), str) else None
    caption: str = message["caption"] if isinstance(message.get("caption"), str) else ""
    written = raw_text if raw_text is not None else caption
    entities = message.get("entities" if raw_text is not None else "caption_entities")
    photo = _media_file_id(message)
    group = chat.get("type") in GROUP_CHATS
    mentions = _mentions_of(written, entities, groups.username)
    text, command, named = _command(strip_spans(written, mentions))
    other_bot = bool(named and groups.username) and named.lower() != groups.username.lower()
    to_us = bool(mentions or command or named or _to_bot(message, groups.username))
    if other_bot or (group and not groups.answer_all and not to_us):
        return Update(update_id, str(chat_id), unaddressed=True)
    unsupported = None
    if raw_text is None and photo is None:
        unsupported = next((kind for kind in UNSUPPORTED if kind in message), "other")
    message_id = message.get("message_id")
    event = Event(
        messenger=NAME,
        user=_person(message, chat_id),
        text=text,
        received_at=received_at,
        request_id=request_id,
        callback_url=str(chat_id),  # the reply handle: where the worker sends the answer
        trigger="photo" if photo else ("text" if raw_text is not None else unsupported or ""),
        lang=_lang(text, sender.get("language_code")),
        waits=False,  # the worker sends the answer whenever it is ready
        chat=str(chat_id),
        reply_to_message=str(message_id) if isinstance(message_id, int) else "",
        command="draw" if command == "draw" else "",
    )
    return Update(update_id, str(chat_id), event, photo, unsupported)


# --- the Bot API -----------------------------------------------------------------------------


def _keyboard(reply: Reply, selective: bool = False) -> dict[str, Any] | None:
    """Quick replies as a one-time reply keyboard: a tap sends the text, as in KakaoTalk.

    `selective` (groups): shown only to the person whose message the answer replies to."""
    if not reply.quick_replies:
        return None
    rows = [[{"text": q.message[:MAX_BUTTON]}] for q in reply.quick_replies[:10]]
    keyboard: dict[str, Any] = {
        "keyboard": rows,
        "one_time_keyboard": True,
        "resize_keyboard": True,
    }
    if selective:
        keyboard["selective"] = True
    return keyboard


def render(reply: Reply, reply_to_message: str = "") -> list[tuple[str, dict[str, Any]]]:
    """The Bot API calls for a reply, in order: (method, params).

    A picture followed by a text becomes one photo with that text as its caption; the quick
    replies go on the last call. `sendPhoto` params hold the Picture under `photo`.
    `reply_to_message` (groups): every call replies to the asker's message, and the keyboard
    is selective, so only the asker sees it.
    """
    calls: list[tuple[str, dict[str, Any]]] = []
    parts = list(reply.parts)
    while parts:
        part = parts.pop(0)
        if isinstance(part, Cards):
            # One album, each scene its caption. An album carries no keyboard, so the combined
            # picture, the text after it and the quick replies follow as a second message.
            shown = [c for c in part.cards if c.url][:MAX_ALBUM]
            if len(shown) >= 2:
                calls.append(
                    (
                        "sendMediaGroup",
                        {
                            "media": [  # the full pictures, not thumbnails
                                Picture(c.link or c.url, c.text[:MAX_CAPTION]) for c in shown
                            ]
                        },
                    )
                )
            else:
                parts[:0] = [Picture(c.url, c.alt) for c in shown] + [Text(c.text) for c in shown]
            if part.link:
                parts.insert(0, Picture(part.link, part.all_label))
            continue
        if isinstance(part, Picture):
            params: dict[str, Any] = {"photo": part}
            following = parts[0] if parts else None
            if isinstance(following, Text) and len(following.text) <= MAX_CAPTION:
                params["caption"] = following.text
                parts.pop(0)
            calls.append(("sendPhoto", params))
        elif part.text:
            # Consecutive bubbles become one message (Kakao needs bubbles, Telegram does not).
            text = part.text
            while parts and isinstance(nxt := parts[0], Text) and len(text + nxt.text) < MAX_TEXT:
                text += "\n\n" + nxt.text
                parts.pop(0)
            for start in range(0, len(text), MAX_TEXT):
                calls.append(("sendMessage", {"text": text[start : start + MAX_TEXT]}))
    if not calls:
        calls.append(("sendMessage", {"text": "…"}))
    keyboard = _keyboard(reply, selective=bool(reply_to_message))
    if keyboard is not None:
        calls[-1][1]["reply_markup"] = keyboard
    if reply_to_message.isdigit():
        for _, params in calls:
            params["reply_parameters"] = {
                "message_id": int(reply_to_message),
                "allow_sending_without_reply": True,  # the asker may have deleted it
            }
    return calls


class BotName:
    """The bot's username, which groups need (mentions, replies to the bot, `/command@name`):
    TELEGRAM_BOT_USERNAME when set, else asked of Telegram (`getMe`) on the first update and
    kept for the process. A failed ask is made again after RETRY_S; meanwhile a group gets
    answers to commands only."""

    RETRY_S = 60.0
    TIMEOUT_S = 2.0  # inside a webhook: Telegram waits, but not for long

    def __init__(self, api: BotApi, configured: str = "") -> None:
        self.api = api
        self.known = configured.lstrip("@")
        self._next_ask = 0.0

    def get(self) -> str:
        if self.known or time.monotonic() < self._next_ask:
            return self.known
        self._next_ask = time.monotonic() + self.RETRY_S
        try:
            found = _dict(self.api.call("getMe", {}, self.TIMEOUT_S)).get("username")
        except TelegramError as exc:
            log.warning("getMe failed: groups get commands only", extra={"error": str(exc)})
            return ""
        if isinstance(found, str) and found:
            self.known = found
            log.info("bot username from getMe", extra={"username": found})
        return self.known


class BotApi:
    """Calls to the Bot API through the URL guard (purpose `telegram`)."""

    def __init__(self, guard: UrlGuard, settings: Settings) -> None:
        self.guard = guard
        self.base = settings.telegram_api_base.rstrip("/")
        self.token = settings.telegram_token

    def _url(self, method: str) -> str:
        return f"{self.base}/bot{self.token}/{method}"

    def call(self, method: str, params: dict[str, Any], timeout_s: float | None = None) -> Any:
        """A JSON call; returns `result`, raises TelegramError."""
        body = json.dumps(params, ensure_ascii=False).encode()
        return self._send(method, body, "application/json", timeout_s)

    def upload(self, method: str, params: dict[str, Any], field: str, data: bytes) -> Any:
        """A multipart call carrying one JPEG under `field`."""
        fields: dict[str, Any] = {
            k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            for k, v in params.items()
        }
        fields[field] = ("picture.jpg", data, "image/jpeg")
        body, content_type = encode_multipart_formdata(fields)
        return self._send(method, body, content_type)

    def upload_album(
        self, params: dict[str, Any], media: list[dict[str, Any]], files: dict[str, bytes]
    ) -> Any:
        """sendMediaGroup with some photos attached as `attach://name` (multipart)."""
        fields: dict[str, Any] = {
            k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            for k, v in params.items()
        }
        fields["media"] = json.dumps(media, ensure_ascii=False)
        for name, data in files.items():
            fields[name] = (f"{name}.jpg", data, "image/jpeg")
        body, content_type = encode_multipart_formdata(fields)
        return self._send("sendMediaGroup", body, content_type)

    def _send(
        self, method: str, body: bytes, content_type: str, timeout_s: float | None = None
    ) -> Any:
        try:
            response = self.guard.request(
                "POST",
                self._url(method),
                "telegram",
                body=body,
                headers={"Content-Type": content_type, "Accept": "application/json"},
                timeout_s=timeout_s,
            )
        except UrlRefused as exc:
            raise TelegramError(f"{method}: refused: {exc.reason}", retryable=False) from exc
        except FetchError as exc:
            raise TelegramError(f"{method}: {exc}", retryable=exc.retryable) from exc
        try:
            data = json.loads(response.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            data = {}
        if response.status == 200 and _dict(data).get("ok") is True:
            return data.get("result")
        description = str(_dict(data).get("description", ""))[:200]
        retry_after = _dict(_dict(data).get("parameters")).get("retry_after", 0)
        raise TelegramError(
            f"{method}: {response.status} {description}",
            retryable=response.status == 429 or response.status >= 500,
            retry_after=float(retry_after) if isinstance(retry_after, int | float) else 0.0,
        )

    def download(self, file_id: str, max_bytes: int, deadline: float | None = None) -> bytes:
        """A file's bytes by its file_id (getFile, then the file URL, which holds the token and
        is never logged or queued); PhotoError when it cannot be had, retryable when the
        `deadline` (epoch s) passed or the fault may pass."""
        try:
            found = _dict(self.call("getFile", {"file_id": file_id}, _left(deadline)))
        except TelegramError as exc:
            key = "photo_too_big" if "too big" in str(exc) else "photo_unreachable"
            raise PhotoError(key, str(exc), retryable=exc.retryable) from exc
        path = found.get("file_path")
        if not isinstance(path, str) or not path:
            raise PhotoError("photo_unreachable", "getFile gave no file_path")
        size = found.get("file_size")
        if isinstance(size, int) and size > max_bytes:
            raise PhotoError("photo_too_big", f"{size} bytes")
        try:
            return self.guard.get(
                f"{self.base}/file/bot{self.token}/{path}",
                "telegram",
                max_bytes=max_bytes,
                timeout_s=_left(deadline),
            ).body
        except UrlRefused as exc:
            raise PhotoError("photo_host", exc.reason) from exc
        except FetchError as exc:
            too_big = exc.status is not None and 200 <= exc.status < 300
            key = "photo_too_big" if too_big else "photo_unreachable"
            raise PhotoError(key, "file download failed", retryable=exc.retryable) from exc


def _left(deadline: float | None) -> float | None:
    """Seconds until `deadline` (None: the guard's own timeout); a retryable PhotoError when
    none are left."""
    if deadline is None:
        return None
    left = deadline - time.time()
    if left <= 0.01:
        raise PhotoError("photo_unreachable", "no time left", retryable=True)
    return left


def send(
    api: BotApi,
    settings: Settings,
    store: Any,
    chat_id: str,
    reply: Reply,
    reply_to_message: str = "",
) -> str:
    """Send a reply to a chat (in a group, as a reply to the asker's message `reply_to_message`);
    returns SUCCESS, or FAIL (refused for good) or error."""
    for method, params in render(reply, reply_to_message):
        params = {"chat_id": chat_id, **params}
        try:
            _call_with_retry(api, settings, store, method, params)
        except TelegramError as exc:
            log.warning("telegram send failed", extra={"method": method, "error": str(exc)})
            return "error" if exc.retryable else "FAIL"
    return "SUCCESS"


def _call_with_retry(
    api: BotApi, settings: Settings, store: Any, method: str, params: dict[str, Any]
) -> None:
    for attempt in range(3):
        try:
            if method == "sendMediaGroup":
                _album(api, settings, store, params)
                return
            if method == "sendPhoto":
                picture: Picture = params.pop("photo")
                data = picture_bytes(settings, store, picture.url)
                if data is not None:
                    api.upload(method, params, "photo", data)
                else:  # not ours (or expired here): let Telegram fetch the public URL
                    api.call(method, {**params, "photo": picture.url})
                return
            api.call(method, params)
            return
        except TelegramError as exc:
            if not exc.retryable or attempt == 2:
                raise
            if method == "sendPhoto":
                params["photo"] = picture
            time.sleep(min(max(exc.retry_after, 0.5 * (attempt + 1)), 5.0))


def _album(api: BotApi, settings: Settings, store: Any, params: dict[str, Any]) -> None:
    """An album: our pictures uploaded as bytes, others by their public URL."""
    media: list[dict[str, Any]] = []
    files: dict[str, bytes] = {}
    for i, picture in enumerate(params["media"]):
        data = picture_bytes(settings, store, picture.url)
        item: dict[str, Any] = {"type": "photo", "caption": picture.alt}
        if data is not None:
            files[f"scene{i}"] = data
            item["media"] = f"attach://scene{i}"
        else:
            item["media"] = picture.url
        media.append(item)
    rest = {k: v for k, v in params.items() if k != "media"}
    api.upload_album(rest, media, files)


def chat_action(api: BotApi, chat_id: str, action: str) -> None:
    """Show `typing` or `upload_photo` in the chat (Telegram shows it for about 5 seconds)."""
    try:
        api.call("sendChatAction", {"chat_id": chat_id, "action": action})
    except TelegramError as exc:
        log.info("chat action not shown", extra={"error": str(exc)})


def set_webhook(api: BotApi, url: str, secret: str) -> Any:
    """Register our webhook URL and its secret token with Telegram."""
    params: dict[str, Any] = {"url": url, "allowed_updates": ["message"]}
    if secret:
        params["secret_token"] = secret
    return api.call("setWebhook", params)
