"""Decide what a message asks for. The command and intent table, documented in the README.

| message (trimmed, case-insensitive)                   | action   |
| ----------------------------------------------------- | -------- |
| empty, `도움말`, `help`, `?`, `사용법`, `/help`, `/start` | help     |
| a greeting alone: `안녕`, `안녕하세요`, `hi`, `hello`, … | welcome  |
| `다시 그리기`, `다시`, `redraw`, `again`                | redraw   |
| `결과 보기`, `결과`, `result`                           | results  |
| anything else                                         | draw     |
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HELP = {"", "도움말", "help", "?", "？", "사용법", "/help", "/start", "메뉴", "menu"}
GREETINGS = {
    "안녕",
    "안녕하세요",
    "안녕하세용",
    "하이",
    "반가워",
    "반가워요",
    "반갑습니다",
    "헬로",
    "hi",
    "hello",
    "hey",
    "hiya",
    "good morning",
    "good evening",
}
REDRAW = {"다시 그리기", "다시그리기", "다시", "redraw", "again", "retry"}
RESULTS = {"결과 보기", "결과보기", "결과", "result", "results"}
TRAILING = re.compile(r"[\s!~.?？！。ㅎㅋ^]+$")


@dataclass(frozen=True)
class Action:
    """What to do with a message."""

    name: str  # help | welcome | redraw | results | draw
    text: str = ""


def normalise(text: str) -> str:
    """Lower-case, single spaces, no trailing punctuation or laughter."""
    collapsed = " ".join(text.split()).lower()
    return TRAILING.sub("", collapsed) if collapsed not in HELP else collapsed


def decide(text: str) -> Action:
    """Map a message to an action by the table above."""
    key = normalise(text)
    if key in HELP or text.strip() in HELP:
        return Action("help")
    if key in GREETINGS:
        return Action("welcome")
    if key in REDRAW:
        return Action("redraw")
    if key in RESULTS:
        return Action("results")
    return Action("draw", text.strip())
