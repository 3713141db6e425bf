"""Telegram and LINE groups, and photos fetched within the budget, end to end: the real webhooks,
real Redis, the shared text-to-image worker, a vision worker (tiny Ko-LLaVA) and the stand-in
Bot API / Messaging API (tests/standins.py), which can also be a slow content server.

In a group the person (`from.id`, `source.userId`) owns the limits, the block, the one-job slot,
kept results and `기록 삭제`; the chat owns the photo session; answers go to the chat as replies
to the asker's message. Only what is addressed to the bot is answered."""

from __future__ import annotations

import io
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from rq.job import Job as RqJob
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer

from bot.core import keys
from bot.core.conversation import PhotoSession
from bot.core.events import Reply, Text
from bot.core.texts import say
from bot.messengers import telegram
from bot.messengers.line import render as line_render
from bot.messengers.line import signature
from tests.standins import TELEGRAM_TOKEN, ApiStandIn
from tests.support import (
    LOG_DIR,
    start_worker,
    stop_process,
    wait_ready,
    wait_until,
    worker_env,
)

BOT = "KoalaTalkBot"
TG_SECRET = "telegram-test-secret"
TG_HEADER = "X-Telegram-Bot-Api-Secret-Token"
LINE_SECRET = "line-test-channel-secret"
REPLY = "/v2/bot/message/reply"
PUSH = "/v2/bot/message/push"
_ids = itertools.count(int(time.time() * 1000) % 10**9 + 500_000_000)
_people = itertools.count(int(time.time()) % 10**6 * 1000 + 3_000_000_000)
_messages = itertools.count(100)


@pytest.fixture(scope="module")
def vision(stack: Any) -> Iterator[dict[str, Any]]:
    """One vision worker with tiny Ko-LLaVA on the shared stack's settings (the same private
    photo folder as the apps below). Its own fetches may take 2 x 8 s."""
    settings = {**stack["settings"], "vlm_preset": "tiny-kollava", "fetch_timeout_s": "8"}
    log_path = LOG_DIR / "vision-worker-groups.log"
    proc = start_worker(worker_env({}, **settings), queues=("vision",), log_path=log_path)
    try:
        wait_ready(stack["redis"], proc, queue="vision", log_path=log_path)
        yield {"settings": settings, "worker": proc}
    finally:
        stop_process(proc)


@pytest.fixture
def app(make_app: Any, vision: dict[str, Any]) -> Any:
    def build(**overrides: Any) -> Any:
        base = {"vlm_preset": "tiny-kollava", "telegram_bot_username": BOT}
        return make_app(**{**base, **overrides}).test_client()

    return build


def person(stack: Any, messenger: str = "telegram") -> str:
    """A fresh person already greeted (no first-contact notice in the answers)."""
    who = str(next(_people)) if messenger == "telegram" else "U" + uuid.uuid4().hex
    stack["redis"].set(keys.seen_user(messenger, who), "1", ex=3600)
    return who


def new_group() -> str:
    return str(-1_000_000_000_000 - next(_people))


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (96, 64), (40, 160, 90)).save(out, "JPEG")
    return out.getvalue()


# --- Telegram ----------------------------------------------------------------------------------


def tg_message(group: str, who: str, text: str | None = None, **extra: Any) -> dict[str, Any]:
    """An update from a supergroup; `@KoalaTalkBot` in the text gets its mention entity."""
    message: dict[str, Any] = {
        "message_id": next(_messages),
        "date": int(time.time()),
        "chat": {"id": int(group), "type": "supergroup", "title": "코알라 모임"},
        "from": {"id": int(who), "is_bot": False, "first_name": "민지", "language_code": "ko"},
        **extra,
    }
    if text is not None:
        message["text"] = text
        if "@" + BOT in text:
            at = len(text[: text.index("@" + BOT)].encode("utf-16-le")) // 2
            message["entities"] = [{"type": "mention", "offset": at, "length": len(BOT) + 1}]
    return {"update_id": next(_ids), "message": message}


def tg_post(client: Any, body: dict[str, Any]) -> Any:
    response = client.post("/telegram/webhook", json=body, headers={TG_HEADER: TG_SECRET})
    assert response.status_code == 200, response.data
    return response


def to_message(api: ApiStandIn, method: str, chat: str, message_id: int) -> list[Any]:
    """Calls to the chat that reply to one message."""
    return [
        c for c in api.find("telegram", method, chat_id=chat) if _reply_id(c.params) == message_id
    ]


def _reply_id(params: dict[str, Any]) -> int | None:
    found = params.get("reply_parameters")
    if isinstance(found, str):  # multipart fields arrive as JSON text
        found = json.loads(found)
    return found.get("message_id") if isinstance(found, dict) else None


def wait_to_message(
    api: ApiStandIn, method: str, chat: str, message_id: int, timeout: float = 40.0
) -> list[Any]:
    wait_until(lambda: to_message(api, method, chat, message_id), timeout=timeout)
    return to_message(api, method, chat, message_id)


def test_mention_offsets_count_utf16_units_and_the_mention_is_taken_out() -> None:
    body = tg_message("-100", "7", "🐨 @KoalaTalkBot 해바라기 밭")
    assert body["message"]["entities"][0]["offset"] == 3  # the koala is two UTF-16 units
    update = telegram.parse(json.dumps(body).encode(), time.time(), "r", telegram.Groups(BOT))
    assert update.event is not None
    assert update.event.text == "🐨 해바라기 밭"
    assert (update.event.user, update.event.chat) == ("7", "-100")
    assert update.event.reply_to_message == str(body["message"]["message_id"])


def test_a_group_message_not_addressed_to_the_bot_is_left_alone(
    app: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    client, group, who = app(), new_group(), person(stack)
    for text in ("해바라기 밭", "도움말", "/help@OtherBot", "@OtherBot 고양이"):
        tg_post(client, tg_message(group, who, text))
    # The webhook answers (ack, help, chat action) before it returns: nothing went out.
    assert not [c for c in messenger_apis.calls if str(c.params.get("chat_id")) == group]
    assert stack["redis"].get(keys.slot("telegram", who)) is None
    # Everything, when the setting says so.
    body = tg_message(group, who, "도움말")
    tg_post(app(group_answer_all=True), body)
    assert to_message(messenger_apis, "sendMessage", group, body["message"]["message_id"])


def test_a_mention_is_drawn_without_the_mention_as_a_reply_to_the_asker(
    app: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    client, group, who = app(), new_group(), person(stack)
    body = tg_message(group, who, "@KoalaTalkBot 해바라기 밭")
    mid = body["message"]["message_id"]
    tg_post(client, body)
    photos = wait_to_message(messenger_apis, "sendPhoto", group, mid)
    assert len(photos) == 1, "the picture goes to the group, replying to the asker"
    sent = photos[0].params
    assert "해바라기 밭" in sent["caption"] and "@" not in sent["caption"]
    keyboard = json.loads(sent["reply_markup"])
    assert keyboard["selective"] is True, "only the asker sees the quick replies"
    # The person owns the last prompt; the group has none.
    assert stack["redis"].get(keys.last_prompt("telegram", who)) is not None
    assert stack["redis"].get(keys.last_prompt("telegram", group)) is None


def test_without_the_username_setting_the_bot_asks_telegram_once(
    app: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    client, group, who = app(telegram_bot_username=""), new_group(), person(stack)
    asked = len(messenger_apis.find("telegram", "getMe"))
    body = tg_message(group, who, "@KoalaTalkBot 해바라기 밭")
    tg_post(client, body)
    photos = wait_to_message(messenger_apis, "sendPhoto", group, body["message"]["message_id"])
    assert "해바라기 밭" in photos[0].params["caption"] and "@" not in photos[0].params["caption"]
    chatter = tg_message(group, person(stack), "오늘 점심 뭐 먹지")  # not for the bot
    tg_post(client, chatter)
    assert not to_message(messenger_apis, "sendMessage", group, chatter["message"]["message_id"])
    assert len(messenger_apis.find("telegram", "getMe")) == asked + 1, "asked once, then kept"


def test_commands_and_replies_to_the_bot_are_addressed(
    app: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    client, group, who = app(), new_group(), person(stack)
    help_body = tg_message(group, who, "/help@KoalaTalkBot")
    tg_post(client, help_body)
    helped = to_message(messenger_apis, "sendMessage", group, help_body["message"]["message_id"])
    assert helped and helped[-1].params["reply_markup"]["selective"] is True
    draw = tg_message(group, who, "/draw@KoalaTalkBot 노란 우산")
    tg_post(client, draw)
    drawn = wait_to_message(messenger_apis, "sendPhoto", group, draw["message"]["message_id"])
    assert "노란 우산" in drawn[0].params["caption"]
    bot_said = {"message_id": 5, "from": {"id": 1, "is_bot": True, "username": BOT}, "text": "…"}
    follow = tg_message(group, who, "다시 그리기", reply_to_message=bot_said)
    tg_post(client, follow)
    redrawn = wait_to_message(messenger_apis, "sendPhoto", group, follow["message"]["message_id"])
    assert "노란 우산" in redrawn[0].params["caption"], "the person's last prompt, redrawn"


def test_a_blocked_person_is_refused_in_a_group_too_and_others_are_served(
    app: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    group, blocked, other = new_group(), person(stack), person(stack)
    client = app(blocked_users=(f"telegram:{blocked}",))
    refused = tg_message(group, blocked, "@KoalaTalkBot 바다 위의 등대")
    tg_post(client, refused)
    said = to_message(messenger_apis, "sendMessage", group, refused["message"]["message_id"])
    assert said and said[-1].params["text"] == say("user_blocked")
    served = tg_message(group, other, "@KoalaTalkBot 바다 위의 등대")
    tg_post(client, served)
    assert wait_to_message(messenger_apis, "sendPhoto", group, served["message"]["message_id"])


def test_limits_and_the_slot_follow_the_person_not_the_group(
    app: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    r = stack["redis"]
    client, group, minji, jun = app(rate_limit=1), new_group(), person(stack), person(stack)
    first = tg_message(group, minji, "@KoalaTalkBot 빨간 사과")
    second = tg_message(group, minji, "@KoalaTalkBot 파란 사과")
    theirs = tg_message(group, jun, "@KoalaTalkBot 노란 사과")
    for body in (first, second, theirs):
        tg_post(client, body)
    refusals = {say("busy_slot")} | {say("rate_limited", seconds=n) for n in range(1, 62)}
    again = to_message(messenger_apis, "sendMessage", group, second["message"]["message_id"])
    assert again and again[-1].params["text"] in refusals
    for body in (first, theirs):
        assert wait_to_message(messenger_apis, "sendPhoto", group, body["message"]["message_id"])
    assert r.zcard(keys.user("rate", "telegram", minji)) == 1
    assert r.zcard(keys.user("rate", "telegram", jun)) == 1
    assert not r.exists(keys.user("rate", "telegram", group))
    # The job carries the person, the chat and the message it answers.
    done = FinishedJobRegistry("text2image", connection=r, serializer=JSONSerializer)

    def mine() -> list[dict[str, Any]]:  # the job is recorded finished after it delivered
        jobs = [
            RqJob.fetch(i, connection=r, serializer=JSONSerializer).args[0]
            for i in done.get_job_ids()
        ]
        return [j for j in jobs if j["user"] == jun]

    assert wait_until(mine, timeout=20) and mine()[0]["chat"] == group
    assert mine()[0]["reply_to_message"] == str(theirs["message"]["message_id"])


def test_the_photo_session_belongs_to_the_chat_and_forget_to_the_person(
    app: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    r = stack["redis"]
    client, group, minji, jun = app(), new_group(), person(stack), person(stack)
    file_id = f"grp{group[-8:]}"
    messenger_apis.telegram_files[file_id] = jpeg()
    sizes = [{"file_id": file_id, "file_unique_id": "u", "width": 96, "height": 64}]
    photo = tg_message(
        group,
        minji,
        None,
        photo=sizes,
        caption="@KoalaTalkBot",
        caption_entities=[{"type": "mention", "offset": 0, "length": 13}],
    )
    tg_post(client, photo)
    got = to_message(messenger_apis, "sendMessage", group, photo["message"]["message_id"])
    assert got and got[-1].params["text"].startswith(say("photo_received"))
    raw = r.get(keys.photo_session("telegram", group))
    assert raw is not None and r.get(keys.photo_session("telegram", minji)) is None
    session = PhotoSession.from_json(raw)
    assert session.owner == minji
    # Another member asks about it; the answer replies to them.
    question = tg_message(group, jun, "@KoalaTalkBot 이 사진에 뭐가 있어?")
    tg_post(client, question)
    qid = question["message"]["message_id"]
    wait_until(lambda: len(to_message(messenger_apis, "sendMessage", group, qid)) >= 2, 60)
    stored = PhotoSession.from_json(r.get(keys.photo_session("telegram", group)))
    assert len(stored.turns) == 1 and stored.turns[0][0] == "이 사진에 뭐가 있어?"
    # `기록 삭제` deletes the person's own data: Jun's leaves Minji's photo alone.
    folder = Path(stack["settings"]["photo_dir"])
    tg_post(client, tg_message(group, jun, "@KoalaTalkBot 기록 삭제"))
    assert r.get(keys.photo_session("telegram", group)) is not None
    assert list(folder.glob(f"{session.photos[0]}.*"))
    tg_post(client, tg_message(group, minji, "@KoalaTalkBot 기록 삭제"))
    assert r.get(keys.photo_session("telegram", group)) is None
    assert not list(folder.glob(f"{session.photos[0]}.*")), "the photo she sent is deleted"


# --- LINE --------------------------------------------------------------------------------------


def line_group_event(group: str, who: str, text: str, mention_at: int | None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "text",
        "id": str(uuid.uuid4().int)[:18],
        "text": text,
        "quoteToken": "q-" + uuid.uuid4().hex,
    }
    if mention_at is not None:
        message["mention"] = {
            "mentionees": [
                {"index": mention_at, "length": len("@코알라톡"), "type": "user", "isSelf": True},
                {"index": 0, "length": 0, "type": "all"},
            ]
        }
    return {
        "type": "message",
        "mode": "active",
        "timestamp": int(time.time() * 1000),
        "source": {"type": "group", "groupId": group, "userId": who},
        "webhookEventId": "01" + uuid.uuid4().hex.upper()[:24],
        "deliveryContext": {"isRedelivery": False},
        "replyToken": uuid.uuid4().hex,
        "message": message,
    }


def line_post(client: Any, events: list[dict[str, Any]]) -> None:
    raw = json.dumps({"destination": "Ubot", "events": events}, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json", "X-Line-Signature": signature(raw, LINE_SECRET)}
    assert client.post("/line/webhook", data=raw, headers=headers).status_code == 200


def test_line_answers_in_a_group_only_when_mentioned_and_strips_the_mention(
    app: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    client, group, who = app(), "C" + uuid.uuid4().hex, person(stack, "line")
    quiet = line_group_event(group, who, "도움말", None)
    line_post(client, [quiet])
    # Help is answered through the reply token before the webhook returns: none was used.
    assert not messenger_apis.find("line", REPLY, replyToken=quiet["replyToken"])
    asked = line_group_event(group, who, "@코알라톡 해바라기 밭", 0)
    line_post(client, [asked])
    replies = messenger_apis.wait_for("line", REPLY, replyToken=asked["replyToken"], timeout=40)
    assert replies, "the worker answers through the reply token"
    messages = replies[0].params["messages"]
    texts = [m for m in messages if m["type"] == "text"]
    assert "해바라기 밭" in texts[0]["text"] and "@코알라톡" not in texts[0]["text"]
    assert texts[0]["quoteToken"] == asked["message"]["quoteToken"], "quotes the asker"
    r = stack["redis"]
    assert r.get(keys.last_prompt("line", who)) is not None
    assert r.get(keys.last_prompt("line", group)) is None
    assert not messenger_apis.find("line", PUSH, to=who)
    # Everything, when the setting says so.
    loud = line_group_event(group, who, "도움말", None)
    line_post(app(group_answer_all=True), [loud])
    assert messenger_apis.find("line", REPLY, replyToken=loud["replyToken"])


def test_line_a_message_quoting_the_bot_is_addressed_to_it(
    app: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    client, group, who = app(), "C" + uuid.uuid4().hex, person(stack, "line")
    asked = line_group_event(group, who, "@코알라톡 도움말", 0)
    line_post(client, [asked])
    helped = messenger_apis.find("line", REPLY, replyToken=asked["replyToken"])
    assert helped, "help is answered before the webhook returns"
    bot_message = helped[0].answer["sentMessages"][0]["id"]
    elsewhere = line_group_event(group, who, "도움말", None)
    elsewhere["message"]["quotedMessageId"] = str(uuid.uuid4().int)[:18]  # someone else's
    line_post(client, [elsewhere])
    assert not messenger_apis.find("line", REPLY, replyToken=elsewhere["replyToken"])
    quoting = line_group_event(group, who, "도움말", None)
    quoting["message"]["quotedMessageId"] = bot_message
    line_post(client, [quoting])
    assert messenger_apis.find("line", REPLY, replyToken=quoting["replyToken"])


def test_line_a_group_photo_is_read_when_a_mention_quotes_it(
    app: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    """A photo cannot mention the bot: it is left alone, its id kept (nothing fetched), and a
    member who quotes it with a mention asks about it."""
    client, group, who = app(), "C" + uuid.uuid4().hex, person(stack, "line")
    photo_id = str(uuid.uuid4().int)[:18]
    messenger_apis.line_contents[photo_id] = jpeg()
    sender = person(stack, "line")
    shared = line_group_event(group, sender, "", None)
    shared["message"] = {"type": "image", "id": photo_id, "quoteToken": "q-photo"}
    line_post(client, [shared])
    assert not messenger_apis.find("line", REPLY, replyToken=shared["replyToken"])
    assert not messenger_apis.find("line", "content", id=photo_id), "nothing fetched yet"
    question = line_group_event(group, who, "@코알라톡 이 사진에 뭐가 있어?", 0)
    question["message"]["quotedMessageId"] = photo_id
    line_post(client, [question])
    assert wait_until(lambda: vision_jobs(stack, who), timeout=30), "the question is asked"
    job = vision_jobs(stack, who)[0]
    assert "뭐가 있어" in job["request"]["question"] and "@" not in job["request"]["question"]
    assert messenger_apis.find("line", "content", id=photo_id)
    # A quote of a photo from another group is not taken.
    elsewhere = line_group_event("C" + uuid.uuid4().hex, who, "@코알라톡 이건 뭐야?", 0)
    elsewhere["message"]["quotedMessageId"] = photo_id
    line_post(client, [elsewhere])
    assert len(messenger_apis.find("line", "content", id=photo_id)) == 1
    # The sender's `기록 삭제` takes the kept id too.
    r = stack["redis"]
    assert r.exists(keys.group_photo("line", photo_id))
    line_post(client, [line_group_event(group, sender, "@코알라톡 기록 삭제", 0)])
    assert not r.exists(keys.group_photo("line", photo_id))
    assert not r.exists(keys.group_photos_by("line", sender))


def test_line_quotes_only_with_a_quote_token() -> None:
    plain = line_render(Reply((Text("안녕"),)))
    assert "quoteToken" not in plain[0]
    assert line_render(Reply((Text("안녕"),)), "qt")[0]["quoteToken"] == "qt"


# --- Photos fetched within the budget ------------------------------------------------------------


BUDGET_S = 1.0
SLOW_S = 6.0


def vision_jobs(stack: Any, user: str) -> list[dict[str, Any]]:
    r = stack["redis"]
    ids = FinishedJobRegistry("vision", connection=r, serializer=JSONSerializer).get_job_ids()
    found = [RqJob.fetch(i, connection=r, serializer=JSONSerializer).args[0] for i in ids]
    return [p for p in found if p["user"] == user]


def test_a_slow_telegram_photo_is_handed_to_the_worker_by_file_id(
    app: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    client, who = app(photo_fetch_budget_s=BUDGET_S), person(stack)
    file_id = f"slow{who}"
    messenger_apis.telegram_files[file_id] = jpeg()
    messenger_apis.telegram_file_delays[file_id] = SLOW_S
    body = {
        "update_id": next(_ids),
        "message": {
            "message_id": next(_messages),
            "date": int(time.time()),
            "chat": {"id": int(who), "type": "private"},
            "from": {"id": int(who), "is_bot": False, "language_code": "ko"},
            "photo": [{"file_id": file_id, "file_unique_id": "u", "width": 96, "height": 64}],
        },
    }
    started = time.time()
    tg_post(client, body)
    held = time.time() - started
    assert held < SLOW_S - 2, f"the webhook waited {held:.1f}s for a {SLOW_S}s download"
    assert held < BUDGET_S + 2.0, f"held {held:.1f}s, over the {BUDGET_S}s budget"

    def received() -> list[Any]:
        return [
            c
            for c in messenger_apis.find("telegram", "sendMessage", chat_id=who)
            if c.params["text"].startswith(say("photo_received"))
        ]

    assert wait_until(received, timeout=40), "the worker fetched it and answered"
    assert stack["redis"].get(keys.photo_session("telegram", who)) is not None
    assert wait_until(lambda: vision_jobs(stack, who), timeout=20)
    jobs = vision_jobs(stack, who)
    assert jobs[0]["request"]["photo_refs"] == [file_id]
    assert not jobs[0]["request"]["photo_urls"]
    assert TELEGRAM_TOKEN not in json.dumps(jobs), "the file URL holds the bot token"
    assert len(messenger_apis.find("telegram", "file", file_id=file_id)) == 2


def test_a_slow_line_photo_is_handed_to_the_worker_by_message_id(
    app: Any, messenger_apis: ApiStandIn, stack: Any
) -> None:
    client, who = app(photo_fetch_budget_s=BUDGET_S), person(stack, "line")
    message_id = str(uuid.uuid4().int)[:18]
    messenger_apis.line_contents[message_id] = jpeg()
    messenger_apis.line_content_delays[message_id] = SLOW_S
    item = {
        "type": "message",
        "timestamp": int(time.time() * 1000),
        "source": {"type": "user", "userId": who},
        "webhookEventId": "01" + uuid.uuid4().hex.upper()[:24],
        "replyToken": uuid.uuid4().hex,
        "message": {"type": "image", "id": message_id, "quoteToken": "q"},
    }
    started = time.time()
    line_post(client, [item])
    held = time.time() - started
    assert held < BUDGET_S + 2.0, f"held {held:.1f}s, over the {BUDGET_S}s budget"
    replies = messenger_apis.wait_for("line", REPLY, replyToken=item["replyToken"], timeout=40)
    assert replies and replies[0].params["messages"][0]["text"].startswith(say("photo_received"))
    assert wait_until(lambda: vision_jobs(stack, who), timeout=20)
    jobs = vision_jobs(stack, who)
    assert jobs[0]["request"]["photo_refs"] == [message_id]
    assert len(messenger_apis.find("line", "content", id=message_id)) == 2


# --- Jobs of the old shape ---------------------------------------------------------------------


def test_a_job_queued_before_the_group_fields_still_runs(stack: Any) -> None:
    """The job in tests/data/rq/rq212_draw_job.json has no chat nor message to reply to: it
    runs and its answer is the person's, as before."""
    import base64
    import zlib

    from rq import Queue

    from bot.core import handover
    from bot.core.job import Job

    fixture = json.loads((Path(__file__).parent / "data/rq/rq212_draw_job.json").read_text())
    data = base64.b64decode(fixture["jobs"][0]["hash"]["data"])
    old = json.loads(zlib.decompress(data))[2][0]
    assert "chat" not in old and "reply_to_message" not in old
    job = Job.from_dict(old)
    assert (job.chat, job.reply_to_message, job.room) == ("", "", old["user"])
    r = stack["redis"]
    request_id, user = "old" + uuid.uuid4().hex, "fixture-" + uuid.uuid4().hex
    payload = {
        **old,
        "request_id": request_id,
        "user": user,
        "deadline": time.time() + 120,
        "received_at": time.time(),
    }
    handover.webhook_claim(r, request_id, "pull")  # nobody waits: the result is kept
    Queue("text2image", connection=r, serializer=JSONSerializer).enqueue_call(
        "workers.tasks.draw", args=(payload,), job_id=request_id, result_ttl=600
    )
    assert wait_until(lambda: r.llen(keys.kept("kakao", user)) == 1, timeout=40)
    kept = Reply.from_dict(json.loads(r.lindex(keys.kept("kakao", user), 0)))
    assert kept.kind == "result"
