"""Serving throughput on CPU with the tiny model: batching on against batching off.

N simulated users (closed loop, one prompt in flight each) send prompts at once through the real
webhook (gunicorn, the Procfile's settings), Redis and one resident worker. For each setting it
reports images per second, p50 and p95 from prompt to delivery, refusals, and the serving
overhead: a request's delivery time minus the time the worker spent inside model calls while the
request was in the system, minus the deliberate waits in that span (the batch-gathering window).
English prompts (no translation) and safety policy `allow`, so model time is the drawing alone.

    .venv/bin/python bench/throughput.py [--users 8] [--seconds 20]

Target: serving overhead <= 50 ms p50 at 8 concurrent users.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import gunicorn, percentile, redis_server, worker
from bench.overhead import kakao_body


@dataclass
class Sample:
    sent: float
    done: float
    kind: str  # picture | refused | other
    why: str = ""


def user_loop(port: int, user: str, until: float, out: list[Sample]) -> None:
    """One user: send a prompt, wait for the answer, repeat until the time is up."""
    n = 0
    while time.time() < until:
        n += 1
        body = kakao_body(user, f"a koala painting number {n} by {user[-6:]}")
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/kakao/skill",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        sent = time.time()
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                answer = json.loads(response.read())
        except OSError:
            out.append(Sample(sent, time.time(), "other"))
            continue
        outputs = answer.get("template", {}).get("outputs", [])
        kind = "picture" if any("simpleImage" in o for o in outputs) else "refused"
        why = "" if kind == "picture" else json.dumps(outputs, ensure_ascii=False)[:80]
        out.append(Sample(sent, time.time(), kind, why))


def model_busy(calls: list[dict[str, float]], start: float, end: float) -> tuple[float, float]:
    """Seconds of model calls, and of batch-gathering waits, overlapping [start, end]."""
    busy = gathered = 0.0
    for call in calls:
        overlap = min(end, call["end"]) - max(start, call["start"])
        if overlap > 0:
            busy += overlap
        gather_start = call["start"] - call["gather_s"]
        gather_overlap = min(end, call["start"]) - max(start, gather_start)
        if gather_overlap > 0:
            gathered += gather_overlap
    return busy, gathered


def run(users: int, seconds: float, max_batch: int, base_env: dict[str, str]) -> dict[str, float]:
    """One setting: a fresh Redis, worker and web server; users in a closed loop."""
    import redis

    samples: list[Sample] = []
    with redis_server() as url:
        env = {**base_env, "KOALATALK_REDIS_URL": url, "KOALATALK_MAX_BATCH": str(max_batch)}
        with worker(env):
            with gunicorn("bot.web.app:create_app()", env) as port:
                warm: list[Sample] = []
                user_loop(port, "warm-" + uuid.uuid4().hex, time.time() + 2, warm)
                until = time.time() + seconds
                threads = [
                    threading.Thread(
                        target=user_loop, args=(port, f"u{i}-{uuid.uuid4().hex}", until, samples)
                    )
                    for i in range(users)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(seconds + 30)
            r = redis.Redis.from_url(url)
            calls = [json.loads(c) for c in r.lrange("kt:modelcalls", 0, -1)]
    pictures = [s for s in samples if s.kind == "picture"]
    reasons: dict[str, int] = {}
    for s in samples:
        if s.why:
            reasons[s.why] = reasons.get(s.why, 0) + 1
    for why, count in sorted(reasons.items(), key=lambda kv: -kv[1])[:3]:
        print(f"  refused x{count}: {why}")
    latencies = [s.done - s.sent for s in pictures]
    overheads = []
    for s in pictures:
        busy, gathered = model_busy(calls, s.sent, s.done)
        overheads.append(s.done - s.sent - busy - gathered)
    span = max(s.done for s in samples) - min(s.sent for s in samples) if samples else 1.0
    sizes = [c["size"] for c in calls]
    return {
        "images_per_s": len(pictures) / span,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "refused": float(sum(s.kind != "picture" for s in samples)),
        "overhead_p50": percentile(overheads, 50),
        "overhead_p95": percentile(overheads, 95),
        "mean_batch": sum(sizes) / len(sizes) if sizes else 0.0,
        "requests": float(len(samples)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-batch", type=int, default=8)
    args = parser.parse_args()
    hf_home = tempfile.mkdtemp(prefix="koalatalk-bench-hf-")
    base_env = {
        "KOALATALK_MODE": "development",
        "KOALATALK_PRESET": "tiny",
        "KOALATALK_TRANSLATION_MODEL": "tiny",
        "KOALATALK_SAFETY_MODEL": "koalatalk/tiny-safety-pass",
        # Model time counts the drawing calls only: leave the image checker out, as
        # bench/overhead does, so the overhead is the serving path's alone.
        "KOALATALK_SAFETY_POLICY": "allow",
        "KOALATALK_MEDIA_DIR": tempfile.mkdtemp(prefix="koalatalk-bench-media-"),
        "KOALATALK_SYNC_WAIT_S": "4.5",
        "KOALATALK_LOG_LEVEL": "WARNING",
        "KOALATALK_DEVICE": "cpu",
        "KOALATALK_RATE_LIMIT": "0",
        "KOALATALK_DAILY_QUOTA": "0",
        "KOALATALK_BATCH_WAIT_MS": "10",
        "HF_HOME": hf_home,
        "HF_HUB_OFFLINE": "1",
    }
    results = {
        "batching off (max 1)": run(args.users, args.seconds, 1, base_env),
        f"batching on (max {args.max_batch})": run(
            args.users, args.seconds, args.max_batch, base_env
        ),
    }
    print(
        f"\ntiny model on CPU, {args.users} users in a closed loop for {args.seconds:.0f} s, "
        f"one worker, gunicorn gevent x2\n"
    )
    print(
        f"{'setting':<22}{'img/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'overhead p50':>14}"
        f"{'p95':>7}{'batch':>7}{'refused':>9}"
    )
    for name, f in results.items():
        print(
            f"{name:<22}{f['images_per_s']:>8.1f}{f['p50'] * 1000:>9.0f}{f['p95'] * 1000:>9.0f}"
            f"{f['overhead_p50'] * 1000:>11.1f} ms{f['overhead_p95'] * 1000:>7.0f}"
            f"{f['mean_batch']:>7.2f}{f['refused']:>9.0f}"
        )
    off, on = results.values()
    ratio = on["images_per_s"] / off["images_per_s"] if off["images_per_s"] else 0.0
    print(f"\nthroughput ratio batching on / off: {ratio:.2f}")
    print(
        f"serving overhead p50 at {args.users} users: off {off['overhead_p50'] * 1000:.1f} ms, "
        f"on {on['overhead_p50'] * 1000:.1f} ms (target <= 50 ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
