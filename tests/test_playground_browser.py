"""The playground in a real browser: Debian's Chromium driven by Playwright, against the real web
app on a real HTTP server, the shared text-to-image worker and a vision worker, all on loopback.

Type a prompt, see the picture arrive through the callback, tap a quick reply, send a photo and
ask about it; a screenshot goes to the test's folder and to /tmp/playground.png.
"""

from __future__ import annotations

import io
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from tests.support import LOG_DIR, start_worker, stop_process, wait_ready, wait_until, worker_env

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path("/tmp/playground.png")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def vision_worker(stack: Any) -> Iterator[str]:
    """A worker for the vision queue with the tiny Ko-LLaVA, beside the shared stack."""
    env = worker_env({}, **{**stack["settings"], "vlm_preset": "tiny-kollava"})
    log_path = LOG_DIR / "vision-worker-browser.log"
    proc = start_worker(env, queues=("vision",), log_path=log_path)
    try:
        yield wait_ready(stack["redis"], proc, queue="vision", log_path=log_path)
    finally:
        stop_process(proc)


@pytest.fixture
def server(make_app: Any, stack: Any, web_port: int) -> Iterator[str]:
    """The real app on a real HTTP server at the stack's PUBLIC_URL; every reply by callback."""
    from werkzeug.serving import make_server

    app = make_app(sync_wait_s=0.0)
    http = make_server("127.0.0.1", web_port, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield stack["settings"]["public_url"]
    finally:
        http.shutdown()
        thread.join(timeout=10)


def photo_file(folder: Path) -> Path:
    image = Image.new("RGB", (320, 240), (90, 160, 220))
    draw = ImageDraw.Draw(image)
    draw.ellipse((100, 60, 220, 180), fill=(250, 210, 40))
    path = folder / "sunny.jpg"
    out = io.BytesIO()
    image.save(out, "JPEG")
    path.write_bytes(out.getvalue())
    return path


def test_chat_in_the_playground(
    server: str, vision_worker: str, tmp_path: Path, web_port: int, stack: Any
) -> None:
    from playwright.sync_api import expect, sync_playwright

    from bot.core.liveness import queue_readiness

    # On a loaded two-core machine a heartbeat can lag; start once both queues are served.
    ready = lambda: all(queue_readiness(stack["redis"], ["text2image", "vision"]).values())  # noqa: E731
    assert wait_until(ready, 30), "workers not ready"
    origin = f"http://127.0.0.1:{web_port}"
    outside: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh profile folder
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 480, "height": 1280},
            locale="ko-KR",
        )
        try:
            page = browser.new_page()
            page.on(
                "request",
                lambda req: (
                    None
                    if req.url.startswith((origin, "blob:", "data:"))
                    else outside.append(req.url)
                ),
            )
            page.goto(server + "/playground")
            expect(page.locator("body")).to_have_attribute("data-ready", "1", timeout=15000)

            # 1. A prompt: the waiting text, then the picture through the callback.
            page.fill("#input", "우주를 떠다니는 고양이")
            page.click("#send")
            expect(page.locator(".row.me .bubble").last).to_have_text("우주를 떠다니는 고양이")
            expect(page.locator(".row.bot .bubble").filter(has_text="그리고 있어요")).to_be_visible(
                timeout=15000
            )
            picture = page.locator(".bubble.picture img").first
            expect(picture).to_be_visible(timeout=60000)
            expect(picture).to_have_js_property("complete", True)
            assert picture.evaluate("img => img.naturalWidth") > 0, "the image loaded"
            expect(
                page.locator(".row.bot .bubble").filter(has_text="그린 그림이에요")
            ).to_have_count(1)

            # 2. A quick reply: 다시 그리기 draws again.
            page.locator(".quick button", has_text="다시 그리기").click()
            expect(page.locator(".bubble.picture img")).to_have_count(2, timeout=60000)

            # 3. A photo, then a question about it.
            page.set_input_files("#photo", str(photo_file(tmp_path)))
            expect(
                page.locator(".row.bot .bubble").filter(has_text="무엇이 궁금하세요")
            ).to_be_visible(timeout=30000)
            describe = page.locator(".quick button").first
            expect(describe).to_be_visible()
            describe.click()
            expect(
                page.locator(".row.bot .bubble").filter(has_text="사진을 보고 있어요")
            ).to_be_visible(timeout=15000)
            # The tiny model's words are random; the answer is the bubble after the waiting one.
            waiting = page.locator(".row.bot .bubble").filter(has_text="사진을 보고 있어요")
            expect(waiting).not_to_have_class("bubble waiting", timeout=60000)
            expect(page.locator(".quick button").first).to_be_visible(timeout=10000)

            # 4. A file that is not a photo.
            notes = tmp_path / "notes.txt"
            notes.write_text("not a photo")
            page.set_input_files("#photo", str(notes))
            expect(page.locator(".bubble.error").filter(has_text="사진 파일이 아니")).to_be_visible(
                timeout=15000
            )
            page.screenshot(path=str(tmp_path / "playground.png"))
        finally:
            browser.close()
    shutil.copyfile(tmp_path / "playground.png", SCREENSHOT)
    assert not outside, f"the page reached outside this server: {outside}"
