"""Training outputs: the per-epoch history (CSV and figure) and publishing the finished run."""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

from ..atomic import atomic_write, fsync_dir, fsync_file, is_tmp, tmp_path
from .folders import foreign_entries, made_here, make_folder, own_files

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
    """Put the run's finished files of ``work_dir`` in place in ``output_dir``.

    A new output folder, or one the pretraining made that holds only its files, is
    replaced whole: the new folder (marked, see :mod:`.folders`) is assembled beside
    it and swapped in with renames, so a crash at any point leaves either the old
    outputs or the new ones complete (an old folder parked as ``<name>.old`` is
    removed last, and put back by the next publish if the crash came between the two
    renames). In any other folder only the run's own file names are replaced, each
    atomically, and earlier files of those names the run no longer makes (an older
    ``checkpoint_epoch_<n>.pt``) are removed; everything else in it stays.
    """
    output_dir = Path(output_dir)
    files = [p for p in own_files(work_dir) if p.name not in skip and not is_tmp(p)]
    new = output_dir.with_name(output_dir.name + ".new")
    old = output_dir.with_name(output_dir.name + ".old")
    for p in (old, new):  # start-up checks refuse these unless they are spent folders of an earlier publish
        if p.exists() and not (made_here(p) and not foreign_entries(p)):
            raise OSError(f"{p} is in the way of publishing {output_dir} and was not made by the pretraining")
    if old.exists() and not output_dir.exists():  # a crash between the two renames of an earlier publish
        os.replace(old, output_dir)
    if output_dir.exists() and not (made_here(output_dir) and not foreign_entries(output_dir)):
        _publish_in_place(files, output_dir)
        return
    for p in (new, old):
        if p.exists():
            shutil.rmtree(p)
    make_folder(new)
    for p in files:
        _copy_synced(p, new / p.name)
    fsync_dir(new)
    if output_dir.exists():
        os.replace(output_dir, old)
    os.replace(new, output_dir)
    fsync_dir(output_dir.parent)
    shutil.rmtree(old, ignore_errors=True)


def _copy_synced(src: Path, dst: Path) -> None:
    shutil.copy2(src, dst)
    fsync_file(dst)


def _publish_in_place(files: list[Path], output_dir: Path) -> None:
    """Replace the run's file names in a folder the pretraining does not own; nothing else in it is touched."""
    names = {p.name for p in files}
    staged = []
    try:
        for p in files:  # all copies first, so the renames that follow are quick
            staged.append((tmp_path(output_dir / p.name), output_dir / p.name))
            _copy_synced(p, staged[-1][0])
        for tmp, dst in staged:
            os.replace(tmp, dst)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    for p in own_files(output_dir):
        if p.name not in names:  # an older run's file, or a temporary name left by a crash
            p.unlink()
    fsync_dir(output_dir)
