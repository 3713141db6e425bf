"""The image store: pictures at unguessable public URLs, kept for a while, then deleted.

`ImageStore` is the interface every backend implements; the local-folder backend comes first.
Files are named by their id alone, so nothing can be listed and nothing outside the folder can
be named.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path
from typing import Protocol

from flask import Blueprint, Response, abort, current_app

from bot.settings import Settings

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{32}$")


class StoreError(RuntimeError):
    """The store could not write or read (full disk, permissions, backend down)."""


class ImageStore(Protocol):
    """Where generated pictures live until they expire."""

    def put(self, data: bytes) -> str:
        """Store JPEG bytes under a new unguessable id and return the id."""
        ...

    def get(self, media_id: str) -> bytes | None:
        """The bytes of a picture, or None when unknown or expired."""
        ...

    def purge(self) -> int:
        """Delete pictures older than the retention; returns how many went."""
        ...


def new_id() -> str:
    """32 url-safe characters from 24 random bytes (192 bits)."""
    return secrets.token_urlsafe(24)


class LocalImageStore:
    """A folder on this host (share it, e.g. over NFS, when workers run on several hosts)."""

    def __init__(self, folder: Path, retention_s: int) -> None:
        self.folder = folder
        self.retention_s = retention_s

    def _path(self, media_id: str) -> Path:
        return self.folder / f"{media_id}.jpg"

    def put(self, data: bytes) -> str:
        media_id = new_id()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{media_id}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self._path(media_id))
        except OSError as exc:
            raise StoreError(f"cannot write to {self.folder}: {exc.strerror}") from exc
        return media_id

    def get(self, media_id: str) -> bytes | None:
        if not ID_PATTERN.match(media_id):
            return None
        path = self._path(media_id)
        try:
            if time.time() - path.stat().st_mtime > self.retention_s:
                return None
            return path.read_bytes()
        except OSError:
            return None

    def purge(self) -> int:
        cutoff = time.time() - self.retention_s
        removed = 0
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return 0
        for entry in entries:
            try:
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
        return removed


def store_from_settings(settings: Settings) -> ImageStore:
    """The configured image store."""
    return LocalImageStore(settings.media_path, settings.media_retention_s)


def public_url(settings: Settings, media_id: str) -> str:
    """Where Kakao (or a person) fetches a picture."""
    return f"{settings.public_url.rstrip('/')}/media/{media_id}.jpg"


media = Blueprint("media", __name__)


@media.get("/media/<media_id>.jpg")
def serve(media_id: str) -> Response:
    """Serve one picture; unknown or expired ids are 404 and nothing can be listed."""
    store: ImageStore = current_app.extensions["koalatalk"].store
    data = store.get(media_id) if ID_PATTERN.match(media_id) else None
    if data is None:
        abort(404)
    settings: Settings = current_app.extensions["koalatalk"].settings
    response = Response(data, mimetype="image/jpeg")
    response.headers["Cache-Control"] = f"public, max-age={settings.media_retention_s}, immutable"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
