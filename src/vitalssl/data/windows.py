"""Cut a case into gated, normalised 10 s PPG+ECG windows, and write a split's window file.

The file format is :mod:`vitalssl.windowfile`'s; this module fills it, and
writes beside it the gate's decision on every window examined and a figure of
examples (:mod:`vitalssl.data.gatefigure`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import FolderLock, temporaries_of, tmp_path, write_json
from ..config import to_dict
from ..windowfile import CHANNELS, NpyAppender
from .casepool import CaseFailure, run_cases
from .clinical import CLINICAL_COLUMNS
from .config import WindowConfig
from .dsp import bandpass, bandpass_sos, fill_gaps, resample
from .gatefigure import ExampleBook, case_examples, plot_gate
from .quality import CHANNEL_MEASURES, CRITERIA, PAIR_MEASURES, _windows, case_measures, judge, kept_mask, margins
from .reader import CaseError, read_case

MEASURE_COLUMNS = [f"{c.lower()}_{m}" for c in CHANNELS for m in CHANNEL_MEASURES] + list(PAIR_MEASURES)
META_COLUMNS = ["caseid", "subjectid", "start_s"] + MEASURE_COLUMNS
DECISION_COLUMNS = ["caseid", "start_s", "kept", "failed"] + MEASURE_COLUMNS

# a criterion rejecting this share of a case's windows is noted in the report (a case needs this many windows
# for the share to say more than chance)
CASE_WARNING_FRAC, CASE_WARNING_MIN_WINDOWS = 0.95, 10
# what to check when one criterion rejects (nearly) every window of a case
CASE_WARNING_HINTS = {
    "amplitude": "are the tracks in VitalDB's units? see windows.gate.ppg_amp_range and ecg_amp_range",
    "missing": "the tracks hold gaps throughout",
    "flat": "a channel is stuck or disconnected throughout",
}


@dataclass
class CaseWindows:
    """Result of one case: kept windows, and the gate's decision on every window as CSV rows."""
    caseid: int
    windows: np.ndarray                 # [K, 2, L] float32, z-scored
    starts_s: np.ndarray                # [M] start of every window examined, s
    fails: dict                         # criterion -> [M] bool
    meta_rows: str = ""                 # K rows of META_COLUMNS + labels, CSV
    decision_rows: str = ""             # M rows of DECISION_COLUMNS, CSV
    examples: list = field(default_factory=list)   # gate figure candidates
    ecg_inverted_kept: int = 0          # kept windows whose ECG was read with inverted polarity
    error: CaseError | None = None
    duration_s: float = 0.0             # length of the case's waveforms, s
    missing_labels: tuple = ()          # label names whose track the case's file does not have

    @property
    def kept(self) -> np.ndarray:
        return kept_mask(self.fails, len(self.starts_s))

    @classmethod
    def failed(cls, caseid: int, error: CaseError, window_len: int) -> "CaseWindows":
        return cls(caseid, np.zeros((0, 2, window_len), np.float32), np.zeros(0), {}, error=error)


def window_starts(n_samples: int, window_len: int, stride_len: int) -> np.ndarray:
    """Start indices of all whole windows in a signal of ``n_samples``."""
    if n_samples < window_len:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - window_len + 1, stride_len, dtype=np.int64)


def zscore(w: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Per-window, per-channel z-score of ``[..., C, L]`` (into ``out``, which may be ``w``); callers guarantee
    non-constant channels."""
    mu = w.mean(axis=-1, keepdims=True)
    sd = w.std(axis=-1, keepdims=True)
    if (sd <= 0).any():
        raise ValueError("constant channel reached normalisation; the gate must reject it first")
    out = np.subtract(w, mu, out=out)
    return np.divide(out, sd, out=out)


def _column(values) -> list:
    """CSV cells of one column: floats with 6 significant digits, NaN as an empty cell."""
    a = np.asarray(values)
    if a.dtype.kind == "f":
        return ["" if v != v else f"{v:.6g}" for v in a.tolist()]
    if a.dtype.kind == "b":
        return ["1" if v else "0" for v in a.tolist()]
    return ["" if v is None else _text_cell(str(v)) for v in a.tolist()]


def _text_cell(text: str) -> str:
    """A text cell quoted as CSV quotes it when needed: subject ids are opaque labels and may hold a comma."""
    return '"' + text.replace('"', '""') + '"' if any(ch in text for ch in ',"\r\n') else text


def _csv_rows(columns: list) -> str:
    """Rows (``\\n``-terminated) of equal-length columns of cells."""
    return "".join(",".join(cells) + "\n" for cells in zip(*columns))


def _window_labels(labels: dict, starts: np.ndarray, length: int, fs: float) -> dict:
    """Each numeric track (1 Hz values): the median of its finite values in each window's seconds; NaN where none.

    Window ``i`` covers seconds ``floor(s / fs)`` up to ``ceil((s + length) / fs)``. The median, not the mean:
    one artefact value (a flushed arterial line, a dropped probe) does not move a 10 s label.
    """
    t0 = (starts // fs).astype(np.int64)
    t1 = np.ceil((starts + length) / fs).astype(np.int64)
    out = {}
    for k, x in labels.items():
        a, b = np.minimum(t0, len(x)), np.minimum(t1, len(x))
        vals = [x[i:j][np.isfinite(x[i:j])] for i, j in zip(a, b)]
        out[k] = np.array([np.median(v) if v.size else np.nan for v in vals], np.float64)
    return out


def gate_case(ppg: np.ndarray, ecg: np.ndarray, cfg: WindowConfig) -> tuple:
    """Resample, filter and window a case's native-rate channels and take the gate's measures.

    Returns ``(filt, starts, (ppg, ecg, pair, beats))``: the band-passed channels at the target
    rate (cut to a common length), the windows' starts in their samples, and
    :func:`~vitalssl.data.quality.case_measures`' result."""
    fs, dec, L = cfg.target_srate, cfg.decimation, cfg.window_len
    # float32 as stored: the gate's raw measures compute in float64, and fill_gaps hands the filters a float64 copy
    raw = (ppg, ecg)
    filt = []
    for x, band in zip(raw, (cfg.filter.ppg_band, cfg.filter.ecg_band)):
        # resampling first: both steps are linear filters, and the band-pass then runs on 1/decimation the samples
        sos = bandpass_sos(cfg.filter.type, cfg.filter.order, band, fs)
        filt.append(bandpass(resample(fill_gaps(x), dec), sos))
    n = min(len(filt[0]), len(filt[1]), len(raw[0]) // dec)
    starts = window_starts(n, L, cfg.stride_len)
    measures = case_measures(tuple(r[: n * dec] for r in raw), tuple(f[:n] for f in filt), starts, L,
                             dec, cfg.native_srate, fs, cfg.gate)
    return (filt[0][:n], filt[1][:n]), starts, measures


def process_case(path: Path, caseid: int, subjectid, cfg: WindowConfig, clinical: dict | None = None) -> CaseWindows:
    """Read, resample, filter, window, gate and normalise one case; format its rows for the CSV files.

    ``clinical`` holds the case's clinical values (:data:`CLINICAL_COLUMNS`), repeated on each of its
    windows' metadata rows; a column it lacks is empty."""
    try:
        sig = read_case(path, caseid, cfg.ppg_track, cfg.ecg_track, dict(cfg.label_tracks), cfg.native_srate)
    except CaseError as e:
        return CaseWindows.failed(caseid, e, cfg.window_len)
    fs, L = cfg.target_srate, cfg.window_len
    filt, starts, (ppg, ecg, pair, beats) = gate_case(sig.ppg, sig.ecg, cfg)
    fails = judge(ppg, ecg, pair, cfg.gate)
    kept = kept_mask(fails, len(starts))
    w = np.empty((int(kept.sum()), 2, L))
    for c in range(2):
        w[:, c] = _windows(filt[c], starts[kept], L)
    windows = zscore(w, out=w).astype(np.float32)
    measures = [m[k] for m in (ppg, ecg) for k in CHANNEL_MEASURES] + [pair[k] for k in PAIR_MEASURES]
    starts_s = starts / fs
    labels = _window_labels(sig.labels, starts[kept], L, fs)
    meta = [[str(caseid)] * int(kept.sum()), _column([subjectid] * int(kept.sum())), _column(starts_s[kept])]
    meta += [_column(m[kept]) for m in measures] + [_column(labels[k]) for k in cfg.label_tracks]
    meta += _clinical_cells(clinical or {}, int(kept.sum()))
    failed = [";".join(c for c in CRITERIA if fails[c][i]) for i in range(len(starts))]
    decisions = [[str(caseid)] * len(starts), _column(starts_s), _column(kept), failed] + [_column(m) for m in measures]
    examples = case_examples(caseid, starts_s, fails, margins(ppg, ecg, pair, cfg.gate),
                             lambda i: (filt[0][starts[i]:starts[i] + L], filt[1][starts[i]:starts[i] + L]), beats)
    return CaseWindows(caseid, windows, starts_s, fails, _csv_rows(meta), _csv_rows(decisions), examples,
                       int(np.count_nonzero(pair["ecg_inverted"] & kept)), duration_s=len(sig.ppg) / cfg.native_srate,
                       missing_labels=sig.missing_labels)


def _clinical_cells(values: dict, k: int) -> list:
    """The clinical columns of ``k`` rows of one case: numbers as :func:`_column` writes them, text quoted as CSV."""
    out = []
    for col, kind in CLINICAL_COLUMNS.items():
        v = values.get(col)
        if kind is float:
            cell = _column([math.nan if v is None else float(v)])[0]
        else:
            quote = v is not None and any(ch in v for ch in ',"\r\n')
            cell = "" if v is None else ('"' + v.replace('"', '""') + '"' if quote else v)
        out.append([cell] * k)
    return out


def _work(args) -> CaseWindows:
    source, caseid, subjectid, cfg, clinical = args
    try:
        return process_case(source.case_path(caseid), caseid, subjectid, cfg, clinical)
    except CaseError as e:
        return CaseWindows.failed(caseid, e, cfg.window_len)
    except Exception as e:  # one case's unforeseen input must not end a run over thousands: report it by case
        return CaseWindows.failed(caseid, CaseError(caseid, "processing_error", f"{type(e).__name__}: {e}"),
                                  cfg.window_len)


class _CsvStream:
    """Rows streamed to a temporary file, renamed into place by :meth:`publish`."""

    def __init__(self, path: Path, header: list):
        self.path, self.tmp = Path(path), tmp_path(path)
        self.f = open(self.tmp, "w", newline="")
        self.f.write(",".join(header) + "\n")

    def write(self, rows: str) -> None:
        self.f.write(rows)

    def publish(self) -> None:
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


def output_paths(out_dir: Path, split: str) -> dict:
    """The files :func:`build_split` writes for ``split``."""
    out_dir = Path(out_dir)
    return {"npy": out_dir / f"{split}_windows.npy", "meta": out_dir / f"{split}_windows.meta.csv",
            "info": out_dir / f"{split}_windows.json", "decisions": out_dir / f"{split}_windows.decisions.csv",
            "figure": out_dir / f"{split}_gate.png"}


def build_split(source, cases: list, cfg: WindowConfig, out_dir: Path, split: str, progress: bool = True,
                on_case=None, clinical: dict | None = None) -> dict:
    """Build a split's window file, its meta and decisions tables and gate figure (see :func:`output_paths`)
    from ``cases`` = [(caseid, subjectid)] of ``source``; ``clinical`` (caseid -> clinical values) fills
    the metadata's clinical columns (empty for a case without values).

    Cases run in ``cfg.num_workers`` processes (:func:`vitalssl.data.casepool.run_cases`),
    one case in memory per worker, and are written in case order, so the output
    is byte-identical for the same inputs. Returns the quality report (also the
    caller's DVC metrics). Holds a lock on ``out_dir`` throughout: a second build into the same folder
    fails at once, naming the first one's process id.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with FolderLock(out_dir, LOCK_NAME, "build-windows"):
        _remove_dead_temporaries(output_paths(out_dir, split).values())
        return _build_split(source, cases, cfg, out_dir, split, progress, on_case, clinical)


def _remove_dead_temporaries(paths) -> None:
    """Remove the temporary files of earlier builds of these outputs that were killed before their rename
    (:func:`~vitalssl.atomic.temporaries_of`). Only this stage's own output names, and only under the
    folder's lock: a build still running would hold it."""
    for p in paths:
        for leftover in temporaries_of(p):
            leftover.unlink()


LOCK_NAME = ".build-windows.lock"  # one build at a time per output folder: their files would interleave


def _build_split(source, cases: list, cfg: WindowConfig, out_dir: Path, split: str, progress: bool,
                 on_case, clinical: dict | None) -> dict:
    from tqdm import tqdm

    paths = output_paths(out_dir, split)
    L = cfg.window_len
    report = {"split": split, "cases_total": len(cases), "cases_read": 0, "cases_failed": 0,
              "cases_failed_by_reason": {}, "failed_cases": [], "cases_without_windows": 0,
              "cases_without_windows_list": [],
              "windows_total": 0, "windows_kept": 0, "windows_rejected": 0,
              "rejected_by_criterion": {c: 0 for c in CRITERIA}, "kept_with_inverted_ecg": 0,
              "case_warnings": [], "labels_missing": {k: [] for k in cfg.label_tracks}}
    label_cols = [f"label_{k}" for k in cfg.label_tracks]
    npy = NpyAppender(paths["npy"], (2, L))
    streams = []
    book = ExampleBook()
    results = None
    try:
        streams = [_CsvStream(paths["meta"], META_COLUMNS + label_cols + list(CLINICAL_COLUMNS)),
                   _CsvStream(paths["decisions"], DECISION_COLUMNS)]
        jobs = [(source, int(c), s, cfg, (clinical or {}).get(int(c))) for c, s in cases]
        results = run_cases(_work, jobs, min(cfg.num_workers, max(len(jobs), 1)), cfg.case_timeout_s)
        for i, res in tqdm(results, total=len(jobs), desc=f"build-windows {split}", disable=not progress,
                           unit="case"):
            if isinstance(res, CaseFailure):
                res = CaseWindows.failed(jobs[i][1], CaseError(jobs[i][1], res.reason, res.detail), L)
            if on_case is not None:
                on_case(res)
            if res.error is not None:
                r = res.error.reason
                report["cases_failed"] += 1
                report["cases_failed_by_reason"][r] = report["cases_failed_by_reason"].get(r, 0) + 1
                report["failed_cases"].append({"caseid": res.caseid, "reason": r, "detail": res.error.detail})
                continue
            _count_case(report, res, cfg)
            npy.append(res.windows)
            streams[0].write(res.meta_rows)
            streams[1].write(res.decision_rows)
            book.add(res.examples)
        report["windows_rejected"] = report["windows_total"] - report["windows_kept"]
        if report["windows_kept"] == 0:
            reasons = ", ".join(f"{k}: {v}" for k, v in report["cases_failed_by_reason"].items()) or "none failed to read"
            first = "; ".join(f"case {f['caseid']}: {f['reason']}: {f['detail']}" for f in report["failed_cases"][:3])
            gate = f"; windows rejected by criterion: {report['rejected_by_criterion']}" if report["cases_read"] else ""
            raise RuntimeError(f"split {split!r}: no usable window left from {len(cases)} case(s) "
                               f"(cases failed: {reasons}{gate})" + (f"; first failures: {first}" if first else ""))
        _note_absent_labels(report, cfg)
        plot_gate(book, paths["figure"], cfg.target_srate, split)
        for s in streams:
            s.publish()
        info = {"split": split, "channels": list(CHANNELS), "srate": cfg.target_srate, "window_len": L,
                "count": report["windows_kept"], "dtype": "float32", "layout": "[N, C, L]",
                "normalisation": "z-score per window and channel", "params": to_dict(cfg)}
        write_json(paths["info"], info)
    except BaseException:
        if results is not None:
            results.close()  # stops the workers' pool now, not whenever the generator is collected
        npy.abort()
        for s in streams:
            s.abort()
        raise
    npy.close()  # last: the window file appears only once its companions are in place
    return report


def _count_case(report: dict, res: CaseWindows, cfg: WindowConfig) -> None:
    """Add one read case to the quality report; note a criterion that rejects (nearly) all its windows."""
    n = len(res.starts_s)
    report["cases_read"] += 1
    report["windows_total"] += n
    report["windows_kept"] += len(res.windows)
    report["kept_with_inverted_ecg"] += res.ecg_inverted_kept
    if len(res.windows) == 0:
        report["cases_without_windows"] += 1
        report["cases_without_windows_list"].append(
            {"caseid": res.caseid, "duration_s": round(res.duration_s, 3), "windows": n})
    for key in res.missing_labels:
        report["labels_missing"][key].append(res.caseid)
    for c in CRITERIA:
        k = int(res.fails[c].sum())
        report["rejected_by_criterion"][c] += k
        if n >= CASE_WARNING_MIN_WINDOWS and k >= CASE_WARNING_FRAC * n:
            report["case_warnings"].append({
                "caseid": res.caseid, "criterion": c, "rejected": k, "windows": n,
                "hint": CASE_WARNING_HINTS.get(c, "see this criterion's params under windows.gate")})


def _note_absent_labels(report: dict, cfg: WindowConfig) -> None:
    """A label track that no case read has leaves its column empty; the report lists it (the stage says so).

    Not an error: a source can lack a track (the demo has no ART_SBP), and `evaluate` then skips the tasks
    that use it, with the reason. A misspelt track name shows up here the same way.
    """
    report["labels_absent"] = [k for k in cfg.label_tracks
                               if report["cases_read"] and len(report["labels_missing"][k]) == report["cases_read"]]
