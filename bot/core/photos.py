"""Photos users send: fetched at once through the URL guard, checked, normalised, kept private.

1. Fetch through the guard's `photo` rule (Kakao's CDN hosts, public addresses, no redirects),
   within a deadline, with a byte cap. Kakao's URLs expire in minutes, so this happens when the
   message arrives; what cannot finish in time is handed to the worker (`pending`).
2. Sniff the type from the bytes, never from a header or a name. Only JPEG, PNG, GIF, WebP and
   BMP are decoded, each by its own Pillow plugin; MP4/MOV and WebM/MKV are clips
   (bot/core/video.py).
3. Check the pixel cap from the header before decoding (decompression bombs), then decode the
   first frame, apply the EXIF rotation, turn CMYK, palette, alpha and 16-bit into RGB, scale
   down and store a fresh JPEG. The original's metadata (GPS included) is not kept.
4. Store under a 192-bit random id in a private folder (PHOTO_DIR) that no route serves. Photos
   are deleted with the user's photo session (bot/core/conversation.py) and purged after
   PHOTO_TTL_S.
"""

from __future__ import annotations

import io
import logging
import os
import re
import secrets
import struct
import time
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from PIL import Image, ImageOps

from bot.core import keys, video
from bot.core.settings import Settings
from bot.core.stores import purge_folder
from bot.core.urlguard import FetchError, UrlGuard, UrlRefused, redact

log = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{32}$")
STORED_MAX_SIDE = 2048  # every model in use sees far less; keeps the private store small
JPEG_QUALITY = 92
PURGE_EVERY_S = 300
DECODE_S_PER_PIXEL = 40e-9  # decode, scale and re-encode, measured on a busy 2-core CPU
FETCH_THREADS = 4
SUFFIX = {"photo": ".jpg", "clip": ".clip"}
# Bytes -> Pillow format. Anything else is refused before a decoder sees it.
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif"}


class PhotoError(Exception):
    """A photo we cannot use; `key` names the user's message in bot/core/texts.py."""

    def __init__(self, key: str, detail: str = "", *, retryable: bool = False, **values: Any):
        super().__init__(detail or key)
        self.key = key
        self.retryable = retryable
        self.values = values


@dataclass(frozen=True)
class Limits:
    """The caps a photo or clip must meet."""

    max_bytes: int
    max_pixels: int
    clip_max_bytes: int
    clip_max_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            settings.photo_max_bytes,
            settings.photo_max_pixels,
            settings.clip_max_bytes,
            settings.clip_max_s,
        )


@dataclass(frozen=True)
class Received:
    """The outcome of receiving a message's photos."""

    ids: tuple[str, ...]  # stored, in the order sent: photos, or else one clip
    video: bool  # the ids hold one clip
    pending: tuple[str, ...]  # URLs not fetched in time (for the worker)
    errors: tuple[PhotoError, ...]  # one per photo that could not be used


def sniff(data: bytes) -> str:
    """The format from the first bytes: a Pillow format name, `CLIP`, `HEIF`, or ``."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM" and len(data) > 26:
        return "BMP"
    if head[4:8] == b"ftyp":
        return "HEIF" if head[8:12] in HEIF_BRANDS else "CLIP"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska and WebM
        return "CLIP"
    return ""


def to_rgb(image: Image.Image) -> Image.Image:
    """Any decoded mode as 8-bit RGB; transparency goes onto white."""
    if image.mode in {"I", "I;16", "I;16L", "I;16B", "I;16N", "F"}:
        # 16-bit (or wider) grey: scale into 8 bits instead of clipping everything to white.
        wide = image.convert("I") if image.mode != "F" else image
        high = wide.getextrema()[1]
        if isinstance(high, int | float) and high > 255:
            wide = wide.point(lambda v: v * (255 / 65535))
        image = wide.convert("L")
    alpha = image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (
        image.mode in {"P", "L", "RGB"} and "transparency" in image.info
    )
    if alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def normalise(data: bytes, fmt: str, max_pixels: int, decode_by: float | None = None) -> bytes:
    """A checked photo as fresh JPEG bytes: first frame, upright, RGB, at most 2048 px a side.

    With `decode_by` (epoch s), a photo too large to decode by then raises a retryable
    PhotoError, so the webhook hands it to the worker instead of overrunning its budget."""
    try:
        with warnings.catch_warnings():
            # The pixel cap below is ours; Pillow's own warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=[fmt])
        with opened as image:
            # 1. The pixel cap, from the header, before any pixel is decoded.
            if image.width * image.height > max_pixels:
                raise PhotoError("photo_too_big", f"{image.width}x{image.height} pixels")
            cost_s = image.width * image.height * DECODE_S_PER_PIXEL
            if decode_by is not None and time.time() + cost_s > decode_by:
                raise PhotoError("photo_unreachable", "no time left to decode", retryable=True)
            image.draft(None, (STORED_MAX_SIDE, STORED_MAX_SIDE))  # JPEG: decode scaled down
            # 2. The first frame only (an animated GIF, PNG or WebP opens on frame 0).
            image.load()
            frame: Image.Image = image
            # 3. Upright: a broken EXIF block costs the rotation, never the photo.
            try:
                frame = ImageOps.exif_transpose(image)
            except (ValueError, SyntaxError, KeyError, TypeError, struct.error) as exc:
                log.info("ignored unreadable EXIF", extra={"error": type(exc).__name__})
            # 4. RGB, scaled down, re-encoded without the original's metadata.
            rgb = to_rgb(frame)
            rgb.thumbnail((STORED_MAX_SIDE, STORED_MAX_SIDE), Image.Resampling.LANCZOS)
            rgb.info.clear()  # Pillow would copy a JPEG comment (COM) of the original
            out = io.BytesIO()
            rgb.save(out, "JPEG", quality=JPEG_QUALITY)
            return out.getvalue()
    except PhotoError:
        raise
    except Image.DecompressionBombError as exc:
        raise PhotoError("photo_too_big", str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError) as exc:
        # Pillow reports truncated and corrupt files as OSError (or SyntaxError in headers).
        raise PhotoError("photo_broken", f"{type(exc).__name__}: {exc}") from exc


def check(data: bytes, limits: Limits, decode_by: float | None = None) -> tuple[str, bytes]:
    """Sniff and check fetched bytes; returns the kind (`photo`/`clip`) and the bytes to store."""
    fmt = sniff(data)
    if fmt == "CLIP":
        if len(data) > limits.clip_max_bytes:
            raise PhotoError("clip_too_big", f"{len(data)} bytes")
        try:
            video.probe(data, limits.clip_max_s, limits.max_pixels)
        except video.ClipError as exc:
            raise PhotoError(exc.key, str(exc), **exc.values) from exc
        return "clip", data
    if fmt == "HEIF":
        raise PhotoError("photo_format", "HEIF/AVIF")
    if not fmt:
        raise PhotoError("photo_not_image", f"starts with {data[:8]!r}")
    if len(data) > limits.max_bytes:
        raise PhotoError("photo_too_big", f"{len(data)} bytes")
    return "photo", normalise(data, fmt, limits.max_pixels, decode_by)


def fetch(guard: UrlGuard, url: str, limits: Limits, timeout_s: float) -> bytes:
    """The bytes at a photo URL, through the guard; raises PhotoError."""
    cap = max(limits.max_bytes, limits.clip_max_bytes)
    try:
        return guard.get(url, "photo", timeout_s=timeout_s, max_bytes=cap).body
    except UrlRefused as exc:
        raise PhotoError("photo_host", exc.reason) from exc
    except FetchError as exc:
        status = exc.status or 0
        if status in {401, 403, 404, 410}:
            raise PhotoError("photo_expired", str(exc)) from exc
        if 300 <= status < 400:
            raise PhotoError("photo_host", str(exc)) from exc  # a redirect is never followed
        if 200 <= status < 300:
            raise PhotoError("photo_too_big", str(exc)) from exc  # over the byte cap
        raise PhotoError("photo_unreachable", str(exc), retryable=exc.retryable) from exc


class PhotoStore:
    """A private folder of received photos and clips, named by unguessable ids."""

    def __init__(self, folder: Path, ttl_s: int) -> None:
        self.folder = folder
        self.ttl_s = ttl_s

    def _path(self, photo_id: str, kind: str) -> Path:
        return self.folder / f"{photo_id}{SUFFIX[kind]}"

    def put(self, data: bytes, kind: str) -> str:
        """Store bytes under a new id (owner-only file) and return the id."""
        photo_id = secrets.token_urlsafe(24)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.folder / f".{photo_id}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, self._path(photo_id, kind))
        return photo_id

    def kind(self, photo_id: str) -> str | None:
        """`photo`, `clip`, or None when unknown."""
        if not ID_PATTERN.match(photo_id):
            return None
        for kind in SUFFIX:
            if self._path(photo_id, kind).exists():
                return kind
        return None

    def read(self, photo_id: str) -> tuple[str, bytes] | None:
        """(kind, bytes) of a stored photo or clip; None when unknown or past its keeping time."""
        kind = self.kind(photo_id)
        if kind is None:
            return None
        path = self._path(photo_id, kind)
        try:
            if time.time() - path.stat().st_mtime > self.ttl_s:
                return None
            return kind, path.read_bytes()
        except OSError:
            return None

    def delete(self, ids: Iterable[str]) -> int:
        """Delete photos by id; returns how many files went."""
        removed = 0
        for photo_id in ids:
            if not ID_PATTERN.match(photo_id):
                continue
            for kind in SUFFIX:
                try:
                    self._path(photo_id, kind).unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
        return removed

    def purge(self) -> int:
        """Delete files older than the keeping time; returns how many went."""
        return purge_folder(self.folder, self.ttl_s)

    def purge_if_due(self, r: redis.Redis) -> int:
        """Purge at most once per few minutes across all processes sharing this Redis."""
        if not r.set(keys.PHOTO_PURGE, "1", nx=True, ex=PURGE_EVERY_S):
            return 0
        removed = self.purge()
        if removed:
            log.info("purged old photos", extra={"count": removed})
        return removed


def store_from_settings(settings: Settings) -> PhotoStore:
    """The configured private photo store."""
    return PhotoStore(settings.photo_path, settings.photo_ttl_s)


def select(store: PhotoStore, ids: Sequence[str]) -> tuple[tuple[str, ...], bool]:
    """The ids a conversation holds: every photo, or else the first clip; the rest is deleted."""
    kinds = [(photo_id, store.kind(photo_id)) for photo_id in ids]
    photos = tuple(i for i, kind in kinds if kind == "photo")
    clips = [i for i, kind in kinds if kind == "clip"]
    keep = photos or tuple(clips[:1])
    store.delete(i for i in ids if i not in keep)
    return keep, not photos and bool(clips)


def _receive_one(
    guard: UrlGuard, store: PhotoStore, url: str, limits: Limits, deadline: float, hand_over: bool
) -> str:
    remaining = deadline - time.time()
    if remaining <= 0:
        raise PhotoError("photo_unreachable", "no time left", retryable=True)
    data = fetch(guard, url, limits, remaining)
    kind, data = check(data, limits, deadline if hand_over else None)
    try:
        return store.put(data, kind)
    except OSError as exc:
        raise PhotoError("photo_unreachable", f"cannot store: {exc.strerror}") from exc


def receive(
    guard: UrlGuard,
    store: PhotoStore,
    urls: Sequence[str],
    limits: Limits,
    deadline: float,
    *,
    hand_over: bool,
) -> Received:
    """Fetch, check and store a message's photos in parallel, each by `deadline` (epoch s).

    With `hand_over`, a URL that failed for want of time or a passing network fault is returned
    in `pending` (the worker fetches it) instead of as an error.
    """
    ids: list[str | None] = [None] * len(urls)
    pending: list[str] = []
    errors: list[PhotoError] = []
    with ThreadPoolExecutor(max_workers=min(FETCH_THREADS, max(1, len(urls)))) as pool:
        futures = [
            pool.submit(_receive_one, guard, store, url, limits, deadline, hand_over)
            for url in urls
        ]
        for index, (url, future) in enumerate(zip(urls, futures, strict=True)):
            try:
                ids[index] = future.result()
            except PhotoError as exc:
                log.info(
                    "photo not used", extra={"url": redact(url), "why": exc.key, "detail": str(exc)}
                )
                if hand_over and exc.retryable:
                    pending.append(url)
                else:
                    errors.append(exc)
    kept, is_clip = select(store, [i for i in ids if i is not None])
    return Received(kept, is_clip, tuple(pending), tuple(errors))
