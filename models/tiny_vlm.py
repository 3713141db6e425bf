"""Tiny vision-language checkpoints in the real repositories' layouts, for tests and development.

`build_tiny_kollava` writes what etri-vilab/Ko-LLaVA-13b ships (LLaVA v0 config, SentencePiece
tokenizer with the three image tokens at 32000-32002, fp32 `.bin` shards with an index, wrong
generation ids, training leftovers); `build_tiny_altclip` what BAAI/AltCLIP-m9 ships (an
AltCLIPModel config and one `pytorch_model.bin` with legacy `vision_model.*` keys);
`build_tiny_native` a transformers-native Llava for the native backend. Sizes are tiny, but the
image is still 224 px in 14 px patches, so Ko-LLaVA's prompt has its real 256 patch tokens.
"""

from __future__ import annotations

import functools
import io
import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from models import hfcache
from models.presets import VISION_LANGUAGE

SEED = 0
TINY_VISION: dict[str, Any] = {  # a CLIP vision config, as in config.json
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 16,
    "hidden_act": "quick_gelu",
}
CORPUS = [
    "A chat between a curious human and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "### Human: What is in this picture?",
    "### Assistant: A koala is sleeping in a eucalyptus tree.",
    "Describe the image in detail. What colour is the car? How many people are there?",
    "There are two people walking a small dog in the park near the river.",
    "이 사진에는 무엇이 있나요? 사진 속 동물은 무엇인가요?",
    "나무 위에 코알라가 앉아 있습니다. 코알라는 잠을 자고 있어요.",
    "하늘은 파랗고 구름이 조금 있습니다. 바다 옆에 하얀 집이 보입니다.",
    "고양이 한 마리가 창가에 누워 있어요. 빨간 자동차가 길가에 주차되어 있습니다.",
    "이 그림을 자세히 설명해 주세요. 사람이 몇 명 있나요? 무슨 색인가요?",
    "그럼 색깔은 무엇인가요? 강아지와 아이들이 공원에서 놀고 있습니다.",
]
# Bumped whenever a builder here changes what it writes, so older cached copies are rebuilt
# (2: the tiny Ko-LLaVA's vocabulary pads with word pieces, not `<unusedN>`).
TINY_VLM_BUILD = "2"
KOLLAVA_ADDED = {"<im_patch>": 32000, "<im_start>": 32001, "<im_end>": 32002}
LLAMA_BASE_VOCAB = 32000


def _token(content: str) -> dict[str, Any]:
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


# Plain Hangul syllables for word pieces: common initial consonants, vowels and final consonants
# (their indices in Unicode's syllable composition), so the pieces look like Korean words.
_ONSETS = (0, 2, 3, 5, 6, 7, 9, 11, 12, 14, 16, 17, 18)  # ㄱ ㄴ ㄷ ㄹ ㅁ ㅂ ㅅ ㅇ ㅈ ㅊ ㅌ ㅍ ㅎ
_VOWELS = (0, 1, 4, 5, 8, 13, 18, 20)  # ㅏ ㅐ ㅓ ㅔ ㅗ ㅜ ㅡ ㅣ
_FINALS = (0, 0, 4, 8, 16, 21)  # none (twice as likely), ㄴ ㄹ ㅁ ㅇ


def word_pieces(count: int, taken: set[str]) -> list[str]:
    """`count` distinct two-syllable Hangul word pieces (`▁하늘`), none using a char in `taken`.

    They pad the tiny vocabulary so its random answers read as words. Each is `▁` and two
    syllables that no trained piece contains, so no two pieces of the vocabulary join into one:
    encoding never produces them, and text encodes exactly as without them.
    """
    syllables = sorted(
        {
            chr(0xAC00 + (onset * 21 + vowel) * 28 + final)
            for onset in _ONSETS
            for vowel in _VOWELS
            for final in _FINALS
        }
        - taken
    )
    size = len(syllables)
    if count > size * size:
        raise ValueError(f"only {size * size} word pieces to pad with, {count} wanted")
    pairs = random.Random(SEED).sample(range(size * size), count)
    return ["\u2581" + syllables[pair // size] + syllables[pair % size] for pair in pairs]


def train_sentencepiece(pad_to: int | None = None) -> bytes:
    """A small BPE SentencePiece model with LLaMA's settings, padded with word pieces."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 10),
        model_writer=buffer,
        model_type="bpe",
        vocab_size=480,
        hard_vocab_limit=False,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    # protoc-generated: ModelProto is made at import time, so mypy cannot see it.
    proto = model_pb2.ModelProto()  # type: ignore[attr-defined]
    proto.ParseFromString(buffer.getvalue())
    # LLaMA's tokenizer has 32000 pieces, so the added tokens get ids 32000-32002. Word pieces
    # fill the gap, scored below every trained piece; no encoding can reach them (see
    # word_pieces), but the random model writes them, and they read as words.
    taken = {char for piece in proto.pieces for char in piece.piece}
    lowest = min(piece.score for piece in proto.pieces)
    padding = word_pieces(max(0, (pad_to or 0) - len(proto.pieces)), taken)
    for number, text in enumerate(padding, start=1):
        piece = proto.pieces.add()
        piece.piece = text
        piece.score = lowest - number
        piece.type = model_pb2.ModelProto.SentencePiece.NORMAL  # type: ignore[attr-defined]
    return proto.SerializeToString()


# Tiny Ko-LLaVA shapes by repo id. The `-128` one suits the quantizers' group sizes (its widths
# are multiples of 32 and 128) and wide embeddings and output head (LM_HEAD_STD), so its next-token
# choices are clear rather than near-ties: quantization tests compare greedy tokens with fp32's.
TINY_KOLLAVA_SHAPES: dict[str, dict[str, Any]] = {
    "koalatalk/tiny-ko-llava": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "initializer_range": 0.02,
    },
    "koalatalk/tiny-ko-llava-128": {
        "hidden_size": 128,
        "intermediate_size": 256,
        "initializer_range": 0.03,
    },
}
LM_HEAD_STD = {"koalatalk/tiny-ko-llava-128": 1.0}


def build_tiny_kollava(
    folder: Path,
    mm_hidden_size: int = TINY_VISION["hidden_size"],
    repo_id: str = "koalatalk/tiny-ko-llava",
) -> Path:
    """Write a tiny Ko-LLaVA checkpoint in the layout of etri-vilab/Ko-LLaVA-13b."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {  # config.json as the repository ships it
        "_name_or_path": "etri-vilab/Ko-LLaVA-13b",
        "architectures": ["LlavaLlamaForCausalLM"],
        "bos_token_id": 0,
        "eos_token_id": 1,
        "freeze_mm_mlp_adapter": False,
        "hidden_act": "silu",
        **TINY_KOLLAVA_SHAPES[repo_id],
        "max_position_embeddings": 2048,
        "max_sequence_length": 2048,
        "mm_hidden_size": mm_hidden_size,
        "mm_use_im_start_end": True,
        "mm_vision_select_layer": -2,
        "mm_vision_tower": "BAAI/AltCLIP-m9",
        "model_type": "llava",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "pad_token_id": -1,
        "rms_norm_eps": 1e-06,
        "sep_image_conv_front": False,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.28.0.dev0",
        "tune_mm_mlp_adapter": False,
        "use_cache": False,
        "use_mm_proj": True,
        "vocab_size": 32003,
    }
    _write_json(folder / "config.json", config)
    _write_json(
        folder / "generation_config.json",
        {
            "_from_model_config": True,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 0,
            "transformers_version": "4.28.0.dev0",
        },
    )
    (folder / "tokenizer.model").write_bytes(train_sentencepiece(pad_to=LLAMA_BASE_VOCAB))
    _write_json(folder / "added_tokens.json", KOLLAVA_ADDED)
    _write_json(
        folder / "special_tokens_map.json",
        {"bos_token": "</s>", "eos_token": "</s>", "pad_token": "<unk>", "unk_token": "<unk>"},
    )
    _write_json(
        folder / "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": _token("<s>"),
            "clean_up_tokenization_spaces": False,
            "eos_token": _token("</s>"),
            "model_max_length": 2048,
            "pad_token": None,
            "padding_side": "right",
            "sp_model_kwargs": {},
            "tokenizer_class": "LlamaTokenizer",
            "unk_token": _token("<unk>"),
        },
    )

    torch.manual_seed(SEED)
    keep = {
        k: v
        for k, v in config.items()
        if not k.startswith(("mm_", "tune_", "freeze_", "sep_", "use_mm"))
        and k not in ("architectures", "model_type", "torch_dtype", "_name_or_path")
    }
    keep["pad_token_id"] = 0
    llama = LlamaForCausalLM(LlamaConfig(**keep))
    state = {k: v.detach().clone().contiguous() for k, v in llama.state_dict().items()}
    if repo_id in LM_HEAD_STD:  # wide token embeddings and output head
        for name in ("lm_head.weight", "model.embed_tokens.weight"):
            state[name] = torch.randn_like(state[name]) * LM_HEAD_STD[repo_id]
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    for layer in range(config["num_hidden_layers"]):  # transformers 4.28 saved this buffer
        state[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
    projector = torch.nn.Linear(mm_hidden_size, config["hidden_size"])
    state["model.mm_projector.weight"] = projector.weight.detach().clone()
    state["model.mm_projector.bias"] = projector.bias.detach().clone()

    names = list(state)
    shards = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map: dict[str, str] = {}
    total = 0
    for number, keys in enumerate(shards, start=1):
        filename = f"pytorch_model-{number:05d}-of-{len(shards):05d}.bin"
        torch.save({key: state[key] for key in keys}, folder / filename)
        for key in keys:
            weight_map[key] = filename
            total += state[key].numel() * state[key].element_size()
    _write_json(
        folder / "pytorch_model.bin.index.json",
        {"metadata": {"total_size": total}, "weight_map": weight_map},
    )
    # Training leftovers the real repository also holds; inference must not need them.
    torch.save({"state": {}, "param_groups": []}, folder / "optimizer.pt")
    torch.save({"python": 0, "numpy": 0, "cpu": torch.get_rng_state()}, folder / "rng_state_0.pth")
    _write_json(folder / "trainer_state.json", {"global_step": 0, "log_history": []})
    return folder


def build_tiny_altclip(folder: Path) -> Path:
    """Write a tiny AltCLIP checkpoint in the layout of BAAI/AltCLIP-m9 (one legacy .bin)."""
    import torch
    from transformers import AltCLIPConfig, AltCLIPModel

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    config = AltCLIPConfig(
        text_config={
            "vocab_size": 120,
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "project_dim": 16,
            "max_position_embeddings": 40,
        },
        vision_config=TINY_VISION,
        projection_dim=16,
    )
    config.architectures = ["AltCLIPModel"]
    config.save_pretrained(folder)
    state = {
        k: v.detach().clone().contiguous() for k, v in AltCLIPModel(config).state_dict().items()
    }
    # Old transformers kept position ids as saved buffers, under both towers.
    patches = (TINY_VISION["image_size"] // TINY_VISION["patch_size"]) ** 2
    state["vision_model.embeddings.position_ids"] = torch.arange(patches + 1).unsqueeze(0)
    state["text_model.roberta.embeddings.position_ids"] = torch.arange(40).unsqueeze(0)
    torch.save(state, folder / "pytorch_model.bin")
    _write_json(
        folder / "preprocessor_config.json",
        {
            "crop_size": 224,
            "do_center_crop": True,
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3,
            "size": 224,
        },
    )
    return folder


NATIVE_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>{{ '\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}"
    "{% if message['role'] == 'user' %}{{ '\n' }}{% else %}{{ eos_token }}{{ '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tiny_native(folder: Path) -> Path:
    """Write a tiny transformers-native Llava (model and processor) with save_pretrained."""
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlamaTokenizer,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        (base / "tokenizer.model").write_bytes(train_sentencepiece())
        _write_json(base / "tokenizer_config.json", {"tokenizer_class": "LlamaTokenizer"})
        tokenizer = LlamaTokenizer.from_pretrained(base)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    size = 28  # 2 x 2 patches keep the native test fast
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        ),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        chat_template=NATIVE_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(folder)
    torch.manual_seed(SEED)
    vision = CLIPVisionConfig(**{**TINY_VISION, "image_size": size})
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    return folder


QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}{{ '\n' }}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\n' }}{% endif %}"
)


def build_tiny_qwen2_vl(folder: Path) -> Path:
    """Write a tiny Qwen2-VL (video-capable native model); its video processor needs torchvision."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        Qwen2Tokenizer,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(
        CORPUS * 5,
        trainers.BpeTrainer(
            vocab_size=400,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in trained["merges"]]
    # transformers annotates merges as list[str] and unk_token as str, but hands merges to
    # tokenizers' BPE (which takes pairs) and accepts no unknown token, as Qwen2-VL ships.
    tokenizer = Qwen2Tokenizer(
        vocab=trained["vocab"],
        merges=merges,  # type: ignore[arg-type]
        unk_token=None,  # type: ignore[arg-type]
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS})
    min_pixels, max_pixels = 56 * 56, 112 * 112
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(min_pixels=min_pixels, max_pixels=max_pixels),
        chat_template=QWEN_TEMPLATE,
    )
    processor.save_pretrained(folder)
    special_ids = tokenizer.convert_tokens_to_ids(QWEN_SPECIALS)
    assert isinstance(special_ids, list)  # a list of tokens gives a list of ids
    ids = dict(zip(QWEN_SPECIALS, special_ids, strict=True))
    torch.manual_seed(SEED)
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],
            },
        },
        vision_config={
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    return folder


def ensure_tiny_vlm(preset_name: str) -> None:
    """Build a tiny preset's checkpoints into the Hugging Face cache unless they are there."""
    preset = VISION_LANGUAGE[preset_name]
    if not preset.tiny:
        raise ValueError(f"preset '{preset_name}' is not a tiny preset")
    builders = {
        preset.repo_id: functools.partial(build_tiny_kollava, repo_id=preset.repo_id)
        if preset.backend == "kollava"
        else build_tiny_native
    }
    if preset.vision_repo_id:
        builders[preset.vision_repo_id] = build_tiny_altclip
    for repo_id, build in builders.items():
        if hfcache.built_snapshot(repo_id, TINY_VLM_BUILD) is not None:
            continue
        scratch = Path(tempfile.mkdtemp(prefix="tiny-vlm-"))
        try:
            folder = build(scratch / "model")
            hfcache.mark_build(folder, TINY_VLM_BUILD)
            hfcache.place(folder, repo_id)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
