"""Start a resident-model worker: `python -m workers text2image [vision ...]`.

Models load once, before the first job, and stay in memory. The worker is rq's SimpleWorker:
jobs run in this process, so nothing forks after CUDA is initialised.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
import uuid
from typing import Any

import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from bot import logs
from bot.blocklist import BlockList, BlockListError
from bot.media import store_from_settings
from bot.sessions import Sessions
from bot.settings import Settings, SettingsError
from bot.urlguard import guard_from_settings
from workers import heartbeat
from workers.batching import BatchingWorker, prompting
from workers.job import TEXT_TO_IMAGE_QUEUE, VISION_LANGUAGE_QUEUE
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
        model = TextToImage.load(settings.preset, settings.device)
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
        vlm = load_vision_language(settings.vlm_preset, settings.device)
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
    # keep rq's dequeue short enough (worker_ttl below) that a dead Redis is noticed.
    r = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2,
                             socket_timeout=WORKER_TTL_S, socket_keepalive=True,
                             health_check_interval=10)
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
    stopping = heartbeat.start(rt)
    worker_class = BatchingWorker if settings.max_batch > 1 else SimpleWorker
    worker = worker_class(rt.queues, connection=r, serializer=JSONSerializer, name=name,
                          worker_ttl=WORKER_TTL_S)
    try:
        worker.work(
            burst=args.burst, logging_level=settings.log_level.upper(), with_scheduler=False
        )
    finally:
        stopping.set()
        heartbeat.stop(rt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
