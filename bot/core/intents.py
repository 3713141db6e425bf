"""Decide what a message asks for: the command and intent table (docs/chat.md; the action set
is bot/core/actions.py).

| message (trimmed, case-insensitive)                   | action   |
| ----------------------------------------------------- | -------- |
| empty, `도움말`, `help`, `?`, `사용법`, `/help`, `/start` | help     |
| a greeting alone: `안녕`, `안녕하세요`, `hi`, `hello`, … | welcome  |
| `다시 그리기`, `다시`, `redraw`, `again`                | redraw   |
| `결과 보기`, `결과`, `result`                           | results  |
| `취소`, `요청 취소`, `cancel`                            | cancel   |
| `/…` from an operator id (bot/core/operator.py)            | admin    |
| `새 사진`, `new photo`                                 | new_photo |
| `기록 삭제`, `delete history`                           | forget   |
| `같은 시드로`, `same seed`: keep the last seed for the next prompt | same_seed |
| `<스타일>로 다시 그리기`, `redraw as <style>`: last request, that style | restyle |
| `이 사진을 수채화로`, `이 사진 조금 유화로 바꿔 줘`, `this photo as anime`, … | photo_restyle |
| the same without a photo in the session                | photo_first |
| a photo is in the session and the message mentions it or looks like a question | ask |
| a photo is in the session and the message asks to draw (`그려`, `draw`, …) | draw |
| a photo is in the session: anything else (a follow-up such as `색깔은`) | ask |
| no photo, and the message mentions a photo or looks like a question | photo_hint |
| `동화:`, `그림일기:`, `만화:`, `스토리보드:`, `story:`, `diary:`, … | storybook |
| anything else                                         | draw     |

Photo redraws (`photo_restyle`): `이|그|내 사진을|사진 …` (or `this|my|the photo as|into …`)
followed by a style, with `조금`/`살짝` or `많이` for the strength; other words need a verb of
changing (`… 풍경으로 바꿔 줘`, `make this photo into …`), so questions are never taken for one.
A message *mentions a photo* when it says `이 사진`, `사진 속`, `사진에`, `사진을`, `사진의`,
`이 영상`, `영상 속`, `this photo`, `the picture`, `in the image`, … (PHOTO_WORDS).
It *looks like a question* when it ends with `?`, holds a Korean question word as a word of its
own (`뭐`, `무엇이`, `누구`, `어디`, `왜`, `어떻게`, `몇`, `언제`, … but not `어디론가`), ends in
a question ending (`-나요`, `-까`, `-니`, `-냐`, `-습니까`), asks to be told (`설명해 줘`,
`알려 줘`, `읽어 줘`), or starts with an English question word (`what`, `who`, `is`, `can`,
`describe`, …). It *asks to draw* when it holds `그려`, `그리기`, `그림으로`, `draw`, `paint`,
`sketch`, or carries drawing options (a style, shape, seed or `--flag`: bot/core/options.py).
A photo alone (no text) never reaches this table: the core receives it first.
"""

from __future__ import annotations

import re

from bot.core import options, storybook
from bot.core.actions import Action, ActionName

HELP = {"", "도움말", "help", "?", "？", "사용법", "/help", "/start", "메뉴", "menu"}
GREETINGS = {
    "안녕",
    "안녕하세요",
    "안녕하세용",
    "하이",
    "반가워",
    "반가워요",
    "반갑습니다",
    "헬로",
    "hi",
    "hello",
    "hey",
    "hiya",
    "good morning",
    "good evening",
}
REDRAW = {"다시 그리기", "다시그리기", "다시", "redraw", "again", "retry"}
RESULTS = {"결과 보기", "결과보기", "결과", "result", "results"}
CANCEL = {"취소", "요청 취소", "요청취소", "cancel"}
SAME_SEED = {"같은 시드로", "같은 시드", "같은시드로", "같은시드", "same seed", "keep seed"}
NEW_PHOTO = {"새 사진", "새사진", "새로운 사진", "new photo", "new picture"}
FORGET = {"기록 삭제", "기록삭제", "기록 지우기", "delete history", "forget me", "forget"}
PHOTO_WORDS = re.compile(
    r"(이\s*사진|사진\s*속|사진에|사진을|사진의|사진은|사진 안|이\s*영상|영상\s*속|영상에|영상을|"
    r"이\s*그림에|\b(this|the|that|my)\s+(photo|picture|pic|image|video|clip)\b|"
    r"\bin\s+(the|this)\s+(photo|picture|image|video)\b)"
)
QUESTION_WORD = re.compile(
    r"^(뭐|뭘|뭔|무엇|무슨|누구|누가|어디|왜|어떻게|어떤|어때|몇|언제|얼마|얼마나|어느)"
    r"(이|을|를|가|야|지|니|냐|예요|에요|이에요|인가요|인지|인가|에|에서|서|나|나요|까|요|개|명|"
    r"살|장|번|마리|시|색|색깔)?$"
)
QUESTION_ENDING = re.compile(r"(나요|가요|까요|습니까|니까|는지|니|냐|까|죠)$")
TELL_ME = re.compile(r"(설명\s*해|알려|읽어|말해|찾아|세어|봐)\s*(줘|주세요|줄래|주실래)")
ENGLISH_QUESTION = {
    "what", "what's", "whats", "who", "who's", "whom", "whose", "where", "where's", "why",
    "how", "how's", "which", "when", "is", "are", "was", "were", "do", "does", "did", "can",
    "could", "would", "will", "should", "describe", "tell", "read", "explain", "count",
    "identify",
}  # fmt: skip
DRAW_WORDS = re.compile(r"(그려|그리기|그림으로|\b(draw|paint|sketch|illustrate)\b)")
TRAILING = re.compile(r"[\s!~.?？！。ㅎㅋ^]+$")


def normalise(text: str) -> str:
    """Lower-case, single spaces, no trailing punctuation or laughter."""
    collapsed = " ".join(text.split()).lower()
    return TRAILING.sub("", collapsed) if collapsed not in HELP else collapsed


def mentions_photo(text: str) -> bool:
    """Whether the message refers to a photo or video (PHOTO_WORDS)."""
    return bool(PHOTO_WORDS.search(" ".join(text.split()).lower()))


def looks_like_question(text: str) -> bool:
    """The question rules in the table above."""
    collapsed = " ".join(text.split()).lower()
    if collapsed.endswith(("?", "？")):
        return True
    words = [w.strip(".,!~…\"'()") for w in collapsed.split()]
    words = [w for w in words if w]
    if not words:
        return False
    if any(QUESTION_WORD.match(word) for word in words) or TELL_ME.search(collapsed):
        return True
    if QUESTION_ENDING.search(words[-1]) and _hangul(words[-1]):
        return True
    return words[0] in ENGLISH_QUESTION


def _hangul(word: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" for ch in word)


def decide(text: str, has_photo: bool = False) -> Action:
    """Map a message to an action by the table above; `has_photo`: the session holds a photo."""
    key = normalise(text)
    if key in HELP or text.strip() in HELP:
        return Action(ActionName.HELP)
    if key in GREETINGS:
        return Action(ActionName.WELCOME)
    if key in REDRAW:
        return Action(ActionName.REDRAW)
    if key in RESULTS:
        return Action(ActionName.RESULTS)
    if key in CANCEL:
        return Action(ActionName.CANCEL)
    if key in NEW_PHOTO:
        return Action(ActionName.NEW_PHOTO)
    if key in FORGET:
        return Action(ActionName.FORGET)
    if key in SAME_SEED:
        return Action(ActionName.SAME_SEED)
    if storybook.book_text(text) is not None:
        return Action(ActionName.STORYBOOK, text.strip())
    style = options.restyle_command(text)
    if style is not None:
        return Action(ActionName.RESTYLE, style)
    if options.photo_restyle(text) is not None:
        return Action(
            ActionName.PHOTO_RESTYLE if has_photo else ActionName.PHOTO_FIRST, text.strip()
        )
    question = mentions_photo(text) or looks_like_question(text)
    if has_photo:
        if not question and (DRAW_WORDS.search(key) or options.has_options(text)):
            return Action(ActionName.DRAW, text.strip())
        return Action(ActionName.ASK, text.strip())
    if question:
        return Action(ActionName.PHOTO_HINT, text.strip())
    return Action(ActionName.DRAW, text.strip())
