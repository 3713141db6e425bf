"""The two bare endpoints bench/webhook.py compares KoalaTalk's webhook against.

What a user would write in ten lines: one does a single Redis LPUSH, one a plain rq enqueue.
"""

from __future__ import annotations

import json
import os
import uuid

import redis
from flask import Flask, Response, jsonify, request
from rq import Queue

app = Flask(__name__)
r = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])  # bench-only process; not our settings
queue = Queue("bare", connection=r)


@app.post("/lpush")
def lpush() -> Response:
    r.lpush("bare:list", request.get_data())
    return jsonify({"ok": True})


@app.post("/rq")
def enqueue() -> Response:
    body = json.loads(request.get_data())
    job = queue.enqueue("builtins.print", body["userRequest"]["utterance"], job_id=uuid.uuid4().hex)
    return jsonify({"ok": True, "id": job.id})
