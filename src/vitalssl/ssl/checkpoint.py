"""Checkpoints: what they hold, atomic saving, safe loading (``weights_only=True``), rebuilding the model.

Keys (the guide's, plus ``global_step``)::

    epoch, encoder_state_dict, decoder_state_dict, optimizer_state_dict,
    best_val_loss, metrics, config, global_step

``config`` is the run's whole config, stored once; the model's part is
``config["model"]``. :func:`ttm_config_dict` gives the encoder's
``TinyTimeMixerConfig`` keys, so ``encoder_state_dict`` loads into a plain
``TinyTimeMixerModel`` for fine-tuning.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from ..atomic import atomic_write
from ..config import from_dict, to_dict
from .config import ModelConfig, PretrainConfig

CHECKPOINT_KEYS = ("epoch", "encoder_state_dict", "decoder_state_dict", "optimizer_state_dict",
                   "best_val_loss", "metrics", "config", "global_step")


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


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` to a temporary name, then rename: a reader never sees half a file."""
    atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load with ``weights_only=True``; a file that needs arbitrary pickled code, or is damaged, is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refusing to load {path}: it needs arbitrary Python objects to unpickle, which "
                              f"could run code. Only checkpoints of plain tensors and containers are loaded. "
                              f"({str(e).splitlines()[0]})") from e
    except (RuntimeError, EOFError, OSError) as e:  # truncated or corrupt zip container
        raise CheckpointError(f"cannot read {path}: it is truncated or corrupt "
                              f"({str(e).splitlines()[0]})") from e


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
