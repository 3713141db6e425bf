"""KoalaTalk without a messenger: `python -m workers.cli COMMAND`.

    generate "a koala surfing, watercolor" -o koala.jpg   draw a picture into a file
    ask photo.jpg "이 사진에 무엇이 있나요?"                ask about a photo (or a short clip)
    telegram-set-webhook                                  register PUBLIC_URL/telegram/webhook
    plan [--gpu-memory 24GiB]                             GPU memory the worker would need

The models load through the same presets and KOALATALK_* settings as the workers (PRESET,
VLM_PRESET, DEVICE, ...). This module imports torch, so the web never imports it; only the
commands that need a model load one.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bot.core.settings import Settings, SettingsError


def _stages(names: list[str]) -> tqdm:
    """A progress bar over a command's stages; the model's own steps get a bar of their own."""
    return tqdm(total=len(names), desc=names[0], unit="stage", leave=True, file=sys.stderr)


def _next(bar: tqdm, names: list[str]) -> None:
    bar.update(1)
    if bar.n < len(names):
        bar.set_description(names[bar.n])


def generate(settings: Settings, args: argparse.Namespace) -> int:
    """Draw one or more pictures from a prompt into JPEG files (AI-labelled like the bot's)."""
    import secrets

    from models.text2image import TextToImage
    from workers.imaging import to_jpeg

    names = ["loading " + (args.preset or settings.preset), "drawing", "saving"]
    bar = _stages(names)
    model = TextToImage.load(
        args.preset or settings.preset, args.device or settings.device, memory=settings.draw_memory
    )
    _next(bar, names)
    seeds = [
        args.seed + i if args.seed is not None else secrets.randbelow(2**32)
        for i in range(args.count)
    ]
    images = []
    for seed in seeds:
        images.extend(
            model.generate(
                [args.prompt],
                [seed],
                width=args.width,
                height=args.height,
                steps=args.steps,
                guidance=args.guidance,
                progress=True,
            )
        )
    _next(bar, names)
    out = Path(args.output)
    paths = (
        [out]
        if len(images) == 1
        else [
            out.with_name(f"{out.stem}-{i + 1}{out.suffix or '.jpg'}") for i in range(len(images))
        ]
    )
    for path, image in zip(paths, images, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(to_jpeg(image))
    _next(bar, names)
    bar.close()
    for path, seed in zip(paths, seeds, strict=True):
        print(f"{path}  (preset {model.preset.name}, seed {seed})")
    return 0


def ask(settings: Settings, args: argparse.Namespace) -> int:
    """Answer a question about a photo, or about frames sampled evenly from a clip."""
    from PIL import Image

    from bot.core import photos, video
    from models.vision_language import load_vision_language

    preset = args.preset or settings.vlm_preset
    names = ["reading " + Path(args.file).name, "loading " + preset, "answering"]
    bar = _stages(names)
    try:
        kind, data = photos.check(
            Path(args.file).read_bytes(), photos.Limits.from_settings(settings)
        )
        if kind == "clip":
            images = video.sample_frames(data, settings.clip_frames)
        else:
            images = [Image.open(io.BytesIO(data), formats=["JPEG"]).convert("RGB")]
    except (photos.PhotoError, video.ClipError) as exc:
        bar.close()
        print(f"cannot use {args.file}: {exc.key}: {exc}", file=sys.stderr)
        return 2
    _next(bar, names)
    model = load_vision_language(preset, args.device or settings.device, quant=settings.vlm_quant)
    _next(bar, names)
    started = time.perf_counter()
    limit = min(settings.vlm_max_new_tokens, model.preset.max_new_tokens)
    answer = model.answer(images, [], args.question, max_new_tokens=limit, video=kind == "clip")
    seconds = time.perf_counter() - started
    _next(bar, names)
    bar.close()
    print(answer.strip())
    frames = f", {len(images)} frames" if kind == "clip" else ""
    print(f"({model.preset.name}, {seconds:.1f} s{frames})", file=sys.stderr)
    return 0


def telegram_set_webhook(settings: Settings, args: argparse.Namespace) -> int:
    """Tell Telegram where our webhook is, with the secret token it must send back."""
    from bot.core.urlguard import guard_from_settings
    from bot.messengers.telegram import BotApi, TelegramError, set_webhook

    if not settings.telegram_token:
        print("set KOALATALK_TELEGRAM_TOKEN first (from @BotFather)", file=sys.stderr)
        return 2
    url = args.url or f"{settings.public_url.rstrip('/')}/telegram/webhook"
    if not url.startswith("https://") and not settings.development:
        print(f"Telegram needs an https webhook URL, not {url}", file=sys.stderr)
        return 2
    try:
        result = set_webhook(
            BotApi(guard_from_settings(settings), settings), url, settings.telegram_secret
        )
    except TelegramError as exc:
        print(f"setWebhook failed: {exc}", file=sys.stderr)
        return 1
    secret = "with the secret token" if settings.telegram_secret else "WITHOUT a secret token"
    print(f"webhook set to {url} {secret}: {result}")
    return 0


def plan(settings: Settings, args: argparse.Namespace) -> int:
    """Print the memory plan for the configured presets; 1 when it does not fit the GPU."""
    from workers import planning

    settings = settings.with_(
        **{
            k: v
            for k, v in (
                ("vlm_quant", args.vlm_quant),
                ("draw_memory", args.draw_memory),
                ("max_batch", args.max_batch),
            )
            if v
        }
    )
    if planning.available(settings, args.gpu_memory or "") is None:
        print(
            "no GPU visible: give its size with --gpu-memory (e.g. 24GiB) to plan for one",
            file=sys.stderr,
        )
        return 2
    queues = args.queues or ["text2image", "vision"]
    if set(queues) - {"text2image", "vision"}:
        print(f"unknown queue in {queues}: choose text2image, vision or both", file=sys.stderr)
        return 2
    outcome = planning.check(settings, queues, args.gpu_memory or "")
    assert outcome.plan is not None
    print(f"memory plan for `python -m workers {' '.join(queues)}` (computed, not measured)")
    print(outcome.plan.report())
    if outcome.refusal:
        print(outcome.refusal)
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    """The command line."""
    main = argparse.ArgumentParser(
        prog="python -m workers.cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = main.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="draw a picture from a prompt into a file")
    gen.add_argument("prompt")
    gen.add_argument("-o", "--output", default="koalatalk.jpg", help="JPEG file to write")
    gen.add_argument("-n", "--count", type=int, default=1, help="how many pictures")
    gen.add_argument("--seed", type=int, help="first seed (default: random)")
    gen.add_argument("--steps", type=int)
    gen.add_argument("--guidance", type=float)
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--preset", help="text-to-image preset (default: KOALATALK_PRESET)")
    gen.add_argument("--device", help="default: KOALATALK_DEVICE")
    gen.set_defaults(run=generate)
    q = commands.add_parser("ask", help="ask a question about a photo or a short clip")
    q.add_argument("file", help="photo (JPEG, PNG, GIF, WebP, BMP) or clip (MP4, WebM)")
    q.add_argument("question")
    q.add_argument("--preset", help="vision-language preset (default: KOALATALK_VLM_PRESET)")
    q.add_argument("--device", help="default: KOALATALK_DEVICE")
    q.set_defaults(run=ask)
    pl = commands.add_parser("plan", help="the GPU memory the worker's models would need")
    pl.add_argument("queues", nargs="*", help="text2image, vision or both (default: both)")
    pl.add_argument("--gpu-memory", help="plan for a GPU of this size (24GiB, 8GB)")
    pl.add_argument("--vlm-quant", choices=["none", "int8", "int4"])
    pl.add_argument("--draw-memory", choices=["normal", "low", "offload"])
    pl.add_argument("--max-batch", type=int)
    pl.set_defaults(run=plan)
    tg = commands.add_parser("telegram-set-webhook", help="register the Telegram webhook")
    tg.add_argument("--url", help="default: PUBLIC_URL/telegram/webhook")
    tg.set_defaults(run=telegram_set_webhook)
    return main


def main(argv: list[str] | None = None) -> int:
    """Run one command."""
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"koalatalk: {exc}", file=sys.stderr)
        return 2
    from models.common import ModelUnavailable

    try:
        code: Any = args.run(settings, args)
    except ModelUnavailable as exc:
        print(f"koalatalk: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:  # a bad preset name, size or step count
        print(f"koalatalk: {exc}", file=sys.stderr)
        return 2
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
