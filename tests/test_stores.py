"""The image-store backends: local folder, Redis (TTL) and S3 (against a local moto server)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bot.core.settings import Settings
from bot.core.stores import LocalImageStore, RedisImageStore, S3ImageStore, StoreError, picture_url
from bot.web.app import create_app
from tests.support import free_port, stop_process

JPEG = b"\xff\xd8\xff\xe0" + b"koala" * 100 + b"\xff\xd9"


def test_local_store_round_trip_and_expiry(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path, retention_s=60)
    media_id = store.put(JPEG)
    assert len(media_id) == 32 and store.get(media_id) == JPEG
    old = time.time() - 120
    os.utime(tmp_path / f"{media_id}.jpg", (old, old))
    assert store.get(media_id) is None
    assert store.purge() == 1 and not any(tmp_path.iterdir())


def test_local_store_unwritable_raises_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError):
        LocalImageStore(blocker / "media", 60).put(JPEG)


def test_redis_store_keeps_pictures_for_the_retention(redis_client: Any, redis_url: str) -> None:
    store = RedisImageStore(redis_client, retention_s=30)
    media_id = store.put(JPEG)
    assert store.get(media_id) == JPEG
    assert 0 < redis_client.ttl(f"kt:media:{media_id}") <= 30
    assert store.get("../" + media_id) is None
    # The web serves it from Redis as well, so any host can answer for it.
    app = create_app(
        Settings(mode="development", redis_url=redis_url, media_backend="redis", log_json=False)
    )
    response = app.test_client().get(f"/media/{media_id}.jpg")
    assert response.status_code == 200 and response.data == JPEG
    assert response.mimetype == "image/jpeg"


@pytest.fixture(scope="module")
def s3_server() -> Any:
    """moto's S3-compatible server on loopback, with static test credentials."""
    port = free_port()
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true"}
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError as exc:
            if getattr(exc, "code", None):
                break
            time.sleep(0.1)
    yield url
    stop_process(proc)


def s3_settings(endpoint: str, **extra: Any) -> Settings:
    return Settings(
        mode="development",
        media_backend="s3",
        s3_bucket="koalatalk-test",
        s3_endpoint_url=endpoint,
        s3_access_key="testing",
        s3_secret_key="testing",
        media_retention_s=600,
        log_json=False,
        **extra,
    )


def test_s3_store_presigned_and_public_urls(s3_server: str) -> None:
    store = S3ImageStore(s3_settings(s3_server))
    store.client.create_bucket(Bucket="koalatalk-test")
    media_id = store.put(JPEG)
    assert store.get(media_id) == JPEG
    presigned = store.url(media_id)
    assert presigned.startswith(s3_server) and "Signature" in presigned
    with urllib.request.urlopen(presigned, timeout=5) as response:
        assert response.read() == JPEG
        assert response.headers["Content-Type"] == "image/jpeg"
    public = S3ImageStore(s3_settings(s3_server, s3_public_base="https://cdn.example.test"))
    url = picture_url(s3_settings(s3_server), public, media_id)
    assert url == f"https://cdn.example.test/koalatalk/{media_id}.jpg"
    assert store.get("not-an-id") is None


def test_s3_store_down_raises_store_error() -> None:
    store = S3ImageStore(s3_settings(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(StoreError):
        store.put(JPEG)
