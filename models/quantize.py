"""Weight-only quantization of a VLM's language model with torchao, layer by layer as it loads.

KOALATALK_VLM_QUANT=none|int8|int4. The model is first built and filled on the CPU; then each
decoder layer in turn moves to the GPU and is quantized there, so the GPU holds the quantized
layers plus at most one layer in full precision, never the whole fp16 language model. The
vision tower and the projector are never quantized and keep their fp16 weights.

Why torchao: its weight-only int8 runs on the CPU too, so the loading path is tested here, and
its wheel is small (3.4 MB; 28 MB installed) beside bitsandbytes' 41 MiB, which would not fit
the device machine's 64 MiB transfer limit with the wheels `bench/gpu_wheels.sh` already
carries. Formats:
- int8: `Int8WeightOnlyConfig` (one scale per output row), the same on CPU and CUDA.
- int4 on CUDA: `Int4WeightOnlyConfig` in tinygemm's tile-packed layout, groups of 128; its
  kernel takes bfloat16 only, so the quantized language model runs in bf16 there.
- int4 on the CPU: torchao's int4 formats need CUDA; `IntxWeightOnlyConfig` (int4 values kept
  unpacked in int8, groups of 32) runs instead. It checks the loading path and the accuracy of
  4-bit weights, not the GPU's int4 kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from models.common import ModelUnavailable

QUANTS = ("none", "int8", "int4")
GPU_INT4_GROUP = 128
CPU_INT4_GROUP = 32
# Module names of a VLM's vision side: never quantized.
VISION_PARTS = ("vision", "visual", "mm_projector", "multi_modal_projector", "projector")


class QuantizationUnavailable(ModelUnavailable):
    """torchao is missing or cannot quantize on this device; the message says what to do."""


def torchao_config(quant: str, device: str) -> Any:
    """The torchao config for `quant` on `device`."""
    try:
        from torchao.quantization import (
            Int4WeightOnlyConfig,
            Int8WeightOnlyConfig,
            IntxWeightOnlyConfig,
        )
        from torchao.quantization.granularity import PerGroup
    except ImportError as exc:
        raise QuantizationUnavailable(
            f"KOALATALK_VLM_QUANT={quant} needs torchao (pip install torchao==0.18.0)"
        ) from exc
    if quant == "int8":
        return Int8WeightOnlyConfig()
    if quant == "int4" and device.startswith("cuda"):
        return Int4WeightOnlyConfig(
            group_size=GPU_INT4_GROUP, int4_packing_format="tile_packed_to_4d"
        )
    if quant == "int4":
        int4 = getattr(torch, "int4")  # noqa: B009 (absent from torch's type stubs)
        return IntxWeightOnlyConfig(weight_dtype=int4, granularity=PerGroup(CPU_INT4_GROUP))
    raise ValueError(f"quantization must be one of {', '.join(QUANTS)}, not {quant!r}")


def language_dtype(quant: str, device: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype the language model runs in: bf16 for int4 on CUDA (tinygemm), else `dtype`."""
    return torch.bfloat16 if quant == "int4" and device.startswith("cuda") else dtype


def is_quantized(linear: nn.Module) -> bool:
    """A Linear whose weight is a torchao quantized tensor."""
    weight = getattr(linear, "weight", None)
    return weight is not None and type(weight).__module__.startswith("torchao")


def quantized_linears(model: nn.Module) -> int:
    """How many Linear layers hold quantized weights."""
    return sum(1 for m in model.modules() if isinstance(m, nn.Linear) and is_quantized(m))


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter, quantized ones counted by their stored data and scales."""
    total = 0
    for p in model.parameters():
        inner = getattr(p, "__tensor_flatten__", None)
        if inner is None:
            total += p.numel() * p.element_size()
            continue
        names, _ = inner()
        total += sum(
            getattr(p, n).numel() * getattr(p, n).element_size()
            for n in names
            if isinstance(getattr(p, n), torch.Tensor)
        )
    return total


def _blocks(model: nn.Module, is_vision: Callable[[str], bool]) -> list[nn.Module]:
    """The language model's repeated layers: members of a ModuleList outside the vision side."""
    found: list[nn.Module] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and not is_vision(name):
            found.extend(m for m in module if any(isinstance(x, nn.Linear) for x in m.modules()))
    return found


def to_device_quantized(model: nn.Module, device: str, quant: str, dtype: torch.dtype) -> int:
    """Move a CPU-built model to `device`, quantizing its language layers one at a time.

    Returns the number of quantized Linear layers. Layers whose width does not suit the group
    size stay in full precision (torchao skips them)."""
    from torchao.quantization import quantize_

    config = torchao_config(quant, device)

    def is_vision(name: str) -> bool:
        return any(part in name for part in VISION_PARTS)

    def linear_only(module: nn.Module, _name: str) -> bool:
        return isinstance(module, nn.Linear)

    run_dtype = language_dtype(quant, device, dtype)
    for block in _blocks(model, is_vision):
        block.to(device=device, dtype=run_dtype)  # one full-precision layer on the GPU
        quantize_(block, config, filter_fn=linear_only, device=device)
    for name, module in model.named_children():
        if is_vision(name):
            module.to(device)  # keeps its own (fp16) dtype
    model.to(device)
    # Everything of the language side that is not a layer (embedding, norms, lm_head) in the
    # dtype the layers run in.
    for name, param in model.named_parameters():
        if (
            not is_vision(name)
            and param.is_floating_point()
            and param.dtype != run_dtype
            and (type(param).__module__.startswith("torch.nn"))
        ):
            param.data = param.data.to(run_dtype)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return quantized_linears(model)
