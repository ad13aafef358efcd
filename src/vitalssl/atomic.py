"""Write-then-rename: a reader (or a crash) never sees half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable


def tmp_path(path: Path) -> Path:
    """The temporary name ``path`` is written under before its rename: ``x.<pid>.tmp.npy`` for ``x.npy``.

    The process id keeps two runs writing the same file from writing into one temporary file."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{os.getpid()}.tmp{path.suffix}")


def is_tmp(path: Path) -> bool:
    """Whether ``path`` is a temporary name of :func:`tmp_path` (a write that never finished)."""
    p = Path(path)
    return p.stem.endswith(".tmp") or p.suffix == ".tmp"


def temporaries_of(path: Path) -> list[Path]:
    """The files :func:`tmp_path` named for ``path`` in any process (``x.<pid>.tmp.npy``): writes of ``path``
    that never reached their rename. Nothing else matches, however alike its name."""
    path = Path(path)
    head, tail = f"{path.stem}.", f".tmp{path.suffix}"
    return sorted(p for p in path.parent.glob(f"{head}*{tail}")
                  if p.name[len(head):-len(tail)].isdigit() and p.is_file())


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


class FolderLock:
    """An exclusive lock on a folder a command writes into (``flock`` on ``<folder>/<name>``), held while in
    the ``with`` block. Another holder makes it fail at once, naming that holder's process id. The lock
    file is removed on exit; a taker checks that the file it locked is still the one at that name, so a
    removal never lets two holders in."""

    def __init__(self, folder: Path, name: str, what: str):
        self.path, self.what, self.fd = Path(folder) / name, what, None

    def __enter__(self) -> "FolderLock":
        import fcntl
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RuntimeError(f"{self.path.parent}: another {self.what} (pid {holder}) is writing into this "
                                   f"folder; wait for it to end or choose another folder") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder before removed it as we opened it: take the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)  # while still held: a taker that opened it sees it gone and retries
        os.close(self.fd)
