"""The image safety policy: every picture is checked before it gets a public URL.

SAFETY_POLICY says what happens to a picture the resident checker (models/safety.py) flags:
- `block`: nothing is stored or published; the user gets a polite refusal.
- `blur`: a blurred copy is published, with a note.
- `allow`: no checker is loaded and every picture is published.
A worker whose policy needs a checker that is not loaded fails the job rather than publish.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.core.blocklist import log_refusal
from workers.runtime import Runtime


@dataclass(frozen=True)
class Screened:
    """What may be published (None: nothing) and the note for the reply (a bot.core.texts key)."""

    image: Any
    note: str | None = None
    label: str = ""
    score: float = 0.0


def screen(rt: Runtime, image: Any, prompt: str) -> Screened:
    """Apply the policy to one picture."""
    policy = rt.settings.safety_policy
    if policy == "allow":
        return Screened(image)
    checker = rt.models.get("safety")
    if checker is None:
        raise RuntimeError(f"safety policy {policy!r} needs a loaded checker; refusing to publish")
    verdict = checker.check([image])[0]
    if not verdict.flagged:
        return Screened(image, label=verdict.label, score=verdict.score)
    log_refusal(
        "image_flagged",
        prompt,
        rt.settings.log_prompts,
        policy=policy,
        label=verdict.label,
        score=round(verdict.score, 4),
    )
    if policy == "blur":
        from models.safety import blur

        return Screened(blur(image), "image_blurred", verdict.label, verdict.score)
    return Screened(None, "image_blocked", verdict.label, verdict.score)
