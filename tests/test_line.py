"""LINE end to end: the real webhook with signatures, real Redis, the shared worker with the tiny
model, and a local stand-in for the Messaging and content APIs (tests/standins.py)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from bot.core import keys
from bot.messengers.line import signature
from tests.standins import ApiStandIn
from tests.support import counter

CHANNEL_SECRET = "line-test-channel-secret"
REPLY = "/v2/bot/message/reply"
PUSH = "/v2/bot/message/push"
LOADING = "/v2/bot/chat/loading/start"


def new_user() -> str:
    return "U" + uuid.uuid4().hex


def event(user: str, message: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """One webhook event in the shape LINE sends from a one-to-one chat."""
    body: dict[str, Any] = {
        "type": "message",
        "mode": "active",
        "timestamp": int(time.time() * 1000),
        "source": {"type": "user", "userId": user},
        "webhookEventId": "01" + uuid.uuid4().hex.upper()[:24],
        "deliveryContext": {"isRedelivery": False},
        "replyToken": uuid.uuid4().hex,
    }
    if message is not None:
        body["message"] = {"id": str(uuid.uuid4().int)[:18], "quoteToken": "q", **message}
    body.update(fields)
    return body


def post(client: Any, events: list[dict[str, Any]], secret: str | None = CHANNEL_SECRET) -> Any:
    raw = json.dumps({"destination": "Ubot", "events": events}, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Line-Signature"] = signature(raw, secret)
    return client.post("/line/webhook", data=raw, headers=headers)


@pytest.fixture
def client(make_app: Any) -> Any:
    return make_app().test_client()


def test_signature_is_hmac_sha256_in_base64() -> None:
    # Checked with: printf '{}' | openssl dgst -sha256 -hmac secret -binary | base64
    assert signature(b"{}", "secret") == "dzJZAsrKgS3CWXM6rNBGtzgXNyx3e42VtAJkdHRRbhM="
    assert len(signature(b"x", "y")) == 44


def test_forged_or_missing_signatures_are_refused(
    client: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    r = stack["redis"]
    refused = counter(r, "refused", "unauthorized")
    user = new_user()
    body = [event(user, {"type": "text", "text": "고양이"})]
    assert post(client, body, secret="not-the-channel-secret").status_code == 401
    assert post(client, body, secret=None).status_code == 401
    # A valid signature over a different body does not carry over.
    raw = json.dumps({"events": body}).encode()
    forged = client.post(
        "/line/webhook",
        data=raw + b" ",
        headers={
            "Content-Type": "application/json",
            "X-Line-Signature": signature(raw, CHANNEL_SECRET),
        },
    )
    assert forged.status_code == 401
    # All three were refused and counted, and no job was queued that could answer later.
    assert counter(r, "refused", "unauthorized") == refused + 3
    assert r.get(keys.slot("line", user)) is None
    assert not messenger_apis.find("line", LOADING, chatId=user)


def test_the_console_verify_request_is_answered(client: Any) -> None:
    assert post(client, []).status_code == 200


def test_a_prompt_is_answered_through_the_reply_token(
    client: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    user = new_user()
    item = event(user, {"type": "text", "text": "벚꽃 길을 걷는 코알라"})
    assert post(client, [item]).status_code == 200
    assert messenger_apis.wait_for("line", LOADING, chatId=user)
    replies = messenger_apis.wait_for("line", REPLY, replyToken=item["replyToken"])
    assert len(replies) == 1
    messages = replies[0].params["messages"]
    images = [m for m in messages if m["type"] == "image"]
    assert len(images) == 1
    public = stack["settings"]["public_url"]
    assert images[0]["originalContentUrl"].startswith(public + "/media/")
    assert images[0]["previewImageUrl"] == images[0]["originalContentUrl"]
    assert replies[0].headers["Authorization"].startswith("Bearer ")
    labels = [i["action"]["label"] for i in messages[-1]["quickReply"]["items"]]
    assert "다시 그리기" in labels
    assert not messenger_apis.find("line", PUSH, to=user)


def test_a_reply_token_that_no_longer_works_falls_back_to_push(
    client: Any, messenger_apis: ApiStandIn
) -> None:
    user = new_user()
    item = event(user, {"type": "text", "text": "등대가 있는 바다"}, replyToken="expired-" + user)
    assert post(client, [item]).status_code == 200
    pushes = messenger_apis.wait_for("line", PUSH, to=user)
    assert len(pushes) == 1
    assert any(m["type"] == "image" for m in pushes[0].params["messages"])
    assert uuid.UUID(pushes[0].headers["X-Line-Retry-Key"])


def test_a_redelivered_event_is_ignored(
    client: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    r = stack["redis"]
    user = new_user()
    item = event(user, {"type": "text", "text": "도움말"})
    assert post(client, [item]).status_code == 200
    assert len(messenger_apis.wait_for("line", REPLY, replyToken=item["replyToken"])) == 1
    duplicates = counter(r, "refused", "duplicate")
    again = {**item, "deliveryContext": {"isRedelivery": True}}
    assert post(client, [again]).status_code == 200
    # The webhook dropped it as a duplicate, and no job was queued that could answer later.
    assert counter(r, "refused", "duplicate") == duplicates + 1
    assert r.get(keys.slot("line", user)) is None
    assert len(messenger_apis.find("line", REPLY, replyToken=item["replyToken"])) == 1


@pytest.mark.parametrize(
    "message",
    [
        {"type": "sticker", "packageId": "446", "stickerId": "1988"},
        {"type": "location", "title": "서울역", "latitude": 37.55, "longitude": 126.97},
        {"type": "file", "fileName": "report.pdf", "fileSize": 2048},
    ],
    ids=["sticker", "location", "file"],
)
def test_unsupported_messages_get_a_clear_answer(
    client: Any, messenger_apis: ApiStandIn, message: dict[str, Any]
) -> None:
    item = event(new_user(), message)
    assert post(client, [item]).status_code == 200
    replies = messenger_apis.wait_for("line", REPLY, replyToken=item["replyToken"])
    assert "글과 사진만" in " ".join(m.get("text", "") for m in replies[0].params["messages"])


def test_a_new_friend_is_welcomed(client: Any, messenger_apis: ApiStandIn) -> None:
    item = event(new_user(), None, type="follow")
    assert post(client, [item]).status_code == 200
    replies = messenger_apis.wait_for("line", REPLY, replyToken=item["replyToken"])
    assert "코알라톡" in " ".join(m.get("text", "") for m in replies[0].params["messages"])


def test_line_off_without_a_channel_secret(make_app: Any) -> None:
    client = make_app(line_channel_secret="").test_client()
    assert post(client, [event(new_user(), {"type": "text", "text": "hi"})]).status_code == 404


def test_an_image_is_fetched_by_message_id_and_asks_what_to_know(
    client: Any, messenger_apis: ApiStandIn
) -> None:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (80, 60), (10, 200, 90)).save(out, "PNG")
    item = event(new_user(), {"type": "image", "contentProvider": {"type": "line"}})
    messenger_apis.line_contents[item["message"]["id"]] = out.getvalue()
    assert post(client, [item]).status_code == 200
    fetched = messenger_apis.find("line", "content", id=item["message"]["id"])
    assert len(fetched) == 1
    assert fetched[0].headers["Authorization"].startswith("Bearer ")
    replies = messenger_apis.wait_for("line", REPLY, replyToken=item["replyToken"])
    texts = " ".join(m.get("text", "") for m in replies[0].params["messages"])
    assert "무엇이 궁금하세요" in texts
    assert len(replies[0].params["messages"][-1]["quickReply"]["items"]) >= 3


def test_an_image_that_is_gone_gets_a_clear_answer(client: Any, messenger_apis: ApiStandIn) -> None:
    item = event(new_user(), {"type": "image", "contentProvider": {"type": "line"}})
    assert post(client, [item]).status_code == 200  # the stand-in has no such content: 404
    replies = messenger_apis.wait_for("line", REPLY, replyToken=item["replyToken"])
    texts = " ".join(m.get("text", "") for m in replies[0].params["messages"])
    assert "사진을 다시 보내" in texts
