"""Throughput and latency of POST /kakao/skill under gunicorn, beside two bare endpoints.

Measures the acknowledgement path: synchronous wait zero, a distinct user per request, limits
that let every request be enqueued. A real worker heartbeats (so admission sees a live worker)
but takes no jobs: rq's suspension holds it, so its CPU stays out of the measurement.
All three servers run with the Procfile's gunicorn settings
(gevent, 2 workers) against one private Redis, and wrk drives each at 50 connections in turn.

    .venv/bin/python bench/webhook.py [--seconds 8] [--connections 50] [--rounds 3]

Targets (2-core machine): KoalaTalk >= 0.8x the bare rq endpoint's requests/s, p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from rq import Queue

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, gunicorn, redis_server, worker

LUA = ROOT / "bench" / "kakao.lua"
NAMES = ("bare LPUSH", "bare rq enqueue", "KoalaTalk /kakao/skill")


def run_wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    """Run wrk with the Kakao payload script; return requests/s and latency percentiles (ms)."""
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(LUA),
            url,
            "--",
            uuid.uuid4().hex[:12],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    figures: dict[str, float] = {}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    figures["rps"] = float(rps.group(1)) if rps else 0.0
    done = re.search(r"(\d+) requests in", out)
    figures["requests"] = float(done.group(1)) if done else 0.0
    for pct in ("50", "90", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if match:
            value, unit = float(match.group(1)), match.group(2)
            figures[f"p{pct}"] = (
                value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
            )
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    figures["non2xx"] = float(errors.group(1)) if errors else 0.0
    socket_errors = re.search(r"Socket errors: (.*)", out)
    figures["socket_errors"] = (
        0.0
        if not socket_errors
        else float(sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1))))
    )
    return figures


@contextmanager
def suspended_worker(url: str, env: dict[str, str]) -> Iterator[None]:
    """A real, live worker (so admission admits) that takes no jobs: rq's own suspension."""
    from rq.suspension import resume, suspend

    r = redis.Redis.from_url(url)
    suspend(r)
    try:
        with worker(env):
            yield
    finally:
        resume(r)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    media = Path(tempfile.mkdtemp(prefix="koalatalk-bench-media-"))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in NAMES}
    with redis_server() as url:
        koala_env = {
            "KOALATALK_MODE": "development",
            "KOALATALK_REDIS_URL": url,
            "KOALATALK_SYNC_WAIT_S": "0",
            "KOALATALK_MEDIA_DIR": str(media),
            "KOALATALK_PRESET": "tiny",
            "KOALATALK_TRANSLATION_MODEL": "tiny",
            "KOALATALK_SAFETY_MODEL": "koalatalk/tiny-safety-pass",
            "KOALATALK_LOG_LEVEL": "WARNING",
            "KOALATALK_DEFAULT_SERVICE_S": "0.0001",
            "KOALATALK_RATE_LIMIT": "0",
            "KOALATALK_DAILY_QUOTA": "0",
            "HF_HOME": tempfile.mkdtemp(prefix="koalatalk-bench-hf-"),
            "HF_HUB_OFFLINE": "1",
        }
        bare_env = {"BENCH_REDIS_URL": url}
        with (
            gunicorn("bench.bare_app:app", bare_env) as bare,
            suspended_worker(url, koala_env),
            gunicorn("bot.web.app:create_app()", koala_env) as ours,
        ):
            targets = {
                NAMES[0]: f"http://127.0.0.1:{bare}/lpush",
                NAMES[1]: f"http://127.0.0.1:{bare}/rq",
                NAMES[2]: f"http://127.0.0.1:{ours}/kakao/skill",
            }
            # Rounds alternate the three servers, so a noisy moment hits all of them alike.
            for _ in range(args.rounds):
                for name, target in targets.items():
                    runs[name].append(run_wrk(target, args.seconds, args.connections))
            # Every request must have been admitted and queued, or the figure measures refusals.
            key = Queue.redis_queue_namespace_prefix + "text2image"
            queued = redis.Redis.from_url(url).llen(key)
    shutil.rmtree(media, ignore_errors=True)
    results = {
        name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()
    }
    ratios = [o["rps"] / b["rps"] for o, b in zip(runs[NAMES[2]], runs[NAMES[1]], strict=True)]

    print(
        f"\nwrk -t2 -c{args.connections} -d{args.seconds}s x {args.rounds} alternating rounds "
        f"(medians), gunicorn gevent x2, one Redis\n"
    )
    print(f"{'endpoint':<26}{'req/s':>10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, f in results.items():
        errors = f["non2xx"] + f["socket_errors"]
        print(
            f"{name:<26}{f['rps']:>10.0f}{f.get('p50', 0):>10.1f}{f.get('p90', 0):>10.1f}"
            f"{f.get('p99', 0):>10.1f}{errors:>8.0f}"
        )
    koala = results["KoalaTalk /kakao/skill"]
    ratio = statistics.median(ratios)
    lpush_ratio = koala["rps"] / results["bare LPUSH"]["rps"] if results["bare LPUSH"]["rps"] else 0
    print(
        f"\nratio KoalaTalk / bare rq   : {ratio:.2f}  (target >= 0.80; per round: "
        f"{', '.join(f'{x:.2f}' for x in ratios)})"
    )
    print(f"ratio KoalaTalk / bare LPUSH: {lpush_ratio:.2f}")
    for name, rs in runs.items():
        per_round = ", ".join(f"{r['rps']:.0f}" for r in rs)
        print(f"  {name:<24} req/s per round: {per_round}")
    print(f"KoalaTalk p99               : {koala.get('p99', 0):.1f} ms (target <= 50 ms)")
    sent = sum(r["requests"] for r in runs[NAMES[2]])
    print(
        f"KoalaTalk jobs queued       : {queued} for {sent:.0f} requests wrk counted "
        "(wrk leaves out those in flight at the end)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
