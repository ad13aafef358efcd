"""Resumable training state: the run key, load-or-start, the mismatch policy, the work directory.

The work directory (outside DVC's outputs, which ``dvc repro``/``dvc exp run``
clear) holds the outputs so far and ``state.pt``: weights, optimizer and
GradScaler state, history, epoch, and the run key. The key hashes what changes
the numbers: the params (less those that only say where or how often to run, see
:data:`HARMLESS`, with the device's kind and autocast dtype in their place), code
and data; a state made by another run is never continued.

Policies: ``auto`` continues a matching state and otherwise starts fresh,
saying why (the DVC stage and the command line's default); ``require``
(``--resume``) fails unless a matching state exists; ``fresh`` (``--fresh``)
discards any state on purpose. ``auto`` never deletes a state it does not
continue: one that cannot be read, or was made by another run, is moved with that
run's checkpoints beside the work directory (``<work>.corrupt-<time>``,
``<work>.other-run-<time>``), kept for good, and the run starts fresh;
``require`` fails naming the file and leaves it in place.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..config import to_dict
from .checkpoint import CheckpointError, load_checkpoint, save_atomic
from .folders import make_folder, move_aside, remove_own

POLICIES = ("auto", "require", "fresh")
KEY_PARTS = ("config", "code", "data", "world_size")
# params that do not change a single number of the run: where it runs (``device``; its kind, which changes the
# mask stream, and the autocast dtype are keyed instead), how data is fed and how often it logs and saves
HARMLESS = ("device", "amp", "num_workers", "log_interval", "save_interval")


class ResumeMismatchError(RuntimeError):
    """``--resume`` was asked for but there is no usable matching state; the message says why."""


@dataclass(frozen=True)
class RunKey:
    parts: dict
    digest: str

    @classmethod
    def of(cls, **parts) -> "RunKey":
        if sorted(parts) != sorted(KEY_PARTS):
            raise ValueError(f"run key needs {KEY_PARTS}, got {sorted(parts)}")
        return cls(parts, hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest())


def numeric_config(cfg, device_type: str, autocast: str) -> dict:
    """The run key's config part: ``cfg`` without :data:`HARMLESS`, with the device kind and autocast dtype."""
    return {**{k: v for k, v in to_dict(cfg).items() if k not in HARMLESS},
            "device_type": device_type, "autocast": autocast}


def _flat(d, prefix: str) -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}"))
    return out


def key_differences(old: dict, new: dict, most: int = 6) -> list[str]:
    """What differs between two runs' key parts, as ``config.mask_ratio (0.4 -> 0.6)``, ``code``, ``data``."""
    diff = []
    for part in KEY_PARTS:
        a, b = old.get(part), new.get(part)
        if a == b:
            continue
        if part != "config" or not isinstance(a, dict):
            diff.append(part)
            continue
        fa, fb = _flat(a, part), _flat(b, part)
        diff += [f"{k} ({fa.get(k, 'unset')} -> {fb.get(k, 'unset')})" for k in sorted(set(fa) | set(fb))
                 if fa.get(k, "unset") != fb.get(k, "unset")]
    return diff[:most] + ([f"{len(diff) - most} more"] if len(diff) > most else [])


@dataclass
class Progress:
    """Where a run stands: the next epoch to train, the history so far and the best val loss.

    ``aside``: why a state found was not continued and goes aside (``corrupt``, ``other-run``), and ``note``
    what was wrong with it; :func:`prepare_work_dir` moves it.
    """
    start_epoch: int = 0
    history: list = field(default_factory=list)
    best_val: float = math.inf
    aside: str = ""
    note: str = ""


def load_or_start(work_dir: Path, key: RunKey, policy: str, model, optimizer, scaler, device,
                  log=print) -> Progress:
    """Restore a matching ``state.pt`` into ``model``/``optimizer``/``scaler``, or return a fresh start.

    Reads only; :func:`prepare_work_dir` clears the directory for a fresh start afterwards.
    """
    if policy not in POLICIES:
        raise ValueError(f"resume policy must be one of {POLICIES}, got {policy!r}")
    path = Path(work_dir) / "state.pt"
    if policy == "fresh" or not path.exists():
        if policy == "require":
            raise ResumeMismatchError(f"--resume: no resumable state at {path} (run without --resume to start)")
        if policy == "fresh" and path.exists():
            log(f"--fresh: discarding the resumable state in {work_dir}")
        return Progress()
    try:
        state = load_checkpoint(path, map_location=device)
        if not isinstance(state, dict) or not {"epoch", "history", "best_val_loss"} <= set(state):
            raise CheckpointError(f"{path} is not a resumable state (it lacks epoch, history or best_val_loss)")
    except CheckpointError as e:
        if policy == "require":
            raise ResumeMismatchError(f"--resume: {e}") from e
        return Progress(aside="corrupt", note=f"resumable state {path} cannot be read ({e})")
    if state.get("key") != key.digest:
        old = state.get("key_parts")
        diff = key_differences(old, key.parts) if isinstance(old, dict) else []
        msg = f"resumable state {path} was made by another run (differs in: {', '.join(diff) or 'unknown'})"
        if policy == "require":
            raise ResumeMismatchError(f"--resume: {msg}; refusing to resume. Run with --fresh to discard it.")
        return Progress(aside="other-run", note=msg)
    model.encoder.load_state_dict(state["encoder_state_dict"])
    model.decoder.load_state_dict(state["decoder_state_dict"])
    optimizer.load_state_dict(state["optimizer_state_dict"])
    if "scaler_state_dict" in state and scaler.is_enabled():
        scaler.load_state_dict(state["scaler_state_dict"])
    return Progress(state["epoch"] + 1, list(state["history"]), state["best_val_loss"])


def prepare_work_dir(work_dir: Path, progress: Progress, log=print) -> None:
    """A fresh start clears the run's files from the work directory, first moving a state that was not continued
    aside with its run's checkpoints; a resumed run keeps it. Files of other names are never touched."""
    work_dir = Path(work_dir)
    if progress.start_epoch == 0 and work_dir.exists():
        if progress.aside:
            aside = move_aside(work_dir, progress.aside)
            log(f"{progress.note}; moved aside to {aside} (kept), starting fresh")
        remove_own(work_dir)
    make_folder(work_dir)


def save_state(work_dir: Path, checkpoint: dict, history: list, key: RunKey, scaler) -> None:
    """Write ``state.pt``: the epoch's checkpoint plus what continuing needs."""
    save_atomic({**checkpoint, "history": history, "key": key.digest, "key_parts": key.parts,
                 "scaler_state_dict": scaler.state_dict()}, Path(work_dir) / "state.pt")


def remove_work_dir(work_dir: Path, log=print) -> None:
    """Remove a finished run's files from its work directory, and the directory if the run made it and nothing
    else is in it; the log names what was left."""
    left = remove_own(work_dir)
    if left:
        log(f"kept {work_dir}: it holds files the run did not write ({', '.join(left)})")
