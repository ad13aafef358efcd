"""Losses: masked-patch MSE and multi-resolution STFT (log-magnitude L1).

Dimensions: B batch, C channels, L samples, N patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def _frames(x: torch.Tensor, fft: int, hop: int, win: int) -> torch.Tensor:
    """``[M, L]`` -> window-weighted frames ``[M, T, win]``, the window normalised to unit sum.

    Frames follow ``torch.stft(center=True, pad_mode="reflect")``: reflect-pad ``fft // 2`` on
    each side, frame of ``fft`` samples every ``hop``, the ``win``-sample window centred in it.
    Only the ``win`` windowed samples are kept; ``rfft(..., n=fft)`` zero-pads them back, which
    changes the phase, never the magnitude.
    """
    L = x.shape[-1]
    if fft // 2 >= L:
        raise ValueError(f"STFT fft size {fft} needs signals longer than {fft // 2} samples, got {L}")
    w = _hann(win, x.device, x.dtype)
    padded = F.pad(x.unsqueeze(1), (fft // 2, fft // 2), mode="reflect").squeeze(1)
    n_frames = 1 + (L + 2 * (fft // 2) - fft) // hop
    start = (fft - win) // 2
    return padded[..., start: start + (n_frames - 1) * hop + win].unfold(-1, win, hop) * (w / w.sum())


def _log_power(frames: torch.Tensor, fft: int, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frames ``[M, T, win]`` -> spectrum ``S``, power ``|S|^2`` and ``0.5 log max(|S|^2, eps)``, ``[M, T, F]``."""
    S = torch.fft.rfft(frames, n=fft)
    power = S.real.square() + S.imag.square()
    return S, power, 0.5 * torch.log(power.clamp_min(eps))


def log_magnitude(x: torch.Tensor, fft: int, hop: int, win: int, eps: float) -> torch.Tensor:
    """``[M, L]`` -> log |STFT| ``[M, F, T]``, magnitude ``sqrt(max(|S / sum(w)|^2, eps))``.

    Same magnitudes as ``torch.stft(x, fft, hop, win, hann_window(win), center=True,
    pad_mode="reflect")``: frames of ``win`` samples are cut with ``unfold`` and
    zero-padded to ``fft`` by ``rfft`` (centring the window inside the FFT frame, as
    ``torch.stft`` does, only adds a linear phase). This is cheaper to differentiate
    than ``torch.stft``'s strided framing.

    Dividing by the window's sum calibrates every resolution alike (a unit-amplitude
    tone peaks at 0.5), so ``eps`` is a power floor in the signal's own units. The
    floor matters: below it bins are treated as empty. With a floor far under the
    signal band (1e-7), the near-empty out-of-band bins, whose log gradient grows as
    1/|S|, dominate the gradient and the masked-MSE term stops learning.
    Needs ``fft // 2 < L`` (reflect padding).
    """
    return _log_power(_frames(x, fft, hop, win), fft, eps)[2].transpose(-1, -2)


class _LogSpectralL1(torch.autograd.Function):
    """``mean |0.5 log max(|rfft(frames, n)|^2, eps) - ref|`` with a hand-written backward.

    Autograd through ``rfft`` and the complex power splits the gradient into real and
    imaginary parts, zero-fills, recombines and runs a complex-to-complex FFT: on the CPU
    that chain cost over three times the forward. The gradient in closed form is one
    complex scale and one inverse real FFT. With ``g_k = dL/dRe S_k + i dL/dIm S_k``:

        g_k = sign(d_k) [|S_k|^2 >= eps] S_k / |S_k|^2 / numel        (d = log-magnitude - ref)
        dL/dframes_n = Re sum_{k=0..n/2} g_k exp(+2 pi i k n / fft) = fft * irfft(h * g)_n

    where ``h`` is 1 at DC and Nyquist and 1/2 elsewhere (irfft counts interior bins twice).
    The subgradients at the kinks (``d = 0``, ``|S|^2 = eps``) are autograd's: 0 and pass-through.
    """

    @staticmethod
    def forward(ctx, frames: torch.Tensor, ref: torch.Tensor, fft: int, eps: float) -> torch.Tensor:
        S, power, logm = _log_power(frames, fft, eps)
        diff = logm - ref
        loss = diff.abs().mean()
        if ctx.needs_input_grad[0]:
            h = torch.full((S.shape[-1],), fft / diff.numel() / 2, device=S.device, dtype=power.dtype)
            h[0] *= 2
            if fft % 2 == 0:
                h[-1] *= 2
            # in place: diff, power and S are this call's own temporaries
            floored = power < eps
            # divide by the floored power: a bin of exactly zero power (a silent frame) would give 0/0
            coef = diff.sign_().div_(power.clamp_min_(eps)).masked_fill_(floored, 0.0).mul_(h)
            ctx.save_for_backward(S.mul_(coef))
            ctx.fft, ctx.win = fft, frames.shape[-1]
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (g,) = ctx.saved_tensors
        return torch.fft.irfft(g * grad, n=ctx.fft)[..., :ctx.win], None, None, None


def mrstft_loss(recon: torch.Tensor, target: torch.Tensor, cfg: STFTConfig) -> torch.Tensor:
    """Mean over resolutions of the L1 distance between log-magnitude spectrograms of ``[B, C, L]`` signals.

    Computed in float32 whatever the autocast dtype.
    """
    if recon.shape != target.shape:
        raise ValueError(f"recon shape {list(recon.shape)} != target shape {list(target.shape)}")
    r = recon.float().reshape(-1, recon.shape[-1])
    t = target.float().reshape(-1, target.shape[-1])
    terms = []
    with torch.autocast(device_type=r.device.type, enabled=False):
        for f, h, w in zip(cfg.fft_sizes, cfg.hop_sizes, cfg.win_lengths):
            with torch.no_grad():  # the target needs no graph
                ref = _log_power(_frames(t, f, h, w), f, cfg.eps)[2]
            terms.append(_LogSpectralL1.apply(_frames(r, f, h, w), ref, f, cfg.eps))
    return torch.stack(terms).mean()


def msm_objective(recon, target, mask, patch_length: int, stft: STFTConfig, stft_weight: float) -> dict:
    """Named loss terms: ``loss = msm + stft_weight * stft``."""
    msm = masked_mse(recon, target, mask, patch_length)
    spec = mrstft_loss(recon, target, stft) if stft_weight > 0 else recon.new_zeros(())
    return {"loss": msm + stft_weight * spec, "msm": msm, "stft": spec}
