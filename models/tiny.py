"""Tiny, random, seeded SDXL pipeline for tests and offline development.

It has SDXL's exact layout (two CLIP text encoders, a UNet with the `text_time` addition
embedding, an AutoencoderKL with 8x downsampling, Euler scheduler), so the real loading code reads
it through `from_pretrained(repo_id)` like downloaded KOALA weights; about 24 MB in all. Its two
tokenizers are CLIP's own (built from OpenAI's merges, vendored in models/data), so prompts count
against the 77-token window exactly as they do with KOALA.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from pathlib import Path

from models import hfcache

TINY_SDXL_REPO = "koalatalk/tiny-sdxl"
# Bumped whenever build_tiny_sdxl changes what it writes, so older cached copies are rebuilt
# (2: CLIP's real 49408-entry vocabulary).
TINY_SDXL_BUILD = "2"
TEXT_HIDDEN = 32  # each text encoder; the UNet cross-attends to both, concatenated
TIME_EMBED = 8  # per SDXL micro-conditioning number (sizes and crop), six of them

CLIP_BPE = Path(__file__).parent / "data" / "bpe_simple_vocab_16e6.txt.gz"  # OpenAI, MIT
CLIP_VOCAB = 49408
CLIP_MERGES = CLIP_VOCAB - 2 * 256 - 2  # 48894: the merges CLIP keeps, after a version line


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte-to-character table, in CLIP's order (its vocabulary's first 256).

    Printable bytes map to themselves and come first; the others (space, control characters)
    follow, mapped to characters from 256 up.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in table]
    table.update({byte: chr(256 + extra) for extra, byte in enumerate(others)})
    return table


def clip_merges() -> list[str]:
    """The first 48894 merges of OpenAI's CLIP BPE file, as CLIP's own tokenizer reads them."""
    lines = gzip.decompress(CLIP_BPE.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : CLIP_MERGES + 1]  # the first line names the file and its version
    if len(merges) != CLIP_MERGES or any(len(merge.split()) != 2 for merge in merges):
        raise ValueError(f"{CLIP_BPE} does not hold {CLIP_MERGES} merges")
    return merges


def write_clip_vocab(folder: Path) -> int:
    """Write CLIP's vocab.json and merges.txt (49408 entries); return the vocabulary size.

    Built as CLIP builds it: the 256 byte characters, the same with `</w>`, one token per merge,
    then `<|startoftext|>` (49406) and `<|endoftext|>` (49407), so prompts split into the real
    CLIP tokens and count against the 77-token window as they do with KOALA's tokenizers.
    """
    merges = clip_merges()
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB:
        raise ValueError(f"CLIP vocabulary has {len(vocab)} distinct tokens, not {CLIP_VOCAB}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )
    return len(vocab)


def build_tiny_sdxl(folder: Path) -> None:
    """Build a tiny random SDXL pipeline from configs (seeded) and save it into `folder`."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as scratch:
        vocab_size = write_clip_vocab(Path(scratch))
        tokenizer = CLIPTokenizer.from_pretrained(scratch, model_max_length=77)
        # SDXL's second tokenizer pads with "!", as the real SDXL repos do.
        tokenizer_2 = CLIPTokenizer.from_pretrained(scratch, model_max_length=77, pad_token="!")

    # Fork the RNG so building never disturbs the caller's torch.manual_seed state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        text_config = CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=TEXT_HIDDEN,
            intermediate_size=37,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=TEXT_HIDDEN,
            hidden_act="gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        text_encoder = CLIPTextModel(text_config)
        text_encoder_2 = CLIPTextModelWithProjection(text_config)
        unet = UNet2DConditionModel(
            sample_size=8,  # 64 px / 8
            in_channels=4,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            transformer_layers_per_block=(1, 1),
            use_linear_projection=True,
            norm_num_groups=8,
            cross_attention_dim=2 * TEXT_HIDDEN,
            addition_embed_type="text_time",
            addition_time_embed_dim=TIME_EMBED,
            projection_class_embeddings_input_dim=6 * TIME_EMBED + TEXT_HIDDEN,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            layers_per_block=1,
            block_out_channels=(8, 8, 16, 16),  # four levels: 8x down like SDXL's VAE
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            norm_num_groups=4,
            sample_size=64,
            scaling_factor=0.13025,
            force_upcast=False,
        )
    # The scheduler as KOALA ships it (SDXL's Euler with leading spacing); Lightning presets
    # switch to trailing spacing when they load.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        prediction_type="epsilon",
        steps_offset=1,
        timestep_spacing="leading",
        interpolation_type="linear",
        use_karras_sigmas=False,
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    # diffusers' __init__ shows mypy its dummy placeholder class, which lacks save_pretrained.
    pipe.save_pretrained(folder, safe_serialization=True)  # type: ignore[attr-defined]


def ensure_tiny_sdxl(repo_id: str = TINY_SDXL_REPO) -> str:
    """Build the tiny SDXL pipeline into the HF cache under `repo_id` unless it is there."""
    if hfcache.built_snapshot(repo_id, TINY_SDXL_BUILD) is not None:
        return repo_id
    from filelock import FileLock

    root = hfcache.cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    lock_name = ".koalatalk-" + repo_id.replace("/", "--") + ".lock"
    # A cross-process lock: place() replaces a snapshot folder, which a racing builder must not
    # do while another process is already reading it.
    with FileLock(str(root / lock_name)):
        if hfcache.built_snapshot(repo_id, TINY_SDXL_BUILD) is not None:
            return repo_id
        scratch = Path(tempfile.mkdtemp(prefix="tiny-sdxl-"))
        try:
            build_tiny_sdxl(scratch)
            hfcache.mark_build(scratch, TINY_SDXL_BUILD)
            hfcache.place(scratch, repo_id)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return repo_id
