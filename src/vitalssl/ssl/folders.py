"""What a pretraining run may replace or remove: only what it can show it made.

A folder the run creates (the work directory, an output folder published whole)
holds a marker file, :data:`MARKER`. Inside any folder the run removes or
replaces only the names it writes (:func:`is_own_name`: ``best_model.pt``,
``checkpoint_epoch_<n>.pt``, ``training_history.json``, ...); anything else is
the user's and stays. A folder is removed only when it holds the marker and
nothing but the run's names. :func:`check_run_paths` refuses, before any
training, a path argument the run could not use without touching what is not
its own, naming the folder and what is in it.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from ..atomic import atomic_write_text, fsync_dir

MARKER = ".vitalssl-made"
_OWN = re.compile(r"(best_model|last_model|checkpoint_epoch_\d+|state)\.pt|training_(history|config)\.json"
                  r"|loss_curves\.png")


def is_own_name(name: str) -> bool:
    """Whether a file name is one the pretraining writes, or its temporary name (``best_model.tmp.pt``)."""
    base = name.replace(".tmp.", ".", 1) if ".tmp." in name else name.removesuffix(".tmp")
    return name == MARKER or _OWN.fullmatch(base) is not None


def made_here(folder: Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def mark(folder: Path) -> None:
    """Say in ``folder`` that the pretraining made it (and so may remove it once it holds only its files)."""
    atomic_write_text(Path(folder) / MARKER, "made by vitalssl's pretraining, which may replace or remove this "
                                              "folder; files of other names in it are never touched\n")


def make_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) with the marker; an existing folder is used as it is, unmarked."""
    folder = Path(folder)
    if not folder.exists():
        folder.mkdir(parents=True)
        mark(folder)


def foreign_entries(folder: Path) -> list[str]:
    """The entries of ``folder`` that are not the run's files (folders end in ``/``), sorted."""
    return sorted(p.name + "/" if p.is_dir() else p.name for p in Path(folder).iterdir()
                  if p.is_dir() or not is_own_name(p.name))


def describe(entries: list[str], most: int = 4) -> str:
    shown = ", ".join(entries[:most])
    return shown + (f" and {len(entries) - most} more" if len(entries) > most else "")


def own_files(folder: Path) -> list[Path]:
    """The run's files in ``folder`` (not the marker), sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name != MARKER and is_own_name(p.name))


def remove_own(folder: Path) -> list[str]:
    """Remove the run's files from ``folder``, and the folder itself if it carries the marker and nothing else is
    left; returns the entries left that are not the run's."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    for p in own_files(folder):
        p.unlink()
    left = foreign_entries(folder)
    if not left and made_here(folder):
        (folder / MARKER).unlink()
        folder.rmdir()
    return left


def move_aside(folder: Path, why: str) -> Path:
    """Move the run's files of ``folder`` into a new folder beside it, ``<name>.<why>-<time>``, kept for good
    (it has no marker, so no run removes it); returns it."""
    folder = Path(folder)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = folder.with_name(f"{folder.name}.{why}-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = folder.with_name(f"{folder.name}.{why}-{stamp}-{n}")
    aside.mkdir()
    for p in own_files(folder):
        os.replace(p, aside / p.name)
    fsync_dir(aside)
    fsync_dir(folder)
    return aside


# --------------------------------------------------------------------------- start-up checks

def _inside(a: Path, b: Path) -> bool:
    """Whether resolved ``a`` is ``b`` or lies inside it."""
    return a == b or b in a.parents


def _refuse_shared(flag: str, given: Path, p: Path) -> None:
    """A folder that holds more than one run's outputs (the file system's root, the home or current folder, a
    project's root, or one above them) can never be a run's own."""
    cwd = Path.cwd().resolve()
    if p == Path(p.anchor) or p == Path.home().resolve() or _inside(cwd, p) or (p / ".git").exists() \
            or (p / "dvc.yaml").exists():
        what = "the current folder or one above it" if _inside(cwd, p) else "a project root, home or /"
        raise ValueError(f"{flag} {given} is {what}; the run needs a folder of its own "
                         f"(e.g. {given}/foundation_model)")


def _check_output(output: Path, o: Path) -> None:
    if o.exists() and not o.is_dir():
        raise ValueError(f"--output-dir {output} is a file, not a folder; give a folder (created if missing)")
    _refuse_shared("--output-dir", output, o)
    for side in (o.with_name(o.name + ".new"), o.with_name(o.name + ".old")):
        if side.exists() and not (side.is_dir() and made_here(side) and not foreign_entries(side)):
            what = describe(foreign_entries(side)) if side.is_dir() else "a file"
            raise ValueError(f"--output-dir {output}: {side} is in the way of publishing and was not made by "
                             f"the pretraining (it holds {what or 'nothing'}); move it away")
    if o.is_dir():
        clash = [p.name + "/" for p in o.iterdir() if p.is_dir() and is_own_name(p.name)]
        if clash:
            raise ValueError(f"--output-dir {output} holds folder(s) named as the run's files "
                             f"({describe(clash)}); move them away")


def _check_work(work: Path, w: Path) -> None:
    if w.exists() and not w.is_dir():
        raise ValueError(f"--work-dir {work} is a file, not a folder; give a folder (created if missing)")
    _refuse_shared("--work-dir", work, w)
    if w.is_dir() and not made_here(w):
        other = foreign_entries(w)
        if other:
            raise ValueError(f"--work-dir {work} was not made by the pretraining and holds {describe(other)}; "
                             f"give a new or empty folder (the run clears its work folder)")


def check_run_paths(data_dir: Path, output_dir: Path, work_dir: Path, files: dict | None = None) -> None:
    """Refuse, before any training, a path the run cannot use without touching what is not its own.

    ``files``: further outputs, ``{flag: path}`` (``--metrics``, ``--plots``); None values are skipped.
    """
    d, o, w = (Path(p).resolve() for p in (data_dir, output_dir, work_dir))
    _check_output(Path(output_dir), o)
    _check_work(Path(work_dir), w)
    if _inside(w, o) or _inside(o, w):
        raise ValueError(f"--output-dir {output_dir} and --work-dir {work_dir} must be separate folders, "
                         f"neither inside the other (publishing replaces the output folder)")
    for flag, given, p in (("--output-dir", output_dir, o), ("--work-dir", work_dir, w)):
        if _inside(d, p):
            raise ValueError(f"{flag} {given} holds the --data-dir {data_dir}; give a folder of its own")
    seen: dict = {}
    for flag, path in (files or {}).items():
        if path is None:
            continue
        f = Path(path).resolve()
        if f.is_dir():
            raise ValueError(f"{flag} {path} is a folder; give a file name")
        if any(q.exists() and not q.is_dir() for q in f.parents):
            raise ValueError(f"{flag} {path}: a parent of it is a file, not a folder")
        if _inside(f, w):
            raise ValueError(f"{flag} {path} is inside --work-dir {work_dir}, which is removed after the run")
        if f in seen:
            raise ValueError(f"{flag} and {seen[f]} are both {path}")
        seen[f] = flag
