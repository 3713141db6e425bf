"""Load and soak: a crowd of simulated Kakao users through the whole served path, on loopback.

Each user sends 5 messages (prompts, photos and questions about them, mixed) to the Procfile's
gunicorn (gevent, 2 processes) in front of Redis, one text-to-image worker (tiny KOALA) and one
vision worker (tiny Ko-LLaVA). A local stand-in plays Kakao's callback API and another Kakao's
photo CDN (both on the development allow-list). Every message must get an answer, and every
request is accounted for: a direct answer (picture, text, busy message or refusal), or an
acknowledgement whose result arrives exactly once, by callback or kept for the user's next
message (drained at the end with `결과 보기`). Nothing may be lost or delivered twice.

    .venv/bin/python bench/load.py                  # 200 users x 5 messages: minutes on 2 cores
    .venv/bin/python bench/load.py --users 1000     # the full crowd
    .venv/bin/python bench/load.py --soak 600       # 10 minutes: RSS and Redis memory every 30 s

The soak runs short retention settings (records, sessions and kept results for 1-2 minutes), so
Redis memory must level off at what they imply; it prints the slope over the last half.
Reports: acknowledgement latency p50/p99 (the webhook's answer time), answers by kind, the
deepest queue, callbacks, kept results, requests lost or duplicated, and memory.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rq import Queue

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BIN, PY, ROOT, free_port, percentile, redis_server, stop
from bot.core.texts import MESSAGES


def queue_key(name: str) -> str:
    """rq's list for a queue (its key prefix can be changed with RQ_KEY_PREFIX since rq 3)."""
    return Queue.redis_queue_namespace_prefix + name


MESSAGES_PER_USER = 5
CALLBACK_PATH = "/v1/bots/load/callback/"


# --- stand-ins for Kakao -------------------------------------------------------------------------


@dataclass
class Kakao:
    """Kakao's callback API and photo CDN, played on loopback: counts every callback by token."""

    port: int
    photos: list[bytes]
    callbacks: Counter[str] = field(default_factory=Counter)
    kinds: dict[str, str] = field(default_factory=dict)
    arrived: dict[str, threading.Event] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def callback_url(self, token: str) -> str:
        with self.lock:
            self.arrived.setdefault(token, threading.Event())
        return f"{self.origin}{CALLBACK_PATH}{token}"

    def wait(self, token: str, timeout: float) -> bool:
        """Wait for a token's callback (a user looking at the chat for the picture)."""
        with self.lock:
            event = self.arrived.setdefault(token, threading.Event())
        return event.wait(timeout)

    def photo_url(self, index: int) -> str:
        return f"{self.origin}/dna/{index % len(self.photos)}/img.jpg?credential=x"

    def start(self) -> ThreadingHTTPServer:
        kakao = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                match = re.match(r"^/dna/(\d+)/img\.jpg", self.path)
                body = kakao.photos[int(match.group(1))] if match else b"not found"
                self._send(200 if match else 404, body, "image/jpeg")

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                token = self.path.rsplit("/", 1)[-1]
                try:
                    kind = classify(json.loads(raw))
                except ValueError:
                    kind = "unreadable"
                with kakao.lock:
                    kakao.callbacks[token] += 1
                    kakao.kinds[token] = kind
                    kakao.arrived.setdefault(token, threading.Event()).set()
                answer = {
                    "taskId": token,
                    "status": "SUCCESS",
                    "message": "OK",
                    "timestamp": int(time.time() * 1000),
                }
                self._send(200, json.dumps(answer).encode(), "application/json")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.request_queue_size = 1024
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def photo_jpegs(count: int = 8) -> list[bytes]:
    from PIL import Image

    out = []
    for index in range(count):
        image = Image.linear_gradient("L").resize((320, 240)).convert("RGB")
        image = Image.blend(image, Image.new("RGB", (320, 240), (40 * index % 255, 90, 160)), 0.5)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


# --- what an answer is ---------------------------------------------------------------------------


def marker(key: str) -> str:
    """The fixed start of a message (before its first placeholder), in Korean."""
    return MESSAGES[key][0].split("{")[0].strip()


BUSY = {
    k: marker(k)
    for k in (
        "busy_slot",
        "too_slow",
        "rate_limited",
        "server_busy",
        "no_worker",
        "quota_reached",
        "unavailable",
    )
}
APOLOGY = [marker(k) for k in ("failed", "failed_ask", "worker_lost", "expired", "expired_ask")]


def classify(body: dict[str, Any]) -> str:
    """ack | kept | picture | still | photo | duplicate | busy:<why> | apology | answer."""
    if body.get("useCallback"):
        return "ack"
    outputs = body.get("template", {}).get("outputs", [])
    texts = " ".join(o["simpleText"]["text"] for o in outputs if "simpleText" in o)
    if marker("kept_note_plain") in texts:  # a kept result, served first
        return "kept"
    if any("simpleImage" in o for o in outputs):
        return "picture"
    checks = [
        ("still", [marker("still_drawing"), marker("still_thinking")]),
        ("photo", [marker("photo_received"), marker("photos_received")]),
        ("duplicate", [marker("duplicate")]),
        *((f"busy:{why}", [text]) for why, text in BUSY.items()),
        ("apology", APOLOGY),
    ]
    for kind, markers in checks:
        if any(m and m in texts for m in markers):
            return kind
    return "answer"  # a photo question answered directly, help, a refusal of the prompt, ...


# --- the crowd -----------------------------------------------------------------------------------


@dataclass
class Sent:
    user: str
    kind: str
    took: float
    token: str | None


@dataclass
class Crowd:
    port: int
    kakao: Kakao
    sent: list[Sent] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post(
        self, user: str, text: str, token: str | None = None, photo: str | None = None
    ) -> Sent:
        request: dict[str, Any] = {
            "utterance": photo or text,
            "lang": "ko",
            "user": {"id": user, "type": "botUserKey"},
            "params": {"surface": "Kakaotalk.plusfriend"},
        }
        if photo:
            request["params"]["media"] = {"type": "image", "url": photo}
        if token:
            request["callbackUrl"] = self.kakao.callback_url(token)
        data = json.dumps(
            {
                "userRequest": request,
                "bot": {"id": "load"},
                "action": {"params": {}, "detailParams": {}},
            }
        ).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/kakao/skill",
            data=data,
            headers={"Content-Type": "application/json"},
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=15) as response:
                kind = classify(json.loads(response.read()))
        except Exception as exc:  # a refused connection or a 5xx: counted, and it fails the run
            kind = "no-answer"
            with self.lock:
                self.errors[type(exc).__name__] += 1
        sent = Sent(user, kind, time.perf_counter() - started, token)
        with self.lock:
            self.sent.append(sent)
        return sent

    def session(self, user: str, plan: str, number: int, rng: random.Random) -> None:
        """One user's 5 messages. Like a person in a chat, the user waits for an acknowledged
        answer (up to the callback's minute) or a few seconds after `still drawing`, then
        thinks a moment before the next message."""
        for step in range(MESSAGES_PER_USER):
            token = None if plan == "pull" else uuid.uuid4().hex
            if plan == "photo" and step == 0:
                sent = self.post(user, "", photo=self.kakao.photo_url(number))
            elif plan == "photo" and step in (1, 2, 4):
                sent = self.post(user, f"이 사진에 무엇이 있나요? ({number}-{step})", token)
            elif plan == "photo":
                sent = self.post(user, f"코알라 그림 그려 줘 {number}-{step}", token)
            else:
                sent = self.post(user, f"바다 위를 나는 코알라 {number}-{step}", token)
            if sent.kind == "ack" and sent.token:
                self.kakao.wait(sent.token, 60.0)
            elif sent.kind == "still":
                time.sleep(rng.uniform(2.0, 6.0))
            time.sleep(rng.uniform(0.2, 1.5))

    def drain(self, user: str) -> int:
        """`결과 보기` until nothing is kept; returns how many kept results came."""
        got = 0
        for _ in range(30):
            if self.post(user, "결과 보기").kind != "kept":  # `nothing_kept` ends it
                return got
            got += 1
        return got


def plan_of(index: int) -> str:
    """60 % prompts with a callback, 30 % a photo and questions, 10 % prompts without one."""
    return ("draw", "draw", "draw", "draw", "draw", "draw", "photo", "photo", "photo", "pull")[
        index % 10
    ]


# --- the stack -----------------------------------------------------------------------------------


def base_env(kakao: Kakao, workdir: Path, soak: bool) -> dict[str, str]:
    env = {
        "KOALATALK_MODE": "development",
        "KOALATALK_PRESET": "tiny",
        "KOALATALK_TRANSLATION_MODEL": "tiny",
        "KOALATALK_SAFETY_MODEL": "koalatalk/tiny-safety-pass",
        "KOALATALK_VLM_PRESET": "tiny-kollava",
        "KOALATALK_DEVICE": "cpu",
        "KOALATALK_MEDIA_DIR": str(workdir / "media"),
        "KOALATALK_PHOTO_DIR": str(workdir / "photos"),
        "KOALATALK_DEV_ALLOW": kakao.origin,
        "KOALATALK_SYSTEM_DNS": "false",
        "KOALATALK_LOG_LEVEL": "WARNING",
        "KOALATALK_LOG_JSON": "true",
        "KOALATALK_VLM_MAX_NEW_TOKENS": "16",
        "HF_HOME": str(workdir / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    if soak:  # short retention: Redis must level off at what these imply
        env.update(
            {
                "KOALATALK_RECORD_TTL_S": "60",
                "KOALATALK_SESSION_TTL_S": "120",
                "KOALATALK_KEPT_TTL_S": "120",
                "KOALATALK_PHOTO_TTL_S": "120",
                "KOALATALK_MEDIA_RETENTION_S": "120",
                "KOALATALK_TRANSLATION_CACHE_TTL_S": "120",
                # users loop for minutes: no per-user rate limit or daily quota
                "KOALATALK_RATE_LIMIT": "0",
                "KOALATALK_DAILY_QUOTA": "0",
            }
        )
    return env


def start_worker(queue: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PY, "-m", "workers", queue],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )


def wait_ready(redis_url: str, procs: list[subprocess.Popen[bytes]], queues: set[str]) -> None:
    import redis

    r = redis.Redis.from_url(redis_url)
    end = time.time() + 300
    while time.time() < end:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a worker exited while loading")
        ready = set()
        for key in r.scan_iter("kt:hb:*"):
            info = json.loads(r.get(key) or b"{}")
            if info.get("loaded"):
                ready.update(info.get("queues", []))
        if queues <= ready:
            return
        time.sleep(0.5)
    raise RuntimeError("workers not ready")


@contextmanager
def gunicorn(env: dict[str, str], log: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """The Procfile's web line on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "gunicorn"),
            "--worker-class",
            "gevent",
            "--workers",
            "2",
            "--worker-connections",
            "1000",
            "--backlog",
            "2048",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "bot.web.app:create_app()",
        ],
        cwd=ROOT,
        env={**os.environ, **env, "KOALATALK_PUBLIC_URL": f"http://127.0.0.1:{port}"},
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        end = time.time() + 60
        while time.time() < end:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        yield port, proc
    finally:
        stop(proc)


# --- memory --------------------------------------------------------------------------------------


def rss_mb(pid: int, children: bool = False) -> float:
    import psutil

    try:
        process = psutil.Process(pid)
        procs = [process, *(process.children(recursive=True) if children else [])]
        return sum(p.memory_info().rss for p in procs) / 2**20
    except psutil.Error:
        return float("nan")


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    num = sum((t - mean_t) * (v - mean_v) for t, v in points)
    den = sum((t - mean_t) ** 2 for t, _ in points) or 1.0
    return num / den * 60


# --- the run -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--users",
        type=int,
        default=None,
        help="users (default 200; with --soak, the pool that loops: 60)",
    )
    parser.add_argument("--concurrency", type=int, default=100, help="users at once")
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of continuous load")
    parser.add_argument("--sample-s", type=float, default=30.0, help="soak sampling period")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    soak = args.soak > 0
    users = args.users or (60 if soak else 200)
    concurrency = min(args.concurrency, users)
    import redis

    workdir = Path(tempfile.mkdtemp(prefix="koalatalk-load-"))
    kakao = Kakao(free_port(), photo_jpegs())
    http = kakao.start()
    print(
        f"load: {users} users x {MESSAGES_PER_USER} messages, {concurrency} at once"
        + (f", soak {args.soak:.0f} s" if soak else "")
        + f"; logs in {workdir}",
        flush=True,
    )
    try:
        with redis_server() as url:
            env = {**base_env(kakao, workdir, soak), "KOALATALK_REDIS_URL": url}
            started = time.time()
            workers = [
                start_worker("text2image", env, workdir / "worker-t2i.log"),
                start_worker("vision", env, workdir / "worker-vision.log"),
            ]
            try:
                wait_ready(url, workers, {"text2image", "vision"})
                print(f"workers ready in {time.time() - started:.0f} s", flush=True)
                with gunicorn(env, workdir / "web.log") as (port, web):
                    return run(
                        args,
                        users,
                        concurrency,
                        soak,
                        port,
                        web,
                        workers,
                        kakao,
                        redis.Redis.from_url(url),
                    )
            finally:
                for proc in workers:
                    stop(proc)
    finally:
        http.shutdown()
        if os.environ.get("KOALATALK_KEEP_LOAD_LOGS") is None:
            shutil.rmtree(workdir, ignore_errors=True)


def run(
    args: argparse.Namespace,
    users: int,
    concurrency: int,
    soak: bool,
    port: int,
    web: subprocess.Popen[bytes],
    workers: list[subprocess.Popen[bytes]],
    kakao: Kakao,
    r: Any,
) -> int:
    crowd = Crowd(port, kakao)
    names = [f"load-{uuid.uuid4().hex[:10]}-{i}" for i in range(users)]
    depth = {"text2image": 0, "vision": 0}
    memory: list[tuple[float, float, float, float, float]] = []
    done = threading.Event()
    t0 = time.time()

    def sample() -> None:
        next_memory = 0.0
        while not done.is_set():
            for queue in depth:
                depth[queue] = max(depth[queue], int(r.llen(queue_key(queue))))
            now = time.time() - t0
            if now >= next_memory:
                used = int(r.info("memory")["used_memory"]) / 2**20
                memory.append(
                    (
                        now,
                        rss_mb(web.pid, children=True),
                        rss_mb(workers[0].pid),
                        rss_mb(workers[1].pid),
                        used,
                    )
                )
                next_memory += args.sample_s if soak else 5.0
            done.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    until = t0 + args.soak

    def user_loop(index: int) -> None:
        rng = random.Random(args.seed * 100_003 + index)
        time.sleep(rng.uniform(0, 2.0))  # the crowd arrives within two seconds
        rounds = 0
        while True:
            crowd.session(names[index], plan_of(index), rounds * users + index, rng)
            rounds += 1
            if not soak or time.time() >= until:
                return

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(user_loop, range(users)))
    sent_at_end = time.time()
    # Results still on their way: callbacks within the callback deadline (50 s) and a margin.
    acked = [s.token for s in crowd.sent if s.kind == "ack" and s.token]
    wait_end = time.time() + 75
    while time.time() < wait_end:
        queued = int(r.llen(queue_key("text2image"))) + int(r.llen(queue_key("vision")))
        running = len(list(r.scan_iter("kt:run:*", count=1000)))
        if not queued and not running and all(kakao.callbacks[t] for t in acked):
            break
        time.sleep(0.5)
    time.sleep(1.5)  # a result kept in the last moment
    session_sent = list(crowd.sent)
    drained = Counter({name: crowd.drain(name) for name in names})
    done.set()
    sampler.join(2)
    return report(
        args, users, soak, crowd, session_sent, drained, kakao, depth, memory, sent_at_end - t0
    )


def report(
    args: argparse.Namespace,
    users: int,
    soak: bool,
    crowd: Crowd,
    sent: list[Sent],
    drained: Counter[str],
    kakao: Kakao,
    depth: dict[str, int],
    memory: list[tuple[float, float, float, float, float]],
    span: float,
) -> int:
    kinds = Counter(s.kind for s in sent)
    took = [s.took for s in sent]
    acks = [s.took for s in sent if s.kind == "ack"]
    # Per user: every acknowledgement or "still drawing" owes exactly one later delivery.
    owed: Counter[str] = Counter()
    delivered: Counter[str] = Counter()
    duplicates = 0
    for s in sent:
        if s.kind in ("ack", "still"):
            owed[s.user] += 1
        if s.kind == "kept":
            delivered[s.user] += 1
        if s.kind == "ack" and s.token:
            hits = kakao.callbacks.get(s.token, 0)
            delivered[s.user] += min(hits, 1)
            duplicates += max(0, hits - 1)
    for user, count in drained.items():
        delivered[user] += count
    lost = sum(max(0, owed[u] - delivered[u]) for u in owed)
    extra = sum(max(0, delivered[u] - owed[u]) for u in delivered)
    print(
        f"\n{len(sent)} messages in {span:.0f} s ({len(sent) / span:.1f}/s) from {users} users;"
        f" then {sum(drained.values())} kept results drained with '결과 보기'"
    )
    print("answers by kind: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common()))
    print(
        f"webhook answer time, all messages: p50 {percentile(took, 50) * 1000:.0f} ms, "
        f"p99 {percentile(took, 99) * 1000:.0f} ms, max {max(took) * 1000:.0f} ms"
    )
    by_kind = {k: [s.took for s in sent if s.kind == k] for k in kinds}
    print(
        "  by kind (p50 / p99 ms): "
        + ", ".join(
            f"{k} {percentile(v, 50) * 1000:.0f}/{percentile(v, 99) * 1000:.0f}"
            for k, v in sorted(by_kind.items())
        )
    )
    if acks:
        print(
            f"acknowledgements (useCallback): p50 {percentile(acks, 50) * 1000:.0f} ms, "
            f"p99 {percentile(acks, 99) * 1000:.0f} ms (n={len(acks)})"
        )
    callback_kinds = Counter(kakao.kinds.values())
    print(
        f"callbacks received {sum(kakao.callbacks.values())} ("
        + ", ".join(f"{k} {v}" for k, v in callback_kinds.most_common())
        + ")"
    )
    print(f"deepest queue: text2image {depth['text2image']}, vision {depth['vision']}")
    print(
        f"owed later deliveries {sum(owed.values())}, delivered {sum(delivered.values())}: "
        f"lost {lost}, duplicated {duplicates + extra}; no answer {kinds['no-answer']}"
        + (f" ({dict(crowd.errors)})" if crowd.errors else "")
    )
    if memory:
        print("\n   t s   web RSS MB   t2i RSS MB   vision RSS MB   redis used MB")
        for t, web, t2i, vision, used in memory:
            print(f"{t:6.0f} {web:12.1f} {t2i:12.1f} {vision:15.1f} {used:15.2f}")
        first, last = memory[0], memory[-1]
        print(
            f"start -> end: web {first[1]:.1f} -> {last[1]:.1f} MB, text2image worker "
            f"{first[2]:.1f} -> {last[2]:.1f} MB, vision worker {first[3]:.1f} -> "
            f"{last[3]:.1f} MB, Redis {first[4]:.2f} -> {last[4]:.2f} MB"
        )
        if soak:
            under_load = [m for m in memory if m[0] <= args.soak]
            half = [m for m in under_load if m[0] >= under_load[-1][0] / 2]
            for index, name in (
                (1, "web"),
                (2, "text2image worker"),
                (3, "vision worker"),
                (4, "Redis used_memory"),
            ):
                slope = slope_per_min([(m[0], m[index]) for m in half])
                print(f"slope over the last half, {name}: {slope:+.3f} MB/min")
    ok = lost == 0 and duplicates + extra == 0 and kinds["no-answer"] == 0
    print("\nEVERY MESSAGE ANSWERED, NOTHING LOST OR DUPLICATED" if ok else "\nFAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
