"""The evaluation of a pretraining checkpoint: reconstruction against baselines, and linear probes.

:func:`evaluate_checkpoint` is what the ``evaluate`` stage runs. It returns the
metrics (plain numbers and names, ready for JSON) and the arrays the figures draw.
Intervals are subject-level bootstrap percentiles (:mod:`.bootstrap`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..seeding import BOOTSTRAP, RANDOM_ENCODER, derive_seed, name_seed
from ..ssl.checkpoint import load_checkpoint, rebuild_model
from ..ssl.distributed import pick_device
from ..ssl.encoder import POOLS, PretrainedEncoder
from . import bootstrap as bs
from .config import EvalConfig
from .beatfeatures import split_beat_features
from .features import hand_features
from .probes import alpha_record, ridge_fit, ridge_predict
from .reconstruction import (BASELINES, fit_beat_repeat_scale, fixed_masks, hidden_samples, mask_key,
                             model_reconstruction, baseline_reconstructions, reconstruction_errors)
from .splitdata import SplitData, check_held_out
from .tasks import pool_random_seeds, task_metrics

FIGURE_SETTING = ("random", 0.4)   # the mask setting the reconstruction figure draws (the pretraining default)


def evaluate_checkpoint(cfg: EvalConfig, checkpoint: Path, windows_dir: Path, splits: tuple, *,
                        progress: bool = True, log=print) -> dict:
    """Evaluate ``checkpoint`` on each of ``splits`` (probes are fitted on ``train``).

    Returns ``{"metrics": {...}, "figure": {...}}``: ``metrics[split]`` holds the
    window and subject counts, ``reconstruction`` and ``probes``; ``figure`` holds
    the arrays :func:`vitalssl.eval.figures.plot_reconstructions` draws, from the
    first split.
    """
    device = pick_device(cfg.device, 0)
    ckpt = load_checkpoint(Path(checkpoint))
    model = rebuild_model(ckpt).to(device).eval()
    mcfg = model.cfg
    channels = tuple(ckpt["config"]["channels"])
    train = SplitData.load(windows_dir, "train", channels)
    evals = []
    for s in splits:   # each split is checked as it is read, so a bad val is named before a missing test
        evals.append(SplitData.load(windows_dir, s, channels))
        check_held_out(train, evals[-1:])
    log(f"evaluate: {checkpoint} (epoch {ckpt['epoch'] + 1}) on {', '.join(f'{e.name} ({len(e)} windows)' for e in evals)}"
        f"; probes fitted on train ({len(train)} windows)")

    settings = [(k, r) for k in cfg.mask_types for r in cfg.mask_ratios]
    scales = {(k, r): fit_beat_repeat_scale(train.read, len(train), mcfg.num_patches, mcfg.patch_length, r, k,
                                            cfg.seed, cfg.scale_fit_windows, cfg.batch_size) for k, r in settings}
    metrics = {"checkpoint": {"epoch": int(ckpt["epoch"]) + 1, "file": Path(checkpoint).name}}
    features = probe_features(cfg, model.encoder, mcfg, [train] + evals, device, progress, channels)
    tasks = task_metrics(cfg, features, train, evals, lambda name: name_seed(cfg.seed, BOOTSTRAP, name), POOLS)
    figure, fits = None, {}
    for ev in evals:
        rec, fig = reconstruction_metrics(cfg, model, ev, scales, channels, device, progress)
        metrics[ev.name] = {"windows": len(ev), "subjects": bs.group_index(ev.groups)[1],
                            "reconstruction": rec, "probes": probe_metrics(cfg, features, train, ev, fits),
                            "tasks": tasks[ev.name]}
        if ev.name == evals[0].name:
            figure = fig
    return {"metrics": metrics, "figure": figure}


# --------------------------------------------------------------------------- reconstruction

def reconstruction_metrics(cfg, model, ev: SplitData, scales: dict, channels, device, progress) -> tuple[dict, dict]:
    """Per mask setting: hidden-sample MSE per channel and overall, the best baseline, model vs it with intervals."""
    from tqdm import tqdm

    mcfg = model.cfg
    out, figure = {}, None
    names = [c.lower() for c in channels]
    for (kind, ratio), scale in scales.items():
        masks = fixed_masks(len(ev), mcfg.num_patches, ratio, kind, cfg.seed)
        with tqdm(total=len(ev), desc=f"reconstruct {ev.name} {mask_key(kind, ratio)}", disable=not progress,
                  leave=False, unit="win") as pbar:
            errs = reconstruction_errors(model, ev.read, len(ev), masks, mcfg.patch_length, scale, device,
                                         cfg.batch_size, pbar)
        # every window hides the same number of samples, so a split's MSE is the mean of its windows' MSEs
        per = {m: {**{n: e[:, i] for i, n in enumerate(names)}, "all": e.mean(axis=1)} for m, e in errs.items()}
        entry = {m: {k: float(v.mean()) for k, v in d.items()} for m, d in per.items()}
        entry["beat_repeat_scale"] = {n: float(s) for n, s in zip(names, scale)}
        entry["best_baseline"], entry["model_minus_best"], entry["model_over_best"] = {}, {}, {}
        for k in names + ["all"]:
            best = min(BASELINES, key=lambda b: entry[b][k])
            seed = derive_seed(cfg.seed, BOOTSTRAP, round(ratio * 1000), ["random", "block"].index(kind))
            entry["best_baseline"][k] = best
            entry["model_minus_best"][k] = bs.estimate(bs.weighted_mean(per["model"][k] - per[best][k]), ev.groups,
                                                       cfg.n_bootstrap, seed, cfg.ci)
            entry["model_over_best"][k] = bs.estimate(bs.ratio_of_means(per["model"][k], per[best][k]), ev.groups,
                                                      cfg.n_bootstrap, seed, cfg.ci)
        out[mask_key(kind, ratio)] = entry
        if (kind, ratio) == FIGURE_SETTING or figure is None:
            figure = figure_arrays(cfg, model, ev, masks, scale, entry["best_baseline"]["all"], channels, device)
    return out, figure


def figure_arrays(cfg, model, ev: SplitData, masks, scale, best: str, channels, device) -> dict:
    """A few windows spread over the split with their hidden samples, the model's and the best baseline's fill."""
    idx = np.unique(np.linspace(0, len(ev) - 1, min(cfg.figure_windows, len(ev))).round().astype(np.int64))
    x = ev.read(idx)
    m = masks[torch.from_numpy(idx)]
    hidden = hidden_samples(m, model.cfg.patch_length)
    return {"x": x, "hidden": hidden, "model": model_reconstruction(model, x, m, device),
            "baseline": baseline_reconstructions(x, hidden, scale)[best], "baseline_name": best,
            "channels": list(channels), "windows": idx.tolist(), "split": ev.name}


# --------------------------------------------------------------------------- probes

def probe_features(cfg, encoder, mcfg, splits: list, device, progress, channels=()) -> dict:
    """``{feature set: {split: [n, d] array}}``: the pretrained encoder, random-weights encoders, hand features and,
    with a PPG and an ECG channel, the classical beat features (``beat``; a missing measure is the train median)."""
    encoders = {"pretrained": PretrainedEncoder(encoder, mcfg, device)}
    for s in range(cfg.random_encoder_seeds):
        encoders[f"random{s}"] = PretrainedEncoder.random(mcfg, derive_seed(cfg.seed, RANDOM_ENCODER, s), device)
    feats: dict = {}
    for name, enc in encoders.items():
        for sp in splits:
            emb = enc.embeddings(sp.windows, POOLS, cfg.batch_size, progress)
            for pool in POOLS:
                feats.setdefault(f"{name}_{pool}", {})[sp.name] = emb[pool].numpy().astype(np.float64)
    for sp in splits:
        feats.setdefault("hand", {})[sp.name] = sp.map_batches(hand_features, cfg.batch_size)
    if "PPG" in channels and "ECG" in channels:
        feats["beat"] = split_beat_features(splits, channels, cfg.batch_size)
    return feats


def probe_metrics(cfg, features: dict, train: SplitData, ev: SplitData, fits: dict | None = None) -> dict:
    """Per label and feature set: MAE and R² on ``ev`` with intervals, the chosen alpha, the window counts.

    Each probe is fitted once on train: ``fits`` keeps them by (label, feature set) for the next split.

    The random-weights encoders are summarised over seeds: ``value`` is the mean of
    the seeds' values and the interval spans all their intervals.
    """
    out, fits = {}, {} if fits is None else fits
    for label, y_tr_all in train.labels.items():
        if label not in ev.labels:
            raise ValueError(f"label {label!r} is in the train metadata but not in {ev.name}'s")
        tr, te = np.isfinite(y_tr_all), np.isfinite(ev.labels[label])
        n_subj_tr = bs.group_index(train.groups[tr])[1] if tr.any() else 0
        n_subj_te = bs.group_index(ev.groups[te])[1] if te.any() else 0
        if n_subj_tr < cfg.probe_folds or n_subj_te < 2:
            out[label] = {"skipped": f"label_{label} has values for {n_subj_tr} train and {n_subj_te} "
                                     f"{ev.name} subjects; need {cfg.probe_folds} and 2"}
            continue
        y_tr, y_te, g_te = y_tr_all[tr], ev.labels[label][te], ev.groups[te]
        seed = name_seed(cfg.seed, BOOTSTRAP, f"probe {label}")   # by name, as the tasks' seeds
        res = {"n_train": int(tr.sum()), "n_eval": int(te.sum())}
        for name, f in features.items():
            if (label, name) not in fits:
                fits[label, name] = ridge_fit(f["train"][tr], y_tr, train.groups[tr], cfg.probe_alphas,
                                              cfg.probe_folds)
            fit = fits[label, name]
            pred = ridge_predict(fit, f[ev.name][te])
            res[name] = {"mae": bs.estimate(bs.mae(y_te, pred), g_te, cfg.n_bootstrap, seed, cfg.ci),
                         "r2": bs.estimate(bs.r2(y_te, pred, y_tr.mean()), g_te, cfg.n_bootstrap, seed, cfg.ci),
                         "alpha": alpha_record(fit["alpha"])}
        pool_random_seeds(res, cfg.random_encoder_seeds, POOLS)
        out[label] = res
    return out
