"""The playground's own endpoints: the page, the upload, the one-time callback and the inbox.

The whole chat runs in a real browser in tests/test_playground_browser.py; these check each
endpoint's contract, and the bad input, quickly."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from PIL import Image

from bot.web.playground import STATIC

SESSION = "pgtest" + "0123456789abcdef"


def png(size: tuple[int, int] = (120, 80)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (250, 200, 0)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def client(make_app: Any) -> Any:
    return make_app().test_client()


def test_the_page_and_its_files_load_nothing_from_the_internet(client: Any) -> None:
    page = client.get("/playground")
    assert page.status_code == 200
    assert "코알라톡" in page.get_data(as_text=True)
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    for name in ("playground.html", "playground.js", "playground.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text), name
        assert "@import" not in text and "@font-face" not in text
    assert client.get("/playground/static/playground.js").status_code == 200


def test_the_playground_is_off_in_production_and_when_turned_off(
    make_app: Any, redis_url: str
) -> None:
    from bot.core.settings import Settings, SettingsError
    from bot.web.app import create_app

    assert make_app(playground=False).test_client().get("/playground").status_code == 404
    production = create_app(Settings.from_env({}, secret="s", redis_url=redis_url)).test_client()
    assert production.get("/playground").status_code == 404
    assert production.get("/static/playground.js").status_code == 404
    assert production.get("/playground/static/playground.js").status_code == 404
    with pytest.raises(SettingsError, match="PLAYGROUND"):
        Settings.from_env({"KOALATALK_PLAYGROUND": "on", "KOALATALK_SECRET": "s"})


def test_an_upload_that_is_not_an_image_gets_a_clear_error(client: Any) -> None:
    data = {"photo": (io.BytesIO(b"%PDF-1.4 not a photo"), "cat.jpg")}
    response = client.post("/playground/upload", data=data, content_type="multipart/form-data")
    assert response.status_code == 400
    assert "사진 파일이 아니" in response.get_json()["error"]
    missing = client.post("/playground/upload", data={}, content_type="multipart/form-data")
    assert missing.status_code == 400


def test_an_upload_over_the_cap_is_refused(make_app: Any) -> None:
    client = make_app(photo_max_bytes=1000).test_client()
    data = {"photo": (io.BytesIO(png((300, 300)) + b"\0" * 2000), "big.png")}
    response = client.post("/playground/upload", data=data, content_type="multipart/form-data")
    assert response.status_code == 413
    assert "너무 커요" in response.get_json()["error"]


def test_an_upload_is_stored_as_an_upright_jpeg_at_a_media_url(client: Any, stack: Any) -> None:
    # Larger than a webhook body: the cap is raised for uploads only.
    big = png((900, 700))
    data = {"photo": (io.BytesIO(big + b"\0" * 300_000), "photo.png")}
    response = client.post("/playground/upload", data=data, content_type="multipart/form-data")
    assert response.status_code == 200, response.get_json()
    url = response.get_json()["url"]
    assert url.startswith(stack["settings"]["public_url"] + "/media/")
    served = client.get(urlparse(url).path)
    assert served.status_code == 200
    assert Image.open(io.BytesIO(served.data)).format == "JPEG"


def test_a_callback_url_works_once_and_its_answer_reaches_the_inbox(client: Any) -> None:
    issued = client.post("/playground/api/callback-url", json={"session": SESSION})
    url = issued.get_json()["callbackUrl"]
    path = urlparse(url).path
    answer = {"version": "2.0", "template": {"outputs": [{"simpleText": {"text": "안녕"}}]}}
    first = client.post(path, json=answer).get_json()
    assert first["status"] == "SUCCESS"
    again = client.post(path, json=answer).get_json()
    assert again["status"] == "FAIL", "one-time, like Kakao's"
    inbox = client.get(f"/playground/api/inbox/{SESSION}").get_json()["messages"]
    assert inbox == [answer]
    assert client.get(f"/playground/api/inbox/{SESSION}").get_json()["messages"] == []


def test_bad_sessions_and_tokens_are_refused(client: Any) -> None:
    assert client.post("/playground/api/callback-url", json={"session": "../x"}).status_code == 400
    assert client.get("/playground/api/inbox/short").status_code == 400
    forged = client.post("/playground/callback/" + "a" * 32, json={"version": "2.0"})
    assert forged.get_json()["status"] == "FAIL"


def test_config_names_the_webhook_and_the_secret_header(make_app: Any) -> None:
    config = make_app(secret="dev-secret").test_client().get("/playground/api/config").get_json()
    assert config["skillUrl"] == "/kakao/skill"
    assert config["secretHeader"] == "X-KoalaTalk-Secret"
    assert config["secret"] == "dev-secret"


def test_static_folder_is_the_playgrounds() -> None:
    assert Path(STATIC, "playground.html").exists()
