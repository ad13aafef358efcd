"""The `pretrain` stage: params -> :class:`PretrainConfig` -> training -> DVC metrics and plots files."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from ..atomic import atomic_write_text, write_json
from ..config import ConfigError, from_dict, merge
from ..ssl.config import PretrainConfig
from ..ssl.folders import check_run_paths
from ..ssl.outputs import history_csv
from ..ssl.resume import remove_work_dir
from ..ssl.train import pretrain
from .params import SECTIONS


def pretrain_config(params: dict, overrides: Optional[dict] = None) -> PretrainConfig:
    """PretrainConfig from the whole params mapping (top-level keys + `model`, `stft`), then ``overrides``."""
    keys = {f.name for f in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(params) - keys - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown top-level param(s): {', '.join(unknown)}; allowed: "
                          f"{', '.join(sorted(keys | set(SECTIONS)))}")
    d = merge({k: v for k, v in params.items() if k in keys}, overrides or {})
    return from_dict(PretrainConfig, d, "")


def run_pretrain(cfg: PretrainConfig, data_dir: Path, output_dir: Path, work_dir: Path, *,
                 metrics_path: Optional[Path] = None, plots_path: Optional[Path] = None, resume: str = "auto",
                 progress: bool = True, log=print) -> dict:
    """Train, then write the run's summary (DVC metrics) and per-epoch history (DVC plots) on rank 0."""
    check_run_paths(data_dir, output_dir, work_dir, {"--metrics": metrics_path, "--plots": plots_path})
    res = pretrain(cfg, data_dir, output_dir, work_dir, resume=resume, keep_state=True, progress=progress,
                   log=log)
    if res["rank"] == 0:
        for path, write in ((metrics_path, lambda p: write_json(p, res["summary"])),
                            (plots_path, lambda p: atomic_write_text(p, history_csv(res["history"])))):
            if path is not None:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                write(Path(path))
        remove_work_dir(work_dir, log)  # spent once every output of the run is in place
    return res
