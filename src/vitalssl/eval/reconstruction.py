"""Reconstruction of hidden patches: the model against the non-learned baselines, per window and channel.

Dimensions: B windows, C channels, L samples, N patches, P patch length.
Masks follow the project's convention (``[B, N]`` bool, True = hidden) and are
drawn from fixed seeds, so every model and every run is scored on the same
hidden patches.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..seeding import EVAL_MASK, SCALE_FIT_MASK, derive_seed
from ..ssl.masking import make_mask, sample_mask
from . import baselines

BASELINES = ("zero_fill", "linear_interpolation", "beat_repeat", "beat_repeat_scaled")
MASK_TYPES = ("random", "block")


def mask_key(kind: str, ratio: float) -> str:
    """Metrics key of a mask setting, e.g. ``random_r40`` (no dot, which DVC reads as nesting)."""
    return f"{kind}_r{round(ratio * 100):02d}"


def fixed_masks(n: int, num_patches: int, ratio: float, kind: str, seed: int, stream: int = EVAL_MASK) -> torch.Tensor:
    """``[n, N]`` masks for one setting, from ``seed`` alone: the same for every model and run."""
    gen = torch.Generator().manual_seed(derive_seed(seed, stream, round(ratio * 1000), MASK_TYPES.index(kind)))
    return make_mask(kind, n, num_patches, ratio, gen)


def window_mse(recon: np.ndarray, x: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """MSE over hidden samples per window and channel: ``[B, C, L]`` x2, ``[B, L]`` -> ``[B, C]``."""
    n_hidden = hidden.sum(axis=1)
    if np.any(n_hidden == 0):
        raise ValueError("a window has no hidden sample")
    se = np.where(hidden[:, None, :], (recon.astype(np.float64) - x) ** 2, 0.0)
    return se.sum(axis=2) / n_hidden[:, None]


def hidden_samples(mask: torch.Tensor, patch_length: int) -> np.ndarray:
    return sample_mask(mask, patch_length)[:, 0].numpy()


@torch.no_grad()
def model_reconstruction(model, x: np.ndarray, mask: torch.Tensor, device) -> np.ndarray:
    """The model's reconstruction ``[B, C, L]`` of ``x`` with ``mask`` hidden (eval mode, no dropout)."""
    model.eval()
    return model(torch.from_numpy(np.ascontiguousarray(x)).to(device), mask.to(device)).float().cpu().numpy()


def baseline_reconstructions(x: np.ndarray, hidden: np.ndarray, scale: np.ndarray | None) -> dict:
    """Every baseline's ``[B, C, L]`` reconstruction; the scaled beat repeat needs the fitted ``scale [C]``."""
    rep = baselines.beat_repeat(x, hidden)
    out = {"zero_fill": baselines.zero_fill(x, hidden),
           "linear_interpolation": baselines.linear_interpolation(x, hidden),
           "beat_repeat": rep}
    if scale is not None:
        out["beat_repeat_scaled"] = baselines.scaled(rep, x, hidden, scale)
    return out


def fit_beat_repeat_scale(read: Callable[[np.ndarray], np.ndarray], n: int, num_patches: int, patch_length: int,
                          ratio: float, kind: str, seed: int, max_windows: int, batch_size: int) -> np.ndarray:
    """Per-channel least-squares scale ``[C]`` of the beat repeat, fitted on train windows with their own masks.

    ``read(indices)`` returns train windows ``[B, C, L]``; up to ``max_windows`` of the
    ``n`` are used, evenly spaced over the file (so every part of the split counts).
    """
    idx = np.unique(np.linspace(0, n - 1, min(n, max_windows)).round().astype(np.int64))
    masks = fixed_masks(len(idx), num_patches, ratio, kind, seed, SCALE_FIT_MASK)
    num = den = 0.0
    for i in range(0, len(idx), batch_size):
        x = read(idx[i:i + batch_size])
        hidden = hidden_samples(masks[i:i + batch_size], patch_length)
        pred = baselines.beat_repeat(x, hidden)
        h = hidden[:, None, :]
        num = num + np.sum(np.where(h, pred * x, 0.0), axis=(0, 2), dtype=np.float64)
        den = den + np.sum(np.where(h, pred * pred, 0.0), axis=(0, 2), dtype=np.float64)
    if np.any(den <= 0):
        raise ValueError("cannot fit the beat-repeat scale: it predicts zero in every hidden train sample")
    return num / den


def reconstruction_errors(model, read: Callable[[np.ndarray], np.ndarray], n: int, mask: torch.Tensor,
                          patch_length: int, scale: np.ndarray, device, batch_size: int, progress=None) -> dict:
    """Per-window, per-channel hidden-sample MSE ``[n, C]`` of the model and each baseline on one split."""
    errs: dict[str, list] = {}
    for i in range(0, n, batch_size):
        sel = np.arange(i, min(i + batch_size, n))
        x = read(sel)
        m = mask[i:i + len(sel)]
        hidden = hidden_samples(m, patch_length)
        recons = {"model": model_reconstruction(model, x, m, device),
                  **baseline_reconstructions(x, hidden, scale)}
        for name, r in recons.items():
            errs.setdefault(name, []).append(window_mse(r, x, hidden))
        if progress is not None:
            progress.update(len(sel))
    return {k: np.concatenate(v) for k, v in errs.items()}
