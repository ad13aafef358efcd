"""Cut a case into gated, normalised 10 s PPG+ECG windows, and write a split's window file.

The file format is :mod:`vitalssl.windowfile`'s; this module fills it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text, write_json
from ..config import to_dict
from ..windowfile import CHANNELS, NpyAppender
from .config import WindowConfig
from .dsp import bandpass, bandpass_sos, fill_gaps, resample
from .quality import CHANNEL_MEASURES, CRITERIA, case_measures, judge
from .reader import CaseError, read_case

META_COLUMNS = (["caseid", "subjectid", "start_s"]
                + [f"{c.lower()}_{m}" for c in CHANNELS for m in CHANNEL_MEASURES]
                + ["hr_diff"])


@dataclass
class CaseWindows:
    """Result of one case: kept windows and, for every window, the gate's verdict."""
    caseid: int
    windows: np.ndarray                 # [K, 2, L] float32, z-scored
    meta: list                          # K rows (dicts) for kept windows
    starts_s: np.ndarray                # [M] start of every candidate window, s
    fails: dict                         # criterion -> [M] bool
    error: CaseError | None = None
    label_names: tuple = field(default_factory=tuple)
    duration_s: float = 0.0             # length of the case's waveforms, s

    @property
    def kept(self) -> np.ndarray:
        return kept_mask(self.fails, len(self.starts_s))


def kept_mask(fails: dict, n: int) -> np.ndarray:
    """``[n]`` bool: windows that fail no criterion."""
    return ~np.any(np.stack([fails[c] for c in CRITERIA]), axis=0) if n else np.zeros(0, bool)


def window_starts(n_samples: int, window_len: int, stride_len: int) -> np.ndarray:
    """Start indices of all whole windows in a signal of ``n_samples``."""
    if n_samples < window_len:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - window_len + 1, stride_len, dtype=np.int64)


def zscore(w: np.ndarray) -> np.ndarray:
    """Per-window, per-channel z-score of ``[..., C, L]``; callers guarantee non-constant channels."""
    mu = w.mean(axis=-1, keepdims=True)
    sd = w.std(axis=-1, keepdims=True)
    if (sd <= 0).any():
        raise ValueError("constant channel reached normalisation; the gate must reject it first")
    return (w - mu) / sd


def process_case(path: Path, caseid: int, subjectid, cfg: WindowConfig) -> CaseWindows:
    """Read, filter, resample, window, gate and normalise one case."""
    labels = tuple(cfg.label_tracks)
    try:
        sig = read_case(path, caseid, cfg.ppg_track, cfg.ecg_track, dict(cfg.label_tracks), cfg.native_srate)
    except CaseError as e:
        return CaseWindows(caseid, np.zeros((0, 2, cfg.window_len), np.float32), [], np.zeros(0), {}, e, labels)
    fs, dec, L = cfg.target_srate, cfg.decimation, cfg.window_len
    raw = (sig.ppg, sig.ecg)
    bands = (cfg.filter.ppg_band, cfg.filter.ecg_band)
    filt = []
    for x, band in zip(raw, bands):
        sos = bandpass_sos(cfg.filter.type, cfg.filter.order, band, cfg.native_srate)
        filt.append(resample(bandpass(fill_gaps(x), sos), dec))
    n = min(len(filt[0]), len(filt[1]), len(raw[0]) // dec)
    starts = window_starts(n, L, cfg.stride_len)
    m = [case_measures(raw[c][: n * dec], filt[c][:n], starts, L, dec, cfg.native_srate, fs, cfg.gate)
         for c in range(2)]
    verdict = judge(m[0], m[1], cfg.gate)
    fails = verdict["fails"]
    kept = kept_mask(fails, len(starts))
    kept_w, meta = [], []
    for i in np.flatnonzero(kept):
        s = starts[i]
        w = np.stack([filt[0][s:s + L], filt[1][s:s + L]])
        kept_w.append(zscore(w).astype(np.float32))
        row = {"caseid": caseid, "subjectid": subjectid, "start_s": s / fs}
        for ch, mc in zip(CHANNELS, m):
            for k in CHANNEL_MEASURES:
                row[f"{ch.lower()}_{k}"] = mc[k][i]
        row["hr_diff"] = verdict["hr_diff"][i]
        t0, t1 = int(s // fs), int(math.ceil((s + L) / fs))
        for k in labels:
            seg = sig.labels[k][t0:t1]
            seg = seg[np.isfinite(seg)]
            row[f"label_{k}"] = float(seg.mean()) if len(seg) else np.nan
        meta.append(row)
    windows = np.stack(kept_w) if kept_w else np.zeros((0, 2, L), np.float32)
    return CaseWindows(caseid, windows, meta, starts / fs, fails, None, labels, len(sig.ppg) / cfg.native_srate)


def _work(args):
    source, caseid, subjectid, cfg = args
    try:
        path = source.case_path(caseid)
    except CaseError as e:
        return CaseWindows(caseid, np.zeros((0, 2, cfg.window_len), np.float32), [], np.zeros(0), {}, e)
    return process_case(path, caseid, subjectid, cfg)


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if not np.isfinite(v) else f"{float(v):.6g}"
    return str(v)


def build_split(source, cases: list, cfg: WindowConfig, out_dir: Path, split: str, progress: bool = True,
                on_case=None) -> dict:
    """Build ``<split>_windows.{npy,meta.csv,json}`` from ``cases`` = [(caseid, subjectid)] of ``source``.

    Cases run in ``cfg.num_workers`` processes, one case in memory per worker,
    in case order (so the output is byte-identical for the same inputs).
    Returns the quality report (also the caller's DVC metrics).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    L = cfg.window_len
    report = {"split": split, "cases_total": len(cases), "cases_read": 0, "cases_failed": 0,
              "cases_failed_by_reason": {}, "failed_cases": [], "cases_without_windows": 0,
              "cases_without_windows_list": [],
              "windows_total": 0, "windows_kept": 0, "windows_rejected": 0,
              "rejected_by_criterion": {c: 0 for c in CRITERIA}}
    npy = NpyAppender(out_dir / f"{split}_windows.npy", (2, L))
    meta_buf = io.StringIO()
    label_cols = [f"label_{k}" for k in cfg.label_tracks]
    writer = csv.writer(meta_buf, lineterminator="\n")
    writer.writerow(META_COLUMNS + label_cols)
    jobs = [(source, int(c), s, cfg) for c, s in cases]
    try:
        if cfg.num_workers > 1 and len(jobs) > 1:
            # fork where there is one: this process holds no torch or CUDA state, and spawn would
            # re-import scipy, pandas and vitaldb in every worker (seconds per run)
            pool = get_context("fork" if "fork" in get_all_start_methods() else "spawn").Pool(
                min(cfg.num_workers, len(jobs)))
            results = pool.imap(_work, jobs, chunksize=1)
        else:
            pool, results = None, map(_work, jobs)
        for res in tqdm(results, total=len(jobs), desc=f"build-windows {split}", disable=not progress, unit="case"):
            if on_case is not None:
                on_case(res)
            if res.error is not None:
                r = res.error.reason
                report["cases_failed"] += 1
                report["cases_failed_by_reason"][r] = report["cases_failed_by_reason"].get(r, 0) + 1
                report["failed_cases"].append({"caseid": res.caseid, "reason": r, "detail": res.error.detail})
                continue
            report["cases_read"] += 1
            report["windows_total"] += len(res.starts_s)
            report["windows_kept"] += len(res.windows)
            for c in CRITERIA:
                report["rejected_by_criterion"][c] += int(res.fails[c].sum())
            if len(res.windows) == 0:
                report["cases_without_windows"] += 1
                report["cases_without_windows_list"].append(
                    {"caseid": res.caseid, "duration_s": round(res.duration_s, 3), "windows": len(res.starts_s)})
            npy.append(res.windows)
            for row in res.meta:
                writer.writerow([_fmt(row[k]) for k in META_COLUMNS + label_cols])
        if pool is not None:
            pool.close()
            pool.join()
    except BaseException:
        npy.abort()
        raise
    report["windows_rejected"] = report["windows_total"] - report["windows_kept"]
    if report["windows_kept"] == 0:
        npy.abort()
        reasons = ", ".join(f"{k}: {v}" for k, v in report["cases_failed_by_reason"].items()) or "none failed to read"
        raise RuntimeError(f"split {split!r}: no usable window left from {len(cases)} case(s) "
                           f"(cases failed: {reasons}; windows rejected by criterion: "
                           f"{report['rejected_by_criterion']})")
    atomic_write_text(out_dir / f"{split}_windows.meta.csv", meta_buf.getvalue())
    info = {"split": split, "channels": list(CHANNELS), "srate": cfg.target_srate, "window_len": L,
            "count": report["windows_kept"], "dtype": "float32", "layout": "[N, C, L]",
            "normalisation": "z-score per window and channel", "params": to_dict(cfg)}
    write_json(out_dir / f"{split}_windows.json", info)
    npy.close()  # last: the window file appears only once its companions are in place
    return report
