"""What the webhook answers to bad input and bad secrets. No worker needed: nothing is queued."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.core.settings import Settings, SettingsError
from bot.web.app import create_app
from tests.support import SAMPLES, kakao_payload, new_user


@pytest.fixture
def client(redis_url: str, tmp_path: Any) -> Any:
    # A database of the test's own: jobs queued there are never taken by the shared worker.
    settings = Settings(
        mode="development",
        redis_url=redis_url,
        media_dir=tmp_path,
        preset="tiny",
        log_json=False,
        max_body_bytes=4096,
    )
    return create_app(settings).test_client()


def kakao_text(response: Any) -> str:
    body = response.get_json()
    return "\n".join(
        o["simpleText"]["text"] for o in body["template"]["outputs"] if "simpleText" in o
    )


def test_not_json_is_400(client: Any) -> None:
    response = client.post("/kakao/skill", data=b"{nope", content_type="application/json")
    assert response.status_code == 400


def test_wrong_content_type_is_400(client: Any) -> None:
    body = json.dumps(kakao_payload(new_user(), "hi"))
    response = client.post("/kakao/skill", data=body, content_type="text/plain")
    assert response.status_code == 400


@pytest.mark.parametrize("body", [{}, [], {"userRequest": "x"}, {"bot": {"id": "b"}}, 3, "s"])
def test_no_user_request_is_400(client: Any, body: Any) -> None:
    assert client.post("/kakao/skill", json=body).status_code == 400


def test_body_over_the_cap_is_413(client: Any) -> None:
    body = kakao_payload(new_user(), "가" * 5000)
    assert client.post("/kakao/skill", json=body).status_code == 413


@pytest.mark.parametrize("user", [None, "", "   ", 42, "x" * 500])
def test_kakao_request_without_usable_user_gets_200_and_korean_text(client: Any, user: Any) -> None:
    body = kakao_payload("placeholder", "그림")
    body["userRequest"]["user"]["id"] = user
    response = client.post("/kakao/skill", json=body)
    assert response.status_code == 200
    assert "메시지를 읽지 못했어요" in kakao_text(response)


def test_unusable_utterance_gets_200_and_korean_text(client: Any) -> None:
    body = kakao_payload(new_user(), "x")
    body["userRequest"]["utterance"] = {"not": "text"}
    response = client.post("/kakao/skill", json=body)
    assert response.status_code == 200
    assert "메시지를 읽지 못했어요" in kakao_text(response)


def test_prompt_over_length_cap_is_refused_kindly(client: Any, redis_client: Any) -> None:
    user = new_user()
    response = client.post("/kakao/skill", json=kakao_payload(user, "a" * 1500))
    assert response.status_code == 200
    assert "too long" in kakao_text(response)
    assert not redis_client.keys(f"kt:slot:kakao:{user}")


def test_every_sample_payload_parses(client: Any) -> None:
    samples = sorted(SAMPLES.glob("*.json"))
    assert len(samples) >= 6
    for sample in samples:
        response = client.post(
            "/kakao/skill", data=sample.read_bytes(), content_type="application/json"
        )
        assert response.status_code == 200, sample.name


def test_production_refuses_to_start_without_a_secret(redis_url: str) -> None:
    with pytest.raises(SettingsError, match="SECRET"):
        Settings.from_env({"KOALATALK_MODE": "production", "KOALATALK_REDIS_URL": redis_url})


def test_production_checks_the_secret_header(redis_url: str, tmp_path: Any) -> None:
    settings = Settings(
        mode="production",
        secret="s3cret-value",
        redis_url=redis_url,
        media_dir=tmp_path,
        log_json=False,
    )
    client = create_app(settings).test_client()
    body = kakao_payload(new_user(), "도움말")
    assert client.post("/kakao/skill", json=body).status_code == 401
    wrong = {"X-KoalaTalk-Secret": "s3cret-valuX"}
    assert client.post("/kakao/skill", json=body, headers=wrong).status_code == 401
    right = {"X-KoalaTalk-Secret": "s3cret-value"}
    assert client.post("/kakao/skill", json=body, headers=right).status_code == 200


def test_media_ids_cannot_be_listed_or_guessed(client: Any) -> None:
    assert client.get("/media/").status_code == 404
    assert client.get("/media/../settings.py").status_code == 404
    assert client.get("/media/" + "A" * 32 + ".jpg").status_code == 404


def test_help_answer_fits_kakao_limits(client: Any) -> None:
    body = client.post("/kakao/skill", json=kakao_payload(new_user(), "도움말")).get_json()
    template = body["template"]
    assert 1 <= len(template["outputs"]) <= 3
    assert all(len(q["label"]) <= 14 for q in template["quickReplies"])
