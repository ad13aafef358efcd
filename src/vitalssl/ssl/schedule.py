"""Learning-rate schedule: linear warmup, then cosine decay to zero, per optimizer step."""

from __future__ import annotations

import math


def lr_at(step: int, peak_lr: float, warmup_steps: int, total_steps: int) -> float:
    """LR for 0-based ``step``.

    Warmup rises linearly to ``peak_lr`` at the end of step ``warmup_steps - 1``
    (step 0 already trains, at ``peak_lr / warmup_steps``); then a half cosine
    falls from ``peak_lr`` towards 0 at ``total_steps``.
    """
    if step < 0 or total_steps <= 0:
        raise ValueError(f"step {step} / total_steps {total_steps} out of range")
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return 0.5 * peak_lr * (1.0 + math.cos(math.pi * progress))
