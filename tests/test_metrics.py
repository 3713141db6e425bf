"""/metrics, /healthz and /readyz against real Redis and the shared worker.

The numbers live in Redis, so every web process and worker adds to the same counters: the tests
read them through one app after another app, and the worker process, wrote them."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.core import keys, metrics
from tests.support import kakao_payload, new_user, wait_until


def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels); the text must parse as Prometheus'."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_picture_shows_up_in_counters_and_histograms_across_processes(make_app: Any) -> None:
    reader = make_app().test_client()
    before = scrape(reader)
    writer = make_app(sync_wait_s=0.0).test_client()
    assert (
        writer.post("/kakao/skill", json=kakao_payload(new_user(), "metrics koala")).status_code
        == 200
    )
    images = "koalatalk_images_generated_total"
    # Another app instance reads what the worker process wrote: nothing is in process memory.
    assert wait_until(lambda: value(scrape(reader), images) == value(before, images) + 1, 60)
    after = scrape(reader)
    done = value(after, "koalatalk_jobs_total", queue="text2image", status="done")
    assert done == value(before, "koalatalk_jobs_total", queue="text2image", status="done") + 1
    assert value(after, "koalatalk_requests_total", messenger="kakao") >= 1
    for hist in ("koalatalk_job_wait_seconds", "koalatalk_job_run_seconds"):
        count = value(after, f"{hist}_count", queue="text2image")
        assert count == value(before, f"{hist}_count", queue="text2image") + 1
        assert value(after, f"{hist}_bucket", queue="text2image", le="+Inf") == count
        assert value(after, f"{hist}_sum", queue="text2image") > 0
    assert wait_until(
        lambda: (
            value(scrape(reader), "koalatalk_deliveries_total", messenger="kakao", how="kept")
            >= value(before, "koalatalk_deliveries_total", messenger="kakao", how="kept") + 1
        )
    )


def test_queue_depth_workers_and_model_load_time(make_app: Any, stack: Any) -> None:
    samples = scrape(make_app().test_client())
    assert ("koalatalk_queue_depth", (("queue", "text2image"),)) in samples
    assert ("koalatalk_queue_depth", (("queue", "vision"),)) in samples
    assert value(samples, "koalatalk_workers_ready", queue="text2image") >= 1
    load = value(
        samples, "koalatalk_worker_model_load_seconds", model="text2image", worker=stack["name"]
    )
    assert load > 0


def test_callbacks_are_counted_by_result(make_app: Any, callback_server: Any) -> None:
    client = make_app(sync_wait_s=0.0).test_client()
    before = scrape(client)
    token = "metrics-fail-" + new_user()
    url = callback_server.url(token, behaviour="fail")
    assert (
        client.post("/kakao/skill", json=kakao_payload(new_user(), "a fox", url)).status_code == 200
    )
    assert callback_server.wait_for(token)
    assert wait_until(
        lambda: (
            value(scrape(client), "koalatalk_callbacks_total", result="FAIL")
            == value(before, "koalatalk_callbacks_total", result="FAIL") + 1
        )
    )


def test_refusals_are_counted_by_reason(make_app: Any) -> None:
    client = make_app().test_client()
    before = scrape(client)
    forged = client.post(
        "/telegram/webhook",
        json={"update_id": 1, "message": {}},
        headers={"X-Telegram-Bot-Api-Secret-Token": "forged"},
    )
    assert forged.status_code == 401
    after = scrape(client)
    reason = ("koalatalk_requests_refused_total", (("reason", "unauthorized"),))
    assert after[reason] == before.get(reason, 0.0) + 1


def test_gpu_memory_from_a_worker_heartbeat(make_app: Any, stack: Any) -> None:
    # A worker on another host reports through its heartbeat; this one says it is on CUDA.
    r = stack["redis"]
    beat = {
        "name": "gpu-host.1.abc",
        "queues": ["text2image"],
        "loaded": True,
        "at": time.time(),
        "load_seconds": {"text2image": 12.5},
        "gpu": {"cuda:0": {"allocated": 5_000_000_000, "reserved": 6_000_000_000}},
    }
    r.set(keys.heartbeat(beat["name"]), json.dumps(beat), px=5000)
    r.sadd(keys.WORKERS, beat["name"])
    try:
        samples = scrape(make_app().test_client())
    finally:
        r.delete(keys.heartbeat(beat["name"]))
        r.srem(keys.WORKERS, beat["name"])
    gpu = value(
        samples,
        "koalatalk_worker_gpu_memory_bytes",
        worker="gpu-host.1.abc",
        device="cuda:0",
        kind="allocated",
    )
    assert gpu == 5_000_000_000
    assert (
        value(
            samples,
            "koalatalk_worker_model_load_seconds",
            worker="gpu-host.1.abc",
            model="text2image",
        )
        == 12.5
    )


def test_histogram_buckets_are_cumulative(redis_client: Any) -> None:
    queue = "bucket-test-" + new_user()[:8]
    for seconds in (0.01, 0.3, 0.3, 7.0, 9999.0):
        metrics.observe(redis_client, "run", seconds, queue=queue)
    buckets = {}
    for family in text_string_to_metric_families(metrics.render(redis_client).decode()):
        for sample in family.samples:
            if sample.labels.get("queue") == queue and sample.name.endswith("_bucket"):
                buckets[sample.labels["le"]] = sample.value
    assert buckets["0.05"] == 1
    assert buckets["0.25"] == 1
    assert buckets["0.5"] == 3
    assert buckets["10.0"] == 4
    assert buckets["+Inf"] == 5
    assert list(buckets.values()) == sorted(buckets.values())


def test_healthz_and_readyz_follow_the_configured_queues(make_app: Any) -> None:
    client = make_app(ready_queues=("text2image",)).test_client()
    assert client.get("/healthz").get_json() == {"ok": True}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["queues"] == {"text2image": True}
    # By default every queue a job can go to is required; no vision worker runs here.
    everything = make_app().test_client().get("/readyz")
    queues = everything.get_json()["queues"]
    assert set(queues) >= {"text2image", "vision"}
    if not queues["vision"]:
        assert everything.status_code == 503


@pytest.mark.parametrize("bad", ["no\tsplit", "x" * 200])
def test_label_values_are_cleaned(redis_client: Any, bad: str) -> None:
    metrics.refused(redis_client, bad)
    text = metrics.render(redis_client).decode()
    assert "no_split" in text or "x" * 64 in text
    for family in text_string_to_metric_families(text):
        assert family.name


def test_core_refusals_are_counted_with_their_reason(make_app: Any) -> None:
    user = new_user()
    client = make_app(blocked_users=(f"kakao:{user}",)).test_client()
    before = scrape(client)
    assert client.post("/kakao/skill", json=kakao_payload(user, "a cat")).status_code == 200
    after = scrape(client)
    reason = ("koalatalk_requests_refused_total", (("reason", "blocked"),))
    assert after[reason] == before.get(reason, 0.0) + 1
