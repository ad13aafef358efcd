"""The evaluation's two figures (PNG, declared as DVC plots so ``dvc plots diff`` shows runs side by side)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from .baselines import FS

# bars of the probe figure: (feature set, legend label, colour)
PROBE_BARS = (("pretrained_mean", "pretrained, mean-pooled", "#1f77b4"),
              ("pretrained_channels", "pretrained, per channel", "#6baed6"),
              ("random_mean", "random weights, mean-pooled", "#bdbdbd"),
              ("random_channels", "random weights, per channel", "#969696"),
              ("hand", "hand features", "#ff7f0e"))


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_reconstructions(fig_data: dict, setting: str, path: Path) -> None:
    """One row per window, one column per channel: original, model and best baseline; hidden patches shaded."""
    plt = _pyplot()
    x, hidden = fig_data["x"], fig_data["hidden"]
    B, C, L = x.shape
    t = np.arange(L) / FS
    fig, axes = plt.subplots(B, C, figsize=(6 * C, 2.1 * B), squeeze=False, sharex=True)
    for b in range(B):
        edges = np.flatnonzero(np.diff(np.concatenate([[0], hidden[b].astype(np.int8), [0]])))
        for c in range(C):
            ax = axes[b, c]
            for s, e in zip(edges[::2], edges[1::2]):
                ax.axvspan(t[s], t[e - 1], color="0.88", lw=0)
            ax.plot(t, x[b, c], color="k", lw=0.8, label="original")
            h = np.where(hidden[b], 1.0, np.nan)
            ax.plot(t, fig_data["model"][b, c] * h, color="#1f77b4", lw=1.0, label="model")
            ax.plot(t, fig_data["baseline"][b, c] * h, color="#ff7f0e", lw=0.9, ls="--",
                    label=fig_data["baseline_name"].replace("_", " "))
            ax.set_title(f"{fig_data['split']} window {fig_data['windows'][b]}, {fig_data['channels'][c]}", fontsize=9)
            if b == B - 1:
                ax.set_xlabel("time (s)")
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=3)
    fig.suptitle(f"hidden patches (shaded, {setting}): original, model, best baseline", fontsize=10)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=90))
    plt.close(fig)


def plot_probes(probes: dict, split: str, path: Path, ci: float = 0.95) -> None:
    """Per label: MAE (top) and R² (bottom) of each feature set's linear probe, with bootstrap intervals."""
    plt = _pyplot()
    labels = [k for k, v in probes.items() if "skipped" not in v]
    if not labels:
        raise ValueError(f"no probe results to plot for {split}: every label was skipped")
    fig, axes = plt.subplots(2, len(labels), figsize=(3.2 * len(labels), 5.5), squeeze=False)
    for j, lab in enumerate(labels):
        for i, metric in enumerate(("mae", "r2")):
            ax = axes[i, j]
            for k, (key, name, colour) in enumerate(PROBE_BARS):
                m = probes[lab][key][metric]
                v = max(m["value"], -1.0) if metric == "r2" else m["value"]
                err = [[max(v - max(m["ci_low"], -1.0), 0.0)], [max(m["ci_high"] - v, 0.0)]]
                ax.bar(k, v, color=colour, yerr=err, capsize=3, label=name)
            ax.set_xticks([])
            ax.set_title(f"{lab}: {'MAE' if metric == 'mae' else 'R² (clipped at -1)'}", fontsize=9)
            if metric == "r2":
                ax.set_ylim(-1.05, 1.05)
                ax.axhline(0, color="k", lw=0.5)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(PROBE_BARS), fontsize=8, frameon=False)
    fig.suptitle(f"linear probes on {split} subjects (ridge, alpha by subject-grouped CV on train); "
                 f"{ci:.0%} subject-bootstrap intervals", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=90))
    plt.close(fig)


# lines of the label-efficiency figure: (method, legend label, colour)
EFFICIENCY_LINES = (("frozen_linear", "pretrained, frozen + linear", "#6baed6"),
                    ("finetune", "pretrained, fine-tuned", "#1f77b4"),
                    ("scratch", "same network from scratch", "#969696"),
                    ("beat_linear", "beat features + linear", "#ff7f0e"))


def plot_label_efficiency(curves: dict, metrics: dict, path: Path, ci: float = 0.95) -> None:
    """One panel per task: its metric on test against the percentage of train subjects, one line per method."""
    plt = _pyplot()
    names = list(curves)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = curves[name]
        pct = np.array([r["percent"] for r in rows])
        for k, (m, label, colour) in enumerate(EFFICIENCY_LINES):
            v = np.array([r[m] for r in rows], float)
            lo, hi = np.array([r[f"{m}_ci_low"] for r in rows], float), np.array([r[f"{m}_ci_high"] for r in rows], float)
            x = pct * (1.0 + 0.04 * (k - 1.5))      # side by side, so the intervals do not hide each other
            ax.errorbar(x, v, yerr=[np.maximum(v - lo, 0), np.maximum(hi - v, 0)], color=colour, marker="o", ms=4,
                        capsize=3, lw=1.2, label=label)
        metric = metrics[name]["metric"]
        ax.set_xscale("log")
        ax.set_xticks(pct, [f"{p:g}%" for p in pct])
        ax.minorticks_off()
        ax.set_xlabel("train subjects labelled")
        ax.set_title(f"{name} ({metrics[name]['level']} level): {metric.upper()} on test", fontsize=9)
        if metric == "auroc":
            ax.axhline(0.5, color="k", lw=0.5, ls=":")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(EFFICIENCY_LINES), fontsize=8, frameon=False)
    fig.suptitle(f"label efficiency; {ci:.0%} subject-bootstrap intervals (a skipped point is missing)", fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=90))
    plt.close(fig)
