"""Prometheus metrics kept in Redis, rendered for /metrics (bot/web/metrics.py).

Every gunicorn worker and every worker host adds to the same Redis hashes (HINCRBY), so the
numbers are whole however many processes and hosts there are; /metrics renders them, plus the
queue depths and the workers' heartbeats, at scrape time. A metric write never fails a request.

Layout: one hash per metric, `kt:m:<name>`; a field is the label values joined by TAB, and for
histograms the bucket's upper bound, `sum` or `count` after one more TAB. Buckets are stored
per bucket (not cumulative) and summed when rendered. Label values come from small fixed sets
(queues, reasons, results), so the hashes stay small; they carry no TTL, like any counter.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from rq import Queue
from rq.registry import StartedJobRegistry

from bot.core import keys
from bot.core.job import TASKS, TEXT_TO_IMAGE_QUEUE, VISION_LANGUAGE_QUEUE

log = logging.getLogger(__name__)

SEP = "\t"
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 50.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True)
class Spec:
    """One metric: its exposition name, help text and label names."""

    name: str
    doc: str
    labels: tuple[str, ...] = ()


COUNTERS = {
    "requests": Spec("koalatalk_requests", "Messages received, by messenger.", ("messenger",)),
    "refused": Spec(
        "koalatalk_requests_refused", "Requests refused or not served, by reason.", ("reason",)
    ),
    "callbacks": Spec("koalatalk_callbacks", "Kakao callback POSTs, by result.", ("result",)),
    "deliveries": Spec(
        "koalatalk_deliveries",
        "Finished answers handed out, by messenger and path (direct, callback, push, kept).",
        ("messenger", "how"),
    ),
    "jobs": Spec("koalatalk_jobs", "Jobs ended, by queue and status.", ("queue", "status")),
    "images": Spec("koalatalk_images_generated", "Pictures drawn."),
    "questions": Spec("koalatalk_questions_answered", "Questions about photos answered."),
}
HISTOGRAMS = {
    "wait": Spec(
        "koalatalk_job_wait_seconds",
        "From a message's arrival to a worker starting its job.",
        ("queue",),
    ),
    "run": Spec(
        "koalatalk_job_run_seconds",
        "From a worker starting a job to its answer being ready.",
        ("queue",),
    ),
}


def key(metric: str) -> str:
    """The Redis hash of one metric."""
    return keys.metric(metric)


def _field(spec: Spec, labels: dict[str, str]) -> str:
    if set(labels) != set(spec.labels):
        raise ValueError(f"{spec.name} takes labels {spec.labels}, got {tuple(labels)}")
    return SEP.join(_clean(labels[name]) for name in spec.labels)


def request_field(messenger: str) -> str:
    """The `requests` counter's field for a messenger (admission counts it inside its script)."""
    return _field(COUNTERS["requests"], {"messenger": messenger})


def _clean(value: object) -> str:
    text = str(value)
    return "".join(c if c.isprintable() and c != SEP else "_" for c in text)[:64]


def inc(r: redis.Redis, metric: str, by: int = 1, **labels: str) -> None:
    """Add to a counter; never raises (a lost count must not lose a message)."""
    try:
        r.hincrby(key(metric), _field(COUNTERS[metric], labels), by)
    except redis.RedisError as exc:
        log.debug("metric not written", extra={"metric": metric, "error": type(exc).__name__})


def _observe(pipe: Any, metric: str, seconds: float, labels: dict[str, str]) -> None:
    base = _field(HISTOGRAMS[metric], labels)
    bound = next((b for b in BUCKETS if seconds <= b), None)
    le = "+Inf" if bound is None else repr(bound)
    pipe.hincrby(key(metric), f"{base}{SEP}{le}", 1)
    pipe.hincrbyfloat(key(metric), f"{base}{SEP}sum", max(0.0, seconds))
    pipe.hincrby(key(metric), f"{base}{SEP}count", 1)


def observe(r: redis.Redis, metric: str, seconds: float, **labels: str) -> None:
    """Record one observation in a histogram (one round trip); never raises."""
    try:
        with r.pipeline(transaction=False) as pipe:
            _observe(pipe, metric, seconds, labels)
            pipe.execute()
    except redis.RedisError as exc:
        log.debug("metric not written", extra={"metric": metric, "error": type(exc).__name__})


def refused(r: redis.Redis, reason: str) -> None:
    """Count a request refused or not served (`unauthorized`, `busy_slot`, `duplicate`, ...)."""
    inc(r, "refused", reason=reason)


# --- rendering -------------------------------------------------------------------------------


def _hash(r: redis.Redis, metric: str) -> dict[str, str]:
    return {keys.as_text(k): keys.as_text(v) for k, v in r.hgetall(key(metric)).items()}


def _counters(r: redis.Redis) -> Iterator[Metric]:
    for metric, spec in COUNTERS.items():
        family = CounterMetricFamily(spec.name, spec.doc, labels=list(spec.labels))
        for field, value in sorted(_hash(r, metric).items()):
            values = field.split(SEP) if spec.labels else []
            if len(values) == len(spec.labels):
                family.add_metric(values, float(value))
        yield family


def _histograms(r: redis.Redis) -> Iterator[Metric]:
    for metric, spec in HISTOGRAMS.items():
        family = HistogramMetricFamily(spec.name, spec.doc, labels=list(spec.labels))
        series: dict[str, dict[str, float]] = {}
        for field, value in _hash(r, metric).items():
            base, _, part = field.rpartition(SEP)
            series.setdefault(base, {})[part] = float(value)
        for base, parts in sorted(series.items()):
            running = 0.0
            buckets: list[tuple[str, float]] = []
            for bound in BUCKETS:
                running += parts.get(repr(bound), 0.0)
                buckets.append((repr(bound), running))
            buckets.append(("+Inf", parts.get("count", running + parts.get("+Inf", 0.0))))
            values = base.split(SEP) if spec.labels else []
            family.add_metric(values, buckets, sum_value=parts.get("sum", 0.0))
        yield family


def live_heartbeats(r: redis.Redis) -> list[dict[str, Any]]:
    """Heartbeats of the workers that beat recently, without changing anything."""
    names = sorted(keys.as_text(n) for n in r.smembers(keys.WORKERS))
    beats = r.mget([keys.heartbeat(n) for n in names]) if names else []
    return [json.loads(raw) for raw in beats if raw is not None]


def known_queues(configured: tuple[str, ...], workers: list[dict[str, Any]]) -> list[str]:
    """The queues jobs go to, those configured for readiness and those workers serve."""
    names = {queue for _function, queue in TASKS.values()} | set(configured)
    for worker in workers:
        names.update(worker.get("queues", []))
    return sorted(names)


def _queues_and_workers(r: redis.Redis, configured: tuple[str, ...]) -> Iterator[Metric]:
    workers = live_heartbeats(r)
    queues = known_queues(configured, workers)
    depth = GaugeMetricFamily(
        "koalatalk_queue_depth", "Jobs waiting in each queue.", labels=["queue"]
    )
    running = GaugeMetricFamily(
        "koalatalk_queue_running", "Jobs a worker is running, per queue.", labels=["queue"]
    )
    live = GaugeMetricFamily(
        "koalatalk_workers_ready",
        "Live workers with their models loaded, per queue.",
        labels=["queue"],
    )
    with r.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.llen(Queue.redis_queue_namespace_prefix + queue)
            pipe.zcard(StartedJobRegistry.key_template.format(queue))
        counts = pipe.execute()
    for index, queue in enumerate(queues):
        depth.add_metric([queue], counts[2 * index])
        running.add_metric([queue], counts[2 * index + 1])
        ready = sum(1 for w in workers if queue in w.get("queues", []) and w.get("loaded"))
        live.add_metric([queue], ready)
    load = GaugeMetricFamily(
        "koalatalk_worker_model_load_seconds",
        "Seconds each worker took to load each model.",
        labels=["worker", "model"],
    )
    gpu = GaugeMetricFamily(
        "koalatalk_worker_gpu_memory_bytes",
        "CUDA memory of each worker, by device and kind (allocated, reserved, peak).",
        labels=["worker", "device", "kind"],
    )
    age = GaugeMetricFamily(
        "koalatalk_worker_heartbeat_age_seconds",
        "Seconds since each worker's last heartbeat.",
        labels=["worker"],
    )
    now = time.time()
    for worker in workers:
        name = str(worker.get("name", "?"))
        for model, seconds in sorted((worker.get("load_seconds") or {}).items()):
            load.add_metric([name, model], float(seconds))
        for device, kinds in sorted((worker.get("gpu") or {}).items()):
            for kind, value in sorted(kinds.items()):
                gpu.add_metric([name, device, kind], float(value))
        age.add_metric([name], max(0.0, now - float(worker.get("at", now))))
    yield from (depth, running, live, load, gpu, age)


class RedisCollector:
    """Reads every KoalaTalk metric from Redis at scrape time."""

    def __init__(self, r: redis.Redis, configured_queues: tuple[str, ...] = ()) -> None:
        self.r = r
        self.configured_queues = configured_queues

    def collect(self) -> Iterator[Metric]:
        yield from _counters(self.r)
        yield from _histograms(self.r)
        yield from _queues_and_workers(self.r, self.configured_queues)


def render(r: redis.Redis, configured_queues: tuple[str, ...] = ()) -> bytes:
    """The Prometheus text exposition of every metric."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(r, configured_queues))
    return bytes(generate_latest(registry))


def job_done(r: redis.Redis, queue: str, run_s: float) -> None:
    """A job's answer is ready: its run time, and a picture drawn or a question answered."""
    try:
        with r.pipeline(transaction=False) as pipe:
            _observe(pipe, "run", run_s, {"queue": queue})
            pipe.hincrby(
                key("jobs"), _field(COUNTERS["jobs"], {"queue": queue, "status": "done"}), 1
            )
            if queue == TEXT_TO_IMAGE_QUEUE:
                pipe.hincrby(key("images"), "", 1)
            elif queue == VISION_LANGUAGE_QUEUE:
                pipe.hincrby(key("questions"), "", 1)
            pipe.execute()
    except redis.RedisError as exc:
        log.debug("metric not written", extra={"metric": "jobs", "error": type(exc).__name__})
