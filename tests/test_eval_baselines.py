"""The non-learned baselines on signals whose answer is known."""

import numpy as np
import pytest
import torch

from vitalssl.eval import baselines
from vitalssl.eval.features import dominant_frequency, hand_features
from vitalssl.eval.reconstruction import fixed_masks, hidden_samples, window_mse
from vitalssl.ssl.masking import sample_mask

L, P, N = 1250, 125, 10


def hidden_of(kind, ratio, B, seed=0):
    return hidden_samples(fixed_masks(B, N, ratio, kind, seed), P)


def periodic(B, period, C=2, seed=0):
    """A pure periodic pulse train (a few harmonics) with a different phase per window and channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(L)[None, None, :]
    ph = rng.uniform(0, 2 * np.pi, (B, C, 1))
    x = sum(np.sin(2 * np.pi * h * t / period + h * ph) / h for h in (1, 2, 3))
    return x.astype(np.float64)


def test_zero_fill_error_is_the_hidden_signal_power():
    x = periodic(4, 100.0)
    hidden = hidden_of("random", 0.4, 4)
    err = window_mse(baselines.zero_fill(x, hidden), x, hidden)
    expect = (np.where(hidden[:, None], x ** 2, 0).sum(-1) / hidden.sum(-1)[:, None])
    np.testing.assert_allclose(err, expect, rtol=1e-12)


def test_linear_interpolation_is_exact_on_a_line_and_holds_at_the_edges():
    t = np.arange(L, dtype=np.float64)
    x = np.stack([0.01 * t - 3, -0.002 * t + 1])[None]  # [1, 2, L]
    hidden = np.zeros((1, L), bool)
    hidden[0, 300:500] = True
    out = baselines.linear_interpolation(x, hidden)
    np.testing.assert_allclose(out, x, atol=1e-12)
    hidden[0, :125] = True                                   # a span at the start holds the first visible value
    out = baselines.linear_interpolation(x, hidden)
    np.testing.assert_allclose(out[0, :, :125], np.repeat(x[0, :, 125:126], 125, axis=1))


@pytest.mark.parametrize("period", [100.0, 73.4, 160.25])
def test_beat_period_of_a_pure_periodic_signal(period):
    x = periodic(6, period)
    hidden = hidden_of("random", 0.4, 6, seed=3)
    est = baselines.beat_period(x, hidden)
    np.testing.assert_allclose(est, period, atol=0.3)


@pytest.mark.parametrize("kind,ratio", [("random", 0.4), ("block", 0.4), ("random", 0.6), ("block", 0.2)])
def test_beat_repeat_recovers_a_pure_periodic_signal(kind, ratio):
    x = periodic(5, 100.0)
    hidden = hidden_of(kind, ratio, 5, seed=1)
    out = baselines.beat_repeat(x, hidden, period=np.full(5, 100.0))
    assert window_mse(out, x, hidden).max() < 1e-20
    est = baselines.beat_repeat(x, hidden)                    # period estimated from the visible samples
    assert window_mse(est, x, hidden).max() < 1e-3 * window_mse(baselines.zero_fill(x, hidden), x, hidden).min()


def test_beat_repeat_with_a_fractional_period():
    x = periodic(3, 87.3)
    hidden = hidden_of("random", 0.4, 3)
    out = baselines.beat_repeat(x, hidden, period=np.full(3, 87.3))
    # linear interpolation between samples of a smooth pulse: tiny error, far below zero fill
    assert window_mse(out, x, hidden).max() < 1e-3 * window_mse(baselines.zero_fill(x, hidden), x, hidden).min()


@pytest.mark.parametrize("name", ["zero_fill", "linear_interpolation", "beat_repeat"])
def test_baselines_never_read_hidden_samples(name):
    x = periodic(3, 95.0)
    hidden = hidden_of("random", 0.4, 3)
    y = x.copy()
    y[np.broadcast_to(hidden[:, None], y.shape)] = 1e6        # change every hidden value
    fn = getattr(baselines, name)
    a, b = fn(x, hidden), fn(y, hidden)
    np.testing.assert_array_equal(a[np.broadcast_to(hidden[:, None], a.shape)],
                                  b[np.broadcast_to(hidden[:, None], b.shape)])
    np.testing.assert_array_equal(a[~np.broadcast_to(hidden[:, None], a.shape)], x[~np.broadcast_to(hidden[:, None], x.shape)])


def test_channel_scale_is_the_least_squares_solution():
    rng = np.random.default_rng(0)
    target = rng.standard_normal((8, 2, L))
    pred = np.stack([2.0 * target[:, 0], -0.5 * target[:, 1]], axis=1)
    hidden = hidden_of("random", 0.4, 8)
    np.testing.assert_allclose(baselines.fit_channel_scale(pred, target, hidden), [0.5, -2.0], rtol=1e-12)


def test_fixed_masks_are_seeded_and_follow_the_mask_convention():
    a = fixed_masks(16, N, 0.4, "block", 7)
    assert torch.equal(a, fixed_masks(16, N, 0.4, "block", 7))
    assert not torch.equal(a, fixed_masks(16, N, 0.4, "block", 8))
    assert (a.sum(1) == 4).all()
    np.testing.assert_array_equal(hidden_samples(a, P), sample_mask(a, P)[:, 0].numpy())


def test_dominant_frequency_and_hand_features():
    t = np.arange(L) / 125.0
    x = np.stack([np.sin(2 * np.pi * 1.3 * t), np.sin(2 * np.pi * 2.05 * t) + 0.3 * np.sin(2 * np.pi * 4.1 * t)])[None]
    np.testing.assert_allclose(dominant_frequency(x)[0], [1.3, 2.05], atol=0.0125)
    f = hand_features(x)
    assert f.shape == (1, 20) and np.isfinite(f).all()
    assert f[0, 9] == pytest.approx(1.3, abs=0.0125) and f[0, 19] == pytest.approx(2.05, abs=0.0125)
