"""The memory plan: what a worker's models need on the GPU, computed before anything loads.

Weights come from parameter counts times bytes per parameter (fp16 on CUDA; the quantized
formats' bytes, scales included). Activation peaks come from FIGURES, a table of measured or
published numbers, each with its GPU and date; where nothing has been measured the table says
how the number was computed instead. Nothing here imports torch, except `visible_gpu`, which
asks the GPU for its free memory.

A worker runs its jobs one at a time, in one process, with one caching allocator, so its peak is
all resident weights, plus the largest single job's activations, plus the CUDA context. Loading
has a peak of its own: a quantized language model is quantized layer by layer as it loads, so at
most one fp16 decoder layer is on the GPU beside what is already there.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

GIB = 2**30
FP16 = 2

# -- parameter counts ---------------------------------------------------------------------------


def llama_params(hidden: int, layers: int, intermediate: int, vocab: int) -> tuple[int, int, int]:
    """LLaMA's parameters as (linear weights incl. lm_head, embedding, norms); no biases."""
    per_layer = 4 * hidden * hidden + 3 * hidden * intermediate
    linear = layers * per_layer + vocab * hidden  # decoder layers and the untied lm_head
    return linear, vocab * hidden, (2 * layers + 1) * hidden


def vit_params(
    hidden: int, layers: int, image: int, patch: int, intermediate: int = 0, channels: int = 3
) -> int:
    """A CLIP vision transformer (transformers' CLIPVisionModel, no projection head)."""
    intermediate = intermediate or 4 * hidden
    tokens = (image // patch) ** 2 + 1
    embeddings = channels * patch * patch * hidden + hidden + tokens * hidden
    per_layer = 4 * (hidden * hidden + hidden) + 2 * hidden * intermediate + intermediate
    per_layer += hidden + 4 * hidden  # fc2 bias, two layer norms
    return embeddings + layers * per_layer + 4 * hidden  # pre and post layer norms


@dataclass(frozen=True)
class LanguageModel:
    """A VLM's language part (quantizable) and the rest (vision tower, projector: fp16)."""

    linear: int  # parameters in the decoder layers' Linear weights: what quantization shrinks
    kept: int  # embedding, lm_head, norms, biases: stay fp16
    vision: int  # vision tower and projector, fp16
    largest_linear_in: int  # the smallest input width among quantized layers (scales per row)
    layer: int  # parameters of one decoder layer (the load-time transient)
    kv_bytes: int  # fp16 KV cache at the full context, one sequence
    source: str


def _kollava_13b() -> LanguageModel:
    hidden, layers, heads, intermediate, vocab, context = 5120, 40, 40, 13824, 32003, 2048
    linear, embedding, norms = llama_params(hidden, layers, intermediate, vocab)
    tower = vit_params(1024, 24, 224, 14)
    projector = 1024 * hidden + hidden
    assert heads * (hidden // heads) == hidden
    head = vocab * hidden  # lm_head: never quantized (models/quantize.py quantizes the layers)
    return LanguageModel(
        linear=linear - head,
        kept=embedding + head + norms,
        vision=tower + projector,
        largest_linear_in=hidden,
        layer=4 * hidden * hidden + 3 * hidden * intermediate,
        kv_bytes=2 * layers * hidden * context * FP16,
        source="computed: LLaMA-13B shape (hidden 5120, 40 layers, intermediate 13824, "
        "vocabulary 32003), ViT-L/14 at 224 px, Linear(1024, 5120)",
    )


VLMS: dict[str, LanguageModel] = {
    "ko-llava-13b": _kollava_13b(),
    # Qwen2-VL-2B-Instruct: about 1.5B in the language model (of which 0.23B embedding), 0.67B
    # in the vision encoder (model card); KV cache: 28 layers, 2 KV heads of 128, 8192 tokens.
    "qwen2-vl-2b": LanguageModel(
        linear=1_310_000_000,
        kept=235_000_000,
        vision=675_000_000,
        largest_linear_in=1536,
        layer=46_800_000,
        kv_bytes=2 * 28 * 256 * 8192 * FP16,
        source="approximate: Qwen2-VL-2B model card (1.5B language, 0.67B vision)",
    ),
}

# KOALA and SDXL parts: counted with diffusers 0.42.1 from bench/model-configs (README there).
UNET_PARAMS = {"koala-700m": 782_822_724, "koala-1b": 1_161_184_324}
VAE_PARAMS = 83_653_863
TEXT_ENCODER_PARAMS = 123_060_480 + 694_659_840
TEXT2IMAGE_UNET = {
    "koala-lightning-700m": "koala-700m",
    "koala-700m": "koala-700m",
    "koala-700m-llava-cap": "koala-700m",
    "koala-lightning-1b": "koala-1b",
    "koala-1b": "koala-1b",
    "koala-1b-llava-cap": "koala-1b",
}
# Translators and safety checkers: approximate counts from their published architectures
# (Marian transformer-big / -base with an assumed 32k shared vocabulary; ViT-B/16, 2 classes).
AUX_PARAMS = {
    "opus-mt-tc-big-ko-en": 209_000_000,
    "opus-mt-ko-en": 77_000_000,
    "Falconsai/nsfw_image_detection": 85_800_000,
}
AUX_DEFAULT_PARAMS = 209_000_000  # an unknown repo id: assume transformer-big size
TINY_BYTES = 16 * 2**20  # every tiny test model is a few MB; counted as 16 MiB

# -- activation figures -------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """A peak memory figure and where it came from."""

    peak: int  # bytes
    what: str
    source: str  # "published ...", "measured on <GPU>, <date>", or "computed ..."


# Replace a published or computed figure with a measured one (bench/gpu.py --only memory)
# together with the GPU's name and the date; the plan prints the source beside each number.
FIGURES: dict[str, Figure] = {
    "draw-1024": Figure(
        int(8.3e9),
        "KOALA-Lightning-700M, 1024x1024, fp16, batch 1: whole-pipeline peak",
        "published by ETRI (KOALA), RTX 4090, 2024; not yet measured here",
    ),
    "cuda-context": Figure(
        GIB // 2,
        "CUDA context and cuBLAS workspace beside PyTorch's own memory",
        "assumption, typical for PyTorch on recent GPUs; not yet measured here",
    ),
    "aux-activation": Figure(
        GIB // 4,
        "a translation (4 beams, 128 tokens) or a safety check of one batch",
        "assumption, not yet measured",
    ),
}


def draw_activation(batch: int) -> int:
    """Activations of one drawing call of `batch` images at 1024x1024: the published peak less
    the weights it includes, scaled linearly with the batch (an upper bound until measured)."""
    weights = (UNET_PARAMS["koala-700m"] + VAE_PARAMS + TEXT_ENCODER_PARAMS) * FP16
    return batch * (FIGURES["draw-1024"].peak - weights)


def linear_bytes_per_param(quant: str, in_features: int) -> float:
    """Bytes per Linear weight with its scales: fp16; torchao int8 weight-only (one fp16 scale
    per output row); torchao int4 weight-only on CUDA (groups of 128, fp16 scale and zero)."""
    if quant == "int8":
        return 1 + FP16 / in_features
    if quant == "int4":
        return 0.5 + 2 * FP16 / 128
    return FP16


# -- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One resident model."""

    name: str
    weights: int
    activation: int  # its largest single call
    load_extra: int = 0  # on the GPU only while loading
    source: str = ""


@dataclass(frozen=True)
class Config:
    """What a worker would load (from its settings and queues)."""

    draw: bool
    vision: bool
    preset: str = "koala-lightning-700m"
    vlm_preset: str = "ko-llava-13b"
    vlm_quant: str = "none"
    draw_memory: str = "normal"
    max_batch: int = 4
    translator: str = ""  # "" when translation is off
    safety: str = ""  # "" when the safety policy is `allow`

    def setting_changes(self, other: Config) -> list[str]:
        """KOALATALK_* assignments that turn this configuration into `other`."""
        names = ("vlm_quant", "draw_memory", "max_batch")
        return [
            f"KOALATALK_{n.upper()}={getattr(other, n)}"
            for n in names
            if getattr(self, n) != getattr(other, n)
        ]


@dataclass(frozen=True)
class Plan:
    """The plan for one configuration on one GPU."""

    config: Config
    parts: list[Part]
    available: int  # bytes the models may use
    available_source: str
    batch: int  # the drawing batch the plan allows (0: no drawing, or none fits)
    context: int = field(default_factory=lambda: FIGURES["cuda-context"].peak)

    @property
    def weights(self) -> int:
        return sum(p.weights for p in self.parts)

    @property
    def load_peak(self) -> int:
        return self.weights + max((p.load_extra for p in self.parts), default=0) + self.context

    @property
    def need(self) -> int:
        """The worker's peak: weights, the largest call's activations, the CUDA context."""
        serving = self.weights + max((p.activation for p in self.parts), default=0)
        return max(serving + self.context, self.load_peak)

    @property
    def fits(self) -> bool:
        return self.need <= self.available and (self.batch > 0 or not self.config.draw)

    @property
    def names(self) -> str:
        return " and ".join(
            p.name.split(" (")[0]
            for p in self.parts
            if not p.name.startswith(("translator", "safety"))
        )

    def report(self) -> str:
        """The table `python -m workers.cli plan` prints."""
        lines = [
            f"GPU memory: {gib(self.available)} ({self.available_source})",
            f"{'model':<58}{'weights':>10}{'activation':>12}{'load +':>9}",
        ]
        for p in self.parts:
            lines.append(
                f"{p.name:<58}{gib(p.weights):>10}{gib(p.activation):>12}{gib(p.load_extra):>9}"
            )
            lines.append(f"    {p.source}")
        lines.append(f"{'CUDA context':<58}{gib(self.context):>10}")
        lines.append(f"    {FIGURES['cuda-context'].source}")
        c = self.config
        if c.draw:
            capped = (
                f" (MAX_BATCH {c.max_batch} capped by the plan)"
                if (0 < self.batch < c.max_batch)
                else ""
            )
            lines.append(f"drawing batch: {self.batch}{capped}")
        lines.append(
            f"load peak: {gib(self.load_peak)}; worker peak: {gib(self.need)} of "
            f"{gib(self.available)}: {'fits' if self.fits else 'does NOT fit'}"
        )
        lines.append(
            "activation figures: "
            + "; ".join(f"{f.what}: {f.source}" for k, f in FIGURES.items() if k != "cuda-context")
        )
        return "\n".join(lines)

    def refusal(self, suggestion: Plan | None) -> str:
        """One sentence for an unfit configuration, with the setting that would fit."""
        way = (
            "; no setting fits this GPU: serve the queues from separate workers or GPUs"
            if suggestion is None
            else f"; set {' '.join(self.config.setting_changes(suggestion.config))} "
            f"(needs {gib(suggestion.need)})"
        )
        verb = "need" if " and " in self.names else "needs"
        return (
            f"{self.names} {verb} {gib(self.need)} of GPU memory but only "
            f"{gib(self.available)} is free ({self.available_source}){way}."
        )


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _draw_parts(c: Config, batch: int) -> list[Part]:
    if c.preset == "tiny":
        return [Part("text2image tiny", TINY_BYTES, TINY_BYTES, source="tiny test model")]
    unet = UNET_PARAMS[TEXT2IMAGE_UNET[c.preset]] * FP16
    others = (VAE_PARAMS + TEXT_ENCODER_PARAMS) * FP16
    source = f"weights: bench/model-configs; activation: {FIGURES['draw-1024'].source}"
    if c.draw_memory == "offload":
        # One component on the GPU at a time: the largest of UNet, text encoder 2, VAE.
        resident = max(unet, 694_659_840 * FP16, VAE_PARAMS * FP16)
        return [
            Part(
                f"text2image {c.preset} (fp16, offload, batch {batch})",
                resident,
                draw_activation(batch),
                source=source + "; offload: largest part resident",
            )
        ]
    # `low` (VAE tiling and slicing) saves memory in the decode; until measured, the plan counts
    # the published peak unchanged.
    return [
        Part(
            f"text2image {c.preset} (fp16, {c.draw_memory}, batch {batch})",
            unet + others,
            draw_activation(batch),
            source=source,
        )
    ]


def _aux_parts(c: Config) -> list[Part]:
    parts = []
    aux = FIGURES["aux-activation"].peak
    for kind, name in (("translator", c.translator), ("safety checker", c.safety)):
        if not name:
            continue
        tiny = name == "tiny" or name.startswith("koalatalk/")
        weights = TINY_BYTES if tiny else AUX_PARAMS.get(name, AUX_DEFAULT_PARAMS) * FP16
        parts.append(
            Part(
                f"{kind} {name} (fp16)",
                weights,
                aux,
                source="tiny test model" if tiny else "approximate parameter count",
            )
        )
    return parts


def _vision_part(c: Config) -> Part:
    if c.vlm_preset.startswith("tiny"):
        return Part(f"vision {c.vlm_preset}", TINY_BYTES, TINY_BYTES, source="tiny test model")
    m = VLMS[c.vlm_preset]
    per = linear_bytes_per_param(c.vlm_quant, m.largest_linear_in)
    weights = int(m.linear * per) + (m.kept + m.vision) * FP16
    # Quantized while loading: one decoder layer passes through the GPU in fp16 at a time.
    extra = m.layer * FP16 if c.vlm_quant != "none" else 0
    quant = "fp16" if c.vlm_quant == "none" else f"{c.vlm_quant} language model"
    return Part(
        f"vision {c.vlm_preset} ({quant})",
        weights,
        m.kv_bytes,
        extra,
        f"{m.source}; activation: computed, fp16 KV cache at full context",
    )


def plan(c: Config, available: int, available_source: str) -> Plan:
    """The plan for `c`: the largest drawing batch up to MAX_BATCH that fits, else batch 1."""
    fixed = _aux_parts(c) if c.draw else []
    if c.vision:
        fixed.append(_vision_part(c))
    if not c.draw:
        return Plan(c, fixed, available, available_source, 0)
    best: Plan | None = None
    for batch in range(max(1, c.max_batch), 0, -1):
        best = Plan(c, _draw_parts(c, batch) + fixed, available, available_source, batch)
        if best.fits:
            return best
    assert best is not None
    return Plan(c, best.parts, available, available_source, 0)


def suggest(c: Config, available: int, available_source: str) -> Plan | None:
    """The least change of settings that fits: quantize the VLM first, then offload drawing."""
    quants = [q for q in ("none", "int8", "int4") if c.vision] or [c.vlm_quant]
    start = quants.index(c.vlm_quant) if c.vlm_quant in quants else 0
    modes = ["normal", "offload"]
    for mode in modes[modes.index(c.draw_memory) if c.draw_memory in modes else 0 :]:
        for quant in quants[start:]:
            candidate = plan(
                replace(c, vlm_quant=quant, draw_memory=mode), available, available_source
            )
            if candidate.fits:
                return candidate
    return None


def visible_gpu(device: str = "cuda") -> tuple[int, str] | None:
    """Free bytes on the worker's GPU as the driver reports them; None without a GPU."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(torch.device(device))
    name = torch.cuda.get_device_name(torch.device(device))
    return int(free), f"free on {name}, {gib(total)} in all"


# -- docs/operations.md's table "what runs on which GPU" ----------------------------------------

_T, _S = "opus-mt-tc-big-ko-en", "Falconsai/nsfw_image_detection"
TABLE_ROWS: list[tuple[str, Config]] = [
    ("drawing (KOALA-Lightning-700M)", Config(draw=True, vision=False, translator=_T, safety=_S)),
    (
        "drawing, `DRAW_MEMORY=offload`",
        Config(draw=True, vision=False, translator=_T, safety=_S, draw_memory="offload"),
    ),
    ("Ko-LLaVA-13b fp16", Config(draw=False, vision=True)),
    ("Ko-LLaVA-13b `VLM_QUANT=int8`", Config(draw=False, vision=True, vlm_quant="int8")),
    ("Ko-LLaVA-13b `VLM_QUANT=int4`", Config(draw=False, vision=True, vlm_quant="int4")),
    ("both, VLM fp16", Config(draw=True, vision=True, translator=_T, safety=_S)),
    ("both, VLM int8", Config(draw=True, vision=True, translator=_T, safety=_S, vlm_quant="int8")),
    ("both, VLM int4", Config(draw=True, vision=True, translator=_T, safety=_S, vlm_quant="int4")),
    (
        "both, VLM int4, drawing offload",
        Config(
            draw=True,
            vision=True,
            translator=_T,
            safety=_S,
            vlm_quant="int4",
            draw_memory="offload",
        ),
    ),
]
TABLE_CARDS_GIB = (8, 12, 16, 24, 48, 80)


def gpu_table() -> str:
    """The markdown table of docs/operations.md, every cell computed by this plan."""
    lines = [
        "| worker (`python -m workers ...`) | peak at batch 1 | "
        + " | ".join(f"{c} GiB card" for c in TABLE_CARDS_GIB)
        + " |",
        "| --- | --- | " + " | ".join("---" for _ in TABLE_CARDS_GIB) + " |",
    ]
    for name, c in TABLE_ROWS:
        one = plan(replace(c, max_batch=1), 1000 * GIB, "table")
        cells = []
        for size in TABLE_CARDS_GIB:
            found = plan(c, size * GIB, "table")
            cells.append(
                ("fits" + (f", batch {found.batch}" if c.draw else "")) if found.fits else "no"
            )
        lines.append(f"| {name} | {one.need / GIB:.1f} GiB | " + " | ".join(cells) + " |")
    return "\n".join(lines)
