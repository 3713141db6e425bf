"""Kakao i Open Builder skill protocol (v2.0): parse requests, render answers, post callbacks.

The only module that knows Kakao's JSON. See docs/kakao.md.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

from bot.core import payload
from bot.core.errors import NotAMessengerRequest, Unreadable
from bot.core.events import Ack, Cards, Event, Picture, Reply, Text
from bot.core.settings import Settings
from bot.core.texts import detect_lang
from bot.core.urlguard import FetchError, UrlGuard, UrlRefused, redact
from bot.messengers.shared import check_secret

NAME = "kakao"
MAX_OUTPUTS = 3
MAX_TEXT = 1000
MAX_ALT = 50
MAX_QUICK = 10
MAX_LABEL = 14
MAX_USER_ID = 128
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
LIST_FORM = re.compile(r"^\s*List\((.*)\)\s*$", re.S)
LIST_SEPARATOR = re.compile(r"\s*,\s*(?=https?://)")  # `, ` and `,` both occur
MAX_IMAGES = 10
# A carousel of basicCards (a storybook): at most 10 cards; a basicCard's description holds 230
# characters alone and fewer inside a carousel (76, as we read Kakao's guide: docs/kakao.md).
MAX_CARDS = 10
MAX_DESCRIPTION = 230
MAX_CAROUSEL_DESCRIPTION = 76
MAX_BUTTON_LABEL = 14

log = logging.getLogger(__name__)


class Headers(Protocol):
    """What verify reads of the request headers: werkzeug's Headers and a plain dict both fit."""

    def get(self, key: str, /) -> str | None: ...


def verify(headers: Headers, body: bytes, settings: Settings) -> None:
    """The shared secret in SECRET_HEADER (Kakao signs nothing); raises Unauthorized."""
    check_secret(headers.get(settings.secret_header), settings.secret, settings.development)


@dataclass(frozen=True)
class Photos:
    """Image references found in a request, and whether the user agreed to share them."""

    urls: tuple[str, ...]
    refused: bool  # the secure-image plugin said privacyAgreement != Y
    secure: bool = False  # some came from the secure-image plugin (the utterance is no caption)


def clean_text(value: str) -> str:
    """Drop control and bidi characters, keep newlines, trim."""
    return CONTROL.sub("", value).strip()


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def split_list_form(value: str) -> list[str]:
    """`List(a, b)` or `List(a,b)` (Scala's form) or a bare URL into a list of URLs."""
    match = LIST_FORM.match(value)
    inner = match.group(1) if match else value
    return [part.strip() for part in LIST_SEPARATOR.split(inner.strip()) if part.startswith("http")]


def _plugin(value: Any) -> dict[str, Any] | None:
    """The secure-image plugin's JSON document, if `value` is one."""
    if not isinstance(value, str) or not ("privacyAgreement" in value or "secureUrls" in value):
        return None
    try:
        plugin = json.loads(value)
    except ValueError:
        return None
    return plugin if isinstance(plugin, dict) else None


def _secure_images(action: dict[str, Any]) -> tuple[list[str], bool]:
    """URLs from the secure-image plugin (`action.params` or `detailParams`), and whether a
    plugin answer without privacyAgreement Y was seen."""
    urls: list[str] = []
    refused = False
    params = _dict(action.get("params"))
    details = _dict(action.get("detailParams"))
    for name in dict.fromkeys([*params, *details]):
        detail = _dict(details.get(name))
        plugin = _plugin(params.get(name)) or _plugin(detail.get("value"))
        if plugin is None:
            continue
        if plugin.get("privacyAgreement") != "Y":
            refused = True
            continue
        found: list[str] = []
        for source in (plugin.get("secureUrls"), detail.get("origin")):
            if isinstance(source, str) and not found:
                found = split_list_form(source)
        urls.extend(found)
    return urls, refused


def _photos(user_request: dict[str, Any], action: dict[str, Any], utterance: str) -> Photos:
    urls: list[str] = []
    media = _dict(_dict(user_request.get("params")).get("media"))
    if media.get("type") in ("image", "video"):  # a tuple: the value may be unhashable
        if isinstance(media.get("url"), str) and media["url"].startswith("http"):
            urls.append(media["url"])
        elif utterance.strip().startswith("http"):
            urls.append(utterance.strip())
    secure, refused = _secure_images(action)
    seen: dict[str, None] = dict.fromkeys([*urls, *secure])
    return Photos(tuple(seen)[:MAX_IMAGES], refused, secure=bool(secure))


def parse(body: bytes, received_at: float, request_id: str) -> tuple[Event, Photos]:
    """Parse a skill request into a neutral Event; unknown fields are ignored.

    Raises NotAMessengerRequest (400) when this is not a Kakao request at all, and Unreadable
    (200 with a message) when it is one we cannot serve.
    """
    data = payload.loads(body)  # JSON text, or NotAMessengerRequest
    if not isinstance(data, dict) or not isinstance(data.get("userRequest"), dict):
        raise NotAMessengerRequest("no userRequest")
    user_request: dict[str, Any] = data["userRequest"]
    user = _dict(user_request.get("user")).get("id")
    if not isinstance(user, str) or not user.strip() or len(user) > MAX_USER_ID:
        raise Unreadable("unreadable", "no usable user id")
    utterance = user_request.get("utterance", "")
    if utterance is None:
        utterance = ""
    if not isinstance(utterance, str):
        raise Unreadable("unreadable", "utterance is not text")
    callback = user_request.get("callbackUrl")
    callback_url = callback if isinstance(callback, str) and callback else None
    action = _dict(data.get("action"))
    photos = _photos(user_request, action, utterance)
    trigger = _dict(_dict(data.get("flow")).get("trigger")).get("type")
    text = clean_text(utterance)
    if photos.urls and (text in photos.urls or photos.secure):
        # A photo sent into the chat has its URL as the utterance; with the secure-image
        # plugin the utterance is the block's trigger phrase. Neither is a caption.
        text = ""
    event = Event(
        messenger=NAME,
        user=user.strip(),
        text=text,
        received_at=received_at,
        request_id=request_id,
        callback_url=callback_url,
        image_urls=photos.urls,
        trigger=trigger if isinstance(trigger, str) else "",
        lang=detect_lang(text),
    )
    return event, photos


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(reply: Reply) -> dict[str, Any]:
    """A complete skill response (also the body of a callback POST)."""
    outputs: list[dict[str, Any]] = []
    for part in reply.parts:
        if isinstance(part, Picture):
            outputs.append(
                {"simpleImage": {"imageUrl": part.url, "altText": _clip(part.alt, MAX_ALT)}}
            )
        elif isinstance(part, Cards):
            outputs.append(carousel(part))
        elif isinstance(part, Text) and part.text:
            outputs.append({"simpleText": {"text": _clip(part.text, MAX_TEXT)}})
    while len(outputs) > MAX_OUTPUTS:
        # Fold the last text bubble into the text bubble before it; pictures stay whole.
        texts = [i for i, o in enumerate(outputs) if "simpleText" in o]
        if len(texts) < 2:
            outputs = outputs[:MAX_OUTPUTS]
            break
        last = outputs.pop(texts[-1])["simpleText"]["text"]
        prev = outputs[texts[-2]]["simpleText"]
        prev["text"] = _clip(prev["text"] + "\n\n" + last, MAX_TEXT)
    if not outputs:
        outputs = [{"simpleText": {"text": "…"}}]
    template: dict[str, Any] = {"outputs": outputs}
    if reply.quick_replies:
        template["quickReplies"] = [
            {
                "label": _clip(q.label, MAX_LABEL),
                "action": "message",
                "messageText": _clip(q.message, MAX_TEXT),
            }
            for q in reply.quick_replies[:MAX_QUICK]
        ]
    return {"version": "2.0", "template": template, "context": {"values": []}, "data": {}}


def carousel(cards: Cards) -> dict[str, Any]:
    """A `carousel` of `basicCard`s: the picture as thumbnail, its sentence as description, a
    button that opens the full picture (and one for the combined picture, when there is one).
    A withheld picture has a placeholder picture and no link: its sentence says why."""
    items: list[dict[str, Any]] = []
    many = len(cards.cards) > 1
    limit = MAX_CAROUSEL_DESCRIPTION if many else MAX_DESCRIPTION
    for card in cards.cards[:MAX_CARDS]:
        buttons: list[dict[str, Any]] = []
        if card.link:
            buttons.append(
                {
                    "action": "webLink",
                    "label": _clip(cards.open_label, MAX_BUTTON_LABEL),
                    "webLinkUrl": card.link,
                }
            )
        if cards.link:
            buttons.append(
                {
                    "action": "webLink",
                    "label": _clip(cards.all_label, MAX_BUTTON_LABEL),
                    "webLinkUrl": cards.link,
                }
            )
        item: dict[str, Any] = {"description": _clip(card.text, limit), "buttons": buttons}
        if card.url:
            item["thumbnail"] = {"imageUrl": card.url, "fixedRatio": True}
            if card.link:
                item["thumbnail"]["link"] = {"web": card.link}
        items.append(item)
    if not all("thumbnail" in item for item in items):
        # A carousel holds one card type and a basicCard needs a thumbnail: textCards then.
        for item in items:
            item.pop("thumbnail", None)
        return {"carousel": {"type": "textCard", "items": items}}
    return {"carousel": {"type": "basicCard", "items": items}}


def render_ack(ack: Ack) -> dict[str, Any]:
    """The immediate answer that promises a callback."""
    return {"version": "2.0", "useCallback": True, "data": {"text": ack.text}}


def post_callback(guard: UrlGuard, url: str, reply: Reply, deadline: float) -> str:
    """POST the answer to Kakao's one-time callback URL; returns SUCCESS, FAIL, refused or error.

    Network errors and Kakao's ERROR are retried while the deadline allows; FAIL is final.
    """
    body = render(reply)
    delay = 0.5
    outcome = "error"
    while True:
        remaining = deadline - time.time()
        if remaining <= 0:
            return "expired" if outcome == "error" else outcome
        try:
            response = guard.post_json(url, "callback", body, timeout_s=min(remaining, 10.0))
        except UrlRefused as exc:
            log.warning("callback refused by guard", extra={"url": redact(url), "why": exc.reason})
            return "refused"
        except FetchError as exc:
            log.warning("callback failed", extra={"url": redact(url), "error": str(exc)})
            if not exc.retryable:
                return "error"
        else:
            status = _kakao_status(response.body)
            if status == "SUCCESS" and response.status < 300:
                return "SUCCESS"
            if status == "FAIL" or (400 <= response.status < 500 and status != "ERROR"):
                log.warning("callback FAIL", extra={"http": response.status, "status": status})
                return "FAIL"
            log.warning(
                "callback error, will retry", extra={"http": response.status, "status": status}
            )
        if time.time() + delay >= deadline:
            return "expired"
        time.sleep(delay)
        delay = min(delay * 2, 4.0)


def _kakao_status(body: bytes) -> str:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return ""
    status = data.get("status") if isinstance(data, dict) else None
    return status if isinstance(status, str) else ""
