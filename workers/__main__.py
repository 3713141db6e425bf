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
from bot.media import store_from_settings
from bot.sessions import Sessions
from bot.settings import Settings, SettingsError
from bot.urlguard import guard_from_settings
from workers import heartbeat
from workers.job import TEXT_TO_IMAGE_QUEUE, VISION_LANGUAGE_QUEUE
from workers.runtime import Runtime, install

log = logging.getLogger("workers")
KNOWN_QUEUES = (TEXT_TO_IMAGE_QUEUE, VISION_LANGUAGE_QUEUE)


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
    r = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, health_check_interval=10)
    name = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    rt = Runtime(
        name=name,
        settings=settings,
        redis=r,
        store=store_from_settings(settings),
        guard=guard_from_settings(settings),
        queues=list(args.queues),
        sessions=Sessions(r, settings.session_ttl_s, settings.kept_ttl_s),
    )

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
    worker = SimpleWorker(rt.queues, connection=r, serializer=JSONSerializer, name=name)
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
