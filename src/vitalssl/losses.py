"""Losses: masked-patch MSE and multi-resolution STFT (log-magnitude L1).

Dimensions: B batch, C channels, L samples, N patches.
"""

from __future__ import annotations

import torch

from .config import STFTConfig
from .masking import sample_mask


def masked_mse(recon: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, patch_length: int) -> torch.Tensor:
    """Mean squared error over hidden samples only.

    ``recon``, ``target``: ``[B, C, L]``; ``mask``: ``[B, N]`` (True = hidden).
    The denominator (hidden samples x channels) is clamped to 1 so an all-visible batch gives 0.
    """
    if recon.shape != target.shape:
        raise ValueError(f"recon shape {list(recon.shape)} != target shape {list(target.shape)}")
    hidden = sample_mask(mask, patch_length).to(recon.dtype)  # [B, 1, L]
    se = (recon - target).pow(2) * hidden
    denom = (hidden.sum() * recon.shape[1]).clamp_min(1.0)
    return se.sum() / denom


_WINDOWS: dict = {}


def _hann(win: int, device, dtype) -> torch.Tensor:
    key = (win, str(device), dtype)
    if key not in _WINDOWS:
        _WINDOWS[key] = torch.hann_window(win, device=device, dtype=dtype)
    return _WINDOWS[key]


def log_magnitude(x: torch.Tensor, fft: int, hop: int, win: int, eps: float) -> torch.Tensor:
    """``[M, L]`` -> log |STFT| ``[M, F, T]``, magnitude ``sqrt(max(|S / sum(w)|^2, eps))``.

    Dividing by the window's sum calibrates every resolution alike (a unit-amplitude
    tone peaks at 0.5), so ``eps`` is a power floor in the signal's own units. The
    floor matters: below it bins are treated as empty. With a floor far under the
    signal band (1e-7), the near-empty out-of-band bins, whose log gradient grows as
    1/|S|, dominate the gradient and the masked-MSE term stops learning.
    Frames are centred with reflect padding (needs ``fft // 2 < L``).
    """
    if fft // 2 >= x.shape[-1]:
        raise ValueError(f"STFT fft size {fft} needs signals longer than {fft // 2} samples, got {x.shape[-1]}")
    w = _hann(win, x.device, x.dtype)
    S = torch.stft(x, n_fft=fft, hop_length=hop, win_length=win, window=w,
                   center=True, pad_mode="reflect", return_complex=True) / w.sum()
    power = S.real.pow(2) + S.imag.pow(2)
    return 0.5 * torch.log(power.clamp_min(eps))


def mrstft_loss(recon: torch.Tensor, target: torch.Tensor, cfg: STFTConfig) -> torch.Tensor:
    """Mean over resolutions of the L1 distance between log-magnitude spectrograms of ``[B, C, L]`` signals.

    Computed in float32 whatever the autocast dtype.
    """
    if recon.shape != target.shape:
        raise ValueError(f"recon shape {list(recon.shape)} != target shape {list(target.shape)}")
    r = recon.float().reshape(-1, recon.shape[-1])
    t = target.float().reshape(-1, target.shape[-1])
    with torch.autocast(device_type=r.device.type, enabled=False):
        terms = [(log_magnitude(r, f, h, w, cfg.eps) - log_magnitude(t, f, h, w, cfg.eps)).abs().mean()
                 for f, h, w in zip(cfg.fft_sizes, cfg.hop_sizes, cfg.win_lengths)]
    return torch.stack(terms).mean()


def msm_objective(recon, target, mask, patch_length: int, stft: STFTConfig, stft_weight: float) -> dict:
    """Named loss terms: ``loss = msm + stft_weight * stft``."""
    msm = masked_mse(recon, target, mask, patch_length)
    spec = mrstft_loss(recon, target, stft) if stft_weight > 0 else recon.new_zeros(())
    return {"loss": msm + stft_weight * spec, "msm": msm, "stft": spec}
