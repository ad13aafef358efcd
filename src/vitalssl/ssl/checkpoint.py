"""Checkpoints: what they hold, atomic saving, safe loading (``weights_only=True``), rebuilding the model.

Keys (the guide's, plus ``global_step``)::

    epoch, encoder_state_dict, decoder_state_dict, optimizer_state_dict,
    best_val_loss, metrics, config, global_step

``config`` is the run's whole config, stored once; the model's part is
``config["model"]``. :func:`ttm_config_dict` gives the encoder's
``TinyTimeMixerConfig`` keys, so ``encoder_state_dict`` loads into a plain
``TinyTimeMixerModel`` for fine-tuning.

Every checkpoint saved here also holds ``state_dict_sha256``: for each
``*_state_dict`` in it, a digest of each tensor's dtype, shape and bytes and every
plain value. Loading recomputes the digest of each state dict still present (one
taken out by hand is not missed), so a flipped bit in a tensor is refused, naming
the file.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path

import torch

from ..atomic import atomic_write
from ..config import from_dict, to_dict
from .config import ModelConfig, PretrainConfig

CHECKPOINT_KEYS = ("epoch", "encoder_state_dict", "decoder_state_dict", "optimizer_state_dict",
                   "best_val_loss", "metrics", "config", "global_step")
CHECKSUM_KEY = "state_dict_sha256"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be (safely) loaded; the message names the file."""


def make_checkpoint(model, optimizer, cfg: PretrainConfig, epoch: int, best_val: float, metrics: dict,
                    global_step: int) -> dict:
    """The guide's checkpoint of an (unwrapped) :class:`~vitalssl.ssl.model.MaskedTTM` after 0-based ``epoch``."""
    return {
        "epoch": epoch,
        "encoder_state_dict": model.encoder.state_dict(),
        "decoder_state_dict": model.decoder.state_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "best_val_loss": best_val,
        "metrics": metrics,
        "config": to_dict(cfg),
        "global_step": global_step,
    }


def _feed(h, obj) -> None:
    """Hash ``obj`` (tensors and plain containers) in a canonical order, so equal contents give equal digests."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[" if isinstance(obj, list) else b"(")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    elif obj is None or isinstance(obj, (str, int, float, bool)):
        h.update(repr((type(obj).__name__, obj)).encode())
    else:
        raise TypeError(f"cannot checksum a {type(obj).__name__} in a checkpoint")


def content_digest(obj) -> str:
    """SHA-256 of ``obj`` (a state dict: tensors and plain containers)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def state_dict_digests(ckpt: dict) -> dict:
    return {k: content_digest(v) for k, v in ckpt.items() if k.endswith("_state_dict")}


def save_atomic(obj: dict, path: Path) -> None:
    """``torch.save`` ``obj`` with its checksum to a temporary name, then rename: a reader never sees half a file.

    Saved through a file object: given a path, ``torch.save`` names the archive's folder after the file,
    and the temporary names carry the process id, so the same checkpoint would differ in its bytes."""
    sealed = {**obj, CHECKSUM_KEY: state_dict_digests(obj)}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(sealed, f)

    atomic_write(Path(path), write)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _unpickling_detail(e: BaseException) -> str:
    """The line of torch's ``weights_only`` message that says what failed (past its boilerplate)."""
    lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Check the documentation", "Please file"))]
    return useful[0] if useful else _first_line(e)


def _not_a_checkpoint(path: Path) -> str | None:
    """What is wrong with a file that cannot be a torch checkpoint (empty, cut short, another kind), or None."""
    size = path.stat().st_size
    if size == 0:
        return "it is an empty file (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04"):  # torch's zip container
        return None if zipfile.is_zipfile(path) else (f"it is truncated (a zip container without its end "
                                                      f"record, {size} bytes)")
    if head.startswith(b"\x80"):  # torch's legacy pickle format
        return None
    kind = " (an HTML page)" if head.lstrip().lower().startswith((b"<!doctype html", b"<html")) else ""
    return f"it is not a torch checkpoint{kind}: it starts with {head[:16]!r}"


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load with ``weights_only=True`` and check the checksum; a file that needs arbitrary pickled code, is
    damaged or is not a checkpoint is refused, saying which."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    wrong = _not_a_checkpoint(path)
    if wrong:
        raise CheckpointError(f"cannot read {path}: {wrong}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        why = _unpickling_detail(e)
        if "GLOBAL" not in why:  # not a blocked object: the pickle stream itself is damaged
            raise CheckpointError(f"cannot read {path}: it is not a torch checkpoint or is corrupt "
                                  f"(its pickle stream: {why})") from e
        raise CheckpointError(f"refusing to load {path}: it needs arbitrary Python objects to unpickle, which "
                              f"could run code. Only checkpoints of plain tensors and containers are loaded. "
                              f"({why})") from e
    except (RuntimeError, EOFError, OSError) as e:  # truncated or corrupt zip container
        raise CheckpointError(f"cannot read {path}: it is truncated or corrupt ({_first_line(e)})") from e
    saved = ckpt.pop(CHECKSUM_KEY, {}) if isinstance(ckpt, dict) else {}
    bad = [k for k, v in state_dict_digests(ckpt).items() if isinstance(saved, dict) and k in saved
           and saved[k] != v] if saved else []
    if bad or not isinstance(saved, dict):
        raise CheckpointError(f"refusing to load {path}: {', '.join(bad) or CHECKSUM_KEY} does not match the "
                              f"checksum saved with it (damaged on disk or in a copy)")
    return ckpt


def model_config_of(ckpt: dict) -> ModelConfig:
    try:
        return from_dict(ModelConfig, dict(ckpt["config"]["model"]), "config.model")
    except (KeyError, TypeError) as e:
        raise CheckpointError("checkpoint lacks config.model (not a vitalssl pretraining checkpoint?)") from e


def ttm_config_dict(ckpt: dict) -> dict:
    """The encoder's ``TinyTimeMixerConfig`` as a dict: ``TinyTimeMixerConfig(**ttm_config_dict(ckpt))``."""
    from .model import ttm_config

    return ttm_config(model_config_of(ckpt)).to_dict()


def rebuild_model(ckpt: dict):
    """A :class:`vitalssl.ssl.model.MaskedTTM` with the checkpoint's weights, from the checkpoint alone."""
    from .model import MaskedTTM

    missing = [k for k in ("config", "encoder_state_dict", "decoder_state_dict") if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint lacks {', '.join(missing)}")
    model = MaskedTTM(model_config_of(ckpt))
    model.encoder.load_state_dict(ckpt["encoder_state_dict"])
    model.decoder.load_state_dict(ckpt["decoder_state_dict"])
    return model
