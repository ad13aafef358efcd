"""Label efficiency: what pretraining buys when few subjects are labelled.

For each task of ``label_efficiency.tasks`` and each fraction of the train
subjects (nested: one seeded shuffle of the subjects, each fraction a prefix of
it, at least ``MIN_SUBJECTS``), four methods are trained on that fraction and
scored on test:

* ``frozen_linear``: the pretrained encoder, frozen, and a linear head (ridge or
  logistic regression on the per-channel embeddings, pooled over patches with
  the channels side by side (``pretrained_channels``); penalty by
  subject-grouped CV on the fraction);
* ``finetune``: the pretrained encoder and a head (:class:`FineTuneModel`),
  every weight trained; with ``finetune_from_probe`` (LP-FT, Kumar et al.
  2022) the head starts as a linear probe fitted, per window, on the frozen
  encoder's layer-normed features of the fraction (penalty by the same grouped
  CV), so fine-tuning starts from a head that fits the task instead of
  pulling the encoder towards a random one, and early stopping on val keeps
  that start unless a step beats it on val. (For a case-level task this probe
  differs from ``frozen_linear``, which is fitted to one mean embedding per
  subject);
* ``scratch``: the same network from random weights, trained the same way;
* ``beat_linear``: the classical beat features with the same linear model.

The two trained networks run ``max_steps`` AdamW steps at most and keep the
weights of the lowest val loss, checked every ``eval_every`` steps (early
stopping after ``patience`` checks without improvement). Regression targets are
standardised on the fraction; binary tasks train a two-class cross-entropy head.
A case-level task trains on windows labelled with their case's value and scores
each subject by the mean of its windows' predictions. Val chooses; test reports.

With ``draws`` above 1 every cell is run that many times, each draw with its own
shuffle of the train subjects (the same for every task) and its own network
seeds; draw 0 is the single-draw run. A cell then reports each score's mean over
the draws, the interval spanning the draws' intervals and the per-draw values
(:func:`pool_draws`), as the random-weights encoders of ``evaluate`` are pooled.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from functools import partial

import numpy as np
import torch

from ..seeding import LABEL_SUBJECTS, LABEL_TRAIN, derive_seed, name_seed
from ..ssl.finetune import FineTuneModel, set_trainable
from ..ssl.model import ttm_encoder
from .modelcard import span
from .splitdata import SplitData
from .probes import alpha_record, ridge_fit
from .tasks import (Rows, label_values, logistic_probe, per_subject, pooled, score_predictions, score_task, skip_reason,
                    task_rows)

METHODS = ("frozen_linear", "finetune", "scratch", "beat_linear")
LINEAR = {"frozen_linear": "pretrained_channels", "beat_linear": "beat"}
MIN_SUBJECTS = 2
HEADLINE = {"regression": "mae", "binary": "auroc"}   # the metric the figure draws


def fraction_key(f: float) -> str:
    """``0.05`` -> ``"5pct"`` (a dot in a metrics key would read as nesting)."""
    return f"{round(f * 100):g}pct"


def nested_subjects(groups: np.ndarray, fractions, seed: int) -> dict:
    """``{fraction: subjects}``: prefixes of one seeded shuffle of the train subjects, so smaller sets nest."""
    ids = np.random.default_rng(seed).permutation(np.unique(groups))
    return {f: ids[: max(MIN_SUBJECTS, int(round(f * len(ids))))] for f in sorted(fractions)}


def labelled_windows(sp: SplitData, task: dict, subjects=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(window indices, labels, subjects)`` of ``sp``'s windows with a label (and a subject in ``subjects``)."""
    y = label_values(sp, task)
    ok = np.isfinite(y) if y is not None else np.zeros(len(sp), bool)
    if subjects is not None:
        ok &= np.isin(sp.groups, subjects)
    idx = np.flatnonzero(ok)
    return idx, y[idx] if y is not None else np.zeros(0), sp.groups[idx]


def subset_rows(rows: Rows, subjects) -> Rows:
    keep = np.isin(rows.groups, subjects)
    return Rows({k: v[keep] for k, v in rows.features.items()}, rows.y[keep], rows.groups[keep])


# --------------------------------------------------------------------------- the trained networks

class Network:
    """A :class:`FineTuneModel` trained on windows of one split with early stopping on another."""

    def __init__(self, make_encoder, mcfg, kind: str, lcfg, lr: float, seed: int, device):
        self.kind, self.lcfg, self.device, self.seed = kind, lcfg, device, seed
        torch.manual_seed(seed)   # the head's (and a fresh encoder's) initial weights, dropout
        encoder = make_encoder()
        task = "classification" if kind == "binary" else "regression"
        self.model = FineTuneModel(encoder, mcfg, task, 2 if kind == "binary" else 1).to(device)
        set_trainable(self.model, freeze_encoder=False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=lcfg.weight_decay)
        self.mu, self.sd = 0.0, 1.0

    def head_from_probe(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas, folds: int) -> float | str:
        """Set the head's linear layer to the probe fitted on the head's own input for the rows ``X`` (the
        encoder's channel-pooled features; the head's layer norm, at its initial identity affine, applied
        first); returns the probe's penalty. Regression targets are standardised as :meth:`fit` does."""
        norm, linear = self.model.head[0], self.model.head[-1]
        Z = torch.nn.functional.layer_norm(torch.as_tensor(X, dtype=torch.float32), norm.normalized_shape,
                                           eps=norm.eps).double().numpy()
        if self.kind == "regression":
            self._standardise_on(y)
            fit = ridge_fit(Z, (y - self.mu) / self.sd, groups, alphas, folds)
        else:
            fit = logistic_probe(Z, y, groups, [], np.asarray(alphas), folds)
        st = fit["standardiser"]   # folded into the weights: w·(z - mean)/sd + b
        w, b = fit["coef"] / st.sd, fit["intercept"] - (fit["coef"] / st.sd) @ st.mean
        # regression: one output; binary: the logits [0, w·z + b], so softmax gives the probe's probability
        weight, bias = (w[None], [b]) if self.kind == "regression" else (np.stack([np.zeros_like(w), w]), [0.0, b])
        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(weight, dtype=linear.weight.dtype))
            linear.bias.copy_(torch.as_tensor(np.asarray(bias), dtype=linear.bias.dtype))
        return alpha_record(fit["alpha"])

    def _standardise_on(self, y: np.ndarray) -> None:
        if self.kind == "regression":
            self.mu, self.sd = float(y.mean()), float(y.std()) or 1.0

    def _target(self, y: np.ndarray) -> torch.Tensor:
        t = y if self.kind == "binary" else (y - self.mu) / self.sd
        return torch.tensor(t, dtype=torch.float32, device=self.device)   # a copy: the labels may be read-only

    def fit(self, train: SplitData, tr: tuple, val: SplitData, va: tuple) -> dict:
        """Train on ``tr = (idx, y)`` of ``train``; keep the weights of the lowest loss on ``va`` of ``val``."""
        idx, y = tr
        self._standardise_on(y)   # the same labels as head_from_probe's, so the same mu and sd
        rng = np.random.default_rng(self.seed)
        best, best_step, since, step = self.val_loss(val, va), 0, 0, 0
        state = copy.deepcopy(self.model.state_dict())
        while step < self.lcfg.max_steps and since < self.lcfg.patience:
            self.model.train()
            pick = rng.choice(len(idx), min(self.lcfg.batch_size, len(idx)), replace=False)
            x = torch.as_tensor(train.read(idx[pick]), device=self.device)
            loss = self.model.loss(self.model(x), self._target(y[pick]))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            step += 1
            if step % self.lcfg.eval_every == 0 or step == self.lcfg.max_steps:
                v = self.val_loss(val, va)
                if v < best:
                    best, best_step, since, state = v, step, 0, copy.deepcopy(self.model.state_dict())
                else:
                    since += 1
        self.model.load_state_dict(state)
        return {"steps": step, "best_step": best_step, "val_loss": float(best)}

    @torch.no_grad()
    def outputs(self, sp: SplitData, idx: np.ndarray) -> torch.Tensor:
        self.model.eval()
        bs = self.lcfg.batch_size * 4
        return torch.cat([self.model(torch.as_tensor(sp.read(idx[i:i + bs]), device=self.device)).float().cpu()
                          for i in range(0, len(idx), bs)])

    def val_loss(self, val: SplitData, va: tuple) -> float:
        out = self.outputs(val, va[0])
        return float(self.model.loss(out.to(self.device), self._target(va[1])))

    def predict(self, sp: SplitData, idx: np.ndarray) -> np.ndarray:
        """Regression: the label; binary: the positive class's probability."""
        out = self.outputs(sp, idx)
        if self.kind == "binary":
            return torch.softmax(out, dim=1)[:, 1].numpy().astype(np.float64)
        return out[:, 0].numpy().astype(np.float64) * self.sd + self.mu


def per_unit(task: dict, pred: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple:
    """Window rows as they are; case rows as one per subject: the mean prediction, the subject's label."""
    if task["level"] == "window":
        return pred, y, groups
    ids, first, mean = per_subject(groups)
    return mean(pred), y[first], ids


# --------------------------------------------------------------------------- one task

def task_efficiency(name: str, task: dict, cfg, lcfg, feats: dict, splits: dict, encoders: dict, mcfg,
                    device, draws: list, seed_of, log=print) -> dict:
    """``{fraction key: {methods..., subjects, n_train} or {skipped}}`` of one task, scored on test. ``draws``
    holds one ``{fraction: subjects}`` per draw; ``seed_of(i, d)`` seeds fraction ``i`` of draw ``d``."""
    train = splits["train"]
    lin = {m: feats[f] for m, f in LINEAR.items()}
    full = task_rows(train, task, lin)   # the fraction's subjects may hold no labelled window: then it is skipped
    held = {s: task_rows(splits[s], task, lin) for s in ("val", "test")}
    why = next((r for r in (skip_reason(name, task, s, rows, cfg, train=False) for s, rows in held.items()) if r),
               None)
    out = {}
    for i, frac in enumerate(sorted(lcfg.fractions)):
        key = fraction_key(frac)
        cells = [{"skipped": why} if why else cell(name, task, cfg, lcfg, key, full, held, splits, d[frac], encoders,
                                                   mcfg, seed_of(i, k), device, feats)
                 for k, d in enumerate(draws)]
        out[key] = entry = cells[0] if len(cells) == 1 else pool_draws(cells)
        if "skipped" in entry:
            log(f"label efficiency {name} {key}: skipped ({entry['skipped']})")
            continue
        log(f"label efficiency {name} {key} ({span(entry['subjects'])} subjects): "
            + ", ".join(f"{m} {HEADLINE[task['kind']]} {entry[m][HEADLINE[task['kind']]]['value']:.3f}"
                        for m in METHODS))
    return out


def cell(name: str, task: dict, cfg, lcfg, key: str, full, held: dict, splits: dict, subj, encoders: dict, mcfg,
         seed: int, device, feats: dict) -> dict:
    """One draw of one fraction: the four methods trained on the subjects ``subj``, scored on test."""
    rows = subset_rows(full, subj) if full is not None else None
    # the penalty's grouped CV: as many folds as labelled subjects where those are fewer than probe_folds
    labelled = len(np.unique(rows.groups)) if rows is not None else 0
    fcfg = replace(cfg, probe_folds=max(min(cfg.probe_folds, labelled), 2))
    reason = skip_reason(name, task, f"train_{key}", rows, fcfg, train=True)
    if reason:
        return {"skipped": reason}
    entry = {"subjects": int(labelled), "n_train": int(len(rows.y))}
    entry.update(score_task(task, rows, {"test": held["test"]}, fcfg, seed)["test"])
    entry.update(network_scores(task, splits, subj, encoders, mcfg, fcfg, lcfg, seed, device,
                                feats["pretrained_channels"]["train"]))
    return entry


def pool_draws(cells: list) -> dict:
    """Several draws of one cell: each score as the mean over the scored draws, the interval spanning theirs
    and the per-draw values (``draws``); the networks' records (steps, penalties) and ``subjects``,
    ``n_train`` as per-draw lists; the reasons of skipped draws in ``skipped_draws``. Every draw skipped:
    the cell is skipped, with their reasons."""
    scored = [c for c in cells if "skipped" not in c]
    skipped = skip_reasons(cells)
    if not scored:
        return {"skipped": "; ".join(skipped)}
    out = {"draws": len(scored), "subjects": [c["subjects"] for c in scored], "n_train": [c["n_train"] for c in scored]}
    if skipped:
        out["skipped_draws"] = skipped
    for m in METHODS:
        runs = [c[m] for c in scored]
        out[m] = {k: {**pooled([r[k] for r in runs]), "draws": [r[k]["value"] for r in runs]}
                  if isinstance(v, dict) else [r[k] for r in runs] for k, v in runs[0].items()}
    return out


def skip_reasons(cells: list) -> list:
    """The skipped draws' reasons, each reason once with the draws it stopped: ``["draws 0, 2: too few"]``."""
    draws = {}
    for k, c in enumerate(cells):
        if "skipped" in c:
            draws.setdefault(c["skipped"], []).append(str(k))
    return [f"draw{'s' if len(ks) > 1 else ''} {', '.join(ks)}: {why}" for why, ks in draws.items()]


def network_scores(task: dict, splits: dict, subj, encoders: dict, mcfg, cfg, lcfg, seed: int, device,
                   probe_feats: np.ndarray) -> dict:
    """``{"finetune" | "scratch": test scores and the early-stopping record}``: each network trained on the
    labelled windows of the subjects ``subj`` of train, stopped on val, scored on test. With
    ``lcfg.finetune_from_probe`` the fine-tuned head starts as the probe on ``probe_feats`` (the train
    split's channel-pooled pretrained features, one row per window)."""
    train, val, test = splits["train"], splits["val"], splits["test"]
    tr_idx, tr_y, tr_g = labelled_windows(train, task, subj)
    va = labelled_windows(val, task)[:2]
    te_idx, te_y, te_g = labelled_windows(test, task)
    if lcfg.finetune_from_probe and len(probe_feats) != len(train):
        raise ValueError(f"finetune_from_probe: {len(probe_feats)} feature rows for {len(train)} train windows")
    train_mean = per_unit(task, tr_y, tr_y, tr_g)[1].mean()   # over the units scored: windows or subjects
    out = {}
    for method in ("finetune", "scratch"):
        net = Network(encoders[method], mcfg, task["kind"], lcfg,
                      lcfg.lr_finetune if method == "finetune" else lcfg.lr_scratch, seed, device)
        init = {}
        if method == "finetune" and lcfg.finetune_from_probe:
            init = {"head_alpha": net.head_from_probe(probe_feats[tr_idx], tr_y, tr_g, cfg.probe_alphas,
                                                      cfg.probe_folds)}
        info = net.fit(train, (tr_idx, tr_y), val, va)
        p, y, g = per_unit(task, net.predict(test, te_idx), te_y, te_g)
        out[method] = {**score_predictions(task["kind"], y, p, g, cfg, seed, train_mean), **info, **init}
    return out


def train_seed(seed: int, name: str, fraction: int, draw: int) -> int:
    """The seed of one task's cell (networks, bootstrap) at the ``fraction``-th fraction in ``draw``; draw 0's
    is a single-draw run's, so adding draws leaves the first as it was."""
    return name_seed(seed, LABEL_TRAIN, name if draw == 0 else f"{name}#{draw}", fraction)


def label_efficiency(cfg, lcfg, feats: dict, splits: dict, pretrained_encoder, mcfg, device, log=print) -> dict:
    """``{task: {kind, level, metric, fractions}}`` for every ``lcfg.tasks`` entry (see the module docstring)."""
    encoders = {"finetune": lambda: copy.deepcopy(pretrained_encoder),
                "scratch": lambda: ttm_encoder(mcfg)}
    # one shuffle of the train subjects per draw, the same for every task: a fraction is the same people throughout
    draws = [nested_subjects(splits["train"].groups, lcfg.fractions, derive_seed(lcfg.seed, LABEL_SUBJECTS, 0, d))
             for d in range(lcfg.draws)]
    out = {}
    for name in lcfg.tasks:
        task = cfg.tasks[name]
        res = task_efficiency(name, task, cfg, lcfg, feats, splits, encoders, mcfg, device, draws,
                              partial(train_seed, lcfg.seed, name), log)
        out[name] = {"kind": task["kind"], "level": task["level"], "metric": HEADLINE[task["kind"]], **res}
    return out


def curves(result: dict, fractions, ci_keys=("value", "ci_low", "ci_high")) -> dict:
    """``{task: rows}`` for the plot files: one row per fraction, ``percent`` and per method value and interval."""
    out = {}
    for name, r in result.items():
        rows = []
        for f in sorted(fractions):
            e = r.get(fraction_key(f), {})
            row = {"percent": round(f * 100, 6)}
            for m in METHODS:
                s = e.get(m, {}).get(r["metric"], {}) if "skipped" not in e else {}
                for k in ci_keys:
                    row[m if k == "value" else f"{m}_{k}"] = s.get(k, float("nan"))
            rows.append(row)
        out[name] = rows
    return out
