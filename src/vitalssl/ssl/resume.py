"""Resumable training state: the run key, load-or-start, the mismatch policy, the work directory.

The work directory (outside DVC's outputs, which ``dvc repro``/``dvc exp run``
clear) holds the outputs so far and ``state.pt``: weights, optimizer and
GradScaler state, history, epoch, and the run key. The key hashes params, code
and data; a state made by another run is never continued.

Policies: ``auto`` continues a matching state and otherwise starts fresh,
saying why (the DVC stage and the command line's default); ``require``
(``--resume``) fails unless a matching state exists; ``fresh`` (``--fresh``)
discards any state on purpose. A state that cannot be read is never deleted:
``auto`` moves it aside as ``state.pt.corrupt-<time>`` (kept after the run) and
starts fresh, ``require`` fails naming the file and leaves it in place.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import CheckpointError, load_checkpoint, save_atomic

POLICIES = ("auto", "require", "fresh")
CORRUPT_PREFIX = "state.pt.corrupt-"  # an unreadable state moved aside keeps this name (and a time stamp)
KEY_PARTS = ("config", "code", "data", "world_size")


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


@dataclass
class Progress:
    """Where a run stands: the next epoch to train, the history so far and the best val loss."""
    start_epoch: int = 0
    history: list = field(default_factory=list)
    best_val: float = math.inf


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
        aside = path.with_name(f"{CORRUPT_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}")
        path.rename(aside)
        log(f"resumable state {path} cannot be read ({e}); moved aside to {aside}, starting fresh")
        return Progress()
    if state.get("key") != key.digest:
        diff = [k for k in KEY_PARTS if state.get("key_parts", {}).get(k) != key.parts[k]]
        msg = f"resumable state {path} was made by another run (differs in: {', '.join(diff) or 'unknown'})"
        if policy == "require":
            raise ResumeMismatchError(f"--resume: {msg}; refusing to resume. Run with --fresh to discard it.")
        log(msg + "; discarding it and starting fresh")
        return Progress()
    model.encoder.load_state_dict(state["encoder_state_dict"])
    model.decoder.load_state_dict(state["decoder_state_dict"])
    optimizer.load_state_dict(state["optimizer_state_dict"])
    if "scaler_state_dict" in state and scaler.is_enabled():
        scaler.load_state_dict(state["scaler_state_dict"])
    return Progress(state["epoch"] + 1, list(state["history"]), state["best_val_loss"])


def prepare_work_dir(work_dir: Path, progress: Progress) -> None:
    """A fresh start empties the work directory (keeping states moved aside); a resumed run keeps it."""
    work_dir = Path(work_dir)
    if progress.start_epoch == 0 and work_dir.exists():
        for p in work_dir.iterdir():
            if not p.name.startswith(CORRUPT_PREFIX):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    work_dir.mkdir(parents=True, exist_ok=True)


def save_state(work_dir: Path, checkpoint: dict, history: list, key: RunKey, scaler) -> None:
    """Write ``state.pt``: the epoch's checkpoint plus what continuing needs."""
    save_atomic({**checkpoint, "history": history, "key": key.digest, "key_parts": key.parts,
                 "scaler_state_dict": scaler.state_dict()}, Path(work_dir) / "state.pt")


def remove_work_dir(work_dir: Path, log=print) -> None:
    """Remove a finished run's work directory; states moved aside stay, and the log says where."""
    work_dir = Path(work_dir)
    if not work_dir.exists():
        return
    kept = sorted(p for p in work_dir.iterdir() if p.name.startswith(CORRUPT_PREFIX))
    if not kept:
        shutil.rmtree(work_dir, ignore_errors=True)
        return
    for p in work_dir.iterdir():
        if p not in kept:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    log(f"kept {len(kept)} unreadable resumable state(s) moved aside earlier: {', '.join(str(p) for p in kept)}")
