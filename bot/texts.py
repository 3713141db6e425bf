"""Every user-facing sentence, in Korean and English. Short, kind, never a stack trace."""

from __future__ import annotations

import re

from bot.events import QuickReply

HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")
LATIN = re.compile(r"[A-Za-z]")

MESSAGES: dict[str, tuple[str, str]] = {
    "help": (
        "코알라톡이에요. 그리고 싶은 장면을 한 문장으로 보내 주세요.\n"
        "예: 우주를 떠다니는 고양이, 수채화\n"
        "• 다시 그리기: 같은 문장을 새로 그려요\n"
        "• 결과 보기: 늦게 끝난 그림을 받아요\n"
        "그림은 AI가 만들어요. 그림과 문장은 하루 동안 보관한 뒤 지워요.",
        "This is KoalaTalk. Send one sentence describing the picture you want.\n"
        "e.g. a cat floating in space, watercolor\n"
        "• redraw: draw the same prompt again\n"
        "• result: get a picture that finished late\n"
        "Pictures are made by AI. Pictures and prompts are kept for one day, then deleted.",
    ),
    "welcome": (
        "안녕하세요! 코알라톡이에요. 그리고 싶은 장면을 보내 주시면 AI가 그림으로 그려 드려요.",
        "Hello! I'm KoalaTalk. Describe a scene and an AI will draw it for you.",
    ),
    "drawing": ("그림을 그리고 있어요. 잠시만 기다려 주세요!", "Drawing your picture, one moment!"),
    "still_drawing": (
        "아직 그리는 중이에요. 조금 뒤에 '결과 보기'를 눌러 주세요.",
        "Still drawing. Tap 'result' in a moment.",
    ),
    "busy_slot": (
        "앞서 보낸 요청을 아직 처리하고 있어요. 끝나면 다시 보내 주세요.",
        "Your previous request is still in progress. Please send again when it's done.",
    ),
    "done_line": ("AI가 그린 그림이에요: {prompt}", "Drawn by AI: {prompt}"),
    "no_last_prompt": (
        "다시 그릴 문장이 없어요. 그리고 싶은 장면을 먼저 보내 주세요.",
        "There's nothing to redraw yet. Send a prompt first.",
    ),
    "nothing_kept": ("받지 않은 결과가 없어요.", "There are no results waiting for you."),
    "kept_note": (
        "지난번에 요청하신 결과예요. 방금 보낸 메시지는 아래 버튼으로 다시 보낼 수 있어요.",
        "Here is the result of your earlier request. Tap below to resend your new message.",
    ),
    "kept_note_plain": (
        "지난번에 요청하신 결과예요.",
        "Here is the result of your earlier request.",
    ),
    "kept_more": ("받지 않은 결과가 {n}개 더 있어요.", "{n} more results are waiting."),
    "expired": (
        "요청이 많이 밀려서 '{prompt}' 그림을 제시간에 그리지 못했어요. 다시 보내 주세요.",
        "We were too busy to draw '{prompt}' in time. Please send it again.",
    ),
    "failed": (
        "죄송해요, 그림을 그리다 문제가 생겼어요. 잠시 뒤 다시 시도해 주세요.",
        "Sorry, something went wrong while drawing. Please try again shortly.",
    ),
    "worker_lost": (
        "죄송해요, 앞서 보낸 요청을 처리하던 서버가 멈췄어요. 다시 보내 주세요.",
        "Sorry, the server working on your previous request stopped. Please send it again.",
    ),
    "unreadable": (
        "메시지를 읽지 못했어요. 그리고 싶은 장면을 글로 보내 주세요.",
        "I couldn't read that message. Please describe the picture in text.",
    ),
    "too_long": (
        "문장이 너무 길어요. {n}자 이내로 줄여서 보내 주세요.",
        "That prompt is too long. Please keep it under {n} characters.",
    ),
    "unavailable": (
        "지금은 그림 서버가 준비되지 않았어요. 잠시 뒤 다시 시도해 주세요.",
        "The drawing server isn't ready right now. Please try again shortly.",
    ),
    "server_busy": (
        "지금 요청이 많아 잠시 쉬고 있어요. 1분 뒤 다시 보내 주세요.",
        "We're very busy right now. Please try again in a minute.",
    ),
    "quick_redraw": ("다시 그리기", "redraw"),
    "quick_help": ("도움말", "help"),
    "quick_result": ("결과 보기", "result"),
    "quick_resend": ("보낸 말 다시 보내기", "resend message"),
    "alt_picture": ("AI가 그린 그림", "Picture drawn by AI"),
}


def detect_lang(text: str) -> str:
    """`en` when the text has Latin letters and no Hangul, else `ko`."""
    if HANGUL.search(text):
        return "ko"
    return "en" if LATIN.search(text) else "ko"


def say(key: str, lang: str = "ko", **values: object) -> str:
    """The message `key` in `lang`, with values filled in."""
    ko, en = MESSAGES[key]
    return (en if lang == "en" else ko).format(**values)


def quick(key: str, lang: str = "ko") -> QuickReply:
    """A quick reply whose label and message are the same command word."""
    word = say(key, lang)
    return QuickReply(word, word)


def help_quick_replies(lang: str = "ko") -> tuple[QuickReply, ...]:
    """Quick replies under the help and welcome texts."""
    examples = {
        "ko": (("코알라 그리기", "벚꽃 길을 걷는 코알라"), ("등대 그리기", "밤하늘의 등대, 유화")),
        "en": (
            ("draw a koala", "a koala walking under cherry blossoms"),
            ("lighthouse", "a lighthouse at night, oil painting"),
        ),
    }["en" if lang == "en" else "ko"]
    return (*(QuickReply(label, text) for label, text in examples), quick("quick_help", lang))
