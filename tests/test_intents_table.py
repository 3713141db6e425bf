"""The intent evaluation table (tests/data/intents.tsv) scored against `intents.decide`.

Each context (no photo in the session; a photo in it, inside the follow-up window) must be at
least 97 % right; every miss is printed. A row marked `either` is right with either reading,
provided the reading not chosen is the one offered as the quick reply (`Action.other`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.core import intents
from bot.core.actions import ActionName

TABLE = Path(__file__).parent / "data" / "intents.tsv"
PASS_RATE = 0.97
WORDLESS = {"photos", "admin"}  # decided by the core (a photo arrived, an operator), not by words


@dataclass(frozen=True)
class Row:
    line: int
    text: str
    no_photo: str
    with_photo: str
    either: str


def load_table() -> list[Row]:
    """The table's rows (comments and the header skipped)."""
    rows: list[Row] = []
    header_seen = False
    for number, raw in enumerate(TABLE.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip() or raw.startswith("#"):
            continue
        cols = raw.split("\t")
        if not header_seen:
            assert cols[:3] == ["utterance", "no_photo", "with_photo"], raw
            header_seen = True
            continue
        cols += [""] * (4 - len(cols))
        assert len(cols) == 4, f"line {number}: {raw!r}"
        rows.append(Row(number, cols[0], cols[1].strip(), cols[2].strip(), cols[3].strip()))
    return rows


def _name(action: object) -> str:
    return str(getattr(action, "name", ""))


def _other(action: object) -> str:
    other = getattr(action, "other", None)
    return str(other) if other else ""


def right_with_photo(row: Row, action: object) -> bool:
    """The photo context: the expected reading, or with `either` the other one; either way the
    reading not chosen is the quick reply."""
    name = _name(action)
    if not row.either:
        return name == row.with_photo
    pair = {row.with_photo, row.either}
    return name in pair and _other(action) == next(iter(pair - {name}), "")


def score(context: str) -> tuple[int, list[str]]:
    """How many rows are right in `context` ("no_photo" or "with_photo"), and the misses."""
    rows = load_table()
    misses: list[str] = []
    for row in rows:
        if context == "no_photo":
            action = intents.decide(row.text, has_photo=False)
            ok = _name(action) == row.no_photo
            expected = row.no_photo
        else:
            action = intents.decide(row.text, has_photo=True)
            ok = right_with_photo(row, action)
            expected = row.with_photo + (f" (or {row.either})" if row.either else "")
        if not ok:
            got = _name(action) + (f" +{_other(action)}" if _other(action) else "")
            misses.append(f"line {row.line}: {row.text!r}: expected {expected}, got {got}")
    return len(rows) - len(misses), misses


def _check(context: str) -> None:
    right, misses = score(context)
    total = len(load_table())
    print(f"\n{context}: {right}/{total} right ({right / total:.1%})")
    for miss in misses:
        print("  miss", miss)
    assert right / total >= PASS_RATE, f"{context}: {right}/{total}\n" + "\n".join(misses)


def test_table_is_large_and_well_formed() -> None:
    rows = load_table()
    assert len(rows) >= 200
    texts = [row.text for row in rows]
    assert len(texts) == len(set(texts)), "an utterance appears twice"
    for row in rows:
        assert row.text and row.text == row.text.strip(), f"line {row.line}"
        assert row.no_photo and row.with_photo, f"line {row.line}"
        if row.either:
            assert row.either != row.with_photo, f"line {row.line}"


def test_table_covers_every_action_words_reach() -> None:
    """Every action of the typed set that words can reach appears, and only those appear."""
    rows = load_table()
    used = (
        {r.no_photo for r in rows}
        | {r.with_photo for r in rows}
        | {r.either for r in rows if r.either}
    )
    names = {str(n) for n in ActionName}
    assert used - names == set(), "unknown action names in the table"
    assert names - WORDLESS - used == set(), "actions the table never expects"


def test_issue_examples_are_in_the_table() -> None:
    texts = {row.text for row in load_table()}
    for example in (
        "강아지가 피자 먹는 그림",
        "바다 위의 등대",
        "사용법 알려줘",
        "왜?",
        "고마워",
        "응",
        "👍",
        "ㅋㅋ",
        "@koala_bot 해바라기 밭",
        "고양이 그려줘",
        "어떻게 써?",
        "뭐 할 수 있어?",
        "기능",
        "명령어",
        "how does this work",
        "이 문장으로 그리기",
        "사진에 대해 묻기",
        "실제 사진처럼 생긴 호랑이",
        "벚꽃 일러스트",
    ):
        assert example in texts, example


def test_no_photo_context_scores_at_least_97_percent() -> None:
    _check("no_photo")


def test_photo_context_scores_at_least_97_percent() -> None:
    _check("with_photo")
