"""Photos and clips in: fetched through the URL guard from a local stand-in for Kakao's CDN,
checked, normalised and kept private; Kakao's photo payloads; the photo/question rules; the
photo session in a real Redis; answers shaped for a chat. No worker needed."""

from __future__ import annotations

import io
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.core import intents, keys, video
from bot.core.conversation import Conversations
from bot.core.photos import Limits, PhotoStore, check, receive, sniff
from bot.core.settings import Settings
from bot.core.urlguard import guard_from_settings
from bot.messengers import kakao
from tests import photo_support as ps
from workers.vision import plain_text, split_bubbles

LIMITS = Limits(max_bytes=2_000_000, max_pixels=4_000_000, clip_max_bytes=5_000_000, clip_max_s=10)
SAMPLES = Path(__file__).resolve().parent / "data" / "kakao"


@pytest.fixture
def guard(cdn: ps.CdnServer) -> Any:
    settings = Settings.from_env(
        {},
        mode="development",
        dev_allow=(cdn.origin,),
        system_dns=False,
        resolve={"talk.kakaocdn.net": "203.0.113.7"},
        fetch_timeout_s=2.0,
    )
    return guard_from_settings(settings)


@pytest.fixture
def store(tmp_path: Path) -> PhotoStore:
    return PhotoStore(tmp_path / "photos", ttl_s=3600)


def stored_image(store: PhotoStore, photo_id: str) -> Image.Image:
    found = store.read(photo_id)
    assert found is not None and found[0] == "photo"
    image = Image.open(io.BytesIO(found[1]))
    assert image.format == "JPEG"
    return image


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 6) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


# 1. Type from the bytes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (ps.jpeg(), "JPEG"),
        (ps.palette_png(), "PNG"),
        (ps.animated_gif(), "GIF"),
        (ps.webp(), "WEBP"),
        (ps.HEIF_HEAD, "HEIF"),
        (ps.clip(0.5), "CLIP"),
        (b"<html><body>Not found</body></html>", ""),
        (b"%PDF-1.7\n", ""),
        (b"", ""),
    ],
)
def test_type_is_sniffed_from_the_bytes(data: bytes, expected: str) -> None:
    assert sniff(data) == expected


# 2. Fetch, check, normalise, store -------------------------------------------------------------


def test_a_photo_is_fetched_normalised_and_stored_privately(
    cdn: ps.CdnServer, guard: Any, store: PhotoStore
) -> None:
    url = cdn.serve(ps.rotated_jpeg((40, 20)))
    got = receive(guard, store, [url], LIMITS, time.time() + 3, hand_over=True)
    assert got.errors == () and got.pending == () and not got.video
    (photo_id,) = got.ids
    image = stored_image(store, photo_id)
    assert image.size == (20, 40), "the EXIF rotation must be applied"
    assert not image.getexif(), "the original's metadata (GPS included) must not be kept"
    assert close(image.getpixel((10, 20)), (30, 160, 60))
    path = store.folder / f"{photo_id}.jpg"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.folder.stat().st_mode) == 0o700
    assert (
        len(photo_id) == 32
        and photo_id != receive(guard, store, [url], LIMITS, time.time() + 3, hand_over=True).ids[0]
    )


@pytest.mark.parametrize(
    ("data", "left", "right"),
    [
        (ps.cmyk_jpeg(), (255, 0, 0), (255, 0, 0)),
        (ps.palette_png(), (255, 255, 255), (0, 0, 255)),  # transparency onto white
        (ps.animated_gif(), (255, 0, 0), (255, 0, 0)),  # the first frame, not the blue ones
        (ps.grey16_png(30000), (116, 116, 116), (116, 116, 116)),  # 16 bits scaled, not clipped
        (ps.webp(), (10, 200, 10), (10, 200, 10)),
    ],
    ids=["cmyk", "palette", "animated-gif", "16-bit", "webp"],
)
def test_every_kind_of_photo_becomes_rgb(
    cdn: ps.CdnServer,
    guard: Any,
    store: PhotoStore,
    data: bytes,
    left: tuple[int, ...],
    right: tuple[int, ...],
) -> None:
    got = receive(guard, store, [cdn.serve(data)], LIMITS, time.time() + 3, hand_over=False)
    image = stored_image(store, got.ids[0])
    assert image.mode == "RGB"
    assert close(image.getpixel((1, 16)), left)
    assert close(image.getpixel((image.width - 2, 16)), right)


def test_large_photos_are_scaled_down(store: PhotoStore) -> None:
    kind, data = check(ps.jpeg((3000, 1000)), LIMITS)
    assert kind == "photo"
    assert Image.open(io.BytesIO(data)).size == (2048, 683)


@pytest.mark.parametrize(
    ("data", "how", "key"),
    [
        (b"<html>a login page</html>", {"content_type": "text/html"}, "photo_not_image"),
        (ps.truncated_jpeg(), {}, "photo_broken"),
        (ps.bomb_png(), {"content_type": "image/png"}, "photo_too_big"),  # 144 MP in 17 kB
        (b"\xff\xd8\xff" + b"\x00" * 2_100_000, {}, "photo_too_big"),  # over the byte cap
        (ps.HEIF_HEAD, {}, "photo_format"),
        (b"gone", {"status": 404}, "photo_expired"),
        (b"denied", {"status": 403}, "photo_expired"),
        (b"", {"status": 302, "location": "http://169.254.169.254/"}, "photo_host"),
        (b"oops", {"status": 500}, "photo_unreachable"),
        (ps.clip(seconds=12), {}, "clip_too_long"),
        (b"\x00\x00\x00\x18ftypisom" + b"\x00" * 200, {}, "clip_broken"),
    ],
    ids=[
        "not-an-image",
        "truncated",
        "pixel-bomb",
        "over-byte-cap",
        "heif",
        "404",
        "403",
        "redirect",
        "server-error",
        "clip-too-long",
        "clip-broken",
    ],
)
def test_bad_photos_are_refused_with_a_reason(
    cdn: ps.CdnServer, guard: Any, store: PhotoStore, data: bytes, how: dict[str, Any], key: str
) -> None:
    started = time.time()
    got = receive(guard, store, [cdn.serve(data, **how)], LIMITS, time.time() + 3, hand_over=False)
    assert got.ids == ()
    assert [e.key for e in got.errors] == [key]
    assert time.time() - started < 2.5
    assert not list(store.folder.glob("*")) if store.folder.exists() else True


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/photo.jpg",  # not a Kakao CDN host
        "http://127.0.0.1:9/photo.jpg",  # loopback not on the development list
        "https://talk.kakaocdn.net:8443/photo.jpg",  # non-default port
        "file:///etc/passwd",
    ],
)
def test_hosts_not_allowed_are_refused_before_any_connection(
    guard: Any, store: PhotoStore, url: str
) -> None:
    got = receive(guard, store, [url], LIMITS, time.time() + 3, hand_over=True)
    assert [e.key for e in got.errors] == ["photo_host"]
    assert got.pending == ()


def test_a_slow_fetch_is_handed_over_not_dropped(
    cdn: ps.CdnServer, guard: Any, store: PhotoStore
) -> None:
    fast, slow = cdn.serve(ps.jpeg()), cdn.serve(ps.jpeg(), delay_s=1.5)
    started = time.time()
    got = receive(guard, store, [fast, slow], LIMITS, time.time() + 0.6, hand_over=True)
    assert time.time() - started < 1.4, "the webhook must keep inside its budget"
    assert len(got.ids) == 1 and got.pending == (slow,) and got.errors == ()
    # The worker, with time, fetches what was handed over.
    later = receive(guard, store, got.pending, LIMITS, time.time() + 3, hand_over=False)
    assert len(later.ids) == 1


def test_a_photo_too_large_to_decode_in_time_is_handed_over(
    cdn: ps.CdnServer, guard: Any, store: PhotoStore
) -> None:
    url = cdn.serve(ps.jpeg((2000, 2000)))  # 4 MP: about 0.16 s to decode by the estimate
    started = time.time()
    got = receive(guard, store, [url], LIMITS, time.time() + 0.1, hand_over=True)
    assert got.pending == (url,) and got.ids == ()
    assert time.time() - started < 0.3
    later = receive(guard, store, [url], LIMITS, time.time() + 3, hand_over=False)
    assert len(later.ids) == 1, "the worker decodes it whatever it costs"


def test_photos_win_over_clips_and_one_clip_is_kept(
    cdn: ps.CdnServer, guard: Any, store: PhotoStore
) -> None:
    urls = [cdn.serve(ps.clip(0.5)), cdn.serve(ps.jpeg()), cdn.serve(ps.clip(0.5))]
    got = receive(guard, store, urls, LIMITS, time.time() + 5, hand_over=False)
    assert len(got.ids) == 1 and not got.video
    assert len(list(store.folder.iterdir())) == 1, "the clips not kept are deleted"
    clips = receive(guard, store, urls[::2], LIMITS, time.time() + 5, hand_over=False)
    assert len(clips.ids) == 1 and clips.video and store.kind(clips.ids[0]) == "clip"


def test_store_forgets_expired_photos_and_deletes_by_id(tmp_path: Path) -> None:
    store = PhotoStore(tmp_path / "p", ttl_s=60)
    old, new = store.put(b"old", "photo"), store.put(b"new", "clip")
    past = time.time() - 120
    os.utime(store.folder / f"{old}.jpg", (past, past))
    assert store.read(old) is None, "a photo past its keeping time is never handed out"
    assert store.read(new) == ("clip", b"new")
    assert store.purge() == 1
    assert store.delete([new, "../../etc/passwd", "x" * 32]) == 1
    assert list(store.folder.iterdir()) == []


# 3. Clips --------------------------------------------------------------------------------------


def test_clip_frames_are_sampled_evenly() -> None:
    frames = video.sample_frames(ps.clip(seconds=2.0, fps=10), 8)
    reds = [frame.getpixel((8, 8))[0] for frame in frames]
    assert len(frames) == 8
    assert reds == sorted(reds) and reds[0] < 40 and reds[-1] > 215


def test_clip_caps_come_from_the_headers() -> None:
    data = ps.clip(seconds=3.0, size=(320, 240))
    assert video.probe(data, max_s=5, max_pixels=10**6).duration_s == pytest.approx(3.0, abs=0.2)
    with pytest.raises(video.ClipError) as too_long:
        video.probe(data, max_s=2, max_pixels=10**6)
    assert too_long.value.key == "clip_too_long" and too_long.value.values == {"s": 2}
    with pytest.raises(video.ClipError) as too_big:
        video.probe(data, max_s=5, max_pixels=320 * 200)
    assert too_big.value.key == "clip_too_big"


# 4. Kakao's photo payloads ---------------------------------------------------------------------


def parse_sample(name: str, **change: Any) -> tuple[Any, kakao.Photos]:
    body = json.loads((SAMPLES / name).read_text())
    for path, value in change.items():
        node = body
        *parents, last = path.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    return kakao.parse(json.dumps(body).encode(), time.time(), "rid")


def test_photo_dropped_into_the_chat() -> None:
    event, photos = parse_sample("photo_upload.json")
    assert event.text == "" and event.trigger == "IMAGE_UPLOAD"
    assert photos.urls == (event.image_urls[0],)
    assert photos.urls[0].startswith("https://talk.kakaocdn.net/") and not photos.refused


def plugin(urls: list[str], separator: str, agreement: str = "Y") -> str:
    return json.dumps(
        {
            "privacyAgreement": agreement,
            "imageQuantity": str(len(urls)),
            "secureUrls": f"List({separator.join(urls)})",
            "expire": "2026-12-31T23:59:59+0000",
        }
    )


@pytest.mark.parametrize("separator", [", ", ","])
def test_secure_image_plugin_lists_with_either_separator(separator: str) -> None:
    urls = [
        f"http://secure.kakaocdn.net/dna/a/{i}/img_org.jpg?credential=c,d&x=1" for i in range(3)
    ]
    event, photos = parse_sample(
        "secure_image_plugin.json", action__params={"photo": plugin(urls, separator)}
    )
    assert photos.urls == tuple(urls), "a comma inside a URL must not split it"
    assert event.text == "", "the block's trigger phrase is no caption"


def test_secure_image_plugin_caps_at_ten_and_reads_detail_params() -> None:
    urls = [f"http://secure.kakaocdn.net/dna/{i}.jpg" for i in range(12)]
    detail = {"photo": {"origin": f"List({', '.join(urls)})", "value": plugin([], ", ")}}
    _, photos = parse_sample(
        "secure_image_plugin.json", action__params={}, action__detailParams=detail
    )
    assert photos.urls == tuple(urls[:10])


def test_secure_image_plugin_without_agreement_is_refused() -> None:
    urls = ["http://secure.kakaocdn.net/dna/1.jpg"]
    _, photos = parse_sample(
        "secure_image_plugin.json", action__params={"photo": plugin(urls, ", ", "N")}
    )
    assert photos.refused and photos.urls == ()


# 5. The photo and question rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "without_photo", "with_photo"),
    [
        ("우주를 떠다니는 고양이", "draw", "ask"),
        ("a koala surfing", "draw", "ask"),
        ("어디론가 떠나는 기차", "draw", "ask"),
        ("사진처럼 사실적인 고양이", "draw", "draw"),  # `사진처럼` names a picture
        ("색깔은", "photo_hint", "ask"),  # a follow-up about the photo
        ("이 사진에 있는 동물은 뭐야?", "photo_hint", "ask"),
        ("이 사진을 자세히 설명해 줘", "photo_hint", "ask"),
        ("이 사진 속 글자를 읽어 줘", "photo_hint", "ask"),
        ("몇 마리야", "photo_hint", "ask"),
        ("여기가 어디인가요", "photo_hint", "ask"),
        ("What is in this photo?", "photo_hint", "ask"),
        ("describe it", "photo_hint", "ask"),
        ("귀여운 고양이 그려 줘", "draw", "draw"),
        ("새 사진", "new_photo", "new_photo"),
        ("기록 삭제", "forget", "forget"),
        ("도움말", "help", "help"),
        ("?", "help", "help"),
    ],
)
def test_photo_and_question_rules(text: str, without_photo: str, with_photo: str) -> None:
    assert intents.decide(text).name == without_photo
    assert intents.decide(text, has_photo=True).name == with_photo


# 6. The photo session --------------------------------------------------------------------------


def test_photo_session_keeps_recent_turns_and_expires_with_its_photos(
    redis_client: Any, store: PhotoStore
) -> None:
    chats = Conversations(redis_client, store, ttl_s=600, max_turns=3)
    first = (store.put(b"a", "photo"),)
    chats.start("kakao", "u-session", first, video=False)
    ttl = redis_client.ttl(keys.photo_session("kakao", "u-session"))
    assert 590 <= ttl <= 602
    for n in range(5):
        assert chats.add_turn("kakao", "u-session", first, f"q{n}", f"a{n}")
    session = chats.current("kakao", "u-session")
    assert session is not None and session.turns == (("q2", "a2"), ("q3", "a3"), ("q4", "a4"))
    assert redis_client.ttl(keys.photo_session("kakao", "u-session")) <= ttl, "never extended"
    # A new photo starts over and deletes the old one; a late turn for the old photo is dropped.
    second = (store.put(b"b", "photo"),)
    chats.start("kakao", "u-session", second, video=False)
    assert store.kind(first[0]) is None
    assert not chats.add_turn("kakao", "u-session", first, "late", "answer")
    assert chats.current("kakao", "u-session").turns == ()  # type: ignore[union-attr]
    assert chats.clear("kakao", "u-session") == 1 and chats.current("kakao", "u-session") is None


# 7. Answers shaped for a chat ------------------------------------------------------------------


def test_markdown_is_stripped() -> None:
    raw = (
        "## 요약\n**고양이**가 *두 마리* 있어요.\n\n- 하나는 `검은색`\n* 하나는 [흰색](http://x.y)\n"
        "```\ncode\n```\n---\n> 인용"
    )
    assert plain_text(raw) == (
        "요약\n고양이가 두 마리 있어요.\n\n• 하나는 검은색\n• 하나는 흰색 (http://x.y)\n\ncode\n\n인용"
    )


def test_answers_split_over_at_most_three_bubbles() -> None:
    sentence = "이 사진에는 바닷가를 걷는 코알라가 있어요. "
    long = sentence * 200
    bubbles = split_bubbles(long)
    assert len(bubbles) == 3 and all(len(b) <= 1000 for b in bubbles)
    assert bubbles[0].endswith("있어요."), "a bubble ends at a sentence"
    assert bubbles[-1].endswith("…")
    assert split_bubbles("짧은 답") == ["짧은 답"]
    assert split_bubbles("x" * 2500) == ["x" * 1000, "x" * 1000, "x" * 500]


def test_photo_settings_are_checked() -> None:
    from bot.core.settings import SettingsError

    with pytest.raises(SettingsError, match="VLM_PRESET"):
        Settings.from_env({}, mode="production", secret="s" * 32, vlm_preset="tiny-kollava")
    with pytest.raises(SettingsError, match="PHOTO_FETCH_BUDGET_S"):
        Settings.from_env({}, mode="development", photo_fetch_budget_s=5.0)
    env = {"KOALATALK_PHOTO_DIR": "/srv/kt/photos", "KOALATALK_PHOTO_TTL_S": "1800"}
    settings = Settings.from_env(env, mode="development")
    assert settings.photo_path == Path("/srv/kt/photos") and settings.photo_ttl_s == 1800
    assert Settings.from_env({}, mode="development").photo_path == Path("data/photos")
