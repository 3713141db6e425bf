"""The OpenAPI 3 description of the HTTP endpoints (bot/web/openapi.yaml), served as it is."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

SPEC = Path(__file__).with_name("openapi.yaml")

openapi = Blueprint("openapi", __name__)


@openapi.get("/openapi.yaml")
def spec() -> Response:
    """The description; tests/test_fuzz.py checks the app against it."""
    return Response(SPEC.read_bytes(), mimetype="application/yaml")
