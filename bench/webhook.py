"""Throughput and latency of POST /kakao/skill under gunicorn, beside two bare endpoints.

Measures the acknowledgement path: synchronous wait zero, a distinct user per request, limits
that let every request be enqueued. All three servers run with the Procfile's gunicorn settings
(gevent, 2 workers) against one private Redis, and wrk drives each at 50 connections in turn.

    .venv/bin/python bench/webhook.py [--seconds 10] [--connections 50]

Targets (2-core machine): KoalaTalk >= 0.8x the bare rq endpoint's requests/s, p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, gunicorn, redis_server  # noqa: E402

LUA = ROOT / "bench" / "kakao.lua"


def run_wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    """Run wrk with the Kakao payload script; return requests/s and latency percentiles (ms)."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(LUA), url],
        capture_output=True, text=True, check=True).stdout
    figures: dict[str, float] = {}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    figures["rps"] = float(rps.group(1)) if rps else 0.0
    for pct in ("50", "90", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if match:
            value, unit = float(match.group(1)), match.group(2)
            figures[f"p{pct}"] = value / 1000 if unit == "us" else value * 1000 if unit == "s" \
                else value
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    figures["non2xx"] = float(errors.group(1)) if errors else 0.0
    socket_errors = re.search(r"Socket errors: (.*)", out)
    figures["socket_errors"] = 0.0 if not socket_errors else float(
        sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1))))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    media = Path(tempfile.mkdtemp(prefix="koalatalk-bench-media-"))
    results: dict[str, dict[str, float]] = {}
    with redis_server() as url:
        koala_env = {
            "KOALATALK_MODE": "development", "KOALATALK_REDIS_URL": url,
            "KOALATALK_SYNC_WAIT_S": "0", "KOALATALK_MEDIA_DIR": str(media),
            "KOALATALK_PRESET": "tiny", "KOALATALK_LOG_LEVEL": "WARNING",
        }
        bare_env = {"BENCH_REDIS_URL": url}
        with gunicorn("bench.bare_app:app", bare_env) as port:
            results["bare LPUSH"] = run_wrk(f"http://127.0.0.1:{port}/lpush", args.seconds,
                                            args.connections)
            results["bare rq enqueue"] = run_wrk(f"http://127.0.0.1:{port}/rq", args.seconds,
                                                 args.connections)
        with gunicorn("bot.app:create_app()", koala_env) as port:
            results["KoalaTalk /kakao/skill"] = run_wrk(
                f"http://127.0.0.1:{port}/kakao/skill", args.seconds, args.connections)
    shutil.rmtree(media, ignore_errors=True)

    print(f"\nwrk -t2 -c{args.connections} -d{args.seconds}s, gunicorn gevent x2, one Redis\n")
    print(f"{'endpoint':<26}{'req/s':>10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, f in results.items():
        errors = f["non2xx"] + f["socket_errors"]
        print(f"{name:<26}{f['rps']:>10.0f}{f.get('p50', 0):>10.1f}{f.get('p90', 0):>10.1f}"
              f"{f.get('p99', 0):>10.1f}{errors:>8.0f}")
    ours, bare_rq = results["KoalaTalk /kakao/skill"], results["bare rq enqueue"]
    ratio = ours["rps"] / bare_rq["rps"] if bare_rq["rps"] else 0.0
    lpush_ratio = ours["rps"] / results["bare LPUSH"]["rps"] if results["bare LPUSH"]["rps"] else 0
    print(f"\nratio KoalaTalk / bare rq   : {ratio:.2f}  (target >= 0.80)")
    print(f"ratio KoalaTalk / bare LPUSH: {lpush_ratio:.2f}")
    print(f"KoalaTalk p99               : {ours.get('p99', 0):.1f} ms (target <= 50 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
