"""Photo questions: serving overhead against calling the model directly, and photo fetch time.

Tiny Ko-LLaVA (`tiny-kollava`) on CPU, one user, an empty queue. The served path is real:
gunicorn (the Procfile's settings), Redis, one `python -m workers vision` process, the private
photo store and the hand-over. Each question follows a fresh photo, so every answer starts from
an empty history, as the direct call does. The direct path calls the same model's `answer` with
the same stored photo, question and token cap, in this process, right after each served question,
so each pair sees the same machine load.

The photo figures fetch from a local HTTP server (the stand-in for Kakao's CDN) through the URL
guard, then check, normalise and store: once in this process (`bot.core.photos.receive`), and once
as the whole webhook request that answers `사진을 받았어요`.

    .venv/bin/python bench/vision_overhead.py [--requests 20]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    free_port,
    gunicorn,
    percentile,
    redis_server,
    summary,
    worker,
)

QUESTION = "이 사진에 무엇이 있나요?"
PRESET = "tiny-kollava"


def question(i: int) -> str:
    """A new question each time (the webhook answers a repeated one as a duplicate)."""
    return f"{QUESTION} ({i})"


def photo_jpeg(width: int, height: int) -> bytes:
    """A photo-like JPEG: smooth gradients with a little grain (noise alone compresses badly)."""
    from PIL import Image

    base = Image.linear_gradient("L").resize((width, height))
    flipped = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    rgb = Image.merge("RGB", (base, base.rotate(90).resize((width, height)), flipped))
    grain = Image.effect_noise((width, height), 12).convert("RGB")
    out = io.BytesIO()
    Image.blend(rgb, grain, 0.15).save(out, "JPEG", quality=90)
    return out.getvalue()


def kakao_body(user: str, text: str, photo_url: str | None = None) -> bytes:
    params: dict[str, Any] = {"surface": "Kakaotalk.plusfriend"}
    if photo_url:
        params["media"] = {"type": "image", "url": photo_url}
    return json.dumps(
        {
            "userRequest": {
                "utterance": photo_url or text,
                "user": {"id": user, "type": "botUserKey"},
                "params": params,
            },
            "bot": {"id": "bench"},
            "action": {"params": {}},
        }
    ).encode()


def post(port: int, body: bytes) -> tuple[list[str], list[str]]:
    """The texts and quick-reply labels of a direct answer."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/kakao/skill",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as response:
        data = json.loads(response.read())
    template = data.get("template", {})
    texts = [o["simpleText"]["text"] for o in template.get("outputs", []) if "simpleText" in o]
    return texts, [q["label"] for q in template.get("quickReplies", [])]


def direct_model(photo: bytes) -> Callable[[int], float]:
    """The model's own answer call on the same normalised photo, in this process; returns a
    function that answers question i and gives its seconds."""
    from PIL import Image

    from bot.core.photos import Limits, check
    from bot.core.settings import Settings
    from models.vision_language import load_vision_language

    settings = Settings.from_env({}, mode="development")
    _, stored = check(photo, Limits.from_settings(settings))
    image = Image.open(io.BytesIO(stored)).convert("RGB")
    model = load_vision_language(PRESET, "cpu")
    limit = min(settings.vlm_max_new_tokens, model.preset.max_new_tokens)

    def answer(i: int) -> float:
        started = time.perf_counter()
        model.answer([image], [], question(i), max_new_tokens=limit)
        return time.perf_counter() - started

    return answer


def served(
    n: int,
    env: dict[str, str],
    cdn: Any,
    photo: bytes,
    direct: Callable[[int], float],
    log: Any = subprocess.DEVNULL,
) -> dict[str, list[float]]:
    """Question in -> direct answer through the real server, each paired with the direct call
    on the same question right after it (so both see the same machine load); and photo in ->
    `사진을 받았어요`."""
    asks: list[float] = []
    calls: list[float] = []
    uploads: list[float] = []
    with redis_server() as url:
        env = {**env, "KOALATALK_REDIS_URL": url}
        with worker(env, "vision", log), gunicorn("bot.web.app:create_app()", env) as port:
            user = "bench-" + uuid.uuid4().hex
            post(port, kakao_body(user, "도움말"))  # the first-contact notice, out of the way
            for i in range(n + 3):
                started = time.perf_counter()
                got, _ = post(port, kakao_body(user, "", cdn.serve(photo)))
                uploaded = time.perf_counter() - started
                if got[-1] != "사진을 받았어요. 무엇이 궁금하세요?":
                    raise RuntimeError(f"photo not received: {got}")
                started = time.perf_counter()
                answer, labels = post(port, kakao_body(user, question(i)))
                asked = time.perf_counter() - started
                if "새 사진" not in labels:  # only a model's answer carries it
                    raise RuntimeError(f"not a direct answer: {answer}")
                called = direct(i)
                if i >= 3:  # the first requests warm connections and caches
                    uploads.append(uploaded)
                    asks.append(asked)
                    calls.append(called)
    return {"asks": asks, "calls": calls, "uploads": uploads}


def fetch_and_store(cdn: Any, photo: bytes, n: int) -> list[float]:
    """Fetch through the URL guard from the local server, check, normalise, store."""
    from bot.core.photos import Limits, PhotoStore, receive
    from bot.core.settings import Settings
    from bot.core.urlguard import guard_from_settings

    settings = Settings.from_env({}, mode="development", dev_allow=(cdn.origin,), system_dns=False)
    guard = guard_from_settings(settings)
    store = PhotoStore(Path(tempfile.mkdtemp(prefix="koalatalk-bench-photos-")), 3600)
    limits = Limits.from_settings(settings)
    times: list[float] = []
    for i in range(n + 2):
        url = cdn.serve(photo)
        started = time.perf_counter()
        got = receive(guard, store, [url], limits, time.time() + 10, hand_over=False)
        elapsed = time.perf_counter() - started
        if len(got.ids) != 1:
            raise RuntimeError(f"photo not stored: {got}")
        if i >= 2:
            times.append(elapsed)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--worker-log", help="write the vision worker's INFO log here")
    args = parser.parse_args()
    hf_home = tempfile.mkdtemp(prefix="koalatalk-bench-hf-")
    os.environ.update({"HF_HOME": hf_home, "HF_HUB_OFFLINE": "1"})
    os.environ.setdefault("OMP_NUM_THREADS", "2")

    from models.tiny_vlm import ensure_tiny_vlm
    from tests.photo_support import CdnServer

    ensure_tiny_vlm(PRESET)  # built once, shared by the worker and this process
    cdn = CdnServer(free_port())
    http = cdn.start()
    kakao_sized = photo_jpeg(1280, 960)  # what Kakao usually hands out
    original = photo_jpeg(4032, 3024)  # a 12 MP phone original
    photos_dir = tempfile.mkdtemp(prefix="koalatalk-bench-photos-")
    env = {
        "KOALATALK_MODE": "development",
        "KOALATALK_VLM_PRESET": PRESET,
        "KOALATALK_DEVICE": "cpu",
        "KOALATALK_PHOTO_DIR": photos_dir,
        "KOALATALK_DEV_ALLOW": cdn.origin,
        "KOALATALK_SYSTEM_DNS": "false",
        "KOALATALK_SYNC_WAIT_S": "4.5",
        "KOALATALK_LOG_LEVEL": "WARNING",
        "KOALATALK_RATE_LIMIT": "100000",  # one user asks many questions in a row here
        "KOALATALK_DAILY_QUOTA": "0",
        "HF_HOME": hf_home,
        "HF_HUB_OFFLINE": "1",
    }
    try:
        log = open(args.worker_log, "wb") if args.worker_log else subprocess.DEVNULL
        worker_env = {**env, "KOALATALK_LOG_LEVEL": "INFO"} if args.worker_log else env
        serve = served(args.requests, worker_env, cdn, kakao_sized, direct_model(kakao_sized), log)
        small = fetch_and_store(cdn, kakao_sized, args.requests)
        large = fetch_and_store(cdn, original, max(5, args.requests // 2))
    finally:
        http.shutdown()
    asks, local, uploads = serve["asks"], serve["calls"], serve["uploads"]
    paired = [a / c for a, c in zip(asks, local, strict=True)]
    extra = [a - c for a, c in zip(asks, local, strict=True)]
    overhead = percentile(asks, 50) - percentile(local, 50)
    print(f"\n{PRESET} on CPU, one user, empty queue, {args.requests} questions each\n")
    print(f"served (question in -> direct answer): {summary(asks)}")
    print(f"direct model.answer                  : {summary(local)}")
    print(f"serving overhead p50: {overhead * 1000:.1f} ms")
    print(f"ratio served/direct p50: {percentile(asks, 50) / percentile(local, 50):.2f}")
    print(
        f"per question (served and direct on the same question, back to back): overhead p50 "
        f"{percentile(extra, 50) * 1000:.1f} ms, ratio p50 {percentile(paired, 50):.2f}\n"
    )
    print(f"photo {len(kakao_sized) / 1e3:.0f} kB 1280x960, fetch+check+store: {summary(small)}")
    print(f"photo {len(original) / 1e6:.1f} MB 4032x3024, fetch+check+store: {summary(large)}")
    print(f"webhook photo in -> '사진을 받았어요' (1280x960): {summary(uploads)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
