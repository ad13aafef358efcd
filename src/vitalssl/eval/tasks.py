"""Downstream tasks (``evaluate.tasks``): a label, a level (window | case), a kind (regression | binary).

A window task has one row per window; a case task one row per subject, its windows' features averaged
(mean pooling) and its label the first non-missing value of its windows (the clinical columns are the
same for every window of a case). Binary labels come from a rule on the column: ``below``/``above``
(strict), ``at_least``, or ``equals`` (a text matches the column's text, a number its value). Every probe is fitted on train only, its penalty chosen
by subject-grouped CV there, and scored on each held-out split with subject-bootstrap intervals:
regression by MAE and R² (ridge), binary by AUROC and AUPRC (logistic regression), with the prevalence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import bootstrap as bs
from .probes import Standardiser, alpha_record, group_folds, ridge_fit, ridge_predict
from .splitdata import LABEL_PREFIX, SplitData


@dataclass
class Rows:
    """One task's rows in one split: features per feature set ``{name: [m, d]}``, labels ``[m]``, subjects ``[m]``."""
    features: dict
    y: np.ndarray
    groups: np.ndarray


def label_values(sp: SplitData, task: dict) -> np.ndarray | None:
    """The task's label per window ``[n]`` (float; 0/1 for binary; NaN where missing), None if the column is absent."""
    col = task["label"]
    if col.startswith(LABEL_PREFIX) and col[len(LABEL_PREFIX):] in sp.labels:
        raw = sp.labels[col[len(LABEL_PREFIX):]]
    elif col in sp.columns:
        raw = sp.columns[col]
    else:
        return None
    if task["kind"] == "regression":
        return _numeric(raw, col, sp.name, "a regression task")
    (op, v), = task["rule"].items()
    missing = pd.isna(pd.Series(raw)).to_numpy()
    if op == "equals" and isinstance(v, str):
        hit = np.array([str(x) == v for x in raw])
    elif op == "equals":                    # a number matches by value: 3 matches 3.0 in a column read as float
        hit = pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy(np.float64) == v
    else:
        x = _numeric(raw, col, sp.name, f"the rule {op}")
        with np.errstate(invalid="ignore"):
            hit = {"below": x < v, "above": x > v, "at_least": x >= v}[op]
    return np.where(missing, np.nan, hit.astype(np.float64))


def _numeric(raw, col: str, split: str, what: str) -> np.ndarray:
    try:
        return pd.to_numeric(pd.Series(raw), errors="raise").to_numpy(np.float64)
    except (ValueError, TypeError) as e:
        raise ValueError(f"column {col!r} of the {split} windows is not numeric ({e}), and {what} needs numbers: "
                         "give a numeric column, or a binary task with the rule equals") from None


def task_rows(sp: SplitData, task: dict, feats: dict) -> Rows | None:
    """The task's labelled rows of ``sp`` (windows, or subjects with mean-pooled features); None if no column."""
    y = label_values(sp, task)
    if y is None:
        return None
    ok = np.isfinite(y)
    f = {k: v[sp.name][ok] for k, v in feats.items()}
    y, g = y[ok], sp.groups[ok]
    if task["level"] == "window":
        return Rows(f, y, g)
    ids, first, mean = per_subject(g)
    return Rows({k: mean(v) for k, v in f.items()}, y[first], ids)


def per_subject(groups: np.ndarray) -> tuple:
    """``(ids, first, mean)``: the subjects sorted, each one's first row, and ``mean(v)`` giving the
    per-subject mean of ``v`` (``[n]`` or ``[n, d]`` rows in the order of ``groups``)."""
    ids, first, codes = np.unique(groups, return_index=True, return_inverse=True)
    counts = np.bincount(codes, minlength=len(ids)).astype(np.float64)

    def mean(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, np.float64)
        if v.ndim == 1:
            return np.bincount(codes, weights=v, minlength=len(ids)) / counts
        return np.stack([np.bincount(codes, weights=v[:, j], minlength=len(ids)) for j in range(v.shape[1])],
                        axis=1) / counts[:, None]

    return ids, first, mean


def skip_reason(name: str, task: dict, split: str, rows: Rows | None, cfg, train: bool) -> str | None:
    """Why ``split`` cannot score (or, for train, fit) the task, or None when it can."""
    if rows is None:
        return f"{name}: column {task['label']!r} is not in the {split} window metadata"
    n_subj = len(np.unique(rows.groups))
    need_subj = cfg.probe_folds if train else 2
    if n_subj < need_subj:
        return f"{name}: {task['label']} has values for {n_subj} {split} subjects; need {need_subj}"
    if task["kind"] == "binary":
        for cls, word in ((1.0, "positive"), (0.0, "negative")):
            hit = rows.y == cls
            k, s = int(hit.sum()), len(np.unique(rows.groups[hit]))
            if k < cfg.min_positives or s < cfg.min_positive_subjects:
                if task["level"] == "case":          # one row per subject: the units are the subjects
                    need = max(cfg.min_positives, cfg.min_positive_subjects)
                    return f"{name}: {k} {word} subjects in {split}; need at least {need}"
                return (f"{name}: {k} {word} windows in {s} {split} subjects; need at least {cfg.min_positives} "
                        f"{word} windows in at least {cfg.min_positive_subjects} subjects")
    return None


# --------------------------------------------------------------------------- binary scores under weights

def _tied(scores: np.ndarray, pos: np.ndarray, W: np.ndarray, descending: bool):
    """Positive and negative weight per distinct score ``[R, U]``, scores ascending (or descending)."""
    order = np.argsort(-scores if descending else scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    Wo, p = W[:, order], pos[order].astype(np.float64)
    return np.add.reduceat(Wo * p, starts, axis=1), np.add.reduceat(Wo * (1 - p), starts, axis=1)


def auroc(y: np.ndarray, score: np.ndarray):
    """Statistic: area under the ROC curve under weights (ties count one half); NaN without both classes."""
    pos = np.asarray(y) == 1

    def stat(W):
        P, N = _tied(np.asarray(score, np.float64), pos, W, descending=False)
        below = np.cumsum(N, axis=1) - N
        with np.errstate(invalid="ignore", divide="ignore"):
            return (P * (below + 0.5 * N)).sum(axis=1) / (P.sum(axis=1) * N.sum(axis=1))
    return stat


def auprc(y: np.ndarray, score: np.ndarray):
    """Statistic: average precision (sum over thresholds of recall gained x precision), as scikit-learn's."""
    pos = np.asarray(y) == 1

    def stat(W):
        P, N = _tied(np.asarray(score, np.float64), pos, W, descending=True)
        tp, fp = np.cumsum(P, axis=1), np.cumsum(N, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            # a threshold that gains no positive adds nothing (and may hold no weight at all: 0/0)
            return np.where(P > 0, P * tp / (tp + fp), 0.0).sum(axis=1) / P.sum(axis=1)
    return stat


# --------------------------------------------------------------------------- probes

def logistic_probe(X_tr, y_tr, g_tr, X_evals: list, alphas, folds: int) -> dict:
    """L2 logistic regression (``C = 1 / alpha``; an infinite alpha is the intercept-only model, the train
    prevalence) on standardised features, alpha by grouped-CV log loss on train:
    ``{"scores"`` (the decision function of each ``X_evals``), ``"alpha", "standardiser", "coef", "intercept"}``
    (``coef``, ``intercept`` act on standardised features).

    scikit-learn's solver, not a hand-written one: the field's reference implementation.
    """
    from scipy.special import logit
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    def fit(X, y, a):
        st = Standardiser(X)
        if not np.isfinite(a) or len(np.unique(y)) < 2:   # the intercept-only model, or one class: the prior
            return st, None
        return st, LogisticRegression(C=1.0 / a, max_iter=2000).fit(st(X), y)

    fold = group_folds(g_tr, folds)
    loss = np.zeros(len(alphas))
    for f in range(folds):
        tr, te = fold != f, fold == f
        for i, a in enumerate(alphas):
            st, m = fit(X_tr[tr], y_tr[tr], a)
            p = np.full(te.sum(), y_tr[tr].mean()) if m is None else m.predict_proba(st(X_tr[te]))[:, 1]
            loss[i] += log_loss(y_tr[te], np.clip(p, 1e-12, 1 - 1e-12), labels=[0, 1]) * te.sum()
    alpha = float(alphas[int(np.argmin(loss))])
    st, m = fit(X_tr, y_tr, alpha)
    if m is None:
        prior = float(logit(np.clip(y_tr.mean(), 1e-12, 1 - 1e-12)))
        return {"scores": [np.full(len(X), prior) for X in X_evals], "alpha": alpha, "standardiser": st,
                "coef": np.zeros(X_tr.shape[1]), "intercept": prior}
    return {"scores": [m.decision_function(st(X)) for X in X_evals], "alpha": alpha, "standardiser": st,
            "coef": m.coef_[0], "intercept": float(m.intercept_[0])}


def score_predictions(kind: str, y: np.ndarray, p: np.ndarray, groups: np.ndarray, cfg, seed: int,
                      train_mean: float) -> dict:
    """Regression ``p`` (predictions): MAE and the out-of-sample R² against ``train_mean``, the mean of the
    labels the predictor was fitted to; binary ``p`` (scores): AUROC and AUPRC; with intervals."""
    if kind == "regression":
        return {"mae": bs.estimate(bs.mae(y, p), groups, cfg.n_bootstrap, seed, cfg.ci),
                "r2": bs.estimate(bs.r2(y, p, train_mean), groups, cfg.n_bootstrap, seed, cfg.ci)}
    return {"auroc": bs.estimate(auroc(y, p), groups, cfg.n_bootstrap, seed, cfg.ci),
            "auprc": bs.estimate(auprc(y, p), groups, cfg.n_bootstrap, seed, cfg.ci)}


def score_task(task: dict, train: Rows, evals: dict, cfg, seed: int) -> dict:
    """``{split: {feature set: scores}}`` of one task, each probe fitted once on train."""
    out = {s: {} for s in evals}
    for name, X_tr in train.features.items():
        X_ev = [evals[s].features[name] for s in evals]
        if task["kind"] == "regression":
            fit = ridge_fit(X_tr, train.y, train.groups, cfg.probe_alphas, cfg.probe_folds)
            preds, alpha = [ridge_predict(fit, X) for X in X_ev], fit["alpha"]
        else:
            fit = logistic_probe(X_tr, train.y, train.groups, X_ev, np.asarray(cfg.probe_alphas), cfg.probe_folds)
            preds, alpha = fit["scores"], fit["alpha"]
        for s, p in zip(evals, preds):
            r = evals[s]
            out[s][name] = {**score_predictions(task["kind"], r.y, p, r.groups, cfg, seed, train.y.mean()),
                            "alpha": alpha_record(alpha)}
    return out


def pooled(scores: list) -> dict:
    """One score of several runs (seeds, draws): the mean value and the interval spanning every run's."""
    return {"value": float(np.mean([s["value"] for s in scores])), "ci_low": min(s["ci_low"] for s in scores),
            "ci_high": max(s["ci_high"] for s in scores)}


def pool_random_seeds(res: dict, n_seeds: int, pools) -> None:
    """Random-weights encoders summarised over seeds: the mean value, the interval spanning all seeds'."""
    for pool in pools:
        seeds = [res.pop(f"random{s}_{pool}") for s in range(n_seeds) if f"random{s}_{pool}" in res]
        if not seeds:
            continue
        scores = [k for k, v in seeds[0].items() if isinstance(v, dict)]
        res[f"random_{pool}"] = {m: pooled([s[m] for s in seeds]) for m in scores}
        res[f"random_{pool}"]["seeds"] = len(seeds)


def _describe(task: dict, rows: Rows, cfg, seed: int) -> dict:
    d = {"label": task["label"], "level": task["level"], "kind": task["kind"], "n": int(len(rows.y)),
         "subjects": int(len(np.unique(rows.groups)))}
    if task["kind"] == "binary":
        d["rule"] = dict(task["rule"])
        d["positives"] = int(rows.y.sum())
        d["prevalence"] = bs.estimate(bs.weighted_mean(rows.y), rows.groups, cfg.n_bootstrap, seed, cfg.ci)
    return d


def task_metrics(cfg, feats: dict, train: SplitData, evals: list, seed_of, pools=()) -> dict:
    """``{split: {task: entry}}`` for every ``cfg.tasks`` entry; a task that cannot be scored has ``skipped``."""
    out = {ev.name: {} for ev in evals}
    for name, task in cfg.tasks.items():
        try:
            tr = task_rows(train, task, feats)
            rows = {ev.name: task_rows(ev, task, feats) for ev in evals}
        except ValueError as e:
            raise ValueError(f"evaluate.tasks.{name}: {e}") from None
        why = skip_reason(name, task, "train", tr, cfg, train=True) or next(
            (r for r in (skip_reason(name, task, s, rows[s], cfg, train=False) for s in rows) if r), None)
        if why:
            for s in out:
                out[s][name] = {"skipped": why}
            continue
        seed = seed_of(name)
        scored = score_task(task, tr, rows, cfg, seed)
        for s in out:
            pool_random_seeds(scored[s], cfg.random_encoder_seeds, pools)
            out[s][name] = {**_describe(task, rows[s], cfg, seed), "n_train": int(len(tr.y)), **scored[s]}
    return out
