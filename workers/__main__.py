"""Start a resident-model worker: `python -m workers text2image [vision ...]`.

Models load once, before the first job, and stay in memory. The worker is rq's SimpleWorker
(workers/rqworker.py): jobs run in this process, so nothing forks after CUDA is initialised.
SIGTERM or SIGINT: an idle worker exits within seconds, whatever state Redis is in; a busy one
finishes its job (or batch) first.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry
from rq.serializers import JSONSerializer
from rq.worker import DequeueStrategy

from bot.core import logs
from bot.core.blocklist import BlockList, BlockListError
from bot.core.job import TEXT_TO_IMAGE_QUEUE, VISION_LANGUAGE_QUEUE
from bot.core.sessions import Sessions
from bot.core.settings import Settings, SettingsError
from bot.core.stores import store_from_settings
from bot.core.urlguard import guard_from_settings
from workers import heartbeat
from workers.batching import BatchingWorker, prompting
from workers.rqworker import RECONNECT_MAX_S, quick_client
from workers.runtime import Runtime, install

log = logging.getLogger("workers")
KNOWN_QUEUES = (TEXT_TO_IMAGE_QUEUE, VISION_LANGUAGE_QUEUE)
WORKER_TTL_S = 45  # rq's worker key TTL; it blocks on the queue for WORKER_TTL_S - 15 seconds


def load_models(settings: Settings, queues: list[str]) -> tuple[dict[str, Any], dict[str, float]]:
    """Load every model the served queues need, once; raise ModelUnavailable when impossible."""
    models: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    if TEXT_TO_IMAGE_QUEUE in queues:
        from models.text2image import TextToImage

        started = time.perf_counter()
        model = TextToImage.load(
            settings.preset,
            settings.device,
            compile_unet=settings.compile_unet,
            memory=settings.draw_memory,
        )
        model.warm_up()
        models["text2image"] = model
        seconds["text2image"] = round(time.perf_counter() - started, 3)
        aux, aux_seconds = prompting.load_aux_models(settings)  # translator, safety checker
        models.update(aux)
        seconds.update(aux_seconds)
    if VISION_LANGUAGE_QUEUE in queues:
        from PIL import Image

        from models.vision_language import load_vision_language

        started = time.perf_counter()
        vlm = load_vision_language(settings.vlm_preset, settings.device, quant=settings.vlm_quant)
        vlm.answer([Image.new("RGB", (64, 64), (128, 128, 128))], [], "?", max_new_tokens=1)
        models["vision"] = vlm
        seconds["vision"] = round(time.perf_counter() - started, 3)
    return models, seconds


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load models, heartbeat, and work until told to stop."""
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("queues", nargs="+", choices=KNOWN_QUEUES, help="queues to serve")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"koalatalk worker: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level, settings.log_json)
    if settings.development:
        log.warning(
            "development mode: tiny model and loopback targets from DEV_ALLOW allowed",
            extra={"dev_allow": ",".join(settings.dev_allow)},
        )
    # redis-py's default 5 s socket timeout would break rq's blocking dequeue: allow it, and
    # keep rq's dequeue short enough (worker_ttl below) that a dead Redis is noticed. A blip of
    # a few seconds is retried inside each command; rq retries a failed dequeue itself (at most
    # RECONNECT_MAX_S apart); when another step fails, rq's loop ends and `serve` waits for
    # Redis and starts a new one. Writes on the way out use a fail-fast client instead.
    r = redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=2,
        socket_timeout=WORKER_TTL_S,
        socket_keepalive=True,
        health_check_interval=10,
        retry=Retry(ExponentialWithJitterBackoff(base=0.25, cap=2.0), 3),
    )
    name = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    rt = Runtime(
        name=name,
        settings=settings,
        redis=r,
        store=store_from_settings(settings, r),
        guard=guard_from_settings(settings),
        queues=list(args.queues),
        sessions=Sessions(r, settings.session_ttl_s, settings.kept_ttl_s),
    )
    try:
        rt.blocklist = BlockList.load(settings.blocklist_path)
    except BlockListError as exc:
        print(f"koalatalk worker: {exc}", file=sys.stderr)
        return 2

    from models.common import ModelUnavailable
    from workers import planning

    planned = planning.check(settings, rt.queues)  # before anything loads
    if planned.refusal:
        log.error("memory plan does not fit", extra={"need": planned.refusal})
        print(f"koalatalk worker: cannot start: {planned.refusal}", file=sys.stderr)
        return 4
    if planned.settings is not None and planned.settings is not settings:
        log.warning(
            "MAX_BATCH capped by the memory plan", extra={"max_batch": planned.settings.max_batch}
        )
        settings = rt.settings = planned.settings
    try:
        rt.models, rt.load_seconds = load_models(settings, rt.queues)
    except ModelUnavailable as exc:
        log.error("model unavailable", extra={"preset": settings.preset})
        print(f"koalatalk worker: cannot start: {exc}", file=sys.stderr)
        return 3
    install(rt)
    log.info(
        "models loaded", extra={"load_seconds": str(rt.load_seconds), "queues": ",".join(rt.queues)}
    )
    quick = quick_client(settings.redis_url)
    stopping = heartbeat.start(rt)
    try:
        serve(rt, burst=args.burst, quick=quick)
    finally:
        stopping.set()
        with contextlib.suppress(redis.RedisError):
            heartbeat.stop(rt, quick)  # one quick try: Redis may be gone or frozen
    return 0


def serve(rt: Runtime, burst: bool = False, quick: redis.Redis | None = None) -> None:
    """Run rq's worker loop; when Redis drops it, wait for Redis and run a new loop.

    Only rq's worker object is made again: the models stay loaded. SIGTERM during a job is rq's
    warm shutdown (the job, or batch, finishes first); idle, or between two loops, it stops at
    once. `quick`: the fail-fast client for rq's last writes (workers/rqworker.py).
    """
    stop = threading.Event()
    # One worker class whatever MAX_BATCH: with 1 it gathers nothing, and it still times each
    # job's whole turn for admission's estimate (workers/tasks.py).
    worker_class = BatchingWorker
    catch_stop_signals(stop)  # until rq's loop installs its handlers, which set `stop` too
    while not stop.is_set():
        worker = worker_class(
            rt.queues,
            connection=rt.redis,
            serializer=JSONSerializer,
            name=rt.name,
            worker_ttl=WORKER_TTL_S,
            quick=quick,
            stop=stop,
        )
        try:
            # Round robin (the default): a worker serving both queues takes them in turn, so
            # a stream of drawings never starves photo questions, nor the reverse.
            worker.work(
                burst=burst,
                logging_level=rt.settings.log_level.upper(),
                with_scheduler=False,
                dequeue_strategy=DequeueStrategy(rt.settings.dequeue),
            )
        except redis.RedisError as exc:  # rq's own tear-down, with Redis gone
            log.warning("rq worker stopped", extra={"error": type(exc).__name__})
        finally:
            catch_stop_signals(stop)  # rq's handlers belong to the loop that just ended
        if burst or stop.is_set():
            return
        log.warning("rq worker loop ended (Redis unavailable?); reconnecting")
        if not wait_for_redis(rt.redis, stop):
            return
        with contextlib.suppress(redis.RedisError):
            rt.redis.delete(worker.key)  # the old loop's record, so the name can be used again


def catch_stop_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT only set `stop` (outside rq's loop, which has its own handlers)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())


def wait_for_redis(r: redis.Redis, stop: threading.Event) -> bool:
    """Ping Redis with a growing pause until it answers; False when told to stop first."""
    pause = 0.25
    while not stop.is_set():
        try:
            r.ping()
            log.info("redis is back")
            return True
        except redis.RedisError:
            stop.wait(pause)
            pause = min(pause * 2, RECONNECT_MAX_S)
    return False


if __name__ == "__main__":
    sys.exit(main())
