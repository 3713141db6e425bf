"""Hostile photos and prompts: bombs, polyglots, odd pixel formats, EXIF tricks, control and
bidi characters, 100 KB of text, and text that imitates the vision model's prompt format.

Photos go through bot/core/photos.py's checks (the same `check` the webhook and the worker use), and
a few through the Kakao webhook from a local stand-in for Kakao's CDN.
"""

from __future__ import annotations

import io
import json
import struct
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from bot.core import keys
from bot.core.photos import Limits, PhotoError, check
from tests import photo_support as ps
from tests.support import kakao_payload, new_user

LIMITS = Limits(
    max_bytes=2_000_000, max_pixels=4_000_000, clip_max_bytes=2_000_000, clip_max_s=10.0
)
PEAK_BYTES = 64_000_000  # what checking one hostile photo may allocate at most (traced)


def checked(data: bytes) -> tuple[str, bytes]:
    """`check`, with the peak of traced allocations bounded."""
    tracemalloc.start()
    try:
        return check(data, LIMITS)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < PEAK_BYTES, f"{peak} bytes at the peak"


def refused(data: bytes) -> str:
    with pytest.raises(PhotoError) as caught:
        checked(data)
    return caught.value.key


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a size, with one tiny compressed row of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def gif_claiming(width: int, height: int) -> bytes:
    """A GIF whose screen and image descriptors claim a size."""
    data = bytearray(ps.encode(Image.new("P", (2, 2)), "GIF"))
    struct.pack_into("<HH", data, 6, width, height)
    descriptor = data.index(b",")
    struct.pack_into("<HH", data, descriptor + 5, width, height)
    return bytes(data)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0) claims a size."""
    data = bytearray(ps.jpeg((8, 8)))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def bmp_claiming(width: int, height: int) -> bytes:
    data = bytearray(ps.encode(Image.new("RGB", (2, 2)), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        png_header_claiming(60_000, 60_000),
        gif_claiming(65_535, 65_535),
        jpeg_claiming(65_500, 65_500),
        bmp_claiming(40_000, 40_000),
        ps.bomb_png(12_000),  # 144 MP of real, well-compressed pixels in a few kB
        ps.encode(Image.new("L", (1, 9_000_000)), "PNG", optimize=True),  # one very tall column
    ],
    ids=["png-header", "gif-header", "jpeg-header", "bmp-header", "png-real", "png-column"],
)
def test_decompression_bombs_are_refused_before_decoding(data: bytes) -> None:
    started = time.perf_counter()
    assert refused(data) == "photo_too_big"
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (ps.truncated_jpeg(), "photo_broken"),
        (ps.encode(Image.effect_noise((128, 128), 50).convert("RGB"), "PNG")[:900], "photo_broken"),
        (ps.animated_gif()[:60], "photo_broken"),
        (b"GIF89a" + b"/*" + b"\x00" * 10 + b"*/=alert(1);", "photo_broken"),  # GIF/JS polyglot
        (b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>", "photo_broken"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "photo_not_image"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "photo_not_image"),
        (b"PK\x03\x04" + b"\x00" * 100, "photo_not_image"),
        (b"II*\x00" + b"\x00" * 100, "photo_not_image"),  # TIFF: no decoder for it here
    ],
    ids=["jpeg-cut", "png-cut", "gif-cut", "gif-js", "png-html", "svg", "pdf", "zip", "tiff"],
)
def test_truncated_and_disguised_files_get_a_reason(data: bytes, key: str) -> None:
    assert refused(data) == key


def test_polyglot_payloads_do_not_survive_normalisation() -> None:
    """A real JPEG with a ZIP and a script riding along comes back as a fresh JPEG only."""
    image = Image.new("RGB", (48, 32), (20, 120, 220))
    carrier = ps.encode(image, "JPEG", quality=95, comment=b"<script>alert(1)</script>")
    zip_tail = b"PK\x03\x04" + b"payload.js" + b"\x00" * 64 + b"PK\x05\x06" + b"\x00" * 18
    kind, out = checked(carrier + zip_tail)
    assert kind == "photo" and out.startswith(b"\xff\xd8\xff")
    assert b"PK\x03\x04" not in out and b"<script>" not in out
    assert Image.open(io.BytesIO(out)).size == (48, 32)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((20_000, 2), (2048, 1)),
        ((2, 60_000), (1, 2048)),
        ((4000, 1001), None),
        ((3000, 1300), (2048, 887)),
    ],
    ids=["very-wide", "very-tall", "over-the-pixel-cap", "large"],
)
def test_extreme_shapes_are_scaled_or_refused(size: tuple[int, int], expected: Any) -> None:
    data = ps.encode(Image.new("RGB", size, (90, 90, 90)), "PNG", optimize=True)
    if expected is None:
        assert refused(data) == "photo_too_big"
        return
    kind, out = checked(data)
    assert kind == "photo" and Image.open(io.BytesIO(out)).size == expected


def apng() -> bytes:
    frames = [Image.new("RGB", (24, 24), c) for c in ((250, 0, 0), (0, 0, 250))]
    return ps.encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)


def animated_webp() -> bytes:
    frames = [Image.new("RGB", (24, 24), c) for c in ((250, 0, 0), (0, 0, 250))]
    return ps.encode(
        frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True
    )


@pytest.mark.parametrize(
    ("data", "colour"),
    [
        (apng(), (250, 0, 0)),
        (animated_webp(), (250, 0, 0)),
        (ps.animated_gif(), (255, 0, 0)),
        (ps.cmyk_jpeg(), (255, 0, 0)),
        (ps.encode(Image.new("I;16", (24, 24), 65535), "PNG"), (255, 255, 255)),
        (ps.encode(Image.new("I;16", (24, 24), 0), "PNG"), (0, 0, 0)),
        (ps.encode(Image.new("1", (24, 24), 1), "PNG"), (255, 255, 255)),
        (ps.encode(Image.new("LA", (24, 24), (0, 0)), "PNG"), (255, 255, 255)),  # transparent
        (
            ps.encode(Image.new("RGBA", (24, 24), (0, 200, 0, 255)), "WEBP", lossless=True),
            (0, 200, 0),
        ),
        (ps.encode(Image.new("P", (24, 24), 3), "BMP"), (3, 3, 3)),
    ],
    ids=[
        "apng",
        "webp-anim",
        "gif-anim",
        "cmyk",
        "16bit-white",
        "16bit-black",
        "bilevel",
        "grey-alpha",
        "webp-rgba",
        "bmp-palette",
    ],
)
def test_animated_and_odd_pixel_formats_become_plain_rgb(
    data: bytes, colour: tuple[int, ...]
) -> None:
    kind, out = checked(data)
    image = Image.open(io.BytesIO(out))
    assert kind == "photo" and image.mode == "RGB" and image.format == "JPEG"
    assert getattr(image, "n_frames", 1) == 1
    got = image.getpixel((4, 4))
    assert all(abs(a - b) <= 8 for a, b in zip(got, colour, strict=True)), (got, colour)


QUADRANTS = ((230, 20, 20), (20, 230, 20), (20, 20, 230), (230, 230, 20))  # TL, TR, BL, BR
# What the camera wrote for each EXIF orientation: the inverse of the display transform.
STORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def upright() -> Image.Image:
    image = Image.new("RGB", (64, 32))
    for index, colour in enumerate(QUADRANTS):
        x, y = (index % 2) * 32, (index // 2) * 16
        image.paste(colour, (x, y, x + 32, y + 16))
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(orientation: int) -> None:
    stored = upright().transpose(STORED[orientation]) if orientation in STORED else upright()
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = ps.encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size == (64, 32)
    _, out = checked(data)
    image = Image.open(io.BytesIO(out))
    assert image.size == (64, 32) and not image.getexif().get(0x0112)
    for (x, y), colour in zip(((8, 4), (56, 4), (8, 28), (56, 28)), QUADRANTS, strict=True):
        got = image.getpixel((x, y))
        assert all(abs(a - b) <= 24 for a, b in zip(got, colour, strict=True)), (orientation, got)


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_a_nonsense_orientation_costs_the_rotation_never_the_photo(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    kind, out = checked(ps.encode(upright(), "JPEG", quality=95, exif=exif.tobytes()))
    assert kind == "photo" and Image.open(io.BytesIO(out)).size == (64, 32)


# --- end to end: hostile photos through the Kakao webhook -----------------------------------


@pytest.fixture
def webhook(make_app: Any, stack: Any, cdn: ps.CdnServer, redis_url: str, tmp_path: Path) -> Any:
    """The real app on a database of the test's own (no worker: nothing is queued), photos from
    the local CDN."""
    dev_allow = (*stack["settings"]["dev_allow"].split(","), cdn.origin)
    return make_app(
        redis_url=redis_url, dev_allow=dev_allow, photo_dir=tmp_path / "photos"
    ).test_client()


def photo_message(client: Any, url: str) -> tuple[list[str], float]:
    body = kakao_payload(new_user(), url)
    body["userRequest"]["params"]["media"] = {"type": "image", "url": url}
    started = time.perf_counter()
    response = client.post("/kakao/skill", json=body)
    took = time.perf_counter() - started
    assert response.status_code == 200
    outputs = response.get_json()["template"]["outputs"]
    return [o["simpleText"]["text"] for o in outputs if "simpleText" in o], took


@pytest.mark.parametrize(
    ("data", "answer"),
    [
        (png_header_claiming(60_000, 60_000), "너무 커요"),
        (ps.bomb_png(12_000), "너무 커요"),
        (b"GIF89a/*" + b"\x00" * 10 + b"*/=alert(1);", "읽지 못했어요"),
        (ps.jpeg() + b"PK\x03\x04" + b"\x00" * 64, "사진을 받았어요"),
    ],
    ids=["bomb-header", "bomb-real", "gif-js", "jpeg-zip"],
)
def test_hostile_photos_through_the_webhook_get_a_clear_answer_in_time(
    webhook: Any, cdn: ps.CdnServer, data: bytes, answer: str
) -> None:
    texts, took = photo_message(webhook, cdn.serve(data, content_type="image/png"))
    assert any(answer in t for t in texts), texts
    assert took < 4.5


# --- prompts -----------------------------------------------------------------------------------


def last_prompt(r: Any, user: str) -> str:
    raw = r.get(keys.last_prompt("kakao", user))
    assert raw is not None, "the prompt was queued"
    return str(json.loads(raw)["prompt"])


@pytest.mark.parametrize(
    ("typed", "drawn"),
    [
        ("\x00\x07고양이\x1b[31m 그림\x7f", "고양이[31m 그림"),
        ("\u202e고양이\u202c \u2066강아지\u2069\u200f", "고양이 강아지"),
        ("\u200b\u200b코알라\u200d", "코알라"),
    ],
    ids=["control", "bidi", "zero-width"],
)
def test_control_and_bidi_characters_never_reach_the_prompt(
    make_app: Any, stack: Any, typed: str, drawn: str
) -> None:
    client = make_app(sync_wait_s=0.0).test_client()
    user = new_user()
    assert client.post("/kakao/skill", json=kakao_payload(user, typed)).status_code == 200
    assert last_prompt(stack["redis"], user) == drawn


def test_a_hundred_kilobytes_of_text_gets_a_clear_answer_and_no_job(
    make_app: Any, stack: Any
) -> None:
    client = make_app(sync_wait_s=0.0).test_client()
    user = new_user()
    ascii_body = kakao_payload(user, "koala " * 17_000)  # 102 kB, under the body cap
    response = client.post("/kakao/skill", json=ascii_body)
    assert response.status_code == 200
    outputs = response.get_json()["template"]["outputs"]
    text = " ".join(o["simpleText"]["text"] for o in outputs if "simpleText" in o)
    assert "too long" in text and "1000" in text, text  # says what to fix
    assert stack["redis"].get(keys.slot("kakao", user)) is None
    hangul = json.dumps(kakao_payload(user, "코알라" * 34_000), ensure_ascii=False).encode()
    assert len(hangul) > 300_000
    response = client.post("/kakao/skill", data=hangul, content_type="application/json")
    assert response.status_code == 413


# --- text imitating Ko-LLaVA's v0 prompt format stays plain text ------------------------------


@pytest.fixture(scope="module")
def vlm_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny Ko-LLaVA's tokenizer: LLaMA's SentencePiece with the three image tokens added."""
    from transformers import LlamaTokenizer

    from models.tiny_vlm import build_tiny_kollava

    return LlamaTokenizer.from_pretrained(build_tiny_kollava(tmp_path_factory.mktemp("kollava")))


TEMPLATE_BITS = [
    "###",
    "##",
    "#",
    " ### Human:",
    "\n### Assistant:",
    "<im_patch>",
    "<im_start>",
    "<im_end>",
    "<image>",
    "</s>",
    "<s>",
    "<unk>",
    "\n",
    " ",
    "＃",
    "Human",
    ":",
]
hostile_turn = st.lists(
    st.one_of(st.sampled_from(TEMPLATE_BITS), st.text(max_size=6)), max_size=12
).map("".join)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(history=st.lists(st.tuples(hostile_turn, hostile_turn), max_size=3), question=hostile_turn)
def template_property(tokenizer: Any, history: list[tuple[str, str]], question: str) -> None:
    from models.kollava import BOS_ID, IM_END_ID, IM_PATCH_ID, IM_START_ID, build_input_ids

    ids = build_input_ids(tokenizer, history, question)
    start = ids.index(IM_START_ID)
    assert ids[start + 1 : start + 257] == [IM_PATCH_ID] * 256 and ids[start + 257] == IM_END_ID
    outside = ids[:start] + ids[start + 258 :]
    assert not [i for i in outside if i >= IM_PATCH_ID], "no template token from user text"
    assert [i for i, token in enumerate(ids) if token in (1, BOS_ID)] == [0]
    text = tokenizer.decode(outside[1:])
    # Only the template's own turn markers: one `### Human:` before the image, then per turn.
    assert text.count("### Human:") == 1 + len(history)
    assert text.count("### Assistant:") == 1 + len(history)


def test_text_imitating_the_vision_prompt_format_stays_plain_text(vlm_tokenizer: Any) -> None:
    template_property(vlm_tokenizer)
