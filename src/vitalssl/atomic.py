"""Write-then-rename: a reader (or a crash) never sees half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable


def tmp_path(path: Path) -> Path:
    """The temporary name ``path`` is written under before its rename: ``x.tmp.npy`` for ``x.npy``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.tmp{path.suffix}")


def is_tmp(path: Path) -> bool:
    """Whether ``path`` is a temporary name of :func:`tmp_path` (a write that never finished)."""
    p = Path(path)
    return p.stem.endswith(".tmp") or p.suffix == ".tmp"


def fsync_file(path: Path) -> None:
    """Flush ``path``'s bytes to the disk, so a rename after it never publishes a file a power cut empties."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(folder: Path) -> None:
    """Flush ``folder``'s entries (a rename or a new name in it) to the disk; a no-op where folders cannot be
    opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (PermissionError, IsADirectoryError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it into place.

    The temporary name keeps ``path``'s suffix (``x.tmp.png``) so writers that pick a
    format by extension (matplotlib, numpy) still work. The file is fsynced before the
    rename and its folder after it: after a crash or power cut ``path`` holds the old
    bytes or the new ones, never an empty or half-written file. On an error the
    temporary file is removed.
    """
    path = Path(path)
    tmp = tmp_path(path)
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, obj) -> None:
    """Indented, key-sorted JSON with a trailing newline, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
