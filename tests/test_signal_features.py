"""Beat-derived features measured on windows with planted, known physiology; the shared beat detector."""

import numpy as np
import pytest

from vitalssl.eval.beatfeatures import BEAT_FEATURES, beat_features, fill_missing, respiratory_fit, \
    window_beat_features

FS = 125.0
L = 1250


def planted(rr_s, pat_s=0.2, rise_s=0.12, amps=None, decay_s=0.05, dia=0.4, dia_delay_s=0.3):
    """``(ppg, ecg)`` of one 10 s window: R peaks after the intervals ``rr_s``; each pulse starts ``pat_s``
    after its R peak, rises linearly for ``rise_s`` to its amplitude, decays with time constant
    ``decay_s`` and carries a diastolic wave of height ``dia`` x amplitude ``dia_delay_s`` after its peak."""
    t = np.arange(L) / FS
    r = 0.304 + np.concatenate([[0.0], np.cumsum(rr_s)])      # on the sample grid
    r = r[r < t[-1] - 0.05]
    amps = np.ones(len(r)) if amps is None else np.asarray(amps)[:len(r)]
    ecg = sum(np.exp(-0.5 * ((t - rk) / 0.01) ** 2) + 0.2 * np.exp(-0.5 * ((t - rk - 0.25) / 0.04) ** 2) for rk in r)
    ppg = np.zeros(L)
    for rk, a in zip(r, amps):
        on, top = rk + pat_s, rk + pat_s + rise_s
        rise = np.clip((t - on) / rise_s, 0, 1) * (t <= top)
        fall = np.where(t > top, np.exp(-(t - top) / decay_s), 0.0)
        ppg += a * (rise + fall + dia * np.exp(-0.5 * ((t - top - dia_delay_s) / 0.04) ** 2))
    return ppg, ecg, r


def feats(ppg, ecg):
    return dict(zip(BEAT_FEATURES, window_beat_features(ppg, ecg, FS)))


@pytest.mark.parametrize("pat_s", [0.2, 0.152, 0.283])
def test_planted_pulse_arrival_time_rise_width_and_reflection(pat_s):
    ppg, ecg, _ = planted(np.full(12, 0.8), pat_s=pat_s)
    f = feats(ppg, ecg)
    assert f["pat_ms"] == pytest.approx(1000 * pat_s, abs=8.0)
    assert f["rise_ms"] == pytest.approx(120.0, abs=8.0)
    assert f["width_ms"] == pytest.approx(60.0 + 1000 * 0.05 * np.log(2), abs=8.0)   # T_r / 2 + tau ln 2
    assert f["reflection_ratio"] == pytest.approx(0.4, abs=0.02)
    assert f["pulse_amp"] == pytest.approx(1.0, abs=0.04)   # a sampled top can miss the peak by half a sample
    assert f["hr_bpm"] == pytest.approx(75.0, abs=1e-9)


def test_planted_intervals_give_hr_sdnn_rmssd():
    rr = np.array([0.8, 0.88, 0.72, 0.8, 0.96, 0.8, 0.88, 0.8, 0.72, 0.8])      # whole samples at 125 Hz
    f = feats(*planted(rr)[:2])
    r = planted(rr)[2]
    got = np.diff(r)
    assert f["hr_bpm"] == pytest.approx(60.0 / np.median(got), abs=1e-6)
    assert f["sdnn_ms"] == pytest.approx(1000 * np.std(got, ddof=1), abs=1e-6)
    assert f["rmssd_ms"] == pytest.approx(1000 * np.sqrt(np.mean(np.diff(got) ** 2)), abs=1e-6)
    assert f["sdnn_ms"] > 50 and f["rmssd_ms"] > 80                 # the planted variability, not a constant


def test_planted_amplitude_scales_and_is_read_per_beat():
    ppg, ecg, _ = planted(np.full(12, 0.8), amps=np.full(14, 2.5))
    assert feats(ppg, ecg)["pulse_amp"] == pytest.approx(2.5, rel=0.02)


def test_planted_respiratory_modulation_of_intervals_and_amplitude():
    # RSA: RR = 0.8 s x (1 + 0.06 sin(2 pi 0.25 t)), depth 0.12 peak to peak; amplitude 1 + 0.15 sin(2 pi 0.3 t)
    t, rr = 0.3, []
    while t < 10.5:
        rr.append(round(0.8 * (1 + 0.06 * np.sin(2 * np.pi * 0.25 * t)) * FS) / FS)
        t += rr[-1]
    r = 0.3 + np.concatenate([[0.0], np.cumsum(rr)])
    amps = 1 + 0.15 * np.sin(2 * np.pi * 0.3 * (r + 0.32))
    f = feats(*planted(np.array(rr), amps=amps)[:2])
    assert f["ibi_resp_hz"] == pytest.approx(0.25, abs=0.02)
    assert f["ibi_resp_depth"] == pytest.approx(0.12, abs=0.02)
    assert f["amp_resp_hz"] == pytest.approx(0.3, abs=0.02)
    assert f["amp_resp_depth"] == pytest.approx(0.30, abs=0.03)


def test_respiratory_fit_on_an_exact_series_and_too_few_beats():
    t = np.arange(0, 10, 0.7)
    v = 2.0 + 0.1 * np.sin(2 * np.pi * 0.2 * t + 1.0) + 0.01 * t
    hz, depth = respiratory_fit(t, v)
    assert hz == pytest.approx(0.2, abs=1e-9) and depth == pytest.approx(0.2 / v.mean(), abs=1e-6)
    assert np.isnan(respiratory_fit(t[:5], np.ones(5))).all()


def test_an_inverted_ecg_and_z_scoring_leave_timing_unchanged():
    ppg, ecg, _ = planted(np.full(12, 0.8), pat_s=0.2)
    z = lambda v: (v - v.mean()) / v.std()
    a, b = feats(ppg, ecg), feats(z(ppg), -z(ecg))
    for k in ("hr_bpm", "pat_ms", "rise_ms", "width_ms", "reflection_ratio"):
        assert b[k] == pytest.approx(a[k], abs=1e-6)


def test_a_flat_window_gives_nan_and_missing_values_take_the_train_median():
    f = beat_features(np.zeros((2, 2, L)), 0, 1)
    assert f.shape == (2, len(BEAT_FEATURES)) and np.isnan(f).all()
    tr = np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, np.nan]])
    a, b = fill_missing(tr, np.array([[np.nan, np.nan]]))
    assert a[:, 0].tolist() == [1.0, 3.0, 2.0] and (a[:, 1] == 0).all() and b.tolist() == [[2.0, 0.0]]


def test_the_gate_and_the_evaluation_share_one_beat_detector():
    import vitalssl.data.quality as quality
    import vitalssl.signal as sig
    assert quality.detect_beats is sig.detect_beats and quality.detect_beats_batch is sig.detect_beats_batch
