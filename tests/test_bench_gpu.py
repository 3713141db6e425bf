"""bench/gpu.py: exact-size replica configs, CLIP-sized tokenizers, and the CPU smoke run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import gpu  # noqa: E402


def published_counts() -> dict[str, int]:
    """The parameter counts in bench/model-configs/README.md's table, by config file."""
    text = (gpu.CONFIGS / "README.md").read_text()
    rows = re.findall(r"^\| (\S+\.json) \| [^|]+ \| ([\d,]+) \|$", text, re.M)
    return {name: int(number.replace(",", "")) for name, number in rows}


def test_replicas_have_the_published_sizes() -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    counts = published_counts()
    assert len(counts) == 7
    built: dict[str, int] = {}
    # The bench's own building context, on the meta device: exact shapes, no memory.
    with gpu.building("meta", torch.float16):
        for replica in gpu.REPLICAS:
            unet = UNet2DConditionModel.from_config(gpu.config(replica.unet))
            vae = AutoencoderKL.from_config(gpu.config(replica.vae))
            assert next(unet.parameters()).dtype == torch.float16
            assert next(unet.parameters()).device.type == "meta"
            built[replica.unet], built[replica.vae] = gpu.count(unet), gpu.count(vae)
        one = CLIPTextModel(CLIPTextConfig(**gpu.config("sdxl.text_encoder.json")))
        two = CLIPTextModelWithProjection(CLIPTextConfig(**gpu.config("sdxl.text_encoder_2.json")))
        built["sdxl.text_encoder.json"], built["sdxl.text_encoder_2.json"] = (
            gpu.count(one),
            gpu.count(two),
        )
    assert built == counts
    assert gpu.config("koala.vae.json")["force_upcast"] is False
    assert gpu.config("sdxl-base.vae.json")["force_upcast"] is True


def test_tokenizers_have_clips_vocabulary_and_window() -> None:
    with tempfile.TemporaryDirectory() as folder:
        tokenizer, tokenizer_2 = gpu.clip_tokenizers(Path(folder))
    assert len(tokenizer) == len(tokenizer_2) == 49408
    assert tokenizer.model_max_length == tokenizer_2.model_max_length == 77
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (49406, 49407)
    assert tokenizer_2.pad_token == "!"
    ids = tokenizer("a koala in a tree", padding="max_length").input_ids
    assert len(ids) == 77 and ids[0] == 49406 and max(ids) == 49407


def test_cpu_smoke_runs_every_section(tmp_path: Path) -> None:
    import torch

    out = tmp_path / "gpu.json"
    cuda = torch.cuda.is_available()  # without CUDA the bench falls back to the smoke by itself
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gpu.py"),
            *(["--cpu-smoke"] if cuda else []),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    if not cuda:
        assert "no CUDA GPU visible: running the CPU smoke instead" in run.stdout
    report = json.loads(out.read_text())
    assert report["problems"] == []
    assert report["info"]["device"] == "cpu"
    figures = report["figures"]
    for replica in gpu.REPLICAS:
        model = figures[replica.name]
        for batch in gpu.SMOKE_SCALE.batches:
            setting = model[f"batch{batch}"]
            assert len(setting["times"]) == gpu.SMOKE_SCALE.timed
            assert setting["s_per_image"] > 0 and setting["peak_gib"] is None
        assert model["batched_over_sequential"] > 0
    # Scaled-down replicas keep the real layouts: SDXL-base's UNet is the biggest.
    sizes = [figures[r.name]["params"]["unet"] for r in gpu.REPLICAS]
    assert sizes[0] < sizes[1] < sizes[2]
    served = figures["served"]
    assert len(served["reply_s"]) == gpu.SMOKE_SCALE.served
    assert len(served["model_s"]) == gpu.SMOKE_SCALE.served
    assert set(figures["compile"]) == {"compiled", "batch1", "batch8"}
    assert figures["compile"]["compiled"] is False  # _tune compiles on CUDA only
    assert set(figures["sdxl_over_koala"]) == {
        f"{name}/batch{b}"
        for name in ("koala-lightning-700m", "koala-lightning-1b")
        for b in (1, 8)
    }
    # The table prints every figure beside its target; the smoke does not judge them.
    assert "prompt -> direct reply" in run.stdout
    assert "<= 0.35 s | (smoke)" in run.stdout
    assert "PASS" not in run.stdout and "FAIL" not in run.stdout


def test_missing_packages_are_reported_not_raised(tmp_path: Path) -> None:
    # A Python that finds neither torch nor diffusers: -S drops site-packages, -I the env.
    run = subprocess.run(
        [sys.executable, "-I", "-S", str(ROOT / "bench" / "gpu.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "MISSING for bench/gpu.py: torch, diffusers" in run.stdout
    assert "Traceback" not in run.stderr


def test_kollava_replica_has_the_13b_shape_the_plan_counts() -> None:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from bench import gpu_memory
    from models import memory

    with torch.device("meta"):
        llm = LlamaForCausalLM(LlamaConfig(**gpu_memory.LLAMA_13B, tie_word_embeddings=False))
        tower = CLIPVisionModel(CLIPVisionConfig(**gpu_memory.VIT_L14))
    planned = memory.VLMS["ko-llava-13b"]
    assert gpu.count(llm) == planned.linear + planned.kept == 13_015_895_040
    assert gpu.count(tower) + 1024 * 5120 + 5120 == planned.vision


def test_memory_section_runs_alone_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gpu.py"),
            "--cpu-smoke",
            "--only",
            "memory",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["problems"] == []
    memory = report["figures"]["memory"]
    assert set(report["figures"]) == {"memory"}  # the speed sections did not run
    for mode in ("normal", "low"):
        assert memory["draw"][mode]["s_per_image"] > 0
        assert memory["draw"][mode]["card_gib"] is None  # no memory figures on the CPU
    assert memory["draw"]["offload"].startswith("skipped: model CPU offload needs CUDA")
    assert memory["vision"]["none"]["tokens_per_s"] > 0
    assert memory["both"]["s_per_image"] > 0 and memory["both"]["tokens_per_s"] > 0
    assert "ko-llava-13b replica none" in run.stdout
