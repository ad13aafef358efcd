"""Command lines with the guide's flags; ``params.yaml`` (or ``--params``/``--config``) gives the defaults.

``ttm-vitaldb prepare-splits|build-windows`` mirror ``scripts/ttm_vitaldb.py``;
``pretrain-vitaldb-ssl`` mirrors ``scripts/pretrain_vitaldb_ssl.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import merge
from .errors import ArgumentParser, one_line_errors
from .params import load_params, load_yaml, section


# --------------------------------------------------------------------------- ttm-vitaldb

@one_line_errors
def ttm_vitaldb(argv=None) -> None:
    from ..config import from_dict
    from ..data.config import WindowConfig
    from .data_stages import data_config, run_build_windows, run_fetch, run_prepare_splits, split_config, window_config

    ap = ArgumentParser(prog="ttm-vitaldb", description="VitalDB splits and windows (outside DVC)")
    sub = ap.add_subparsers(dest="command", required=True)
    ps = sub.add_parser("prepare-splits", help="subject-disjoint train/val/test case splits")
    ps.add_argument("--params", default="params.yaml", help="params file giving the defaults")
    ps.add_argument("--source", choices=["demo", "local", "vitaldb"], help="overrides data.source")
    ps.add_argument("--mode", choices=["fasttrack", "full"], help="overrides splits.mode")
    ps.add_argument("--case-set", help="overrides splits.case_set (bis, des, ..., all)")
    ps.add_argument("--output", default="data", help="directory for splits_<mode>.json")
    fe = sub.add_parser("fetch", help="download the cases of split(s) into the vitaldb cache (data.cache_dir)")
    fe.add_argument("--params", default="params.yaml", help="params file giving the defaults")
    fe.add_argument("--split-file", required=True)
    fe.add_argument("--split", required=True, nargs="+", help="one or more splits (train val test)")
    fe.add_argument("--workers", type=int, help="overrides data.download_workers")
    bw = sub.add_parser("build-windows", help="gated, normalised windows of one split")
    bw.add_argument("--params", default="params.yaml", help="params file giving the defaults")
    bw.add_argument("--channels-yaml", help="YAML with ppg_track, ecg_track, label_tracks (overrides `windows`)")
    bw.add_argument("--windows-yaml", help="YAML with any keys of the `windows` section (overrides it)")
    bw.add_argument("--split-file", required=True)
    bw.add_argument("--split", required=True)
    bw.add_argument("--outdir", default="data/vitaldb_windows")
    bw.add_argument("--metrics", help="quality report JSON (default: <outdir>/<split>_quality.json)")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    if args.command == "prepare-splits":
        if args.source:
            params = merge(params, {"data": {**section(params, "data"), "source": args.source}})
        over = {k: v for k, v in (("mode", args.mode), ("case_set", args.case_set)) if v is not None}
        params = merge(params, {"splits": over})
        scfg = split_config(params)
        wcfg = window_config(params)
        run_prepare_splits(data_config(params), scfg, Path(args.output) / f"splits_{scfg.mode}.json",
                           (wcfg.ppg_track, wcfg.ecg_track))
    elif args.command == "fetch":
        if args.workers is not None:
            params = merge(params, {"data": {**section(params, "data"), "download_workers": args.workers}})
        run_fetch(data_config(params), Path(args.split_file), args.split)
    else:
        w = dict(section(params, "windows"))
        for flag, path in (("--channels-yaml", args.channels_yaml), ("--windows-yaml", args.windows_yaml)):
            if path:
                w = merge(w, load_yaml(path, flag))
        wcfg = from_dict(WindowConfig, w, "windows")
        metrics = Path(args.metrics) if args.metrics else Path(args.outdir) / f"{args.split}_quality.json"
        run_build_windows(data_config(params), wcfg, Path(args.split_file), args.split, Path(args.outdir),
                          metrics)


# --------------------------------------------------------------------------- pretrain-vitaldb-ssl

def pretrain_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog="pretrain-vitaldb-ssl",
                                 description="Masked-signal-model pretraining of a TinyTimeMixer encoder")
    a = ap.add_argument
    a("--config", default="params.yaml", help="YAML with params.yaml's layout (default: params.yaml)")
    a("--data-dir", required=True, help="directory with train/val window files")
    a("--output-dir", default="artifacts/foundation_model")
    a("--work-dir", help="resumable state (default: <output-dir parent>/.<name>.resume)")
    a("--channels", nargs="+", help="channels to use (default: PPG ECG)")
    a("--train-file")
    a("--val-file")
    a("--mask-ratio", type=float)
    a("--mask-type", choices=["random", "block"])
    a("--epochs", type=int)
    a("--batch-size", type=int)
    a("--lr", type=float)
    a("--weight-decay", type=float)
    a("--warmup-epochs", type=int)
    a("--context-length", type=int)
    a("--patch-size", type=int)
    a("--device")
    a("--num-workers", type=int)
    a("--no-amp", action="store_true", help="disable automatic mixed precision (CUDA only anyway)")
    a("--gradient-clip", type=float)
    a("--stft-weight", type=float)
    a("--log-interval", type=int)
    a("--save-interval", type=int)
    a("--fast", action="store_true", help="use a small subset of each split")
    a("--seed", type=int)
    resume = ap.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="continue from the resumable state; fail if "
                        "there is none or it was made with other params, code or data")
    resume.add_argument("--fresh", action="store_true", help="discard any resumable state and start over "
                        "(default: continue a matching state, start fresh otherwise, saying which)")
    a("--metrics", help="also write the final/best metrics JSON here")
    a("--plots", help="also write the per-epoch history CSV here")
    return ap


def config_from_args(args):
    from .pretrain_stage import pretrain_config

    params = load_yaml(args.config, "--config")
    over: dict = {}
    for flag in ("mask_ratio", "mask_type", "epochs", "batch_size", "lr", "weight_decay", "warmup_epochs",
                 "device", "num_workers", "gradient_clip", "stft_weight", "log_interval", "save_interval",
                 "seed", "train_file", "val_file"):
        v = getattr(args, flag)
        if v is not None:
            over[flag] = v
    model: dict = {}
    if args.channels:
        over["channels"] = list(args.channels)
        model["num_input_channels"] = len(args.channels)
    if args.context_length is not None:
        model["context_length"] = args.context_length
    if args.patch_size is not None:
        model["patch_length"] = model["patch_stride"] = args.patch_size
    if model:
        over["model"] = model
    if args.no_amp:
        over["amp"] = False
    if args.fast:
        over["fast"] = True
    return pretrain_config(params, over)


@one_line_errors
def pretrain_vitaldb_ssl(argv=None) -> None:
    from .pretrain_stage import run_pretrain

    args = pretrain_parser().parse_args(argv)
    cfg = config_from_args(args)
    out = Path(args.output_dir)
    work = Path(args.work_dir) if args.work_dir else out.parent / f".{out.name}.resume"
    run_pretrain(cfg, Path(args.data_dir), out, work, metrics_path=args.metrics, plots_path=args.plots,
                 resume="require" if args.resume else "fresh" if args.fresh else "auto")
