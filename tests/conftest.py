"""Test-wide setup: an offline Hugging Face cache, a real Redis, shared processes, markers.

The environment is set here, before any test module imports huggingface_hub, so every model load
in this run reads a private temporary cache with HF_HUB_OFFLINE=1 and never touches the network.

Fixtures live here; plain helpers in tests/support.py (test modules import those, never this
file). Under pytest-xdist each worker process runs its own session: its own run folder, Redis
server (or share of REDIS_URL's databases), stand-in servers and shared worker.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest

from tests.support import (
    LOG_DIR,
    RUN_DIR,
    Databases,
    RedisServer,
    Workers,
    reserve_port,
    start_worker,
    stop_process,
    wait_ready,
    wait_until,
    worker_env,
    workers_on,
    xdist_slot,
)

os.environ["HF_HOME"] = str(RUN_DIR / "hf")
os.environ.pop("HF_HUB_CACHE", None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# Torch's thread pool in every process this run starts (workers inherit it). Under `pytest -n N`
# the N sessions share the cores: each gets its share, since OpenMP threads that outnumber the
# cores spin against each other and turn a 0.2 s tiny drawing into seconds (bench/gpu.py does
# the same for its CPU smoke).
# An OMP_NUM_THREADS given from outside is kept. xdist's workers inherit the controller's
# environment, so the value this file chose there is marked, and a worker replaces it.
_index, _sessions = xdist_slot()
if os.environ.get("OMP_NUM_THREADS") in (None, os.environ.get("_KT_TEST_OMP_DEFAULT")):
    _threads = "2" if _sessions == 1 else str(max(1, (os.cpu_count() or 2) // _sessions))
    os.environ["OMP_NUM_THREADS"] = os.environ["_KT_TEST_OMP_DEFAULT"] = _threads

# Our own Redis server has this many databases for one process's tests (the shared stack holds
# one, a module's private workers one, a test one or two at a time).
OWN_DATABASES = 32


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")
    parser.addoption("--run-gpu", action="store_true", help="run tests marked gpu")


# The longest modules, longest first (as `pytest -n 2 --durations=0` measured them; most start
# worker processes or long subprocesses of their own). They run first, so that under `pytest -n 2`
# (whole modules to one xdist worker, in this order: pyproject's --dist loadfile
# --no-loadscope-reorder) no worker is left with a long one at the end while the other idles.
# Only the order depends on this list, never a result.
LONGEST_FIRST = (
    "test_core_faults.py",
    "test_korean_safety_flow.py",
    "test_bench_gpu.py",
    "test_batching.py",
    "test_faults_workers.py",
    "test_storybook.py",
    "test_kakao_flow.py",
    "test_groups.py",
    "test_shared_worker.py",
    "test_faults_sigterm.py",
    "test_security.py",
    "test_fuzz.py",
    "test_cli.py",
    "test_line.py",
    "test_faults_redis.py",
    "test_text2image.py",
    "test_vision_flow.py",
    "test_admission.py",
    "test_playground_browser.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(pytest.mark.skip(reason="slow: run with --run-slow"))
        if "gpu" in item.keywords and not config.getoption("--run-gpu"):
            item.add_marker(pytest.mark.skip(reason="gpu: needs CUDA, run with --run-gpu"))
    rank = {name: n for n, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(RUN_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_databases() -> Iterator[Databases]:
    """Where every Redis database of this process's tests comes from, one at a time, flushed
    before and after (`lease()`): our own server on a free port, or, when REDIS_URL is given,
    this xdist worker's share of that server's databases."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield Databases.on_server(given, *xdist_slot())
        return
    server = RedisServer(RUN_DIR / "redis", databases=OWN_DATABASES).start()
    try:
        yield Databases(server.url(), list(range(OWN_DATABASES)))
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_databases: Databases) -> Iterator[str]:
    """A Redis database of this test's own, empty at the start and flushed at the end."""
    with redis_databases.lease() as url:
        yield url


@pytest.fixture(scope="module")
def module_redis_url(redis_databases: Databases) -> Iterator[str]:
    """A Redis database of this test module's own, empty at the start and flushed at the end."""
    with redis_databases.lease() as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str):  # type: ignore[no-untyped-def]
    """A client for this test's own database (`redis_url`)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def fresh_redis_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RedisServer]]:
    """Start redis-servers of this module's own, for tests that kill, freeze or restart Redis:
    `fresh_redis_server(appendonly=True, fsync_always=True)`. All stop at the module's end."""
    started: list[RedisServer] = []

    def start(**options: Any) -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp("redis"), **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# --- KoalaTalk processes shared by the whole run -------------------------------------------------


@pytest.fixture(scope="session")
def callback_server():  # type: ignore[no-untyped-def]
    """The stand-in for Kakao's callback API, on a loopback port on the development list."""
    from tests.support import CallbackServer

    server = CallbackServer()
    http = server.start()
    yield server
    http.shutdown()


@pytest.fixture(scope="session")
def messenger_apis():  # type: ignore[no-untyped-def]
    """The stand-in for the Telegram Bot API and the LINE Messaging API (tests/standins.py)."""
    from tests.standins import ApiStandIn

    server = ApiStandIn()
    http = server.start()
    yield server
    http.shutdown()


@pytest.fixture(scope="session")
def web_port() -> Iterator[int]:
    """The port a test may serve the web app on: the stack's PUBLIC_URL points there. It stays
    reserved for the whole session, so no other process takes it in the meantime."""
    sock, port = reserve_port()
    yield port
    sock.close()


@pytest.fixture(scope="session")
def stack(redis_databases: Databases, callback_server, messenger_apis, web_port):  # type: ignore[no-untyped-def]
    """One text-to-image worker with the tiny model, shared by every test that needs one, on a
    Redis database of its own for the whole session."""
    import redis

    from tests.standins import LINE_TOKEN, TELEGRAM_TOKEN

    with redis_databases.lease() as redis_url:
        settings = dict(
            mode="development",
            redis_url=redis_url,
            preset="tiny",
            translation_model="tiny",
            safety_model="koalatalk/tiny-safety-pass",
            media_dir=str(RUN_DIR / "media"),
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
        log_path = LOG_DIR / "worker.log"
        proc = start_worker(worker_env({}, **settings), log_path=log_path)
        client = redis.Redis.from_url(redis_url)
        try:
            name = wait_ready(client, proc, log_path=log_path)
            yield {
                "settings": settings,
                "worker": proc,
                "name": name,
                "log": log_path,
                "redis": client,
            }
        finally:
            stop_process(proc)
            client.close()


@pytest.fixture
def idle_stack(stack: dict[str, Any]) -> dict[str, Any]:
    """The shared stack once its worker has nothing queued or running: a test that needs its
    answer within Kakao's budget does not wait behind the jobs an earlier test left."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    r = stack["redis"]
    queue = Queue("text2image", connection=r, serializer=JSONSerializer)

    def idle() -> bool:
        return (
            queue.count == 0
            and r.llen(queue.intermediate_queue_key) == 0
            and queue.started_job_registry.count == 0
        )

    assert wait_until(idle, timeout=120, step=0.1), "the shared worker did not become idle"
    return stack


@pytest.fixture
def service_time(stack: dict[str, Any]) -> Iterator[Callable[[float], None]]:
    """Set the shared worker's recorded service time (what admission's estimate reads), as an
    idle or a busy model would have measured it; the measured one is put back after. Tests that
    expect a direct answer pin it low: under load the measured average may say `too slow`."""
    from bot.core import admission, keys

    r = stack["redis"]
    field = admission.service_field("text2image", "tiny")
    before = r.hget(keys.SERVICE_TIMES, field)

    def set_to(seconds: float) -> None:
        r.hset(keys.SERVICE_TIMES, field, str(seconds))

    yield set_to
    if before is None:
        r.hdel(keys.SERVICE_TIMES, field)
    else:
        r.hset(keys.SERVICE_TIMES, field, before)


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

    server = CdnServer()
    http = server.start()
    yield server
    http.shutdown()


@pytest.fixture(scope="session")
def private_workers(
    stack: dict[str, Any], redis_databases: Databases
) -> Callable[..., AbstractContextManager[Workers]]:
    """Workers of a test's or module's own, beside the shared stack: the slow worker (a delay
    injected before each job), a fleet, a batching or a strict one.

        with private_workers("slow", delay_s=1.5, max_batch=1) as slow: ...

    They get a fresh Redis database of their own and the stack's settings with the overrides
    given (as strings); `count` workers start together; all stop, and the database is flushed,
    when the `with` block ends. In a module-scoped fixture: `with ...: yield slow`.
    """

    @contextmanager
    def start(
        name: str,
        count: int = 1,
        delay_s: float = 0.0,
        queues: tuple[str, ...] = ("text2image",),
        **overrides: Any,
    ) -> Iterator[Workers]:
        settings = {**stack["settings"], **{k: str(v) for k, v in overrides.items()}}
        if delay_s:
            settings["debug_job_delay_s"] = str(delay_s)  # development only: a test seam
        with redis_databases.lease() as url, workers_on(url, settings, name, count, queues) as w:
            yield w

    return start
