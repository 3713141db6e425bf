"""The memory plan (models/memory.py) for a worker's settings and queues, before it loads.

`python -m workers.cli plan` prints it; `python -m workers` runs it at start and refuses a
configuration that cannot fit, in one sentence, before loading anything. With no GPU and no
KOALATALK_GPU_MEMORY (a CPU worker) there is nothing to plan.
"""

from __future__ import annotations

import dataclasses

from bot.core.job import TEXT_TO_IMAGE_QUEUE, VISION_LANGUAGE_QUEUE
from bot.core.settings import Settings
from bot.core.sizes import parse_bytes
from models import memory


def config(settings: Settings, queues: list[str]) -> memory.Config:
    """What the worker would load for these queues."""
    return memory.Config(
        draw=TEXT_TO_IMAGE_QUEUE in queues,
        vision=VISION_LANGUAGE_QUEUE in queues,
        preset=settings.preset,
        vlm_preset=settings.vlm_preset,
        vlm_quant=settings.vlm_quant,
        draw_memory=settings.draw_memory,
        max_batch=settings.max_batch,
        translator=settings.translation_model if settings.translation else "",
        safety=settings.safety_model if settings.safety_policy != "allow" else "",
    )


def available(settings: Settings, gpu_memory: str = "") -> tuple[int, str] | None:
    """GPU bytes to plan with: given (option or setting), else the GPU's free memory."""
    given = gpu_memory or settings.gpu_memory
    if given:
        return parse_bytes(given), f"given as {given}"
    from models.common import resolve_device

    return memory.visible_gpu(resolve_device(settings.device))


@dataclasses.dataclass(frozen=True)
class Outcome:
    plan: memory.Plan | None  # None: no GPU to plan for
    refusal: str = ""  # one sentence when it cannot fit
    settings: Settings | None = None  # the settings to run with (MAX_BATCH capped)


def check(settings: Settings, queues: list[str], gpu_memory: str = "") -> Outcome:
    """Plan the worker; a refusal sentence when it does not fit, else its settings."""
    room = available(settings, gpu_memory)
    if room is None:
        return Outcome(None, settings=settings)
    wanted = config(settings, queues)
    found = memory.plan(wanted, *room)
    if not found.fits:
        return Outcome(found, found.refusal(memory.suggest(wanted, *room)))
    if wanted.draw and found.batch < settings.max_batch:
        settings = settings.with_(max_batch=found.batch)
    return Outcome(found, settings=settings)
