"""Storybooks (issue 13): scene splitting, the prompts, each messenger's rendering against its
limits, admission (quota and deadline), the combined picture, and one batched model call for a
whole book, end to end with the tiny model."""

from __future__ import annotations

import dataclasses
import io
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from PIL import Image, ImageChops, ImageDraw
from rq.job import Job as RqJob
from rq.serializers import JSONSerializer

from bot.core import admission, intents, keys, storybook
from bot.core.actions import ActionName
from bot.core.events import Card, Cards, Reply, Text
from bot.core.options import OptionError
from bot.core.texts import quick, say
from bot.messengers import kakao, line, telegram
from tests.support import (
    KAKAO_BUDGET_S,
    in_process_runtime,
    new_user,
    post_kakao,
    text_of,
    wait_until,
)
from workers.imaging import hangul_font, is_marked_ai, to_jpeg
from workers.storybook import combine, wrap


def read(text: str) -> storybook.Book:
    story = storybook.book_text(text)
    assert story is not None, text
    return storybook.read(story)


# --- Asking for it ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("동화: 고양이가 산책을 했어요. 비가 왔어요.", "storybook"),
        ("그림일기: 오늘 공원에 갔다 친구를 만났다", "diary"),
        ("만화 : 하나. 둘.", "comic"),
        ("스토리보드: 문이 열린다. 배우가 들어온다.", "storyboard"),
        ("Story: A cat walks. It rains.", "storybook"),
        ("diary: I went to the park. I met a friend.", "diary"),
        ("comic: One. Two.", "comic"),
        ("storyboard: A door opens. An actor walks in.", "storyboard"),
    ],
)
def test_each_prefix_is_a_storybook_of_its_kind(text: str, kind: str) -> None:
    assert intents.decide(text).name == ActionName.STORYBOOK
    assert intents.decide(text, has_photo=True).name == ActionName.STORYBOOK
    story = storybook.book_text(text)
    assert story is not None and story.kind == kind


@pytest.mark.parametrize(
    "text", ["동화책을 읽는 고양이", "만화처럼 그린 강아지", "a story about cats"]
)
def test_words_without_the_prefix_are_a_plain_drawing(text: str) -> None:
    assert intents.decide(text).name == ActionName.DRAW


def test_korean_sentences_split_by_punctuation_endings_and_lines() -> None:
    book = read(
        "동화: 노란 우비를 입은 여자아이가 웅덩이에서 뛰어요. 개구리를 만났어요!\n"
        "둘이 함께 집에 갔다 바다 위로 해가 졌다\n밤이 되었죠 모두 잠들었어요…"
    )
    assert book.scenes == (
        "노란 우비를 입은 여자아이가 웅덩이에서 뛰어요.",
        "개구리를 만났어요!",
        "둘이 함께 집에 갔다",  # `갔다` ends a sentence; `바다` does not
        "바다 위로 해가 졌다",
        "밤이 되었죠",
        "모두 잠들었어요…",
    )


def test_english_sentences_split_but_not_numbers_or_abbreviated_dots() -> None:
    book = read("story: A girl walks 3.5 km. She meets a frog... They go home together!")
    assert book.scenes == ("A girl walks 3.5 km.", "She meets a frog...", "They go home together!")


def test_a_long_story_is_grouped_into_six_scenes_in_order() -> None:
    book = read("만화: " + " ".join(f"장면{i}." for i in range(1, 9)))
    assert book.scenes == ("장면1. 장면2.", "장면3. 장면4.", "장면5.", "장면6.", "장면7.", "장면8.")
    assert len(read("comic: " + "One. " * 20).scenes) == storybook.MAX_SCENES


def test_a_single_sentence_is_one_scene_in_the_kinds_default_style() -> None:
    assert read("그림일기: 오늘 공원에 갔다").scenes == ("오늘 공원에 갔다",)
    assert {kind: read(f"{kind}: A cat. A dog.").style for kind in storybook.KINDS} == {
        "storybook": "storybook",
        "diary": "crayon",
        "comic": "comic",
        "storyboard": "sketch",
    }


def test_options_apply_to_the_whole_book_and_leave_the_scenes() -> None:
    book = read("동화: 고양이가 잠을 잤어요. 꿈을 꿨어요, 수채화, 가로, 시드 42\n제외: 사람")
    assert book.scenes == ("고양이가 잠을 잤어요.", "꿈을 꿨어요")
    assert (book.style, book.found.shape, book.found.seed) == ("watercolour", "landscape", 42)
    assert book.found.negative == "사람"
    with pytest.raises(OptionError):
        read("동화: 고양이, 시드 -5")


# --- The prompts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("english", "phrase"),
    [
        (
            "A little girl in a yellow raincoat jumps in the puddle.",
            "A little girl in a yellow raincoat",
        ),
        ("The old fisherman walked to the sea", "The old fisherman"),
        ("A koala climbs a tall tree", "A koala"),
        ("A girl in red boots walks home", "A girl in red boots"),
        ("A boy with glasses reads a book", "A boy with glasses"),
        ("A cat sleeping on the sofa", "A cat"),
        ("Yesterday I went to the park", ""),  # the sentence does not open with its subject
    ],
)
def test_the_character_phrase_is_the_first_scenes_subject(english: str, phrase: str) -> None:
    assert storybook.character(english) == phrase


def test_within_the_token_limit_the_scene_stays_whole_character_cut_before_style() -> None:
    def words(text: str) -> int:
        return len(text.replace(",", " ").split())

    scene = "she meets a frog by the pond"  # 7 words
    shared = "a little girl in a yellow raincoat"  # 7
    style = "storybook illustration, soft colors"  # 4
    whole = storybook.compose(scene, shared, style, words, 40)
    assert whole == storybook.Composed(f"{scene}, {shared}, {style}")
    no_coat = storybook.compose(scene, shared, style, words, 14)
    assert no_coat.prompt == f"{scene}, a little girl, {style}" and no_coat.character_cut
    assert not no_coat.style_cut
    only_style = storybook.compose(scene, shared, style, words, 9)
    assert only_style.prompt == f"{scene}, storybook illustration"
    assert only_style.character_cut and only_style.style_cut
    assert storybook.compose(scene, shared, style, words, 3).prompt == scene  # never cut
    # The first scene already holds the phrase: it is not repeated.
    first = storybook.compose(f"{shared} jumps", shared, style, words, 40)
    assert first.prompt == f"{shared} jumps, {style}"


# --- Rendering -------------------------------------------------------------------------------


LONG = "노란 우비를 입은 여자아이가 웅덩이에서 신나게 뛰어놀아요. " * 3


def book_reply(
    n: int, sentence: str = LONG, link: str = "https://bot.example/media/all.jpg"
) -> Reply:
    cards = tuple(
        Card(
            f"https://bot.example/media/s{i}.jpg",
            f"{sentence}{i}",
            f"https://bot.example/media/s{i}.jpg",
        )
        for i in range(n)
    )
    return Reply(
        (Cards(cards, link), Text("AI가 그린 동화 장면이에요.")),
        (quick("quick_redraw"),),
        kind="result",
    )


@pytest.mark.parametrize("n", [2, 4, 6, 12])
def test_kakao_renders_a_carousel_of_basic_cards_within_its_limits(n: int) -> None:
    body = kakao.render(book_reply(n))
    outputs = body["template"]["outputs"]
    assert len(outputs) <= kakao.MAX_OUTPUTS
    carousel = outputs[0]["carousel"]
    assert carousel["type"] == "basicCard"
    assert len(carousel["items"]) == min(n, kakao.MAX_CARDS)
    for i, item in enumerate(carousel["items"]):
        assert len(item["description"]) <= kakao.MAX_CAROUSEL_DESCRIPTION
        assert item["thumbnail"]["imageUrl"].endswith(f"s{i}.jpg")
        labels = [b["label"] for b in item["buttons"]]
        assert labels == ["크게 보기", "한 장으로 보기"]
        assert all(len(label) <= kakao.MAX_BUTTON_LABEL for label in labels)
    assert "simpleText" in outputs[1]
    assert body["template"]["quickReplies"][0]["label"] == "다시 그리기"


def test_kakao_one_card_alone_may_use_the_longer_description() -> None:
    item = kakao.render(book_reply(1, "가" * 300))["template"]["outputs"][0]["carousel"]["items"][0]
    assert len(item["description"]) == kakao.MAX_DESCRIPTION


def test_kakao_withheld_card_has_no_open_button() -> None:
    cards = (
        Card("https://x/a.jpg", "a", "https://x/a.jpg"),
        Card("https://x/grey.jpg", "b (가려짐)"),
    )
    items = kakao.carousel(Cards(cards))["carousel"]["items"]
    assert [len(i["buttons"]) for i in items] == [1, 0]


@pytest.mark.parametrize("n", [2, 4, 6])
def test_telegram_sends_one_album_then_the_combined_picture_with_the_keyboard(n: int) -> None:
    calls = telegram.render(book_reply(n))
    assert [method for method, _ in calls] == ["sendMediaGroup", "sendPhoto"]
    media = calls[0][1]["media"]
    assert len(media) == n <= telegram.MAX_ALBUM
    assert all(
        len(p.alt) <= telegram.MAX_CAPTION and p.alt.endswith(str(i)) for i, p in enumerate(media)
    )
    assert "reply_markup" not in calls[0][1]  # an album cannot carry a keyboard
    assert calls[1][1]["photo"].url.endswith("all.jpg")
    assert calls[1][1]["caption"] == "AI가 그린 동화 장면이에요."
    assert calls[1][1]["reply_markup"]["keyboard"][0][0]["text"] == "다시 그리기"


@pytest.mark.parametrize("n", [2, 6, 12])
def test_line_sends_one_image_carousel_and_one_text(n: int) -> None:
    messages = line.render(book_reply(n))
    assert len(messages) == 2 <= line.MAX_MESSAGES
    template = messages[0]["template"]
    assert template["type"] == "image_carousel"
    assert len(template["columns"]) == min(n, line.MAX_COLUMNS)
    assert all(len(c["action"]["label"]) <= line.MAX_COLUMN_LABEL for c in template["columns"])
    assert len(messages[0]["altText"]) <= line.MAX_ALT_TEXT
    assert messages[1]["type"] == "text" and "quickReply" in messages[1]
    # A column opens one picture: the combined one is a link in the text (Kakao's cards and
    # Telegram's second photo carry it themselves, so their text does not).
    assert messages[1]["text"].endswith("한 장으로 보기: https://bot.example/media/all.jpg")


def test_a_book_reply_survives_its_json_form() -> None:
    reply = book_reply(3)
    assert Reply.from_dict(reply.to_dict()) == reply


# --- The combined picture ----------------------------------------------------------------------


def glyph(text: str, font: Any) -> Image.Image:
    image = Image.new("L", (40 * len(text), 40), 0)
    ImageDraw.Draw(image).text((2, 2), text, fill=255, font=font)
    return image


def test_hangul_renders_as_glyphs_not_empty_boxes() -> None:
    font = hangul_font(28)
    missing = glyph("\ue000", font)  # a private-use character: the font's .notdef box
    glyphs = [glyph(ch, font) for ch in "가나다"]
    for one in glyphs:
        assert one.getbbox() is not None, "nothing drawn"
        assert ImageChops.difference(one, missing).getbbox() is not None, "drawn as a box"
    assert ImageChops.difference(glyphs[0], glyphs[1]).getbbox() is not None
    assert ImageChops.difference(glyphs[1], glyphs[2]).getbbox() is not None


def test_the_font_is_vendored_with_its_licence() -> None:
    folder = Path(__file__).resolve().parents[1] / "workers" / "fonts"
    assert (folder / "NanumSquareR.ttf").is_file()
    assert "SIL OPEN FONT LICENSE" in (folder / "OFL.txt").read_text()


def test_the_combined_picture_is_a_grid_with_sentences_and_an_ai_label() -> None:
    panels = [Image.new("RGB", (64, 48), (200, 30 * i, 40)) for i in range(4)]
    sentences = [f"{i}번째 장면의 아주 긴 문장이 여기에 있어요 " * 3 for i in range(4)]
    sheet = combine(panels, sentences)
    assert sheet.width > sheet.height / 2 and sheet.width == 2 * 320 + 3 * 16  # 2 x 2
    data = to_jpeg(sheet)
    assert is_marked_ai(data)
    reopened = Image.open(io.BytesIO(data))
    assert reopened.size == sheet.size
    caption = sheet.crop((16, 16 + 240 + 8, 16 + 320, 16 + 240 + 8 + 24)).convert("L")
    assert caption.getextrema()[0] < 128, "no sentence under the first panel"
    withheld = combine([panels[0], None], sentences[:2])
    assert withheld.width == 2 * 320 + 3 * 16


def test_wrap_keeps_within_width_and_marks_a_cut() -> None:
    font = hangul_font(18)
    lines = wrap("가나다라마바사아자차카타파하 " * 10, font, 120, 3)
    assert len(lines) == 3 and lines[-1].endswith("…")
    assert all(font.getlength(line) <= 120 for line in lines)


# --- Admission: quota and deadline --------------------------------------------------------------


def _ticket(
    user: str, queue_key: str, pictures: int, budget_s: float = 60.0, field: str = "book-test:tiny"
) -> admission.Ticket:
    request_id = uuid.uuid4().hex
    return admission.Ticket(
        messenger="kakao",
        user=user,
        text=f"book {request_id}",
        request_id=request_id,
        queue_key=queue_key,
        service_field=field,
        workers=1,
        budget_s=budget_s,
        slot_ttl_s=60,
        quota_day="20260101",
        job_key=RqJob.key_for(request_id),
        # rq's hash, as a HeldQueue writes it; the admission script pushes the job
        save_job=lambda pipe: pipe.hset(RqJob.key_for(request_id), "status", "queued"),
        pictures=pictures,
        min_pictures=min(2, pictures),
    )


def fresh() -> str:
    return f"q:{uuid.uuid4().hex}"  # an empty queue of its own


def _limits(quota: int = 0) -> admission.Limits:
    return admission.Limits(
        rate_window_s=60, rate_limit=0, daily_quota=quota, dedupe_ttl_s=1, default_service_s=1.0
    )


def test_a_book_counts_its_pictures_against_the_quota_atomically(redis_client: Any) -> None:
    r, user = redis_client, new_user()
    quota = admission.quota_key("kakao", user, "20260101")
    first = admission.admit(r, _ticket(user, "q:book", 4), _limits(quota=6))
    assert first.status == admission.Status.ADMITTED and int(r.get(quota)) == 4
    r.delete(keys.slot("kakao", user))
    refused = admission.admit(r, _ticket(user, "q:book", 4), _limits(quota=6))
    assert refused.status == admission.Status.QUOTA and int(r.get(quota)) == 4  # nothing counted
    r.delete(keys.slot("kakao", user))
    assert admission.admit(r, _ticket(user, "q:book", 2), _limits(quota=6)).status == (
        admission.Status.ADMITTED
    )
    assert int(r.get(quota)) == 6
    admission.refund(r, "kakao", user, "x", "20260101", pictures=4)
    assert int(r.get(quota)) == 2


def test_a_book_is_estimated_by_its_batch_size_shortened_or_refused(redis_client: Any) -> None:
    r, user = redis_client, new_user()
    field = f"book-test-{uuid.uuid4().hex[:6]}:tiny"
    r.hset(keys.SERVICE_TIMES, mapping={field: 2.0, admission.batch_field(field, 4): 3.0})
    admitted = admission.admit(r, _ticket(user, fresh(), 4, budget_s=10, field=field), _limits())
    assert admitted.status == admission.Status.ADMITTED and admitted.estimate_s == 3.0
    r.delete(keys.slot("kakao", user))
    # Never measured: 3 pictures are taken as drawn one by one (3 x 2 s), 2 as 4 s.
    r.hdel(keys.SERVICE_TIMES, admission.batch_field(field, 4))
    shorter = admission.admit(r, _ticket(user, fresh(), 4, budget_s=5, field=field), _limits())
    assert shorter.status == admission.Status.SHORTER and shorter.count == 2
    assert not r.exists(keys.slot("kakao", user))  # a refusal leaves no slot
    refused = admission.admit(r, _ticket(user, fresh(), 4, budget_s=3, field=field), _limits())
    assert refused.status == admission.Status.TOO_SLOW


# --- End to end: one batched call, one message ---------------------------------------------------


def test_a_blocked_sentence_refuses_the_whole_book_naming_it(make_app: Any, tmp_path: Path) -> None:
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("폭탄\n", encoding="utf-8")
    client = make_app(blocklist_path=str(blocklist), sync_wait_s=0.0).test_client()
    body = post_kakao(
        client,
        new_user(),
        "동화: 고양이가 놀아요. 폭탄이 터졌어요. 집에 갔어요.",
        budget_s=KAKAO_BUDGET_S,
    )
    assert "폭탄이 터졌어요" in text_of(body) and "carousel" not in str(body)


def test_a_four_scene_book_is_one_model_call_delivered_as_one_carousel(
    make_app: Any, callback_server: Any, stack: Any
) -> None:
    r = stack["redis"]
    client = make_app(sync_wait_s=0.0).test_client()
    user, token = new_user(), "book" + uuid.uuid4().hex[:8]
    story = (
        "동화: 노란 우비를 입은 여자아이가 웅덩이에서 뛰어요. 개구리를 만났어요. "
        "둘이 함께 집에 갔어요. 밤이 되었어요., 시드 77"
    )
    ack = post_kakao(client, user, story, callback_server.url(token), budget_s=KAKAO_BUDGET_S)
    assert ack.get("useCallback") is True, ack
    calls = callback_server.wait_for(token, timeout=90)
    assert calls, "no callback"
    body = calls[-1].body
    outputs = body["template"]["outputs"]
    carousel = outputs[0]["carousel"]
    assert carousel["type"] == "basicCard" and len(carousel["items"]) == 4
    assert [i["description"] for i in carousel["items"]][1] == "개구리를 만났어요."
    assert "시드 77" in text_of(body)
    # rq marks the job finished just after the task delivered it
    assert wait_until(lambda: _finished_books(r, user), timeout=30)
    results = _finished_books(r, user)
    assert results[-1]["model_calls"] == 1 and results[-1]["pictures"] == 4
    app_client = client
    for item in carousel["items"]:
        data = app_client.get(urlparse(item["thumbnail"]["imageUrl"]).path).data
        assert is_marked_ai(data)
    combined = carousel["items"][0]["buttons"][1]["webLinkUrl"]
    sheet = app_client.get(urlparse(combined).path).data
    assert is_marked_ai(sheet) and Image.open(io.BytesIO(sheet)).width > 600
    assert r.hget(keys.SERVICE_TIMES, "text2image:tiny:b4") is not None
    # `다시 그리기` draws the whole book again, with a new seed.
    token2 = token + "r"
    assert wait_until(lambda: not r.exists(keys.slot("kakao", user)), timeout=10)
    again = post_kakao(
        client, user, "다시 그리기", callback_server.url(token2), budget_s=KAKAO_BUDGET_S
    )
    assert again.get("useCallback") is True, again
    second = callback_server.wait_for(token2, timeout=90)[-1].body
    items = second["template"]["outputs"][0]["carousel"]["items"]
    assert len(items) == 4 and "시드 77" not in text_of(second)


def _finished_books(r: Any, user: str) -> list[dict[str, Any]]:
    from rq.registry import FinishedJobRegistry

    found = []
    registry = FinishedJobRegistry("text2image", connection=r, serializer=JSONSerializer)
    for job_id in registry.get_job_ids():
        job = RqJob.fetch(job_id, connection=r, serializer=JSONSerializer)
        if job.args and job.args[0].get("user") == user and job.args[0].get("task") == "storybook":
            found.append(job.return_value() or {})
    return found


def test_the_job_schema_is_backward_compatible() -> None:
    from bot.core.job import Job, Request

    old = Job("r", "kakao", "u", time.time() + 60, "tiny", Request(prompt="cat")).to_dict()
    del old["request"]["scenes"], old["request"]["book"]
    assert Job.from_dict(old).request.scenes == ()
    book = Job(
        "r", "kakao", "u", 0.0, "tiny", Request(scenes=("a", "b"), book="diary"), task="storybook"
    )
    again = Job.from_dict(book.to_dict())
    assert again == book and again.function == "workers.storybook.draw_book"
    assert dataclasses.asdict(again.request)["scenes"] == ("a", "b")


# --- The playground ----------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
BOOK_SCREENSHOT = Path("/tmp/playground-storybook.png")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")
def test_the_playground_shows_a_book_as_a_carousel(
    make_app: Any, stack: Any, web_port: int, tmp_path: Path
) -> None:
    import threading

    from playwright.sync_api import expect, sync_playwright
    from werkzeug.serving import make_server

    http = make_server("127.0.0.1", web_port, make_app(sync_wait_s=0.0), threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                str(tmp_path / "profile"),
                executable_path=str(CHROMIUM),
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run"],
                viewport={"width": 480, "height": 1100},
                locale="ko-KR",
            )
            try:
                page = browser.new_page()
                page.goto(stack["settings"]["public_url"] + "/playground")
                expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=15000)
                page.fill(
                    "#input",
                    "동화: 노란 우비를 입은 여자아이가 웅덩이에서 뛰어요. "
                    "개구리를 만났어요. 둘이 함께 집에 갔어요. 밤이 되었어요.",
                )
                page.click("#send")
                cards = page.locator(".carousel .bubble.card")
                expect(cards).to_have_count(4, timeout=90000)
                first = cards.first.locator("img")
                expect(first).to_have_js_property("complete", True)
                assert first.evaluate("img => img.naturalWidth") > 0
                expect(cards.nth(1)).to_contain_text("개구리를 만났어요.")
                expect(cards.first.locator("a")).to_have_count(2)
                page.screenshot(path=str(BOOK_SCREENSHOT), full_page=True)
            finally:
                browser.close()
    finally:
        http.shutdown()
        thread.join(timeout=10)


# --- Telegram and LINE, end to end -------------------------------------------------------------


def test_telegram_gets_one_album_then_the_combined_picture_with_the_keyboard(
    make_app: Any, messenger_apis: Any
) -> None:
    import json

    from tests.test_telegram import new_chat, post, update

    client = make_app().test_client()
    chat = new_chat()
    story = "그림일기: 아침에 공원에 갔다 친구를 만났다 같이 그네를 탔다"
    assert post(client, update(chat, text=story)).status_code == 200
    albums = messenger_apis.wait_for("telegram", "sendMediaGroup", timeout=90, chat_id=chat)
    assert len(albums) == 1
    sent = albums[0].params
    media = json.loads(sent["media"])
    captions = [m["caption"] for m in media]
    assert captions == ["아침에 공원에 갔다", "친구를 만났다", "같이 그네를 탔다"]
    for i, item in enumerate(media):  # uploaded as bytes, each AI-marked
        assert item["media"] == f"attach://scene{i}" and is_marked_ai(sent[f"scene{i}"])
    follow = messenger_apis.wait_for("telegram", "sendPhoto", timeout=30, chat_id=chat)
    assert is_marked_ai(follow[0].params["photo"])
    assert "그림일기 3장" in follow[0].params["caption"]
    keyboard = json.loads(follow[0].params["reply_markup"])["keyboard"]
    assert ["다시 그리기"] in [[b["text"] for b in row] for row in keyboard]


def test_line_gets_an_image_carousel_and_one_text(make_app: Any, messenger_apis: Any) -> None:
    from tests.test_line import REPLY, event, new_user
    from tests.test_line import post as post_line

    client = make_app().test_client()
    item = event(new_user(), {"type": "text", "text": "comic: A cat wakes up. It eats fish."})
    assert post_line(client, [item]).status_code == 200
    replies = messenger_apis.wait_for("line", REPLY, timeout=90, replyToken=item["replyToken"])
    messages = replies[0].params["messages"]
    assert [m["type"] for m in messages] == ["template", "text"]
    columns = messages[0]["template"]["columns"]
    assert len(columns) == 2 and all(c["imageUrl"].startswith("http") for c in columns)
    assert messages[0]["altText"] == "A cat wakes up. / It eats fish."
    assert "comic of 2 pictures" in messages[1]["text"]


def test_a_prompt_of_several_sentences_offers_a_storybook(
    make_app: Any, callback_server: Any
) -> None:
    client = make_app(sync_wait_s=0.0).test_client()
    story = "고양이가 잠을 자요. 꿈속에서 하늘을 날아요."
    token = "offer" + uuid.uuid4().hex[:8]
    post_kakao(client, new_user(), story, callback_server.url(token))
    body = callback_server.wait_for(token, timeout=90)[-1].body
    offers = [q for q in body["template"]["quickReplies"] if q["label"] == "동화로 그리기"]
    assert offers and offers[0]["messageText"] == "동화: " + story
    assert intents.decide(offers[0]["messageText"]).name == ActionName.STORYBOOK
    token = "single" + uuid.uuid4().hex[:8]
    post_kakao(client, new_user(), "하늘을 나는 고양이", callback_server.url(token))
    single = callback_server.wait_for(token, timeout=90)[-1].body
    assert "quickReplies" in single["template"] and "동화로 그리기" not in str(single)


@pytest.mark.parametrize("size", [(1216, 832), (832, 1216), (64, 64)])
def test_card_thumbnails_are_square_whole_and_at_most_1024_wide(size: tuple[int, int]) -> None:
    from workers.storybook import THUMB, square

    picture = Image.new("RGB", size, (10, 120, 30))
    thumb = square(picture)
    assert thumb.width == thumb.height <= THUMB
    assert thumb.width == min(THUMB, max(size))
    middle = thumb.getpixel((thumb.width // 2, thumb.height // 2))
    assert middle == (10, 120, 30)  # the picture is there, centred, not cropped away


def red_checker() -> Any:
    """A real image classifier, built from a config with its weights set by hand, that flags a
    picture when most of its patches are redder than blue: the tiny checkers flag all or none,
    and a book with only some pictures flagged needs one that tells pictures apart."""
    import torch

    from models.safety import SafetyChecker
    from models.tiny_aux import tiny_checker_network

    model, processor = tiny_checker_network()  # the tiny checkers' network, weights set below
    with torch.no_grad():
        for name, weight in model.named_parameters():
            weight.fill_(1.0) if "layernorm" in name and name.endswith("weight") else weight.zero_()
        patches = model.vit.embeddings.patch_embeddings.projection.weight
        patches[0, 0], patches[0, 2] = 1 / 64, -1 / 64  # feature 0: a patch's red minus blue
        attention = model.vit.layers[0].attention  # the class token: the patches' mean
        attention.v_proj.weight.copy_(torch.eye(16))
        attention.o_proj.weight.copy_(torch.eye(16))
        model.classifier.weight[1, 0] = 10.0  # nsfw when the patches are mostly red
    return SafetyChecker(model, processor, "cpu", "tests/red-checker")


def test_only_the_flagged_pictures_of_a_book_are_withheld(
    redis_client: Any, tmp_path: Path
) -> None:
    from bot.core.settings import Settings
    from workers.storybook import combine, screened_cards

    settings = Settings.from_env({}, mode="development", safety_policy="block")
    rt = in_process_runtime(settings, redis_client, tmp_path, {"safety": red_checker()})
    store = rt.store
    red, blue = (200, 40, 30), (30, 60, 200)
    images = [Image.new("RGB", (64, 64), c) for c in (blue, red, blue, red)]
    sentences = ["아침이에요.", "불이 났어요.", "비가 와요.", "노을이 져요."]
    cards, shown = screened_cards(rt, sentences, images, "ko")
    assert [p is None for p in shown] == [False, True, False, True]
    for card, withheld in zip(cards, [False, True, False, True], strict=True):
        assert (say("book_withheld", "ko") in card.text) is withheld
        assert bool(card.link) is not withheld  # a withheld picture cannot be opened
        assert card.url
    kept = store.get(cards[0].link.rsplit("/", 1)[-1].removesuffix(".jpg"))
    assert kept is not None and Image.open(io.BytesIO(kept)).getpixel((32, 32))[2] > 150
    sheet = combine(shown, sentences, "ko")  # the combined picture: grey where withheld
    assert sheet.width > 64 and sheet.height > 64


def test_flagged_pictures_are_withheld_and_their_cards_say_so(
    redis_client: Any, tmp_path: Path
) -> None:
    """In process, with the tiny model and a checker that flags every picture: each card is a
    grey placeholder without a link and says why; one model call drew all three scenes."""
    from bot.core.job import Job, Request
    from bot.core.settings import Settings
    from models.safety import SafetyChecker
    from models.text2image import TextToImage
    from models.tiny_aux import TINY_SAFETY_FLAG
    from workers.storybook import _book

    settings = Settings.from_env(
        {},
        mode="development",
        safety_policy="block",
        preset="tiny",
        max_batch=4,
        public_url="http://127.0.0.1:9",
    )
    models = {
        "text2image": TextToImage.load("tiny", "cpu"),
        "safety": SafetyChecker.load(TINY_SAFETY_FLAG, device="cpu"),
    }
    rt = in_process_runtime(settings, redis_client, tmp_path, models)
    scenes = ("A cat wakes up", "The cat eats fish", "The cat sleeps")
    job = Job(
        uuid.uuid4().hex,
        "kakao",
        new_user(),
        time.time() + 60,
        "tiny",
        Request(
            prompt=" ".join(scenes),
            seed=2**32 - 2,
            language="en",
            style="comic",
            book="comic",
            scenes=scenes,
        ),
        task="storybook",
        lang="en",
    )
    before = redis_client.llen(keys.MODEL_CALLS)
    reply, result = _book(rt, job)
    assert result["model_calls"] == 1 and result["withheld"] == 3
    assert redis_client.llen(keys.MODEL_CALLS) == before + 1
    cards = reply.parts[0]
    assert isinstance(cards, Cards) and cards.link == ""  # nothing to combine
    assert all(c.url and not c.link and "withheld" in c.text for c in cards.cards)
    text = reply.parts[1]
    assert isinstance(text, Text) and "3 picture(s) were withheld" in text.text
    assert "seed 4294967294" in text.text


def test_an_expired_book_offers_to_send_the_book_again() -> None:
    from bot.core.job import Job, Request
    from workers.delivery import expired_reply

    scenes = ("고양이가 자요.", "꿈을 꿔요.")
    job = Job(
        "r",
        "kakao",
        "u",
        0.0,
        "tiny",
        Request(prompt=" ".join(scenes), scenes=scenes, book="diary"),
        task="storybook",
    )
    message = expired_reply(job).quick_replies[0].message
    assert message == "그림일기: 고양이가 자요. 꿈을 꿔요."
    assert storybook.read(storybook.book_text(message) or storybook.BookText("", "")).scenes == (
        scenes
    )


def test_a_book_that_cannot_be_drawn_in_time_is_shortened_with_a_note(
    make_app: Any, callback_server: Any, stack: Any
) -> None:
    """Measured service times that fit two pictures, not four, within the callback's life:
    the book is drawn with its first two scenes, and the reply says two were left out."""
    r = stack["redis"]
    field = "text2image:tiny"
    saved = r.hgetall(keys.SERVICE_TIMES)
    client = make_app(sync_wait_s=0.0).test_client()
    user, token = new_user(), "short" + uuid.uuid4().hex[:8]
    try:
        r.hset(keys.SERVICE_TIMES, field, 20.0)  # never measured books: 80 s, 60 s, 40 s
        for n in (2, 3, 4):
            r.hdel(keys.SERVICE_TIMES, admission.batch_field(field, n))
        ack = post_kakao(
            client,
            user,
            "동화: 하나예요. 둘이에요. 셋이에요. 넷이에요.",
            callback_server.url(token),
            budget_s=KAKAO_BUDGET_S,
        )
        assert ack.get("useCallback") is True, ack
        body = callback_server.wait_for(token, timeout=90)[-1].body
        assert wait_until(lambda: not r.exists(keys.slot("kakao", user)), timeout=30)
    finally:
        r.delete(keys.SERVICE_TIMES)
        if saved:
            r.hset(keys.SERVICE_TIMES, mapping=saved)
    items = body["template"]["outputs"][0]["carousel"]["items"]
    assert [i["description"] for i in items] == ["하나예요.", "둘이에요."]
    assert "마지막 장면 2개를 뺐어요" in text_of(body)
