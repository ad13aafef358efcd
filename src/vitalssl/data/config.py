"""Configs of the data wing: case sources, demo, splits, filters, the quality gate, windows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import check


@dataclass(frozen=True)
class DataConfig:
    """Where cases come from (param section `data`)."""
    source: str                 # demo | local | vitaldb
    local_dir: str              # directory of <caseid>.vital files for `local`
    clinical_csv: Optional[str]  # optional clinical table (caseid, subjectid, ...) for `local`
    cache_dir: str              # download cache for `vitaldb`
    download_retries: int
    demo_dir: str               # where the demo stage writes its cases
    api_url: str                # VitalDB API base URL (a mirror or a local server can stand in)
    download_workers: int       # download threads of `ttm-vitaldb fetch` (I/O-bound, apart from the CPU workers)
    connect_timeout_s: float    # per connection attempt
    read_timeout_s: float       # longest wait for the next bytes of a response
    retry_backoff_s: float      # first wait before a retry; doubled each retry (capped at 60 s), with full jitter

    def __post_init__(self):
        check(self.source in ("demo", "local", "vitaldb"), "data.source",
               f"{self.source!r} is not one of demo, local, vitaldb")
        check(self.download_retries >= 0, "data.download_retries", "must be >= 0")
        check(self.api_url.startswith(("http://", "https://")), "data.api_url",
              f"{self.api_url!r} is not an http:// or https:// URL")
        check(self.download_workers >= 1, "data.download_workers", "must be >= 1")
        for k in ("connect_timeout_s", "read_timeout_s"):
            check(getattr(self, k) > 0, f"data.{k}", "must be > 0")
        check(self.retry_backoff_s >= 0, "data.retry_backoff_s", "must be >= 0")


@dataclass(frozen=True)
class DemoConfig:
    """Synthetic demo cases (param section `demo`)."""
    n_cases: int
    n_subjects: int
    duration_s: tuple[float, float]  # (min, max) seconds per case
    fault_rate_per_min: float  # expected number of faults per minute of recording
    seed: int
    case_set: str              # case ids are taken from this vitaldb.caseids_* set

    def __post_init__(self):
        check(self.n_cases >= 3, "demo.n_cases", "must be >= 3 (train, val and test need a case each)")
        check(1 <= self.n_subjects <= self.n_cases, "demo.n_subjects", "must be in [1, demo.n_cases]")
        check(len(self.duration_s) == 2 and 30 <= self.duration_s[0] <= self.duration_s[1],
               "demo.duration_s", "must be [min, max] with 30 <= min <= max")
        check(self.fault_rate_per_min >= 0, "demo.fault_rate_per_min", "must be >= 0")


@dataclass(frozen=True)
class SplitConfig:
    """Subject-disjoint case splits (param section `splits`)."""
    mode: str                  # fasttrack | full
    case_set: str              # bis, des, ... (vitaldb.caseids_<name>) or all
    fasttrack_cases: int
    train: float
    val: float
    test: float
    seed: int

    def __post_init__(self):
        check(self.mode in ("fasttrack", "full"), "splits.mode", f"{self.mode!r} is not fasttrack or full")
        check(self.fasttrack_cases >= 3, "splits.fasttrack_cases", "must be >= 3")
        for k in ("train", "val", "test"):
            check(0.0 <= getattr(self, k) <= 1.0, f"splits.{k}", "must be in [0, 1]")
        check(abs(self.train + self.val + self.test - 1.0) < 1e-6, "splits.train/val/test",
               f"ratios must sum to 1, got {self.train + self.val + self.test:g}")
        check(self.train > 0 and self.val > 0, "splits.train/val", "train and val ratios must be > 0")


@dataclass(frozen=True)
class FilterConfig:
    """Zero-phase band-pass filters, as second-order sections."""
    type: str                  # butter | cheby2 | bessel
    order: int
    ppg_band: tuple[float, float]  # Hz
    ecg_band: tuple[float, float]  # Hz

    def __post_init__(self):
        check(self.type in ("butter", "cheby2", "bessel"), "windows.filter.type",
               f"{self.type!r} is not butter, cheby2 or bessel")
        check(1 <= self.order <= 10, "windows.filter.order", "must be in [1, 10]")
        for k in ("ppg_band", "ecg_band"):
            b = getattr(self, k)
            check(len(b) == 2 and 0 < b[0] < b[1], f"windows.filter.{k}", "must be [low, high] Hz with 0 < low < high")


@dataclass(frozen=True)
class GateConfig:
    """Per-window quality criteria; each rejects on its own and is counted on its own."""
    max_missing_frac: float    # fraction of NaN samples per channel
    max_flat_s: float          # longest run of unchanged samples, s
    flat_eps: float            # "unchanged" tolerance, raw units
    max_clip_frac: float       # fraction of samples on plateaus at the window's extreme values
    clip_tol: float            # closeness to the extreme, as a fraction of the window's range
    clip_min_run_s: float      # shortest plateau counted as clipping, s
    ppg_amp_range: tuple[float, float]  # robust peak-to-peak of filtered PPG, raw units
    ecg_amp_range: tuple[float, float]  # robust peak-to-peak of filtered ECG, mV
    hr_range: tuple[float, float]  # bpm
    min_beats: int             # per channel and window
    max_ibi_cv: float          # beat-to-beat interval coefficient of variation
    max_gap_ratio: float       # longest stretch without a beat (window edges included) / median beat interval
    max_hr_diff: float         # |HR_PPG - HR_ECG|, bpm
    min_beat_match: float      # fraction of R-R intervals holding exactly one PPG pulse
    max_pat_iqr_s: float       # interquartile range of the R-peak -> PPG-pulse delay, s

    def __post_init__(self):
        check(0 <= self.max_missing_frac < 1, "windows.gate.max_missing_frac", "must be in [0, 1)")
        check(self.max_flat_s > 0, "windows.gate.max_flat_s", "must be > 0")
        check(self.flat_eps >= 0, "windows.gate.flat_eps", "must be >= 0")
        check(0 < self.max_clip_frac < 1, "windows.gate.max_clip_frac", "must be in (0, 1)")
        check(0 < self.clip_tol < 0.05, "windows.gate.clip_tol", "must be in (0, 0.05): the width of one level, as a fraction of the range")
        for k in ("ppg_amp_range", "ecg_amp_range", "hr_range"):
            r = getattr(self, k)
            check(len(r) == 2 and 0 <= r[0] < r[1], f"windows.gate.{k}", "must be [low, high] with 0 <= low < high")
        check(self.min_beats >= 2, "windows.gate.min_beats", "must be >= 2")
        check(self.max_ibi_cv > 0, "windows.gate.max_ibi_cv", "must be > 0")
        check(self.max_hr_diff > 0, "windows.gate.max_hr_diff", "must be > 0")
        check(self.clip_min_run_s > 0, "windows.gate.clip_min_run_s", "must be > 0")
        check(self.max_gap_ratio >= 1, "windows.gate.max_gap_ratio", "must be >= 1")
        check(0 < self.min_beat_match <= 1, "windows.gate.min_beat_match", "must be in (0, 1]")
        check(self.max_pat_iqr_s > 0, "windows.gate.max_pat_iqr_s", "must be > 0")


@dataclass(frozen=True)
class WindowConfig:
    """Window building (param section `windows`)."""
    ppg_track: str
    ecg_track: str
    label_tracks: dict[str, str]  # label name -> numeric track name
    native_srate: float        # Hz the waveform tracks must have
    target_srate: int          # Hz after resampling
    window_s: float
    stride_s: float
    num_workers: int           # worker processes, each holding one case at a time
    case_timeout_s: float      # a case still running after this (download included) fails with reason `timeout`
    filter: FilterConfig
    gate: GateConfig

    def __post_init__(self):
        check(self.native_srate > 0, "windows.native_srate", "must be > 0")
        check(self.target_srate > 0 and float(self.native_srate / self.target_srate).is_integer(),
               "windows.target_srate", f"must divide windows.native_srate ({self.native_srate:g}) exactly")
        check(self.window_s > 0 and float(self.window_s * self.target_srate).is_integer(), "windows.window_s",
               "must be > 0 and a whole number of samples at target_srate")
        check(self.stride_s > 0 and float(self.stride_s * self.target_srate).is_integer(), "windows.stride_s",
               "must be > 0 and a whole number of samples at target_srate")
        check(self.num_workers >= 1, "windows.num_workers", "must be >= 1")
        check(self.case_timeout_s > 0, "windows.case_timeout_s", "must be > 0")
        nyq = self.native_srate / 2
        for k in ("ppg_band", "ecg_band"):
            check(getattr(self.filter, k)[1] < min(nyq, self.target_srate / 2), f"windows.filter.{k}",
                   f"high edge must be below {min(nyq, self.target_srate / 2):g} Hz (Nyquist of target_srate)")

    @property
    def window_len(self) -> int:
        return int(round(self.window_s * self.target_srate))

    @property
    def stride_len(self) -> int:
        return int(round(self.stride_s * self.target_srate))

    @property
    def decimation(self) -> int:
        return int(round(self.native_srate / self.target_srate))
