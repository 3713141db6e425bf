"""What a message asks for (the typed action set), and what a handler makes of it.

`intents.decide` maps a message to an `Action`; the core (bot/core/service.py) gives it to the
handler for its name, which returns a `ToQueue` (a request for a worker) or a `Reply` (an answer
now). Handlers never call back into the core.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.core.events import QuickReply, Reply
from bot.core.job import Request


class ActionName(StrEnum):
    """Every action a message can lead to."""

    HELP = "help"  # the help text
    WELCOME = "welcome"  # a greeting
    REDRAW = "redraw"  # `다시 그리기`: the last prompt with a new seed
    RESULTS = "results"  # `결과 보기`: a kept result
    CANCEL = "cancel"  # `취소`: the user's queued or running job
    NEW_PHOTO = "new_photo"  # `새 사진`: end the photo conversation
    FORGET = "forget"  # `기록 삭제`: the user's photos, sessions and kept results
    SAME_SEED = "same_seed"  # `같은 시드로`: keep the last seed for the next prompt
    RESTYLE = "restyle"  # `수채화로 다시 그리기`: the last prompt in another style
    PHOTO_RESTYLE = "photo_restyle"  # `이 사진을 수채화로`: redraw the session's photo
    PHOTO_FIRST = "photo_first"  # the same without a photo: ask for one
    ASK = "ask"  # a question about the session's photo
    PHOTO_HINT = "photo_hint"  # a question with no photo: ask for the photo
    DRAW = "draw"  # a prompt
    SMALL_TALK = "small_talk"  # thanks, praise, laughter, `응`, emoji only: a short friendly answer
    DRAW_INSTEAD = "draw_instead"  # the quick reply `이 문장으로 그리기`: the kept message, drawn
    ASK_INSTEAD = "ask_instead"  # the quick reply `사진에 대해 묻기`: the kept message, asked
    PHOTOS = "photos"  # photos or a clip arrived (decided by the core, not by words)
    ADMIN = "admin"  # an operator's `/…` command (decided by the core: it knows operators)
    STORYBOOK = "storybook"  # `동화: …`, `그림일기: …`: a story drawn as 2-6 pictures in one batch


# The actions that become a drawing request (bot/core/drawing.py `Drawing.plan`).
DRAWING = frozenset(
    {
        ActionName.DRAW,
        ActionName.RESTYLE,
        ActionName.SAME_SEED,
        ActionName.PHOTO_RESTYLE,
        ActionName.PHOTO_FIRST,
    }
)


@dataclass(frozen=True)
class Action:
    """What to do with a message, and the words it concerns (a prompt, a question, a style)."""

    name: ActionName
    text: str = ""
    # The other reading of an ambiguous message (DRAW or ASK), offered as one quick reply.
    other: ActionName | None = None


@dataclass(frozen=True)
class ToQueue:
    """A handler's request for a worker. `hold_slot=False`: queued without the user's one-job
    slot (a photo fetch handed to the worker: its URLs expire, it must not wait).
    `quick_replies` travel in the job's meta (`extra_quick`) to the worker's reply."""

    request: Request
    task: str = "draw"
    hold_slot: bool = True
    # Quick replies the worker's answer carries first (the other reading of the message).
    quick_replies: tuple[QuickReply, ...] = ()


Planned = ToQueue | Reply
