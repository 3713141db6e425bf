"""Every user-facing sentence, in Korean and English. Short, kind, never a stack trace."""

from __future__ import annotations

import re

from bot.core.events import QuickReply

HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")
LATIN = re.compile(r"[A-Za-z]")

MESSAGES: dict[str, tuple[str, str]] = {
    # One bubble, at most 200 characters and 5 lines (tests/test_texts.py).
    "help": (
        "코알라톡이에요. 그리고 싶은 장면을 한 문장으로 보내 주세요.\n"
        "예: 우주를 떠다니는 고양이, 수채화, 가로\n"
        "• 옵션: 가로/세로, 유화·애니 같은 스타일, 시드 1234, 제외: 사람\n"
        "• 사진을 보내면 물어보거나 '이 사진을 수채화로'처럼 다시 그려요\n"
        "• 사진은 {keep} 동안만 보관해요. 바로 지우려면 '기록 삭제'",
        "This is KoalaTalk. Send one sentence describing a picture,\n"
        "e.g. a cat floating in space, watercolor, landscape\n"
        "• Options: portrait/landscape, a style (anime, oil…), --seed 1, --no people\n"
        "• Send a photo to ask about it, or say 'this photo as watercolor'\n"
        "• Photos are kept {keep}; 'delete history' deletes all now",
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
    "nothing_kept": ("지금 보내 드릴 결과가 없어요.", "There are no results waiting for you."),
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
    "photo_received": (
        "사진을 받았어요. 무엇이 궁금하세요?",
        "Got your photo. What would you like to know?",
    ),
    "photos_received": (
        "사진 {n}장을 받았어요. 무엇이 궁금하세요?",
        "Got {n} photos. What would you like to know?",
    ),
    "clip_received": (
        "영상을 받았어요. 무엇이 궁금하세요?",
        "Got your video. What would you like to know?",
    ),
    "photo_partial": (
        "보내신 것 중 {bad}개는 받지 못했어요: {why}",
        "{bad} of them could not be used: {why}",
    ),
    "photo_not_image": (
        "사진 파일이 아니라서 읽을 수 없어요. JPG나 PNG 사진을 보내 주세요.",
        "That isn't a photo I can read. Please send a JPG or PNG photo.",
    ),
    "photo_format": (
        "이 형식의 사진은 읽을 수 없어요. JPG나 PNG 사진으로 보내 주세요.",
        "I can't read this photo format. Please send it as JPG or PNG.",
    ),
    "photo_broken": (
        "사진 파일이 손상돼서 읽지 못했어요. 다시 보내 주세요.",
        "The photo file is damaged and couldn't be read. Please send it again.",
    ),
    "photo_too_big": (
        "사진이 너무 커요. 더 작은 사진을 보내 주세요.",
        "That photo is too large. Please send a smaller one.",
    ),
    "photo_expired": (
        "사진을 열 수 없어요. 주소가 만료되었을 수 있어요. 사진을 다시 보내 주세요.",
        "I couldn't open the photo; its link may have expired. Please send it again.",
    ),
    "photo_host": (
        "이 주소의 사진은 받을 수 없어요. 카카오톡에서 사진을 직접 보내 주세요.",
        "I can't take photos from that address. Please send the photo in the chat.",
    ),
    "photo_unreachable": (
        "사진을 내려받지 못했어요. 잠시 뒤 다시 보내 주세요.",
        "I couldn't download the photo. Please send it again in a moment.",
    ),
    "photo_refused": (
        "사진을 쓰려면 개인정보 이용 동의가 필요해요. 동의하지 않으면 사진을 받지 않아요.",
        "To use your photo I need your consent to the privacy notice. Without it I won't take "
        "the photo.",
    ),
    "photo_gone": (
        "사진 보관 시간이 지나 사진을 지웠어요. 사진을 다시 보내 주세요.",
        "The photo was deleted after its keeping time. Please send it again.",
    ),
    "photo_hint": (
        "사진에 대해 물어보려면 먼저 사진을 보내 주세요. 그림이 필요하면 장면을 설명해 주세요.",
        "To ask about a photo, please send the photo first. For a picture, describe a scene.",
    ),
    "new_photo": (
        "앞의 사진과 대화를 지웠어요. 새 사진을 보내 주세요.",
        "I've deleted the previous photo and chat. Send a new photo.",
    ),
    "forgotten": (
        "사진, 대화 기록, 받지 않은 결과를 모두 지웠어요.",
        "Your photos, chat history and waiting results are all deleted.",
    ),
    "question_too_long": (
        "질문이 너무 길어요. {n}자 이내로 줄여서 물어봐 주세요.",
        "That question is too long. Please keep it under {n} characters.",
    ),
    "clip_too_long": (
        "영상이 너무 길어요. {s}초 이내의 영상을 보내 주세요.",
        "That video is too long. Please send one under {s} seconds.",
    ),
    "clip_too_big": (
        "영상 파일이 너무 커요. 더 짧거나 작은 영상을 보내 주세요.",
        "That video file is too large. Please send a shorter or smaller one.",
    ),
    "clip_broken": (
        "영상을 읽지 못했어요. MP4 영상으로 다시 보내 주세요.",
        "I couldn't read that video. Please send it again as MP4.",
    ),
    "thinking": ("사진을 보고 있어요. 잠시만 기다려 주세요!", "Looking at your photo, one moment!"),
    "still_thinking": (
        "아직 사진을 보고 있어요. 조금 뒤에 '결과 보기'를 눌러 주세요.",
        "Still looking at your photo. Tap 'result' in a moment.",
    ),
    "failed_ask": (
        "죄송해요, 사진을 보다가 문제가 생겼어요. 잠시 뒤 다시 물어봐 주세요.",
        "Sorry, something went wrong while looking at the photo. Please ask again shortly.",
    ),
    "expired_ask": (
        "요청이 많이 밀려서 '{question}' 질문에 제시간에 답하지 못했어요. 다시 물어봐 주세요.",
        "We were too busy to answer '{question}' in time. Please ask again.",
    ),
    "frames_note": (
        "영상에서 고르게 뽑은 {n}장면을 보고 답했어요.",
        "I looked at {n} frames taken evenly from the video.",
    ),
    "empty_answer": (
        "사진을 봤지만 답을 찾지 못했어요. 다르게 물어봐 주세요.",
        "I looked at the photo but found no answer. Please ask another way.",
    ),
    "quick_describe": ("설명해 줘", "describe it"),
    "ask_describe": ("이 사진을 자세히 설명해 줘", "Describe this photo in detail."),
    "quick_whats_in": ("뭐가 있어?", "what's in it?"),
    "ask_whats_in": ("이 사진에 무엇이 있나요?", "What is in this photo?"),
    "quick_read_text": ("글자 읽어 줘", "read the text"),
    "ask_read_text": ("이 사진 속 글자를 읽어 줘", "Read the text in this photo."),
    "quick_new_photo": ("새 사진", "new photo"),
    "quick_forget": ("기록 삭제", "delete history"),
    "quick_redraw": ("다시 그리기", "redraw"),
    "quick_help": ("도움말", "help"),
    "quick_result": ("결과 보기", "result"),
    "quick_resend": ("보낸 말 다시 보내기", "resend message"),
    "alt_picture": ("AI가 그린 그림", "Picture drawn by AI"),
    # Admission and operator controls (bot/core/admission.py, bot/core/operator.py)
    "queued_ahead": (
        "그림을 그리고 있어요. 앞에 {ahead}개가 기다리고 있어서 약 {seconds}초 걸려요.",
        "Drawing your picture. Ahead of you: {ahead_en}, about {seconds_en}.",
    ),
    "queued_soon": (
        "그림을 그리고 있어요. 약 {seconds}초 뒤에 보내 드릴게요!",
        "Drawing your picture, about {seconds_en}!",
    ),
    "too_slow": (
        "지금 요청이 많아서 제시간에 그려 드리기 어려워요. {when} 뒤에 다시 보내 주세요.",
        "We're too busy to finish in time right now. Please try again in {when}.",
    ),
    "no_worker": (
        "지금은 그림 서버가 쉬고 있어요. 잠시 뒤 다시 보내 주세요.",
        "The drawing server is offline right now. Please try again shortly.",
    ),
    "rate_limited": (
        "조금 천천히 보내 주세요. {seconds}초 뒤에 다시 보낼 수 있어요.",
        "Please slow down a little. You can send again in {seconds_en}.",
    ),
    "quota_reached": (
        "오늘은 {n}번까지 요청할 수 있어요. 내일 다시 만나요!",
        "You've reached today's limit ({n}). See you tomorrow!",
    ),
    "duplicate": (
        "같은 요청을 방금 받았어요. 준비되면 보내 드릴게요.",
        "I just got the same request. It's on its way.",
    ),
    "user_blocked": (
        "이 계정은 지금 이용할 수 없어요. 운영자에게 문의해 주세요.",
        "This account can't use the service right now. Please contact the operator.",
    ),
    "cancelled": ("요청을 취소했어요.", "Your request is cancelled."),
    "cancelled_running": (
        "이미 그리기 시작한 요청이라 결과를 보내지 않을게요.",
        "It had already started; its result won't be sent.",
    ),
    "nothing_to_cancel": ("취소할 요청이 없어요.", "There's nothing to cancel."),
    "maintenance_default": (
        "지금은 점검 중이에요. 잠시 뒤에 다시 찾아 주세요.",
        "We're down for maintenance. Please come back shortly.",
    ),
    # Telegram, LINE and the playground (bot/messengers/, bot/web/playground.py)
    "unsupported": (
        "글과 사진만 읽을 수 있어요. 그리고 싶은 장면을 글로 보내거나 사진을 보내 주세요.",
        "I can read text and photos only. Describe a picture in words, or send a photo.",
    ),
    "upload_not_image": (
        "사진 파일이 아니에요. JPG나 PNG 사진을 골라 주세요.",
        "That file isn't a photo. Please pick a JPG or PNG photo.",
    ),
    "upload_too_big": (
        "사진이 너무 커요. {mb}MB 이하의 사진을 골라 주세요.",
        "That photo is too large. Please pick one under {mb} MB.",
    ),
    # Korean prompts, drawing options and safety (bot/core/options.py, workers/prompting.py)
    "notice": (
        "안내: 그림은 AI가 만들어요. 성적이거나 폭력적인 그림, 혐오나 실존 인물을 해치는 그림은 "
        "그리지 않아요. 문장과 그림은 {keep}, 사진은 {photo_keep} 뒤 지워요.",
        "AI-made pictures; nothing sexual, violent or hateful. Prompts and pictures are deleted "
        "after {keep}, photos after {photo_keep}.",
    ),
    "drawn_from": ("그린 영어 문장: {english}", "Drawn from: {english}"),
    "drawn_seed": ("시드 {seed}", "seed {seed}"),
    "prompt_cut": (
        "문장이 길어서 AI가 읽을 수 있는 앞부분(77토큰)만 그렸어요.",
        "Your prompt was too long: only the first part the model reads (77 tokens) was drawn.",
    ),
    "blocked": (
        "죄송해요, 그 내용은 그려 드릴 수 없어요. 다른 장면을 보내 주세요.",
        "Sorry, I can't draw that. Please send a different scene.",
    ),
    "image_blocked": (
        "죄송해요, 그린 그림이 안전 기준에 맞지 않아 보여 드릴 수 없어요. "
        "다른 장면으로 다시 보내 주세요.",
        "Sorry, the picture didn't pass the safety check, so I can't show it. "
        "Please try a different scene.",
    ),
    "image_blurred": (
        "그린 그림이 안전 기준에 걸려 흐리게 처리했어요.",
        "The picture was blurred because it didn't pass the safety check.",
    ),
    "same_seed_set": (
        "다음 문장은 같은 시드({seed})로 그릴게요. 바꾼 문장을 보내 주세요.",
        "Your next prompt will be drawn with the same seed ({seed}). Send the changed prompt.",
    ),
    "photo_first": (
        "다시 그릴 사진이 없어요. 사진을 먼저 보내고 '이 사진을 수채화로'처럼 말해 주세요.",
        "There's no photo to redraw. Send a photo first, then say e.g. 'this photo as watercolor'.",
    ),
    "opt_empty": (
        "그릴 장면이 없어요. 옵션과 함께 그릴 내용도 적어 주세요. 예: 고양이, 수채화, 가로",
        "There's nothing to draw. Add what to draw besides the options, e.g. a cat, watercolor, "
        "landscape",
    ),
    "opt_emoji": (
        "이모지만으로는 그리기 어려워요. 그리고 싶은 장면을 글로 적어 주세요.",
        "I can't draw from emoji alone. Please describe the scene in words.",
    ),
    "opt_two_shapes": (
        "'{a}'와 '{b}'를 함께 적으셨어요. 모양은 하나만 골라 주세요 (정사각, 가로, 세로).",
        "You asked for both '{a}' and '{b}'. Pick one shape: square, landscape or portrait.",
    ),
    "opt_two_styles": (
        "'{a}'와 '{b}' 스타일을 함께 적으셨어요. 스타일은 하나만 골라 주세요.",
        "You asked for both '{a}' and '{b}'. Please pick one style.",
    ),
    "opt_two_seeds": (
        "시드를 두 번({a}, {b}) 적으셨어요. 하나만 적어 주세요.",
        "You gave two seeds ({a} and {b}). Please give one.",
    ),
    "opt_seed_range": (
        "시드는 0부터 {max} 사이의 숫자로 적어 주세요. 예: 시드 1234",
        "A seed is a number from 0 to {max}, e.g. --seed 1234",
    ),
    "opt_seed_missing": (
        "시드 뒤에 숫자를 적어 주세요. 예: 시드 1234",
        "Put a number after the seed, e.g. --seed 1234",
    ),
    "opt_no_missing": (
        "--no 뒤에 빼고 싶은 것을 적어 주세요. 예: --no 사람, 자동차",
        "Put what to leave out after --no, e.g. --no people, cars",
    ),
    "opt_unknown_flag": (
        "'{flag}'는 모르는 옵션이에요. 쓸 수 있는 옵션: {flags}",
        "I don't know the option '{flag}'. Options: {flags}",
    ),
    "opt_unknown_style": (
        "'{value}' 스타일은 몰라요. 고를 수 있는 스타일: {styles}",
        "I don't know the style '{value}'. Styles: {styles}",
    ),
    "opt_unknown_shape": (
        "'{value}' 모양은 몰라요. 정사각, 가로, 세로 중에서 골라 주세요.",
        "I don't know the shape '{value}'. Pick square, landscape or portrait.",
    ),
    "opt_bad_ratio": (
        "'{value}' 비율은 읽지 못했어요. 예: --ar 16:9",
        "I couldn't read the ratio '{value}'. e.g. --ar 16:9",
    ),
    "quick_same_seed": ("같은 시드로", "same seed"),
    # The other reading of an ambiguous message, one tap away (bot/core/intents.py)
    "quick_draw_instead": ("이 문장으로 그리기", "draw this instead"),
    "quick_ask_instead": ("사진에 대해 묻기", "ask about the photo"),
    "other_gone": (
        "앞의 메시지를 찾지 못했어요. 한 번 더 보내 주세요.",
        "I couldn't find your last message. Please send it once more.",
    ),
    "small_thanks": (
        "저도 즐거웠어요! 또 그리고 싶은 장면이 있으면 보내 주세요 😊",
        "You're welcome! Send me another scene any time 😊",
    ),
    "small_talk": (
        "😊 그리고 싶은 장면을 한 문장으로 보내 주세요. 사진을 보내고 물어봐도 돼요.",
        "😊 Describe a scene in one sentence, or send a photo and ask about it.",
    ),
    "small_talk_photo": (
        "😊 사진에 대해 더 궁금한 게 있으면 물어보세요. 그림이 필요하면 장면을 보내 주세요.",
        "😊 Ask more about the photo, or describe a scene to draw.",
    ),
    "restyle_command": ("{style} 다시 그리기", "redraw as {style}"),
    # Storybooks (bot/core/storybook.py, workers/storybook.py)
    "book_empty": (
        "이야기를 두세 문장으로 보내 주세요. 예: 동화: 고양이가 산책을 나갔어요. 비가 왔어요.",
        "Send your story in a few sentences, e.g. story: A cat goes for a walk. It starts to rain.",
    ),
    "book_blocked": (
        '이 문장 때문에 그릴 수 없어요: "{sentence}" 다른 이야기로 보내 주세요.',
        'I can\'t draw this sentence: "{sentence}" Please try another story.',
    ),
    "book_quota": (
        "이 이야기는 그림 {n}장이에요. 오늘은 {left}장만 더 그릴 수 있어요. "
        "문장을 줄여 보내 주세요.",
        "This story is {n} pictures; you can have {left} more today. Please send a shorter story.",
    ),
    "book_done": (
        "AI가 그린 {kind} {n}장이에요. 시드 {seed}",
        "Drawn by AI: a {kind} of {n} pictures. seed {seed}",
    ),
    "book_dropped": (
        "시간 안에 그리려고 마지막 장면 {n}개를 뺐어요.",
        "To finish in time, the last {n} scene(s) were left out.",
    ),
    "book_withheld": (
        "이 장면은 안전 검사에서 가려졌어요.",
        "This scene was withheld by the safety check.",
    ),
    "book_withheld_note": (
        "{n}장은 안전 검사에서 가려져 보내지 않았어요.",
        "{n} picture(s) were withheld by the safety check.",
    ),
    "book_cut": (
        "장면이 길어서 공통 인물·스타일 설명을 일부 줄였어요.",
        "Some scenes were long, so the shared character or style words were shortened.",
    ),
    "quick_book": ("동화로 그리기", "as a storybook"),
    "label_open": ("크게 보기", "Open"),
    "label_all": ("한 장으로 보기", "All in one"),
    "kind_storybook": ("동화", "storybook"),
    "kind_diary": ("그림일기", "picture diary"),
    "kind_comic": ("만화", "comic"),
    "kind_storyboard": ("스토리보드", "storyboard"),
}


def detect_lang(text: str) -> str:
    """`en` when the text has Latin letters and no Hangul, else `ko`."""
    if HANGUL.search(text):
        return "ko"
    return "en" if LATIN.search(text) else "ko"


def say(key: str, lang: str = "ko", **values: object) -> str:
    """The message `key` in `lang`, with values filled in.

    English messages may write `{seconds_en}` or `{ahead_en}` for `seconds` and `ahead` with
    their noun in the right number (`1 second`, `2 seconds`)."""
    ko, en = MESSAGES[key]
    if lang != "en":
        return ko.format(**values)
    for name, noun in (("seconds", "second"), ("ahead", "request")):
        if name in values:
            values[f"{name}_en"] = count_en(int(str(values[name])), noun)
    return en.format(**values)


def count_en(n: int, noun: str) -> str:
    """`1 second`, `2 seconds`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def quick(key: str, lang: str = "ko") -> QuickReply:
    """A quick reply whose label and message are the same command word."""
    word = say(key, lang)
    return QuickReply(word, word)


def photo_quick_replies(lang: str = "ko") -> tuple[QuickReply, ...]:
    """Quick replies under `사진을 받았어요`: describe it, what is in it, read the text in it."""
    return tuple(
        QuickReply(say(f"quick_{name}", lang), say(f"ask_{name}", lang))
        for name in ("describe", "whats_in", "read_text")
    )


def duration(seconds: float, lang: str = "ko") -> str:
    """A keeping time in words: `1시간`, `30분`, `2일` / `1 hour`, `30 minutes`, `2 days`."""
    for size, ko, en in ((86400, "일", "day"), (3600, "시간", "hour"), (60, "분", "minute")):
        if seconds >= size and (seconds % size == 0 or size == 60):
            n = round(seconds / size)
            return f"{n}{ko}" if lang != "en" else f"{n} {en}{'s' if n != 1 else ''}"
    return f"{int(seconds)}초" if lang != "en" else f"{int(seconds)} seconds"


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
