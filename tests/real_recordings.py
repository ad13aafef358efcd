"""Real PPG and ECG recordings that PyPI packages ship as package data, written as ``.vital`` cases.

The packages are test data only: ``tests/recordings.txt`` pins them and they are installed with
``pip install --no-deps -r tests/recordings.txt``; their files are found with
``importlib.util.find_spec`` and never imported (their own dependencies are not installed).

Each recording is resampled to VitalDB's 500 Hz with ``scipy.signal.resample_poly`` and scaled
linearly (one factor per recording, so its windows keep their relative amplitudes) to VitalDB's
units: PPG to a 1-99 % range of 50 (SNUADC/PLETH's arbitrary units), ECG to 1.5 mV. The
packages' own units are ADC counts of different devices, which the amplitude criterion's
VitalDB ranges do not describe.
"""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

NATIVE_FS = 500.0
INSTALL = "pip install --no-deps -r tests/recordings.txt"


def package_dir(name: str) -> Path:
    """The installed folder of test-data package ``name``; fails naming the install command."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the test recordings need package {name!r}, which is not installed: run `{INSTALL}`")
    return Path(list(spec.submodule_search_locations)[0])


def to_native(x: np.ndarray, fs: float) -> np.ndarray:
    """``x`` sampled at ``fs`` Hz, resampled to 500 Hz (polyphase, anti-aliased)."""
    ratio = Fraction(NATIVE_FS / fs).limit_denominator(1000)
    return resample_poly(np.asarray(x, np.float64), ratio.numerator, ratio.denominator)


def scaled(x: np.ndarray, target_range: float) -> np.ndarray:
    """``x`` shifted to a median of 0 and scaled to a 1-99 % range of ``target_range``."""
    lo, med, hi = np.percentile(x, [1, 50, 99])
    return (x - med) * (target_range / (hi - lo))


def _opensignals(path: Path) -> np.ndarray:
    """The last column (the sensor) of an OpenSignals text file."""
    return np.loadtxt(path, comments="#")[:, -1]


def _signal_samples() -> Path:
    return package_dir("biosignalsnotebooks") / "notebook_files" / "osf_files" / "signal_samples"


# name: (kind, loader returning (samples, fs), what the recording is)
RECORDINGS = {
    "systole_ppg": ("ppg", lambda: (np.load(package_dir("systole") / "datasets" / "ppg.npy"), 75.0),
                    "finger PPG, 8-bit (0-255), 75 Hz, 5.5 min; its peaks reach the ADC's top (255) in places"),
    "heartpy_data": ("ppg", lambda: (np.loadtxt(package_dir("heartpy") / "data" / "data.csv"), 100.0),
                     "PPG, 100 Hz, 25 s"),
    "heartpy_data2": ("ppg", lambda: (np.genfromtxt(package_dir("heartpy") / "data" / "data2.csv", delimiter=",",
                                                    names=True)["hr"], 117.0),
                      "PPG, 117 Hz, 2.1 min; the sensor is off (a flat line at 0) for 3 s at 12-22 s"),
    "plux_bvp": ("ppg", lambda: (_opensignals(_signal_samples() / "bvp_sample.txt"), 1000.0),
                 "PLUX finger BVP, 16-bit, 1000 Hz, 27 s"),
    "systole_ecg": ("ecg", lambda: (np.load(package_dir("systole") / "datasets" / "Task1_ECG.npy")[: 300 * 1000],
                                    1000.0),
                    "ECG, 1000 Hz, its first 5 min"),
    "plux_ecg": ("ecg", lambda: (_opensignals(_signal_samples() / "ecg_sample.txt"), 200.0),
                 "PLUX ECG, 16-bit, 200 Hz, 12 s"),
}
TARGET_RANGE = {"ppg": 50.0, "ecg": 1.5}


def load(name: str) -> np.ndarray:
    """Recording ``name`` at 500 Hz in VitalDB's units."""
    kind, loader, _ = RECORDINGS[name]
    x, fs = loader()
    return scaled(to_native(x, fs), TARGET_RANGE[kind]).astype(np.float32)
