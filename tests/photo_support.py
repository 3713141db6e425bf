"""Test helpers for photos: a local stand-in for Kakao's CDN, and photos and clips of every kind.

The CDN runs on loopback; tests put its origin on the development list, so the URL guard lets
it through exactly as it lets `talk.kakaocdn.net` through in production.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image


@dataclass
class Item:
    """What one CDN path answers."""

    body: bytes
    status: int = 200
    content_type: str = "image/jpeg"
    delay_s: float = 0.0
    once: bool = False  # expires after the first successful GET, as Kakao's URLs do in minutes
    location: str = ""


@dataclass
class CdnServer:
    """A local HTTP server that hands out photos by path; unknown paths are 404."""

    port: int = 0  # 0: a free one, chosen when it starts
    items: dict[str, Item] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self, body: bytes, **how: Any) -> str:
        """Publish bytes at a fresh path that looks like Kakao's; returns the URL."""
        path = f"/dna/{uuid.uuid4().hex[:8]}/img_org.jpg"
        self.items[path] = Item(body, **how)
        return f"{self.origin}{path}?credential=x&expires={int(time.time()) + 600}&signature=s"

    def start(self) -> ThreadingHTTPServer:
        cdn = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                cdn.hits[path] = cdn.hits.get(path, 0) + 1
                item = cdn.items.get(path)
                if item is None or (item.once and cdn.hits[path] > 1):
                    self._send(404, b"<html>expired</html>", "text/html")
                    return
                if item.delay_s:
                    time.sleep(item.delay_s)
                headers = {"Location": item.location} if item.location else {}
                self._send(item.status, item.body, item.content_type, headers)

            def _send(
                self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (a timeout test)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])  # port 0: the one the system chose
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


# Photos of every kind ---------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def jpeg(size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    return encode(Image.new("RGB", size, colour), "JPEG", quality=95)


def rotated_jpeg(size: tuple[int, int] = (40, 20), orientation: int = 6) -> bytes:
    """A landscape JPEG whose EXIF says: display rotated (6 = 90° clockwise), with GPS data."""
    image = Image.new("RGB", size, (30, 160, 60))
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x8825] = {1: "N", 2: (37.0, 33.0, 0.0)}  # GPS IFD: must not survive normalisation
    return encode(image, "JPEG", exif=exif.tobytes(), quality=95)


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)


def palette_png() -> bytes:
    """A palette PNG whose left half is transparent."""
    image = Image.new("P", (32, 32), 1)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    for x in range(16):
        for y in range(32):
            image.putpixel((x, y), 0)
    return encode(image, "PNG", transparency=0)


def animated_gif() -> bytes:
    """Red first frame, then blue: the first frame must win."""
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def grey16_png(value: int = 30000) -> bytes:
    return encode(Image.new("I;16", (32, 32), value), "PNG")


def webp() -> bytes:
    return encode(Image.new("RGB", (32, 32), (10, 200, 10)), "WEBP", quality=90)


def bomb_png(side: int = 12000) -> bytes:
    """Tiny on the wire, `side`² pixels when decoded."""
    return encode(Image.new("1", (side, side), 0), "PNG", optimize=True)


def truncated_jpeg() -> bytes:
    data = encode(Image.effect_noise((256, 256), 64).convert("RGB"), "JPEG", quality=90)
    return data[: len(data) // 2]


HEIF_HEAD = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64


def clip(
    seconds: float = 2.0, fps: int = 10, size: tuple[int, int] = (64, 48), codec: str = "mpeg4"
) -> bytes:
    """An MP4 whose frames go from black to red, so sampled frames can be told apart."""
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream)  # a video codec gives a video stream
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        count = int(seconds * fps)
        for index in range(count):
            image = Image.new("RGB", size, (int(255 * index / count), 0, 0))
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()
