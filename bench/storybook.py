"""Storybooks against single pictures, side by side in one run on one worker (issue 13).

(a) One 4-scene book against one single picture: time to delivery (Kakao webhook POST to the
    answer that carries the pictures) and the model calls each made. The book's time should be
    at most 1.5x the picture's: the four scenes are one batched call, not four jobs.
(b) One 4-scene book against four users each sending one of its sentences at the same moment:
    both times (the four users: until the last of them has a picture) and pictures per second.
    Dynamic batching draws the four users in one call too, so the two should be close.

The real webhook (gunicorn, the Procfile's settings), Redis and one resident worker with the
tiny model, MAX_BATCH 4. English sentences and safety policy `allow`, so the model time is the
drawing alone (as bench/throughput does). Each measurement is repeated, alternating the order,
and the medians are reported.

    .venv/bin/python bench/storybook.py [--rounds 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import gunicorn, redis_server, worker
from bench.overhead import kakao_body, post

SCENES = ["A koala climbs a tall tree", "The koala finds a fresh green leaf",
          "The koala eats the leaf slowly", "The koala falls asleep on a branch"]


def pictures_in(answer: dict[str, Any]) -> int:
    """How many pictures a Kakao answer carries (simpleImage or carousel cards)."""
    count = 0
    for output in answer.get("template", {}).get("outputs", []):
        if "simpleImage" in output:
            count += 1
        count += len(output.get("carousel", {}).get("items", []))
    return count


def timed(port: int, user: str, text: str) -> tuple[float, int]:
    """Seconds from POST to the answer, and the pictures it carried."""
    started = time.perf_counter()
    answer = post(port, kakao_body(user, text))
    return time.perf_counter() - started, pictures_in(answer)


def calls_since(r: Any, before: int) -> list[int]:
    """The batch sizes of the model calls made since the list held `before` entries."""
    new = r.llen("kt:modelcalls") - before
    return [json.loads(c)["size"] for c in r.lrange("kt:modelcalls", 0, new - 1)] if new else []


def book(port: int, r: Any) -> tuple[float, int, list[int]]:
    before = r.llen("kt:modelcalls")
    seconds, n = timed(port, "b-" + uuid.uuid4().hex, "story: " + ". ".join(SCENES) + ".")
    return seconds, n, calls_since(r, before)


def single(port: int, r: Any) -> tuple[float, int, list[int]]:
    before = r.llen("kt:modelcalls")
    seconds, n = timed(port, "s-" + uuid.uuid4().hex, SCENES[0])
    return seconds, n, calls_since(r, before)


def four_users(port: int, r: Any) -> tuple[float, int, list[int]]:
    """Four users send one sentence each at the same moment; until the last has a picture."""
    before = r.llen("kt:modelcalls")
    gate = threading.Barrier(4)
    got: list[int] = []
    ends: list[float] = []

    def one(text: str) -> None:
        gate.wait()
        answer = post(port, kakao_body("f-" + uuid.uuid4().hex, text))
        ends.append(time.perf_counter())
        got.append(pictures_in(answer))

    threads = [threading.Thread(target=one, args=(text,)) for text in SCENES]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return max(ends) - started, sum(got), calls_since(r, before)


def main() -> int:
    import redis

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args()
    env = {
        "KOALATALK_MODE": "development", "KOALATALK_PRESET": args.preset,
        "KOALATALK_TRANSLATION_MODEL": "tiny",
        "KOALATALK_SAFETY_MODEL": "koalatalk/tiny-safety-pass", "KOALATALK_SAFETY_POLICY": "allow",
        "KOALATALK_MEDIA_DIR": tempfile.mkdtemp(prefix="koalatalk-bench-media-"),
        "KOALATALK_SYNC_WAIT_S": "4.5", "KOALATALK_LOG_LEVEL": "WARNING",
        "KOALATALK_DEVICE": args.device, "KOALATALK_RATE_LIMIT": "0",
        "KOALATALK_DAILY_QUOTA": "0", "KOALATALK_MAX_BATCH": "4",
        "KOALATALK_BATCH_WAIT_MS": "50", "HF_HOME": tempfile.mkdtemp(prefix="koalatalk-hf-"),
        "HF_HUB_OFFLINE": "1",
    }
    runs: dict[str, list[tuple[float, int, list[int]]]] = {"single": [], "book": [], "four": []}
    with redis_server() as url:
        env["KOALATALK_REDIS_URL"] = url
        r = redis.Redis.from_url(url)
        with worker(env), gunicorn("bot.web.app:create_app()", env) as port:
            for warm in (single, book, four_users):  # shapes of size 1 and 4, translation, disk
                warm(port, r)
            for i in range(args.rounds):
                order = [single, book, four_users] if i % 2 == 0 else [four_users, book, single]
                for measure in order:
                    name = {single: "single", book: "book", four_users: "four"}[measure]
                    runs[name].append(measure(port, r))
    med = {k: statistics.median(s for s, _, _ in v) for k, v in runs.items()}
    got = {k: [n for _, n, _ in v] for k, v in runs.items()}
    calls = {k: [len(c) for _, _, c in v] for k, v in runs.items()}
    sizes = {k: [c for _, _, c in v] for k, v in runs.items()}
    print(f"\n{args.preset} model on {args.device}, one worker (MAX_BATCH 4), "
          f"{args.rounds} rounds, medians\n")
    print(f"{'run':<34}{'time to delivery':>18}{'pictures':>10}{'model calls':>13}{'pics/s':>8}")
    rows = (("(a) one single picture", "single"), ("(a,b) one 4-scene book", "book"),
            ("(b) four users, one sentence each", "four"))
    for label, key in rows:
        pictures = statistics.median(got[key])
        print(f"{label:<34}{med[key] * 1000:>15.0f} ms{pictures:>10.0f}"
              f"{statistics.median(calls[key]):>13.0f}{pictures / med[key]:>8.1f}")
    print(f"\nbatch sizes per round: book {sizes['book']}, four users {sizes['four']}")
    print(f"(a) book / single picture: {med['book'] / med['single']:.2f}x (target <= 1.5x)")
    print(f"(b) book / four users at once: {med['book'] / med['four']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
