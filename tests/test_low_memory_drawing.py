"""KOALATALK_DRAW_MEMORY on the tiny pipeline: VAE tiling (tiles counted at the decoder), VAE
slicing, attention slicing where SDPA cannot save the memory, and model CPU offload (CUDA)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch

from models.presets import TEXT_TO_IMAGE
from models.text2image import TextToImage, low_memory, sdpa_saves_memory
from models.tiny import TINY_SDXL_REPO, ensure_tiny_sdxl


@pytest.fixture(scope="module")
def normal() -> TextToImage:
    ensure_tiny_sdxl(TINY_SDXL_REPO)
    return TextToImage.load("tiny", device="cpu")


@pytest.fixture(scope="module")
def low() -> TextToImage:
    ensure_tiny_sdxl(TINY_SDXL_REPO)
    return TextToImage.load("tiny", device="cpu", memory="low")


@contextmanager
def decoder_calls(model: TextToImage) -> Iterator[list[tuple[int, ...]]]:
    """The latent shape of every call into the VAE decoder, as it runs."""
    shapes: list[tuple[int, ...]] = []
    hook = model.pipe.vae.decoder.register_forward_pre_hook(
        lambda _module, args: shapes.append(tuple(args[0].shape))
    )
    try:
        yield shapes
    finally:
        hook.remove()


def test_low_memory_decodes_each_picture_in_tiles(normal: TextToImage, low: TextToImage) -> None:
    with decoder_calls(normal) as whole:
        reference = normal.generate(["a koala"] * 2, [3, 4])
    assert whole == [(2, 4, 8, 8)]  # one decoder call for the whole batch
    with decoder_calls(low) as tiles:
        images = low.generate(["a koala"] * 2, [3, 4])
    # 64 px pictures, 8x8 latents, 4x4 latent tiles with a quarter overlap (stride 3): 3x3
    # tiles per picture, one picture at a time (slicing).
    assert len(tiles) == 2 * 9 and all(shape[0] == 1 for shape in tiles)
    assert {shape[2:] for shape in tiles} <= {(4, 4), (4, 2), (2, 4), (2, 2)}
    assert low.memory == "low" and low.pipe.vae.use_slicing
    for a, b in zip(reference, images, strict=True):
        assert a.size == b.size == (64, 64)
        # Tiles are blended at their seams: close to the whole decode, not equal.
        diff = np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean()
        assert diff < 40


def test_attention_slicing_only_where_sdpa_cannot_save_memory(low: TextToImage) -> None:
    flash, efficient = (
        torch.backends.cuda.flash_sdp_enabled(),
        torch.backends.cuda.mem_efficient_sdp_enabled(),
    )
    assert sdpa_saves_memory("cpu")
    processors = {type(p).__name__ for p in low.pipe.unet.attn_processors.values()}
    assert processors == {"AttnProcessor2_0"}  # CPU: no slicing
    model = TextToImage.load("tiny", device="cpu")
    try:
        torch.backends.cuda.enable_flash_sdp(False)
        torch.backends.cuda.enable_mem_efficient_sdp(False)
        assert not sdpa_saves_memory("cuda")
        low_memory(model.pipe, TEXT_TO_IMAGE["tiny"], "cuda")  # as a GPU without those kernels
    finally:
        torch.backends.cuda.enable_flash_sdp(flash)
        torch.backends.cuda.enable_mem_efficient_sdp(efficient)
    sliced = {type(p).__name__ for p in model.pipe.unet.attn_processors.values()}
    assert sliced == {"SlicedAttnProcessor"}
    assert model.generate(["a koala"], [5])[0].size == (64, 64)


def test_offload_without_cuda_draws_with_low_memory() -> None:
    ensure_tiny_sdxl(TINY_SDXL_REPO)
    model = TextToImage.load("tiny", device="cpu", memory="offload")
    assert model.memory == "low" and model.pipe.vae.use_tiling
    with pytest.raises(ValueError, match="memory must be one of"):
        TextToImage.load("tiny", device="cpu", memory="tiny")


@pytest.mark.gpu
def test_model_cpu_offload_keeps_only_the_running_part_on_the_gpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    ensure_tiny_sdxl(TINY_SDXL_REPO)
    model = TextToImage.load("tiny", device="cuda", memory="offload")
    assert model.memory == "offload"
    assert model.pipe.unet.device.type == "cpu"  # parked until its call
    seen: dict[str, Any] = {}
    hook = model.pipe.unet.register_forward_pre_hook(
        lambda module, _args: seen.setdefault("unet", next(module.parameters()).device.type)
    )
    try:
        image = model.generate(["a koala"], [1])[0]
    finally:
        hook.remove()
    assert seen["unet"] == "cuda" and image.size == (64, 64)
