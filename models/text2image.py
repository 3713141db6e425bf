"""KOALA (distilled SDXL) text-to-image and image-to-image behind one small interface.

KOALA's repos are plain diffusers StableDiffusionXLPipeline folders, so the real weights and the
tiny test pipeline load through the same `from_pretrained(repo_id)` call.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

from models.common import dtype_for, resolve_device, unavailable
from models.presets import TEXT_TO_IMAGE, TextToImagePreset
from models.tiny import ensure_tiny_sdxl

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

MAX_SEED = 2**32 - 1
VAE_SLICING_ABOVE = 4  # decode bigger batches one image at a time to bound VRAM peaks
# Inductor's default mode: max-autotune spent minutes per shape even on the tiny UNet (H200),
# and CUDA graphs ("reduce-overhead") re-record for every batch size.
COMPILE_MODE = "default"
MEMORY_MODES = ("normal", "low", "offload")


class TextToImage:
    """A resident KOALA pipeline: batched generation, redraws of a photo, CLIP token budget."""

    def __init__(
        self,
        preset: TextToImagePreset,
        pipe: Any,
        device: str,
        load_seconds: float,
        memory: str = "normal",
    ):
        self.preset = preset
        self.pipe = pipe
        self.device = device
        self.load_seconds = load_seconds
        self.memory = memory  # MEMORY_MODES: what the low-memory settings did to the pipeline
        self._img2img: Any = None

    @classmethod
    def load(
        cls, preset: str, device: str = "auto", compile_unet: bool = False, memory: str = "normal"
    ) -> TextToImage:
        """Load a preset's pipeline onto `device`; ModelUnavailable when its weights are absent.

        `memory` (KOALATALK_DRAW_MEMORY): `normal`; `low`, VAE tiling and slicing (and attention
        slicing where it helps); `offload`, low plus model CPU offload (CUDA only)."""
        if memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {', '.join(MEMORY_MODES)}, not {memory!r}")
        found = TEXT_TO_IMAGE.get(preset)
        if found is None:
            raise ValueError(
                f"unknown text-to-image preset {preset!r}; choose one of: "
                + ", ".join(sorted(TEXT_TO_IMAGE))
            )
        started = time.perf_counter()
        if found.tiny:
            ensure_tiny_sdxl(found.repo_id)
        device = resolve_device(device)
        pipe = load_pipeline(found, dtype_for(device), fp16_variant=device.startswith("cuda"))
        if found.trailing:
            from diffusers import EulerDiscreteScheduler

            # KOALA-Lightning ships SDXL's `leading` Euler config, but its model card (like
            # SDXL-Lightning's) samples with trailing timesteps, as few-step distillation needs.
            pipe.scheduler = EulerDiscreteScheduler.from_config(
                pipe.scheduler.config, timestep_spacing="trailing"
            )
        offload = memory == "offload" and device.startswith("cuda")
        if memory == "offload" and not offload:
            log.warning("model CPU offload needs CUDA; drawing on %s with `low` memory", device)
        if offload:
            # Each part (text encoders, UNet, VAE) moves onto the GPU for its own call only.
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        _tune(pipe, device, compile_unet)
        if memory != "normal":
            low_memory(pipe, found, device)
        pipe.set_progress_bar_config(disable=True)
        seconds = time.perf_counter() - started
        log.info("loaded %s (%s) on %s in %.1f s", found.name, found.repo_id, device, seconds)
        effective = "offload" if offload else "normal" if memory == "normal" else "low"
        return cls(found, pipe, device, seconds, effective)

    def warm_up(self) -> None:
        """Run one small generation so compiled graphs and CUDA kernels exist before serving."""
        from PIL import Image as PILImage

        # Preset size and guidance: the UNet then sees the shapes real requests use.
        prompt = "a koala sitting in a eucalyptus tree"
        self.generate([prompt], [0], steps=min(2, self.preset.steps))
        if self.compiled:
            # Compile now what requests would otherwise wait minutes for: a second batch size
            # makes dynamo build its batch-dynamic graph, and a redraw feeds the UNet latents
            # with the VAE encoder's channels-last strides, which is one more graph.
            self.generate([prompt, prompt], [0, 1], steps=min(2, self.preset.steps))
            size = (self.preset.width, self.preset.height)
            self.redraw(PILImage.new("RGB", size, (90, 120, 60)), prompt, 0, steps=1)

    @property
    def compiled(self) -> bool:
        """Whether the UNet runs through torch.compile."""
        return type(self.pipe.unet).__name__ == "OptimizedModule"

    def generate(
        self,
        prompts: list[str],
        seeds: list[int],
        negative_prompts: list[str] | None = None,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        progress: bool = False,
    ) -> list[Image]:
        """Draw one image per prompt in a single batched call; each seed fixes its own image."""
        import torch

        # 1. Check inputs and fill in the preset's defaults
        width = self.preset.width if width is None else width
        height = self.preset.height if height is None else height
        steps = self.preset.steps if steps is None else steps
        guidance = self.preset.guidance if guidance is None else guidance
        if negative_prompts is None:
            negative_prompts = [self.preset.negative_prompt] * len(prompts)
        _check_batch(prompts, seeds, negative_prompts)
        _check_size(width, height)
        _check_steps(steps, guidance)

        # 2. One CPU generator per image: a seed gives the same picture alone or in any batch,
        # and on any device, since the starting noise is drawn on the CPU.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        if len(prompts) > VAE_SLICING_ABOVE or self.memory != "normal":
            self.pipe.vae.enable_slicing()
        else:
            self.pipe.vae.disable_slicing()
        self.pipe.set_progress_bar_config(disable=not progress)

        # 3. Denoise and decode
        with torch.inference_mode():
            result = self.pipe(
                prompt=prompts,
                negative_prompt=negative_prompts,
                width=width,
                height=height,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generators,
                output_type="pil",
            )
        return list(result.images)

    def redraw(
        self,
        image: Image,
        prompt: str,
        seed: int,
        strength: float = 0.5,
        negative_prompt: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
    ) -> Image:
        """Redraw a photo after `prompt`; `strength` 0..1 is how far it may move from the photo.

        `steps` counts the denoising steps actually run (preset default), whatever the strength.
        """
        import torch
        from PIL import Image as PILImage
        from PIL import ImageOps

        # 1. Check inputs
        steps = self.preset.steps if steps is None else steps
        guidance = self.preset.guidance if guidance is None else guidance
        negative = self.preset.negative_prompt if negative_prompt is None else negative_prompt
        _check_batch([prompt], [seed], [negative])
        _check_steps(steps, guidance)
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")

        # 2. Fit the photo to the preset's canvas: upright, RGB, centre-cropped, resized
        size = (self.preset.width, self.preset.height)
        photo = ImageOps.fit(
            ImageOps.exif_transpose(image).convert("RGB"), size, PILImage.Resampling.LANCZOS
        )

        # 3. img2img runs only the last `strength` share of its schedule, so stretch the
        # schedule to keep `steps` real steps (and never zero).
        schedule = math.ceil(steps / strength)
        pipe = self._image_to_image()
        pipe.set_progress_bar_config(disable=True)
        with torch.inference_mode():
            result = pipe(
                prompt=prompt,
                negative_prompt=negative,
                image=photo,
                strength=strength,
                num_inference_steps=schedule,
                guidance_scale=guidance,
                generator=torch.Generator("cpu").manual_seed(seed),
                output_type="pil",
            )
        return result.images[0]

    @property
    def max_prompt_tokens(self) -> int:
        """Prompt tokens CLIP reads: its window (77) less the start and end tokens."""
        return int(self.pipe.tokenizer.model_max_length) - 2

    def count_tokens(self, prompt: str) -> int:
        """Number of CLIP tokens in `prompt`, start and end tokens not counted."""
        return len(self.pipe.tokenizer(prompt, add_special_tokens=False, verbose=False).input_ids)

    def truncate_prompt(self, prompt: str) -> tuple[str, bool]:
        """The part of `prompt` that CLIP reads, and whether anything was cut off."""
        limit = self.max_prompt_tokens
        encoded = self.pipe.tokenizer(
            prompt, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        if len(encoded.input_ids) <= limit:
            return prompt, False
        # Cut the original text at the last token's end rather than decoding ids: decoding
        # lowercases, drops spacing and can split a multi-byte character.
        cut = prompt[: encoded.offset_mapping[limit - 1][1]].rstrip()
        # A cut word can split into more tokens than it had inside the longer word.
        while cut and self.count_tokens(cut) > limit:
            cut = cut[:-1].rstrip()
        return cut, True

    def _image_to_image(self) -> Any:
        """The img2img pipeline over the very same modules (built once, nothing loaded twice)."""
        if self._img2img is None:
            from diffusers import StableDiffusionXLImg2ImgPipeline

            self._img2img = StableDiffusionXLImg2ImgPipeline(
                **self.pipe.components,
                force_zeros_for_empty_prompt=self.pipe.config.force_zeros_for_empty_prompt,
                add_watermarker=False,
            )
        return self._img2img


def load_pipeline(preset: TextToImagePreset, dtype: Any, fp16_variant: bool) -> Any:
    """Load the pipeline, preferring fp16 weight files on CUDA; ModelUnavailable on failure."""
    from diffusers import StableDiffusionXLPipeline

    if fp16_variant:
        try:
            # KOALA repos carry fp16 files for the UNet only; diffusers takes the variant where
            # a component has it and the full-precision files (cast on load) elsewhere.
            return StableDiffusionXLPipeline.from_pretrained(
                preset.repo_id, dtype=dtype, variant="fp16"
            )
        except (OSError, ValueError) as exc:
            log.info("no fp16 variant of %s (%s); loading default weights", preset.repo_id, exc)
    try:
        return StableDiffusionXLPipeline.from_pretrained(preset.repo_id, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise unavailable(preset.name, preset.repo_id, exc) from exc


def _tune(pipe: Any, device: str, compile_unet: bool) -> None:
    """Speed settings: SDPA attention everywhere; on CUDA channels-last and optional compile."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    # Explicit SDPA also undoes any attention slicing (which trades speed for memory).
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.vae.set_attn_processor(AttnProcessor2_0())
    # The VAE keeps the pipeline's dtype: fp16 on CUDA. diffusers upcasts it to fp32 around
    # each decode only when its config says force_upcast (SDXL's original VAE overflows in
    # fp16); a VAE with force_upcast False, like the tiny one, stays in fp16 throughout.
    # EulerDiscreteScheduler already keeps its sigmas on the CPU (checked in diffusers 0.42), so
    # stepping does not sync with the GPU for every scalar it reads.
    if not device.startswith("cuda"):
        if compile_unet:
            log.warning("compile_unet is for CUDA; running %s eagerly", device)
        return
    torch.backends.cudnn.benchmark = True  # fixed shapes per preset: pick the fastest convs
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    if compile_unet:
        import torch._inductor.config as inductor

        # From diffusers' SDXL speed guide; its coordinate-descent tuning is left out because
        # it multiplies compile time, which already ran to minutes on the tiny UNet.
        inductor.conv_1x1_as_mm = True
        inductor.epilogue_fusion = False
        pipe.unet = torch.compile(pipe.unet, mode=COMPILE_MODE)


def low_memory(pipe: Any, preset: TextToImagePreset, device: str) -> None:
    """VAE tiling and slicing, and attention slicing where SDPA cannot save the memory itself.

    diffusers tiles only images larger than the VAE's `sample_size` (1024 for SDXL's VAE), so
    a 1024x1024 picture would decode in one piece: the tiles are set to half the preset's side,
    which decodes it as 3x3 overlapping tiles and bounds the decoder's activations to a tile's.
    """
    vae = pipe.vae
    vae.enable_tiling()
    vae.enable_slicing()
    side = max(preset.width, preset.height) // 2
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    vae.tile_sample_min_size = side
    vae.tile_latent_min_size = side // factor
    if not sdpa_saves_memory(device):
        pipe.enable_attention_slicing()


def sdpa_saves_memory(device: str) -> bool:
    """Whether PyTorch's attention already never holds the full score matrix on `device`.

    On CUDA the flash and memory-efficient SDPA kernels compute attention in blocks, so
    attention slicing saves nothing there and only costs speed; where both are switched off
    (old GPUs, or by the operator) SDPA falls back to the math kernel and slicing helps. On
    the CPU memory is not what KOALATALK_DRAW_MEMORY is about.
    """
    import torch

    if not device.startswith("cuda"):
        return True
    return bool(
        torch.backends.cuda.flash_sdp_enabled() or torch.backends.cuda.mem_efficient_sdp_enabled()
    )


def _check_batch(prompts: list[str], seeds: list[int], negative_prompts: list[str]) -> None:
    """Concise errors for mismatched or malformed prompts and seeds."""
    if not prompts:
        raise ValueError("prompts must not be empty")
    if len(seeds) != len(prompts) or len(negative_prompts) != len(prompts):
        raise ValueError(
            f"{len(prompts)} prompts need as many seeds and negative prompts, "
            f"got {len(seeds)} and {len(negative_prompts)}"
        )
    for text in (*prompts, *negative_prompts):
        if not isinstance(text, str):
            raise ValueError(f"prompts must be strings, got {type(text).__name__}")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in 0..{MAX_SEED}, got {seed!r}")


def _check_size(width: int, height: int) -> None:
    """SDXL's VAE downsamples 8x: sides must be positive multiples of 8."""
    if width <= 0 or height <= 0 or width % 8 or height % 8:
        raise ValueError(f"width and height must be positive multiples of 8, got {width}x{height}")


def _check_steps(steps: int, guidance: float) -> None:
    """At least one step, and a guidance scale that is not negative."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if guidance < 0:
        raise ValueError(f"guidance must not be negative, got {guidance}")
