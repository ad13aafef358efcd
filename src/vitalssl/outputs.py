"""Training outputs: history CSV, loss-curve figure, atomic JSON, publishing the finished run."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "train_msm", "train_stft", "val_loss", "val_msm", "val_stft")


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


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
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def publish(work_dir: Path, output_dir: Path) -> None:
    """Copy the finished outputs into ``output_dir`` in one rename."""
    output_dir = Path(output_dir)
    tmp = output_dir.with_name(output_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for p in sorted(work_dir.iterdir()):
        if p.name != "state.pt" and p.is_file() and not p.name.endswith(".tmp"):
            shutil.copy2(p, tmp / p.name)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    os.replace(tmp, output_dir)
