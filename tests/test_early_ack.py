"""First feedback at once: when admission's estimate says the picture cannot be ready before the
webhook's wait ends, the user is acknowledged at once instead of after the whole wait.

The estimate comes from the service times the workers record (`keys.SERVICE_TIMES`); these tests
set it the way a busy or slow model would have, and restore it after.
"""

from __future__ import annotations

import time
from typing import Any

from bot.core import keys
from tests.support import KAKAO_BUDGET_S, image_urls, new_user, post_kakao, text_of, wait_until

WAIT_S = 3.0  # the webhook's wait for a direct answer in these tests (SYNC_WAIT_S)


def test_a_job_that_cannot_be_ready_in_time_is_acknowledged_at_once(
    make_app: Any, callback_server: Any, service_time: Any
) -> None:
    # What a deep queue looks like to admission: 20 s before this job is done.
    service_time(20.0)
    client = make_app(sync_wait_s=WAIT_S).test_client()
    token = "early" + new_user()
    started = time.time()
    body = post_kakao(
        client, new_user(), "눈 덮인 산장", callback_server.url(token), budget_s=KAKAO_BUDGET_S
    )
    acked_after = time.time() - started
    assert body["useCallback"] is True
    assert "20초" in body["data"]["text"], body["data"]["text"]  # the honest wait
    # Not held for the wait: a wide margin, this machine is shared.
    assert acked_after < WAIT_S - 1.0, acked_after
    # The estimate was wrong (the tiny model is fast): the picture still comes, once, by
    # callback, no sooner than CALLBACK_DELAY_S after the acknowledgement.
    calls = callback_server.wait_for(token)
    assert len(calls) == 1 and len(image_urls(calls[0].body)) == 1
    # (measured from the request: the claim records its acknowledgement time at admission)
    assert calls[0].at - started >= 1.0


def test_without_a_callback_the_user_gets_the_pull_answer_at_once(
    make_app: Any, stack: Any, service_time: Any
) -> None:
    service_time(20.0)
    client = make_app(sync_wait_s=WAIT_S).test_client()
    user = new_user()
    started = time.time()
    body = post_kakao(client, user, "비 오는 거리의 고양이", budget_s=KAKAO_BUDGET_S)
    assert time.time() - started < WAIT_S - 1.0
    assert "아직 그리는 중" in text_of(body)
    labels = [q["label"] for q in body["template"]["quickReplies"]]
    assert "결과 보기" in labels
    # Finished early all the same: kept for the user, served by `결과 보기`.
    r = stack["redis"]
    assert wait_until(lambda: r.llen(keys.kept("kakao", user)) == 1)
    shown = post_kakao(client, user, "결과 보기", budget_s=KAKAO_BUDGET_S)
    assert len(image_urls(shown)) == 1


def test_a_job_that_fits_is_still_answered_directly(
    make_app: Any, callback_server: Any, service_time: Any
) -> None:
    service_time(0.2)  # an idle worker
    client = make_app(sync_wait_s=4.0).test_client()
    token = "fits" + new_user()
    body = post_kakao(
        client, new_user(), "해바라기 밭", callback_server.url(token), budget_s=KAKAO_BUDGET_S
    )
    assert "useCallback" not in body and len(image_urls(body)) == 1
    assert callback_server.hits.get(token, 0) == 0
