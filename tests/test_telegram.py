"""Telegram end to end: the real webhook, real Redis, the shared worker with the tiny model, and a
local stand-in for the Bot API (tests/standins.py)."""

from __future__ import annotations

import io
import itertools
import json
import time
from typing import Any

import pytest
from PIL import Image

from bot.core import keys
from tests.standins import ApiStandIn
from tests.support import counter
from workers.imaging import is_marked_ai

SECRET = "telegram-test-secret"
HEADER = "X-Telegram-Bot-Api-Secret-Token"
_ids = itertools.count(int(time.time() * 1000) % 10**9)
_chats = itertools.count(7_000_000)


def new_chat() -> int:
    return next(_chats) + int(time.time()) % 1000 * 10**6


def update(chat: int, **message: Any) -> dict[str, Any]:
    """An update in the shape Telegram sends for a private chat."""
    return {
        "update_id": next(_ids),
        "message": {
            "message_id": 1,
            "date": int(time.time()),
            "chat": {"id": chat, "type": "private", "first_name": "민지"},
            "from": {"id": chat, "is_bot": False, "first_name": "민지", "language_code": "ko"},
            **message,
        },
    }


def post(client: Any, body: dict[str, Any], secret: str | None = SECRET) -> Any:
    headers = {HEADER: secret} if secret is not None else {}
    return client.post("/telegram/webhook", json=body, headers=headers)


@pytest.fixture
def client(make_app: Any) -> Any:
    return make_app().test_client()


def test_a_wrong_or_missing_secret_is_refused_and_nothing_is_sent(
    client: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    r = stack["redis"]
    refused = counter(r, "refused", "unauthorized")
    chat = new_chat()
    assert post(client, update(chat, text="고양이"), secret="forged").status_code == 401
    assert post(client, update(chat, text="고양이"), secret=None).status_code == 401
    # Both were refused and counted, and no job was queued that could send anything later.
    assert counter(r, "refused", "unauthorized") == refused + 2
    assert r.get(keys.slot("telegram", str(chat))) is None
    assert not messenger_apis.find("telegram", "sendMessage", chat_id=chat)
    assert not messenger_apis.find("telegram", "sendChatAction", chat_id=chat)


def test_not_json_is_a_bad_request(client: Any) -> None:
    response = client.post(
        "/telegram/webhook", data=b"{", headers={HEADER: SECRET, "Content-Type": "application/json"}
    )
    assert response.status_code == 400


def test_a_prompt_is_acknowledged_at_once_and_the_picture_uploaded_by_the_worker(
    client: Any, messenger_apis: ApiStandIn
) -> None:
    chat = new_chat()
    started = time.time()
    response = post(client, update(chat, text="우주를 떠다니는 고양이"))
    assert response.status_code == 200
    assert time.time() - started < 2.0, "Telegram's webhook must not wait for the model"
    actions = messenger_apis.wait_for("telegram", "sendChatAction", chat_id=chat)
    assert actions[0].params["action"] == "upload_photo"
    photos = messenger_apis.wait_for("telegram", "sendPhoto", chat_id=chat)
    assert len(photos) == 1
    sent = photos[0].params
    assert isinstance(sent["photo"], bytes), "the picture is uploaded as bytes (multipart)"
    assert is_marked_ai(sent["photo"])
    Image.open(io.BytesIO(sent["photo"])).verify()
    assert "AI" in sent["caption"]
    keyboard = json.loads(sent["reply_markup"])["keyboard"]
    assert ["다시 그리기"] in [[button["text"] for button in row] for row in keyboard]


def test_a_replayed_update_is_ignored(client: Any, messenger_apis: ApiStandIn, stack: Any) -> None:
    r = stack["redis"]
    chat = new_chat()
    body = update(chat, text="/help")
    assert post(client, body).status_code == 200
    assert len(messenger_apis.wait_for("telegram", "sendMessage", chat_id=chat)) == 1
    duplicates = counter(r, "refused", "duplicate")
    replay = post(client, body)
    assert replay.status_code == 200
    assert replay.get_json().get("duplicate") is True
    # Dropped as a duplicate, and no job was queued that could send anything later.
    assert counter(r, "refused", "duplicate") == duplicates + 1
    assert r.get(keys.slot("telegram", str(chat))) is None
    assert len(messenger_apis.find("telegram", "sendMessage", chat_id=chat)) == 1


def test_start_command_gets_help_with_a_keyboard(client: Any, messenger_apis: ApiStandIn) -> None:
    chat = new_chat()
    assert post(client, update(chat, text="/start@KoalaTalkBot")).status_code == 200
    sent = messenger_apis.wait_for("telegram", "sendMessage", chat_id=chat)
    assert "코알라톡" in sent[0].params["text"]
    assert sent[0].params["reply_markup"]["keyboard"]


@pytest.mark.parametrize(
    "message",
    [
        {"sticker": {"file_id": "st1", "emoji": "🐨", "width": 512, "height": 512}},
        {"location": {"latitude": 37.56, "longitude": 126.97}},
        {"document": {"file_id": "d1", "file_name": "a.pdf", "mime_type": "application/pdf"}},
    ],
    ids=["sticker", "location", "file"],
)
def test_unsupported_messages_get_a_clear_answer(
    client: Any, messenger_apis: ApiStandIn, message: dict[str, Any]
) -> None:
    chat = new_chat()
    assert post(client, update(chat, **message)).status_code == 200
    sent = messenger_apis.wait_for("telegram", "sendMessage", chat_id=chat)
    assert "글과 사진만" in sent[0].params["text"]


def test_updates_without_a_message_are_acknowledged_quietly(
    client: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    r = stack["redis"]
    requests = counter(r, "requests", "telegram")
    chat = new_chat()
    body = {"update_id": next(_ids), "edited_message": {"chat": {"id": chat}, "text": "x"}}
    assert post(client, body).status_code == 200
    # Counted as received and done with: no job was queued that could send anything later.
    assert counter(r, "requests", "telegram") == requests + 1
    assert r.get(keys.slot("telegram", str(chat))) is None
    assert not [c for c in messenger_apis.calls if c.params.get("chat_id") == chat]


def test_a_chat_that_blocked_the_bot_keeps_its_result(
    make_app: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    chat = new_chat()
    messenger_apis.blocked_chats.add(str(chat))
    client = make_app().test_client()
    assert post(client, update(chat, text="노을 지는 바다")).status_code == 200
    r = stack["redis"]
    end = time.time() + 30
    while time.time() < end and not r.llen(keys.kept("telegram", str(chat))):
        time.sleep(0.05)
    assert r.llen(keys.kept("telegram", str(chat))) == 1, "an undeliverable picture is kept"


def test_telegram_off_without_a_token(make_app: Any) -> None:
    client = make_app(telegram_token="").test_client()
    assert post(client, update(new_chat(), text="hi")).status_code == 404


def jpeg_bytes(colour: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (96, 64), colour).save(out, "JPEG")
    return out.getvalue()


def photo_message(file_id: str, **extra: Any) -> dict[str, Any]:
    sizes = [
        {"file_id": file_id + "s", "file_unique_id": "s", "width": 48, "height": 32},
        {"file_id": file_id, "file_unique_id": "l", "width": 96, "height": 64},
    ]
    return {"photo": sizes, **extra}


def test_a_photo_alone_is_fetched_and_asks_what_to_know(
    client: Any, messenger_apis: ApiStandIn
) -> None:
    chat = new_chat()
    file_id = f"photo{chat}"
    messenger_apis.telegram_files[file_id] = jpeg_bytes()
    assert post(client, update(chat, **photo_message(file_id))).status_code == 200
    assert messenger_apis.find("telegram", "getFile", file_id=file_id), "the largest size"
    sent = messenger_apis.wait_for("telegram", "sendMessage", chat_id=chat)
    assert "무엇이 궁금하세요" in sent[-1].params["text"]
    buttons = [row[0]["text"] for row in sent[-1].params["reply_markup"]["keyboard"]]
    assert len(buttons) >= 3, "describe it, what is in it, read the text"


def test_a_photo_with_a_caption_is_a_question_at_once(
    client: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    from rq import Queue
    from rq.serializers import JSONSerializer

    chat = new_chat()
    file_id = f"photo{chat}"
    messenger_apis.telegram_files[file_id] = jpeg_bytes()
    body = update(chat, **photo_message(file_id, caption="이 사진에 뭐가 있어?"))
    assert post(client, body).status_code == 200
    actions = messenger_apis.wait_for("telegram", "sendChatAction", chat_id=chat)
    assert actions[-1].params["action"] == "typing"
    queue = Queue("vision", connection=stack["redis"], serializer=JSONSerializer)
    jobs = [j for j in queue.get_jobs() if j.args[0]["user"] == str(chat)]
    if not jobs:  # a vision worker in this run may have taken it already
        return
    try:
        request = jobs[0].args[0]["request"]
        assert request["question"] == "이 사진에 뭐가 있어?"
        assert len(request["images"]) == 1
        assert jobs[0].args[0]["messenger"] == "telegram"
    finally:
        for job in jobs:
            job.delete()


def test_a_file_that_is_not_an_image_gets_a_clear_answer(
    client: Any, messenger_apis: ApiStandIn
) -> None:
    chat = new_chat()
    file_id = f"fake{chat}"
    messenger_apis.telegram_files[file_id] = b"%PDF-1.7 this is not a picture"
    document = {"file_id": file_id, "file_name": "cat.png", "mime_type": "image/png"}
    assert post(client, update(chat, document=document)).status_code == 200
    sent = messenger_apis.wait_for("telegram", "sendMessage", chat_id=chat)
    assert "사진 파일이 아니" in sent[-1].params["text"]
