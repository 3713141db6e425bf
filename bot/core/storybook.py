"""Storybooks and picture diaries: a short story becomes 2 to 6 pictures drawn in one batch.

A message that starts with a kind's prefix (`동화:`, `그림일기:`, `만화:`, `스토리보드:`, `story:`,
`diary:`, `comic:`, `storyboard:`) is a storybook request (docs/chat.md). Its text is split into
sentences by these rules, in order:

1. line breaks;
2. `.`, `!`, `?`, `…` (and their full-width forms, and runs of them such as `?!` or `...`)
   followed by a space or the end;
3. a Korean sentence ending followed by a space: a word ending in `요` or `죠`, or in `다` after
   a syllable whose final is ㅆ (`갔다`, `했다`, `먹었다`, `하겠다`) or ㄴ (`간다`, `먹는다`), or
   after `니` (`-습니다`); `바다 위` is not split, `갔다 그리고` is.

A story of more than six sentences is grouped into six scenes, consecutive sentences together,
the first scenes taking one more when they do not divide evenly. One sentence is one picture in
the kind's default style (a plain drawing). Drawing options work as for one picture (a style,
shape, `제외:`, seed): they may stand on any line, after a comma.

Nothing here waits on a model: the worker (workers/storybook.py) translates and draws.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from bot.core import options

MAX_SCENES = 6
MIN_SCENES = 2  # fewer and it is a single picture; admission refuses a book it cannot draw 2 of


@dataclass(frozen=True)
class Kind:
    """A kind of book: its name and the style it is drawn in unless the user names one."""

    key: str
    style: str  # a bot/core/options.py STYLES key


KINDS = {
    "storybook": Kind("storybook", "storybook"),
    "diary": Kind("diary", "crayon"),
    "comic": Kind("comic", "comic"),
    "storyboard": Kind("storyboard", "sketch"),
}
PREFIXES = {
    "동화": "storybook",
    "그림일기": "diary",
    "일기": "diary",
    "만화": "comic",
    "스토리보드": "storyboard",
    "story": "storybook",
    "storybook": "storybook",
    "diary": "diary",
    "comic": "comic",
    "storyboard": "storyboard",
}
PREFIX = re.compile(
    r"^\s*(" + "|".join(sorted(PREFIXES, key=len, reverse=True)) + r")\s*[:：]\s*", re.I
)
_PUNCTUATION = re.compile(r"(?<=[.!?…。！？])(?<!\b\d\.)\s+")
_HANGUL_START, _HANGUL_END = 0xAC00, 0xD7A3
_FINALS = {4, 20}  # ㄴ (`간다`, `먹는다`) and ㅆ (`갔다`, `했다`, `겠다`), of the 28 finals


@dataclass(frozen=True)
class BookText:
    """A storybook message: its kind and the story after the prefix."""

    kind: str
    text: str


@dataclass(frozen=True)
class Book:
    """A story read into scenes and the drawing options that apply to all of them."""

    kind: str
    scenes: tuple[str, ...]
    found: options.Options  # the options; `prompt` is the whole story, options removed

    @property
    def style(self) -> str:
        """The user's style, else the kind's."""
        return self.found.style or KINDS[self.kind].style


def prefix_for(kind: str, lang: str) -> str:
    """The prefix that asks for a book of this kind: `동화:`, `story:`."""
    names = {
        "storybook": ("동화", "story"),
        "diary": ("그림일기", "diary"),
        "comic": ("만화", "comic"),
        "storyboard": ("스토리보드", "storyboard"),
    }
    ko, en = names.get(kind, names["storybook"])
    return f"{en if lang == 'en' else ko}:"


def book_text(text: str) -> BookText | None:
    """The kind and the story of a message that starts with a kind's prefix, else None."""
    match = PREFIX.match(text)
    if match is None:
        return None
    return BookText(PREFIXES[match.group(1).lower()], text[match.end() :].strip())


def _korean_end(word: str) -> bool:
    """Whether a word ends a Korean sentence (rule 3 above)."""
    word = word.rstrip("~^ㅎㅋ")
    if len(word) < 2 or not _is_hangul(word[-1]):
        return False
    last, before = word[-1], word[-2]
    if last in "요죠":
        return True
    if last != "다" or not _is_hangul(before):
        return False
    return before == "니" or (ord(before) - _HANGUL_START) % 28 in _FINALS


def _is_hangul(char: str) -> bool:
    return _HANGUL_START <= ord(char) <= _HANGUL_END


def sentences(text: str) -> list[str]:
    """The story's sentences, by the rules above; blank ones dropped."""
    found: list[str] = []
    for line in text.splitlines():
        for piece in _PUNCTUATION.split(line):
            words = piece.split()
            start = 0
            for i, word in enumerate(words[:-1]):
                if _korean_end(word):
                    found.append(" ".join(words[start : i + 1]))
                    start = i + 1
            if words[start:]:
                found.append(" ".join(words[start:]))
    return [s for s in found if s.strip(" .!?…,")]


def group(found: list[str], limit: int = MAX_SCENES) -> list[str]:
    """At most `limit` scenes: consecutive sentences together, the first ones taking more."""
    if len(found) <= limit:
        return list(found)
    size, extra = divmod(len(found), limit)
    scenes, start = [], 0
    for i in range(limit):
        end = start + size + (1 if i < extra else 0)
        scenes.append(" ".join(found[start:end]))
        start = end
    return scenes


def read(story: BookText, max_chars: int = 1000) -> Book:
    """The story's scenes and options; options.OptionError says what to fix."""
    found = options.parse(story.text, max_chars)  # the options, wherever they stand
    scenes: list[str] = []
    for line in story.text.splitlines():
        if not line.strip():
            continue
        try:  # each line without its options (`…, 수채화` or `제외: 사람`)
            cleaned = options.parse(line, max_chars).prompt
        except options.OptionError:
            continue  # a line of options only
        scenes.extend(sentences(cleaned))
    return Book(story.kind, tuple(group(scenes)), found)


# --- The prompts the worker draws --------------------------------------------------------------

_ARTICLE = {"a", "an", "the", "one", "two", "three", "my", "our", "his", "her", "their"}
_STOP = {
    "is", "are", "was", "were", "am", "be", "has", "have", "had", "will", "would", "can",
    "could", "do", "does", "did", "and", "who", "that", "which", "goes", "went", "go",
    "plays", "played", "walks", "walked", "runs", "ran", "jumps", "jumped", "sits", "sat",
    "looks", "looked", "eats", "ate", "sees", "saw", "finds", "found", "meets", "met",
    "flies", "flew", "swims", "swam", "sleeps", "slept", "gets", "got", "makes", "made",
    "takes", "took", "comes", "came", "says", "said", "loves", "likes", "wants", "stands",
    "stood", "rides", "rode", "reads", "read", "draws", "drew", "sings", "sang", "lives",
    "lived", "opens", "opened", "falls", "fell", "holds", "held", "climbs", "climbed",
    "play", "run", "walk", "jump", "sit", "look", "eat", "sleep", "fly", "swim", "dance",
    "sing", "smile", "smiles", "cry", "cries", "laugh", "laughs",
}  # fmt: skip
MAX_CHARACTER_WORDS = 10
_DANGLING = _ARTICLE | {"in", "with", "of", "on", "at", "and", "wearing"}


def character(first_scene_english: str) -> str:
    """The shared "character" phrase: the first scene's subject noun phrase (docs/chat.md).

    The English words from the start up to the first verb, at most ten: a word from a list of
    common verbs and auxiliaries; or, from the third word on, a word ending in -ed or -ing, or
    in -s when no preposition came before it (`A koala climbs`; but `A girl in red boots`
    keeps `boots`). A phrase that does not start with an article or a determiner is none: the
    sentence then does not open with its subject (`Yesterday, ...`)."""
    words = [w.strip(" ,.;:!?\"'") for w in first_scene_english.split()]
    words = [w for w in words if w]
    if not words or words[0].lower() not in _ARTICLE:
        return ""
    phrase: list[str] = []
    for i, word in enumerate(words[: MAX_CHARACTER_WORDS + 1]):
        low = word.lower()
        if low in _STOP or (i >= 2 and len(low) > 4 and low.endswith(("ed", "ing"))):
            break
        # A present-tense verb right after the subject's noun: `A koala climbs`, not `in boots`.
        if (
            i >= 2
            and _verb_s(low)
            and words[i - 1].lower() not in _DANGLING
            and not any(w.lower() in _DANGLING - _ARTICLE for w in words[1:i])
        ):
            break
        phrase.append(word)
    else:
        return ""  # no verb within reach: not a subject phrase
    while phrase and phrase[-1].lower() in _DANGLING:
        phrase.pop()  # never end on `in a`
    return " ".join(phrase) if len(phrase) >= 2 else ""


def _verb_s(word: str) -> bool:
    """A word that may be a verb in -s (`climbs`, `watches`), not `-ss` (`dress`)."""
    return word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3


@dataclass(frozen=True)
class Composed:
    """One scene's prompt, and what was cut to fit CLIP's window."""

    prompt: str
    character_cut: bool = False
    style_cut: bool = False


def compose(
    scene: str, shared: str, style: str, count: Callable[[str], int], limit: int
) -> Composed:
    """`scene, shared character, style` within `limit` CLIP tokens. The scene's own words stay
    whole: the character phrase is cut first (from its end), then the style words."""

    def joined(char_words: list[str], style_words: list[str]) -> str:
        parts = [scene, " ".join(char_words), ", ".join(style_words)]
        return ", ".join(p for p in parts if p)

    char_words = shared.split() if shared and shared.lower() not in scene.lower() else []
    style_words = [w.strip() for w in style.split(",") if w.strip()]
    char_cut = style_cut = False
    while char_words and count(joined(char_words, style_words)) > limit:
        char_words.pop()
        while char_words and char_words[-1].lower() in _DANGLING:
            char_words.pop()  # never end on `in a`
        char_cut = True
    while style_words and count(joined(char_words, style_words)) > limit:
        style_words.pop()
        style_cut = True
    if shared and not char_words and shared.lower() not in scene.lower():
        char_cut = True
    return Composed(joined(char_words, style_words), char_cut, style_cut)
