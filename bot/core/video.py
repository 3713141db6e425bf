"""Short video clips: checked against the caps, then sampled into evenly spaced frames (PyAV).

Only two demuxers are ever opened, chosen from the sniffed bytes (MP4/MOV and Matroska/WebM),
and only common camera codecs are decoded, so an untrusted file reaches as little of FFmpeg as
possible. Duration and frame size are checked from the headers before any frame is decoded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import av
from PIL import Image

MAX_FRAME_SIDE = 768
MAX_DECODE_PER_FRAME = 600  # frames decoded after a seek before taking what we have
CODECS = {"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mjpeg"}


class ClipError(Exception):
    """A clip we cannot use; `key` names the user's message in bot/core/texts.py."""

    def __init__(self, key: str, detail: str = "", **values: Any) -> None:
        super().__init__(detail or key)
        self.key = key
        self.values = values


@dataclass(frozen=True)
class ClipInfo:
    """What the headers say about a clip."""

    duration_s: float
    width: int
    height: int


def _demuxer(data: bytes) -> str:
    if data[4:8] == b"ftyp":
        return "mov"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    raise ClipError("clip_broken", "not an MP4/MOV or Matroska/WebM container")


def _open(data: bytes) -> Any:
    try:
        return av.open(io.BytesIO(data), mode="r", format=_demuxer(data))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ClipError("clip_broken", f"{type(exc).__name__}: {exc}") from exc


def _video_stream(container: Any) -> Any:
    streams = list(container.streams.video)
    if not streams:
        raise ClipError("clip_broken", "no video stream")
    stream = streams[0]
    if stream.codec_context.name not in CODECS:
        raise ClipError("clip_broken", f"codec {stream.codec_context.name}")
    return stream


def _duration(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration / av.time_base)
    if stream.frames and stream.average_rate:
        return float(stream.frames / stream.average_rate)
    raise ClipError("clip_broken", "unknown duration")


def probe(data: bytes, max_s: float, max_pixels: int) -> ClipInfo:
    """Check a clip's headers against the caps; raises ClipError."""
    container = _open(data)
    try:
        stream = _video_stream(container)
        duration = _duration(container, stream)
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
    finally:
        container.close()
    if duration > max_s:
        raise ClipError("clip_too_long", f"{duration:.1f} s", s=int(max_s))
    if width <= 0 or height <= 0 or duration <= 0:
        raise ClipError("clip_broken", f"{width}x{height}, {duration} s")
    if width * height > max_pixels:
        raise ClipError("clip_too_big", f"{width}x{height} pixels")
    return ClipInfo(duration, width, height)


def _frame_at(container: Any, stream: Any, at_s: float) -> Image.Image | None:
    """The first frame at or after `at_s` (seconds on the stream's clock), by seeking."""
    container.seek(int(at_s / stream.time_base), stream=stream, backward=True, any_frame=False)
    last = None
    for count, frame in enumerate(container.decode(stream)):
        last = frame
        if frame.time is None or frame.time + 1e-3 >= at_s or count >= MAX_DECODE_PER_FRAME:
            break
    return last.to_image() if last is not None else None


def sample_frames(data: bytes, count: int, max_side: int = MAX_FRAME_SIDE) -> list[Image.Image]:
    """`count` RGB frames taken evenly over the clip (the middle of each equal slice)."""
    container = _open(data)
    try:
        stream = _video_stream(container)
        stream.thread_type = "AUTO"
        duration = _duration(container, stream)
        start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        frames: list[Image.Image] = []
        for index in range(max(1, count)):
            frame = _frame_at(container, stream, start + duration * (index + 0.5) / count)
            if frame is not None:
                frame = frame.convert("RGB")
                frame.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
                frames.append(frame)
    except av.FFmpegError as exc:
        raise ClipError("clip_broken", f"{type(exc).__name__}: {exc}") from exc
    finally:
        container.close()
    if not frames:
        raise ClipError("clip_broken", "no frame decoded")
    return frames
