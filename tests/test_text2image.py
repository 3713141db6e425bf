"""KOALA text-to-image layer, run on a tiny random SDXL pipeline loaded offline from the cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPTokenizer

from bot.core.options import STYLES
from models import hfcache
from models.common import ModelUnavailable
from models.presets import TEXT_TO_IMAGE, TextToImagePreset
from models.text2image import TextToImage, load_pipeline
from models.tiny import CLIP_BPE, TINY_SDXL_BUILD, TINY_SDXL_REPO, ensure_tiny_sdxl
from workers.prompting import fit

KOALA_LIGHTNING = "etri-vilab/koala-lightning-700m"


@pytest.fixture(scope="session")
def tiny_snapshot() -> Path:
    """The tiny SDXL pipeline, built once, cached under its own id and under KOALA-Lightning's."""
    ensure_tiny_sdxl(TINY_SDXL_REPO)
    snapshot = hfcache.snapshot_dir(TINY_SDXL_REPO)
    assert snapshot is not None
    if hfcache.snapshot_dir(KOALA_LIGHTNING) is None:
        hfcache.place(snapshot, KOALA_LIGHTNING)
    return snapshot


@pytest.fixture(scope="session")
def tiny(tiny_snapshot: Path) -> TextToImage:
    return TextToImage.load("tiny", device="cpu")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_tiny_preset_generates_reproducibly(tiny: TextToImage) -> None:
    first = tiny.generate(["a cat on a mat"], [7])
    again = tiny.generate(["a cat on a mat"], [7])
    other = tiny.generate(["a cat on a mat"], [8])

    assert first[0].size == (64, 64) and first[0].mode == "RGB"
    assert np.array_equal(pixels(first[0]), pixels(again[0]))
    assert np.abs(pixels(first[0]) - pixels(other[0])).mean() > 1.0
    assert tiny.device == "cpu" and tiny.load_seconds > 0
    assert tiny.preset is TEXT_TO_IMAGE["tiny"]
    assert not tiny.compiled
    tiny.warm_up()


def test_batch_equals_single_calls(tiny: TextToImage) -> None:
    batch = tiny.generate(["a red dog", "a blue cat"], [1, 2])
    one = tiny.generate(["a red dog"], [1])[0]
    two = tiny.generate(["a blue cat"], [2])[0]

    assert len(batch) == 2
    # Batched matmuls may round differently in the last bit; 8-bit pixels absorb that.
    assert np.abs(pixels(batch[0]) - pixels(one)).max() <= 2
    assert np.abs(pixels(batch[1]) - pixels(two)).max() <= 2


def test_real_preset_loads_offline_with_trailing_euler(tiny_snapshot: Path) -> None:
    koala = TextToImage.load("koala-lightning-700m", device="cpu")

    scheduler = koala.pipe.scheduler
    assert type(scheduler).__name__ == "EulerDiscreteScheduler"
    assert scheduler.config.timestep_spacing == "trailing"
    assert (koala.preset.steps, koala.preset.guidance) == (10, 3.5)
    assert koala.preset.repo_id == KOALA_LIGHTNING
    assert koala.pipe.unet.dtype == torch.float32
    image = koala.generate(["a koala"], [3], width=64, height=64, steps=2)[0]
    assert image.size == (64, 64)


def test_non_lightning_preset_keeps_shipped_scheduler(tiny_snapshot: Path) -> None:
    hfcache.place(tiny_snapshot, "etri-vilab/koala-700m-llava-cap")
    koala = TextToImage.load("koala-700m-llava-cap", device="cpu")
    assert koala.pipe.scheduler.config.timestep_spacing == "leading"
    assert (koala.preset.steps, koala.preset.guidance) == (25, 7.5)


def test_missing_weights_raise_model_unavailable(tiny_snapshot: Path) -> None:
    with pytest.raises(ModelUnavailable) as caught:
        TextToImage.load("koala-1b", device="cpu")
    assert "koala-1b" in str(caught.value)
    assert "etri-vilab/koala-1b" in str(caught.value)


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="koala-lightning-700m"):
        TextToImage.load("koala-9000")


def test_fp16_variant_preferred_then_default_weights(tiny_snapshot: Path, tmp_path: Path) -> None:
    preset = TextToImagePreset("fp16-test", TINY_SDXL_REPO, 2, 3.5, tiny=True)
    # No fp16 files in the tiny repo: the default weights load, cast to fp16.
    plain = load_pipeline(preset, torch.float16, fp16_variant=True)
    assert plain.unet.dtype == torch.float16

    # A repo laid out like KOALA's: an fp16 UNet file beside the full-precision one.
    folder = tmp_path / "repo"
    shutil.copytree(tiny_snapshot, folder)
    unet = plain.unet.to(torch.float32)
    marked = unet.conv_in.bias.detach().clone()
    with torch.no_grad():
        unet.conv_in.bias.fill_(0.5)
    unet.half().save_pretrained(folder / "unet", variant="fp16")
    hfcache.place(folder, "koalatalk/tiny-sdxl-fp16")
    variant = load_pipeline(
        TextToImagePreset("fp16-test", "koalatalk/tiny-sdxl-fp16", 2, 3.5), torch.float16, True
    )
    assert torch.all(variant.unet.conv_in.bias == 0.5)
    assert not torch.all(marked == 0.5)


def test_generate_rejects_bad_input(tiny: TextToImage) -> None:
    with pytest.raises(ValueError, match="seeds"):
        tiny.generate(["a", "b"], [1])
    with pytest.raises(ValueError, match="multiples of 8"):
        tiny.generate(["a"], [1], width=60)
    with pytest.raises(ValueError, match="seed"):
        tiny.generate(["a"], [2**32])
    with pytest.raises(ValueError, match="seed"):
        tiny.generate(["a"], [-1])
    with pytest.raises(ValueError, match="negative"):
        tiny.generate(["a"], [1], negative_prompts=["x", "y"])


def test_redraw_returns_preset_size(tiny: TextToImage) -> None:
    photo = Image.new("RGBA", (120, 50), (200, 30, 30, 255))
    first = tiny.redraw(photo, "a red koala", seed=5, strength=0.5)
    again = tiny.redraw(photo, "a red koala", seed=5, strength=0.5)

    assert first.size == (64, 64) and first.mode == "RGB"
    assert np.array_equal(pixels(first), pixels(again))
    # The redraw shares the text-to-image modules instead of loading its own.
    assert tiny._image_to_image().unet is tiny.pipe.unet
    with pytest.raises(ValueError, match="strength"):
        tiny.redraw(photo, "a koala", seed=5, strength=0.0)


def test_truncate_prompt_cuts_to_clip_window(tiny: TextToImage) -> None:
    short = "A Koala, eating leaves"
    assert tiny.truncate_prompt(short) == (short, False)
    assert tiny.count_tokens(short) < tiny.max_prompt_tokens == 75

    long = " ".join(f"Word{i}" for i in range(200))
    cut, was_cut = tiny.truncate_prompt(long)
    assert was_cut
    assert long.startswith(cut) and len(cut) < len(long)
    assert 60 < tiny.count_tokens(cut) <= 75


def test_tiny_tokenizers_are_clips(tiny: TextToImage) -> None:
    """Both tokenizers are built from OpenAI's CLIP merges: the real ids, the real window."""
    for tokenizer in (tiny.pipe.tokenizer, tiny.pipe.tokenizer_2):
        assert len(tokenizer) == 49408 and tokenizer.model_max_length == 77
        assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
        assert tokenizer.tokenize("A Koala, eating leaves") == [
            "a</w>",
            "koala</w>",
            ",</w>",
            "eating</w>",
            "leaves</w>",
        ]
    assert tiny.pipe.tokenizer_2.pad_token == "!"
    assert tiny.pipe.text_encoder.config.vocab_size == 49408
    assert CLIP_BPE.stat().st_size < 2_000_000  # the vendored merges stay small
    assert (CLIP_BPE.parent / "bpe_simple_vocab_16e6.LICENSE").is_file()


@pytest.mark.parametrize("style", sorted(STYLES))
def test_ten_word_prompt_with_a_style_is_not_cut(tiny: TextToImage, style: str) -> None:
    prompt = "a red fox in the snow under a bright full moon"
    suffix = f", {STYLES[style].prompt}"
    assert tiny.count_tokens(prompt) == 11  # one CLIP token per word, "a" twice
    assert tiny.count_tokens(prompt + suffix) <= tiny.max_prompt_tokens
    assert fit(prompt, suffix, tiny.count_tokens, tiny.max_prompt_tokens) == (prompt, False)
    assert tiny.truncate_prompt(prompt + suffix) == (prompt + suffix, False)


def test_a_tiny_pipeline_cached_by_an_older_builder_is_rebuilt(tmp_path: Path) -> None:
    repo = "koalatalk/tiny-sdxl-old"
    old = tmp_path / "old"
    (old / "tokenizer").mkdir(parents=True)
    (old / "model_index.json").write_text("{}")
    hfcache.mark_build(old, "1")
    hfcache.place(old, repo)

    ensure_tiny_sdxl(repo)

    snapshot = hfcache.built_snapshot(repo, TINY_SDXL_BUILD)
    assert snapshot is not None
    assert len(CLIPTokenizer.from_pretrained(snapshot / "tokenizer")) == 49408
    assert ensure_tiny_sdxl(repo) == repo and hfcache.snapshot_dir(repo) == snapshot  # kept now
