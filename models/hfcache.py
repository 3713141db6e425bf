"""Place locally built model folders into a Hugging Face cache under a repo id.

Tiny test and development models are written here so that the real loading code can read them
through `from_pretrained(repo_id)` exactly as it reads a downloaded model, offline.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def cache_dir() -> Path:
    """The hub cache folder that huggingface_hub reads (HF_HUB_CACHE, else HF_HOME/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def snapshot_dir(repo_id: str, cache: Path | None = None) -> Path | None:
    """The folder of the cached `main` snapshot of a model repo, or None when it is not cached."""
    root = (cache or cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    ref = root / "refs" / "main"
    if not ref.is_file():
        return None
    snap = root / "snapshots" / ref.read_text().strip()
    return snap if snap.is_dir() else None


def place(folder: Path, repo_id: str, cache: Path | None = None) -> Path:
    """Copy `folder` into the cache as the `main` snapshot of model repo `repo_id`."""
    root = (cache or cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    digest = hashlib.sha1()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(str(path.stat().st_size).encode())
    revision = digest.hexdigest()
    snap = root / "snapshots" / revision
    if snap.exists():
        shutil.rmtree(snap)
    snap.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(folder, snap)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    tmp = root / "refs" / f".main.{os.getpid()}"
    tmp.write_text(revision)
    os.replace(tmp, root / "refs" / "main")
    return snap


BUILD_MARK = "koalatalk-build.txt"  # in a locally built model's folder: which builder made it


def mark_build(folder: Path, build: str) -> None:
    """Record in a locally built model folder which version of its builder wrote it."""
    (folder / BUILD_MARK).write_text(build + "\n", encoding="utf-8")


def built_snapshot(repo_id: str, build: str, cache: Path | None = None) -> Path | None:
    """The cached snapshot of a locally built model when `build` of its builder wrote it, else
    None: a tiny model cached by an older builder is rebuilt rather than kept."""
    snap = snapshot_dir(repo_id, cache)
    if snap is None:
        return None
    mark = snap / BUILD_MARK
    if not mark.is_file() or mark.read_text(encoding="utf-8").strip() != build:
        return None
    return snap
