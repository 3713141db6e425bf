"""Decide what a message asks for: the command and intent table (docs/chat.md; the action set
is bot/core/actions.py; tests/data/intents.tsv scores it).

Commands are matched with spacing, punctuation, emoji and laughter (`ㅋㅋ`, `ㅠㅠ`) ignored.

| message                                                    | action        |
| ---------------------------------------------------------- | ------------- |
| empty, `도움말`, `?`, `사용법 알려줘`, `어떻게 써?`, `뭐 할 수 있어?`, `기능`, … | help |
| a greeting alone: `안녕`, `ㅎㅇ`, `안녕하세요 😊`, `hi`, …   | welcome       |
| `다시 그리기`, `다시 그려줘`, `한 번 더`, `redraw`, `again` | redraw        |
| `결과 보기`, `다 됐어?`, `그림 언제 와?`, `result`          | results       |
| `취소`, `그만`, `멈춰`, `cancel`, `stop`                    | cancel        |
| `/…` from an operator id (bot/core/operator.py)            | admin         |
| `새 사진`, `다른 사진`, `new photo`                         | new_photo     |
| `기록 삭제`, `내 기록 지워줘`, `delete history`             | forget        |
| `같은 시드로`, `시드 고정`, `same seed`                      | same_seed     |
| `<스타일>로 다시 그리기`, `redraw as <style>`               | restyle       |
| `이 사진을 수채화로`, `this photo as anime`, …              | photo_restyle |
| the same without a photo in the session                    | photo_first   |
| the quick reply `이 문장으로 그리기` / `draw this instead`   | draw_instead  |
| the quick reply `사진에 대해 묻기` / `ask about the photo`   | ask_instead   |
| thanks, praise, laughter, yes/no, `ㅋㅋ`, reaction emoji (`👍😊❤️`) | small_talk |
| `왜?`, `뭐?`, `진짜?` alone: small talk; with a photo a follow-up | small_talk / ask |
| a drawing request (below)                                  | draw          |
| a question, or the message mentions a photo: with a photo  | ask           |
| the same without a photo                                   | photo_hint    |
| `동화:`, `그림일기:`, `만화:`, `스토리보드:`, `story:`, `diary:`, … | storybook |
| anything else, with a photo, inside the follow-up window   | ask (+ quick reply: draw) |
| anything else, with a photo, after the follow-up window    | draw (+ quick reply: ask) |
| anything else, no photo                                    | draw          |

A *drawing request* asks to draw (`그려`, `그려줄래?`, `그리기`, `그림으로`, `draw`, `paint`),
names a picture at its end (`…그림`, `…일러스트`, `…풍경화`, `…캐릭터`, `…배경화면`, `…장면`,
`…로고 만들어줘`, `…스타일로`), says `사진처럼`, starts with `!`, or carries drawing options (a
style, shape, seed or `--flag`: bot/core/options.py). It is drawn with or without a photo in the
session, unless it mentions the photo or holds a question word (`뭐`, `누구`, …).
The *follow-up window* is PHOTO_FOLLOWUP_S after the last photo or answer (the core passes
`followup`): there a message that is neither a drawing request nor a question is read as a
follow-up question; after it, as a prompt. Either way the other reading is `Action.other`, which
the core offers as a quick reply.

Photo redraws (`photo_restyle`): `이|그|내 사진을|사진 …` (or `this|my|the photo as|into …`)
followed by a style, with `조금`/`살짝` or `많이` for the strength; other words need a verb of
changing (`… 풍경으로 바꿔 줘`, `make this photo into …`), so questions are never taken for one.
A message *mentions a photo* when it says `이 사진`, `사진 속`, `사진에`, `사진을`, `사진의`,
`이 영상`, `영상 속`, `this photo`, `the picture`, `in the image`, … (PHOTO_WORDS).
It *looks like a question* when it ends with `?`, holds a Korean question word as a word of its
own (`뭐`, `무엇이`, `누구`, `어디`, `왜`, `어떻게`, `몇`, `언제`, … but not `어디론가`) or at the
end of its last word (`여기어디야`), ends in a question ending (`-나요`, `-까`, `-니`, `-냐`,
`-습니까`), asks to be told (`설명해 줘`, `알려 줘`, `읽어 줘`, `번역해 줘`, `자세히`), is a short
fragment ending in a topic particle (`색깔은`, `왼쪽에 있는 사람은`), or starts with an English
question word (`what`, `who`, `is`, `can`, `describe`, …).
A photo alone (no text) never reaches this table: the core receives it first.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from bot.core import options, storybook
from bot.core.actions import Action, ActionName
from bot.core.texts import MESSAGES

HELP = {"", "도움말", "help", "?", "？", "사용법", "/help", "/start", "메뉴", "menu"}
HELP_WORDS = {
    "도움말", "help", "사용법", "메뉴", "menu", "헬프", "도움", "도와줘", "도와주세요", "기능",
    "명령어", "명령어목록", "commands", "command", "helpme", "사용방법", "/help", "/start",
}  # fmt: skip
HELP_PATTERN = re.compile(
    r"(사용\s*법|사용\s*방법|이용\s*방법|쓰는\s*법|그리는\s*법|"
    r"^(?:무슨\s*|어떤\s*)?(?:기능|명령어)(?:$|\s|이|은|좀|들)|"
    r"(?:어떻게|어케|어캐)\s*(?:써|쓰|사용|이용|그려|그리|보내|해야)|"
    r"(?:뭐|뭘|무엇을?)\s*(?:할|하)\s*(?:수|줄)|뭐\s*하는\s*봇|코알라톡\s*(?:이|은|는)?\s*(?:뭐|뭔)|"
    r"^how\s+(?:does\s+(?:this|it)\s+work|do\s+i\s+use\s+(?:this|it|you)|"
    r"to\s+use\s+(?:this|it|you))$|^what\s+can\s+you\s+do$)"
)
GREETINGS = {
    "안녕", "안녕하세요", "안녕하세용", "안녕하세여", "안뇽", "하이", "하이루", "ㅎㅇ",
    "ㅎㅇㅎㅇ", "방가",
    "방가방가", "반가워", "반가워요", "반갑습니다", "헬로", "헬로우", "hi", "hello", "hey",
    "hiya", "heythere", "hithere", "goodmorning", "goodevening", "굿모닝", "좋은아침",
    "좋은아침이에요", "좋은아침입니다", "안녕코알라", "코알라안녕", "코알라야안녕",
    "안녕코알라톡", "처음왔어요", "처음이에요",
}  # fmt: skip
REDRAW = {"다시그리기", "다시", "redraw", "again", "retry", "tryagain", "onemore", "재생성"}
REDRAW_PATTERN = re.compile(
    r"^(?:(?:맘|마음)에\s*안\s*들어\s*)?(?:다시|한\s*번\s*더|또)\s*(?:그려|그리기|해)?\s*"
    r"(?:줘|주세요|줄래|봐|요)?$"
)
RESULTS = {"결과보기", "결과", "result", "results", "결과보여줘", "결과줘", "결과좀", "결과는"}
RESULTS_PATTERN = re.compile(
    r"(^(?:그림|결과)\s*(?:아직|언제|어디)|^(?:다|그림\s*다)\s*(?:됐|되었)어|"
    r"^where\s+is\s+my\s+(?:picture|image|result))"
)
CANCEL_PATTERN = re.compile(
    r"^(?:요청\s*)?(?:취소|그만|멈춰|중지|스톱)"
    r"(?:\s*(?:해|할래|할게|해\s*줘|해\s*주세요|요|해요|그려|해))?$|^(?:cancel|stop)$"
)
NEW_PHOTO_PATTERN = re.compile(
    r"^(?:새|새로운|다른)\s*사진(?:\s*(?:보낼게요?|보낼래|줄게|올릴게))?$|^사진\s*바꿀(?:래|게)$|"
    r"^new\s+(?:photo|picture)$"
)
FORGET_PATTERN = re.compile(
    r"^(?:(?:내|대화)\s*)?(?:기록|사진|데이터)(?:\s*다)?\s*(?:삭제|지워|지우기)"
    r"(?:\s*(?:해|해\s*줘|해\s*주세요|줘|주세요|요))?$|"
    r"^(?:delete\s+(?:my\s+)?(?:history|data)|forget\s+me|forget)$"
)
SAME_SEED_PATTERN = re.compile(
    r"^(?:같은\s*시드(?:로)?|시드\s*고정)(?:\s*(?:해|해\s*줘|해\s*주세요|그려\s*줘))?$|"
    r"^(?:same|keep)\s+seed$"
)
# The quick replies that do the other reading (bot/core/texts.py): their labels are fixed, so a
# tap arrives as one of these words whatever the reading kept behind it.
DRAW_INSTEAD = {MESSAGES["quick_draw_instead"][0], MESSAGES["quick_draw_instead"][1]}
ASK_INSTEAD = {MESSAGES["quick_ask_instead"][0], MESSAGES["quick_ask_instead"][1]}

SMALL_WORDS = {
    "고마워", "고마워요", "고맙습니다", "고맙다", "감사", "감사합니다", "감사해요", "감사해",
    "땡큐", "땡스", "thanks", "thank", "you", "thx", "ty", "좋아", "좋네", "좋아요", "좋다",
    "좋네요", "멋지다", "멋져", "멋져요", "멋있다", "와", "와우", "우와", "대박", "예쁘다",
    "이쁘다", "예뻐", "이뻐", "예뻐요", "잘했어", "잘했어요", "최고", "최고야", "최고예요", "굿",
    "굳", "굳굳", "굿굿", "nice", "cool", "awesome", "great", "job", "good", "wow", "lol",
    "lmao", "헐", "오", "오오", "응", "웅", "엉", "네", "넹", "넵", "예", "그래", "그래요",
    "알겠어", "알겠어요", "알겠습니다", "알았어", "오케이", "ok", "okay", "yes", "yeah", "yep",
    "아니", "아니야", "아니요", "아뇨", "no", "nope", "음", "흠", "음음", "잘자", "잘자요", "바이",
    "빠이", "bye", "아", "그렇구나", "그렇군요", "신기하다", "신기해", "신기하네", "사랑해",
    "귀엽다", "귀여워", "웃기다", "웃겨", "너", "똑똑하다", "똑똑해", "수고했어", "수고했어요",
    "수고하셨습니다", "미안", "미안해", "죄송해요", "잘", "그렸네", "그렸다", "완전", "너무",
    "맘에", "마음에", "들어", "들어요", "든다", "재밌다", "재밌어", "훌륭해", "짱", "쩐다",
    "감동", "오호", "so", "much", "very",
}  # fmt: skip
# A bare question word alone: small talk without a photo, a follow-up question with one.
INTERJECTIONS = {"왜", "왜요", "뭐", "뭐라고", "진짜", "정말", "엥", "어", "why", "what", "really"}
PHOTO_WORDS = re.compile(
    r"((?<![\uac00-\ud7a3])이\s*사진|사진\s*속|사진에|사진을|사진의|사진은|사진 안|이\s*영상|"
    r"영상\s*속|영상에|영상을|"
    r"이\s*그림에|\b(this|the|that|my)\s+(photo|picture|pic|image|video|clip)\b|"
    r"\bin\s+(the|this)\s+(photo|picture|image|video)\b)"
)
QUESTION_WORD = re.compile(
    r"^(뭐|뭘|뭔|무엇|무슨|누구|누가|어디|왜|어떻게|어떤|어때|몇|언제|얼마|얼마나|어느)"
    r"(이|을|를|가|야|여|임|지|니|냐|예요|에요|이에요|인가요|인지|인가|에|에서|서|나|나요|까|요|개|"
    r"명|살|장|번|마리|시|색|색깔)?$"
)
LAST_WORD_QUESTION = re.compile(r"(뭐|뭔데|어디|누구|얼마)(야|여|임|예요|에요|이야|지|니|냐|요)?$")
QUESTION_ENDING = re.compile(r"(나요|가요|까요|습니까|니까|는지|니|냐|까|죠)$")
TELL_ME = re.compile(
    r"((설명|해석|번역|계산)\s*해|알려|읽어|말해|찾아|세어|봐|풀어)\s*(줘|주세요|줄래|주실래|줘요)"
    r"|자세히|자세하게"
)
TOPIC_END = re.compile(r"([\uac00-\ud7a3](은|는)|^건)$")  # `색깔은`, `있는 건`
# ... but not a verb or adjective before a noun left out: `하늘을 나는`, `작은`.
ADNOMINAL = re.compile(
    r"(하는|있는|없는|나는|먹는|웃는|자는|가는|오는|우는|리는|치는|타는|드는|쓰는|보는|입는|노는|"
    r"사는|뛰는|걷는|읽는|피는|지는|작은|높은|붉은|깊은|넓은|좋은|같은|많은|검은|낮은|맑은|밝은|"
    r"늙은|젊은|짧은|굵은|얇은)$"
)
ENGLISH_QUESTION = {
    "what", "what's", "whats", "who", "who's", "whom", "whose", "where", "where's", "why",
    "how", "how's", "which", "when", "is", "are", "was", "were", "do", "does", "did", "can",
    "could", "would", "will", "should", "describe", "tell", "read", "explain", "count",
    "identify",
}  # fmt: skip
DRAW_WORDS = re.compile(
    r"(그려(?!져|진|지)|그리기|그릴래|그릴\s*수|그림으로|\b(draw|paint|sketch|illustrate)\b)"
)
PICTURE_NOUN = re.compile(
    r"(그림|일러스트|삽화|풍경화|초상화|캐릭터|배경\s*화면|바탕\s*화면|월페이퍼|장면|로고|포스터|"
    r"스티커|이모티콘|웹툰|컨셉\s*아트|그림체로|스타일로|스타일|풍으로|느낌으로|사진\s*처럼)$"
)
PICTURE_FILLER = re.compile(
    r"(\s*(하나|한\s*장|좀|부탁해요?|부탁드려요|만들어\s*(줘|주세요|줄래)|please|ㄱ+))+$"
)
LIKE_A_PHOTO = re.compile(r"(사진|실사)\s*(처럼|같은|같이)")
TRAILING = re.compile(r"[\s!~.?？！。ㅎㅋ^]+$")
LAUGHTER = re.compile(r"[ㅋㅠㅜ]+|ㅎ{2,}")
PUNCTUATION = re.compile(r"[!~.?？！。…,，\"'^*♡♥:;()\[\]-]+")
JAMO = re.compile(r"^[\u3131-\u318e\s]+$")


def normalise(text: str) -> str:
    """Lower-case, single spaces, no trailing punctuation or laughter."""
    collapsed = " ".join(text.split()).lower()
    return TRAILING.sub("", collapsed) if collapsed not in HELP else collapsed


@functools.lru_cache(maxsize=1024)
def bare(text: str) -> str:
    """Lower-case words without emoji, laughter (`ㅋㅋ`, `ㅠㅠ`, `ㅎㅎ`) or punctuation.
    Cached: one decision asks for the same message's words several times."""
    kept = "".join(" " if _is_emoji(ch) else ch for ch in text.lower())
    return " ".join(PUNCTUATION.sub(" ", LAUGHTER.sub(" ", kept)).split())


def compact(text: str) -> str:
    """`bare` without spaces: spacing mistakes do not matter to commands."""
    return bare(text).replace(" ", "")


def mentions_photo(text: str) -> bool:
    """Whether the message refers to a photo or video (PHOTO_WORDS)."""
    return bool(PHOTO_WORDS.search(" ".join(text.split()).lower()))


def looks_like_question(text: str) -> bool:
    """The question rules in the table above."""
    collapsed = " ".join(text.split()).lower()
    if collapsed.endswith(("?", "？")):
        return True
    words = bare(collapsed).split()
    if not words:
        return False
    if any(QUESTION_WORD.match(word) for word in words) or TELL_ME.search(collapsed):
        return True
    last = words[-1]
    if _hangul(last) and (QUESTION_ENDING.search(last) or LAST_WORD_QUESTION.search(last)):
        return True
    if len(words) <= 4 and TOPIC_END.search(last) and not ADNOMINAL.search(last):
        return True
    return words[0] in ENGLISH_QUESTION


def has_question_word(text: str) -> bool:
    """A Korean question word as a word of its own (`뭐`, `누구`, `어디`, …)."""
    return any(QUESTION_WORD.match(word) for word in bare(text).split())


def asks_to_draw(text: str) -> bool:
    """A drawing request: a drawing verb, a picture named at the end, `사진처럼`, a leading `!`,
    or drawing options (the table above)."""
    words = bare(text)
    if DRAW_WORDS.search(words) or LIKE_A_PHOTO.search(words):
        return True
    if PICTURE_NOUN.search(PICTURE_FILLER.sub("", words)):
        return True
    return bool(options.NO_TRANSLATE.match(text)) or options.has_options(text)


def is_small_talk(text: str) -> bool:
    """Thanks, praise, laughter, yes/no, jamo, or reaction emoji only (nothing to draw or ask).
    Emoji of things (`🐱🚀`) are left to the prompt rules, which ask for words."""
    words = bare(text)
    if not words:  # emoji, laughter or punctuation only
        return bool(text.strip()) and all(_reaction(ch) for ch in text if _is_emoji(ch))
    if JAMO.match(words):
        return True  # `ㄱㅅ`, `ㅇㅇ`, `ㅇㅋ`
    return all(word in SMALL_WORDS for word in words.split())


# Faces, hearts, hands and cheers: a reaction, not a picture to draw.
REACTIONS = (
    (0x1F600, 0x1F64F), (0x1F910, 0x1F92F), (0x1F970, 0x1F97A), (0x1FAE0, 0x1FAE8),
    (0x1F44A, 0x1F450), (0x1F918, 0x1F91F), (0x1F932, 0x1F933), (0x1F493, 0x1F49F),
    (0x1F9E1, 0x1F9E1), (0x1F90D, 0x1F90E), (0x1F5A4, 0x1F5A4), (0x2763, 0x2764),
    (0x1F389, 0x1F38A), (0x1F4AF, 0x1F4AF), (0x1F525, 0x1F525), (0x2728, 0x2728),
    (0x263A, 0x263A), (0x270C, 0x270C), (0x1F3FB, 0x1F3FF), (0x200D, 0x200D), (0xFE0F, 0xFE0F),
    (0x2665, 0x2665), (0x1F60A, 0x1F60A),
)  # fmt: skip


def _reaction(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in REACTIONS)


def _hangul(word: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" for ch in word)


def _is_emoji(char: str) -> bool:
    if char.isalnum():  # letters and digits (Hangul included) are never symbols: the common case
        return False
    return unicodedata.category(char) in {"So", "Sk", "Cs", "Co"} or char in "\u200d\ufe0f\u20e3"


def command(text: str) -> ActionName | None:
    """A command word, however spaced or punctuated; None when the message is none."""
    if not text.strip() or text.strip() in HELP:
        return ActionName.HELP
    key, words = compact(text), bare(text)
    if key in DRAW_INSTEAD or words in DRAW_INSTEAD:
        return ActionName.DRAW_INSTEAD
    if key in ASK_INSTEAD or words in ASK_INSTEAD:
        return ActionName.ASK_INSTEAD
    if key in GREETINGS:
        return ActionName.WELCOME
    if key in HELP_WORDS or HELP_PATTERN.search(words):
        return ActionName.HELP
    table: tuple[tuple[ActionName, set[str], re.Pattern[str]], ...] = (
        (ActionName.REDRAW, REDRAW, REDRAW_PATTERN),
        (ActionName.RESULTS, RESULTS, RESULTS_PATTERN),
        (ActionName.CANCEL, set(), CANCEL_PATTERN),
        (ActionName.NEW_PHOTO, set(), NEW_PHOTO_PATTERN),
        (ActionName.FORGET, set(), FORGET_PATTERN),
        (ActionName.SAME_SEED, set(), SAME_SEED_PATTERN),
    )
    for name, exact, pattern in table:
        if key in exact or pattern.search(words):
            return name
    return None


def decide(text: str, has_photo: bool = False, followup: bool = True) -> Action:
    """Map a message to an action by the table above.

    `has_photo`: the session holds a photo; `followup`: the message came inside the follow-up
    window (PHOTO_FOLLOWUP_S after the last photo or answer). A message that could be read
    either way gets the likelier reading, and the other as `Action.other`."""
    name = command(text)
    if name is not None:
        return Action(name)
    if storybook.book_text(text) is not None:
        return Action(ActionName.STORYBOOK, text.strip())
    style = options.restyle_command(text)
    if style is not None:
        return Action(ActionName.RESTYLE, style)
    if options.photo_restyle(text) is not None:
        return Action(
            ActionName.PHOTO_RESTYLE if has_photo else ActionName.PHOTO_FIRST, text.strip()
        )
    if bare(text) in INTERJECTIONS:  # `왜?`, `뭐?`, `진짜?` alone
        return Action(ActionName.ASK if has_photo else ActionName.SMALL_TALK, text.strip())
    if is_small_talk(text):
        return Action(ActionName.SMALL_TALK, text.strip())
    mentions = mentions_photo(text)
    question = looks_like_question(text)
    if not has_photo and not mentions and not question:
        return Action(ActionName.DRAW, text.strip())  # the common prompt: the rules below agree
    if not mentions and not has_question_word(text) and asks_to_draw(text):
        return Action(ActionName.DRAW, text.strip())
    if mentions or question:
        return Action(ActionName.ASK if has_photo else ActionName.PHOTO_HINT, text.strip())
    if not has_photo:
        return Action(ActionName.DRAW, text.strip())
    if followup:  # a follow-up question; one tap draws it instead
        return Action(ActionName.ASK, text.strip(), other=ActionName.DRAW)
    return Action(ActionName.DRAW, text.strip(), other=ActionName.ASK)
