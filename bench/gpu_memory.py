"""bench/gpu.py's memory section (`--only memory`): peak memory as a card sees it.

For each drawing memory mode and each VLM quantization it measures, on random-weight replicas of
the real shapes (KOALA-Lightning-700M from bench/model-configs; Ko-LLaVA-13b: LLaMA hidden 5120,
40 layers, intermediate 13824, vocabulary 32003, ViT-L/14 tower at 224 px, Linear(1024, 5120)):
- the card's view: the CUDA context plus the caching allocator's peak reserved memory, and
  `max_memory_allocated` beside it;
- seconds per image (1024x1024, batch 1) or tokens per second (a 300-token prompt with the 256
  image patches, 64 new tokens, greedy);
- both models resident in one process (drawing normal, VLM int4), each job in turn.
The language model replica is built on the meta device and materialised one decoder layer at a
time on the GPU, quantized there when asked, as the worker's loader does (models/quantize.py).
On the CPU (smoke) the same code runs on scaled-down shapes and reports no memory figures.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

LLAMA_13B: dict[str, Any] = {
    "hidden_size": 5120,
    "num_hidden_layers": 40,
    "num_attention_heads": 40,
    "intermediate_size": 13824,
    "vocab_size": 32003,
    "max_position_embeddings": 2048,
}
LLAMA_SMOKE: dict[str, Any] = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "vocab_size": 32003,
    "max_position_embeddings": 2048,
}
VIT_L14: dict[str, Any] = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "image_size": 224,
    "patch_size": 14,
}
VIT_SMOKE: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "image_size": 224,
    "patch_size": 14,
}
PROMPT_TEXT_TOKENS = 44  # + 256 image patches: about Ko-LLaVA's first-turn prompt
NEW_TOKENS = 64


class Card:
    """Peak memory as the card sees it: CUDA context plus the allocator's reserved peak."""

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda.is_available()
        self.context = 0
        if self.cuda:
            torch.zeros(1, device="cuda")  # the context exists from here on
            free, total = torch.cuda.mem_get_info()
            self.context = (total - free) - torch.cuda.memory_reserved()

    def reset(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peaks(self) -> dict[str, float | None]:
        """GiB: the card's view (context + peak reserved) and the peak allocated."""
        import torch

        if not self.cuda:
            return {"card_gib": None, "allocated_gib": None}
        torch.cuda.synchronize()
        return {
            "card_gib": (self.context + torch.cuda.max_memory_reserved()) / 2**30,
            "allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        }


def quants(device: str) -> list[str]:
    """The quantizations to measure: torchao's only where it is installed."""
    return ["none", "int8", "int4"] if importlib.util.find_spec("torchao") else ["none"]


def build_language_model(device: str, dtype: Any, quant: str, smoke: bool) -> Any:
    """A random LLaMA of the 13B shape, made one layer at a time on `device` (quantized)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    from models.quantize import language_dtype, torchao_config

    config = LlamaConfig(
        **(LLAMA_SMOKE if smoke else LLAMA_13B),
        bos_token_id=2,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    run_dtype = language_dtype(quant, device, dtype)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    generator = torch.Generator(device=device).manual_seed(0)

    def materialise(module: Any) -> None:
        module.to_empty(device=device)
        with torch.no_grad():
            for p in module.parameters(recurse=True):
                if p.dim() > 1:
                    p.data = (
                        torch.randn(p.shape, generator=generator, device=device, dtype=run_dtype)
                        * 0.02
                    )
                else:
                    p.data = torch.ones(p.shape, device=device, dtype=run_dtype)

    if quant != "none":
        from torchao.quantization import quantize_

        config_ao = torchao_config(quant, device)
    for layer in model.model.layers:
        materialise(layer)
        if quant != "none":
            quantize_(layer, config_ao, device=device)
    for part in (model.model.embed_tokens, model.model.norm, model.lm_head):
        materialise(part)
    with torch.device(device):  # its inv_freq buffer, computed again off the meta device
        model.model.rotary_emb = LlamaRotaryEmbedding(config)
    return model.eval()


def build_tower(device: str, dtype: Any, smoke: bool, hidden: int) -> tuple[Any, Any]:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from bench.gpu import building

    with building(device, dtype):
        tower = CLIPVisionModel(CLIPVisionConfig(**(VIT_SMOKE if smoke else VIT_L14))).eval()
        projector = torch.nn.Linear(tower.config.hidden_size, hidden).eval()
    return tower, projector


def answer(llm: Any, tower: Any, projector: Any, device: str, dtype: Any) -> int:
    """One Ko-LLaVA-shaped answer: tower, projector, prompt embeddings, 64 greedy tokens."""
    import torch

    with torch.inference_mode():
        pixels = torch.randn(1, 3, 224, 224, device=device, dtype=dtype)
        hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        embed = llm.get_input_embeddings()
        features = projector(hidden).to(embed.weight.dtype)
        ids = torch.randint(3, 32000, (1, PROMPT_TEXT_TOKENS), device=device)
        embeds = torch.cat([embed(ids[:, :30]), features, embed(ids[:, 30:])], dim=1)
        out = llm.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], device=device, dtype=torch.long),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    return int(out.shape[1])


def drawing(
    report: Any, card: Card, shared: Any, device: str, dtype: Any, scale: Any, mode: str
) -> dict[str, Any]:
    """KOALA-Lightning-700M at batch 1 in one memory mode: s/image and the card's peak."""
    from bench import gpu
    from models.text2image import low_memory

    replica = gpu.REPLICAS[0]
    pipe = gpu.build_pipeline(replica, shared, device, dtype, scale.smoke)
    model = gpu.serve_model(replica, pipe, device, scale, compile_unet=False)
    if mode == "offload":
        pipe.enable_model_cpu_offload(device=device)
    if mode != "normal":
        low_memory(pipe, model.preset, device)
        model.memory = mode
    gpu.release()
    card.reset()
    warm = gpu.timed(gpu.call(model, 1, 1000))
    times = [gpu.timed(gpu.call(model, 1, 100 * (r + 1))) for r in range(scale.timed)]
    out: dict[str, Any] = {
        "warm_s": warm,
        "times": times,
        "s_per_image": sorted(times)[len(times) // 2],
        **card.peaks(),
    }
    report.add(
        f"{replica.name} {mode} batch 1",
        f"{out['s_per_image']:.3f} s/image, card "
        f"{gpu.gib(out['card_gib'])} (allocated {gpu.gib(out['allocated_gib'])})",
        "<= 7.20 GiB card" if mode != "normal" and card.cuda else "",
        (out["card_gib"] or 0) <= 7.2 if mode != "normal" and card.cuda else None,
    )
    return out


def vision(
    report: Any, card: Card, device: str, dtype: Any, smoke: bool, quant: str
) -> dict[str, Any]:
    """The Ko-LLaVA-13b replica in one quantization: load, peak, tokens per second."""
    from bench import gpu

    gpu.release()
    card.reset()
    started = time.perf_counter()
    llm = build_language_model(device, dtype, quant, smoke)
    tower, projector = build_tower(device, dtype, smoke, llm.config.hidden_size)
    gpu.sync()
    load_s = time.perf_counter() - started
    loaded = card.peaks()
    answer(llm, tower, projector, device, dtype)  # warm-up
    started = time.perf_counter()
    answer(llm, tower, projector, device, dtype)
    gpu.sync()
    seconds = time.perf_counter() - started
    out: dict[str, Any] = {
        "load_s": load_s,
        "load_card_gib": loaded["card_gib"],
        "answer_s": seconds,
        "tokens_per_s": NEW_TOKENS / seconds,
        **card.peaks(),
    }
    target = "< 10 GB card" if quant == "int4" and card.cuda else ""
    report.add(
        f"ko-llava-13b replica {quant}",
        f"{out['tokens_per_s']:.1f} tokens/s, card "
        f"{gpu.gib(out['card_gib'])} (allocated {gpu.gib(out['allocated_gib'])}), "
        f"load {load_s:.1f} s",
        target,
        (out["card_gib"] or 0) * 2**30 < 10e9 if target else None,
    )
    return out


def both(
    report: Any, card: Card, shared: Any, device: str, dtype: Any, scale: Any, quant: str
) -> dict[str, Any]:
    """Both models resident in this process: a drawing, then an answer, one after the other."""
    from bench import gpu

    gpu.release()
    card.reset()
    replica = gpu.REPLICAS[0]
    model = gpu.serve_model(
        replica,
        gpu.build_pipeline(replica, shared, device, dtype, scale.smoke),
        device,
        scale,
        False,
    )
    llm = build_language_model(device, dtype, quant, scale.smoke)
    tower, projector = build_tower(device, dtype, scale.smoke, llm.config.hidden_size)
    gpu.timed(gpu.call(model, 1, 1000))
    answer(llm, tower, projector, device, dtype)
    draw_s = gpu.timed(gpu.call(model, 1, 2000))
    answer_s = gpu.timed(lambda: answer(llm, tower, projector, device, dtype))
    out: dict[str, Any] = {
        "vlm_quant": quant,
        "s_per_image": draw_s,
        "tokens_per_s": NEW_TOKENS / answer_s,
        **card.peaks(),
    }
    report.add(
        f"both resident (drawing normal + VLM {quant})",
        f"{draw_s:.3f} s/image, {out['tokens_per_s']:.1f} tokens/s, card "
        f"{gpu.gib(out['card_gib'])} (allocated {gpu.gib(out['allocated_gib'])})",
        "< 20 GB card" if card.cuda else "",
        (out["card_gib"] or 0) * 2**30 < 20e9 if card.cuda else None,
    )
    return out  # the models go with this frame; run_memory releases their memory


def run_memory(
    report: Any, shared: Any, device: str, dtype: Any, scale: Any, deadline: float, scratch: Path
) -> int:
    """Every memory figure that fits the time budget; returns the number of failed parts."""
    from bench import gpu

    card = Card()
    out: dict[str, Any] = {
        "context_gib": card.context / 2**30 if card.cuda else None,
        "draw": {},
        "vision": {},
    }
    report.data["memory"] = out
    report.add("CUDA context", gpu.gib(out["context_gib"]))
    failed = 0
    modes = ["normal", "low", "offload"] if card.cuda else ["normal", "low"]
    if not card.cuda:
        out["draw"]["offload"] = "skipped: model CPU offload needs CUDA"
    steps: list[tuple[str, Any]] = [
        (
            f"draw {m}",
            lambda m=m: out["draw"].__setitem__(
                m, drawing(report, card, shared, device, dtype, scale, m)
            ),
        )
        for m in modes
    ]
    available = quants(device)
    if len(available) == 1:
        out["vision"]["int8"] = out["vision"]["int4"] = "skipped: torchao is not installed"
    steps += [
        (
            f"vision {q}",
            lambda q=q: out["vision"].__setitem__(
                q, vision(report, card, device, dtype, scale.smoke, q)
            ),
        )
        for q in available
    ]
    resident = "int4" if "int4" in available else available[-1]
    steps.append(
        (
            "both",
            lambda: out.__setitem__(
                "both", both(report, card, shared, device, dtype, scale, resident)
            ),
        )
    )
    for name, step in steps:
        if time.monotonic() > deadline:
            report.problem(f"memory {name} skipped: time budget spent")
            failed += 1
            continue
        print(f"memory {name}: [{gpu.clock()}]", flush=True)
        try:
            step()
        except Exception as exc:  # report it, keep measuring
            failed += 1
            report.problem(f"memory {name}: {type(exc).__name__}: {str(exc)[:500]}")
        gpu.release()
    return failed
