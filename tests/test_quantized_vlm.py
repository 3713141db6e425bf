"""KOALATALK_VLM_QUANT on the CPU: tiny Ko-LLaVA (widths suiting the group sizes) loaded through
the real loading path, quantized layer by layer with torchao, compared with fp32.

int8 is torchao's Int8WeightOnlyConfig, as on the GPU. int4 here is IntxWeightOnlyConfig
(groups of 32), since torchao's int4 formats need CUDA: it checks the path and 4-bit accuracy,
not the GPU's kernels. Skipped where torchao is not installed."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from PIL import Image

pytest.importorskip("torchao")

from models import quantize
from models.kollava import KoLlava
from models.vision_language import load_vision_language

PRESET = "tiny-kollava-128"
QUESTION = "이 사진에 무엇이 있나요?"


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return {q: load_vision_language(PRESET, "cpu", quant=q) for q in ("none", "int8", "int4")}


def photo() -> Image.Image:
    return Image.new("RGB", (64, 64), (200, 120, 40))


def prompt(model: KoLlava) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([model.input_ids([], QUESTION, 64)])
    return ids, model.prompt_embeds(photo(), ids)


def greedy(model: KoLlava, n: int) -> list[int]:
    ids, embeds = prompt(model)
    with torch.inference_mode():
        out = model.model.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    return list(out[0].tolist())


def layer_bytes(model: KoLlava) -> int:
    return sum(quantize.weight_bytes(layer) for layer in model.model.model.layers)


def test_int8_first_greedy_tokens_equal_fp32s(models: dict[str, Any]) -> None:
    reference = greedy(models["none"], 8)
    assert len(reference) == 8
    assert greedy(models["int8"], 8) == reference
    # The glue is unchanged: same prompt ids, same stop rule, same answer.
    answers = [
        m.answer([photo()], [], QUESTION, max_new_tokens=8)
        for m in (models["none"], models["int8"])
    ]
    assert answers[0] == answers[1]


def test_int4_agrees_with_fp32_on_teacher_forced_positions(models: dict[str, Any]) -> None:
    fp32 = models["none"]
    continuation = torch.tensor([greedy(fp32, 64)])
    choices = {}
    for q in ("none", "int4"):
        ids, embeds = prompt(models[q])
        with torch.inference_mode():
            forced = models[q].model.get_input_embeddings()(continuation)
            logits = models[q].model(inputs_embeds=torch.cat([embeds, forced], 1)).logits[0]
        choices[q] = logits[ids.shape[1] - 1 : -1].argmax(-1)  # predictions for the 64 tokens
    assert choices["none"].shape == (64,)
    agreement = (choices["none"] == choices["int4"]).float().mean().item()
    assert agreement >= 0.9, agreement


def test_quantization_happened_in_the_language_model_only(models: dict[str, Any]) -> None:
    fp32, int8, int4 = models["none"], models["int8"], models["int4"]
    layers = fp32.config.num_hidden_layers
    assert quantize.quantized_linears(fp32.model) == 0
    for m in (int8, int4):  # q, k, v, o, gate, up, down in every decoder layer
        assert quantize.quantized_linears(m.model) == 7 * layers
        assert not quantize.is_quantized(m.model.lm_head)
        assert not quantize.is_quantized(m.projector)
        assert quantize.quantized_linears(m.vision) == 0
        assert m.projector.weight.dtype == torch.float32  # CPU's full precision, untouched
    ratio4 = layer_bytes(int4) / layer_bytes(fp32)
    ratio8 = layer_bytes(int8) / layer_bytes(fp32)
    assert ratio4 <= 0.35, ratio4
    assert ratio8 <= 0.30, ratio8  # int8 values plus one scale per row


def test_unknown_quantization_is_refused() -> None:
    with pytest.raises(ValueError, match="quantization must be one of"):
        quantize.torchao_config("int3", "cpu")


def test_native_vlm_quantizes_its_language_layers_only() -> None:
    model = load_vision_language("tiny-native", "cpu", quant="int8")
    names = [
        name
        for name, m in model.model.named_modules()  # type: ignore[attr-defined]
        if isinstance(m, torch.nn.Linear) and quantize.is_quantized(m)
    ]
    assert names and all("language_model" in name for name in names), names
    assert not any(part in name for name in names for part in quantize.VISION_PARTS)
    assert isinstance(model.answer([photo()], [], QUESTION, max_new_tokens=4), str)
