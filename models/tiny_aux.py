"""Tiny translation and safety models built locally, for tests and offline development.

They are real MarianMTModel and ViTForImageClassification checkpoints with random weights, saved
with save_pretrained and placed in the Hugging Face cache, so the loading code reads them exactly
as it reads downloaded weights. Their output is meaningless: they test plumbing, not quality.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

from models.hfcache import place, snapshot_dir

TINY_MARIAN = "koalatalk/tiny-marian-ko-en"
TINY_SAFETY_PASS = "koalatalk/tiny-safety-pass"
TINY_SAFETY_FLAG = "koalatalk/tiny-safety-flag"
# The conventional tiny checker ids and whether each one always flags.
TINY_CHECKERS: dict[str, bool] = {TINY_SAFETY_PASS: False, TINY_SAFETY_FLAG: True}

SEED = 0
MARIAN_MAX_LENGTH = 16  # keeps random-weight generation short and bounded
MARIAN_MAX_POSITIONS = 64
CHECKER_SIZE = 32

# Small parallel-ish corpora in the style of drawing prompts; they only need to give
# SentencePiece enough text to learn a vocabulary from.
KOREAN_CORPUS = [
    "고양이 한 마리가 창가에 앉아 있다",
    "귀여운 강아지가 공원에서 뛰어논다",
    "수채화 스타일의 풍경화",
    "밤하늘의 별과 보름달",
    "눈 덮인 산과 호수",
    "바닷가의 노을과 야자수",
    "빨간 모자를 쓴 소녀",
    "우주복을 입은 코알라",
    "벚꽃이 핀 서울의 거리",
    "비 오는 날의 카페 창문",
    "유화로 그린 해바라기 꽃병",
    "사이버펑크 도시의 네온사인",
    "숲 속의 작은 오두막",
    "하늘을 나는 용과 성",
    "아름다운 한복을 입은 여인",
    "기차역에서 기다리는 할아버지",
    "초록색 들판 위의 흰 말",
    "맛있는 김치찌개와 밥",
    "겨울 아침의 따뜻한 커피 한 잔",
    "고양이와 강아지가 함께 잠을 잔다",
    "사진처럼 사실적인 인물 사진",
    "만화 스타일의 귀여운 캐릭터",
    "파란 하늘과 하얀 구름",
    "오래된 책이 가득한 도서관",
]
ENGLISH_CORPUS = [
    "a cat sitting by the window",
    "a cute puppy running in the park",
    "a landscape painting in watercolor style",
    "stars and a full moon in the night sky",
    "snowy mountains and a lake",
    "sunset and palm trees at the beach",
    "a girl wearing a red hat",
    "a koala in a space suit",
    "a street in Seoul with cherry blossoms",
    "a cafe window on a rainy day",
    "an oil painting of sunflowers in a vase",
    "neon signs in a cyberpunk city",
    "a small cabin in the forest",
    "a dragon flying over a castle",
    "a beautiful woman wearing a hanbok",
    "an old man waiting at the train station",
    "a white horse on a green field",
    "delicious kimchi stew and rice",
    "a warm cup of coffee on a winter morning",
    "a cat and a dog sleeping together",
    "a photorealistic portrait photo",
    "a cute character in cartoon style",
    "blue sky and white clouds",
    "a library full of old books",
]


def train_spm(corpus: list[str], path: Path, vocab_size: int = 300) -> list[str]:
    """Train a small unigram SentencePiece model, write it to `path`, return its pieces."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # the corpus is too small to fill a fixed size exactly
        model_type="unigram",
        character_coverage=1.0,  # every Hangul syllable of the corpus gets a piece
        num_threads=1,  # single-threaded training is reproducible
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    return [
        processor.id_to_piece(i)
        for i in range(processor.get_piece_size())
        if not (processor.is_control(i) or processor.is_unknown(i))
    ]


def build_tiny_marian(folder: Path) -> Path:
    """Write a tiny random MarianMTModel with a locally trained Korean/English vocabulary."""
    import torch
    from transformers import GenerationConfig, MarianConfig, MarianMTModel, MarianTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # 1. SentencePiece models for each side, trained here on the corpora above
    with tempfile.TemporaryDirectory() as tmp:
        source_spm, target_spm = Path(tmp) / "source.spm", Path(tmp) / "target.spm"
        # 2. Separate source and target vocabularies, as opus-mt-tc-big-ko-en has ("sepvoc"), so
        # the decoder can only emit English pieces. <pad> gets one id on both sides because the
        # tokenizer reads special-token ids from the source vocab when it decodes target ids.
        vocabs = []
        for corpus, spm_path, name in (
            (KOREAN_CORPUS, source_spm, "vocab.json"),
            (ENGLISH_CORPUS, target_spm, "target_vocab.json"),
        ):
            specials = ["</s>", "<unk>", "<pad>"]
            pieces = [p for p in train_spm(corpus, spm_path) if p not in specials]
            vocab = {token: index for index, token in enumerate(specials + pieces)}
            path = Path(tmp) / name
            path.write_text(json.dumps(vocab, ensure_ascii=False, indent=1), encoding="utf-8")
            vocabs.append(vocab)
        tokenizer = MarianTokenizer(
            str(source_spm),
            str(target_spm),
            str(Path(tmp) / "vocab.json"),
            target_vocab_file=str(Path(tmp) / "target_vocab.json"),
            separate_vocabs=True,
            source_lang="ko",
            target_lang="en",
            model_max_length=MARIAN_MAX_POSITIONS,
        )
        tokenizer.save_pretrained(folder)

    # 3. The model: one layer each side, width 16, seeded so every build is identical
    source_vocab, target_vocab = vocabs
    pad, eos, unk = (target_vocab[t] for t in ("<pad>", "</s>", "<unk>"))
    config = MarianConfig(
        vocab_size=len(source_vocab),
        decoder_vocab_size=len(target_vocab),
        share_encoder_decoder_embeddings=False,
        tie_word_embeddings=False,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=MARIAN_MAX_POSITIONS,
        pad_token_id=pad,
        eos_token_id=eos,
        forced_eos_token_id=eos,
        decoder_start_token_id=pad,
        scale_embedding=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = MarianMTModel(config).eval()
    # Greedy and short; never emitting <pad> or <unk> keeps the garbage output non-empty text.
    model.generation_config = GenerationConfig(
        max_length=MARIAN_MAX_LENGTH,
        min_length=4,
        num_beams=1,
        do_sample=False,
        bad_words_ids=[[pad], [unk]],
        pad_token_id=pad,
        eos_token_id=eos,
        forced_eos_token_id=eos,
        decoder_start_token_id=pad,
    )
    model.save_pretrained(folder)
    return folder


def tiny_checker_network() -> tuple[Any, Any]:
    """A tiny ViT `normal`/`nsfw` image classifier (random weights from SEED, 32 px input) and
    its processor: the tiny checkers' network, and what a test with weights of its own starts
    from."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        image_size=CHECKER_SIZE,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label={0: "normal", 1: "nsfw"},
        label2id={"normal": 0, "nsfw": 1},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = ViTForImageClassification(config).eval()
    processor = ViTImageProcessor(
        size={"height": CHECKER_SIZE, "width": CHECKER_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return model, processor


def build_tiny_checker(folder: Path, always_flag: bool) -> Path:
    """Write a tiny ViT `normal`/`nsfw` classifier whose verdict its classifier bias forces."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, processor = tiny_checker_network()
    # The random features give logits of about ±0.1; a bias of 10 decides every image.
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([0.0, 10.0] if always_flag else [10.0, 0.0]))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def ensure_tiny_marian(repo_id: str = TINY_MARIAN) -> Path:
    """Build the tiny Marian into the cache under `repo_id` unless there; return the snapshot."""
    cached = snapshot_dir(repo_id)
    if cached is not None:
        return cached
    with tempfile.TemporaryDirectory() as tmp:
        return place(build_tiny_marian(Path(tmp) / "model"), repo_id)


def ensure_tiny_checker(repo_id: str, always_flag: bool) -> Path:
    """Build a tiny checker into the cache under `repo_id` unless there; return the snapshot."""
    cached = snapshot_dir(repo_id)
    if cached is not None:
        return cached
    with tempfile.TemporaryDirectory() as tmp:
        return place(build_tiny_checker(Path(tmp) / "model", always_flag), repo_id)
