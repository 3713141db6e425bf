"""The memory plan (models/memory.py, workers/planning.py): parameter counts checked against real
modules, the plan's arithmetic, `python -m workers.cli plan`, and the worker's refusal at start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.core.settings import Settings, SettingsError
from bot.core.sizes import parse_bytes
from models import memory
from tests.support import ROOT, worker_env
from workers import planning

GIB = 2**30


def test_llama_and_vit_counts_match_modules_built_from_configs() -> None:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        llama = LlamaForCausalLM(
            LlamaConfig(
                hidden_size=64,
                num_hidden_layers=3,
                num_attention_heads=4,
                num_key_value_heads=4,
                intermediate_size=96,
                vocab_size=1003,
                tie_word_embeddings=False,
            )
        )
        tower = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=48,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=192,
                image_size=56,
                patch_size=14,
            )
        )
    linear, embedding, norms = memory.llama_params(64, 3, 96, 1003)
    assert sum(p.numel() for p in llama.parameters()) == linear + embedding + norms
    in_linears = sum(m.weight.numel() for m in llama.modules() if isinstance(m, torch.nn.Linear))
    assert in_linears == linear
    assert sum(p.numel() for p in tower.parameters()) == memory.vit_params(48, 2, 56, 14)


def test_koala_unet_count_matches_its_config() -> None:
    import torch
    from diffusers import UNet2DConditionModel

    config = json.loads((ROOT / "bench/model-configs/koala-700m.unet.json").read_text())
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    assert sum(p.numel() for p in unet.parameters()) == memory.UNET_PARAMS["koala-700m"]


def test_kollava_13b_weights_by_quantization() -> None:
    m = memory.VLMS["ko-llava-13b"]
    assert m.linear + m.kept == 13_015_895_040  # LLaMA-13B with 32003 tokens, untied head
    assert m.vision == 303_179_776 + 5_248_000  # ViT-L/14 at 224 px, Linear(1024, 5120)
    sizes = {
        q: memory.plan(memory.Config(draw=False, vision=True, vlm_quant=q), 80 * GIB, "test")
        .parts[0]
        .weights
        for q in ("none", "int8", "int4")
    }
    assert 24 * GIB < sizes["none"] < 25 * GIB
    assert sizes["int4"] < 0.3 * sizes["none"] + 1.5 * GIB  # the fp16 embedding and tower stay


def test_plan_caps_the_batch_and_counts_every_model() -> None:
    c = memory.Config(
        draw=True,
        vision=True,
        vlm_quant="int4",
        max_batch=4,
        translator="opus-mt-tc-big-ko-en",
        safety="Falconsai/nsfw_image_detection",
    )
    found = memory.plan(c, 24 * GIB, "test")
    assert found.fits and found.batch == 2
    assert [p.name.split()[0] for p in found.parts] == [
        "text2image",
        "translator",
        "safety",
        "vision",
    ]
    bigger = memory.plan(c, 80 * GIB, "test")
    assert bigger.batch == 4 and bigger.need > found.need
    assert found.need == (found.weights + max(p.activation for p in found.parts) + found.context)


def test_unfit_plan_names_models_need_free_memory_and_a_setting_that_fits() -> None:
    c = memory.Config(draw=True, vision=True, vlm_quant="none")
    found = memory.plan(c, 24 * GIB, "given as 24GiB")
    assert not found.fits
    sentence = found.refusal(memory.suggest(c, 24 * GIB, "given as 24GiB"))
    assert "koala-lightning-700m and vision ko-llava-13b need" in sentence
    assert "24.0 GiB is free" in sentence and "KOALATALK_VLM_QUANT=int8" in sentence
    assert sentence.endswith(".") and ". " not in sentence and "\n" not in sentence
    draw_only = memory.Config(
        draw=True,
        vision=False,
        translator="opus-mt-tc-big-ko-en",
        safety="Falconsai/nsfw_image_detection",
    )
    suggestion = memory.suggest(draw_only, 8 * GIB, "test")
    assert suggestion is not None and suggestion.config.draw_memory == "offload"
    assert (
        memory.plan(draw_only, 8 * GIB, "test")
        .refusal(None)
        .endswith("serve the queues from separate workers or GPUs.")
    )


def test_settings_check_the_new_choices_and_sizes() -> None:
    assert parse_bytes("24GiB") == 24 * GIB and parse_bytes("8 GB") == 8 * 10**9
    with pytest.raises(SettingsError, match="VLM_QUANT"):
        Settings.from_env({"KOALATALK_MODE": "development", "KOALATALK_VLM_QUANT": "int3"})
    with pytest.raises(SettingsError, match="GPU_MEMORY"):
        Settings.from_env({"KOALATALK_MODE": "development", "KOALATALK_GPU_MEMORY": "lots"})


def test_planning_caps_max_batch_in_the_settings_the_worker_runs_with() -> None:
    s = Settings.from_env({"KOALATALK_MODE": "development", "KOALATALK_VLM_QUANT": "int4"})
    outcome = planning.check(s, ["text2image", "vision"], "24GiB")
    assert not outcome.refusal and outcome.settings is not None
    assert outcome.settings.max_batch == 2
    on_cpu = planning.check(s.with_(device="cpu"), ["text2image"])
    assert on_cpu.plan is None and on_cpu.settings is not None
    assert on_cpu.settings.max_batch == 4  # a CPU worker: nothing to plan


def run(*args: str, module: str = "workers.cli", **settings: str) -> subprocess.CompletedProcess:
    env = worker_env({}, mode="development", device="cpu", **settings)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_plan_prints_the_plan_and_exits_by_fit() -> None:
    fits = run("plan", "--gpu-memory", "24GiB", "--vlm-quant", "int4")
    assert fits.returncode == 0, fits.stderr
    assert "drawing batch: 2 (MAX_BATCH 4 capped by the plan)" in fits.stdout
    assert "published by ETRI (KOALA), RTX 4090" in fits.stdout and ": fits" in fits.stdout
    unfit = run("plan", "--gpu-memory", "24GiB")
    assert unfit.returncode == 1 and "KOALATALK_VLM_QUANT=int8" in unfit.stdout
    assert run("plan").returncode == 2  # no GPU here and no size given


def test_worker_refuses_an_unfit_configuration_before_loading(
    redis_url: str, tmp_path: Path
) -> None:
    # The real presets' weights are not here: had the worker tried to load, it would have
    # failed with "needs the weights" (exit 3) instead.
    done = run(
        "text2image",
        "vision",
        module="workers",
        redis_url=redis_url,
        gpu_memory="8GiB",
        data_dir=str(tmp_path),
        preset="koala-lightning-700m",
        vlm_preset="ko-llava-13b",
    )
    assert done.returncode == 4, done.stderr[-2000:]
    line = [x for x in done.stderr.splitlines() if x.startswith("koalatalk worker:")]
    assert len(line) == 1 and "need" in line[0] and "8.0 GiB is free" in line[0]
    assert "needs the weights" not in done.stderr and "Traceback" not in done.stderr


def test_docs_table_is_the_plans() -> None:
    assert memory.gpu_table() in (ROOT / "docs/operations.md").read_text()
