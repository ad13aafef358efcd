"""Training outputs: the per-epoch history (CSV and figure) and publishing the finished run."""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

from ..atomic import atomic_write, is_tmp

HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "train_msm", "train_stft", "val_loss", "val_msm", "val_stft")


def history_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HISTORY_COLUMNS)
    for h in history:
        w.writerow([h["epoch"]] + [f"{h[k]:.6g}" for k in HISTORY_COLUMNS[1:]])
    return buf.getvalue()


def plot_history(history: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, term in zip(axes[:3], ("loss", "msm", "stft")):
        ax.plot(ep, [h[f"train_{term}"] for h in history], label="train")
        ax.plot(ep, [h[f"val_{term}"] for h in history], label="val")
        ax.set_title(term.upper() if term != "loss" else "total loss")
        ax.set_xlabel("epoch")
        ax.legend()
    axes[3].plot(ep, [h["lr"] for h in history])
    axes[3].set_title("learning rate")
    axes[3].set_xlabel("epoch")
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=90))
    plt.close(fig)


def publish(work_dir: Path, output_dir: Path, skip: tuple = ("state.pt",)) -> None:
    """Put the finished outputs of ``work_dir`` in place as ``output_dir``, whole or not at all.

    The new folder is assembled beside the old one, then swapped in with renames:
    a crash at any point leaves either the old outputs or the new ones complete
    (an old folder parked as ``<name>.old`` is removed last, and put back by the
    next publish if the crash came between the two renames).
    """
    output_dir = Path(output_dir)
    new = output_dir.with_name(output_dir.name + ".new")
    old = output_dir.with_name(output_dir.name + ".old")
    if old.exists() and not output_dir.exists():  # a crash between the two renames of an earlier publish
        os.replace(old, output_dir)
    for p in (new, old):
        if p.exists():
            shutil.rmtree(p)
    new.mkdir(parents=True)
    for p in sorted(Path(work_dir).iterdir()):
        if p.is_file() and p.name not in skip and not is_tmp(p):
            shutil.copy2(p, new / p.name)
    if output_dir.exists():
        os.replace(output_dir, old)
    os.replace(new, output_dir)
    shutil.rmtree(old, ignore_errors=True)
