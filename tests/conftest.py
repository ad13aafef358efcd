"""Shared fixtures: small configs, hand-made .vital files and window files."""

from __future__ import annotations

import os

# Tiny models run fastest on one thread, and on a busy machine torch's intra-op threads
# spin against each other (a step of the tiny model was 28x slower with 2 threads under load).
# Set before torch is imported, so subprocesses (stages, dvc) inherit it too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from vitalssl.config import from_dict
from vitalssl.data.config import DemoConfig, WindowConfig
from vitalssl.entry.pretrain_stage import pretrain_config
from vitalssl.data.demo import write_vital

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture(scope="session")
def wcfg(params) -> WindowConfig:
    w = dict(params["windows"])
    w["num_workers"] = 1
    return from_dict(WindowConfig, w, "windows")


@pytest.fixture(scope="session")
def demo_cfg(params) -> DemoConfig:
    return from_dict(DemoConfig, params["demo"], "demo")


def tiny_pretrain_overrides(**kw) -> dict:
    """A small, fast model on the real 1250-sample windows."""
    over = {"epochs": 3, "batch_size": 16, "warmup_epochs": 1, "save_interval": 2, "log_interval": 1,
            "model": {"d_model": 16, "num_layers": 1, "dropout": 0.0}}
    for k, v in kw.items():
        if isinstance(v, dict):
            over.setdefault(k, {}).update(v)
        else:
            over[k] = v
    return over


@pytest.fixture
def tiny_cfg(params):
    def make(**kw):
        return pretrain_config(params, tiny_pretrain_overrides(**kw))
    return make


def demo_data_config(demo_dir: Path):
    """The ``data`` config of a pipeline reading the demo cases in ``demo_dir`` (no downloads)."""
    from vitalssl.data.config import DataConfig
    return DataConfig(source="demo", demo_dir=str(demo_dir), local_dir="", clinical_csv=None, cache_dir="",
                      download_retries=0, api_url="https://api.vitaldb.net", download_workers=1,
                      connect_timeout_s=1.0, read_timeout_s=1.0, retry_backoff_s=0.0)


def clean_case(duration=60.0, fs=500.0, hr=72.0, seed=0):
    """A clean PPG/ECG pair: regular beats, PPG lagging ECG by 0.2 s."""
    t = np.arange(int(duration * fs)) / fs
    rng = np.random.default_rng(seed)
    phase = (t * hr / 60.0) % 1.0
    ecg = np.exp(-0.5 * ((phase - 0.3) / 0.012) ** 2) + 0.3 * np.exp(-0.5 * ((phase - 0.6) / 0.05) ** 2)
    ppg_phase = ((t - 0.2) * hr / 60.0) % 1.0
    ppg = 40 + 25 * (np.exp(-0.5 * ((ppg_phase - 0.2) / 0.07) ** 2) + 0.4 * np.exp(-0.5 * ((ppg_phase - 0.45) / 0.09) ** 2))
    return ppg + rng.normal(0, 0.05, len(t)), ecg + rng.normal(0, 0.01, len(t))


def numerics(duration):
    tn = np.arange(0, duration, 2.0)
    vals = {"hr": np.full(len(tn), 72.0), "spo2": np.full(len(tn), 98.0), "map": np.full(len(tn), 80.0),
            "bis": np.full(len(tn), 45.0)}
    return tn, vals


def write_case(path: Path, caseid: int, ppg, ecg, duration: float, with_numerics=True, srate=500.0):
    write_vital(path, caseid, ppg, ecg, numerics(duration) if with_numerics else None, duration, srate=srate)


def make_windows(n: int, seed: int = 0, channels=("PPG", "ECG"), L: int = 1250) -> np.ndarray:
    """``[n, C, L]`` float32 smooth random z-scored signals (two harmonics of 0.8-2 Hz plus noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(L) / 125.0
    f = rng.uniform(0.8, 2.0, (n, 1, 1))
    ph = rng.uniform(0, 6.28, (n, len(channels), 1))
    x = np.sin(2 * np.pi * f * t + ph) + 0.5 * np.sin(2 * np.pi * 2 * f * t + 2 * ph) + 0.1 * rng.standard_normal((n, len(channels), L))
    return ((x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)).astype(np.float32)


def write_windows(directory: Path, split: str, n: int, seed: int = 0, channels=("PPG", "ECG"), L: int = 1250):
    """Window files in the build-windows format, holding :func:`make_windows`."""
    from vitalssl.windowfile import NpyAppender
    x = make_windows(n, seed, channels, L)
    directory.mkdir(parents=True, exist_ok=True)
    app = NpyAppender(directory / f"{split}_windows.npy", (len(channels), L))
    app.append(x.astype(np.float32))
    app.close()
    (directory / f"{split}_windows.json").write_text(json.dumps({"channels": list(channels), "srate": 125}))
    return x.astype(np.float32)


@pytest.fixture
def window_dir(tmp_path):
    d = tmp_path / "windows"
    write_windows(d, "train", 96, seed=1)
    write_windows(d, "val", 32, seed=2)
    return d
