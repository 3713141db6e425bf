"""Vision-language models behind one small interface: Ko-LLaVA, or any transformers-native VLM.

`load_vision_language(preset)` returns an object with `answer(images, history, question)`. The
callers hand over RGB photos that are already fetched and rotated; `history` holds the earlier
(question, answer) turns about the same photo.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

from PIL import Image, ImageOps

from models.common import resolve_device, unavailable, unused_token_ids
from models.presets import VISION_LANGUAGE, VisionLanguagePreset

PAD_COLOUR = (122, 116, 104)  # CLIP's mean colour: padding the encoder treats as empty


class VisionLanguageModel(Protocol):
    """What every vision-language backend offers."""

    preset: VisionLanguagePreset
    load_seconds: float

    def answer(
        self,
        images: list[Image.Image],
        history: list[tuple[str, str]],
        question: str,
        max_new_tokens: int | None = None,
        video: bool = False,
    ) -> str:
        """Answer `question` about `images` (frames of one clip when `video`)."""
        ...


def tile_frames(frames: list[Image.Image], cell: int = 224) -> Image.Image:
    """Tile frames into one square image (grid of letterboxed cells) for one-image models."""
    if not frames:
        raise ValueError("no frames to tile")
    columns = math.ceil(math.sqrt(len(frames)))
    rows = math.ceil(len(frames) / columns)
    side = columns * cell  # square, so CLIP's centre crop keeps every frame
    canvas = Image.new("RGB", (side, side), PAD_COLOUR)
    top = (side - rows * cell) // 2
    for index, frame in enumerate(frames):
        picture = ImageOps.contain(frame.convert("RGB"), (cell, cell), Image.Resampling.BICUBIC)
        row, column = divmod(index, columns)
        x = column * cell + (cell - picture.width) // 2
        y = top + row * cell + (cell - picture.height) // 2
        canvas.paste(picture, (x, y))
    return canvas


def neutralise_markup(text: str, markers: list[str]) -> str:
    """Break each tokenizer marker in user text (e.g. `<image>`) with a word joiner, so the
    processor reads it as text and never expands it into image tokens or a turn boundary."""
    for marker in sorted(markers, key=len, reverse=True):
        if len(marker) > 1 and marker in text:
            text = text.replace(marker, marker[0] + "\u2060" + marker[1:])
    return text


class NativeVisionLanguage:
    """A transformers-native VLM (AutoModelForImageTextToText with its AutoProcessor)."""

    def __init__(
        self, preset: VisionLanguagePreset, device: str = "auto", quant: str = "none"
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        started = time.monotonic()
        self.preset = preset
        self.device = resolve_device(device)
        # bf16 where the GPU has it: native VLMs are trained in bf16 and can overflow in fp16.
        if self.device.startswith("cuda"):
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            self.dtype = torch.float32
        try:
            self.processor = AutoProcessor.from_pretrained(preset.repo_id)
            model = AutoModelForImageTextToText.from_pretrained(preset.repo_id, dtype=self.dtype)
        except OSError as exc:  # missing from the cache and no way to download
            raise unavailable(preset.name, preset.repo_id, exc) from exc
        self.quant = quant
        if quant == "none":
            # PreTrainedModel.to is @wraps(Module.to): typeshed's _Wrapped drops self.
            model = model.to(self.device)  # type: ignore[arg-type]
        else:
            # Loaded on the CPU; the language layers go to the GPU one by one, quantized.
            from models.quantize import to_device_quantized

            to_device_quantized(model, self.device, quant, self.dtype)
        self.model = model.eval()
        tokenizer = self.processor.tokenizer
        self.markers = [str(token) for token in tokenizer.added_tokens_decoder.values()]
        self.suppressed = suppressed_ids(self.processor, self.model.generation_config)
        self.load_seconds = time.monotonic() - started

    def messages(
        self,
        images: list[Image.Image],
        history: list[tuple[str, str]],
        question: str,
        as_video: bool,
    ) -> list[dict[str, Any]]:
        """Chat messages: the media in the first user turn, then alternating turns."""
        media = [{"type": "video"}] if as_video else [{"type": "image"} for _ in images]
        clean = [
            (neutralise_markup(q, self.markers), neutralise_markup(a, self.markers))
            for q, a in history
        ]
        out: list[dict[str, Any]] = []
        for index, (asked, answered) in enumerate(
            [*clean, (neutralise_markup(question, self.markers), None)]
        ):
            content = ([*media] if index == 0 else []) + [{"type": "text", "text": asked}]
            out.append({"role": "user", "content": content})
            if answered is not None:
                out.append({"role": "assistant", "content": [{"type": "text", "text": answered}]})
        return out

    def answer(
        self,
        images: list[Image.Image],
        history: list[tuple[str, str]],
        question: str,
        max_new_tokens: int | None = None,
        video: bool = False,
    ) -> str:
        """Answer `question` about the photos, or about the frames as a video when `video`."""
        ids = self.generate_ids(images, history, question, max_new_tokens, video)
        return str(self.processor.decode(ids, skip_special_tokens=True)).strip()

    def generate_ids(
        self,
        images: list[Image.Image],
        history: list[tuple[str, str]],
        question: str,
        max_new_tokens: int | None = None,
        video: bool = False,
    ) -> list[int]:
        """The token ids the model writes for its answer (see `answer`), its end token included.

        Special and media tokens other than the end of turn, and reserved `<unused…>` pieces, are
        suppressed in generation: none is written, none uses up `max_new_tokens`.
        """
        import torch

        # 1. Check inputs; a model without video support sees the frames tiled
        if not images:
            raise ValueError("no image given")
        as_video = video and self.preset.video
        if video and not self.preset.video:
            images = [tile_frames(images)]
        images = [image.convert("RGB") for image in images]
        # 2. Prompt and pixels
        prompt = self.processor.apply_chat_template(
            self.messages(images, history, question, as_video),
            add_generation_prompt=True,
            tokenize=False,
        )
        media: dict[str, Any] = {"videos": [images]} if as_video else {"images": images}
        inputs = self.processor(text=[prompt], return_tensors="pt", **media).to(self.device)
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs and inputs[key].is_floating_point():
                inputs[key] = inputs[key].to(self.dtype)
        # 3. Greedy generation
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens or self.preset.max_new_tokens,
                do_sample=False,
                use_cache=True,
                suppress_tokens=self.suppressed,
            )
        return [int(i) for i in out[0, inputs["input_ids"].shape[1] :].tolist()]


def suppressed_ids(processor: Any, generation_config: Any) -> list[int]:
    """Ids a native VLM must never write in an answer: its special tokens (turn and media
    markers, padding) and media placeholders, except the ones that end the answer, plus the
    vocabulary's reserved `<unused…>` pieces."""
    tokenizer = processor.tokenizer
    ends = generation_config.eos_token_id
    ends = [*(ends if isinstance(ends, list) else [ends]), tokenizer.eos_token_id]
    keep = {int(i) for i in ends if i is not None}  # the model's and the tokenizer's end tokens
    banned = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    for name in ("image_token", "video_token"):  # a processor's placeholders, special or not
        token = getattr(processor, name, None)
        if isinstance(token, str) and token in tokenizer.get_vocab():
            banned.add(int(tokenizer.convert_tokens_to_ids(token)))
    banned.update(unused_token_ids(tokenizer.get_vocab()))
    banned.update(generation_config.suppress_tokens or [])
    return sorted(banned - keep)


def load_vision_language(
    preset: str, device: str = "auto", quant: str = "none"
) -> VisionLanguageModel:
    """Load a vision-language preset by name; tiny presets are built into the cache first.

    `quant` (KOALATALK_VLM_QUANT) loads the language model quantized (models/quantize.py)."""
    try:
        spec = VISION_LANGUAGE[preset]
    except KeyError as exc:
        raise ValueError(
            f"unknown vision-language preset '{preset}'; known: {', '.join(VISION_LANGUAGE)}"
        ) from exc
    if spec.tiny:
        from models.tiny_vlm import ensure_tiny_vlm

        ensure_tiny_vlm(preset)
    if spec.backend == "kollava":
        from models.kollava import KoLlava

        return KoLlava(spec, device, quant=quant)
    if spec.backend == "native":
        return NativeVisionLanguage(spec, device, quant)
    raise ValueError(f"preset '{preset}' has unknown backend '{spec.backend}'")
