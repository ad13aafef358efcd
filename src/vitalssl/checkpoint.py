"""Checkpoints: atomic writes, safe loading (``weights_only=True``), rebuilding the model from the file.

Keys (the guide's, plus ``model_config`` and ``global_step``)::

    epoch, encoder_state_dict, decoder_state_dict, optimizer_state_dict,
    best_val_loss, metrics, config, model_config, global_step

``encoder_state_dict`` loads into ``TinyTimeMixerModel(TinyTimeMixerConfig(**ttm_config))``
where ``ttm_config`` is stored under ``config["ttm_config"]``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from .config import ModelConfig, from_dict

CHECKPOINT_KEYS = ("epoch", "encoder_state_dict", "decoder_state_dict", "optimizer_state_dict",
                   "best_val_loss", "metrics", "config", "model_config", "global_step")


class CheckpointError(RuntimeError):
    pass


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` to a temporary name, then rename: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load with ``weights_only=True``; a file that needs arbitrary pickled code is refused."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refusing to load {path}: it needs arbitrary Python objects to unpickle, which "
                              f"could run code. Only checkpoints of plain tensors and containers are loaded. "
                              f"({str(e).splitlines()[0]})") from e


def rebuild_model(ckpt: dict):
    """A :class:`vitalssl.model.MaskedTTM` with the checkpoint's weights, from the checkpoint alone."""
    from .model import MaskedTTM

    missing = [k for k in ("model_config", "encoder_state_dict", "decoder_state_dict") if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint lacks {', '.join(missing)}")
    model = MaskedTTM(from_dict(ModelConfig, dict(ckpt["model_config"]), "model_config"))
    model.encoder.load_state_dict(ckpt["encoder_state_dict"])
    model.decoder.load_state_dict(ckpt["decoder_state_dict"])
    return model
