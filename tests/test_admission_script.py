"""The admission script and its Python side agree, and rq does what admission relies on.

admission.lua names every KEYS and ARGV entry in a local at its top, in the order of
admission.Call's fields, and numbers its statuses as admission.Status does: an off-by-one would
admit or refuse the wrong requests silently, so these tests read the script itself.
rq enqueues a job (hash and push) inside the caller's pipeline, and pushes through
`Queue.push_job_id`, which admission's HeldQueue holds back: the script pushes only what it admits.
If rq ever wrote outside the pipeline, or pushed another way, these fail.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from typing import Any

from rq import Queue
from rq.job import Job as RqJob
from rq.serializers import JSONSerializer

from bot.core import admission, keys

LUA = admission.SCRIPT


def test_the_status_numbers_agree() -> None:
    found = re.search(r"^local ((?:[A-Z_]+,\s*)+[A-Z_]+)\s*=\s*((?:\d+,\s*)+\d+)", LUA, re.M)
    assert found is not None, "admission.lua declares its statuses in one local line"
    names = [n.strip() for n in found.group(1).split(",")]
    numbers = [int(n) for n in found.group(2).split(",")]
    assert dict(zip(names, numbers, strict=True)) == {s.name: s.value for s in admission.Status}


def test_every_input_is_named_at_the_top_in_the_order_of_call() -> None:
    named_keys = re.findall(r"^local (\w+) = KEYS\[(\d+)\]", LUA, re.M)
    named_argv = re.findall(r"^local (\w+) = [\w.(, ]*ARGV\[(\d+)\]", LUA, re.M)
    fields = [f.name for f in dataclasses.fields(admission.Call)]
    assert [int(i) for _, i in named_keys] == list(range(1, admission.KEY_COUNT + 1))
    assert [name for name, _ in named_keys] == fields[: admission.KEY_COUNT]
    assert [int(i) for _, i in named_argv] == list(range(1, len(fields) - admission.KEY_COUNT + 1))
    assert [name for name, _ in named_argv] == fields[admission.KEY_COUNT :]
    # Nowhere else does the script read KEYS or ARGV by position.
    assert LUA.count("KEYS[") == len(named_keys) and LUA.count("ARGV[") == len(named_argv)


def test_call_builds_keys_and_argv_in_script_order() -> None:
    ticket = _ticket("kakao", "u-order", "q", lambda pipe: None)
    limits = _limits()
    call = ticket.call(limits, 1000.0)
    assert call.keys()[5] == "q" and call.keys()[12] == RqJob.key_for(ticket.request_id)
    argv = call.argv()
    assert argv[0] == ticket.request_id
    assert len(argv) == len(dataclasses.fields(call)) - admission.KEY_COUNT
    assert argv[11] == "1" and argv[12] == "0"  # check_limits, at_front


def test_rq_enqueues_inside_the_callers_pipeline_only(redis_client: Any) -> None:
    r = redis_client
    queue = Queue(f"contract-{uuid.uuid4().hex[:8]}", connection=r, serializer=JSONSerializer)
    job_id = uuid.uuid4().hex
    with r.pipeline(transaction=True) as pipe:
        queue.enqueue_call("workers.tasks.draw", args=({},), job_id=job_id, pipeline=pipe)
        assert not r.exists(RqJob.key_for(job_id)) and r.llen(queue.key) == 0
        pipe.execute()
    assert queue.get_job_ids() == [job_id] and r.exists(RqJob.key_for(job_id))
    front = uuid.uuid4().hex
    with r.pipeline(transaction=True) as pipe:
        queue.enqueue_call(
            "workers.tasks.draw", args=({},), job_id=front, pipeline=pipe, at_front=True
        )
        pipe.execute()
    assert queue.get_job_ids() == [front, job_id]
    r.delete(queue.key, RqJob.key_for(job_id), RqJob.key_for(front))


def test_a_held_queue_writes_rqs_hash_but_not_the_push(redis_client: Any) -> None:
    r = redis_client
    held = admission.HeldQueue(
        f"contract-{uuid.uuid4().hex[:8]}", connection=r, serializer=JSONSerializer
    )
    job_id = uuid.uuid4().hex
    with r.pipeline(transaction=True) as pipe:
        held.enqueue_call("workers.tasks.draw", args=({},), job_id=job_id, pipeline=pipe)
        pipe.execute()
    assert r.exists(RqJob.key_for(job_id)) and r.llen(held.key) == 0
    r.delete(RqJob.key_for(job_id))


def test_only_an_admitted_job_is_pushed_at_either_end(redis_client: Any) -> None:
    r = redis_client
    queue = admission.HeldQueue(
        f"contract-{uuid.uuid4().hex[:8]}", connection=r, serializer=JSONSerializer
    )
    waiting = [uuid.uuid4().hex for _ in range(3)]
    for job_id in waiting:
        Queue(queue.name, connection=r, serializer=JSONSerializer).enqueue_call(
            "workers.tasks.draw", args=({},), job_id=job_id
        )
    user = f"u-{uuid.uuid4().hex[:8]}"
    r.set(keys.slot("kakao", user), "someone-else", ex=60)  # the user's slot is taken: BUSY
    for at_front in (False, True):
        ticket = _ticket("kakao", user, queue.key, lambda pipe: None)
        ticket = dataclasses.replace(ticket, save_job=_saver(queue, ticket.request_id, at_front))
        decision = admission.admit(r, ticket, _limits(at_front=at_front))
        assert decision.status == admission.Status.BUSY and decision.holder == "someone-else"
        assert queue.get_job_ids() == waiting, "the refused job was not pushed"
        assert not r.exists(ticket.job_key)
    admitted = _ticket("kakao", f"u-{uuid.uuid4().hex[:8]}", queue.key, lambda pipe: None)
    admitted = dataclasses.replace(admitted, save_job=_saver(queue, admitted.request_id, False))
    decision = admission.admit(r, admitted, _limits())
    assert decision.status == admission.Status.ADMITTED and decision.ahead == len(waiting)
    assert queue.get_job_ids() == [*waiting, admitted.request_id]
    first = _ticket("kakao", f"u-{uuid.uuid4().hex[:8]}", queue.key, lambda pipe: None)
    first = dataclasses.replace(first, save_job=_saver(queue, first.request_id, True))
    decision = admission.admit(r, first, _limits(at_front=True))
    assert decision.status == admission.Status.ADMITTED and decision.ahead == 0
    assert queue.get_job_ids() == [first.request_id, *waiting, admitted.request_id]
    r.delete(
        queue.key, *(RqJob.key_for(j) for j in [*waiting, admitted.request_id, first.request_id])
    )


def _saver(queue: Queue, job_id: str, at_front: bool) -> Any:
    def save(pipe: Any) -> None:
        queue.enqueue_call(
            "workers.tasks.draw", args=({},), job_id=job_id, pipeline=pipe, at_front=at_front
        )

    return save


def _limits(at_front: bool = False) -> admission.Limits:
    return admission.Limits(
        rate_window_s=60,
        rate_limit=100,
        daily_quota=0,
        dedupe_ttl_s=30,
        default_service_s=1.0,
        check_limits=not at_front,
        at_front=at_front,
    )


def _ticket(messenger: str, user: str, queue_key: str, save: Any) -> admission.Ticket:
    request_id = uuid.uuid4().hex
    return admission.Ticket(
        messenger=messenger,
        user=user,
        text=f"contract {request_id}",
        request_id=request_id,
        queue_key=queue_key,
        service_field="contract:tiny",
        workers=1,
        budget_s=60.0,
        slot_ttl_s=60,
        quota_day=time.strftime("%Y%m%d", time.gmtime()),
        job_key=RqJob.key_for(request_id),
        save_job=save,
    )
