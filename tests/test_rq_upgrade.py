"""rq 3: jobs written by rq 2.12 still run, job functions resolve by name, rq-dashboard works.

tests/data/rq/rq212_draw_job.json is a raw dump (HGETALL, values base64) of a draw job's hash and
its queue entry, written by the web under rq 2.12 before the restructure (see its "written_by").
"""

from __future__ import annotations

import base64
import json
import re
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import rq
from rq import Queue
from rq.job import Job as RqJob
from rq.registry import FinishedJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import import_attribute

from bot.core import keys
from bot.core.events import Picture, Reply
from bot.core.job import TASKS
from tests.support import wait_until

DUMP = Path(__file__).parent / "data" / "rq" / "rq212_draw_job.json"
DEADLINE = re.compile(rb'"deadline": [0-9.]+')


def restore_dump(r: redis.Redis, dump: dict[str, Any], deadline: float) -> list[str]:
    """Write the dumped job hashes, then their queue entries, as rq 2.12 left them.

    One change: the deadline inside each job's data (zlib-compressed JSON) is set to `deadline`,
    because the recorded one has passed and an expired job only tells its user so. The rest of
    the data is the recorded bytes, and every other field of the hash too. Returns the job ids.
    """
    ids = []
    with r.pipeline() as pipe:  # one MULTI: a worker blocked on the queue sees a whole job
        for entry in dump["jobs"]:
            fields = {k: base64.b64decode(v) for k, v in entry["hash"].items()}
            data = zlib.decompress(fields["data"])
            assert len(DEADLINE.findall(data)) == 1, data
            fresh = DEADLINE.sub(f'"deadline": {deadline!r}'.encode(), data)
            assert DEADLINE.sub(b"", fresh) == DEADLINE.sub(b"", data), "only the deadline moves"
            fields["data"] = zlib.compress(fresh)
            pipe.delete(entry["key"])
            pipe.hset(entry["key"], mapping=fields)
            ids.append(entry["key"].removeprefix(RqJob.redis_job_namespace_prefix))
        for name, members in dump["sets"].items():
            pipe.sadd(name, *members)
        for key, job_ids in dump["queues"].items():
            pipe.rpush(key, *job_ids)
        pipe.execute()
    return ids


def test_job_functions_resolve_by_name(redis_client: redis.Redis) -> None:
    """The web enqueues `workers.tasks.draw` and `workers.vision.ask` by name; rq 3 finds them."""
    from workers import tasks, vision

    assert TASKS["draw"][0] == "workers.tasks.draw" and TASKS["ask"][0] == "workers.vision.ask"
    assert import_attribute("workers.tasks.draw") is tasks.draw
    assert import_attribute("workers.vision.ask") is vision.ask
    for name, func in (("workers.tasks.draw", tasks.draw), ("workers.vision.ask", vision.ask)):
        job = RqJob.create(name, args=({},), connection=redis_client, serializer=JSONSerializer)
        assert job.func_name == name and job.func is func


def test_a_draw_job_saved_by_rq_2_12_runs_on_the_rq_3_worker(stack: dict[str, Any]) -> None:
    r: redis.Redis = stack["redis"]
    dump = json.loads(DUMP.read_text())
    assert dump["rq_version"] == "2.12.0" and rq.__version__ != dump["rq_version"]
    payload = json.loads(zlib.decompress(base64.b64decode(dump["jobs"][0]["hash"]["data"])))
    job_args = payload[2][0]
    messenger, user = job_args["messenger"], job_args["user"]
    r.delete(keys.kept(messenger, user), keys.slot(messenger, user))
    (job_id,) = restore_dump(r, dump, deadline=time.time() + 300)
    assert r.hget(RqJob.key_for(job_id), "status") == b"queued"

    # The shared worker (rq 3, BatchingWorker) takes it from the queue and runs it.
    def finished() -> bool:
        return r.hget(RqJob.key_for(job_id), "status") in (b"finished", b"failed")

    assert wait_until(finished, timeout=60), r.hgetall(RqJob.key_for(job_id))
    job = RqJob.fetch(job_id, connection=r, serializer=JSONSerializer)
    assert job.get_status() == "finished", job.latest_result()
    assert job.worker_name == stack["name"]
    assert r.hget(f"rq:worker:{stack['name']}", "version") == rq.__version__.encode()
    assert (
        job_id
        in FinishedJobRegistry("text2image", connection=r, serializer=JSONSerializer).get_job_ids()
    )
    result = job.return_value()
    assert result is not None
    assert result["status"] == "ok" and result["delivered"] in ("direct", "kept"), result
    # Nobody waits for it (its webhook is long gone, no callback URL): the worker's heartbeat
    # keeps the picture for the user's next message once the hand-over's grace has passed, and
    # its file is in the media store.
    assert wait_until(lambda: r.llen(keys.kept(messenger, user)) > 0, timeout=20)
    kept = r.lrange(keys.kept(messenger, user), 0, -1)
    assert len(kept) == 1
    reply = Reply.from_dict(json.loads(kept[0]))
    assert reply.kind == "result", reply
    urls = [p.url for p in reply.parts if isinstance(p, Picture)]
    assert len(urls) == 1, reply
    media_id = Path(urlsplit(urls[0]).path).stem
    picture = Path(stack["settings"]["media_dir"]) / f"{media_id}.jpg"
    assert picture.read_bytes()[:3] == b"\xff\xd8\xff", "a JPEG"


@pytest.fixture
def dashboard_redis(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url)  # a fresh database of this test's own
    yield r
    r.close()


def test_rq_dashboard_starts_and_lists_the_queues(
    dashboard_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rq-dashboard 0.9.0 with rq 3, as the Procfile runs it (JSON jobs), on its app factory."""
    from rq_dashboard.app import create_app

    from workers.rqworker import ResidentWorker

    r = dashboard_redis
    url = r.connection_pool.connection_kwargs
    monkeypatch.setenv(
        "RQ_DASHBOARD_REDIS_URL", f"redis://{url['host']}:{url['port']}/{url.get('db', 0)}"
    )
    monkeypatch.setenv("RQ_DASHBOARD_URL_PREFIX", "")
    monkeypatch.setenv("RQ_DASHBOARD_JSON_SERIALIZER", "true")  # the Procfile's --json
    draw = Queue("text2image", connection=r, serializer=JSONSerializer)
    queued = draw.enqueue_call(
        "workers.tasks.draw", args=({"request_id": "dash"},), job_id="dash", description="draw dash"
    )
    Queue("vision", connection=r, serializer=JSONSerializer).enqueue_call(
        "workers.vision.ask", args=({"request_id": "dash-ask"},), job_id="dash-ask"
    )
    worker = ResidentWorker(
        ["text2image"], connection=r, serializer=JSONSerializer, name="dashboard-test-worker"
    )
    worker.register_birth()
    try:
        client = create_app().test_client()
        index = client.get("/")
        assert index.status_code == 200, index.data[:500]
        page = index.get_data(as_text=True)
        assert 'id="queues"' in page and rq.__version__ in page
        # The index page fills its table from this JSON.
        listed = client.get("/0/data/queues.json")
        assert listed.status_code == 200
        counts = {q["name"]: q["count"] for q in listed.get_json()["queues"]}
        assert counts == {"text2image": 1, "vision": 1}, counts
        jobs = client.get("/0/data/jobs/text2image/queued/8/asc/1.json")
        assert jobs.status_code == 200
        assert [j["id"] for j in jobs.get_json()["jobs"]] == [queued.id]
        assert client.get("/0/view/workers").status_code == 200
        workers = client.get("/0/data/workers.json")
        assert workers.status_code == 200
        (shown,) = workers.get_json()["workers"]
        assert shown["name"] == "dashboard-test-worker" and shown["queues"] == ["text2image"]
        assert shown["current_job"] == "idle"
    finally:
        worker.register_death()
