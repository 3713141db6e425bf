"""The intent table (tests/data/intents.tsv) through the real Kakao webhook, on both paths.

No photo in the session: the fast path (a prompt is decided before the user's state is read;
admission reads it with the enqueue). A photo in the session (started just now, so inside the
follow-up window): the long path. Each row's outcome must be what `intents.decide` says: the
queued job's task, or the reply's text; and an ambiguous message carries the quick reply that
does the other reading, on the reply or in the queued job.

Runs on its own Redis database with a live worker heartbeat and no waiting (SYNC_WAIT_S=0), so
every job stays in its queue to be read.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from PIL import Image
from rq import Queue
from rq.serializers import JSONSerializer

from bot.core import intents, keys
from bot.core.actions import Action, ActionName
from bot.core.texts import detect_lang, duration, say
from tests.support import kakao_payload, new_user, text_of
from tests.test_intents_table import load_table

QUEUES = ("text2image", "vision")
TASK = {
    ActionName.DRAW: "draw",
    ActionName.PHOTO_RESTYLE: "draw",
    ActionName.ASK: "ask",
    ActionName.STORYBOOK: "storybook",  # (a one-sentence book is one picture, a draw)
}
# The reply's text for each action a new user's message gets answered at once.
TEXT_KEYS: dict[ActionName, tuple[str, ...]] = {
    ActionName.HELP: ("help",),
    ActionName.WELCOME: ("welcome",),
    ActionName.REDRAW: ("no_last_prompt",),
    ActionName.SAME_SEED: ("no_last_prompt",),
    ActionName.RESTYLE: ("no_last_prompt",),
    ActionName.RESULTS: ("nothing_kept",),
    ActionName.CANCEL: ("nothing_to_cancel",),
    ActionName.NEW_PHOTO: ("new_photo",),
    ActionName.FORGET: ("forgotten",),
    ActionName.PHOTO_FIRST: ("photo_first",),
    ActionName.PHOTO_HINT: ("photo_hint",),
    ActionName.SMALL_TALK: ("small_thanks", "small_talk", "small_talk_photo"),
    ActionName.DRAW_INSTEAD: ("other_gone",),
    ActionName.ASK_INSTEAD: ("other_gone",),
}


@dataclass(frozen=True)
class World:
    client: Any
    core: Any
    r: redis.Redis
    jpeg: bytes


@pytest.fixture
def world(make_app: Any, redis_url: str) -> Any:
    url = redis_url  # a fresh database of this test's own
    r = redis.Redis.from_url(url)
    # Admission needs a live worker on each queue: a real heartbeat from this process; no worker
    # takes the jobs, so each stays in its queue to be read.
    beat = {"name": "table-worker", "queues": list(QUEUES), "loaded": True}
    r.set(keys.heartbeat(beat["name"]), json.dumps(beat), ex=900)
    r.sadd(keys.WORKERS, beat["name"])
    app = make_app(redis_url=url, sync_wait_s=0.0, rate_limit=1000, daily_quota=1000)
    core = app.extensions["koalatalk"].core
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, "JPEG")
    yield World(app.test_client(), core, r, buffer.getvalue())
    r.flushdb()


def _run(world: World, text: str, photo: bool) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """Post one message for a new user (with a photo session when asked); the Kakao body, the
    jobs it queued, and the session's photo id."""
    user = new_user()
    photo_id = ""
    if photo:
        photo_id = world.core.photos.put(world.jpeg, "photo")
        world.core.conversations.start("kakao", user, (photo_id,), False)
    body, jobs = _post(world, user, text)
    return body, jobs, photo_id


def _quick_labels(body: dict[str, Any]) -> list[str]:
    return [q["label"] for q in body.get("template", {}).get("quickReplies", [])]


def _check(world: World, text: str, photo: bool) -> str | None:
    """None when the webhook did what decide() says, else what went wrong."""
    action: Action = intents.decide(text, has_photo=photo, followup=True)
    body, jobs, photo_id = _run(world, text, photo)
    lang = detect_lang(text)
    offer = ""
    if action.other is not None:
        offer = say(
            "quick_draw_instead" if action.other == ActionName.DRAW else "quick_ask_instead", lang
        )
    if action.name in TASK:
        if len(jobs) != 1 or jobs[0]["task"] != TASK[action.name]:
            return f"{action.name}: queued {[j['task'] for j in jobs]}, answered {text_of(body)!r}"
        job = jobs[0]
        if action.name == ActionName.PHOTO_RESTYLE and job["request"]["source_image"] != photo_id:
            return "photo_restyle without the session's photo"
        extra = [label for label, _ in job.get("meta", {}).get("extra_quick", [])]
        if offer and extra != [offer]:
            return f"{action.name}: the job carries {extra}, not {offer!r}"
        return None
    if jobs:
        return f"{action.name}: queued {[j['task'] for j in jobs]}"
    answer = text_of(body)
    keep = duration(world.core.settings.photo_ttl_s, lang)  # the help states it
    if not any(say(key, lang, keep=keep) in answer for key in TEXT_KEYS[action.name]):
        return f"{action.name}: answered {answer!r}"
    if offer and offer not in _quick_labels(body):
        return f"{action.name}: no quick reply {offer!r} in {_quick_labels(body)}"
    return None


@pytest.mark.parametrize("photo", [False, True], ids=["fast_path_no_photo", "long_path_photo"])
def test_the_webhook_agrees_with_decide_on_every_row(world: Any, photo: bool) -> None:
    rows = load_table()
    problems = []
    for row in rows:
        expected = row.with_photo if photo else row.no_photo
        decided = intents.decide(row.text, has_photo=photo, followup=True)
        assert str(decided.name) in {expected, row.either if photo else expected}
        problem = _check(world, row.text, photo)
        if problem:
            problems.append(f"line {row.line}: {row.text!r}: {problem}")
    for problem in problems:
        print("  mismatch", problem)
    assert not problems, "\n".join(problems)


def test_ambiguous_message_then_one_tap_does_the_other_reading(world: Any) -> None:
    """`바다 위의 등대` after a photo: asked (with the draw quick reply in the job); the tap
    `이 문장으로 그리기` draws the same words; the kept reading is per person."""
    core = world.core
    user = new_user()
    core.conversations.start("kakao", user, (core.photos.put(world.jpeg, "photo"),), False)
    body, jobs = _post(world, user, "바다 위의 등대")
    assert [j["task"] for j in jobs] == ["ask"]
    assert jobs[0]["request"]["question"] == "바다 위의 등대"
    assert jobs[0]["meta"]["extra_quick"] == [["이 문장으로 그리기", "이 문장으로 그리기"]]
    other = new_user()  # another person's tap finds nothing of this one's
    body, jobs = _post(world, other, "이 문장으로 그리기")
    assert jobs == [] and say("other_gone") in text_of(body)
    body, jobs = _post(world, user, "이 문장으로 그리기")
    assert [j["task"] for j in jobs] == ["draw"]
    assert jobs[0]["request"]["prompt"] == "바다 위의 등대"
    # The wrong label for the kept reading does nothing odd: it says there is nothing to redo.
    body, jobs = _post(world, user, "사진에 대해 묻기")
    assert jobs == [] and say("other_gone") in text_of(body)


def test_follow_up_window_boundary(world: Any) -> None:
    """A message that is neither a drawing request nor a question: a follow-up question inside
    PHOTO_FOLLOWUP_S after the last photo or answer, a prompt after it (both sides)."""
    core, r = world.core, world.r
    window = core.settings.photo_followup_s
    for age, task, offer in (
        (window - 5, "ask", "이 문장으로 그리기"),
        (window + 5, "draw", "사진에 대해 묻기"),
    ):
        user = new_user()
        photo_id = core.photos.put(world.jpeg, "photo")
        session = core.conversations.start("kakao", user, (photo_id,), False)
        aged = dataclasses.replace(session, last_at=session.last_at - age)
        r.set(keys.photo_session("kakao", user), aged.to_json(), keepttl=True)
        _, jobs = _post(world, user, "해바라기 밭")
        assert [j["task"] for j in jobs] == [task], age
        assert jobs[0]["meta"]["extra_quick"] == [[offer, offer]], age
        # The tap does the other reading with the same words.
        _, jobs = _post(world, user, offer)
        assert [j["task"] for j in jobs] == [{"ask": "draw", "draw": "ask"}[task]], age
        assert "해바라기 밭" in (jobs[0]["request"]["prompt"], jobs[0]["request"]["question"])


def _post(world: World, user: str, text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    r = world.r
    queues = [Queue(name, connection=r, serializer=JSONSerializer) for name in QUEUES]
    for queue in queues:
        r.delete(queue.key)
    # The user's one-job slot: the previous test step's job is never run here.
    r.delete(keys.slot("kakao", user))
    response = world.client.post("/kakao/skill", json=kakao_payload(user, text))
    assert response.status_code == 200, response.data
    jobs = [job.args[0] for queue in queues for job in queue.get_jobs()]
    for queue in queues:
        r.delete(queue.key)
    return response.get_json(), jobs


def test_the_workers_answer_carries_the_other_reading(
    make_app: Any, stack: Any, callback_server: Any
) -> None:
    """After the follow-up window `해바라기 밭` is drawn by the real worker; the picture it
    delivers (by Kakao's callback) carries `사진에 대해 묻기` first among its quick replies."""
    app = make_app(sync_wait_s=0.0)
    core = app.extensions["koalatalk"].core
    user = new_user()
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 90)).save(buffer, "JPEG")
    session = core.conversations.start(
        "kakao", user, (core.photos.put(buffer.getvalue(), "photo"),), False
    )
    aged = dataclasses.replace(
        session, last_at=session.last_at - core.settings.photo_followup_s - 1
    )
    stack["redis"].set(keys.photo_session("kakao", user), aged.to_json(), keepttl=True)
    token = "other" + new_user()
    response = app.test_client().post(
        "/kakao/skill", json=kakao_payload(user, "해바라기 밭", callback_server.url(token))
    )
    assert response.get_json()["useCallback"] is True
    calls = callback_server.wait_for(token, timeout=60)
    assert calls, "the picture never came"
    delivered = calls[0].body
    labels = [q["label"] for q in delivered["template"]["quickReplies"]]
    assert labels[0] == "사진에 대해 묻기", labels
    assert "다시 그리기" in labels and labels.count("사진에 대해 묻기") == 1
    assert any("simpleImage" in o for o in delivered["template"]["outputs"])
