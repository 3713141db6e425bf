"""Translation and safety checking, through tiny real models loaded offline from the HF cache."""

from __future__ import annotations

import pytest
from PIL import Image, ImageChops, ImageStat

from models.common import ModelUnavailable
from models.hfcache import place
from models.presets import TRANSLATION
from models.safety import DEFAULT_SAFETY_MODEL, SafetyChecker, Verdict, blur
from models.tiny_aux import (
    TINY_SAFETY_FLAG,
    TINY_SAFETY_PASS,
    ensure_tiny_checker,
    ensure_tiny_marian,
)
from models.translation import Translator, has_hangul, split_segments

REAL_MARIAN = TRANSLATION["opus-mt-tc-big-ko-en"].repo_id


@pytest.fixture(scope="session")
def translator() -> Translator:
    """The tiny Marian placed under the real default id and loaded by its preset name."""
    place(ensure_tiny_marian(), REAL_MARIAN)
    return Translator.load("opus-mt-tc-big-ko-en", device="cpu")


@pytest.fixture(scope="session")
def flag_checker() -> SafetyChecker:
    return SafetyChecker.load(TINY_SAFETY_FLAG, device="cpu")


@pytest.fixture(scope="session")
def pass_checker() -> SafetyChecker:
    return SafetyChecker.load(TINY_SAFETY_PASS, device="cpu")


def sample_images() -> list[Image.Image]:
    """Pictures of several sizes and modes, as users and the generator produce them."""
    return [
        Image.new("RGB", (64, 48), "red"),
        Image.new("L", (10, 30), 128),
        Image.new("RGBA", (33, 33), (0, 0, 255, 100)),
        Image.new("RGB", (40, 40), "green").convert("P"),
    ]


def checkerboard(size: int = 64, square: int = 4) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    for x in range(0, size, square):
        for y in range(0, size, square):
            if (x // square + y // square) % 2:
                image.paste((0, 0, 0), (x, y, x + square, y + square))
    return image


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("고양이", True),
        ("a cat in cyberpunk style", False),
        ("", False),
        ("ㅋㅋㅋ", True),  # compatibility jamo, as typed in chats
        ("\u1100\u1161", True),  # decomposed (NFD) 가
        ("cat 한 마리", True),
        ("猫, ねこ, 123 ☕", False),
    ],
)
def test_has_hangul(text: str, expected: bool) -> None:
    assert has_hangul(text) is expected


def test_split_segments_round_trips() -> None:
    text = " 고양이 ,cyberpunk style，수채화\n\nneon; 밤 "
    parts = split_segments(text)
    assert "".join(parts) == text
    assert parts[0::2] == [" 고양이 ", "cyberpunk style", "수채화", "neon", " 밤 "]


def test_preset_loads_real_id_offline(translator: Translator) -> None:
    assert translator.repo_id == REAL_MARIAN
    assert translator.name == "opus-mt-tc-big-ko-en"
    assert translator.device == "cpu"
    assert str(translator.model.dtype) == "torch.float32"
    assert translator.load_seconds > 0


def test_translate_returns_english_strings(translator: Translator) -> None:
    texts = ["고양이 한 마리", "수채화 스타일의 풍경화", "밤하늘"]
    out = translator.translate(texts)
    assert len(out) == len(texts)
    for english in out:
        assert isinstance(english, str)
        assert english
        assert not has_hangul(english)  # the decoder has an English-only vocabulary
    assert translator.translate(texts) == out  # deterministic
    assert translator.translate([]) == []


def test_translate_bounds_length(translator: Translator) -> None:
    short = translator.translate(["고양이"], max_new_tokens=3)[0]
    assert len(translator.tokenizer(text_target=short)["input_ids"]) <= 4  # 3 pieces and </s>
    # Far past the model's positions: capped instead of crashing.
    assert isinstance(translator.translate(["고양이"], max_new_tokens=10_000)[0], str)


def test_raw_repo_id_loads_same_model(translator: Translator) -> None:
    raw = Translator.load(REAL_MARIAN, device="cpu")
    assert raw.repo_id == REAL_MARIAN
    assert raw.translate(["고양이"]) == translator.translate(["고양이"])


def test_tiny_preset_builds_and_loads() -> None:
    tiny = Translator.load("tiny", device="cpu")
    assert tiny.repo_id == TRANSLATION["tiny"].repo_id
    assert tiny.translate(["강아지"])[0]


def test_translate_prompt_keeps_english_segments(translator: Translator) -> None:
    out = translator.translate_prompt("고양이, cyberpunk style, 수채화")
    first, middle, last = out.split(", ")
    assert middle == "cyberpunk style"
    assert first and last
    assert not has_hangul(out)


def test_translate_prompt_keeps_layout(translator: Translator) -> None:
    out = translator.translate_prompt("masterpiece,  4k\n고양이\nneon lights ")
    assert out.startswith("masterpiece,  4k\n")
    assert out.endswith("\nneon lights ")
    assert not has_hangul(out)
    english = "a cat,  neon\n\nlights "
    assert translator.translate_prompt(english) == english


def test_missing_translation_model_names_repo() -> None:
    with pytest.raises(ModelUnavailable, match="koalatalk/no-such-marian"):
        Translator.load("koalatalk/no-such-marian", device="cpu")


def test_flag_checker_flags_every_image(flag_checker: SafetyChecker) -> None:
    verdicts = flag_checker.check(sample_images())
    assert len(verdicts) == 4
    for verdict in verdicts:
        assert verdict.flagged
        assert verdict.label == "nsfw"
        assert verdict.score > 0.99
    assert flag_checker.check([]) == []


def test_pass_checker_passes_every_image(pass_checker: SafetyChecker) -> None:
    for verdict in pass_checker.check(sample_images()):
        assert verdict == Verdict(False, "normal", verdict.score)
        assert verdict.score > 0.99


def test_threshold_and_labels_are_configurable() -> None:
    # The pass checker gives nsfw a tiny but non-zero probability: above a zero threshold.
    strict = SafetyChecker.load(TINY_SAFETY_PASS, device="cpu", threshold=0.0)
    assert strict.check([checkerboard()])[0].flagged
    upper = SafetyChecker.load(TINY_SAFETY_FLAG, device="cpu", unsafe_labels={"NSFW"})
    assert upper.check([checkerboard()])[0].flagged
    with pytest.raises(ValueError, match="none of them unsafe"):
        SafetyChecker.load(TINY_SAFETY_FLAG, device="cpu", unsafe_labels={"gore"})


def test_checker_loads_under_real_id() -> None:
    place(ensure_tiny_checker(TINY_SAFETY_FLAG, always_flag=True), DEFAULT_SAFETY_MODEL)
    checker = SafetyChecker.load(device="cpu")
    assert checker.repo_id == DEFAULT_SAFETY_MODEL
    assert checker.check([checkerboard()])[0].flagged


def test_missing_checker_names_repo() -> None:
    with pytest.raises(ModelUnavailable, match="koalatalk/no-such-checker"):
        SafetyChecker.load("koalatalk/no-such-checker", device="cpu")


def test_blur_hides_detail() -> None:
    image = checkerboard()
    blurred = blur(image)
    assert blurred.size == image.size
    assert ImageChops.difference(image, blurred).getbbox() is not None
    # The checkerboard's contrast is gone: pixel spread collapses toward the mean grey.
    assert max(ImageStat.Stat(blurred).stddev) < 0.1 * max(ImageStat.Stat(image).stddev)
    assert blur(image.convert("P")).mode == "RGB"
