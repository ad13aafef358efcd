"""The `export` stage: the evaluated checkpoint -> a Hugging Face model folder with its model card."""

from __future__ import annotations

import json
from pathlib import Path

from ..eval.modelcard import render_card
from ..ssl.export import check_export_target, write_export

SPLITS = ("train", "val", "test")


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found (run the stage that writes it first)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path} is not valid JSON ({e})") from e


def run_export(checkpoint: Path, windows_dir: Path, metrics_path: Path, out_dir: Path, ci: float, log=print) -> dict:
    """Write ``out_dir`` (see :mod:`vitalssl.ssl.export`) for ``checkpoint``, carded with ``metrics_path``."""
    check_export_target(out_dir)
    metrics = _read_json(Path(metrics_path), "evaluation metrics")
    infos = {s: _read_json(Path(windows_dir) / f"{s}_windows.json", f"{s} window sidecar")
             for s in SPLITS if (Path(windows_dir) / f"{s}_windows.json").is_file()}
    if "train" not in infos:
        raise FileNotFoundError(f"train window sidecar {Path(windows_dir) / 'train_windows.json'} not found")
    data = {s: {"windows": int(i["count"]), "subjects": metrics.get(s, {}).get("subjects", "?")}
            for s, i in infos.items()}
    doc = write_export(checkpoint, infos["train"], out_dir, lambda d: render_card(metrics, d, data, ci))
    log(f"export: {checkpoint} -> {out_dir} (TinyTimeMixerModel.from_pretrained loads it)")
    return doc
