"""GET /media/<id>.jpg: the pictures in the image store, at unguessable public URLs."""

from __future__ import annotations

from flask import Blueprint, Response, abort

from bot.core.stores import ID_PATTERN
from bot.web.context import context

media = Blueprint("media", __name__)


@media.get("/media/<media_id>.jpg")
def serve(media_id: str) -> Response:
    """Serve one picture; unknown or expired ids are 404 and nothing can be listed."""
    ctx = context()
    data = ctx.store.get(media_id) if ID_PATTERN.match(media_id) else None
    if data is None:
        abort(404)
    response = Response(data, mimetype="image/jpeg")
    max_age = ctx.settings.media_retention_s
    response.headers["Cache-Control"] = f"public, max-age={max_age}, immutable"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
