"""Masking, the model (shapes, no leakage, gradient flow), the losses against references, the LR schedule."""

import math

import numpy as np
import pytest
import torch

from dataclasses import replace

from vitalssl.ssl.config import ModelConfig, STFTConfig
from vitalssl.ssl.losses import log_magnitude, masked_mse, mrstft_loss, msm_objective
from vitalssl.ssl.masking import block_masking, make_mask, n_hidden, patchify, random_masking, sample_mask, unpatchify
from vitalssl.ssl.model import MaskedTTM
from vitalssl.ssl.schedule import lr_at

MODEL = ModelConfig(context_length=1250, patch_length=125, patch_stride=125, num_input_channels=2, d_model=192,
                    num_layers=3, expansion_factor=2, dropout=0.2, mode="common_channel", gated_attn=True,
                    scaling=None, decoder_hidden=0, mask_token=False)
STFT = STFTConfig(fft_sizes=(512, 1024, 2048), hop_sizes=(50, 120, 240), win_lengths=(240, 600, 1200), eps=1e-3)


# --------------------------------------------------------------------------- masking

def test_patchify_round_trip_and_layout():
    x = torch.arange(2 * 3 * 20, dtype=torch.float32).reshape(2, 3, 20)
    p = patchify(x, 5)
    assert p.shape == (2, 3, 4, 5) and torch.equal(p[1, 2, 3], x[1, 2, 15:20])
    assert torch.equal(unpatchify(p), x)
    with pytest.raises(ValueError, match="not a multiple"):
        patchify(x, 6)


@pytest.mark.parametrize("ratio", [0.1, 0.4, 0.6, 0.9])
@pytest.mark.parametrize("kind", ["random", "block"])
def test_masks_hide_exact_counts(kind, ratio):
    m = make_mask(kind, 256, 10, ratio, torch.Generator().manual_seed(0))
    assert m.dtype == torch.bool and m.shape == (256, 10)
    assert (m.sum(1) == n_hidden(10, ratio)).all()


def test_block_masks_are_contiguous_and_cover_all_positions():
    m = block_masking(2000, 10, 0.4, torch.Generator().manual_seed(1))
    for row in m[:200]:
        idx = torch.nonzero(row).flatten()
        assert (idx[-1] - idx[0] + 1) == len(idx) == 4
    assert (m.any(0)).all()  # every patch position can be hidden
    starts = m.float().argmax(1)
    assert set(starts.tolist()) == set(range(7))


def test_random_masks_are_uniform_over_positions():
    m = random_masking(20000, 10, 0.4, torch.Generator().manual_seed(2))
    freq = m.float().mean(0)
    assert torch.allclose(freq, torch.full((10,), 0.4), atol=0.02)


def test_sample_mask_polarity():
    m = torch.tensor([[True, False, False, True]])
    s = sample_mask(m, 3)
    assert s.shape == (1, 1, 12)
    assert s[0, 0].tolist() == [True] * 3 + [False] * 6 + [True] * 3


# --------------------------------------------------------------------------- model

def test_latent_and_output_shapes():
    model = MaskedTTM(MODEL).eval()
    x = torch.randn(4, 2, 1250)
    z, loc, scale = model.encode(x)
    assert z.shape == (4, 2, 10, 192)
    mask = make_mask("random", 4, 10, 0.4)
    assert model(x, mask).shape == (4, 2, 1250)
    with pytest.raises(ValueError, match="context_length"):
        model(torch.randn(4, 2, 1000), mask)
    with pytest.raises(ValueError, match="mask shape"):
        model(x, mask[:, :5])


@pytest.mark.parametrize("scaling", [None, "std", "mean"])
@pytest.mark.parametrize("mask_token", [False, True])
@pytest.mark.parametrize("kind", ["random", "block"])
def test_hidden_content_does_not_leak(scaling, mask_token, kind):
    """Changing the true values inside hidden patches leaves the output unchanged."""
    torch.manual_seed(0)
    cfg = replace(MODEL, scaling=scaling, mask_token=mask_token, d_model=32, num_layers=2, mode="mix_channel")
    model = MaskedTTM(cfg).eval()
    if mask_token:
        with torch.no_grad():
            model.decoder.mask_token.fill_(0.7)
    x = torch.randn(8, 2, 1250)
    mask = make_mask(kind, 8, 10, 0.4, torch.Generator().manual_seed(3))
    hidden = sample_mask(mask, 125).expand_as(x)
    x2 = x.clone()
    x2[hidden] = torch.randn(int(hidden.sum())) * 50 + 20
    with torch.no_grad():
        a, b = model(x, mask), model(x2, mask)
    assert torch.equal(a, b)
    # and the visible part does matter
    x3 = x.clone()
    x3[~hidden] += 1.0
    with torch.no_grad():
        assert not torch.allclose(model(x3, mask), a)


@pytest.mark.parametrize("decoder_hidden,mask_token,mode", [(0, False, "common_channel"), (64, True, "mix_channel")])
def test_gradient_reaches_every_parameter(decoder_hidden, mask_token, mode):
    torch.manual_seed(0)
    cfg = replace(MODEL, decoder_hidden=decoder_hidden, mask_token=mask_token, mode=mode, d_model=32, dropout=0.0)
    model = MaskedTTM(cfg)
    x = torch.randn(4, 2, 1250)
    mask = make_mask("random", 4, 10, 0.4)
    msm_objective(model(x, mask), x, mask, 125, STFT, 0.3)["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- losses

def test_masked_mse_matches_float64_reference():
    g = torch.Generator().manual_seed(4)
    recon, target = torch.randn(6, 2, 1250, generator=g), torch.randn(6, 2, 1250, generator=g)
    mask = make_mask("random", 6, 10, 0.4, g)
    r, t, m = recon.double().numpy(), target.double().numpy(), mask.numpy()
    hid = np.repeat(m, 125, axis=1)[:, None, :].repeat(2, axis=1)
    ref = ((r - t) ** 2)[hid].mean()
    assert masked_mse(recon, target, mask, 125).item() == pytest.approx(ref, rel=1e-5)
    # only hidden samples count
    t2 = target.clone()
    t2[~sample_mask(mask, 125).expand_as(t2)] += 100
    assert masked_mse(recon, t2, mask, 125).item() == pytest.approx(ref, rel=1e-5)


def test_masked_mse_guards_empty_mask_and_zero_fill_baseline():
    x = torch.randn(3, 2, 1250)
    assert masked_mse(x, x + 1, torch.zeros(3, 10, dtype=torch.bool), 125).item() == 0.0
    z = torch.randn(64, 2, 1250)
    z = (z - z.mean(-1, keepdim=True)) / z.std(-1, keepdim=True, unbiased=False)
    m = make_mask("random", 64, 10, 0.4)
    assert masked_mse(torch.zeros_like(z), z, m, 125).item() == pytest.approx(1.0, abs=0.02)


def test_stft_loss_of_a_scaled_signal_is_log_of_the_scale():
    """For c*x vs x every bin above the floor differs by exactly log(c)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 2, 1250, generator=g, dtype=torch.float64)
    cfg = replace(STFT, eps=1e-30)
    for c in (2.0, 0.25):
        assert mrstft_loss(c * x, x, cfg).item() == pytest.approx(abs(math.log(c)), rel=1e-5)
    assert mrstft_loss(x, x, STFT).item() == 0.0


def test_stft_loss_of_a_tone_against_zeros_is_analytic():
    """A bin-centred unit tone against silence: every bin is at the floor except the tone's.

    With the window-normalised magnitude, interior frames hold 0.5 at the tone's bin
    and a Hann window's two neighbours hold 0.25; the L1 of log-magnitudes is then
    computable bin by bin.
    """
    fft, hop, win = 512, 128, 512
    L = 4096
    k = 32  # bin index: 32 * fs / 512
    t = torch.arange(L, dtype=torch.float64)
    tone = torch.cos(2 * math.pi * k * t / fft)
    eps = 1e-12
    got = (log_magnitude(tone[None], fft, hop, win, eps) - log_magnitude(torch.zeros(1, L, dtype=torch.float64),
                                                                          fft, hop, win, eps)).abs()
    floor = 0.5 * math.log(eps)
    interior = got[0, :, 4:-4]  # frames that do not touch the padded edges
    expect = torch.zeros(fft // 2 + 1, dtype=torch.float64)
    expect[k] = math.log(0.5) - floor
    expect[k - 1] = expect[k + 1] = math.log(0.25) - floor
    other = torch.ones(fft // 2 + 1, dtype=torch.bool)
    other[k - 1:k + 2] = False
    assert torch.allclose(interior[~other].T, expect[~other].expand(interior.shape[1], 3), rtol=1e-6)
    # the rest of the spectrum holds only leakage far below the tone
    assert (interior[other] < 0.5 * (expect[k].item())).all()


def test_stft_loss_matches_numpy_reference():
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(2, 1250, generator=g, dtype=torch.float64), torch.randn(2, 1250, generator=g, dtype=torch.float64)
    fft, hop, win, eps = 512, 50, 240, 1e-3

    def ref_logmag(sig):
        w = np.hanning(win + 1)[:-1]  # periodic Hann, as torch.hann_window
        wpad = np.zeros(fft)
        wpad[(fft - win) // 2:(fft - win) // 2 + win] = w
        s = np.pad(sig, fft // 2, mode="reflect")
        frames = np.stack([s[i:i + fft] for i in range(0, len(s) - fft + 1, hop)])
        S = np.fft.rfft(frames * wpad, axis=-1) / w.sum()
        return 0.5 * np.log(np.maximum(np.abs(S) ** 2, eps))

    ref = np.mean([np.abs(ref_logmag(a) - ref_logmag(b)).mean() for a, b in zip(x.numpy(), y.numpy())])
    got = mrstft_loss(x[None], y[None], STFTConfig((fft,), (hop,), (win,), eps)).item()
    assert got == pytest.approx(ref, rel=1e-6)  # the loss runs in float32


@pytest.mark.parametrize("fft,hop,win", [(512, 50, 240), (1024, 120, 600), (2048, 240, 1200), (63, 16, 31)])
def test_stft_loss_gradient_matches_autograd_reference(fft, hop, win):
    """The closed-form backward equals autograd through torch.stft, float64, bins above and below the floor."""
    g = torch.Generator().manual_seed(8)
    t = torch.randn(3, 2, 1250, generator=g, dtype=torch.float64)
    r = (t + 0.5 * torch.randn(3, 2, 1250, generator=g, dtype=torch.float64)).requires_grad_()
    cfg = STFTConfig((fft,), (hop,), (win,), 1e-3)

    def ref_logmag(x):
        S = torch.stft(x.reshape(-1, 1250), fft, hop, win, torch.hann_window(win, dtype=x.dtype), center=True,
                       pad_mode="reflect", return_complex=True) / torch.hann_window(win, dtype=x.dtype).sum()
        return 0.5 * torch.log((S.real ** 2 + S.imag ** 2).clamp_min(cfg.eps))

    ref_r = r.detach().clone().requires_grad_()
    expect = (ref_logmag(ref_r) - ref_logmag(t)).abs().mean()
    expect.backward()
    above = (ref_logmag(r.detach()) > 0.5 * math.log(cfg.eps)).double().mean()
    assert 0.01 < above < 0.99  # bins on both sides of the floor
    # the loss casts to float32; run the function itself in float64 to compare gradients tightly
    import vitalssl.ssl.losses as L
    ref = L._log_power(L._frames(t.reshape(-1, 1250), fft, hop, win), fft, cfg.eps)[2]
    got = L._LogSpectralL1.apply(L._frames(r.reshape(-1, 1250), fft, hop, win), ref, fft, cfg.eps)
    got.backward()
    assert got.item() == pytest.approx(expect.item(), rel=1e-12)
    assert torch.allclose(r.grad, ref_r.grad, rtol=1e-9, atol=1e-14)
    # and the float32 loss as training calls it
    r.grad = None
    mrstft_loss(r, t, cfg).backward()
    assert torch.allclose(r.grad, ref_r.grad, rtol=1e-3, atol=1e-9)


def test_stft_loss_gradient_is_finite_and_autograds_on_silent_stretches():
    """Frames of exact zeros (zero power, below the floor) get autograd's gradient there: 0, never 0/0."""
    t = torch.randn(2, 2, 1250, generator=torch.Generator().manual_seed(3))
    r = t.clone()
    r[:, :, 300:900] = 0.0  # a silent stretch: whole frames of exact zeros at every resolution
    r.requires_grad_()
    mrstft_loss(r, t, STFT).backward()
    ref_r = r.detach().clone().requires_grad_()

    def ref_logmag(x, f, h, w):
        S = torch.stft(x.reshape(-1, 1250), f, h, w, torch.hann_window(w), center=True, pad_mode="reflect",
                       return_complex=True) / torch.hann_window(w).sum()
        return 0.5 * torch.log((S.real ** 2 + S.imag ** 2).clamp_min(STFT.eps))

    torch.stack([(ref_logmag(ref_r, f, h, w) - ref_logmag(t, f, h, w)).abs().mean()
                 for f, h, w in zip(STFT.fft_sizes, STFT.hop_sizes, STFT.win_lengths)]).mean().backward()
    assert torch.isfinite(r.grad).all()
    assert torch.allclose(r.grad, ref_r.grad, rtol=1e-3, atol=1e-9)


def test_objective_combines_terms():
    g = torch.Generator().manual_seed(7)
    x, r = torch.randn(2, 2, 1250, generator=g), torch.randn(2, 2, 1250, generator=g)
    m = make_mask("block", 2, 10, 0.4, g)
    t = msm_objective(r, x, m, 125, STFT, 0.3)
    assert t["loss"].item() == pytest.approx(t["msm"].item() + 0.3 * t["stft"].item(), rel=1e-6)
    assert msm_objective(r, x, m, 125, STFT, 0.0)["stft"].item() == 0.0


# --------------------------------------------------------------------------- schedule

def test_lr_schedule_values():
    peak, warm, total = 5e-4, 10, 100
    assert lr_at(0, peak, warm, total) == pytest.approx(5e-5)
    assert lr_at(9, peak, warm, total) == pytest.approx(peak)
    assert lr_at(10, peak, warm, total) == pytest.approx(peak)
    assert lr_at(55, peak, warm, total) == pytest.approx(0.5 * peak)  # half-way through the cosine
    assert lr_at(99, peak, warm, total) == pytest.approx(0.5 * peak * (1 + math.cos(math.pi * 89 / 90)))
    assert lr_at(99, peak, warm, total) < 2e-7
    lrs = [lr_at(s, peak, warm, total) for s in range(total)]
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10])) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(3, peak, 0, 10) == pytest.approx(0.5 * peak * (1 + math.cos(math.pi * 0.3)))
