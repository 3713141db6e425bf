"""Plain registries of model presets. No torch here: the web side reads them too."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_NEGATIVE = "worst quality, low quality, illustration, low resolution"


@dataclass(frozen=True)
class TextToImagePreset:
    """One KOALA (or SDXL-family) text-to-image configuration."""

    name: str
    repo_id: str
    steps: int
    guidance: float
    width: int = 1024
    height: int = 1024
    negative_prompt: str = DEFAULT_NEGATIVE
    trailing: bool = False  # Euler with trailing timestep spacing (the Lightning variants)
    tiny: bool = False  # built locally from configs (tests and offline development)


@dataclass(frozen=True)
class VisionLanguagePreset:
    """One vision-language configuration."""

    name: str
    repo_id: str
    backend: str  # "kollava" (LLaVA v0 glue) or "native" (AutoModelForImageTextToText)
    vision_repo_id: str = ""  # Ko-LLaVA's separate vision tower
    video: bool = False  # backend accepts frames as a video
    max_new_tokens: int = 384
    tiny: bool = False


@dataclass(frozen=True)
class TranslationPreset:
    """A Korean-to-English machine-translation model."""

    name: str
    repo_id: str
    tiny: bool = False


TEXT_TO_IMAGE: dict[str, TextToImagePreset] = {
    "koala-lightning-700m": TextToImagePreset(
        "koala-lightning-700m", "etri-vilab/koala-lightning-700m", 10, 3.5, trailing=True
    ),
    "koala-lightning-1b": TextToImagePreset(
        "koala-lightning-1b", "etri-vilab/koala-lightning-1b", 10, 3.5, trailing=True
    ),
    "koala-700m": TextToImagePreset("koala-700m", "etri-vilab/koala-700m", 25, 7.5),
    "koala-1b": TextToImagePreset("koala-1b", "etri-vilab/koala-1b", 25, 7.5),
    "koala-700m-llava-cap": TextToImagePreset(
        "koala-700m-llava-cap", "etri-vilab/koala-700m-llava-cap", 25, 7.5
    ),
    "koala-1b-llava-cap": TextToImagePreset(
        "koala-1b-llava-cap", "etri-vilab/koala-1b-llava-cap", 25, 7.5
    ),
    "tiny": TextToImagePreset(
        "tiny", "koalatalk/tiny-sdxl", 2, 3.5, width=64, height=64, trailing=True, tiny=True
    ),
}

VISION_LANGUAGE: dict[str, VisionLanguagePreset] = {
    "ko-llava-13b": VisionLanguagePreset(
        "ko-llava-13b", "etri-vilab/Ko-LLaVA-13b", "kollava", vision_repo_id="BAAI/AltCLIP-m9"
    ),
    "qwen2-vl-2b": VisionLanguagePreset(
        "qwen2-vl-2b", "Qwen/Qwen2-VL-2B-Instruct", "native", video=True
    ),
    "tiny-kollava": VisionLanguagePreset(
        "tiny-kollava",
        "koalatalk/tiny-ko-llava",
        "kollava",
        vision_repo_id="koalatalk/tiny-altclip",
        max_new_tokens=16,
        tiny=True,
    ),
    "tiny-kollava-128": VisionLanguagePreset(
        "tiny-kollava-128",
        "koalatalk/tiny-ko-llava-128",
        "kollava",
        vision_repo_id="koalatalk/tiny-altclip",
        max_new_tokens=16,
        tiny=True,
    ),
    "tiny-native": VisionLanguagePreset(
        "tiny-native",
        "koalatalk/tiny-llava-native",
        "native",
        video=False,
        max_new_tokens=16,
        tiny=True,
    ),
}

TRANSLATION: dict[str, TranslationPreset] = {
    "opus-mt-tc-big-ko-en": TranslationPreset(
        "opus-mt-tc-big-ko-en", "Helsinki-NLP/opus-mt-tc-big-ko-en"
    ),
    "opus-mt-ko-en": TranslationPreset("opus-mt-ko-en", "Helsinki-NLP/opus-mt-ko-en"),
    "tiny": TranslationPreset("tiny", "koalatalk/tiny-marian-ko-en", tiny=True),
}

DEFAULT_TEXT_TO_IMAGE = "koala-lightning-700m"
DEFAULT_VISION_LANGUAGE = "ko-llava-13b"
DEFAULT_TRANSLATION = "opus-mt-tc-big-ko-en"
