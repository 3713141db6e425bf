"""Image safety checking with an image-classification model, and the blur for flagged pictures."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageFilter

from models.common import dtype_for, resolve_device, unavailable
from models.tiny_aux import TINY_CHECKERS, ensure_tiny_checker

DEFAULT_SAFETY_MODEL = "Falconsai/nsfw_image_detection"
# Label names used by the common NSFW classifiers (Falconsai's binary one and the five-class
# drawings/hentai/neutral/porn/sexy family); compared case-insensitively.
DEFAULT_UNSAFE_LABELS = frozenset({"nsfw", "porn", "hentai", "sexy"})
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Verdict:
    """One image's result: the most probable unsafe label when flagged, else the top label."""

    flagged: bool
    label: str
    score: float


class SafetyChecker:
    """A resident image classifier that flags images whose unsafe-label probability is too high."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        device: str,
        repo_id: str,
        unsafe_labels: Iterable[str] = DEFAULT_UNSAFE_LABELS,
        threshold: float = DEFAULT_THRESHOLD,
        load_seconds: float = 0.0,
    ) -> None:
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        self.model = model
        self.processor = processor
        self.device = device
        self.repo_id = repo_id
        self.threshold = threshold
        self.load_seconds = load_seconds
        self.labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
        wanted = {label.lower() for label in unsafe_labels}
        self.unsafe_ids = [i for i, label in enumerate(self.labels) if label.lower() in wanted]
        # A checker that can never flag would pass everything silently: refuse it at start.
        if not self.unsafe_ids:
            raise ValueError(
                f"'{repo_id}' has labels {self.labels}, none of them unsafe "
                f"({sorted(wanted)}); pass its unsafe label names as unsafe_labels"
            )

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_SAFETY_MODEL,
        device: str = "auto",
        unsafe_labels: Iterable[str] = DEFAULT_UNSAFE_LABELS,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> SafetyChecker:
        """Load an image-classification repo onto `device`; the tiny ids are built first."""
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        started = time.perf_counter()
        if model in TINY_CHECKERS:
            ensure_tiny_checker(model, TINY_CHECKERS[model])
        device = resolve_device(device)
        try:
            network = AutoModelForImageClassification.from_pretrained(
                model, dtype=dtype_for(device)
            )
            processor = AutoImageProcessor.from_pretrained(model)
        except (OSError, ValueError) as exc:
            raise unavailable(model, model, exc) from exc
        network.to(device).eval()
        return cls(
            network,
            processor,
            device,
            model,
            unsafe_labels=unsafe_labels,
            threshold=threshold,
            load_seconds=time.perf_counter() - started,
        )

    def check(self, images: list[Image.Image]) -> list[Verdict]:
        """Classify images; flagged when an unsafe label's probability exceeds the threshold."""
        import torch

        if not images:
            return []
        # The processors normalise three channels; grey, palette and RGBA images must be RGB.
        batch = self.processor(
            images=[image.convert("RGB") for image in images], return_tensors="pt"
        )
        pixels = batch["pixel_values"].to(self.device, dtype=self.model.dtype)
        with torch.inference_mode():
            probs = self.model(pixel_values=pixels).logits.float().softmax(dim=-1).cpu()
        verdicts = []
        for row in probs.tolist():
            unsafe = max(self.unsafe_ids, key=lambda i: row[i])
            if row[unsafe] > self.threshold:
                verdicts.append(Verdict(True, self.labels[unsafe], row[unsafe]))
            else:
                top = max(range(len(row)), key=lambda i: row[i])
                verdicts.append(Verdict(False, self.labels[top], row[top]))
        return verdicts


def blur(image: Image.Image) -> Image.Image:
    """A Gaussian blur strong enough that nothing in the picture can be made out."""
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    # A radius of 1/16 of the longer side hides content at any size (64 px at 1024).
    radius = max(4, max(image.size) // 16)
    return image.filter(ImageFilter.GaussianBlur(radius))
