"""Dropout whose keep mask costs 16 random bits per element on CPU.

On CPU, ``torch.nn.Dropout`` draws its mask with ``bernoulli_``, which is about 30% of a
pretraining step of this model on 2 cores (the TTM backbone has 12 dropout layers; see
``benchmarks/bench_pretrain.py`` and docs/benchmarks.md). :class:`Dropout16` draws the same
kind of mask from 64-bit random integers cut into four 16-bit lanes, about six times
faster. An element is kept when its lane is below ``k = round((1 - p) * 2**16)``, so the
keep probability is ``q = k / 2**16`` (``p = 0.2``: q = 0.8000030), and kept elements are
scaled by ``1 / q``: the expectation equals the input exactly. On other devices, where the
native kernel is fast and fused, and in eval mode it is ``nn.functional.dropout``.

    from vitalssl.ssl.dropout import use_fast_dropout
    use_fast_dropout(model)          # replaces every nn.Dropout in place; weights unchanged
"""

from __future__ import annotations

import torch
from torch import nn

LANES = 1 << 16


class Dropout16(nn.Dropout):
    """``nn.Dropout`` with a 16-bit keep mask on CPU (an ``nn.Dropout`` subclass, same ``p``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        return x * keep_mask(x, self.p)


def keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Scaled keep mask shaped like ``x``: ``1 / q`` with probability ``q ~ 1 - p``, else 0.

    Drawn from the default generator, so ``torch.manual_seed`` makes it repeatable.
    """
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability {p} is not in [0, 1)")
    k = round((1 - p) * LANES)
    n = x.numel()
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
    lanes = words.view(torch.int16)[:n].view(x.shape)      # int16 is uniform on [-2**15, 2**15)
    return (lanes < k - (LANES >> 1)).to(x.dtype) * (LANES / k)


def use_fast_dropout(module: nn.Module, fast: bool = True) -> nn.Module:
    """Replace each plain ``nn.Dropout`` inside ``module`` by :class:`Dropout16` with the same ``p``;
    with ``fast=False``, put each :class:`Dropout16` back to torch's ``nn.Dropout`` (benchmarks compare the two)."""
    for parent in module.modules():
        for name, child in parent.named_children():
            if fast and type(child) is nn.Dropout:
                setattr(parent, name, Dropout16(child.p, inplace=False))
            elif not fast and isinstance(child, Dropout16):
                setattr(parent, name, nn.Dropout(child.p))
    return module
