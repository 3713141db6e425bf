"""Messenger-neutral shapes: what a user sent (Event) and what we answer (Reply, Ack).

Only the messenger modules turn these into and out of a messenger's JSON. Replies travel through
Redis as plain JSON (`to_dict` / `from_dict`), never pickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """One incoming message, parsed.

    `user` is the person who wrote it: their limits, block, kept results and last prompt.
    `chat` is where it was written (a group, or the person's own chat when empty): the photo
    session and where answers go. `reply_to_message` is the asker's message the answer replies
    to in a group (Telegram's message_id, LINE's quoteToken)."""

    messenger: str
    user: str
    text: str
    received_at: float
    request_id: str
    callback_url: str | None = None  # the reply handle; None means answer in time or keep
    image_urls: tuple[str, ...] = ()
    trigger: str = ""  # the messenger's own trigger name, informative only
    lang: str = "ko"
    # Kakao must be answered within 5 seconds, so its webhook waits briefly for the result.
    # Telegram and LINE let the bot send later: their webhooks never wait (False).
    waits: bool = True
    chat: str = ""
    reply_to_message: str = ""
    command: str = ""  # `draw`: the text is a prompt, whatever else it looks like (`/draw`)

    @property
    def room(self) -> str:
        """The chat the message came from: a group's id, or the person's own."""
        return self.chat or self.user

    @property
    def in_group(self) -> bool:
        """Written in a group (or LINE room), where several people share the chat."""
        return self.room != self.user


@dataclass(frozen=True)
class Text:
    """A text bubble."""

    text: str


@dataclass(frozen=True)
class Picture:
    """A picture at a public URL."""

    url: str
    alt: str


@dataclass(frozen=True)
class Card:
    """One picture of a set (a storybook's scene): the picture, its sentence, and the full
    picture's link. `url` empty: the picture was withheld, and `text` says so."""

    url: str
    text: str
    link: str = ""
    alt: str = ""


@dataclass(frozen=True)
class Cards:
    """Pictures that belong together, shown side by side (Kakao's carousel, Telegram's album,
    LINE's image carousel); `link` is a combined picture of them all, if any."""

    cards: tuple[Card, ...]
    link: str = ""
    open_label: str = "크게 보기"  # the button that opens one picture
    all_label: str = "한 장으로 보기"  # the button that opens the combined picture


Part = Text | Picture | Cards


@dataclass(frozen=True)
class QuickReply:
    """A button under the answer that sends `message` as the user when tapped."""

    label: str
    message: str


@dataclass(frozen=True)
class Reply:
    """A complete answer: bubbles in order, then quick replies."""

    parts: tuple[Part, ...]
    quick_replies: tuple[QuickReply, ...] = ()
    kind: str = "info"  # info | result | error | busy | late

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        parts: list[dict[str, Any]] = []
        for part in self.parts:
            if isinstance(part, Picture):
                parts.append({"image": part.url, "alt": part.alt})
            elif isinstance(part, Cards):
                parts.append(
                    {
                        "cards": [vars(c) for c in part.cards],
                        "link": part.link,
                        "labels": [part.open_label, part.all_label],
                    }
                )
            else:
                parts.append({"text": part.text})
        return {
            "parts": parts,
            "quick_replies": [[q.label, q.message] for q in self.quick_replies],
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reply:
        """Inverse of to_dict."""
        parts: list[Part] = []
        for item in data.get("parts", []):
            if "image" in item:
                parts.append(Picture(item["image"], item.get("alt", "")))
            elif "cards" in item:
                cards = tuple(
                    Card(
                        str(c.get("url", "")),
                        str(c.get("text", "")),
                        str(c.get("link", "")),
                        str(c.get("alt", "")),
                    )
                    for c in item["cards"]
                    if isinstance(c, dict)
                )
                labels = item.get("labels") or ["크게 보기", "한 장으로 보기"]
                parts.append(
                    Cards(cards, str(item.get("link", "")), str(labels[0]), str(labels[1]))
                )
            else:
                parts.append(Text(item.get("text", "")))
        quick = tuple(
            QuickReply(label, message) for label, message in data.get("quick_replies", [])
        )
        return cls(tuple(parts), quick, data.get("kind", "info"))

    def with_prefix(self, note: str, extra: tuple[QuickReply, ...] = ()) -> Reply:
        """The same reply with a note bubble first and extra quick replies first."""
        quick = extra + tuple(q for q in self.quick_replies if q not in extra)
        return Reply((Text(note), *self.parts), quick, self.kind)


@dataclass(frozen=True)
class Ack:
    """An acknowledgement: the answer follows through the callback."""

    text: str


@dataclass(frozen=True)
class Outcome:
    """What the webhook answers now: a reply, or an acknowledgement with a callback to follow."""

    reply: Reply | None = None
    ack: Ack | None = None
    request_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
