"""The `label-efficiency` stage: params -> configs -> the four methods per task and fraction -> metrics and plots."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text, write_json
from ..config import from_dict
from ..eval.beatfeatures import split_beat_features
from ..eval.config import EvalConfig, LabelEfficiencyConfig
from ..eval.figures import plot_label_efficiency
from ..eval.labelefficiency import curves, label_efficiency
from ..eval.splitdata import SplitData, check_held_out
from ..ssl.checkpoint import load_checkpoint, rebuild_model
from ..ssl.distributed import pick_device
from ..ssl.encoder import PretrainedEncoder
from .params import section

SPLITS = ("train", "val", "test")   # train fits, val stops the trained networks early, test reports


def label_efficiency_config(params: dict) -> LabelEfficiencyConfig:
    return from_dict(LabelEfficiencyConfig, section(params, "label_efficiency"), "label_efficiency")


def stage_features(splits: dict, encoder: PretrainedEncoder, channels: tuple, batch_size: int, progress: bool) -> dict:
    """``{"pretrained_channels" | "beat": {split: [n, d]}}``: channel-pooled embeddings and the beat features."""
    beat = split_beat_features(list(splits.values()), channels, batch_size)   # first: it refuses missing channels
    return {"pretrained_channels": {name: encoder.embed(sp.windows, "channels", batch_size, progress).numpy()
                                    .astype(np.float64) for name, sp in splits.items()},
            "beat": beat}


def budget(lcfg: LabelEfficiencyConfig) -> dict:
    """What the trained networks were allowed, as the metrics file records it (the model card quotes it)."""
    keys = ("draws", "max_steps", "eval_every", "patience", "batch_size", "finetune_from_probe", "lr_finetune", "lr_scratch")
    return {k: getattr(lcfg, k) for k in keys}


def run_label_efficiency(cfg: EvalConfig, lcfg: LabelEfficiencyConfig, model_dir: Path, windows_dir: Path,
                         metrics_path: Path, plots_dir: Path, figure_png: Path, *, progress: bool = True,
                         log=print) -> dict:
    """Run every task and fraction; write the metrics JSON, one plot CSV per task and the figure."""
    lcfg.check_tasks(cfg.tasks)
    for p in (metrics_path, figure_png):
        if Path(p).is_dir():
            raise IsADirectoryError(f"{p} is a folder; the stage writes a file there")
    if Path(plots_dir).exists() and not Path(plots_dir).is_dir():
        raise NotADirectoryError(f"{plots_dir} is a file; the stage writes one plot CSV per task into a folder there")
    ckpt = load_checkpoint(Path(model_dir) / cfg.checkpoint)
    model = rebuild_model(ckpt)
    channels = tuple(ckpt["config"]["channels"])
    splits = {s: SplitData.load(Path(windows_dir), s, channels) for s in SPLITS}
    check_held_out(splits["train"], [splits["val"], splits["test"]])
    device = pick_device(cfg.device, 0)
    enc = PretrainedEncoder(model.encoder, model.cfg, device)
    log(f"label efficiency: {', '.join(lcfg.tasks)} with {', '.join(f'{f:g}' for f in sorted(lcfg.fractions))} "
        f"of {len(np.unique(splits['train'].groups))} train subjects; early stopping on val, scores on test")
    feats = stage_features(splits, enc, channels, cfg.batch_size, progress)
    res = label_efficiency(cfg, lcfg, feats, splits, enc.model, model.cfg, device, log)
    metrics = {"checkpoint": {"epoch": int(ckpt["epoch"]) + 1, "file": cfg.checkpoint},
               "fractions": sorted(lcfg.fractions), "split": "test", "budget": budget(lcfg), "tasks": res}
    Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
    Path(plots_dir).mkdir(parents=True, exist_ok=True)
    Path(figure_png).parent.mkdir(parents=True, exist_ok=True)
    rows = curves(res, lcfg.fractions)
    for name, r in rows.items():
        atomic_write_text(Path(plots_dir) / f"{name}.csv", _csv(r))
    plot_label_efficiency(rows, res, Path(figure_png), cfg.ci)
    write_json(Path(metrics_path), metrics)
    return metrics


def _csv(rows: list) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if isinstance(v, float) and math.isnan(v) else (f"{v:.6g}" if isinstance(v, float) else v)
                    for k, v in r.items()})
    return buf.getvalue()
