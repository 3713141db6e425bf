"""Serving overhead: prompt in to direct reply, against the same pipeline call in one process.

One user, an empty queue, the tiny model on CPU. The served path is real: gunicorn (the
Procfile's settings), Redis, one `python -m workers text2image` process, the hand-over and
the JPEG store. The in-process path calls the same TextToImage.generate with the same preset,
plus the JPEG encoding. English prompts (no translation) and safety policy `allow` on both
sides, so the difference is the serving path alone.

    .venv/bin/python bench/overhead.py [--requests 40]

Target: overhead (served p50 - in-process p50) <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import gunicorn, percentile, redis_server, summary, worker


def kakao_body(user: str, text: str) -> bytes:
    return json.dumps(
        {
            "userRequest": {
                "utterance": text,
                "user": {"id": user, "type": "botUserKey"},
                "params": {"surface": "Kakaotalk.plusfriend"},
            },
            "bot": {"id": "bench"},
            "action": {"params": {}},
        }
    ).encode()


def post(port: int, body: bytes) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/kakao/skill",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as response:
        return json.loads(response.read())


def served(n: int, env: dict[str, str]) -> list[float]:
    """Prompt in to direct reply through the real server and worker."""
    times: list[float] = []
    with redis_server() as url:
        env = {**env, "KOALATALK_REDIS_URL": url}
        with worker(env), gunicorn("bot.web.app:create_app()", env) as port:
            user = "bench-" + uuid.uuid4().hex
            for i in range(n + 3):
                started = time.perf_counter()
                body = post(port, kakao_body(user, f"a koala number {i} in a field"))
                elapsed = time.perf_counter() - started
                outputs = body.get("template", {}).get("outputs", [])
                if not any("simpleImage" in o for o in outputs):
                    raise RuntimeError(f"not a direct picture: {body}")
                if i >= 3:  # the first requests warm connections and caches
                    times.append(elapsed)
    return times


def in_process(n: int) -> list[float]:
    """The same pipeline call, plus the JPEG encoding the worker does, in this process."""
    from models.text2image import TextToImage
    from workers.imaging import to_jpeg

    model = TextToImage.load("tiny", "cpu")
    model.warm_up()
    times: list[float] = []
    for i in range(n + 3):
        started = time.perf_counter()
        image = model.generate([f"a koala number {i} in a field"], [i])[0]
        to_jpeg(image)
        if i >= 3:
            times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    hf_home = tempfile.mkdtemp(prefix="koalatalk-bench-hf-")
    os.environ.update({"HF_HOME": hf_home, "HF_HUB_OFFLINE": "1"})
    media = tempfile.mkdtemp(prefix="koalatalk-bench-media-")
    env = {
        "KOALATALK_MODE": "development",
        "KOALATALK_PRESET": "tiny",
        "KOALATALK_TRANSLATION_MODEL": "tiny",
        "KOALATALK_SAFETY_MODEL": "koalatalk/tiny-safety-pass",
        # The in-process side is the drawing call alone: leave the image checker out of both.
        "KOALATALK_SAFETY_POLICY": "allow",
        "KOALATALK_RATE_LIMIT": "100000",
        "KOALATALK_DAILY_QUOTA": "0",
        "KOALATALK_MEDIA_DIR": media,
        "KOALATALK_SYNC_WAIT_S": "4",
        "KOALATALK_LOG_LEVEL": "WARNING",
        "KOALATALK_DEVICE": "cpu",
        "HF_HOME": hf_home,
        "HF_HUB_OFFLINE": "1",
    }
    serve = served(args.requests, env)
    local = in_process(args.requests)
    overhead = percentile(serve, 50) - percentile(local, 50)
    print(f"\ntiny model on CPU, one user, empty queue, {args.requests} requests each\n")
    print(f"served (prompt in -> direct reply): {summary(serve)}")
    print(f"in-process pipeline call + JPEG : {summary(local)}")
    print(f"\nserving overhead p50: {overhead * 1000:.1f} ms  (target <= 50 ms)")
    print(f"ratio served/in-process p50: {percentile(serve, 50) / percentile(local, 50):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
