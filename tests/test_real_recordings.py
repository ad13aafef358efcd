"""The gate on real PPG and ECG recordings (``tests/real_recordings.py``), written as ``.vital`` cases.

Each case holds one real recording in its channel and, in the other, a real recording of the
other kind from another session (no package ships a simultaneous PPG+ECG pair), so the
channel criteria (missing, flat, clipping, amplitude, heart rate, beat coverage) are scored on
the recording's own channel; the pair criteria, which need simultaneous channels, are not.
Windows are the defaults' (10 s, stride 10 s), read through the project's loader.

The windows a person calls clean are written down below, with the reason for each exclusion.
"""

from __future__ import annotations

import numpy as np
import pytest

import real_recordings as rr
from vitalssl.data.demo import write_vital
from vitalssl.data.quality import CHANNEL_CRITERIA, channel_fails
from vitalssl.data.reader import read_case
from vitalssl.data.windows import gate_case

# recording -> {window: why it is not clean}; every other window is clean
NOT_CLEAN = {
    "systole_ppg": {  # the 8-bit ADC's top (255) is reached in these windows (see RAIL below), and:
        15: "the pulse falls to a third of its height within 3 s and stays there",
        23: "an irregular beat (a small early pulse, then a long pause) at 4-6 s",
    },
    "heartpy_data": {},
    "heartpy_data2": {
        0: "no pulse for the first 4 s (the sensor being put on), then motion",
        1: "the sensor is off: a flat line at 0 from 8 s",
        2: "the sensor is off until 5 s",
        3: "motion: one large deflection at 5 s, pulses barely visible",
        4: "no pulse for the first 2 s, then low-amplitude noise",
    },
    "plux_bvp": {},
    "systole_ecg": {},
    "plux_ecg": {},
}
RAIL_LEVEL = 255  # systole_ppg's ADC maximum, in its raw counts
RAIL_FRAC = 0.015  # a window with this fraction of its raw samples on the rail is clipped: the gate must reject it
PARTNER = {"ppg": "systole_ecg", "ecg": "systole_ppg"}


@pytest.fixture(scope="session")
def real_cases(tmp_path_factory, wcfg):
    """{recording: per-window channel fails and measures}, each read back from the ``.vital`` file it was written to."""
    out, folder = {}, tmp_path_factory.mktemp("real")
    for k, (name, (kind, _, _)) in enumerate(rr.RECORDINGS.items()):
        x = rr.load(name)
        other = rr.load(PARTNER[kind])
        if len(other) < len(x):
            other = np.resize(other, len(x))
        other = other[: len(x)]
        ppg, ecg = (x, other) if kind == "ppg" else (other, x)
        path = folder / f"{k + 1}.vital"
        write_vital(path, k + 1, ppg, ecg, None, len(x) / rr.NATIVE_FS)
        sig = read_case(path, k + 1, wcfg.ppg_track, wcfg.ecg_track, {}, wcfg.native_srate)
        back = sig.ppg if kind == "ppg" else sig.ecg
        np.testing.assert_allclose(back[: len(x)], x, rtol=1e-6, atol=1e-6)  # the file's span ends on a sample
        assert np.isnan(back[len(x):]).all()
        _, starts, (mp, me, _, _) = gate_case(sig.ppg, sig.ecg, wcfg)
        m = mp if kind == "ppg" else me
        amp = wcfg.gate.ppg_amp_range if kind == "ppg" else wcfg.gate.ecg_amp_range
        out[name] = {"n": len(starts), "fails": channel_fails(m, amp, wcfg.gate), "m": m}
    return out


def _rail_fraction(window_s: float, stride_s: float, n: int) -> np.ndarray:
    raw, fs = rr.RECORDINGS["systole_ppg"][1]()
    w, s = int(window_s * fs), int(stride_s * fs)
    return np.array([(raw[i * s:i * s + w] == RAIL_LEVEL).mean() for i in range(n)])


def _clean(name: str, n: int, rail: np.ndarray) -> list[int]:
    skip = set(NOT_CLEAN[name])
    if name == "systole_ppg":
        skip |= set(np.flatnonzero(rail > 0).tolist())  # on the rail at all: clipped a little or more
    return [i for i in range(n) if i not in skip]


def test_gate_keeps_clean_real_windows(real_cases, wcfg):
    """At least 95 % of the clean windows of every recording together pass every channel criterion."""
    rail = _rail_fraction(wcfg.window_s, wcfg.stride_s, real_cases["systole_ppg"]["n"])
    clean = kept = 0
    rejected = {}
    for name, case in real_cases.items():
        idx = _clean(name, case["n"], rail)
        bad = np.any([case["fails"][c][idx] for c in CHANNEL_CRITERIA], axis=0)
        clean, kept = clean + len(idx), kept + int((~bad).sum())
        for c in CHANNEL_CRITERIA:
            if case["fails"][c][idx].any():
                rejected.setdefault(c, []).append((name, [idx[j] for j in np.flatnonzero(case["fails"][c][idx])]))
    assert clean >= 50, clean  # 26 PPG and 31 ECG windows with the defaults
    assert kept / clean >= 0.95, (kept, clean, rejected)


def test_clipping_keeps_every_clean_real_window(real_cases, wcfg):
    """Rounded real peaks and an 8-bit ADC's quantised troughs are not clipping: no clean window fails it."""
    rail = _rail_fraction(wcfg.window_s, wcfg.stride_s, real_cases["systole_ppg"]["n"])
    for name, case in real_cases.items():
        idx = _clean(name, case["n"], rail)
        assert not case["fails"]["clipping"][idx].any(), (name, np.asarray(idx)[case["fails"]["clipping"][idx]])


def test_clipping_catches_a_real_adc_rail(real_cases, wcfg):
    """systole's PPG reaches its ADC's top (255) in places: the windows with 1.5 % of samples or more there are
    rejected as clipping (all but one of the nine), and none with no sample there."""
    case = real_cases["systole_ppg"]
    rail = _rail_fraction(wcfg.window_s, wcfg.stride_s, case["n"])
    clipped = np.flatnonzero(rail >= RAIL_FRAC)
    assert len(clipped) == 9
    assert case["fails"]["clipping"][clipped].sum() >= 8
    assert not case["fails"]["clipping"][rail == 0].any()


def test_real_recordings_are_what_the_table_says(real_cases):
    """The fixture's windows: every recording yields windows, and each exclusion names a window that exists."""
    for name, case in real_cases.items():
        assert case["n"] >= 1, name
        assert all(0 <= i < case["n"] for i in NOT_CLEAN[name]), name
    assert real_cases["systole_ppg"]["n"] == 33 and real_cases["systole_ecg"]["n"] == 30


def real_false_rejection(real_cases, wcfg) -> dict:
    """{criterion: (rejected, clean)} over the clean real windows; for docs/quality-gate.md's table."""
    rail = _rail_fraction(wcfg.window_s, wcfg.stride_s, real_cases["systole_ppg"]["n"])
    out = {c: [0, 0] for c in CHANNEL_CRITERIA}
    for name, case in real_cases.items():
        idx = _clean(name, case["n"], rail)
        for c in CHANNEL_CRITERIA:
            out[c][0] += int(case["fails"][c][idx].sum())
            out[c][1] += len(idx)
    return out


def test_false_rejection_table_in_the_docs_is_current(real_cases, wcfg):
    """docs/quality-gate.md's real-recording false-rejection rates are these recordings' (rerun and update it if not)."""
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "quality-gate.md").read_text()
    text = text.replace("| clean real windows rejected |", "")
    for c, (rej, n) in real_false_rejection(real_cases, wcfg).items():
        assert f"| {c} | {rej} of {n} |" in text, (c, rej, n)
