"""Rules of bot/core/intents.py beyond the table: prompts stay prompts, the follow-up window,
the other reading, and photo sessions written before the window was kept."""

from __future__ import annotations

import json

import pytest

from bot.core import intents
from bot.core.actions import ActionName
from bot.core.conversation import PhotoSession


@pytest.mark.parametrize(
    "text",
    [
        "기능성 운동화를 신은 고양이",  # not `기능`
        "help wanted poster",  # not `help`
        "좋은 아침 풍경",  # not a greeting
        "다시 태어난 고양이",  # not `다시`
        "stop sign in the rain",  # not `stop`
        "오 고양이",  # an interjection before a prompt
        "너무 귀여운 강아지",
        "a cat, so cute",
        "고래가 하늘을 나는",  # ends in `는`, but no topic: a prompt
        "🐱 고양이",
        "🐱🚀",  # emoji of things: the prompt rules ask for words (opt_emoji)
    ],
)
def test_prompts_stay_prompts_without_a_photo(text: str) -> None:
    assert intents.decide(text).name == ActionName.DRAW


@pytest.mark.parametrize("text", ["바다 위의 등대", "a red fox in the snow", "해바라기 밭"])
def test_follow_up_window_decides_a_message_that_could_be_either(text: str) -> None:
    inside = intents.decide(text, has_photo=True, followup=True)
    after = intents.decide(text, has_photo=True, followup=False)
    assert (inside.name, inside.other) == (ActionName.ASK, ActionName.DRAW)
    assert (after.name, after.other) == (ActionName.DRAW, ActionName.ASK)
    assert inside.text == after.text == text


@pytest.mark.parametrize("text", ["고양이 그려줘", "이게 뭐야?", "색깔은", "고마워", "도움말"])
def test_the_window_does_not_change_clear_messages(text: str) -> None:
    inside = intents.decide(text, has_photo=True, followup=True)
    after = intents.decide(text, has_photo=True, followup=False)
    assert inside == after and inside.other is None


def test_follow_up_window_boundary_on_the_session() -> None:
    session = PhotoSession(("p",), False, (), 5000.0, last_at=1000.0)
    assert session.in_followup(1300.0, 300)  # exactly at the window's end: still inside
    assert not session.in_followup(1300.5, 300)
    restored = PhotoSession.from_json(session.to_json())
    assert restored == session


def test_a_session_written_before_last_at_reads_as_after_the_window() -> None:
    old = json.dumps({"photos": ["p"], "video": False, "turns": [], "expires_at": 5000.0})
    session = PhotoSession.from_json(old)
    assert session.last_at == 0.0 and not session.in_followup(1000.0, 300)


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("이거 어케 써", ActionName.HELP),  # slang for 어떻게
        ("ㅎㅇㅎㅇ", ActionName.WELCOME),
        ("결과좀", ActionName.RESULTS),
        ("고양이 그려죠", ActionName.DRAW),  # a typo of 그려줘
        ("😍", ActionName.SMALL_TALK),
        ("그만할래", ActionName.CANCEL),
    ],
)
def test_more_ways_people_type_commands(text: str, action: ActionName) -> None:
    assert intents.decide(text).name == action
    assert intents.decide(text, has_photo=True).name == action
