"""Drawing options in plain words, read from a message. Pure functions: no Redis, no models.

The rules, also in docs/chat.md:
- A shape or a style is a whole part of the message, between commas or on its own line:
  `고양이, 수채화, 가로`. Inside a sentence the same words stay part of the prompt.
- Shapes: `정사각` / `가로` / `세로` (`square` / `landscape` / `portrait`), SDXL's 1024x1024,
  1152x896 and 896x1152, scaled to the preset's own canvas.
- Things to leave out: `제외: 사람, 자동차` (to the end of the line), a part such as `사람 제외`
  or `no people`, or `--no people, cars`. They go to the negative prompt.
- A seed: `시드 1234` or `--seed 1234`, from 0 to 2^32-1.
- No translation: start with `!` or `원문:` (or add `--raw`); the prompt is drawn as written.
- Flags: `--seed N`, `--no ...`, `--style NAME`, `--square`, `--landscape`, `--portrait`,
  `--ar W:H`, `--raw`. An unknown flag gets a short hint.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

from bot.core.events import QuickReply
from bot.core.texts import say

MAX_SEED = 2**32 - 1
SDXL_BASE = 1024

# SDXL-friendly sizes at a 1024 base; other canvases keep the same ratio (multiples of 8).
SHAPES: dict[str, tuple[int, int]] = {
    "square": (1024, 1024),
    "landscape": (1152, 896),
    "portrait": (896, 1152),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "square": ("정사각", "정사각형", "정방형", "square", "1:1"),
    "landscape": ("가로", "가로형", "와이드", "landscape", "wide", "horizontal"),
    "portrait": ("세로", "세로형", "portrait", "tall", "vertical"),
}


@dataclass(frozen=True)
class Style:
    """A style preset: its names and what it adds to the prompt and the negative prompt."""

    key: str
    ko: str
    en: str
    words: tuple[str, ...]
    prompt: str
    negative: str


_QUALITY = "worst quality, low quality, low resolution"
STYLES: dict[str, Style] = {
    style.key: style
    for style in (
        Style(
            "photo",
            "사진",
            "photo",
            (
                "사진",
                "실사",
                "실사풍",
                "사진풍",
                "photo",
                "photograph",
                "photography",
                "photorealistic",
                "realistic",
            ),
            "photograph, photorealistic, natural lighting, sharp focus, highly detailed",
            f"illustration, painting, drawing, cartoon, anime, {_QUALITY}",
        ),
        Style(
            "anime",
            "애니메이션",
            "anime",
            ("애니", "애니메이션", "만화", "웹툰", "anime", "manga", "cartoon"),
            "anime style illustration, cel shading, clean line art, vibrant colors",
            f"photo, photorealistic, 3d render, {_QUALITY}",
        ),
        Style(
            "watercolour",
            "수채화",
            "watercolor",
            ("수채화", "수채", "watercolor", "watercolour", "watercolor painting"),
            "watercolor painting, soft washes of color, wet paper texture, delicate brushwork",
            f"photo, photorealistic, 3d render, {_QUALITY}",
        ),
        Style(
            "oil",
            "유화",
            "oil painting",
            ("유화", "oil painting", "oil"),
            "oil painting, thick impasto brush strokes, canvas texture, rich colors",
            f"photo, photorealistic, 3d render, {_QUALITY}",
        ),
        Style(
            "3d",
            "3D",
            "3D",
            ("3d", "3d 렌더", "3d렌더", "3d 렌더링", "입체", "3d render", "3d rendering"),
            "3d render, octane render, soft global illumination, smooth materials",
            f"photo, 2d, flat, sketch, {_QUALITY}",
        ),
        Style(
            "pixel",
            "픽셀 아트",
            "pixel art",
            ("픽셀", "픽셀아트", "픽셀 아트", "도트", "도트 그림", "pixel art", "pixel"),
            "pixel art, 16-bit retro game sprite, crisp pixels, limited palette",
            f"blurry, smooth shading, photo, photorealistic, {_QUALITY}",
        ),
        Style(
            "sketch",
            "연필 스케치",
            "pencil sketch",
            (
                "스케치",
                "연필",
                "연필화",
                "연필 스케치",
                "소묘",
                "sketch",
                "pencil",
                "pencil sketch",
                "pencil drawing",
            ),
            "pencil sketch, graphite on paper, fine hatching, monochrome",
            f"color, photo, 3d render, {_QUALITY}",
        ),
        Style(
            "ink",
            "수묵화",
            "ink wash",
            ("수묵화", "수묵", "동양화", "먹그림", "ink wash", "ink painting", "sumi-e"),
            "traditional East Asian ink wash painting, sumi-e, expressive brush strokes, "
            "rice paper",
            f"photo, photorealistic, 3d render, vivid colors, {_QUALITY}",
        ),
        # The default styles of storybooks (bot/core/storybook.py), also usable alone.
        Style(
            "crayon",
            "크레용",
            "crayon",
            ("크레용", "크레파스", "그림일기풍", "crayon", "crayon drawing", "children's drawing"),
            "children's crayon drawing, naive art, wax crayon texture on paper, bright colors",
            f"photo, photorealistic, 3d render, {_QUALITY}",
        ),
        Style(
            "comic",
            "만화 컷",
            "comic panel",
            ("만화 컷", "만화컷", "코믹", "코믹스", "comic", "comic panel", "comic book"),
            "comic book panel, bold ink outlines, flat colors, halftone shading",
            f"photo, photorealistic, 3d render, {_QUALITY}",
        ),
        Style(
            "storybook",
            "동화 삽화",
            "storybook",
            (
                "동화 삽화",
                "동화풍",
                "그림책",
                "storybook",
                "storybook illustration",
                "picture book",
            ),
            "children's storybook illustration, soft gouache, warm gentle colors",
            f"photo, photorealistic, 3d render, {_QUALITY}",
        ),
    )
}
# Styles offered as quick replies after a picture, in this order.
SUGGESTED = ("watercolour", "anime", "oil", "3d", "pixel", "photo", "sketch", "ink")

# Endings peeled off a part before it is looked up: `수채화로`, `가로형`, `픽셀 아트 스타일로`,
# `in watercolor style`. Longer endings first, so `으로` goes before `로`.
_ENDINGS = (
    "으로 그려 주세요",
    "로 그려 주세요",
    "으로 그려주세요",
    "로 그려주세요",
    "으로 그려 줘",
    "로 그려 줘",
    "으로 그려줘",
    "로 그려줘",
    "으로",
    "로",
    "처럼",
    "스타일",
    "느낌",
    "화풍",
    "그림",
    "비율",
    "모양",
    "사이즈",
    "크기",
    "화면",
    "방향",
    "형",
    "풍",
    " style",
    " format",
    " orientation",
    " shape",
    " image",
    " picture",
    " mode",
)
_BEGINNINGS = ("in ", "as ", "an ", "a ")

LABELLED_STYLE = re.compile(r"^(?:스타일|화풍|style)\s*[:：]\s*(.+)$", re.I)
FLAG = re.compile(r"(?<!\S)(?:--|[—–])([A-Za-z][A-Za-z0-9_-]*)")
VALUE_FLAGS = {"seed", "no", "style", "ar", "shape"}
SWITCH_FLAGS = {"square", "landscape", "portrait", "wide", "tall", "raw"}
FLAG_NAMES = (
    "--seed N",
    "--no ...",
    "--style",
    "--square",
    "--landscape",
    "--portrait",
    "--ar W:H",
    "--raw",
)
SEED_WORDS = re.compile(r"(?<![\w-])(?:시드|seed)\s*(?:번호)?\s*[:=]?\s*(-?\d+)(?:\s*번)?", re.I)
SEED_WORD_EMPTY = re.compile(r"(?<![\w-])(?:시드|seed)\s*[:=](?!\s*-?\d)", re.I)
LEAVE_OUT = re.compile(
    r"(?:^|(?<=[\s,]))(?:제외|빼고|빼 줘|빼줘|exclude|without|negative|네거티브)"
    r"\s*[:：]\s*([^\n]*)",
    re.I,
)
LEAVE_OUT_PART = re.compile(
    r"^(?:(?:no|without)\s+(?P<en>.+)|(?P<ko>.+?)\s*(?:은|는|이|가|을|를)?\s*(?:제외|빼고|없이))$",
    re.I,
)
NO_TRANSLATE = re.compile(r"^\s*(?:!|！|원문\s*[:：]|raw\s*:)\s*", re.I)
SEPARATOR = re.compile(r"[,，、;；\n]+")
EMOJI_CATEGORIES = {"So", "Sk", "Cs", "Co"}


class OptionError(ValueError):
    """The message's options cannot be drawn; `key` names the answer in bot.core.texts."""

    def __init__(self, key: str, **values: object) -> None:
        super().__init__(key)
        self.key = key
        self.values = values


@dataclass(frozen=True)
class Options:
    """A message read into a prompt and its drawing options."""

    prompt: str
    negative: str = ""
    shape: str | None = None
    style: str | None = None
    seed: int | None = None
    translate: bool = True


@dataclass(frozen=True)
class Restyle:
    """`이 사진을 수채화로`: redraw the user's photo in a style, or after a short prompt."""

    style: str | None
    strength: float
    prompt: str = ""


def parse(text: str, max_chars: int = 1000) -> Options:
    """Read the options out of a drawing message; OptionError says what to fix."""
    if len(text) > max_chars:
        raise OptionError("too_long", n=max_chars)
    found = _Found()
    rest = text.strip()
    # 1. The no-translation prefix
    prefix = NO_TRANSLATE.match(rest)
    if prefix:
        found.translate = False
        rest = rest[prefix.end() :]
    # 2. Flags, anywhere
    rest = _take_flags(rest, found)
    # 3. `제외: ...` to the end of its line; its parts may still hold options
    matches = list(LEAVE_OUT.finditer(rest))
    for match in matches:
        for part in SEPARATOR.split(match.group(1)):
            if part.strip() and not _take_part(part, found, in_leave_out=True):
                found.leave_out.append(part.strip())
    rest = _cut(rest, matches)
    # 4. Seeds in words
    if SEED_WORD_EMPTY.search(rest):
        raise OptionError("opt_seed_missing")
    matches = list(SEED_WORDS.finditer(rest))
    for match in matches:
        found.set_seed(match.group(1))
    rest = _cut(rest, matches)
    # 5. Whole parts that are a shape, a style or something to leave out
    kept = [part.strip() for part in SEPARATOR.split(rest)]
    prompt = ", ".join(
        " ".join(part.split()) for part in kept if part and not _take_part(part, found)
    )
    # 6. Something must be left to draw
    if not _has_content(prompt):
        if any(_is_emoji(char) for char in prompt):
            raise OptionError("opt_emoji")
        raise OptionError("opt_empty")
    return Options(
        prompt=prompt,
        negative=", ".join(dict.fromkeys(found.leave_out)),
        shape=found.shape,
        style=found.style,
        seed=found.seed,
        translate=found.translate,
    )


def has_options(text: str) -> bool:
    """Whether a message carries drawing options (a style, shape, seed, leave-out or flag)."""
    if FLAG.search(text):
        return True
    try:
        found = parse(text)
    except OptionError:
        return False
    return bool(found.shape or found.style or found.seed is not None or found.negative)


def size_for(shape: str | None, width: int, height: int) -> tuple[int | None, int | None]:
    """The canvas for a shape on a preset of `width` x `height` (None: the preset's own)."""
    if shape is None:
        return None, None
    w, h = SHAPES[shape]
    return _multiple_of_8(width * w / SDXL_BASE), _multiple_of_8(height * h / SDXL_BASE)


def style_named(name: str) -> str | None:
    """The style key for a name a user wrote (`수채화로`, `in anime style`), if any."""
    return _lookup(name, _STYLE_INDEX)


def shape_named(name: str) -> str | None:
    """The shape key for a name a user wrote (`가로로`, `portrait`), if any."""
    return _lookup(name, _SHAPE_INDEX)


def style_label(key: str, lang: str) -> str:
    """A style's name in the user's language."""
    style = STYLES[key]
    return style.en if lang == "en" else style.ko


def with_ro(name: str) -> str:
    """`name` with the particle 로 or 으로, as its last sound asks (`수채화로`, `사진으로`)."""
    last = name[-1:]
    if "가" <= last <= "힣":
        final = (ord(last) - ord("가")) % 28
        return name + ("로" if final in (0, 8) else "으로")  # none, or ㄹ: 로
    return name + "로"


def style_quick_reply(key: str, lang: str) -> QuickReply:
    """A quick reply that redraws the last prompt in a style: `수채화로` / `watercolor`."""
    label = with_ro(STYLES[key].ko) if lang != "en" else STYLES[key].en
    return QuickReply(label, say("restyle_command", lang, style=label))


def suggest_styles(current: str | None, seed: int, n: int = 3) -> list[str]:
    """`n` styles other than the current one, rotating with the seed so they vary."""
    others = [key for key in SUGGESTED if key != current]
    start = seed % len(others)
    return [others[(start + i) % len(others)] for i in range(n)]


# --- Commands that name a style ---------------------------------------------------------------

_RESTYLE_KO = re.compile(
    r"^(?P<s>.+?)\s*(?:으로|로)\s*다시(?:\s*(?:그리기|그려\s*(?:줘|주세요)?))?$"
)
_RESTYLE_EN = re.compile(r"^(?:redraw|draw again|again)\s+(?:as|in)\s+(?P<s>.+)$", re.I)
_PHOTO_KO = re.compile(
    r"^(?:이|그|저|제|내|방금|보낸|위|이번)?\s*(?:사진|이미지)\s*(?:을|를|은|는|도)?\s+(?P<rest>.+)$"
)
_PHOTO_EN = re.compile(
    r"^(?:please\s+)?(?:(?P<verb>make|turn|redraw|draw|paint|render|convert|change)\s+)?"
    r"(?:this|my|the)\s+(?:photo|picture|image|pic)\s+(?:as|into|in|to)\s+(?P<rest>.+)$",
    re.I,
)
_CHANGE = r"(?:바꿔|바꾸어|그려|만들어|변환해|변신시켜)"
_VERB_KO = re.compile(rf"(?:(?<=로)|\s+)(?:{_CHANGE}|해)\s*(?:줘|주세요|줄래|봐|줘요|주라)?[.!~]*$")
_CHANGE_KO = re.compile(
    rf"^(?P<x>.+?)\s*(?:으로|로)\s*{_CHANGE}\s*(?:줘|주세요|줄래|봐|줘요|주라)?[.!~]*$"
)
_GENTLE = re.compile(r"(?<!\S)(?:조금만?|살짝|약간|가볍게|a little|slightly|lightly|a bit)(?!\S)")
_STRONG = re.compile(
    r"(?<!\S)(?:많이|확|완전히|강하게|아주|a lot|strongly|heavily|completely)(?!\S)"
)
STRENGTH_GENTLE, STRENGTH_DEFAULT, STRENGTH_STRONG = 0.35, 0.55, 0.8


def restyle_command(text: str) -> str | None:
    """`수채화로 다시 그리기` / `redraw as watercolor`: the style key, if it names one."""
    cleaned = " ".join(text.split()).strip(" .!~")
    match = _RESTYLE_KO.match(cleaned) or _RESTYLE_EN.match(cleaned)
    return style_named(match.group("s")) if match else None


def photo_restyle(text: str) -> Restyle | None:
    """`이 사진을 조금 수채화로` / `make this photo into anime`: a redraw of the user's photo.

    A style needs no verb (`이 사진을 수채화로`); other words need a verb of changing
    (`이 사진을 눈 오는 풍경으로 바꿔 줘`), so a question about the photo is never taken for one.
    """
    cleaned = " ".join(text.split())
    korean = _PHOTO_KO.match(cleaned)
    english = None if korean else _PHOTO_EN.match(cleaned)
    match = korean or english
    if match is None:
        return None
    rest = match.group("rest").lower()
    strength = STRENGTH_DEFAULT
    if _GENTLE.search(rest):
        strength = STRENGTH_GENTLE
    elif _STRONG.search(rest):
        strength = STRENGTH_STRONG
    rest = " ".join(_STRONG.sub(" ", _GENTLE.sub(" ", rest)).split())
    subject: str | None = None
    if korean:
        verb = _VERB_KO.search(rest)
        core = rest[: verb.start()] if verb else rest
        change = _CHANGE_KO.match(rest)
        subject = change.group("x") if change else None
    else:
        core = rest.rstrip(".!?")
        subject = core if match.group("verb") else None
    style = style_named(core)
    if style is not None:
        return Restyle(style, strength)
    if subject and _has_content(subject):
        return Restyle(None, strength, subject.strip())
    return None


# --- Internals ------------------------------------------------------------------------------


class _Found:
    """Options collected while reading one message; a second, different value is an error."""

    def __init__(self) -> None:
        self.shape: str | None = None
        self.shape_word = ""
        self.style: str | None = None
        self.style_word = ""
        self.seed: int | None = None
        self.seed_word = ""
        self.translate = True
        self.leave_out: list[str] = []

    def set_shape(self, key: str, word: str) -> None:
        if self.shape is not None and self.shape != key:
            raise OptionError("opt_two_shapes", a=self.shape_word, b=word)
        self.shape, self.shape_word = key, word

    def set_style(self, key: str, word: str) -> None:
        if self.style is not None and self.style != key:
            raise OptionError("opt_two_styles", a=self.style_word, b=word)
        self.style, self.style_word = key, word

    def set_seed(self, raw: str) -> None:
        try:
            seed = int(raw)
        except ValueError as exc:
            raise OptionError("opt_seed_missing") from exc
        if not 0 <= seed <= MAX_SEED:
            raise OptionError("opt_seed_range", max=MAX_SEED)
        if self.seed is not None and self.seed != seed:
            raise OptionError("opt_two_seeds", a=self.seed_word, b=raw)
        self.seed, self.seed_word = seed, raw


def _take_flags(text: str, found: _Found) -> str:
    """Apply every `--flag` in `text`; returns the text without them and their values."""
    matches = list(FLAG.finditer(text))
    if not matches:
        return text
    pieces = [text[: matches[0].start()]]
    for i, match in enumerate(matches):
        name = match.group(1).lower()
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        value = text[match.end() : end]
        line, newline, after = value.partition("\n")
        known = name in VALUE_FLAGS or name in SWITCH_FLAGS
        if not known:
            if match.group(0).startswith("--"):
                raise OptionError("opt_unknown_flag", flag="--" + match.group(1))
            pieces.append(match.group(0) + value)  # a dash in prose, not a flag
            continue
        leftover = _apply_flag(name, line, found)
        pieces.append(" " + leftover + newline + after)
    return "".join(pieces)


def _apply_flag(name: str, value: str, found: _Found) -> str:
    """Apply one flag whose value is the rest of its line; returns what is not its value."""
    if name in SWITCH_FLAGS:
        if name == "raw":
            found.translate = False
        else:
            key = {"wide": "landscape", "tall": "portrait"}.get(name, name)
            found.set_shape(key, "--" + name)
        return value
    if name == "no":
        parts = [part.strip() for part in SEPARATOR.split(value) if part.strip()]
        if not parts:
            raise OptionError("opt_no_missing")
        found.leave_out.extend(parts)
        return ""
    stripped = value.strip()
    head = re.split(r"[\s,，]", stripped, maxsplit=1)[0]
    tail = stripped[len(head) :]
    if name == "seed":
        if not re.fullmatch(r"-?\d+", head):
            raise OptionError("opt_seed_missing")
        found.set_seed(head)
        return tail
    if name == "ar":
        ratio = re.fullmatch(r"(\d+)\s*[:x]\s*(\d+)", head)
        if not ratio or not int(ratio.group(1)) or not int(ratio.group(2)):
            raise OptionError("opt_bad_ratio", value=head or "--ar")
        w, h = int(ratio.group(1)), int(ratio.group(2))
        shape = "square" if w == h else "landscape" if w > h else "portrait"
        found.set_shape(shape, "--ar " + head)
        return tail
    if name == "shape":
        named = shape_named(head)
        if named is None:
            raise OptionError("opt_unknown_shape", value=head or "--shape")
        found.set_shape(named, head)
        return tail
    # --style: the longest run of words (up to a comma) that names a style
    part, comma, after = value.strip().partition(",")
    words = part.split()
    for n in range(min(3, len(words)), 0, -1):
        style = style_named(" ".join(words[:n]))
        if style is not None:
            found.set_style(style, " ".join(words[:n]))
            return " ".join(words[n:]) + comma + after
    raise OptionError("opt_unknown_style", value=" ".join(words[:1]) or "--style")


def _take_part(part: str, found: _Found, in_leave_out: bool = False) -> bool:
    """Apply a whole comma-separated part when it is an option; False when it is prompt text."""
    word = " ".join(part.split())
    if not word:
        return False
    labelled = LABELLED_STYLE.match(word)
    if labelled:
        key = style_named(labelled.group(1))
        if key is None:
            raise OptionError("opt_unknown_style", value=labelled.group(1))
        found.set_style(key, labelled.group(1))
        return True
    shape = shape_named(word)
    if shape is not None:
        found.set_shape(shape, word)
        return True
    style = style_named(word)
    if style is not None:
        found.set_style(style, word)
        return True
    if in_leave_out:
        return False
    leave = LEAVE_OUT_PART.match(word)
    if leave:
        found.leave_out.append((leave.group("en") or leave.group("ko")).strip())
        return True
    return False


def _cut(text: str, matches: list[re.Match[str]]) -> str:
    """`text` without the spans of `matches` (in order, not overlapping)."""
    for match in reversed(matches):
        text = text[: match.start()] + " " + text[match.end() :]
    return text


def _normalise(name: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", name).lower().split())


def _index(table: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {_normalise(word): key for key, words in table.items() for word in words}


_STYLE_INDEX = _index({key: style.words for key, style in STYLES.items()})
_SHAPE_INDEX = _index(SHAPE_WORDS)


def _lookup(name: str, index: dict[str, str]) -> str | None:
    """Look a name up, peeling endings and beginnings one at a time until it is found."""
    for form in _forms(name):
        if form in index:
            return index[form]
    return None


@functools.lru_cache(maxsize=2048)
def _forms(name: str) -> tuple[str, ...]:
    """The name normalised, then with one ending or beginning peeled at a time (six at most).

    Cached: every part of a prompt is looked up as a shape and then as a style."""
    word = _normalise(name).strip(" .!~")
    forms = [word]
    while len(forms) < 6:
        peeled = next((word[: -len(e)].strip() for e in _ENDINGS if word.endswith(e)), None)
        if peeled is None:
            peeled = next((word[len(b) :].strip() for b in _BEGINNINGS if word.startswith(b)), None)
        if not peeled or peeled == word:
            break
        word = peeled
        forms.append(word)
    return tuple(forms)


def _has_content(text: str) -> bool:
    return any(unicodedata.category(char)[0] in "LN" for char in text)


def _is_emoji(char: str) -> bool:
    return unicodedata.category(char) in EMOJI_CATEGORIES or char in "\u200d\ufe0f"


def _multiple_of_8(value: float) -> int:
    return max(8, round(value / 8) * 8)
