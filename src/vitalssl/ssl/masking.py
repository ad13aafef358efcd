"""Patch masking for masked signal modeling.

Dimensions: B batch, C channels, L samples, N patches, P patch length (L = N * P).

Mask convention (the only one in this project): a bool tensor ``[B, N]`` in
which **True means hidden**. A hidden patch is hidden in every channel; the
model sees zeros (or the learned mask token) there, and the MSM loss is taken
over hidden patches only.
"""

from __future__ import annotations

import torch


def patchify(x: torch.Tensor, patch_length: int) -> torch.Tensor:
    """``[B, C, L]`` -> ``[B, C, N, P]``."""
    B, C, L = x.shape
    if L % patch_length:
        raise ValueError(f"signal length {L} is not a multiple of patch length {patch_length}")
    return x.reshape(B, C, L // patch_length, patch_length)


def unpatchify(p: torch.Tensor) -> torch.Tensor:
    """``[B, C, N, P]`` -> ``[B, C, L]``."""
    B, C, N, P = p.shape
    return p.reshape(B, C, N * P)


def n_hidden(num_patches: int, mask_ratio: float) -> int:
    """Number of hidden patches per sample: ``round(mask_ratio * N)``, the same for every sample."""
    return int(round(mask_ratio * num_patches))


def _draw_device(generator: torch.Generator | None, device) -> torch.device:
    """Where masks are drawn: ``device`` if given, else the generator's device (CPU without one).

    Drawing on the training device keeps the step free of a host-to-device copy; the
    generator must live there too (torch refuses a CPU generator for a CUDA draw).
    """
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else torch.device("cpu")


def random_masking(batch: int, num_patches: int, mask_ratio: float, generator: torch.Generator | None = None,
                   device=None) -> torch.Tensor:
    """``[B, N]`` bool, True = hidden: exactly ``n_hidden`` patches per sample, chosen uniformly."""
    k = n_hidden(num_patches, mask_ratio)
    noise = torch.rand(batch, num_patches, generator=generator, device=_draw_device(generator, device))
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ranks < k


def block_masking(batch: int, num_patches: int, mask_ratio: float, generator: torch.Generator | None = None,
                  device=None) -> torch.Tensor:
    """``[B, N]`` bool, True = hidden: one contiguous span of ``n_hidden`` patches per sample."""
    k = n_hidden(num_patches, mask_ratio)
    dev = _draw_device(generator, device)
    start = torch.randint(0, num_patches - k + 1, (batch, 1), generator=generator, device=dev)
    idx = torch.arange(num_patches, device=dev).unsqueeze(0)
    return (idx >= start) & (idx < start + k)


def make_mask(kind: str, batch: int, num_patches: int, mask_ratio: float,
              generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``[B, N]`` bool mask (True = hidden) of ``kind``, drawn on ``device`` (default: the generator's)."""
    if kind == "random":
        return random_masking(batch, num_patches, mask_ratio, generator, device)
    if kind == "block":
        return block_masking(batch, num_patches, mask_ratio, generator, device)
    raise ValueError(f"unknown mask type {kind!r} (random or block)")


def sample_mask(mask: torch.Tensor, patch_length: int) -> torch.Tensor:
    """``[B, N]`` patch mask -> ``[B, 1, L]`` sample mask (True = hidden), broadcastable over channels."""
    return mask.repeat_interleave(patch_length, dim=1).unsqueeze(1)
