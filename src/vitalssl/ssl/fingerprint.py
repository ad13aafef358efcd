"""Cheap content keys of what a resumable training state depends on: the code and the window files."""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # src/vitalssl
# The pretrain stage's code, as dvc.yaml lists it for the stage (a test holds the two together):
# the model wing, the entry layer and the package's root modules; not the data wing.
PRETRAIN_CODE = ("ssl", "entry", "__init__.py", "atomic.py", "config.py", "seeding.py", "windowfile.py")


def code_files(parts: tuple = PRETRAIN_CODE) -> list[Path]:
    """Every ``.py`` file under ``parts`` (folders or files of the package), sorted."""
    files = []
    for part in parts:
        p = PACKAGE / part
        files.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return files


def code_fingerprint(parts: tuple = PRETRAIN_CODE) -> str:
    h = hashlib.sha256()
    for f in code_files(parts):
        h.update(str(f.relative_to(PACKAGE)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _file_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 1 << 20:
            f.seek(max(size - (1 << 20), 0))
            h.update(f.read(1 << 20))
    return h.hexdigest()


def data_fingerprint(files: list[Path]) -> str:
    """Cheap content key of the window files: size plus the first and last MiB of each, and its sidecars."""
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(_file_fingerprint(p).encode())
        for side in (p.with_suffix(".json"), p.with_suffix(".meta.csv")):
            if side.exists():
                h.update(_file_fingerprint(side).encode())
    return h.hexdigest()
