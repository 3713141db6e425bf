"""What every model family shares: device choice, dtype, a clear error when weights are absent."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Placeholder pieces a vocabulary reserves and a model never learnt to write: `<unused12>`
# (Gemma, padded SentencePiece models), `[unused3]` (BERT), `<|unused4|>`.
_UNUSED_PIECE = re.compile(r"^(<unused_?\d+>|\[unused_?\d+\]|<\|unused_?\d+\|>)$")


class ModelUnavailable(RuntimeError):
    """Weights for a preset cannot be had; the message names the preset and the way out."""


def resolve_device(device: str = "auto") -> str:
    """`auto` becomes `cuda` when a GPU is visible, else `cpu`."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def dtype_for(device: str) -> Any:
    """fp16 on CUDA, fp32 on CPU."""
    import torch

    return torch.float16 if device.startswith("cuda") else torch.float32


def unavailable(preset: str, repo_id: str, exc: BaseException) -> ModelUnavailable:
    """The start-up error for weights that are missing from the cache and cannot be fetched."""
    return ModelUnavailable(
        f"Preset '{preset}' needs the weights of '{repo_id}', which could not be loaded "
        f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}). "
        f"Download them on a machine with network access (`hf download {repo_id}`) into the "
        f"Hugging Face cache (HF_HOME) this worker reads, or unset HF_HUB_OFFLINE; for "
        f"development without weights use KOALATALK_MODE=development with the `tiny` preset."
    )


def unused_token_ids(vocab: Mapping[str, int]) -> list[int]:
    """Ids of the vocabulary's reserved placeholder pieces (`<unused12>` and the like), sorted."""
    return sorted(index for piece, index in vocab.items() if _UNUSED_PIECE.match(piece))
