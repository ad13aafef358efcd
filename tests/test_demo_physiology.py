"""The demo's planted physiology, measured the way a user would: on the built windows, with the beat features.

Positive controls must be found at the strength the model in ``vitalssl.data.demophysiology`` states;
negative controls must not be found.
"""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from conftest import demo_data_config
from vitalssl.config import from_dict
from vitalssl.data import demophysiology as phys
from vitalssl.data.config import DemoConfig, SplitConfig, WindowConfig
from vitalssl.entry.data_stages import run_build_windows, run_demo, run_prepare_splits
from vitalssl.eval.beatfeatures import BEAT_FEATURES, beat_features

TRACKS = ("SNUADC/PLETH", "SNUADC/ECG_II")


@pytest.fixture(scope="module")
def demo_windows(tmp_path_factory, params):
    """Train windows of a 14-case demo with its beat features: one row per window."""
    root = tmp_path_factory.mktemp("physiology")
    dcfg = replace(from_dict(DemoConfig, params["demo"], "demo"), n_cases=14, n_subjects=14, duration_s=(150, 200))
    data = demo_data_config(root / "demo")
    run_demo(dcfg, root / "demo", progress=False)
    scfg = SplitConfig(mode="fasttrack", case_set="bis", fasttrack_cases=14, train=0.8, val=0.1, test=0.1, seed=42)
    run_prepare_splits(data, scfg, root / "splits.json", TRACKS)
    wcfg = from_dict(WindowConfig, dict(params["windows"]), "windows")
    run_build_windows(data, wcfg, root / "splits.json", "train", root / "win", root / "m.json", progress=False)
    x = np.load(root / "win" / "train_windows.npy")
    meta = pd.read_csv(root / "win" / "train_windows.meta.csv")
    return pd.concat([meta, pd.DataFrame(beat_features(x, 0, 1), columns=BEAT_FEATURES)], axis=1)


def _within_case(d: pd.DataFrame, col: str) -> pd.Series:
    return d[col] - d.groupby("caseid")[col].transform("mean")


def test_pat_shortens_by_the_planted_slope_as_map_rises(demo_windows):
    d = demo_windows.dropna(subset=["pat_ms", "label_map"])
    assert len(d) > 120 and d.caseid.nunique() >= 10
    dm, dp = _within_case(d, "label_map"), _within_case(d, "pat_ms")
    slope = np.polyfit(dm, dp, 1)[0]
    assert -phys.PAT_MS_PER_MMHG * 1.25 < slope < -phys.PAT_MS_PER_MMHG * 0.75   # -1 ms/mmHg planted
    assert np.corrcoef(dm, dp)[0, 1] < -0.8


def test_older_arteries_give_a_shorter_pat_and_a_wider_pulse_pressure(demo_windows):
    case = demo_windows.groupby("caseid").agg(age=("age", "first"), pat=("pat_ms", "median"),
                                              pp=("label_sbp", "median"), dbp=("label_dbp", "median"))
    case["pp"] = case["pp"] - case["dbp"]
    assert np.corrcoef(case.age, case.pat)[0, 1] < -0.6
    old, young = case[case.age > 60], case[case.age < 45]
    assert len(old) >= 2 and len(young) >= 2
    assert old.pat.median() < young.pat.median() - 30        # ms; the planted PWV slope gives ~90 ms over 60 years
    assert old.pp.median() > young.pp.median()


def test_pressures_are_ordered_and_hypotension_occurs(demo_windows):
    d = demo_windows
    assert (d.label_sbp > d.label_map).all() and (d.label_map > d.label_dbp).all()
    hypo = d[d.label_map < 65]
    assert len(hypo) >= 10 and hypo.caseid.nunique() >= 2


def test_the_pulse_amplitude_modulation_carries_the_respiratory_rate(demo_windows):
    d = demo_windows.dropna(subset=["amp_resp_hz", "label_rr"])
    err = np.abs(d.amp_resp_hz * 60 - d.label_rr)
    assert np.median(err) < 1.5          # breaths/min
    assert np.corrcoef(d.amp_resp_hz, d.label_rr)[0, 1] > 0.7


def test_negative_controls_are_drawn_apart_from_what_shapes_the_waveforms():
    # across 200 cases, the case means of BIS and SpO2 are unrelated to those of HR, MAP and RR (which, with
    # age, drive the waveforms); within a case both are slow series, so a within-case correlation would not test it
    rows = []
    for seed in range(200):
        rng = np.random.default_rng([11, seed])
        age = rng.uniform(20, 85)
        tn, v = phys.synth_signals(rng, 30.0, age).numerics
        rows.append([age] + [np.mean(v[k]) for k in ("hr", "map", "rr", "bis", "spo2")])
    age, hr, map_, rr, bis, spo2 = np.array(rows).T
    for control in (bis, spo2):
        for driver in (age, hr, map_, rr):
            assert abs(np.corrcoef(control, driver)[0, 1]) < 0.2     # 0.2 is about 3 standard errors at n=200


def test_asa_and_icu_follow_their_logistic_models_in_age():
    rng = np.random.default_rng(0)
    ages = rng.uniform(20, 85, 20000)
    draws = [phys.clinical_draws(rng, a) for a in ages]
    asa3 = np.array([c["asa"] >= 3 for c in draws])
    icu = np.array([c["icu_days"] > 0 for c in draws])
    for hit, (a, b) in ((asa3, phys.ASA3_LOGIT), (icu, phys.ICU_LOGIT)):
        for lo, hi in ((20, 40), (65, 85)):
            sel = (ages >= lo) & (ages < hi)
            expected = np.mean(1 / (1 + np.exp(-(a + b * ages[sel]))))
            assert abs(hit[sel].mean() - expected) < 0.02
    assert (np.array([c["icu_days"] for c in draws])[~icu] == 0).all()


def test_hypotensive_episodes_reach_below_65_and_the_dip_recovers():
    tg = np.arange(0.0, 3600.0, 1.0)
    below = []
    for seed in range(40):
        base, m = phys.map_trajectory(np.random.default_rng(seed), tg, 3600.0)
        assert 75 - 6 - 20 <= m[:60].min() and m.max() <= 100 + 6
        below.append(np.mean(m < 65))
    # an hour holds ~9 episodes of 1-3 min (less the ramps): a fifth to a half of the time below 65
    assert 0.1 < np.mean(below) < 0.5
