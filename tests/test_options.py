"""Drawing options in plain words (bot/core/options.py) and the intents that name them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.intents import decide
from bot.core.options import (
    MAX_SEED,
    STRENGTH_DEFAULT,
    STRENGTH_GENTLE,
    STRENGTH_STRONG,
    STYLES,
    OptionError,
    Options,
    has_options,
    parse,
    photo_restyle,
    restyle_command,
    size_for,
    style_named,
    style_quick_reply,
    suggest_styles,
    with_ro,
)


def error_of(text: str, max_chars: int = 1000) -> OptionError:
    with pytest.raises(OptionError) as caught:
        parse(text, max_chars)
    return caught.value


# --- Shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("고양이, 정사각", "square"),
        ("고양이, 정사각형으로", "square"),
        ("고양이, 가로", "landscape"),
        ("고양이, 가로로 그려줘", "landscape"),
        ("고양이, 가로형", "landscape"),
        ("고양이\n세로", "portrait"),
        ("고양이, 세로 그림", "portrait"),
        ("a cat, square", "square"),
        ("a cat, landscape", "landscape"),
        ("a cat, portrait orientation", "portrait"),
        ("a cat --landscape", "landscape"),
        ("a cat --portrait", "portrait"),
        ("a cat --square", "square"),
        ("a cat --wide", "landscape"),
        ("a cat --tall", "portrait"),
        ("a cat --ar 16:9", "landscape"),
        ("a cat --ar 2:3", "portrait"),
        ("a cat --ar 1:1", "square"),
        ("a cat --shape 세로", "portrait"),
        ("고양이, 가로, 가로", "landscape"),  # the same twice is no contradiction
    ],
)
def test_shapes_in_words_and_flags(text: str, shape: str) -> None:
    found = parse(text)
    assert found.shape == shape
    assert found.prompt in {"고양이", "a cat"}


@pytest.mark.parametrize(
    "text", ["가로등 아래의 고양이", "a portrait of a woman", "세로 줄무늬 셔츠를 입은 곰"]
)
def test_shape_words_inside_a_sentence_stay_in_the_prompt(text: str) -> None:
    found = parse(text)
    assert found.shape is None
    assert found.prompt == text


@pytest.mark.parametrize(
    ("shape", "base", "size"),
    [
        ("square", (1024, 1024), (1024, 1024)),
        ("landscape", (1024, 1024), (1152, 896)),
        ("portrait", (1024, 1024), (896, 1152)),
        ("landscape", (64, 64), (72, 56)),
        ("portrait", (64, 64), (56, 72)),
        ("square", (64, 64), (64, 64)),
        (None, (1024, 1024), (None, None)),
    ],
)
def test_sizes_are_sdxl_friendly_and_scale_to_the_preset(
    shape: str | None, base: tuple[int, int], size: tuple[int | None, int | None]
) -> None:
    assert size_for(shape, *base) == size


@given(
    st.sampled_from(["square", "landscape", "portrait"]), st.integers(8, 256).map(lambda n: n * 8)
)
@settings(max_examples=60, deadline=None)
def test_every_size_is_a_positive_multiple_of_8(shape: str, side: int) -> None:
    width, height = size_for(shape, side, side)
    assert width and height and width % 8 == 0 and height % 8 == 0


# --- Styles ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "style"),
    [
        ("고양이, 수채화", "watercolour"),
        ("고양이, 수채화로", "watercolour"),
        ("고양이, 수채화풍", "watercolour"),
        ("고양이, 유화 스타일", "oil"),
        ("고양이, 애니메이션으로 그려 주세요", "anime"),
        ("고양이, 만화", "anime"),
        ("고양이, 사진처럼", "photo"),
        ("고양이, 실사", "photo"),
        ("고양이, 3D", "3d"),
        ("고양이, 3D 렌더로", "3d"),
        ("고양이, 픽셀 아트 스타일로", "pixel"),
        ("고양이, 도트", "pixel"),
        ("고양이, 연필 스케치", "sketch"),
        ("고양이, 수묵화", "ink"),
        ("a cat, watercolour", "watercolour"),
        ("a cat, in watercolor style", "watercolour"),
        ("a cat, an oil painting", "oil"),
        ("a cat, pixel art", "pixel"),
        ("a cat, photorealistic", "photo"),
        ("a cat --style anime", "anime"),
        ("a cat --style pixel art", "pixel"),
        ("a cat --style 수채화", "watercolour"),
        ("고양이, 스타일: 유화", "oil"),
        ("a cat, style: anime", "anime"),
    ],
)
def test_styles_in_both_languages(text: str, style: str) -> None:
    found = parse(text)
    assert found.style == style
    assert found.prompt in {"고양이", "a cat"}


def test_every_style_adds_prompt_and_negative_text() -> None:
    for key, style in STYLES.items():
        assert style.prompt and style.negative, key
        assert style_named(style.ko) == key
        assert style_named(style.en) == key


def test_style_word_inside_a_sentence_stays_in_the_prompt() -> None:
    found = parse("수채화 스타일의 풍경화")
    assert found.style is None
    assert found.prompt == "수채화 스타일의 풍경화"


def test_the_words_after_a_style_flag_return_to_the_prompt() -> None:
    found = parse("고양이 --style anime 귀여운")
    assert found.style == "anime"
    assert found.prompt == "고양이 귀여운"


# --- Leaving things out ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "prompt", "negative"),
    [
        ("고양이, 제외: 사람, 자동차", "고양이", "사람, 자동차"),
        ("고양이\n제외: 사람", "고양이", "사람"),
        ("고양이, 사람 제외", "고양이", "사람"),
        ("고양이, 사람은 빼고", "고양이", "사람"),
        ("빈 거리, 자동차 없이", "빈 거리", "자동차"),
        ("a street, no people", "a street", "people"),
        ("a street, without cars", "a street", "cars"),
        ("a street --no people, cars", "a street", "people, cars"),
        ("a street --no people --seed 3", "a street", "people"),
        ("a street, exclude: people", "a street", "people"),
        ("a street —no people", "a street", "people"),  # a phone's smart dash
    ],
)
def test_things_to_leave_out_go_to_the_negative_prompt(
    text: str, prompt: str, negative: str
) -> None:
    found = parse(text)
    assert (found.prompt, found.negative) == (prompt, negative)


def test_options_after_a_leave_out_list_are_still_options() -> None:
    found = parse("고양이, 제외: 사람, 가로, 수채화")
    assert found == Options("고양이", "사람", "landscape", "watercolour")


def test_a_dash_in_prose_is_not_a_flag() -> None:
    assert parse("a cat — sitting on a mat").prompt == "a cat — sitting on a mat"


# --- Seeds ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seed"),
    [
        ("고양이, 시드 1234", 1234),
        ("고양이 시드1234", 1234),
        ("고양이, 시드: 7", 7),
        ("고양이, 시드 번호 7번", 7),
        ("a cat --seed 42", 42),
        ("a cat --seed=42", None),  # not a number after the flag: refused below
        ("a cat, seed 0", 0),
        (f"a cat --seed {MAX_SEED}", MAX_SEED),
        ("고양이 시드 5, 시드 5", 5),
    ],
)
def test_seeds(text: str, seed: int | None) -> None:
    if seed is None:
        assert error_of(text).key == "opt_seed_missing"
    else:
        assert parse(text).seed == seed


@pytest.mark.parametrize(
    "text", ["고양이 시드 -1", f"고양이 --seed {MAX_SEED + 1}", "a cat, seed 99999999999999"]
)
def test_seed_out_of_range(text: str) -> None:
    problem = error_of(text)
    assert problem.key == "opt_seed_range"
    assert problem.values["max"] == MAX_SEED


@pytest.mark.parametrize("text", ["고양이 --seed", "고양이 --seed abc", "고양이, 시드: 없음"])
def test_seed_without_a_number(text: str) -> None:
    assert error_of(text).key == "opt_seed_missing"


def test_a_seed_word_in_a_sentence_without_a_number_is_prompt() -> None:
    assert parse("해바라기 시드가 가득한 접시").seed is None


# --- Translation off -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["!고양이", "! 고양이", "！고양이", "원문: 고양이", "원문 : 고양이"]
)
def test_no_translation_prefix(text: str) -> None:
    found = parse(text)
    assert found.translate is False
    assert found.prompt == "고양이"


def test_raw_flag_and_default() -> None:
    assert parse("고양이 --raw").translate is False
    assert parse("고양이").translate is True
    assert parse("고양이!").translate is True, "only a leading ! turns translation off"


# --- Bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("고양이, 가로, 세로", "opt_two_shapes"),
        ("a cat --square --portrait", "opt_two_shapes"),
        ("a cat --ar 16:9, 세로", "opt_two_shapes"),
        ("고양이, 수채화, 유화", "opt_two_styles"),
        ("고양이 시드 1 시드 2", "opt_two_seeds"),
        ("a cat --seed 1 --seed 2", "opt_two_seeds"),
        ("수채화, 가로", "opt_empty"),
        ("시드 5", "opt_empty"),
        ("!", "opt_empty"),
        ("...", "opt_empty"),
        ("--seed 4 --no people", "opt_empty"),
        ("🐱🚀", "opt_emoji"),
        ("🐱, 가로", "opt_emoji"),
        ("👩‍🚀✨ !!", "opt_emoji"),
        ("a cat --foo", "opt_unknown_flag"),
        ("a cat --chaos 50", "opt_unknown_flag"),
        ("a cat --style cubism", "opt_unknown_style"),
        ("고양이, 스타일: 입체파", "opt_unknown_style"),
        ("a cat --shape round", "opt_unknown_shape"),
        ("a cat --ar wide", "opt_bad_ratio"),
        ("a cat --ar 0:3", "opt_bad_ratio"),
        ("a cat --no", "opt_no_missing"),
    ],
)
def test_bad_options_name_what_to_fix(text: str, key: str) -> None:
    assert error_of(text).key == key


def test_contradiction_names_both_words() -> None:
    problem = error_of("고양이, 가로, 세로")
    assert problem.values == {"a": "가로", "b": "세로"}
    assert error_of("고양이 시드 1 시드 2").values == {"a": "1", "b": "2"}


def test_unknown_flag_names_the_flag() -> None:
    assert error_of("a cat --chaos 50").values == {"flag": "--chaos"}


def test_length_cap() -> None:
    assert error_of("가" * 1001).key == "too_long"
    assert parse("가" * 1000).prompt == "가" * 1000
    assert error_of("고양이", max_chars=2).values == {"n": 2}


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_any_text_parses_or_gets_an_answer(text: str) -> None:
    try:
        found = parse(text)
    except OptionError as exc:
        from bot.core.texts import MESSAGES

        assert exc.key in MESSAGES
        return
    assert found.prompt.strip()
    assert found.seed is None or 0 <= found.seed <= MAX_SEED


@given(st.integers(0, MAX_SEED), st.sampled_from(["시드 {}", "--seed {}", "seed: {}"]))
@settings(max_examples=100, deadline=None)
def test_every_seed_in_range_round_trips(seed: int, form: str) -> None:
    assert parse("고양이 " + form.format(seed)).seed == seed


# --- Photo redraws and style commands --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "style", "strength", "prompt"),
    [
        ("이 사진을 수채화로", "watercolour", STRENGTH_DEFAULT, ""),
        ("이 사진 수채화로 바꿔줘", "watercolour", STRENGTH_DEFAULT, ""),
        ("이 사진을 조금 유화로 바꿔 줘", "oil", STRENGTH_GENTLE, ""),
        ("사진을 살짝 애니메이션으로 만들어 줘", "anime", STRENGTH_GENTLE, ""),
        ("이 사진을 많이 3D로", "3d", STRENGTH_STRONG, ""),
        ("내 사진을 픽셀 아트로 그려줘", "pixel", STRENGTH_DEFAULT, ""),
        ("이 사진을 눈 오는 풍경으로 바꿔 줘", None, STRENGTH_DEFAULT, "눈 오는 풍경"),
        ("make this photo into anime", "anime", STRENGTH_DEFAULT, ""),
        ("this photo as a watercolor", "watercolour", STRENGTH_DEFAULT, ""),
        ("turn my photo into an oil painting, slightly", None, None, None),
        ("make this photo a lot into pixel art", None, None, None),
        ("make this photo into a snowy scene", None, STRENGTH_DEFAULT, "a snowy scene"),
        ("redraw this picture as pixel art", "pixel", STRENGTH_DEFAULT, ""),
    ],
)
def test_photo_redraws(
    text: str, style: str | None, strength: float | None, prompt: str | None
) -> None:
    found = photo_restyle(text)
    if strength is None:
        return  # word orders we do not promise to read; they must only not crash
    assert found is not None
    assert (found.style, found.strength, found.prompt) == (style, strength, prompt)


@pytest.mark.parametrize(
    "text",
    [
        "이 사진 설명해줘",
        "이 사진 설명 해 줘",
        "이 사진에 뭐가 있어?",
        "이 사진 수채화?",
        "이 사진을 영어로 번역해 줘",
        "사진 속 사람은 누구야",
        "the photo in the corner shows what?",
        "describe this photo",
        "고양이, 수채화",
    ],
)
def test_questions_and_prompts_are_not_photo_redraws(text: str) -> None:
    assert photo_restyle(text) is None


@pytest.mark.parametrize(
    ("text", "style"),
    [
        ("수채화로 다시 그리기", "watercolour"),
        ("애니메이션으로 다시", "anime"),
        ("3D로 다시 그려 줘", "3d"),
        ("redraw as watercolor", "watercolour"),
        ("redraw as pencil sketch", "sketch"),
        ("고양이로 다시", None),
        ("다시 그리기", None),
    ],
)
def test_restyle_commands(text: str, style: str | None) -> None:
    assert restyle_command(text) == style


@pytest.mark.parametrize("lang", ["ko", "en"])
def test_every_style_quick_reply_is_understood_and_fits_a_kakao_label(lang: str) -> None:
    for key in STYLES:
        quick = style_quick_reply(key, lang)
        assert len(quick.label) <= 14
        assert restyle_command(quick.message) == key


def test_korean_particle() -> None:
    assert [with_ro(w) for w in ("수채화", "사진", "애니메이션", "3D", "연필", "별")] == [
        "수채화로",
        "사진으로",
        "애니메이션으로",
        "3D로",
        "연필로",
        "별로",
    ]


def test_style_suggestions_differ_from_the_current_style() -> None:
    for seed in range(20):
        picked = suggest_styles("anime", seed)
        assert len(picked) == 3 == len(set(picked))
        assert "anime" not in picked
    assert {tuple(suggest_styles(None, seed)) for seed in range(8)} != {
        tuple(suggest_styles(None, 0))
    }


# --- Intents ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "has_photo", "action"),
    [
        ("같은 시드로", False, "same_seed"),
        ("same seed", False, "same_seed"),
        ("수채화로 다시 그리기", False, "restyle"),
        ("redraw as anime", True, "restyle"),
        ("이 사진을 수채화로", True, "photo_restyle"),
        ("이 사진을 수채화로", False, "photo_first"),
        ("make this photo into anime", False, "photo_first"),
        ("고양이, 수채화, 가로", True, "draw"),
        ("a cat --seed 5", True, "draw"),
        ("고양이, 수채화, 가로", False, "draw"),
        ("이 사진 설명해줘", True, "ask"),
    ],
)
def test_intents_for_drawing_commands(text: str, has_photo: bool, action: str) -> None:
    assert decide(text, has_photo=has_photo).name == action


def test_has_options() -> None:
    assert has_options("고양이, 수채화")
    assert has_options("a cat --foo")
    assert not has_options("고양이가 뭐야")
    assert not has_options("수채화 스타일의 풍경화")
