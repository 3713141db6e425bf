"""The layers stay apart at run time: workers load no Flask, the web app loads no torch.

Each check runs in a fresh interpreter, since this pytest process has imported Flask and torch
long before (import-linter checks the import graph; these check what really gets loaded).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import ROOT

WEB_ONLY = ("flask", "werkzeug")
MODELS_ONLY = ("torch", "diffusers", "transformers")


def loaded_after(code: str, watched: tuple[str, ...]) -> dict[str, Any]:
    """Run `code` in a fresh interpreter at the repository root; it sets `done` (a JSON-able
    value). Returns that, and which of the `watched` top-level packages ended up imported."""
    script = f"""
import json, sys
{code}
loaded = sorted({{name.split(".")[0] for name in sys.modules}} & set({list(watched)!r}))
print(json.dumps({{"done": done, "loaded": loaded}}))
"""
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_every_workers_module_imports_without_flask_or_werkzeug() -> None:
    # `python -m workers` runs main() only under this guard; imported by name it does not run.
    assert 'if __name__ == "__main__":' in (ROOT / "workers" / "__main__.py").read_text()
    result = loaded_after(
        """
import importlib, pkgutil
import workers
done = ["workers"]
for info in sorted(pkgutil.iter_modules(workers.__path__), key=lambda m: m.name):
    importlib.import_module(f"workers.{info.name}")
    done.append(f"workers.{info.name}")
""",
        WEB_ONLY,
    )
    expected = {f"workers.{p.stem}" for p in (ROOT / "workers").glob("*.py")} - {"workers.__init__"}
    assert expected <= set(result["done"]), result["done"]
    assert "workers.__main__" in result["done"]
    assert result["loaded"] == [], f"workers import {result['loaded']}"


def test_the_web_app_builds_without_torch_diffusers_or_transformers(
    redis_url: str, tmp_path: Path
) -> None:
    settings = {
        "mode": "development",
        "redis_url": redis_url,
        "preset": "tiny",
        "translation_model": "tiny",
        "safety_model": "koalatalk/tiny-safety-pass",
        "vlm_preset": "tiny-kollava",
        "media_dir": str(tmp_path / "media"),
        "photo_dir": str(tmp_path / "photos"),
        "log_json": "false",
        "system_dns": "false",
    }
    env = {f"KOALATALK_{name.upper()}": value for name, value in settings.items()}
    result = loaded_after(
        f"""
from bot.core.settings import Settings
from bot.web.app import create_app
settings = Settings.from_env({env!r})
assert settings.development
app = create_app(settings)
done = app.test_client().get("/healthz").status_code
""",
        MODELS_ONLY,
    )
    assert result["done"] == 200
    assert result["loaded"] == [], f"the web app imports {result['loaded']}"
