"""A Kakao prompt becomes a KOALA picture, end to end: real Redis, a real worker process with the
tiny model, and a local stand-in for Kakao's callback API."""

from __future__ import annotations

import io
import time
from typing import Any
from urllib.parse import urlparse

import pytest
from PIL import Image
from rq import Queue
from rq.serializers import JSONSerializer

from bot.core import keys, slots
from bot.core.job import Job, Request
from tests.support import (
    KAKAO_BUDGET_S,
    image_urls,
    jobs_of,
    new_user,
    post_kakao,
    text_of,
    wait_until,
)
from workers.imaging import is_marked_ai

# The longest direct wait Kakao's budget allows; a loaded 2-core machine can be slow.
DIRECT_WAIT = 4.0
# Direct answers are timed: no test here waits behind the jobs an earlier test left.
pytestmark = pytest.mark.usefixtures("idle_stack")


def post(client: Any, user: str, text: str, callback: str | None = None) -> dict[str, Any]:
    return post_kakao(client, user, text, callback, budget_s=KAKAO_BUDGET_S)


def quick_labels(body: dict[str, Any]) -> list[str]:
    return [q["label"] for q in body["template"].get("quickReplies", [])]


def fetch_jpeg(client: Any, url: str) -> bytes:
    response = client.get(urlparse(url).path)
    assert response.status_code == 200
    assert response.mimetype == "image/jpeg"
    assert "max-age" in response.headers["Cache-Control"]
    data = response.data
    Image.open(io.BytesIO(data)).verify()
    return data


def test_prompt_answered_directly_with_an_ai_marked_jpeg(
    make_app: Any, idle_stack: Any, callback_server: Any, service_time: Any
) -> None:
    stack = idle_stack
    service_time(0.3)  # an idle tiny model: admission expects the picture within the wait
    client = make_app(sync_wait_s=DIRECT_WAIT).test_client()
    token, user = "direct" + new_user(), new_user()
    body = post(client, user, "우주를 떠다니는 고양이", callback_server.url(token))
    urls = image_urls(body)
    assert len(urls) == 1
    assert "AI" in text_of(body)
    labels = quick_labels(body)
    assert labels[:2] == ["다시 그리기", "같은 시드로"] and labels[-1] == "도움말"
    data = fetch_jpeg(client, urls[0])
    assert is_marked_ai(data)
    # Once the job has ended, everything it would deliver has gone out.
    assert wait_until(lambda: len(jobs_of(stack["redis"], user)) == 1)
    assert jobs_of(stack["redis"], user)[0].return_value()["delivered"] == "direct"
    assert callback_server.hits.get(token, 0) == 0, "a direct answer must not also call back"


def test_prompt_acknowledged_then_delivered_by_callback(
    make_app: Any, callback_server: Any
) -> None:
    client = make_app(sync_wait_s=0.0).test_client()
    token = "cb" + new_user()
    acked_at = time.time()
    body = post(client, new_user(), "a koala surfing", callback_server.url(token))
    assert body["useCallback"] is True
    assert body["data"]["text"]
    assert "template" not in body
    calls = callback_server.wait_for(token)
    assert len(calls) == 1
    assert calls[0].at - acked_at >= 1.0, "the callback must leave a second after the ack"
    delivered = calls[0].body
    assert delivered["version"] == "2.0"
    urls = image_urls(delivered)
    assert len(urls) == 1
    assert "Drawn by AI" in text_of(delivered)
    assert is_marked_ai(fetch_jpeg(client, urls[0]))


def test_pull_path_in_time_answers_directly(make_app: Any) -> None:
    client = make_app(sync_wait_s=DIRECT_WAIT).test_client()
    body = post(client, new_user(), "등대가 있는 바다")
    assert len(image_urls(body)) == 1


def test_pull_path_late_keeps_the_result_for_result_view(make_app: Any, stack: Any) -> None:
    client = make_app(sync_wait_s=0.0).test_client()
    user = new_user()
    body = post(client, user, "노을 지는 사막")
    assert "아직 그리는 중" in text_of(body)
    assert "결과 보기" in quick_labels(body)
    r = stack["redis"]
    assert wait_until(lambda: r.llen(keys.kept("kakao", user)) == 1)
    shown = post(client, user, "결과 보기")
    assert len(image_urls(shown)) == 1
    assert "지난번에 요청하신 결과" in text_of(shown)
    again = post(client, user, "결과 보기")
    assert "보내 드릴 결과가 없어요" in text_of(again)


def test_kept_result_served_on_next_message_with_one_tap_resend(make_app: Any, stack: Any) -> None:
    client = make_app(sync_wait_s=0.0).test_client()
    user = new_user()
    post(client, user, "비 오는 서울 골목")
    assert wait_until(lambda: stack["redis"].llen(keys.kept("kakao", user)) == 1)
    body = post(client, user, "눈 덮인 한옥 마을")
    assert len(image_urls(body)) == 1
    resend = [
        q for q in body["template"]["quickReplies"] if q["messageText"] == "눈 덮인 한옥 마을"
    ]
    assert resend, "the new message must be one tap away"
    assert stack["redis"].llen(keys.kept("kakao", user)) == 0


def test_redraw_uses_last_prompt_with_a_new_seed(make_app: Any) -> None:
    client = make_app(sync_wait_s=DIRECT_WAIT).test_client()
    user = new_user()
    first = post(client, user, "빨간 우산을 든 여우")
    second = post(client, user, "다시 그리기")
    assert "빨간 우산을 든 여우" in text_of(second)
    a = fetch_jpeg(client, image_urls(first)[0])
    b = fetch_jpeg(client, image_urls(second)[0])
    assert a != b, "a redraw must use a new seed"


def test_redraw_without_a_last_prompt_explains(make_app: Any) -> None:
    body = post(make_app().test_client(), new_user(), "다시 그리기")
    assert "다시 그릴 문장이 없어요" in text_of(body)


@pytest.mark.parametrize("text", ["도움말", "help", "", "  "])
def test_help_has_quick_replies(make_app: Any, text: str) -> None:
    body = post(make_app().test_client(), new_user(), text)
    assert "코알라톡" in text_of(body) or "KoalaTalk" in text_of(body)
    assert len(quick_labels(body)) >= 2


@pytest.mark.parametrize("text", ["안녕하세요", "안녕!", "hello"])
def test_greeting_gets_welcome_and_help_quick_replies(make_app: Any, text: str) -> None:
    body = post(make_app().test_client(), new_user(), text)
    assert "코알라톡" in text_of(body) or "KoalaTalk" in text_of(body)
    assert quick_labels(body)
    assert not image_urls(body)


def test_english_prompt_gets_english_messages(make_app: Any) -> None:
    body = post(make_app().test_client(), new_user(), "help")
    assert "Send one sentence" in text_of(body)


def test_job_past_its_deadline_is_not_run_and_user_is_told(make_app: Any, stack: Any) -> None:
    # Admission refuses work it cannot finish in time, so a job can only miss its deadline by
    # waiting in the queue; enqueue one that already has, as a backlog would leave it.
    r = stack["redis"]
    user, rid = new_user(), "late" + new_user()
    job = Job(
        request_id=rid,
        messenger="kakao",
        user=user,
        deadline=time.time() - 1,
        preset="tiny",
        request=Request(prompt="늦어버린 그림", seed=1),
    )
    assert slots.acquire(r, "kakao", user, rid, 60)
    Queue("text2image", connection=r, serializer=JSONSerializer).enqueue(
        job.function, job.to_dict(), job_id=rid
    )
    assert wait_until(lambda: r.llen(keys.kept("kakao", user)) == 1)
    assert r.get(keys.slot("kakao", user)) is None
    assert r.get(keys.result(rid)) is None, "an expired job must not be drawn"
    body = post(make_app().test_client(), user, "안녕")
    assert "제시간에 그리지 못했어요" in text_of(body)
    assert not image_urls(body)
