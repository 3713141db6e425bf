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

import redis

from bot.core import keys
from bot.core.settings import Settings

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
        return purge_folder(self.folder, self.retention_s)


class RedisImageStore:
    """Pictures in Redis with the retention as their TTL: many hosts, no new infrastructure."""

    def __init__(self, r: redis.Redis, retention_s: int) -> None:
        self.r = r
        self.retention_s = retention_s

    def put(self, data: bytes) -> str:
        media_id = new_id()
        try:
            self.r.set(keys.media(media_id), data, ex=self.retention_s)
        except redis.RedisError as exc:
            raise StoreError(f"cannot write to Redis: {exc}") from exc
        return media_id

    def get(self, media_id: str) -> bytes | None:
        if not ID_PATTERN.match(media_id):
            return None
        raw = self.r.get(keys.media(media_id))
        return raw if isinstance(raw, bytes) else None

    def purge(self) -> int:
        return 0  # Redis expires them


class S3ImageStore:
    """S3-compatible object storage: public URLs under a base, or presigned URLs.

    The bucket's lifecycle rule should expire objects after the retention; `purge` also deletes
    older objects under the prefix, for stores without lifecycle rules.
    """

    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.retention_s = settings.media_retention_s
        self.public_base = settings.s3_public_base.rstrip("/")
        credentials = {}
        if settings.s3_access_key:
            # Explicit keys: boto3 never falls back to the instance-metadata lookup.
            credentials = {
                "aws_access_key_id": settings.s3_access_key,
                "aws_secret_access_key": settings.s3_secret_key,
            }
        self.client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url or None,
            region_name=settings.s3_region,
            config=Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2}),
            **credentials,
        )

    def _key(self, media_id: str) -> str:
        return f"{self.prefix}{media_id}.jpg"

    def put(self, data: bytes) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        media_id = new_id()
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(media_id),
                Body=data,
                ContentType="image/jpeg",
                CacheControl=f"public, max-age={self.retention_s}",
            )
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"cannot write to S3 bucket {self.bucket}: {exc}") from exc
        return media_id

    def get(self, media_id: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        if not ID_PATTERN.match(media_id):
            return None
        try:
            found = self.client.get_object(Bucket=self.bucket, Key=self._key(media_id))
        except (BotoCoreError, ClientError):
            return None
        if time.time() - found["LastModified"].timestamp() > self.retention_s:
            return None
        return bytes(found["Body"].read())

    def url(self, media_id: str) -> str:
        """A public URL under S3_PUBLIC_BASE, else a presigned GET valid for the retention."""
        if self.public_base:
            return f"{self.public_base}/{self._key(media_id)}"
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(media_id)},
                ExpiresIn=min(self.retention_s, 7 * 86400),
            )
        )

    def purge(self) -> int:
        cutoff = time.time() - self.retention_s
        removed = 0
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            old = [
                {"Key": o["Key"]}
                for o in page.get("Contents", [])
                if o["LastModified"].timestamp() < cutoff
            ]
            if old:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": old})
                removed += len(old)
        return removed


def purge_folder(folder: Path, older_than_s: float) -> int:
    """Delete the files in `folder` older than `older_than_s`; returns how many went."""
    cutoff = time.time() - older_than_s
    removed = 0
    try:
        entries = list(os.scandir(folder))
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


def store_from_settings(settings: Settings, r: redis.Redis | None = None) -> ImageStore:
    """The configured image store (MEDIA_BACKEND: local, redis or s3)."""
    if settings.media_backend == "redis":
        return RedisImageStore(
            r or redis.Redis.from_url(settings.redis_url), settings.media_retention_s
        )
    if settings.media_backend == "s3":
        return S3ImageStore(settings)
    return LocalImageStore(settings.media_path, settings.media_retention_s)


def picture_url(settings: Settings, store: ImageStore, media_id: str) -> str:
    """Where Kakao fetches a stored picture: the store's own URL (S3) or our /media route."""
    url = getattr(store, "url", None)
    return str(url(media_id)) if callable(url) else public_url(settings, media_id)


def public_url(settings: Settings, media_id: str) -> str:
    """Where Kakao (or a person) fetches a picture."""
    return f"{settings.public_url.rstrip('/')}/media/{media_id}.jpg"


def media_id_of(settings: Settings, url: str) -> str | None:
    """The image store id when `url` is one of our own /media URLs, else None."""
    prefix = public_url(settings, "")[: -len(".jpg")]
    if url.startswith(prefix) and url.endswith(".jpg"):
        return url[len(prefix) : -len(".jpg")] or None
    return None


def picture_bytes(settings: Settings, store: ImageStore, url: str) -> bytes | None:
    """A picture's bytes from our own store, when the URL is ours and it has not expired."""
    media_id = media_id_of(settings, url)
    return store.get(media_id) if media_id else None
