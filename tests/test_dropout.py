"""The 16-bit dropout: its keep rate, scaling, gradient, seeding, and its swap into the models."""

import math

import pytest
import torch
from torch import nn

from vitalssl.ssl.config import ModelConfig
from vitalssl.ssl.dropout import LANES, Dropout16, keep_mask, use_fast_dropout
from vitalssl.ssl.finetune import FineTuneModel
from vitalssl.ssl.model import MaskedTTM, ttm_encoder


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5])
def test_keep_rate_is_one_minus_p_in_every_lane(p):
    torch.manual_seed(0)
    m = keep_mask(torch.ones(1 << 22), p)
    q = round((1 - p) * LANES) / LANES
    assert abs(q - (1 - p)) < 1 / LANES
    kept = (m > 0).view(-1, 4).double().mean(0)          # the four 16-bit lanes of each 64-bit draw
    sigma = math.sqrt(q * (1 - q) / (len(m) / 4))
    assert torch.all((kept - q).abs() < 5 * sigma), kept
    assert m.unique().tolist() == [0.0, pytest.approx(1 / q)]
    assert abs(m.double().mean().item() - 1) < 5 * math.sqrt((1 - q) / q / len(m))   # unbiased


def test_odd_shapes_and_bad_probability():
    torch.manual_seed(1)
    x = torch.randn(3, 5, 7)
    m = keep_mask(x, 0.3)
    assert m.shape == x.shape and m.dtype == x.dtype
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dropout probability"):
            keep_mask(x, p)


def test_forward_backward_eval_and_seed():
    d = Dropout16(0.2)
    x = torch.randn(64, 2, 10, 192, requires_grad=True)
    torch.manual_seed(5)
    y = d(x)
    y.sum().backward()
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.8, rtol=1e-4)
    assert torch.allclose(x.grad, kept.float() / 0.8, rtol=1e-4)       # gradient = the scaled mask
    assert 0.78 < kept.float().mean().item() < 0.82
    torch.manual_seed(5)
    assert torch.equal(d(x), y)                                      # the default generator's seed repeats it
    assert not torch.equal(d(x), y)
    d.eval()
    assert torch.equal(d(x), x)
    assert torch.equal(Dropout16(0.0)(x), x)


def test_models_use_it_and_keep_their_weights_and_eval_output():
    cfg = ModelConfig(context_length=250, patch_length=25, patch_stride=25, num_input_channels=2, d_model=16,
                      num_layers=2, expansion_factor=2, dropout=0.2, mode="common_channel", gated_attn=True,
                      scaling=None, decoder_hidden=0, mask_token=True)
    torch.manual_seed(0)
    model = MaskedTTM(cfg)
    kinds = [type(m) for m in model.modules() if isinstance(m, nn.Dropout)]
    assert kinds and all(k is Dropout16 for k in kinds)
    assert all(m.p == 0.2 for m in model.modules() if isinstance(m, nn.Dropout))

    from tsfm_public.models.tinytimemixer import TinyTimeMixerModel
    from vitalssl.ssl.model import ttm_config
    plain = TinyTimeMixerModel(ttm_config(cfg))
    assert any(type(m) is nn.Dropout for m in plain.modules())
    assert plain.state_dict().keys() == ttm_encoder(cfg).state_dict().keys()
    plain.load_state_dict(model.encoder.state_dict())
    x = torch.randn(4, 250, 2)
    assert torch.equal(plain.eval()(past_values=x).last_hidden_state,
                       model.encoder.eval()(past_values=x).last_hidden_state)

    head = FineTuneModel(plain, cfg, "regression", 1)                # an encoder built elsewhere is swapped too
    assert not any(type(m) is nn.Dropout for m in head.modules())


def test_fast_false_puts_torch_dropout_back_with_the_same_p():
    net = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.3), nn.Sequential(nn.Dropout(0.1), nn.ReLU()))
    use_fast_dropout(net)
    assert [type(m) for m in net.modules() if isinstance(m, nn.Dropout)] == [Dropout16, Dropout16]
    use_fast_dropout(net, fast=False)
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert [type(m) for m in drops] == [nn.Dropout, nn.Dropout] and [m.p for m in drops] == [0.3, 0.1]
