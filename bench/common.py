"""Shared plumbing for the benchmarks: a private Redis, servers on free loopback ports, stats."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(PY).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def wait_worker(
    redis_url: str, proc: subprocess.Popen[bytes], queue: str = "text2image", timeout: float = 180
) -> None:
    """Until a worker serving `queue` heartbeats with its models loaded (or `proc` exits)."""
    import redis

    r = redis.Redis.from_url(redis_url)
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{queue} worker exited")
        for key in r.scan_iter("kt:hb:*"):
            raw = r.get(key)
            beat = json.loads(raw) if raw else {}
            if beat.get("loaded") and queue in beat.get("queues", []):
                return
        time.sleep(0.2)
    raise RuntimeError(f"{queue} worker not ready")


@contextmanager
def worker(
    env: dict[str, str], queue: str = "text2image", log: Any = subprocess.DEVNULL
) -> Iterator[subprocess.Popen[bytes]]:
    """A real `python -m workers <queue>` on env's KOALATALK_REDIS_URL, ready when it yields;
    stopped after."""
    proc = subprocess.Popen(
        [PY, "-m", "workers", queue],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT if log is not subprocess.DEVNULL else subprocess.DEVNULL,
    )
    try:
        wait_worker(env["KOALATALK_REDIS_URL"], proc, queue)
        yield proc
    finally:
        stop(proc)


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on loopback; yields its URL."""
    import redis

    folder = Path(tempfile.mkdtemp(prefix="koalatalk-bench-redis-"))
    port = free_port()
    server = str(BIN / "redis-server") if (BIN / "redis-server").exists() else "redis-server"
    proc = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


def wait_http(url: str, timeout: float = 30.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error status means it is up
                return
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def gunicorn(app: str, env: dict[str, str], workers: int = 2) -> Iterator[int]:
    """Serve a WSGI app with the same gunicorn settings as the Procfile's web line."""
    port = free_port()
    cmd = [
        str(BIN / "gunicorn"),
        "--worker-class",
        "gevent",
        "--workers",
        str(workers),
        "--worker-connections",
        "1000",
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        app,
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield port
    finally:
        stop(proc)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 50) * 1000:.1f} ms, p95 {percentile(values, 95) * 1000:.1f} "
        f"ms, mean {statistics.fmean(values) * 1000:.1f} ms (n={len(values)})"
    )
