"""Filters, resampling and the quality gate: each criterion, and precision/recall on the demo's faults."""

import numpy as np
import pytest

from conftest import clean_case
from dataclasses import replace
from vitalssl.data.demo import CORRECTABLE, UNUSABLE, demo_caseids, generate_demo, load_faults
from vitalssl.data.dsp import bandpass, bandpass_sos, fill_gaps, resample
from vitalssl.data.quality import _longest_flat_run, case_measures, judge, score_against_faults
from vitalssl.data.windows import process_case


def _tone(f, fs=500.0, dur=20.0):
    t = np.arange(int(fs * dur)) / fs
    return np.sin(2 * np.pi * f * t)


def _gain(y):
    mid = y[len(y) // 4: -len(y) // 4]  # away from the edges
    return np.sqrt(2) * mid.std()


@pytest.mark.parametrize("kind", ["butter", "cheby2", "bessel"])
def test_bandpass_keeps_in_band_and_removes_out_of_band(kind):
    sos = bandpass_sos(kind, 4, (0.5, 40.0), 500.0)
    assert _gain(bandpass(_tone(10.0), sos)) == pytest.approx(1.0, abs=0.02 if kind != "bessel" else 0.1)
    assert _gain(bandpass(_tone(60.0), sos)) < 0.05          # mains hum
    assert _gain(bandpass(_tone(0.05, dur=200.0), sos)) < 0.05  # baseline wander


def test_bandpass_is_zero_phase():
    sos = bandpass_sos("butter", 4, (0.5, 8.0), 500.0)
    x = _tone(2.0)
    y = bandpass(x, sos)
    mid = slice(2500, 7500)
    lag = np.argmax(np.correlate(y[mid], x[mid], "full")) - (mid.stop - mid.start - 1)
    assert lag == 0


def test_resample_keeps_band_and_rejects_aliases():
    assert _gain(resample(_tone(10.0), 4)) == pytest.approx(1.0, abs=0.01)
    # 110 Hz would alias to 15 Hz at 125 Hz without the anti-aliasing filter
    y = resample(_tone(110.0), 4)
    assert len(y) == 2500 and _gain(y) < 0.01


def test_fill_gaps_and_longest_flat_run():
    x = np.array([np.nan, 1.0, np.nan, np.nan, 4.0, np.nan])
    np.testing.assert_allclose(fill_gaps(x), [1, 1, 2, 3, 4, 4])
    raw = np.array([0, 5, 5, 1, 7, 7, 7, 2, 3, 4, 9, 9], float)
    # whole signal: the run 7,7,7 is 3 samples; a window starting inside it sees only its own part
    assert _longest_flat_run(raw, np.array([0]), 12, 0.0).tolist() == [3]
    assert _longest_flat_run(raw, np.array([5, 7]), 5, 0.0).tolist() == [2, 2]
    assert _longest_flat_run(np.arange(8.0), np.array([0, 3]), 5, 0.0).tolist() == [0, 0]


def _window(wcfg, ppg, ecg):
    """Gate verdict of one 10 s window given raw native-rate signals."""
    out = []
    for x, band in ((ppg, wcfg.filter.ppg_band), (ecg, wcfg.filter.ecg_band)):
        sos = bandpass_sos(wcfg.filter.type, wcfg.filter.order, band, 500.0)
        out.append(resample(bandpass(fill_gaps(x), sos), 4))
    ppg_m, ecg_m, pair, _ = case_measures((ppg, ecg), tuple(out), np.array([625]), 1250, 4, 500.0, 125, wcfg.gate)
    fails = {k: bool(v[0]) for k, v in judge(ppg_m, ecg_m, pair, wcfg.gate).items()}
    return fails, [{k: v[0] for k, v in m.items()} for m in (ppg_m, ecg_m, pair)]


def test_clean_window_passes_every_criterion(wcfg):
    fails, m = _window(wcfg, *clean_case(20))
    assert not any(fails.values()), fails
    assert m[0]["hr"] == pytest.approx(72, abs=2) and m[1]["hr"] == pytest.approx(72, abs=2)


@pytest.mark.parametrize("fault,criterion", [
    ("nan", "missing"), ("flat", "flat"), ("clip", "clipping"), ("huge", "amplitude"),
    ("tiny", "amplitude"), ("slow_hr", "heart_rate"), ("disagree", "hr_disagreement"),
])
def test_each_criterion_rejects_its_fault(wcfg, fault, criterion):
    ppg, ecg = clean_case(20)
    seg = slice(5000, 7000)
    if fault == "nan":
        ecg[seg] = np.nan
    elif fault == "flat":
        ppg[seg] = ppg[seg.start]
    elif fault == "clip":
        hi = np.percentile(ppg[2500:7500], 60)
        ppg[2500:7500] = np.minimum(ppg[2500:7500], hi)
    elif fault == "huge":
        ecg *= 50
    elif fault == "tiny":
        ppg = 40 + (ppg - 40) * 0.01
    elif fault == "slow_hr":
        ppg, ecg = clean_case(20, hr=20.0)
    elif fault == "disagree":
        ppg, _ = clean_case(20, hr=100.0)
    fails, _ = _window(wcfg, ppg, ecg)
    assert fails[criterion], (fault, fails)


def test_gate_precision_and_recall_on_demo_faults(tmp_path, demo_cfg, wcfg):
    """Against the generator's fault map, all fault kinds together: precision and recall of rejection >= 0.95,
    and >= 95% of clean windows kept."""
    cfg = replace(demo_cfg, n_cases=24, n_subjects=24, duration_s=(240, 360))
    generate_demo(cfg, tmp_path, progress=False)
    faults = load_faults(tmp_path)
    total = {"faulted": 0, "faulted_rejected": 0, "clean": 0, "clean_kept": 0, "borderline": 0}
    kinds = set()
    for caseid in demo_caseids(cfg):
        res = process_case(tmp_path / f"{caseid}.vital", caseid, 0, wcfg)
        assert res.error is None
        for k, v in score_against_faults(res.starts_s, res.kept, faults.get(caseid, []), wcfg.window_s).items():
            total[k] += v
        kinds |= {f.kind for f in faults.get(caseid, [])}
    assert kinds == set(UNUSABLE) | set(CORRECTABLE)
    assert total["faulted"] >= 80 and total["clean"] >= 450
    rejected_clean = total["clean"] - total["clean_kept"]
    precision = total["faulted_rejected"] / (total["faulted_rejected"] + rejected_clean)
    recall = total["faulted_rejected"] / total["faulted"]
    assert precision >= 0.95 and recall >= 0.95, total
    assert total["clean_kept"] / total["clean"] >= 0.95, total


def _kind_run(tmp_path, demo_cfg, wcfg, kind, n_cases=6, rate=2.0, duration_s=180):
    """Short demo cases whose only unusable faults are of ``kind``: (scores against the truth, [(result, faults)])."""
    cfg = replace(demo_cfg, n_cases=n_cases, n_subjects=n_cases, duration_s=(duration_s, duration_s),
                  fault_rate_per_min=rate)
    generate_demo(cfg, tmp_path, progress=False, kinds=(kind,))
    faults = load_faults(tmp_path)
    total = {"faulted": 0, "faulted_rejected": 0, "clean": 0, "clean_kept": 0, "borderline": 0}
    results = []
    for caseid in demo_caseids(cfg):
        res = process_case(tmp_path / f"{caseid}.vital", caseid, 0, wcfg)
        results.append((res, faults.get(caseid, [])))
        for k, v in score_against_faults(res.starts_s, res.kept, faults.get(caseid, []), wcfg.window_s).items():
            total[k] += v
    return total, results


@pytest.mark.parametrize("kind", UNUSABLE)
def test_each_demo_fault_kind_is_rejected(tmp_path, demo_cfg, wcfg, kind):
    total, _ = _kind_run(tmp_path, demo_cfg, wcfg, kind)
    assert total["faulted"] >= 8, total
    assert total["faulted_rejected"] / total["faulted"] >= 0.9, (kind, total)
    assert total["clean_kept"] / total["clean"] >= 0.95, (kind, total)


def test_inverted_ecg_is_kept_with_its_true_heart_rate(tmp_path, demo_cfg, wcfg):
    """An inverted lead is read with negative polarity: kept, and its HR matches the PPG's and the monitor's."""
    import csv
    import io
    from vitalssl.data.windows import DECISION_COLUMNS, META_COLUMNS
    _, results = _kind_run(tmp_path, demo_cfg, replace(wcfg, label_tracks={"hr": "Solar8000/HR"}), "flat",
                           n_cases=24, rate=0.0, duration_s=120)   # about a fifth of the cases have a flip
    inverted = 0
    for res, faults in results:
        flips = [f.start_s for f in faults if f.kind == "inverted_ecg"]
        if not flips:
            continue
        rows = list(csv.DictReader(io.StringIO(",".join(DECISION_COLUMNS) + "\n" + res.decision_rows)))
        meta = {r["start_s"]: r for r in csv.DictReader(io.StringIO(",".join(META_COLUMNS + ["label_hr"]) + "\n"
                                                                    + res.meta_rows))}
        for r in rows:
            s = float(r["start_s"])
            hit = [f for f in faults if f.unusable and f.start_s < s + wcfg.window_s and f.end_s > s]
            if s < flips[0] or hit:
                continue
            inverted += 1
            assert r["kept"] == "1" and r["ecg_inverted"] == "1", r
            assert abs(float(r["ecg_hr"]) - float(r["ppg_hr"])) <= 1.5
            assert abs(float(r["ecg_hr"]) - float(meta[r["start_s"]]["label_hr"])) <= 3.0
    assert inverted >= 10


def test_narrow_band_noise_is_not_a_rhythm(wcfg):
    """A 7 Hz tone in place of the ECG gives evenly spaced "beats", but no PPG pulse corresponds to them."""
    ppg, ecg = clean_case(20)
    ecg = 0.5 * _tone(7.0)
    fails, m = _window(wcfg, ppg, ecg)
    assert fails["beat_correspondence"] and not fails["missing"] and not fails["flat"]


def test_score_against_faults_counts_by_overlap():
    from vitalssl.data.demo import Fault
    faults = [Fault(1, "flat", "PPG", 12.0, 15.0, True), Fault(1, "mains_hum", "ECG", 0.0, 100.0, False),
              Fault(1, "motion", "PPG", 29.8, 31.0, True)]
    s = score_against_faults(np.array([0.0, 10.0, 20.0, 30.0]), np.array([True, False, True, True]), faults, 10.0)
    # window 0: only correctable hum -> clean; 10: flat 3 s -> faulted; 20: motion grazes 0.2 s -> borderline
    assert s == {"faulted": 2, "faulted_rejected": 1, "clean": 1, "clean_kept": 1, "borderline": 1}


def test_mains_hum_is_filtered_out_of_kept_windows(tmp_path, wcfg):
    """A 60 Hz hum loses over 90% of its RMS on the way into the kept (z-scored) ECG windows."""
    from conftest import write_case
    ppg, ecg = clean_case(60)
    t = np.arange(len(ecg)) / 500.0
    write_case(tmp_path / "1.vital", 1, ppg, ecg, 60)
    write_case(tmp_path / "2.vital", 2, ppg, ecg + 0.2 * np.sin(2 * np.pi * 60 * t), 60)
    clean = process_case(tmp_path / "1.vital", 1, 0, wcfg)
    hum = process_case(tmp_path / "2.vital", 2, 0, wcfg)
    assert len(clean.windows) == len(hum.windows) == 6
    residual = np.sqrt(np.mean((hum.windows[:, 1] - clean.windows[:, 1]) ** 2))
    hum_z = 0.2 / np.sqrt(2) / np.std(ecg)  # the hum's RMS in z units, had nothing filtered it
    assert residual < 0.1 * hum_z


def test_beat_measures_gap_ratio_counts_missed_beats_and_edges():
    from vitalssl.data.quality import beat_measures
    fs, L = 125.0, 1250
    beats = np.arange(50, L, 100)  # every 0.8 s: 75 bpm
    hr, cv, gap = beat_measures(beats, L, fs)
    assert hr == pytest.approx(75.0) and cv == pytest.approx(0.0) and gap == pytest.approx(1.0)
    assert beat_measures(np.delete(beats, 5), L, fs)[2] == pytest.approx(2.0)      # one missed beat
    assert beat_measures(beats[beats < 700], L, fs)[2] == pytest.approx(5.99)      # nothing in the last 6 s
    assert np.isnan(beat_measures(beats[:1], L, fs)[0])


@pytest.mark.parametrize("delay_s", [0.25, 0.79, 0.81])  # 0.8 s is one whole R-R interval
def test_correspondence_of_a_true_pair_at_any_delay(delay_s):
    from vitalssl.data.quality import correspondence
    fs = 125.0
    r_all = np.arange(-280, 1250, 100)  # beats before the window have their pulses in it
    p = np.round(r_all + delay_s * fs).astype(int)
    p, r = p[(p >= 0) & (p < 1250)], r_all[r_all >= 0]
    match, pat, iqr = correspondence(r, p, fs, 1250)
    assert match == 1.0 and iqr == pytest.approx(0.0) and pat == pytest.approx(round(delay_s * fs) / fs % 0.8, abs=0.01)


def test_correspondence_of_a_drifting_pair():
    """PPG 3 bpm slower than the ECG: the delay drifts by 0.03 s a beat, far beyond a true pair's IQR."""
    from vitalssl.data.quality import correspondence
    fs = 125.0
    r = np.arange(20, 1250, 100)                       # 75 bpm
    p = np.round(45 + np.arange(12) * 103.4).astype(int)  # about 72.5 bpm
    match, _, iqr = correspondence(r, p[p < 1250], fs, 1250)
    assert iqr > 0.1


@pytest.mark.parametrize("hz", [0.6, 0.8, 1.0, 1.2, 1.5])
def test_a_shallow_clip_of_a_broad_rounded_peak_is_clipping_and_the_peak_alone_is_not(wcfg, hz):
    """Broad rounded peaks (a sine at 36-90 bpm) stay within a bin of their top for longer than
    `clip_min_run_s`: alone they are not clipping. Clipped 1-2.5 % of the range below their top (3.8-7.8 % of
    the samples on the rail), raw or resampled to 250 Hz and back, they are: the rail's flat core is found
    between the peak's shoulders."""
    from scipy.signal import resample_poly
    from vitalssl.data.quality import _clip_fraction
    g = wcfg.gate
    t = np.arange(5000) / 500.0
    peak = np.sin(2 * np.pi * hz * t) + np.random.default_rng(0).normal(0, 1e-3, len(t))
    for level in (0.95, 0.97, 0.98):
        clipped = np.minimum(peak, level)
        ringing = resample_poly(resample_poly(clipped, 1, 2), 2, 1)
        frac = _clip_fraction(np.stack([peak, clipped, ringing]), g.clip_tol, int(g.clip_min_run_s * 500))
        assert frac[0] < g.max_clip_frac / 3, (level, frac)
        assert frac[1] > g.max_clip_frac and frac[2] > g.max_clip_frac, (level, frac)


def test_clipping_plateau_is_found_through_ringing(wcfg):
    """A clipped pulse train resampled to 250 Hz and back overshoots its rail, so few samples reach the window's
    maximum; the plateau measure still sees the clip, and none in the same train unclipped."""
    from scipy.signal import resample_poly
    from vitalssl.data.quality import _clip_fraction
    ppg, _ = clean_case(10)
    clipped = np.minimum(ppg, np.percentile(ppg, 85))
    ringing = resample_poly(resample_poly(clipped, 1, 2), 2, 1)
    assert ringing.max() > clipped.max()  # the resampler overshoots the rail
    g = wcfg.gate
    frac = _clip_fraction(np.stack([ppg, clipped, ringing]), g.clip_tol, int(g.clip_min_run_s * 500))
    assert frac[0] < g.max_clip_frac and frac[1] > 5 * g.max_clip_frac and frac[2] > 5 * g.max_clip_frac


def test_inverted_ecg_window_is_read_with_negative_polarity(wcfg):
    ppg, ecg = clean_case(20)
    fails, m = _window(wcfg, ppg, -ecg)
    assert not any(fails.values()), fails
    assert m[2]["ecg_inverted"] and m[1]["hr"] == pytest.approx(72, abs=1.5)
    _, m = _window(wcfg, ppg, ecg)
    assert not m[2]["ecg_inverted"]


def test_longest_flat_run_matches_a_sample_by_sample_count():
    """Against a plain loop, on random quantised signals with gaps and overlapping or spaced windows."""
    def by_loop(raw, starts, length):
        out = []
        for s in starts:
            best = cur = 0
            for v in np.abs(np.diff(raw[s:s + length])) <= 0.0:
                cur = cur + 1 if v else 0
                best = max(best, cur)
            out.append(best + 1 if best else 0)
        return out

    rng = np.random.default_rng(1)
    for _ in range(60):
        n = int(rng.integers(20, 200))
        raw = rng.integers(0, 3, n).astype(float)
        raw[rng.random(n) < 0.1] = np.nan
        length = int(rng.integers(2, min(40, n)))
        starts = np.arange(0, n - length + 1, int(rng.integers(1, length + 3)))
        assert _longest_flat_run(raw, starts, length, 0.0).tolist() == by_loop(raw, starts, length)


def _demo_windows(tmp_path, demo_cfg, wcfg):
    """Band-passed 125 Hz windows of short demo cases with every fault kind, and their robust ranges."""
    cfg = replace(demo_cfg, n_cases=6, n_subjects=6, duration_s=(240, 240), fault_rate_per_min=2.0)
    generate_demo(cfg, tmp_path, progress=False)
    fs, dec, L = wcfg.target_srate, wcfg.decimation, wcfg.window_len
    from vitalssl.data.reader import read_case
    from vitalssl.data.quality import _windows
    out = []
    for caseid in demo_caseids(cfg):
        sig = read_case(tmp_path / f"{caseid}.vital", caseid, wcfg.ppg_track, wcfg.ecg_track, {}, wcfg.native_srate)
        for x, band in zip((sig.ppg, sig.ecg), (wcfg.filter.ppg_band, wcfg.filter.ecg_band)):
            f = bandpass(resample(fill_gaps(x), dec), bandpass_sos(wcfg.filter.type, wcfg.filter.order, band, fs))
            w = np.ascontiguousarray(_windows(f, np.arange(0, len(f) - L + 1, wcfg.stride_len), L))
            lo, hi = np.percentile(w, [1, 99], axis=1)
            out.append((w, hi - lo))
    return out


def test_batch_beat_detection_equals_one_find_peaks_call_per_window(tmp_path, demo_cfg, wcfg):
    """Every window of demo cases with all fault kinds, either polarity, a flat window and a zero threshold:
    the batch finds exactly the peaks a find_peaks call per window finds."""
    from vitalssl.data.quality import detect_beats, detect_beats_batch
    fs, hr_max = wcfg.target_srate, wcfg.gate.hr_range[1]
    rng = np.random.default_rng(3)
    n_peaks = 0
    for w, rr in _demo_windows(tmp_path, demo_cfg, wcfg):
        w = w.copy()
        w[0] = 0.0                     # no range: no beats
        rr = rr.copy()
        rr[1] = np.nan                 # a window whose range could not be taken
        flip = rng.random(len(w)) < 0.5
        win, idx = detect_beats_batch(w, fs, hr_max, rr, flip=flip)
        assert np.all(np.diff(win) >= 0)
        for i in range(len(w)):
            ref = detect_beats(-w[i] if flip[i] else w[i], fs, hr_max, rr[i])
            np.testing.assert_array_equal(idx[win == i], ref)
            n_peaks += len(ref)
    assert n_peaks > 2500


def test_batch_beat_and_pair_measures_equal_the_one_window_forms(tmp_path, demo_cfg, wcfg):
    """The ragged measures of a case equal the one-window functions applied window by window."""
    from vitalssl.data.quality import (beat_measures, beat_measures_batch, correspondence, correspondence_batch,
                                       detect_beats_batch)
    fs, hr_max, L = wcfg.target_srate, wcfg.gate.hr_range[1], wcfg.window_len
    chans = _demo_windows(tmp_path, demo_cfg, wcfg)
    for (pw, prr), (ew, err) in zip(chans[::2], chans[1::2]):
        n = len(pw)
        pk, rk = detect_beats_batch(pw, fs, hr_max, prr), detect_beats_batch(ew, fs, hr_max, err)
        _, hr, cv, gap = beat_measures_batch(*pk, n, L, fs)
        match, pat, iqr = correspondence_batch(*rk, *pk, n, fs, L)
        for i in range(n):
            p, r = pk[1][pk[0] == i], rk[1][rk[0] == i]
            np.testing.assert_allclose([hr[i], cv[i], gap[i]], beat_measures(p, L, fs), rtol=1e-12)
            np.testing.assert_allclose([match[i], pat[i], iqr[i]], correspondence(r, p, fs, L), rtol=1e-12)


def test_fill_gaps_interpolates_each_gap_from_its_edges():
    x = np.array([np.nan, np.nan, 2.0, np.nan, 4.0, np.nan, np.nan, np.nan, 0.0, np.nan], np.float32)
    out = fill_gaps(x)
    assert out.dtype == np.float64 and np.isnan(x).sum() == 7  # the input is left as it was
    np.testing.assert_allclose(out, [2, 2, 2, 3, 4, 3, 2, 1, 0, 0])
    with pytest.raises(ValueError, match="no finite sample"):
        fill_gaps(np.full(4, np.nan))


def test_float32_samples_give_the_float64_raw_measures(wcfg):
    """The stored float32 samples take fast float32 paths (flat steps, clipping thresholds); the measures equal
    those of the same values in float64, steps within a rounding of flat_eps and tiny magnitudes included."""
    from vitalssl.data.quality import _flat_steps, raw_measures
    rng = np.random.default_rng(7)
    eps = wcfg.gate.flat_eps
    base = rng.uniform(-2e-6, 2e-6, 4000).astype(np.float32)
    near = (base + np.float32(eps) * rng.choice([0.999999, 1.0, 1.000001], 4000).astype(np.float32)).astype(np.float32)
    x = np.empty(8000, np.float32)
    x[0::2], x[1::2] = base, near
    ref = np.flatnonzero(np.abs(np.diff(x.astype(np.float64))) <= eps)
    np.testing.assert_array_equal(_flat_steps(x, eps), ref)
    assert 0 < len(ref) < len(x) - 1
    ppg, _ = clean_case(60)
    ppg[3000:4000] = np.nan
    ppg[9000:9400] = ppg[9000]
    ppg[20000:25000] = np.minimum(ppg[20000:25000], np.percentile(ppg, 60))
    x32 = ppg.astype(np.float32)
    starts = np.arange(0, len(x32) - 5000 + 1, 2500)
    got, want = raw_measures(x32, starts, 5000, 500.0, wcfg.gate), raw_measures(x32.astype(np.float64), starts, 5000,
                                                                                   500.0, wcfg.gate)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    assert want["missing"].max() > 0 and want["flat_s"].max() > 0.5 and want["clip"].max() > wcfg.gate.max_clip_frac


@pytest.mark.parametrize("decimation", [2, 3, 4, 5])
def test_resample_equals_scipy_resample_poly(decimation):
    """The matrix-product resampler is scipy's resample_poly (line padding) to rounding, at every length class."""
    from scipy.signal import resample_poly
    rng = np.random.default_rng(decimation)
    for n in (2, 3, 7, 50, 81, 257, 4001, 100_003):
        x = 50 + np.cumsum(rng.standard_normal(n)) + np.linspace(0, 5, n)
        ref = resample_poly(x, 1, decimation, padtype="line")
        y = resample(x, decimation)
        assert y.shape == ref.shape
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_case_pool_workers_run_blas_on_one_thread():
    """Even when the parent's BLAS runs on several threads (the tests' conftest sets one)."""
    from threadpoolctl import threadpool_limits
    from vitalssl.data.casepool import new_pool
    with threadpool_limits(limits=2, user_api="blas"):
        assert set(_blas_threads(0)) == {2}
        with new_pool(2) as pool:
            found = list(pool.map(_blas_threads, range(2)))
    assert all(f and all(t == 1 for t in f) for f in found), found


def _blas_threads(_):
    from threadpoolctl import threadpool_info
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
