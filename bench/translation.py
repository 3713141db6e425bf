"""What Korean-to-English translation adds to the text-to-image job (issue 5, item 7).

Runs the real job function (`workers.tasks.draw`: prompt preparation, KOALA, the safety check,
the JPEG store and the hand-over into Redis) in this process, with the worker's resident models:
the tiny SDXL, the tiny Marian translator and the tiny pass-through safety checker, on CPU, one
private Redis. Three kinds of job run interleaved, so load from elsewhere hits all alike:

- baseline: a Korean prompt drawn as written (`!` prefix: no translation), same length;
- miss:     a Korean prompt never seen before: translated by the model, then cached;
- hit:      a Korean prompt translated before: one Redis GET.

    .venv/bin/python bench/translation.py [--jobs 30] [--threads 1]

Ratios are of medians, which other processes on a shared machine disturb least; the load
average is printed beside them. One torch thread (the default here) keeps the small ops of the
tiny models from spinning against other processes; `--threads 2` is what a 2-core worker uses.
The tiny models' figures measure the plumbing and a one-layer Marian, not opus-mt-tc-big.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile, redis_server

PROMPTS = [
    "벚꽃 길을 걷는 코알라",
    "밤하늘의 별과 보름달 아래 작은 오두막",
    "비 오는 날 카페 창가에 앉은 고양이",
    "눈 덮인 산과 호수, 아침 햇살",
    "우주복을 입은 강아지가 달 위를 걷는다",
]


def runtime(url: str, media: str) -> Any:
    """A worker runtime with the resident models, as `python -m workers text2image` builds it."""
    import redis

    from bot.core.sessions import Sessions
    from bot.core.settings import Settings
    from bot.core.stores import store_from_settings
    from bot.core.urlguard import guard_from_settings
    from workers.__main__ import load_models
    from workers.runtime import Runtime, install

    settings = Settings.from_env(
        {},
        mode="development",
        redis_url=url,
        preset="tiny",
        device="cpu",
        media_dir=Path(media),
        translation_model="tiny",
        safety_model="koalatalk/tiny-safety-pass",
        log_level="WARNING",
        log_json=False,
    )
    r = redis.Redis.from_url(url)
    rt = Runtime(
        name="bench",
        settings=settings,
        redis=r,
        store=store_from_settings(settings),
        guard=guard_from_settings(settings),
        sessions=Sessions(r, 3600, 3600),
        queues=["text2image"],
    )
    rt.models, rt.load_seconds = load_models(settings, rt.queues)
    install(rt)
    return rt


def job(prompt: str, translate: bool) -> dict[str, Any]:
    """One draw job as the web would enqueue it."""
    from bot.core.job import Job, Request

    rid = uuid.uuid4().hex
    request = Request(prompt=prompt, seed=7, language="ko", translate=translate)
    return Job(rid, "kakao", "bench-" + rid, time.time() + 600, "tiny", request).to_dict()


def timed(payload: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    from workers.tasks import draw

    started = time.perf_counter()
    result = draw(payload)
    return time.perf_counter() - started, result


def line(name: str, times: list[float], base: float, translate: list[float]) -> str:
    p50 = percentile(times, 50)
    return (
        f"{name:<10}{p50 * 1000:>9.1f}{statistics.fmean(times) * 1000:>9.1f}"
        f"{percentile(times, 95) * 1000:>9.1f}{p50 / base:>9.3f}"
        f"{percentile(translate, 50) * 1000:>16.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30, help="jobs of each kind")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    os.environ.update(
        {
            "HF_HOME": tempfile.mkdtemp(prefix="koalatalk-bench-hf-"),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    import logging

    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {"baseline": [], "miss": [], "hit": []}
    spent: dict[str, list[float]] = {"baseline": [], "miss": [], "hit": []}
    with redis_server() as url:
        rt = runtime(url, tempfile.mkdtemp(prefix="koalatalk-bench-media-"))
        logging.getLogger().setLevel(logging.WARNING)
        print(f"models loaded in {rt.load_seconds} s; torch threads {torch.get_num_threads()}")
        for prompt in PROMPTS:  # warm up all three paths; fill the cache for the hit path
            timed(job(prompt, True))
            timed(job(prompt, False))
        for i in range(args.jobs):
            fresh = f"{PROMPTS[i % len(PROMPTS)]} {uuid.uuid4().hex[:4]}번째"
            kinds = {
                "baseline": job(fresh, False),
                "miss": job(fresh, True),
                "hit": job(PROMPTS[i % len(PROMPTS)], True),
            }
            for name, payload in kinds.items():
                elapsed, result = timed(payload)
                if result.get("status") != "ok":
                    raise RuntimeError(f"{name}: {result}")
                expected = {"baseline": (0, 0), "miss": (0, 1), "hit": (1, 0)}[name]
                if (result["cache_hits"], result["cache_misses"]) != expected:
                    raise RuntimeError(f"{name}: cache {result}")
                times[name].append(elapsed)
                spent[name].append(result["translate_s"])
    base = percentile(times["baseline"], 50)
    print(
        f"\ntext-to-image job, tiny models on CPU ({os.cpu_count()} cores, {args.threads} torch "
        f"threads), {args.jobs} jobs of each kind, interleaved; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after\n"
    )
    print(f"{'job':<10}{'p50 ms':>9}{'mean ms':>9}{'p95 ms':>9}{'ratio':>9}{'translate p50':>16}")
    for name in times:
        print(line(name, times[name], base, spent[name]))
    miss, hit = percentile(times["miss"], 50), percentile(times["hit"], 50)
    print(
        f"\nmedian job: translation adds {(miss - base) * 1000:.1f} ms on a cache miss "
        f"(x{miss / base:.3f}), {(hit - base) * 1000:.1f} ms on a cache hit (x{hit / base:.3f}); "
        f"the translation step itself: {percentile(spent['miss'], 50) * 1000:.2f} ms (miss), "
        f"{percentile(spent['hit'], 50) * 1000:.2f} ms (hit)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
