"""Cheap content keys of the inputs a resumable training state depends on."""

from __future__ import annotations

import hashlib
from pathlib import Path

CODE_MODULES = ("config", "data", "losses", "masking", "model", "schedule", "train", "checkpoint", "outputs",
                "fingerprint")


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


def code_fingerprint() -> str:
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in CODE_MODULES:
        h.update((here / f"{name}.py").read_bytes())
    return h.hexdigest()
