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
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import gunicorn, redis_server, worker

DEBUG = False
WORKER_LOG = Path(tempfile.gettempdir()) / "koalatalk-bench-storybook-worker.log"
SCENES = [
    "A koala climbs a tall tree",
    "The koala finds a fresh green leaf",
    "The koala eats the leaf slowly",
    "The koala falls asleep on a branch",
]


class Callbacks:
    """A stand-in for Kakao's callback API on loopback: when each token's answer arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, tuple[float, dict[str, Any]]] = {}
        self.lock = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.arrived[self.path.strip("/")] = (time.perf_counter(), body)
                    outer.lock.notify_all()
                data = b'{"status": "SUCCESS"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, token: str, timeout: float = 120) -> tuple[float, dict[str, Any]]:
        with self.lock:
            self.lock.wait_for(lambda: token in self.arrived, timeout)
            return self.arrived[token]


def pictures_in(answer: dict[str, Any]) -> int:
    """How many pictures a Kakao answer carries (simpleImage or carousel cards)."""
    count = 0
    for output in answer.get("template", {}).get("outputs", []):
        if "simpleImage" in output:
            count += 1
        count += len(output.get("carousel", {}).get("items", []))
    return count


def timed(port: int, callbacks: Callbacks, text: str) -> tuple[float, int]:
    """Seconds from the POST to delivery (the webhook's direct answer, or the callback when the
    webhook acknowledged), and the pictures delivered."""
    user, token = "u-" + uuid.uuid4().hex, uuid.uuid4().hex
    body = json.dumps(
        {
            "userRequest": {
                "utterance": text,
                "user": {"id": user, "type": "botUserKey"},
                "params": {"surface": "Kakaotalk.plusfriend"},
                "callbackUrl": f"{callbacks.origin}/{token}",
            },
            "bot": {"id": "bench"},
            "action": {"params": {}},
        }
    ).encode()
    started = time.perf_counter()
    answer = post_body(port, body)
    if DEBUG:
        print("  ", "callback" if answer.get("useCallback") else "direct", text[:20])
    if answer.get("useCallback"):
        arrived, answer = callbacks.wait(token)
    else:
        arrived = time.perf_counter()
    count = pictures_in(answer)
    if not count:
        print("  no pictures:", json.dumps(answer, ensure_ascii=False)[:300])
    return arrived - started, count


def post_body(port: int, body: bytes) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/kakao/skill",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def calls_since(r: Any, before: int) -> list[tuple[int, float]]:
    """The model calls made since the list held `before` entries: (batch size, seconds)."""
    new = r.llen("kt:modelcalls") - before
    calls = [json.loads(c) for c in r.lrange("kt:modelcalls", 0, new - 1)] if new else []
    return [(c["size"], c["end"] - c["start"]) for c in calls]


Run = tuple[float, int, list[tuple[int, float]]]


def book(port: int, r: Any, callbacks: Callbacks) -> Run:
    before = r.llen("kt:modelcalls")
    seconds, n = timed(port, callbacks, "story: " + ". ".join(SCENES) + ".")
    return seconds, n, calls_since(r, before)


def single(port: int, r: Any, callbacks: Callbacks) -> Run:
    before = r.llen("kt:modelcalls")
    seconds, n = timed(port, callbacks, SCENES[0])
    return seconds, n, calls_since(r, before)


def four_users(port: int, r: Any, callbacks: Callbacks) -> Run:
    """Four users send one sentence each at the same moment; until the last has a picture."""
    before = r.llen("kt:modelcalls")
    gate = threading.Barrier(4)
    done: list[tuple[float, int]] = []
    started = time.perf_counter()

    def one(text: str) -> None:
        gate.wait()
        sent = time.perf_counter()
        seconds, n = timed(port, callbacks, text)
        done.append((sent - started + seconds, n))

    threads = [threading.Thread(target=one, args=(text,)) for text in SCENES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    if DEBUG:
        print("  four users:", sorted(round(s, 2) for s, _ in done))
    return max(s for s, _ in done), sum(n for _, n in done), calls_since(r, before)


def main() -> int:
    import redis

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args()
    env = {
        "KOALATALK_MODE": "development",
        "KOALATALK_PRESET": args.preset,
        "KOALATALK_TRANSLATION_MODEL": "tiny",
        "KOALATALK_SAFETY_MODEL": "koalatalk/tiny-safety-pass",
        "KOALATALK_SAFETY_POLICY": "allow",
        "KOALATALK_MEDIA_DIR": tempfile.mkdtemp(prefix="koalatalk-bench-media-"),
        "KOALATALK_SYNC_WAIT_S": "4.5",
        "KOALATALK_LOG_LEVEL": "WARNING",
        "KOALATALK_DEVICE": args.device,
        "KOALATALK_RATE_LIMIT": "0",
        "KOALATALK_DAILY_QUOTA": "0",
        "KOALATALK_MAX_BATCH": "4",
        "KOALATALK_BATCH_WAIT_MS": "50",
        # The estimate before anything was measured: small, so that the webhook waits for the
        # answer (a larger one takes the slow path at once, issue 14) until real times exist.
        "KOALATALK_DEFAULT_SERVICE_S": "0.5",
        "HF_HOME": tempfile.mkdtemp(prefix="koalatalk-hf-"),
        "HF_HUB_OFFLINE": "1",
    }
    runs: dict[str, list[Run]] = {"single": [], "book": [], "four": []}
    callbacks = Callbacks()
    # Answers that miss the webhook's wait come by callback, to the stand-in; without the 1 s
    # pause Kakao needs after an acknowledgement, which would only add a constant.
    env["KOALATALK_DEV_ALLOW"] = callbacks.origin
    env["KOALATALK_CALLBACK_DELAY_S"] = "0"
    with redis_server() as url:
        env["KOALATALK_REDIS_URL"] = url
        r = redis.Redis.from_url(url)
        log = WORKER_LOG.open("wb")
        with worker(env, log=log), gunicorn("bot.web.app:create_app()", env) as port:
            for _ in range(2):  # shapes of size 1 and 4, measured service times, disk
                for warm in (single, book, four_users):
                    warm(port, r, callbacks)
            for i in range(args.rounds):
                order = [single, book, four_users] if i % 2 == 0 else [four_users, book, single]
                for measure in order:
                    name = {single: "single", book: "book", four_users: "four"}[measure]
                    runs[name].append(measure(port, r, callbacks))
    med = {k: statistics.median(s for s, _, _ in v) for k, v in runs.items()}
    got = {k: [n for _, n, _ in v] for k, v in runs.items()}
    calls = {k: [len(c) for _, _, c in v] for k, v in runs.items()}
    sizes = {k: [[size for size, _ in c] for _, _, c in v] for k, v in runs.items()}
    model = {k: statistics.median(sum(t for _, t in c) for _, _, c in v) for k, v in runs.items()}
    print(
        f"\n{args.preset} model on {args.device}, one worker (MAX_BATCH 4), "
        f"{args.rounds} rounds, medians\n"
    )
    print(
        f"{'run':<34}{'time to delivery':>18}{'model time':>12}{'pictures':>10}"
        f"{'model calls':>13}{'pics/s':>8}"
    )
    rows = (
        ("(a) one single picture", "single"),
        ("(a,b) one 4-scene book", "book"),
        ("(b) four users, one sentence each", "four"),
    )
    for label, key in rows:
        pictures = statistics.median(got[key])
        print(
            f"{label:<34}{med[key] * 1000:>15.0f} ms{model[key] * 1000:>9.0f} ms{pictures:>10.0f}"
            f"{statistics.median(calls[key]):>13.0f}{pictures / med[key]:>8.1f}"
        )
    print(f"\nbatch sizes per round: book {sizes['book']}, four users {sizes['four']}")
    print(f"(a) book / single picture: {med['book'] / med['single']:.2f}x (target <= 1.5x)")
    print(f"(b) book / four users at once: {med['book'] / med['four']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
