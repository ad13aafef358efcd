"""The encoder API and fine-tuning with channel inflation, in both TTM modes."""

import re

import numpy as np
import pytest
import torch

from conftest import make_windows
from vitalssl.ssl.checkpoint import CheckpointError, make_checkpoint, save_atomic
from vitalssl.ssl.encoder import PretrainedEncoder
from vitalssl.ssl.finetune import load_pretrained_with_channel_inflate
from vitalssl.ssl.model import MaskedTTM
from vitalssl.ssl.train import build_optimizer


def tiny_checkpoint(tiny_cfg, path, **model):
    """A checkpoint of a tiny model with non-trivial weights (every tensor perturbed away from its init)."""
    cfg = tiny_cfg(model={"num_layers": 2, **model})
    torch.manual_seed(0)
    m = MaskedTTM(cfg.model)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_atomic(make_checkpoint(m, build_optimizer(m, cfg), cfg, 3, 0.5, {}, 12), path)
    return m.eval(), cfg


def test_encoder_loads_without_optimizer_and_encodes_in_batches(tiny_cfg, tmp_path):
    model, cfg = tiny_checkpoint(tiny_cfg, tmp_path / "m.pt")
    ck = torch.load(tmp_path / "m.pt", weights_only=True)
    del ck["optimizer_state_dict"], ck["decoder_state_dict"]
    torch.save(ck, tmp_path / "enc_only.pt")
    enc = PretrainedEncoder.load(tmp_path / "enc_only.pt", device="cpu")
    x = make_windows(7, seed=3)
    z = enc.encode(x, batch_size=3)
    D, Np = cfg.model.d_model, cfg.model.num_patches
    assert z.shape == (7, 2, Np, D)
    with torch.no_grad():
        ref, _, _ = model.encode(torch.from_numpy(x))
    torch.testing.assert_close(z, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(enc.encode(torch.from_numpy(x), batch_size=100), z, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(enc.embed(x), z.mean(dim=(1, 2)), rtol=1e-5, atol=1e-6)
    e = enc.embed(x, pool="channels", batch_size=2)
    assert e.shape == (7, 2 * D)
    torch.testing.assert_close(e[:, D:], z[:, 1].mean(dim=1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="do not match"):
        enc.encode(make_windows(2, channels=("PPG",)))


def test_random_encoder_is_seeded_and_differs_from_pretrained(tiny_cfg, tmp_path):
    _, cfg = tiny_checkpoint(tiny_cfg, tmp_path / "m.pt")
    x = make_windows(3)
    a, b = PretrainedEncoder.random(cfg.model, 1).embed(x), PretrainedEncoder.random(cfg.model, 1).embed(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, PretrainedEncoder.random(cfg.model, 2).embed(x))
    assert not torch.allclose(a, PretrainedEncoder.load(tmp_path / "m.pt").embed(x))


def test_common_channel_inflation_keeps_ppg_and_ecg_latents(tiny_cfg, tmp_path):
    model, cfg = tiny_checkpoint(tiny_cfg, tmp_path / "m.pt")
    names = ["ACC_X", "PPG", "ACC_Y", "ECG", "ACC_Z"]
    ft = load_pretrained_with_channel_inflate(tmp_path / "m.pt", 2, 5, {"dropout": 0.0}, channel_names=names,
                                              seed=0).eval()
    rep = ft.transfer_report
    assert rep.channel_map == {"PPG": 1, "ECG": 3}
    assert sorted(rep.copied) == sorted(f"encoder.{k}" for k in model.encoder.state_dict())
    assert rep.inflated == {} and all(k.startswith("head.") for k in rep.new)
    assert sorted(rep.dropped) == sorted(f"decoder.{k}" for k in model.decoder.state_dict())
    x2 = torch.from_numpy(make_windows(4, seed=5))
    x5 = torch.randn(4, 5, 1250)
    x5[:, 1], x5[:, 3] = x2[:, 0], x2[:, 1]
    with torch.no_grad():
        z2, _, _ = model.encode(x2)
        z5 = ft.encode(x5)
    torch.testing.assert_close(z5[:, [1, 3]], z2, rtol=1e-5, atol=1e-6)
    assert ft(x5).shape == (4, 1)


def test_mix_channel_inflation_places_pretrained_weights_as_documented(tiny_cfg, tmp_path):
    model, cfg = tiny_checkpoint(tiny_cfg, tmp_path / "m.pt", mode="mix_channel")
    E = cfg.model.expansion_factor
    ft = load_pretrained_with_channel_inflate(tmp_path / "m.pt", 2, 5, seed=0, task="classification",
                                              num_outputs=3)
    rep = ft.transfer_report
    assert rep.channel_map == {"PPG": 3, "ECG": 4}                 # default: pretrained channels last
    src = model.encoder.state_dict()
    assert set(rep.copied) | set(rep.inflated) == {f"encoder.{k}" for k in src}
    assert len(rep.inflated) == 6 * cfg.model.num_layers
    dst = ft.state_dict()
    pos, new = torch.tensor([3, 4]), torch.tensor([0, 1, 2])
    for k, w in src.items():
        d = dst[f"encoder.{k}"]
        m = re.search(r"channel_feature_mixer\.(mlp\.fc1|mlp\.fc2|gating_block\.attn_layer)\.(weight|bias)$", k)
        if m is None:
            torch.testing.assert_close(d, w, rtol=0, atol=0)
            continue
        part = m.group(1, 2)
        if part == ("mlp.fc1", "weight"):
            assert d.shape == (5 * E, 5)
            assert torch.equal(d[:2 * E][:, pos], w) and torch.all(d[:2 * E][:, new] == 0)
            assert d[2 * E:].abs().sum() > 0                       # new hidden units keep their fresh init
        elif part == ("mlp.fc1", "bias"):
            assert torch.equal(d[:2 * E], w)
        elif part == ("mlp.fc2", "weight"):
            assert d.shape == (5, 5 * E)
            assert torch.equal(d[pos][:, :2 * E], w) and torch.all(d[pos][:, 2 * E:] == 0)
            assert d[new].abs().sum() > 0
        elif part == ("mlp.fc2", "bias"):
            assert torch.equal(d[pos], w)
        elif part == ("gating_block.attn_layer", "weight"):
            assert torch.equal(d[pos][:, pos], w)
            assert torch.all(d[new] == 0) and torch.all(d[:, new] == 0)
        else:
            assert torch.equal(d[pos], w) and torch.all(d[new] == 0)
    assert ft(torch.randn(2, 5, 1250)).shape == (2, 3)


def test_mismatches_fail_loudly(tiny_cfg, tmp_path):
    tiny_checkpoint(tiny_cfg, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="do not fit.*patcher"):
        load_pretrained_with_channel_inflate(tmp_path / "m.pt", 2, 5, {"d_model": 24})
    with pytest.raises(ValueError, match="lack the pretrained channel"):
        load_pretrained_with_channel_inflate(tmp_path / "m.pt", 2, 3, channel_names=["A", "PPG", "B"])
    with pytest.raises(ValueError, match="trained on 2 channels"):
        load_pretrained_with_channel_inflate(tmp_path / "m.pt", 3, 5)
    with pytest.raises(ValueError, match="freeze_encoder"):
        load_pretrained_with_channel_inflate(tmp_path / "m.pt", 2, 5, unfreeze_last_n=1)


def test_fine_tuning_a_frozen_inflated_model_learns_and_keeps_frozen_weights(tiny_cfg, tmp_path):
    tiny_checkpoint(tiny_cfg, tmp_path / "m.pt")
    ft = load_pretrained_with_channel_inflate(tmp_path / "m.pt", 2, 5, {"dropout": 0.0}, seed=0,
                                              freeze_encoder=True, unfreeze_last_n=1)
    mixers = ft.encoder.encoder.mlp_mixer_encoder.mixers
    frozen = {n: p.detach().clone() for n, p in ft.named_parameters() if not p.requires_grad}
    assert frozen and all(not p.requires_grad for p in ft.encoder.encoder.patcher.parameters())
    assert all(p.requires_grad for p in mixers[-1].parameters())
    assert all(not p.requires_grad for p in mixers[0].parameters())
    # 5-channel windows whose target is the amplitude of the third (accelerometer) channel
    g = torch.Generator().manual_seed(1)
    t = torch.arange(1250) / 125.0
    amp = torch.rand(64, generator=g) * 2 + 0.5
    x = 0.3 * torch.randn(64, 5, 1250, generator=g)
    x[:, 2] += amp[:, None] * torch.sin(2 * np.pi * 1.5 * t)
    opt = torch.optim.Adam([p for p in ft.parameters() if p.requires_grad], lr=3e-3)
    torch.manual_seed(0)
    losses = []
    for step in range(40):
        loss = ft.loss(ft(x), amp)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    for n, p in ft.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
