"""LINE Messaging API: verifying, event parsing, rendering, reply and push.

The only module that knows LINE's JSON (the route is bot/web/line.py). The webhook checks
`X-Line-Signature` (base64 HMAC-SHA256 of the raw body with the channel secret) before reading
anything, drops redelivered events, and answers each message event. A reply token is single-use
and lives about a minute: the answer goes through it while it is fresh and as a push message
after that. LINE fetches images itself, so pictures go out as https URLs under PUBLIC_URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from bot.core import keys, payload
from bot.core.errors import NotAMessengerRequest, Unauthorized
from bot.core.events import Cards, Event, Picture, Reply
from bot.core.photos import PhotoError
from bot.core.settings import Settings
from bot.core.texts import detect_lang
from bot.core.urlguard import FetchError, UrlGuard, UrlRefused
from bot.messengers.shared import strip_spans, utf16_span

NAME = "line"
SIGNATURE_HEADER = "X-Line-Signature"
MAX_MESSAGES = 5
MAX_TEXT = 5000
MAX_QUICK = 13
MAX_LABEL = 20
MAX_QUICK_TEXT = 300
# An image carousel template (a storybook): at most 10 columns, an action label of 12
# characters, alt text of 400; LINE shows each image 1:1 (docs/line.md).
MAX_COLUMNS = 10
MAX_COLUMN_LABEL = 12
MAX_ALT_TEXT = 400

log = logging.getLogger(__name__)


class LineError(Exception):
    """The LINE API refused a call or could not be reached."""

    def __init__(self, message: str, *, status: int | None, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True)
class Message:
    """One webhook event we answer."""

    event_id: str  # webhookEventId: the same on a redelivery
    reply_token: str
    event: Event
    image_id: str | None = None  # message id of an image, fetched from the content API
    unsupported: str | None = None  # the type of a message we cannot read
    welcome: bool = False  # a follow event: the user added the bot
    unaddressed: bool = False  # a group message not addressed to the bot: left alone
    quoted: str = ""  # the message this one quotes (quotedMessageId): the bot's, it is for us


# --- signature and parsing -------------------------------------------------------------------


def signature(body: bytes, channel_secret: str) -> str:
    """base64(HMAC-SHA256(body, channel secret)), as LINE computes it."""
    digest = hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def check_signature(header: str | None, body: bytes, channel_secret: str) -> None:
    """Constant-time check of X-Line-Signature."""
    expected = signature(body, channel_secret).encode()
    if not header or not hmac.compare_digest(header.encode(), expected):
        raise Unauthorized("wrong signature")


class Headers(Protocol):
    """What verify reads of the request headers: werkzeug's Headers and a plain dict both fit."""

    def get(self, key: str, /) -> str | None: ...


def verify(headers: Headers, body: bytes, settings: Settings) -> None:
    """X-Line-Signature: base64 HMAC-SHA256 of the raw body with the channel secret."""
    check_signature(headers.get(SIGNATURE_HEADER), body, settings.line_channel_secret)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _chat(source: dict[str, Any]) -> str | None:
    """Where we answer: the group or room the message came from, or the user's own chat."""
    for field in ("groupId", "roomId", "userId"):
        value = source.get(field)
        if isinstance(value, str) and value:
            return value
    return None


def _self_mentions(text: str, message: dict[str, Any]) -> list[tuple[int, int]]:
    """The spans of the text that mention the bot (`mention.mentionees[].isSelf`), as (start,
    end) in Python characters (LINE counts index and length in UTF-16 code units)."""
    spans = []
    mentionees = _dict(message.get("mention")).get("mentionees")
    for item in mentionees if isinstance(mentionees, list) else []:
        item = _dict(item)
        index, length = item.get("index"), item.get("length")
        if item.get("isSelf") is not True or not isinstance(index, int):
            continue
        if not isinstance(length, int) or index < 0 or length <= 0:
            continue
        spans.append(utf16_span(text, index, length))
    return spans


def parse(body: bytes, received_at: float, answer_all: bool = False) -> list[Message]:
    """The message and follow events of a webhook body; other events are skipped.

    The event's `user` is the person (`source.userId`) and its `chat` the group or room: its
    members share the photo session while each keeps their own limits, results and last
    prompt. In a group only messages that mention the bot are answered (unless `answer_all`):
    others come back `unaddressed` (a reply quoting one of the bot's messages is for the bot,
    which the caller knows by `quoted`), and the mention is taken out of the text."""
    data = payload.loads(body)  # JSON text, or NotAMessengerRequest
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        raise NotAMessengerRequest("no events")
    found: list[Message] = []
    for item in data["events"]:
        item = _dict(item)
        kind = item.get("type") if isinstance(item.get("type"), str) else None
        chat = _chat(_dict(item.get("source")))
        token = item.get("replyToken")
        event_id = item.get("webhookEventId")
        if kind not in {"message", "follow"} or chat is None or not isinstance(token, str):
            continue
        source = _dict(item.get("source"))
        person = source.get("userId")
        person = person if isinstance(person, str) and person else chat
        message = _dict(item.get("message"))
        mtype = message.get("type") if kind == "message" else None
        mtype = mtype if isinstance(mtype, str) else None  # a list would not hash
        text = message.get("text", "") if mtype == "text" else ""
        text = text if isinstance(text, str) else ""
        mentions = _self_mentions(text, message) if mtype == "text" else []
        text = strip_spans(text, mentions)
        request_id = uuid.uuid4().hex
        quote = message.get("quoteToken")
        quoted = message.get("quotedMessageId")
        group = source.get("type") in {"group", "room"} or chat != person
        unaddressed = group and not answer_all and not mentions
        event = Event(
            messenger=NAME,
            user=person,
            text=text,
            received_at=received_at,
            request_id=request_id,
            callback_url=token,  # the reply handle; the push target is the chat
            trigger=str(mtype or kind),
            lang=detect_lang(text),
            waits=False,  # the worker sends the answer whenever it is ready
            chat=chat,
            reply_to_message=quote if isinstance(quote, str) and chat != person else "",
        )
        image_id = message.get("id") if mtype in {"image", "video"} else None
        found.append(
            Message(
                event_id=event_id if isinstance(event_id, str) and event_id else request_id,
                reply_token=token,
                event=event,
                image_id=str(image_id) if image_id is not None else None,
                unsupported=None if mtype in {"text", "image", "video", None} else str(mtype),
                welcome=kind == "follow",
                unaddressed=unaddressed,
                quoted=quoted if isinstance(quoted, str) else "",
            )
        )
    return found


# --- rendering and the API -------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(reply: Reply, quote_token: str = "") -> list[dict[str, Any]]:
    """LINE message objects (at most 5); quick replies go on the last one. `quote_token`
    (groups): the first text quotes the asker's message."""
    messages: list[dict[str, Any]] = []
    link = ""  # an image carousel's column opens one picture: the combined one goes in the text
    for part in reply.parts:
        if isinstance(part, Picture):
            messages.append(
                {"type": "image", "originalContentUrl": part.url, "previewImageUrl": part.url}
            )
        elif isinstance(part, Cards):
            messages.append(image_carousel(part))
            link = f"{part.all_label}: {part.link}" if part.link else ""
        elif part.text:
            text = f"{part.text}\n{link}" if link else part.text
            messages.append({"type": "text", "text": _clip(text, MAX_TEXT)})
            link = ""
    if link:
        messages.append({"type": "text", "text": link})
    while len(messages) > MAX_MESSAGES:
        texts = [i for i, m in enumerate(messages) if m["type"] == "text"]
        if len(texts) < 2:
            messages = messages[:MAX_MESSAGES]
            break
        last = messages.pop(texts[-1])["text"]
        messages[texts[-2]]["text"] = _clip(messages[texts[-2]]["text"] + "\n\n" + last, MAX_TEXT)
    if not messages:
        messages = [{"type": "text", "text": "…"}]
    if quote_token:
        first = next((m for m in messages if m["type"] == "text"), None)
        if first is not None:
            first["quoteToken"] = quote_token
    if reply.quick_replies:
        messages[-1]["quickReply"] = {
            "items": [
                {
                    "type": "action",
                    "action": {
                        "type": "message",
                        "label": _clip(q.label, MAX_LABEL),
                        "text": _clip(q.message, MAX_QUICK_TEXT),
                    },
                }
                for q in reply.quick_replies[:MAX_QUICK]
            ]
        }
    return messages


def image_carousel(cards: Cards) -> dict[str, Any]:
    """One image carousel template message: a column per picture, a tap opens it whole.
    One message whatever the count, where pictures as image messages would need one each
    (a 6-scene book and its text would pass the five-message limit)."""
    columns = [
        {
            "imageUrl": card.url,
            "action": {
                "type": "uri",
                "label": _clip(f"{i}. {cards.open_label}", MAX_COLUMN_LABEL),
                "uri": card.link or card.url,
            },
        }
        for i, card in enumerate(cards.cards[:MAX_COLUMNS], start=1)
        if card.url
    ]
    alt = " / ".join(card.text for card in cards.cards)
    return {
        "type": "template",
        "altText": _clip(alt, MAX_ALT_TEXT),
        "template": {"type": "image_carousel", "columns": columns},
    }


class LineApi:
    """Calls to the Messaging API and the content API through the URL guard (purpose `line`)."""

    def __init__(self, guard: UrlGuard, settings: Settings) -> None:
        self.guard = guard
        self.api = settings.line_api_base.rstrip("/")
        self.content = settings.line_content_base.rstrip("/")
        self.token = settings.line_access_token

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def post(
        self, path: str, payload: dict[str, Any], retry_key: str | None = None
    ) -> dict[str, Any]:
        """POST a JSON body to the Messaging API; its JSON answer ({} when it has none); raises
        LineError unless it answers 2xx."""
        headers = self._headers({"Content-Type": "application/json"})
        if retry_key:
            headers["X-Line-Retry-Key"] = retry_key  # a retried push is delivered once
        body = json.dumps(payload, ensure_ascii=False).encode()
        try:
            response = self.guard.request(
                "POST", self.api + path, "line", body=body, headers=headers
            )
        except UrlRefused as exc:
            raise LineError(f"{path}: refused: {exc.reason}", status=None, retryable=False) from exc
        except FetchError as exc:
            raise LineError(f"{path}: {exc}", status=None, retryable=exc.retryable) from exc
        if response.status == 409 and retry_key:
            return {}  # LINE already accepted this retry key: the push went out
        if not 200 <= response.status < 300:
            detail = response.body[:200].decode("utf-8", "replace")
            raise LineError(
                f"{path}: {response.status} {detail}",
                status=response.status,
                retryable=response.status == 429 or response.status >= 500,
            )
        try:
            answer = json.loads(response.body or b"{}")
        except (ValueError, UnicodeDecodeError, RecursionError):
            answer = {}
        return _dict(answer)

    def content_bytes(
        self, message_id: str, max_bytes: int, deadline: float | None = None
    ) -> bytes:
        """The bytes of a photo or clip the user sent, by message id; PhotoError when they
        cannot be had, retryable when the `deadline` (epoch s) passed or the fault may pass."""
        url = f"{self.content}/v2/bot/message/{message_id}/content"
        timeout_s = None if deadline is None else deadline - time.time()
        if timeout_s is not None and timeout_s <= 0.01:
            raise PhotoError("photo_unreachable", "no time left", retryable=True)
        try:
            response = self.guard.request(
                "GET",
                url,
                "line",
                headers=self._headers(),
                max_bytes=max_bytes,
                timeout_s=timeout_s,
            )
        except UrlRefused as exc:
            raise PhotoError("photo_host", exc.reason) from exc
        except FetchError as exc:
            too_big = exc.status is not None and 200 <= exc.status < 300
            key = "photo_too_big" if too_big else "photo_unreachable"
            raise PhotoError(key, str(exc), retryable=exc.retryable) from exc
        if response.status in {404, 410}:
            raise PhotoError("photo_expired", f"content {response.status}")
        if response.status != 200:  # 202: a video LINE is still preparing
            passing = response.status == 202 or response.status >= 500
            raise PhotoError("photo_unreachable", f"content {response.status}", retryable=passing)
        return response.body


def reply_or_push(
    api: LineApi,
    reply: Reply,
    reply_token: str | None,
    to: str,
    received_at: float,
    window_s: float,
    retry_key: str,
    quote_token: str = "",
    sent: list[str] | None = None,
) -> str:
    """Send through the reply token while it is fresh, else (or when refused) push to the
    chat `to`; in a group the answer quotes the asker's message (`quote_token`). The ids of
    the messages sent are added to `sent` (a reply quoting one of them is for the bot).

    Returns `reply` or `push` when sent, `error` when neither went out.
    """
    messages = render(reply, quote_token)
    if reply_token and time.time() - received_at < window_s:
        try:
            answer = api.post(
                "/v2/bot/message/reply", {"replyToken": reply_token, "messages": messages}
            )
            _sent_ids(answer, sent)
            return "reply"
        except LineError as exc:
            # 400 is LINE's answer to a used or expired token; the push still reaches the user.
            log.info("reply token not used", extra={"error": str(exc)})
    for attempt in range(3):
        try:
            answer = api.post(
                "/v2/bot/message/push", {"to": to, "messages": messages}, _uuid(retry_key)
            )
            _sent_ids(answer, sent)
            return "push"
        except LineError as exc:
            log.warning("line push failed", extra={"error": str(exc), "attempt": attempt + 1})
            if not exc.retryable:
                break
            time.sleep(0.5 * (attempt + 1))
    return "error"


SENT_TTL_S = 3 * 86400  # how long a reply quoting the bot's group message still reaches it


def remember_sent(r: redis.Redis, ids: list[str]) -> None:
    """Mark messages the bot sent to a group: a message quoting one of them is for the bot."""
    if ids:
        with r.pipeline(transaction=False) as pipe:
            for message_id in ids:
                pipe.set(keys.line_sent(message_id), "1", ex=SENT_TTL_S)
            pipe.execute()


def remember_group_photo(r: redis.Redis, message: Message, ttl_s: int) -> None:
    """A group photo not addressed to the bot (a photo cannot mention it): its id and chat are
    kept for `ttl_s`, so that a member who quotes it with a mention asks about it."""
    event = message.event
    if message.image_id is not None and event.in_group:
        key, mine = keys.group_photo(NAME, message.image_id), keys.group_photos_by(NAME, event.user)
        with r.pipeline() as pipe:
            pipe.set(key, event.room, ex=max(1, ttl_s))
            pipe.sadd(mine, key)
            pipe.expire(mine, max(1, ttl_s))
            pipe.execute()


def quoted_photo(r: redis.Redis, message: Message) -> str | None:
    """The id of a photo of this group that the message quotes, when one was kept."""
    if not message.quoted or message.image_id is not None:
        return None
    chat = r.get(keys.group_photo(NAME, message.quoted))
    return message.quoted if chat is not None and keys.as_text(chat) == message.event.room else None


def quotes_the_bot(r: redis.Redis, message: Message) -> bool:
    """A group message that quotes one of the bot's own messages."""
    return bool(message.quoted) and bool(r.exists(keys.line_sent(message.quoted)))


def _sent_ids(answer: dict[str, Any], sent: list[str] | None) -> None:
    """The ids in a reply's or push's `sentMessages`, added to `sent`."""
    if sent is None:
        return
    found = answer.get("sentMessages")
    for item in found if isinstance(found, list) else []:
        message_id = _dict(item).get("id")
        if isinstance(message_id, str) and message_id:
            sent.append(message_id)


def loading(api: LineApi, chat: str, seconds: int = 20) -> None:
    """Show the loading animation in a one-to-one chat while the answer is made."""
    if not chat.startswith("U"):
        return  # LINE shows it in one-to-one chats only
    try:
        api.post("/v2/bot/chat/loading/start", {"chatId": chat, "loadingSeconds": seconds})
    except LineError as exc:
        log.info("loading animation not shown", extra={"error": str(exc)})


def _uuid(text: str) -> str:
    """LINE wants the retry key as a hyphenated UUID; our request ids are 32 hex digits."""
    try:
        return str(uuid.UUID(hex=text))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, text))
