"""With fp16 loss scaling, a non-finite gradient norm is an overflow to skip, not an error."""

import pytest
import torch

from vitalssl.ssl.model import MaskedTTM
from vitalssl.ssl.train import NonFiniteLossError, RunContext, build_optimizer, train_one_epoch


class OverflowingScaler:
    """Stands in for ``torch.amp.GradScaler`` on CPU: its scale overflows the gradients every step.

    Like GradScaler, ``step`` skips the optimizer step when a gradient is not finite and
    ``update`` then lowers the scale.
    """

    def __init__(self, enabled: bool):
        self.enabled, self.scale_value, self.skipped, self.updates = enabled, 1e38, 0, 0

    def is_enabled(self):
        return self.enabled

    def scale(self, loss):
        return loss * self.scale_value * 1e10   # inf in float32: every gradient overflows

    def unscale_(self, optimizer):
        pass

    def step(self, optimizer):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if all(torch.isfinite(gr).all() for gr in grads):
            optimizer.step()
        else:
            self.skipped += 1

    def update(self):
        self.updates += 1
        self.scale_value *= 0.5


def _setup(tiny_cfg, enabled):
    cfg = tiny_cfg(stft_weight=0.0)
    torch.manual_seed(0)
    model = MaskedTTM(cfg.model)
    opt = build_optimizer(model, cfg)
    batches = [torch.randn(4, 2, 1250) for _ in range(3)]
    ctx = RunContext(cfg, torch.device("cpu"), OverflowingScaler(enabled), 3, 9, 1)
    return model, opt, batches, ctx


def test_enabled_scaler_skips_overflowing_steps_and_lowers_the_scale(tiny_cfg):
    model, opt, batches, ctx = _setup(tiny_cfg, enabled=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = train_one_epoch(model, batches, opt, ctx, epoch=0)
    assert ctx.scaler.skipped == 3 and ctx.scaler.updates == 3 and ctx.scaler.scale_value == 1e38 / 8
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # no step was taken
    assert torch.isfinite(torch.tensor(out["loss"]))


def test_disabled_scaler_raises_on_a_non_finite_gradient_norm(tiny_cfg):
    model, opt, batches, ctx = _setup(tiny_cfg, enabled=False)
    with pytest.raises(NonFiniteLossError, match="non-finite gradient norm at epoch 1, batch 1"):
        train_one_epoch(model, batches, opt, ctx, epoch=0)
