"""The command line (`python -m workers.cli`): the tiny models through the same presets and
settings as the workers, and Telegram's setWebhook against the Bot API stand-in."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from tests.standins import ApiStandIn
from tests.support import ROOT, worker_env
from workers.imaging import is_marked_ai


def cli(stack: Any, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = worker_env({}, **{**stack["settings"], **settings})
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_generate_writes_ai_labelled_jpegs_with_progress_bars(stack: Any, tmp_path: Path) -> None:
    out = tmp_path / "koala.jpg"
    done = cli(stack, "generate", "a koala surfing", "-o", str(out), "--seed", "7", "-n", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    files = [tmp_path / "koala-1.jpg", tmp_path / "koala-2.jpg"]
    for path in files:
        data = path.read_bytes()
        assert is_marked_ai(data)
        assert Image.open(io.BytesIO(data)).size == (64, 64)  # the tiny preset's size
    assert files[0].read_bytes() != files[1].read_bytes(), "seeds 7 and 8 differ"
    assert "seed 7" in done.stdout and "seed 8" in done.stdout
    assert "it/s" in done.stderr or "s/it" in done.stderr, "tqdm bars go to stderr"


def test_generate_with_an_unknown_preset_says_which_exist(stack: Any, tmp_path: Path) -> None:
    done = cli(stack, "generate", "x", "-o", str(tmp_path / "x.jpg"), "--preset", "nope")
    assert done.returncode == 2
    assert "koala-lightning-700m" in done.stderr
    assert "Traceback" not in done.stderr


def test_ask_refuses_a_file_that_is_not_a_photo(stack: Any, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    done = cli(stack, "ask", str(notes), "무엇이 보이나요?")
    assert done.returncode == 2
    assert "photo_not_image" in done.stderr
    assert "Traceback" not in done.stderr


def test_telegram_set_webhook_sends_url_and_secret(stack: Any, messenger_apis: ApiStandIn) -> None:
    done = cli(stack, "telegram-set-webhook")
    assert done.returncode == 0, done.stderr[-2000:]
    calls = messenger_apis.wait_for("telegram", "setWebhook")
    params = calls[-1].params
    assert params["url"] == stack["settings"]["public_url"] + "/telegram/webhook"
    assert params["secret_token"] == stack["settings"]["telegram_secret"]
    assert params["allowed_updates"] == ["message"]


def test_ask_answers_about_a_photo_with_the_tiny_vision_model(stack: Any, tmp_path: Path) -> None:
    photo = tmp_path / "red.png"
    Image.new("RGB", (80, 60), (200, 30, 30)).save(photo)
    done = cli(stack, "ask", str(photo), "무슨 색이야?", "--preset", "tiny-kollava")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), "an answer is printed (random tiny weights: any text)"
    assert "tiny-kollava" in done.stderr
    assert "stage" in done.stderr, "stage progress bar"
