"""The README and docs/: the settings table matches Settings, and every path they name exists."""

from __future__ import annotations

import re
from pathlib import Path

from bot.core.settings import markdown_table

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REPO_PATH = re.compile(r"`((?:bot|workers|models|bench|tests|scripts|docs)/[^`\s<>…*]*)`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
TEXT = {"", ".py", ".md", ".sh", ".yaml", ".lua", ".toml", ".json"}


def test_settings_table_is_generated_from_settings() -> None:
    text = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert text.endswith("\n" + markdown_table() + "\n"), "run scripts/settings-table"


def test_named_paths_exist() -> None:
    missing = [
        f"{page.name}: {path}"
        for page in PAGES
        for path in REPO_PATH.findall(page.read_text(encoding="utf-8"))
        if not (ROOT / path).exists()
    ]
    assert not missing


def test_links_stay_inside_the_repository() -> None:
    bad = []
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):  # https://, mailto: …
                continue
            resolved = (page.parent / target).resolve()
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                bad.append(f"{page.name}: {target}")
    assert not bad


def test_nothing_points_outside_the_repository() -> None:
    outside = "../" + "shared"  # the folder beside the checkout that code once pointed into
    folders = ("bot", "workers", "models", "bench", "tests", "scripts", "docs")
    files = [ROOT / "README.md", ROOT / "Procfile", ROOT / "pyproject.toml"]
    files += [p for f in folders for p in (ROOT / f).rglob("*") if p.suffix in TEXT and p.is_file()]
    hits = [
        str(path.relative_to(ROOT))
        for path in files
        if outside in path.read_text(encoding="utf-8", errors="replace")
    ]
    assert not hits
