"""Ko-LLaVA (ETRI's LLaVA v0 checkpoint) loaded with plain transformers parts, no LLaVA code.

The checkpoint is a `LlavaLlamaForCausalLM` from the LLaVA v0 code base: Llama weights plus one
linear projector (`model.mm_projector`), with the vision tower (a CLIP ViT-L/14 inside AltCLIP-m9)
kept in its own repository. We rebuild it from three transformers pieces: `LlamaForCausalLM`, a
`CLIPVisionModel` and an `nn.Linear`, and write the v0 prompt format by hand.

Rule for user text (questions and earlier answers): it is encoded with the base SentencePiece
vocabulary only, so typed markup such as `<im_patch>`, `<im_start>`, `<im_end>`, `<image>`,
`</s>` or `<s>` stays plain text and can never become a template token id; and every run of three
or more `#` becomes fullwidth `＃`, so a typed `###` cannot open or close a turn.
"""

from __future__ import annotations

import json
import logging
import re
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from models.common import dtype_for, resolve_device, unavailable, unused_token_ids
from models.presets import VisionLanguagePreset

log = logging.getLogger(__name__)

BOS_ID = 2  # special_tokens_map.json makes `</s>` the BOS; v0 training put it first
EOS_ID = 2
PAD_ID = 0
IM_PATCH_ID = 32000
IM_START_ID = 32001
IM_END_ID = 32002
STOP = "###"
DEFAULT_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

LLM_FILES = [
    "config.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "pytorch_model.bin.index.json",
]
VISION_FILES = ["config.json", "preprocessor_config.json", "pytorch_model.bin"]
# Keys of the LLaVA v0 config that LlamaConfig must not see (or would misread).
_NOT_LLAMA = re.compile(r"^(mm_|use_mm_proj|tune_|freeze_|sep_image_)")
_NOT_LLAMA_KEYS = {"model_type", "architectures", "torch_dtype", "_name_or_path"}
_HASHES = re.compile(r"#{3,}")
_ADDED_TOKENS = ("<im_patch>", "<im_start>", "<im_end>")


class WeightMismatch(RuntimeError):
    """A checkpoint's tensors do not match the model built for it; the message lists them."""


# 1. Prompt


def neutralise(text: str) -> str:
    """Make user text unable to end a v0 turn: runs of three or more `#` become fullwidth `＃`."""
    return _HASHES.sub(lambda match: "＃" * len(match.group()), text)


_plain_encoders: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _plain_encoder(tokenizer: Any) -> Any:
    """A copy of the tokenizer's backend with no added vocabulary and no special-token matching."""
    encoder = _plain_encoders.get(tokenizer)
    if encoder is None:
        from tokenizers import Tokenizer

        spec = json.loads(tokenizer.backend_tokenizer.to_str())
        spec["added_tokens"] = []
        spec["post_processor"] = None
        encoder = Tokenizer.from_str(json.dumps(spec))
        encoder.encode_special_tokens = True
        _plain_encoders[tokenizer] = encoder
    return encoder


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` in the base vocabulary: no BOS, and no added or special token matched."""
    ids = list(_plain_encoder(tokenizer).encode(text, add_special_tokens=False).ids)
    leaked = [i for i in ids if i >= IM_PATCH_ID]
    if leaked:  # cannot happen with the added vocabulary removed; guard the template anyway
        raise ValueError(f"text encoded to template token ids {leaked}")
    return ids


def build_input_ids(
    tokenizer: Any,
    history: Sequence[tuple[str, str]],
    question: str,
    system: str = DEFAULT_SYSTEM,
    *,
    max_new_tokens: int = 0,
    context_length: int = 2048,
    num_patches: int = 256,
) -> list[int]:
    """The v0 prompt ids: BOS, system and first question, the image, then the later turns.

    `[2] + enc("{system}\\n\\n### Human: {q1}") + [32001] + [32000]*256 + [32002]
    + enc("### Assistant: {a1}\\n### Human: {q2}\\n### Assistant:")`. The oldest turns are
    dropped until the prompt plus `max_new_tokens` fits `context_length`; the image always stays.
    """
    turns = [(neutralise(q), neutralise(a)) for q, a in history]
    current = neutralise(question)
    image = [IM_START_ID, *[IM_PATCH_ID] * num_patches, IM_END_ID]
    while True:
        questions = [q for q, _ in turns] + [current]
        head = encode_text(tokenizer, f"{system}\n\n### Human: {questions[0]}")
        tail_text = "".join(
            f"### Assistant: {answer}\n### Human: {later}\n"
            for (_, answer), later in zip(turns, questions[1:], strict=True)
        )
        tail = encode_text(tokenizer, tail_text + "### Assistant:")
        room = context_length - max_new_tokens - len(image) - len(tail) - 1
        if len(head) <= room:
            return [BOS_ID, *head, *image, *tail]
        if turns:
            turns = turns[1:]
            continue
        # A single question longer than the context: keep its start, never the image.
        fixed = len(encode_text(tokenizer, f"{system}\n\n### Human:"))
        if room <= fixed:
            raise ValueError(
                f"max_new_tokens={max_new_tokens} leaves no room for a question in "
                f"{context_length} tokens"
            )
        return [BOS_ID, *head[:room], *image, *tail]


# 2. Files


def fetch(repo_id: str, files: Sequence[str], preset: str) -> Path:
    """Download (or find in the cache, offline) only `files` of `repo_id`; their folder."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=list(files)))
    except Exception as exc:  # any hub failure means the same thing to the operator
        raise unavailable(preset, repo_id, exc) from exc
    return folder


def _require(folder: Path, names: Sequence[str], preset: str, repo_id: str) -> None:
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise unavailable(preset, repo_id, FileNotFoundError(f"missing {', '.join(missing)}"))


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:  # mmap keeps a 10 GB shard out of RAM; older (non-zip) pickles cannot be mapped
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        return torch.load(path, map_location="cpu", weights_only=True)


@contextmanager
def _empty_modules(device: str, dtype: torch.dtype) -> Iterator[None]:
    """Build modules straight on `device` in `dtype`, skipping random init (weights follow)."""
    from transformers.initialization import no_init_weights

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), no_init_weights():
            yield
    finally:
        torch.set_default_dtype(previous)


def _mismatch(what: str, missing: Sequence[str], unexpected: Sequence[str]) -> WeightMismatch:
    def listed(keys: Sequence[str]) -> str:
        shown = ", ".join(sorted(keys)[:20])
        return shown + (f" (+{len(keys) - 20} more)" if len(keys) > 20 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {listed(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {listed(unexpected)}")
    return WeightMismatch(f"{what}: " + "; ".join(parts))


# 3. Vision tower


def _vision_key(legacy: str) -> str | None:
    """transformers 5 CLIPVisionModel name of an AltCLIP checkpoint key, None for other parts."""
    if not legacy.startswith("vision_model."):
        return None
    return legacy.removeprefix("vision_model.")


def image_processor_from(folder: Path, image_size: int) -> Any:
    """CLIP preprocessing (shortest edge, centre crop, CLIP mean/std), from the repo when given."""
    # The PIL backend: LLaVA v0 preprocessed with PIL, and it needs no torchvision.
    from transformers import CLIPImageProcessorPil

    values: dict[str, Any] = {}
    path = folder / "preprocessor_config.json"
    if path.is_file():
        raw = json.loads(path.read_text())
        keep = (
            "do_resize",
            "resample",
            "do_center_crop",
            "do_rescale",
            "rescale_factor",
            "do_normalize",
            "image_mean",
            "image_std",
            "do_convert_rgb",
            "size",
            "crop_size",
        )
        values = {key: raw[key] for key in keep if key in raw}
    size = values.get("size", image_size)
    if isinstance(size, int):
        values["size"] = {"shortest_edge": size}
    crop = values.get("crop_size", image_size)
    if isinstance(crop, int):
        values["crop_size"] = {"height": crop, "width": crop}
    processor = CLIPImageProcessorPil(**values)
    if processor.crop_size["height"] != image_size:
        raise ValueError(
            f"preprocessor crops {processor.crop_size}, vision tower wants {image_size}"
        )
    return processor


def load_vision_tower(
    repo_id: str, device: str = "cpu", dtype: torch.dtype | None = None, preset: str = ""
) -> tuple[Any, Any]:
    """AltCLIP's CLIP ViT as a transformers CLIPVisionModel, and its image processor."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    dtype = dtype or dtype_for(device)
    folder = fetch(repo_id, VISION_FILES, preset or repo_id)
    _require(folder, ["config.json", "pytorch_model.bin"], preset or repo_id, repo_id)
    raw = json.loads((folder / "config.json").read_text()).get("vision_config") or {}
    fields = (
        "hidden_size",
        "intermediate_size",
        "projection_dim",
        "num_hidden_layers",
        "num_attention_heads",
        "num_channels",
        "image_size",
        "patch_size",
        "hidden_act",
        "layer_norm_eps",
        "attention_dropout",
        "initializer_range",
        "initializer_factor",
    )
    config = CLIPVisionConfig(**{key: raw[key] for key in fields if key in raw})
    with _empty_modules(device, dtype):
        tower = CLIPVisionModel(config)
    params = dict(tower.state_dict())
    loaded: set[str] = set()
    unexpected: list[str] = []
    state = _load_tensors(folder / "pytorch_model.bin")
    with torch.no_grad():
        for key, tensor in state.items():
            name = _vision_key(key)
            if name is None or name == "embeddings.position_ids":  # other towers; old buffer
                continue
            if name not in params or params[name].shape != tensor.shape:
                unexpected.append(key)
                continue
            params[name].copy_(tensor)
            loaded.add(name)
    del state
    missing = [f"vision_model.{name}" for name in params if name not in loaded]
    if missing or unexpected:
        raise _mismatch(f"vision tower {repo_id}", missing, unexpected)
    image_size = config.image_size
    if not isinstance(image_size, int):  # CLIP allows (height, width); AltCLIP's tower is square
        raise ValueError(f"vision tower {repo_id}: image_size {image_size!r} is not one number")
    return tower.eval(), image_processor_from(folder, image_size)


# 4. Language model


def llama_config(raw: dict[str, Any]) -> Any:
    """A LlamaConfig from Ko-LLaVA's config.json, without the LLaVA keys and with working ids."""
    from transformers import LlamaConfig

    kept = {k: v for k, v in raw.items() if not _NOT_LLAMA.match(k) and k not in _NOT_LLAMA_KEYS}
    # The shipped ids (bos 0, eos 1, pad -1) are wrong for this vocabulary.
    kept.update(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, use_cache=True)
    return LlamaConfig(**kept)


def _load_language_model(
    folder: Path,
    config: Any,
    mm_hidden: int,
    device: str,
    dtype: torch.dtype,
    repo_id: str,
    quant: str = "none",
) -> tuple[Any, nn.Linear]:
    """The LLaMA and the projector. Quantized (`quant` int8 or int4), the LLaMA is filled on the
    CPU and moves to `device` layer by layer, each quantized on arrival (models/quantize.py);
    the projector stays in `dtype` either way."""
    from transformers import LlamaForCausalLM

    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    with _empty_modules(device if quant == "none" else "cpu", dtype):
        model = LlamaForCausalLM(config)
    with _empty_modules(device, dtype):
        projector = nn.Linear(mm_hidden, config.hidden_size)
    params = dict(model.state_dict())
    params.update({f"model.mm_projector.{k}": v for k, v in projector.state_dict().items()})
    loaded: set[str] = set()
    unexpected: list[str] = []
    with torch.no_grad():
        for shard in sorted(set(index["weight_map"].values())):
            state = _load_tensors(folder / shard)
            for key, tensor in state.items():
                if key.endswith("rotary_emb.inv_freq"):  # a buffer old transformers saved
                    continue
                if key not in params or params[key].shape != tensor.shape:
                    unexpected.append(key)
                    continue
                params[key].copy_(tensor)
                loaded.add(key)
            del state
    missing = [key for key in params if key not in loaded]
    if missing or unexpected:
        raise _mismatch(f"language model {repo_id}", missing, unexpected)
    if quant != "none":
        from models.quantize import to_device_quantized

        to_device_quantized(model, device, quant, dtype)
    return model.eval(), projector.eval()


def strip_stop(text: str) -> str:
    """The answer part of generated text: everything before the first `###`, trimmed."""
    return text.split(STOP, 1)[0].strip()


def suppressed_ids(vocab: dict[str, int], vocab_size: int) -> list[int]:
    """Ids generation must never write: the image template's (32000 up to the model's vocabulary
    size) and the vocabulary's reserved `<unused…>` pieces."""
    return sorted({*range(IM_PATCH_ID, vocab_size), *unused_token_ids(vocab)})


class _StopOnText:
    """Stop generation once the decoded tail holds the stop string."""

    def __init__(self, tokenizer: Any, stop: str) -> None:
        self.tokenizer = tokenizer
        self.stop = stop

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        done = [self.stop in self.tokenizer.decode(row[-8:]) for row in input_ids.tolist()]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class KoLlava:
    """Ko-LLaVA answering questions about one photo (several are tiled into one)."""

    def __init__(
        self,
        preset: VisionLanguagePreset,
        device: str = "auto",
        system: str = DEFAULT_SYSTEM,
        quant: str = "none",
    ) -> None:
        from transformers import LlamaTokenizer

        started = time.monotonic()
        self.preset = preset
        self.system = system
        self.device = resolve_device(device)
        self.dtype = dtype_for(self.device)
        folder = fetch(preset.repo_id, LLM_FILES, preset.name)
        _require(
            folder,
            ["config.json", "tokenizer.model", "pytorch_model.bin.index.json"],
            preset.name,
            preset.repo_id,
        )
        shards = set(
            json.loads((folder / "pytorch_model.bin.index.json").read_text())["weight_map"].values()
        )
        folder = fetch(preset.repo_id, [*LLM_FILES, *sorted(shards)], preset.name)
        _require(folder, sorted(shards), preset.name, preset.repo_id)

        raw = json.loads((folder / "config.json").read_text())
        self.tokenizer = LlamaTokenizer.from_pretrained(folder)
        ids = self.tokenizer.convert_tokens_to_ids(list(_ADDED_TOKENS))
        if ids != [IM_PATCH_ID, IM_START_ID, IM_END_ID] or self.tokenizer.bos_token_id != BOS_ID:
            raise WeightMismatch(
                f"{preset.repo_id}: image tokens {ids}, BOS "
                f"{self.tokenizer.bos_token_id}; expected 32000-32002 and 2"
            )
        self.config = llama_config(raw)
        self.select_layer = int(raw.get("mm_vision_select_layer", -2))
        self.vision, self.image_processor = load_vision_tower(
            preset.vision_repo_id or raw["mm_vision_tower"], self.device, self.dtype, preset.name
        )
        vision_config = self.vision.config
        if vision_config.hidden_size != raw.get("mm_hidden_size", vision_config.hidden_size):
            raise WeightMismatch(
                f"vision width {vision_config.hidden_size} != mm_hidden_size "
                f"{raw['mm_hidden_size']}"
            )
        self.num_patches = (vision_config.image_size // vision_config.patch_size) ** 2
        self.quant = quant  # KOALATALK_VLM_QUANT: the LLaMA's weights; tower and projector fp16
        self.model, self.projector = _load_language_model(
            folder,
            self.config,
            vision_config.hidden_size,
            self.device,
            self.dtype,
            preset.repo_id,
            quant,
        )
        self.suppressed = suppressed_ids(self.tokenizer.get_vocab(), self.config.vocab_size)
        self.load_seconds = time.monotonic() - started
        log.info("loaded %s in %.1f s on %s", preset.name, self.load_seconds, self.device)

    def input_ids(
        self, history: Sequence[tuple[str, str]], question: str, max_new_tokens: int
    ) -> list[int]:
        """The prompt ids for one answer (see build_input_ids)."""
        return build_input_ids(
            self.tokenizer,
            history,
            question,
            self.system,
            max_new_tokens=max_new_tokens,
            context_length=self.config.max_position_embeddings,
            num_patches=self.num_patches,
        )

    def prompt_embeds(self, image: Image.Image, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings of `ids` with the <im_patch> ones replaced by the image's features."""
        pixels = self.image_processor(images=image.convert("RGB"), return_tensors="pt")
        pixels = pixels["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            hidden = self.vision(pixel_values=pixels, output_hidden_states=True).hidden_states
            features = self.projector(hidden[self.select_layer][:, 1:])
            embeds = self.model.get_input_embeddings()(ids)
            mask = (ids == IM_PATCH_ID).unsqueeze(-1)
            return embeds.masked_scatter(mask, features.to(embeds.dtype))

    def answer(
        self,
        images: list[Image.Image],
        history: list[tuple[str, str]],
        question: str,
        max_new_tokens: int | None = None,
        video: bool = False,
    ) -> str:
        """Answer `question` about the photo (or the tiled frames when `video`)."""
        ids = self.generate_ids(images, history, question, max_new_tokens, video)
        return strip_stop(self.tokenizer.decode(ids, skip_special_tokens=True))

    def generate_ids(
        self,
        images: list[Image.Image],
        history: list[tuple[str, str]],
        question: str,
        max_new_tokens: int | None = None,
        video: bool = False,
    ) -> list[int]:
        """The token ids Ko-LLaVA writes for its answer (see `answer`), the stop included.

        Template tokens (`<im_patch>`, `<im_start>`, `<im_end>`) and reserved pieces are
        suppressed in generation, so none is written and none uses up `max_new_tokens`.
        """
        from transformers import GenerationConfig, StoppingCriteriaList

        from models.vision_language import tile_frames

        # 1. Check inputs
        if not images:
            raise ValueError("Ko-LLaVA needs an image")
        limit = max_new_tokens or self.preset.max_new_tokens
        # 2. One image: v0 saw exactly one per conversation
        image = images[0] if len(images) == 1 and not video else tile_frames(images)
        ids = torch.tensor([self.input_ids(history, question, limit)], device=self.device)
        # 3. Image features replace the <im_patch> embeddings
        embeds = self.prompt_embeds(image, ids)
        # 4. Greedy generation until `###` or EOS
        config = GenerationConfig(
            max_new_tokens=limit,
            do_sample=False,
            use_cache=True,
            bos_token_id=BOS_ID,
            eos_token_id=EOS_ID,
            pad_token_id=PAD_ID,
            suppress_tokens=self.suppressed,
        )
        with torch.inference_mode():
            out = self.model.generate(
                inputs_embeds=embeds,
                attention_mask=torch.ones_like(ids),
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([_StopOnText(self.tokenizer, STOP)]),
            )
        return [int(i) for i in out[0].tolist()]
