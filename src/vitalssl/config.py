"""Typed configuration.

Every section of ``params.yaml`` becomes a frozen dataclass. Unknown or missing
keys are errors that name the key; values are range-checked where they are
built, so a bad param fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Optional

class ConfigError(ValueError):
    """A param is missing, unknown or out of range; the message names it."""


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"invalid param `{name}`: {msg}")


def from_dict(cls, d: Any, where: str = ""):
    """Build dataclass ``cls`` from mapping ``d``, refusing unknown and missing keys.

    ``where`` is the dotted path of ``d`` in params.yaml, used in messages.
    Nested dataclass fields are built recursively.
    """
    prefix = f"{where}." if where else ""
    if not isinstance(d, dict):
        raise ConfigError(f"param `{where or cls.__name__}` must be a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"unknown param(s) {', '.join(prefix + k for k in unknown)}; "
                          f"allowed under `{where or 'top level'}`: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, f in fields.items():
        if name not in d:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            raise ConfigError(f"missing param `{prefix}{name}`")
        value = d[name]
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value, prefix + name)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # pragma: no cover - defensive
        raise ConfigError(f"invalid params under `{where}`: {e}") from e


def to_dict(cfg) -> dict:
    """Plain (JSON/YAML-ready) dict of a config dataclass; tuples become lists."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(cfg)


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class DataConfig:
    """Where cases come from (param section `data`)."""
    source: str                 # demo | local | vitaldb
    local_dir: str              # directory of <caseid>.vital files for `local`
    clinical_csv: Optional[str]  # optional clinical table (caseid, subjectid, ...) for `local`
    cache_dir: str              # download cache for `vitaldb`
    download_retries: int
    demo_dir: str               # where the demo stage writes its cases

    def __post_init__(self):
        _check(self.source in ("demo", "local", "vitaldb"), "data.source",
               f"{self.source!r} is not one of demo, local, vitaldb")
        _check(self.download_retries >= 0, "data.download_retries", "must be >= 0")


@dataclass(frozen=True)
class DemoConfig:
    """Synthetic demo cases (param section `demo`)."""
    n_cases: int
    n_subjects: int
    duration_s: tuple          # (min, max) seconds per case
    fault_rate_per_min: float  # expected number of faults per minute of recording
    seed: int
    case_set: str              # case ids are taken from this vitaldb.caseids_* set

    def __post_init__(self):
        _check(self.n_cases >= 3, "demo.n_cases", "must be >= 3 (train, val and test need a case each)")
        _check(1 <= self.n_subjects <= self.n_cases, "demo.n_subjects", "must be in [1, demo.n_cases]")
        _check(len(self.duration_s) == 2 and 30 <= self.duration_s[0] <= self.duration_s[1],
               "demo.duration_s", "must be [min, max] with 30 <= min <= max")
        _check(self.fault_rate_per_min >= 0, "demo.fault_rate_per_min", "must be >= 0")


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
        _check(self.mode in ("fasttrack", "full"), "splits.mode", f"{self.mode!r} is not fasttrack or full")
        _check(self.fasttrack_cases >= 3, "splits.fasttrack_cases", "must be >= 3")
        for k in ("train", "val", "test"):
            _check(0.0 <= getattr(self, k) <= 1.0, f"splits.{k}", "must be in [0, 1]")
        _check(abs(self.train + self.val + self.test - 1.0) < 1e-6, "splits.train/val/test",
               f"ratios must sum to 1, got {self.train + self.val + self.test:g}")
        _check(self.train > 0 and self.val > 0, "splits.train/val", "train and val ratios must be > 0")


@dataclass(frozen=True)
class FilterConfig:
    """Zero-phase band-pass filters, as second-order sections."""
    type: str                  # butter | cheby2 | bessel
    order: int
    ppg_band: tuple            # Hz
    ecg_band: tuple            # Hz

    def __post_init__(self):
        _check(self.type in ("butter", "cheby2", "bessel"), "windows.filter.type",
               f"{self.type!r} is not butter, cheby2 or bessel")
        _check(1 <= self.order <= 10, "windows.filter.order", "must be in [1, 10]")
        for k in ("ppg_band", "ecg_band"):
            b = getattr(self, k)
            _check(len(b) == 2 and 0 < b[0] < b[1], f"windows.filter.{k}", "must be [low, high] Hz with 0 < low < high")


@dataclass(frozen=True)
class GateConfig:
    """Per-window quality criteria; each rejects on its own and is counted on its own."""
    max_missing_frac: float    # fraction of NaN samples per channel
    max_flat_s: float          # longest run of unchanged samples, s
    flat_eps: float            # "unchanged" tolerance, raw units
    max_clip_frac: float       # fraction of samples stuck at the window's extreme values
    clip_tol: float            # closeness to the extreme, as a fraction of the range
    ppg_amp_range: tuple       # robust peak-to-peak of filtered PPG, raw units
    ecg_amp_range: tuple       # robust peak-to-peak of filtered ECG, mV
    hr_range: tuple            # bpm
    min_beats: int             # per channel and window
    max_ibi_cv: float          # beat-to-beat interval coefficient of variation
    max_hr_diff: float         # |HR_PPG - HR_ECG|, bpm

    def __post_init__(self):
        _check(0 <= self.max_missing_frac < 1, "windows.gate.max_missing_frac", "must be in [0, 1)")
        _check(self.max_flat_s > 0, "windows.gate.max_flat_s", "must be > 0")
        _check(self.flat_eps >= 0, "windows.gate.flat_eps", "must be >= 0")
        _check(0 < self.max_clip_frac < 1, "windows.gate.max_clip_frac", "must be in (0, 1)")
        _check(0 <= self.clip_tol < 0.5, "windows.gate.clip_tol", "must be in [0, 0.5)")
        for k in ("ppg_amp_range", "ecg_amp_range", "hr_range"):
            r = getattr(self, k)
            _check(len(r) == 2 and 0 <= r[0] < r[1], f"windows.gate.{k}", "must be [low, high] with 0 <= low < high")
        _check(self.min_beats >= 2, "windows.gate.min_beats", "must be >= 2")
        _check(self.max_ibi_cv > 0, "windows.gate.max_ibi_cv", "must be > 0")
        _check(self.max_hr_diff > 0, "windows.gate.max_hr_diff", "must be > 0")


@dataclass(frozen=True)
class WindowConfig:
    """Window building (param section `windows`)."""
    ppg_track: str
    ecg_track: str
    label_tracks: dict         # label name -> numeric track name
    native_srate: float        # Hz the waveform tracks must have
    target_srate: int          # Hz after resampling
    window_s: float
    stride_s: float
    num_workers: int
    filter: FilterConfig
    gate: GateConfig

    def __post_init__(self):
        _check(self.native_srate > 0, "windows.native_srate", "must be > 0")
        _check(self.target_srate > 0 and float(self.native_srate / self.target_srate).is_integer(),
               "windows.target_srate", f"must divide windows.native_srate ({self.native_srate:g}) exactly")
        _check(self.window_s > 0 and float(self.window_s * self.target_srate).is_integer(), "windows.window_s",
               "must be > 0 and a whole number of samples at target_srate")
        _check(self.stride_s > 0 and float(self.stride_s * self.target_srate).is_integer(), "windows.stride_s",
               "must be > 0 and a whole number of samples at target_srate")
        _check(self.num_workers >= 1, "windows.num_workers", "must be >= 1")
        nyq = self.native_srate / 2
        for k in ("ppg_band", "ecg_band"):
            _check(getattr(self.filter, k)[1] < min(nyq, self.target_srate / 2), f"windows.filter.{k}",
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


# --------------------------------------------------------------------------- model and training

@dataclass(frozen=True)
class ModelConfig:
    """Encoder/decoder config; keys are TinyTimeMixerConfig's own names (section `model`)."""
    context_length: int
    patch_length: int
    patch_stride: int
    num_input_channels: int
    d_model: int
    num_layers: int
    expansion_factor: int
    dropout: float
    mode: str                  # common_channel | mix_channel
    gated_attn: bool
    scaling: Optional[str]     # null | std | mean; computed over visible samples only
    decoder_hidden: int        # 0 = linear decoder, else one hidden layer of this width
    mask_token: bool           # learned value in hidden patches instead of zeros

    def __post_init__(self):
        _check(self.patch_length > 0 and self.context_length % self.patch_length == 0,
               "model.patch_length (--patch-size)",
               f"{self.patch_length} does not divide context_length {self.context_length}")
        _check(self.patch_stride == self.patch_length, "model.patch_stride",
               "must equal patch_length (masking works on non-overlapping patches)")
        _check(self.num_input_channels >= 1, "model.num_input_channels", "must be >= 1")
        _check(self.mode in ("common_channel", "mix_channel"), "model.mode", "must be common_channel or mix_channel")
        _check(self.scaling in (None, "std", "mean"), "model.scaling", "must be null, std or mean")
        _check(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")
        _check(self.decoder_hidden >= 0, "model.decoder_hidden", "must be >= 0")

    @property
    def num_patches(self) -> int:
        return self.context_length // self.patch_length


@dataclass(frozen=True)
class STFTConfig:
    """Multi-resolution STFT loss (section `stft`)."""
    fft_sizes: tuple
    hop_sizes: tuple
    win_lengths: tuple
    eps: float

    def __post_init__(self):
        n = len(self.fft_sizes)
        _check(n > 0 and len(self.hop_sizes) == n and len(self.win_lengths) == n, "stft",
               "fft_sizes, hop_sizes and win_lengths must have the same non-zero length")
        for f, h, w in zip(self.fft_sizes, self.hop_sizes, self.win_lengths):
            _check(0 < h <= w <= f, "stft", f"need 0 < hop <= win <= fft, got hop={h} win={w} fft={f}")
        _check(self.eps > 0, "stft.eps", "must be > 0")


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining hyperparameters: the guide's flag names as top-level params."""
    seed: int
    channels: tuple
    train_file: str
    val_file: str
    mask_ratio: float
    mask_type: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    stft_weight: float
    gradient_clip: float
    device: str
    num_workers: int
    amp: bool
    log_interval: int
    save_interval: int
    fast: bool
    fast_windows: int          # windows per split used by --fast
    model: ModelConfig
    stft: STFTConfig

    def __post_init__(self):
        _check(0 < self.mask_ratio < 1, "mask_ratio (--mask-ratio)", f"{self.mask_ratio} is not in (0, 1)")
        _check(self.mask_type in ("random", "block"), "mask_type (--mask-type)", f"{self.mask_type!r} is not random or block")
        _check(self.epochs >= 1, "epochs (--epochs)", "must be >= 1")
        _check(self.batch_size >= 1, "batch_size (--batch-size)", "must be >= 1")
        _check(self.lr > 0, "lr (--lr)", "must be > 0")
        _check(self.weight_decay >= 0, "weight_decay (--weight-decay)", "must be >= 0")
        _check(0 <= self.warmup_epochs <= self.epochs, "warmup_epochs (--warmup-epochs)",
               f"must be in [0, epochs={self.epochs}]")
        _check(self.stft_weight >= 0, "stft_weight (--stft-weight)", "must be >= 0")
        _check(self.gradient_clip >= 0, "gradient_clip (--gradient-clip)", "must be >= 0 (0 disables)")
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device (--device)",
               "must be auto, cpu, cuda or cuda:N")
        _check(self.num_workers >= 0, "num_workers (--num-workers)", "must be >= 0")
        _check(self.log_interval >= 1, "log_interval (--log-interval)", "must be >= 1")
        _check(self.save_interval >= 1, "save_interval (--save-interval)", "must be >= 1")
        _check(len(self.channels) >= 1 and len(set(self.channels)) == len(self.channels), "channels (--channels)",
               "must be a non-empty list without repeats")
        _check(len(self.channels) == self.model.num_input_channels, "channels (--channels)",
               f"{len(self.channels)} channel(s) given but model.num_input_channels is {self.model.num_input_channels}")
        _check(self.fast_windows >= 1, "fast_windows", "must be >= 1")
        n_hidden = round(self.mask_ratio * self.model.num_patches)
        _check(1 <= n_hidden < self.model.num_patches, "mask_ratio (--mask-ratio)",
               f"{self.mask_ratio} of {self.model.num_patches} patches hides {n_hidden}; need 1..{self.model.num_patches - 1}")


PRETRAIN_SECTIONS = ("model", "stft")
DATA_SECTIONS = ("data", "demo", "splits", "windows")


def pretrain_config(params: dict, overrides: Optional[dict] = None) -> PretrainConfig:
    """PretrainConfig from the whole params.yaml mapping (top-level keys + `model`, `stft`)."""
    keys = {f.name for f in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(params) - keys - set(DATA_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown top-level param(s): {', '.join(unknown)}")
    d = {k: v for k, v in params.items() if k in keys}
    d = _merge(d, overrides or {})
    return from_dict(PretrainConfig, d, "")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def replace(cfg, **changes):
    """dataclasses.replace that re-runs validation."""
    return dataclasses.replace(cfg, **changes)


__all__ = [
    "ConfigError", "from_dict", "to_dict", "DataConfig", "DemoConfig", "SplitConfig",
    "FilterConfig", "GateConfig", "WindowConfig", "ModelConfig", "STFTConfig", "PretrainConfig",
    "pretrain_config", "replace",
]
