"""Every reply is short on a phone screen (issue 11): the help at most 200 characters and 5
lines, the first-use notice at most 120 characters, every other message one short bubble; and
both languages say the same thing with the same placeholders."""

from __future__ import annotations

import string

import pytest

from bot.core.settings import Settings
from bot.core.texts import MESSAGES, duration, say

SETTINGS = Settings(mode="development")
# English letters take about half the width of Hangul on a phone, so the English help may hold
# more characters in the same five lines.
HELP_LIMIT = {"ko": 200, "en": 320}
NOTICE_LIMIT = 120
BUBBLE_LIMIT = {"ko": 70, "en": 130}  # any other message: about three lines on a phone


def _help(lang: str) -> str:
    return say("help", lang, keep=duration(SETTINGS.photo_ttl_s, lang))


def _notice(lang: str) -> str:
    keep = max(SETTINGS.session_ttl_s, SETTINGS.media_retention_s)
    return say(
        "notice", lang, keep=duration(keep, lang), photo_keep=duration(SETTINGS.photo_ttl_s, lang)
    )


@pytest.mark.parametrize("lang", ["ko", "en"])
def test_help_fits_a_phone_screen(lang: str) -> None:
    text = _help(lang)
    assert len(text) <= HELP_LIMIT[lang], (len(text), text)
    assert len(text.splitlines()) <= 5, text
    assert duration(SETTINGS.photo_ttl_s, lang) in text  # the photos' keeping time is stated


@pytest.mark.parametrize("lang", ["ko", "en"])
def test_first_use_notice_is_short(lang: str) -> None:
    text = _notice(lang)
    assert len(text) <= NOTICE_LIMIT, (len(text), text)
    assert "\n" not in text


@pytest.mark.parametrize("key", sorted(set(MESSAGES) - {"help", "notice"}))
def test_every_other_message_is_one_short_bubble(key: str) -> None:
    for lang, text in zip(("ko", "en"), MESSAGES[key], strict=True):
        assert "\n" not in text, key
        assert len(text) <= BUBBLE_LIMIT[lang], (key, lang, len(text), text)


@pytest.mark.parametrize("key", sorted(MESSAGES))
def test_both_languages_take_the_same_values(key: str) -> None:
    ko, en = MESSAGES[key]
    names = [{f for _, f, _, _ in string.Formatter().parse(t) if f} for t in (ko, en)]
    english = {n.removesuffix("_en") for n in names[1]}
    assert names[0] == english, key
    assert ko.strip() == ko and en.strip() == en and ko and en, key
