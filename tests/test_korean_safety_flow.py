"""Korean prompts, drawing options and content safety, end to end.

Real Redis, the Kakao webhook, and real worker processes with the tiny SDXL, the tiny Marian
translator and the tiny safety checkers (loaded offline from the test run's Hugging Face cache).
The shared stack worker passes every picture; a private worker on its own Redis database is
forced to flag every picture, under the `block` policy (`blur` is checked in-process).
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import redis
from PIL import Image, ImageFilter, ImageStat
from rq.job import Job as RqJob

from bot.core import keys
from bot.core.blocklist import BlockList, BlockListError, log_refusal
from bot.core.drawing import with_notice
from bot.core.events import Ack, Outcome, Picture, Reply, Text
from models.tiny_aux import TINY_MARIAN, TINY_SAFETY_FLAG
from models.translation import has_hangul
from tests import photo_support as ps
from tests.support import (
    KAKAO_BUDGET_S,
    Workers,
    image_urls,
    in_process_runtime,
    jobs_of,
    kakao_payload,
    new_user,
    post_kakao,
    text_of,
    wait_until,
)
from workers.prompting import fit

DIRECT_WAIT = 4.0
NOTICE = "안내: 그림은 AI가 만들어요"


# --- Helpers ----------------------------------------------------------------------------------


def post(client: Any, user: str, text: str) -> dict[str, Any]:
    return post_kakao(client, user, text, budget_s=KAKAO_BUDGET_S)


def finish(client: Any, r: redis.Redis, user: str, body: dict[str, Any]) -> dict[str, Any]:
    """The drawing's answer: `body`, or the kept result through `결과 보기` when the shared
    2-core machine was too slow for a direct answer."""
    pull = [label for label in labels(body) if label in {"결과 보기", "result"}]
    if image_urls(body) or not pull:
        return body
    assert wait_until(lambda: r.llen(keys.kept("kakao", user)) >= 1, timeout=60)
    return post(client, user, pull[0])


def draw(client: Any, r: redis.Redis, user: str, text: str) -> dict[str, Any]:
    """Post a prompt and return the answer that carries its picture (or its refusal)."""
    return finish(client, r, user, post(client, user, text))


def labels(body: dict[str, Any]) -> list[str]:
    return [q["label"] for q in body["template"].get("quickReplies", [])]


def picture(client: Any, body: dict[str, Any]) -> Image.Image:
    urls = image_urls(body)
    assert len(urls) == 1, text_of(body)
    response = client.get(urlparse(urls[0]).path)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.data))


def line(body: dict[str, Any], prefix: str) -> str | None:
    """The text after `prefix` on the reply line that starts with it."""
    for row in text_of(body).splitlines():
        if row.startswith(prefix):
            return row[len(prefix) :]
    return None


def seed_of(body: dict[str, Any]) -> int:
    found = re.search(r"(?:시드|seed) (\d+)", text_of(body))
    assert found, text_of(body)
    return int(found.group(1))


def known_user(r: redis.Redis) -> str:
    """A fresh user already greeted, so answers carry no first-contact notice."""
    user = new_user()
    r.set(keys.seen_user("kakao", user), "1", ex=3600)
    return user


def last_job(r: redis.Redis, user: str, count: int) -> RqJob:
    """The user's latest job, once `count` of theirs have finished."""
    assert wait_until(lambda: len(jobs_of(r, user)) >= count), "the job did not finish"
    return jobs_of(r, user)[-1]


def nothing_queued(r: redis.Redis, user: str) -> bool:
    """No job was submitted for the user: no slot, no remembered prompt."""
    return (
        r.get(keys.slot("kakao", user)) is None and r.get(keys.last_prompt("kakao", user)) is None
    )


def edge_energy(image: Image.Image) -> float:
    return float(ImageStat.Stat(image.convert("L").filter(ImageFilter.FIND_EDGES)).mean[0])


# --- Korean prompts ----------------------------------------------------------------------------


def test_korean_prompt_is_translated_shown_cached_and_noticed(make_app: Any, stack: Any) -> None:
    r = stack["redis"]
    client = make_app(sync_wait_s=DIRECT_WAIT).test_client()
    prompt = "벚꽃 길을 걷는 코알라 " + new_user()[:6]  # unique, so the first draw misses the cache
    user = new_user()
    initial = post(client, user, prompt)
    assert NOTICE in text_of(initial), "a new user's first answer carries the notice"
    first = finish(client, r, user, initial)
    picture(client, first)
    assert f"AI가 그린 그림이에요: {prompt}" in text_of(first)
    english = line(first, "그린 영어 문장: ")
    assert english and not has_hangul(english), "the reply shows the English prompt drawn"
    found = labels(first)
    assert found[:2] == ["다시 그리기", "같은 시드로"] and found[-1] == "도움말"
    assert len(found) == 6 and all(label.endswith("로") for label in found[2:5]), found
    # The translation is cached for about 30 days, under a hash of the source text.
    key = keys.translation(TINY_MARIAN, hashlib.sha256(prompt.encode()).hexdigest())
    assert r.get(key) is not None
    assert 29 * 86400 < r.ttl(key) <= 30 * 86400
    assert last_job(r, user, 1).return_value()["cache_misses"] == 1
    # The same prompt from someone else comes from the cache; the notice was once per user.
    other = new_user()
    again = draw(client, r, other, prompt)
    assert line(again, "그린 영어 문장: ") == english
    result = last_job(r, other, 1).return_value()
    assert (result["cache_hits"], result["cache_misses"]) == (1, 0)
    later = post(client, user, "고양이")
    assert NOTICE not in text_of(later)
    finish(client, r, user, later)


def test_first_contact_notice_also_reaches_help_and_acknowledgements(make_app: Any) -> None:
    client = make_app(sync_wait_s=0.0).test_client()
    body = post(client, new_user(), "도움말")
    assert NOTICE in text_of(body)
    assert "문장과 그림은 1일, 사진은 1시간 뒤 지워요" in text_of(body), "how long things are kept"
    response = client.post(
        "/kakao/skill",
        json=kakao_payload(new_user(), "고양이", "https://bot-api.kakao.com/v1/bots/b/callback/t"),
    )
    assert NOTICE in response.get_json()["data"]["text"]


def test_english_and_untranslated_prompts_are_drawn_as_written(make_app: Any, stack: Any) -> None:
    r = stack["redis"]
    client = make_app(sync_wait_s=DIRECT_WAIT).test_client()
    user = known_user(r)
    body = draw(client, r, user, "a red fox in the snow")
    picture(client, body)
    assert "Drawn by AI: a red fox in the snow" in text_of(body)
    assert line(body, "Drawn from: ") is None, "nothing to show when nothing was changed"
    raw = draw(client, r, user, "!빨간 여우")
    picture(client, raw)
    assert line(raw, "그린 영어 문장: ") is None
    result = last_job(r, user, 2).return_value()
    assert result["cache_hits"] == result["cache_misses"] == 0
    untranslated = hashlib.sha256("빨간 여우".encode()).hexdigest()
    assert r.get(keys.translation(TINY_MARIAN, untranslated)) is None
    assert last_job(r, user, 2).args[0]["request"]["translate"] is False


# --- Options -----------------------------------------------------------------------------------


def test_shape_style_seed_and_leave_out_reach_the_picture(make_app: Any, stack: Any) -> None:
    r = stack["redis"]
    client = make_app(sync_wait_s=DIRECT_WAIT).test_client()
    user = known_user(r)
    message = "고양이, 가로, 수채화, 시드 1234, 제외: 사람"
    body = draw(client, r, user, message)
    assert picture(client, body).size == (72, 56), "landscape, scaled to the tiny 64x64 canvas"
    assert seed_of(body) == 1234
    drawn = line(body, "그린 영어 문장: ")
    assert drawn and drawn.endswith(
        "watercolor painting, soft washes of color, wet paper texture, delicate brushwork"
    )
    request = last_job(r, user, 1).args[0]["request"]
    assert request["style"] == "watercolour" and request["negative_prompt"] == "사람"
    assert (request["width"], request["height"], request["seed"]) == (72, 56, 1234)
    # The same options and seed draw the same picture for anyone.
    other = known_user(r)
    same = draw(client, r, other, message)
    assert picture(client, same).tobytes() == picture(client, body).tobytes()
    tall = draw(client, r, user, "고양이, 세로")
    assert picture(client, tall).size == (56, 72)


def test_same_seed_holds_for_the_next_prompt_only(make_app: Any, stack: Any) -> None:
    r = stack["redis"]
    client = make_app(sync_wait_s=DIRECT_WAIT).test_client()
    user = known_user(r)
    assert seed_of(draw(client, r, user, "고양이, 시드 77")) == 77
    pinned = post(client, user, "같은 시드로")
    assert "77" in text_of(pinned) and not image_urls(pinned)
    assert seed_of(draw(client, r, user, "강아지")) == 77
    assert seed_of(draw(client, r, user, "토끼")) != 77


def test_same_seed_without_a_last_prompt_explains(make_app: Any, stack: Any) -> None:
    client = make_app().test_client()
    body = post(client, known_user(stack["redis"]), "같은 시드로")
    assert "다시 그릴 문장이 없어요" in text_of(body)


def test_redraw_keeps_options_with_a_new_seed_and_a_style_tap_keeps_the_seed(
    make_app: Any, stack: Any
) -> None:
    r = stack["redis"]
    client = make_app(sync_wait_s=DIRECT_WAIT).test_client()
    user = known_user(r)
    draw(client, r, user, "고양이, 세로, 시드 5")
    redrawn = draw(client, r, user, "다시 그리기")
    assert picture(client, redrawn).size == (56, 72), "a redraw keeps the options"
    assert seed_of(redrawn) != 5, "a redraw has a new seed"
    tap = redrawn["template"]["quickReplies"][2]  # the first style suggestion
    assert tap["messageText"].endswith("로 다시 그리기")
    styled = draw(client, r, user, tap["messageText"])
    assert seed_of(styled) == seed_of(redrawn), "a style tap keeps the seed, to compare"
    assert picture(client, styled).size == (56, 72)
    request = last_job(r, user, 3).args[0]["request"]
    assert request["style"] and request["prompt"] == "고양이"


def test_long_prompt_is_cut_to_clip_and_the_reply_says_so(make_app: Any, stack: Any) -> None:
    client = make_app(sync_wait_s=DIRECT_WAIT).test_client()
    user = known_user(stack["redis"])
    prompt = "a small grey koala sitting on a red chair by the window " * 6
    body = draw(client, stack["redis"], user, prompt.strip() + ", watercolor")
    picture(client, body)
    assert "only the first part the model reads (77 tokens) was drawn" in text_of(body)
    drawn = line(body, "Drawn from: ")
    assert drawn is not None
    user_part, _, style_part = drawn.partition(", watercolor painting")
    assert style_part, "the style survives the cut"
    assert prompt.startswith(user_part) and len(user_part) < len(prompt.strip())


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("🐱🚀", "이모지만으로는"),
        ("수채화, 가로", "그릴 장면이 없어요"),
        ("고양이, 가로, 세로", "모양은 하나만"),
        ("고양이, 수채화, 유화", "스타일은 하나만"),
        ("고양이 시드 1 시드 2", "시드를 두 번"),
        ("고양이 시드 99999999999", "0부터 4294967295"),
        ("a cat --chaos 5", "--chaos"),
        ("가" * 1001, "1000자"),
        ("이 사진을 수채화로", "사진을 먼저 보내고"),
    ],
)
def test_bad_input_gets_a_helpful_answer_and_no_job(
    make_app: Any, stack: Any, text: str, answer: str
) -> None:
    r = stack["redis"]
    user = known_user(r)
    body = post(make_app().test_client(), user, text)
    assert answer in text_of(body)
    assert not image_urls(body)
    assert nothing_queued(r, user)


# --- Block list ------------------------------------------------------------------------------


@pytest.fixture
def blocklist_file(tmp_path: Path) -> Path:
    path = tmp_path / "blocked.txt"
    path.write_text("# 운영자 금지어\n금지어\nForbidden\n\n", encoding="utf-8")
    return path


def test_block_list_refuses_before_translation_and_queues_nothing(
    make_app: Any, stack: Any, blocklist_file: Path, capsys: Any
) -> None:
    r = stack["redis"]
    client = make_app(blocklist_path=blocklist_file).test_client()
    user = known_user(r)
    body = post(client, user, "금지어가 들어간 그림, 수채화")
    assert "그 내용은 그려 드릴 수 없어요" in text_of(body)
    assert nothing_queued(r, user)
    logged = [row for row in capsys.readouterr().err.splitlines() if " refused " in row]
    assert len(logged) == 1 and "reason=blocklist" in logged[0]
    assert "금지어가" not in logged[0], "the prompt stays out of the log (LOG_PROMPTS off)"
    english = post(client, known_user(r), "a FORBIDDEN garden")
    assert "Sorry, I can't draw that" in text_of(english)


def test_refusal_logs_keep_prompts_out_unless_allowed(caplog: Any) -> None:
    with caplog.at_level(logging.INFO):
        log_refusal("blocklist", "비밀 문장", log_prompts=False, term="x")
        log_refusal("blocklist", "보여도 되는 문장", log_prompts=True, term="x")
    hidden, shown = (rec.prompt for rec in caplog.records)  # type: ignore[attr-defined]
    assert "비밀" not in hidden and "5 chars" in hidden
    assert shown == "보여도 되는 문장"


@pytest.mark.parametrize(
    ("text", "term"),
    [
        ("a gory scene", None),
        ("GORE everywhere", "gore"),
        ("two gores", "gores"),
        ("Gregory at the beach", None),
        ("blood  bath", "blood bath"),
        ("마약을 든 사람", "마약"),
        ("마 약", "마약"),
        ("마\u200b약", "마약"),
        ("ｇｏｒｅ", "gore"),
        ("nude사진", "nude"),
        ("denuded hills", None),
    ],
)
def test_block_list_matching(text: str, term: str | None) -> None:
    blocked = BlockList(["Gore", "blood bath", "마약", "nude", "  "])
    assert blocked.match(text) == term


def test_block_list_file_errors_are_clear(tmp_path: Path) -> None:
    assert len(BlockList.load(None)) == 0
    with pytest.raises(BlockListError, match=r"missing\.txt"):
        BlockList.load(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(BlockListError):
        BlockList.load(tmp_path / "latin1.txt")


def test_fit_keeps_the_suffix_and_cuts_whole_words() -> None:
    def count(text: str) -> int:
        return len(text.split())

    assert fit("a b c", ", s t", count, 10) == ("a b c", False)
    assert fit("a b c d e f", ", s t", count, 5) == ("a b c", True)
    assert fit("averyveryverylongword", "", len, 5) == ("avery", True)


def test_notice_goes_first_or_into_the_first_text() -> None:
    note = "안내"
    short = with_notice(Outcome(reply=Reply((Text("a"),))), note).reply
    assert short is not None and [p.text for p in short.parts] == ["안내", "a"]  # type: ignore[union-attr]
    full = Reply((Picture("u", "alt"), Text("b"), Text("c")))
    merged = with_notice(Outcome(reply=full), note).reply
    assert merged is not None and len(merged.parts) == 3
    assert merged.parts[1] == Text("안내\nb")
    acked = with_notice(Outcome(ack=Ack("그리는 중")), note).ack
    assert acked is not None and acked.text == "그리는 중\n안내"


# --- Private workers that flag every picture --------------------------------------------------


def translated_term() -> tuple[str, str]:
    """A Korean prompt and a word of its tiny-model translation (the model is deterministic)."""
    from models.translation import Translator

    prompt = "벚꽃이 핀 서울의 거리"
    english = Translator.load("tiny", device="cpu").translate_prompt(prompt)
    words = sorted(set(re.findall(r"[a-z]{3,}", english.lower())), key=len, reverse=True)
    assert words, english
    return prompt, words[0]


@pytest.fixture(scope="module")
def strict(private_workers: Any, tmp_path_factory: Any) -> Iterator[dict[str, Any]]:
    """A worker with the always-flag checker under the `block` policy, on a database of its
    own."""
    folder = tmp_path_factory.mktemp("strict")
    prompt, term = translated_term()
    blocklist = folder / "blocked.txt"
    blocklist.write_text(term + "\n", encoding="utf-8")
    with private_workers(
        "block",
        safety_policy="block",
        safety_model=TINY_SAFETY_FLAG,
        blocklist_path=blocklist,
        media_dir=folder / "media-block",
    ) as block:
        yield {"prompt": prompt, "term": term, "block": block}


def strict_client(make_app: Any, worker: Workers) -> Any:
    return make_app(
        redis_url=worker.url,
        media_dir=Path(worker.settings["media_dir"]),
        sync_wait_s=DIRECT_WAIT,
    ).test_client()


def test_block_list_applies_after_translation_in_the_worker(
    make_app: Any, strict: dict[str, Any]
) -> None:
    worker = strict["block"]
    client = strict_client(make_app, worker)
    user = known_user(worker.redis)
    assert strict["term"] not in strict["prompt"]
    body = draw(client, worker.redis, user, strict["prompt"])
    assert "그 내용은 그려 드릴 수 없어요" in text_of(body)
    assert not image_urls(body)
    assert wait_until(lambda: "reason=blocklist_translated" in worker.log.read_text())
    assert strict["prompt"] not in worker.log.read_text(), "prompts stay out of the log"


def test_flagged_picture_is_never_published_under_block(
    make_app: Any, strict: dict[str, Any]
) -> None:
    worker = strict["block"]
    client = strict_client(make_app, worker)
    media = Path(worker.settings["media_dir"])
    before = set(media.glob("*")) if media.exists() else set()
    body = draw(client, worker.redis, known_user(worker.redis), "a quiet garden")
    assert "didn't pass the safety check, so I can't show it" in text_of(body)
    assert not image_urls(body)
    after = set(media.glob("*")) if media.exists() else set()
    assert after == before, "nothing is stored under a public URL"
    assert "reason=image_flagged" in worker.log.read_text()


def test_flagged_picture_is_blurred_under_blur_and_passed_under_allow(tmp_path: Path) -> None:
    from bot.core.settings import Settings
    from models.safety import SafetyChecker
    from workers.safety import screen

    settings = Settings.from_env({}, mode="development", safety_policy="blur")
    client = redis.Redis()  # never contacted by screen()
    checker = SafetyChecker.load(TINY_SAFETY_FLAG, device="cpu")
    rt = in_process_runtime(settings, client, tmp_path, {"safety": checker})
    noise = Image.effect_noise((64, 64), 80).convert("RGB")
    blurred = screen(rt, noise, "a quiet garden")
    assert blurred.note == "image_blurred" and blurred.label == "nsfw"
    assert blurred.image.size == noise.size
    assert edge_energy(blurred.image) < edge_energy(noise) / 3
    rt.settings = settings.with_(safety_policy="block")
    assert screen(rt, noise, "a quiet garden").image is None
    rt.settings = settings.with_(safety_policy="allow")
    assert screen(rt, noise, "a quiet garden").image is noise
    rt.settings, rt.models = settings.with_(safety_policy="block"), {}
    with pytest.raises(RuntimeError, match="needs a loaded checker"):
        screen(rt, noise, "a quiet garden")


# --- Drawing from a photo -----------------------------------------------------------------------


def test_photo_is_redrawn_in_a_style_with_the_strength_in_words(
    make_app: Any, stack: Any, cdn: ps.CdnServer
) -> None:
    r = stack["redis"]
    dev_allow = (*stack["settings"]["dev_allow"].split(","), cdn.origin)
    client = make_app(sync_wait_s=DIRECT_WAIT, dev_allow=dev_allow).test_client()
    user = known_user(r)
    payload = kakao_payload(user, url := cdn.serve(ps.jpeg((80, 60)), once=True))
    payload["userRequest"]["params"]["media"] = {"type": "image", "url": url}
    payload["flow"]["trigger"]["type"] = "IMAGE_UPLOAD"
    assert "사진을 받았어요" in text_of(client.post("/kakao/skill", json=payload).get_json())
    body = draw(client, r, user, "이 사진을 조금 수채화로")
    assert picture(client, body).size == (64, 64), "redrawn on the preset's canvas"
    assert "watercolor painting" in (line(body, "그린 영어 문장: ") or "")
    request = last_job(r, user, 1).args[0]["request"]
    from bot.core.conversation import PhotoSession

    photos = PhotoSession.from_json(r.get(keys.photo_session("kakao", user))).photos
    assert request["source_image"] == photos[0] and request["strength"] == 0.35
    again = draw(client, r, user, "다시 그리기")
    picture(client, again)
    assert last_job(r, user, 2).args[0]["request"]["source_image"] == photos[0]
