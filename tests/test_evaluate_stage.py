"""The `evaluate` stage on tiny window files: metrics, figures, the probe on a planted label, its code closure."""

import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import ROOT, write_windows
from vitalssl.config import ConfigError
from vitalssl.entry.evaluate_stage import eval_config, run_evaluate
from vitalssl.entry.pretrain_stage import pretrain_config
from vitalssl.eval.features import dominant_frequency
from vitalssl.ssl.checkpoint import make_checkpoint, save_atomic
from vitalssl.ssl.model import MaskedTTM
from vitalssl.ssl.train import build_optimizer


def write_meta(directory: Path, split: str, x: np.ndarray, n_subjects: int, first_subject: int):
    """Metadata rows for windows ``x``: subjects in blocks, HR planted as 60 x the PPG's dominant frequency."""
    n = len(x)
    subj = first_subject + np.arange(n) * n_subjects // n
    hr = 60.0 * dominant_frequency(x[:, 0].astype(np.float64))
    pd.DataFrame({"caseid": subj, "subjectid": subj, "start_s": np.arange(n) * 10.0, "label_hr": hr,
                  "label_bis": np.where(np.arange(n) % 2, np.nan, 50.0 + np.arange(n) % 7)}).to_csv(
        directory / f"{split}_windows.meta.csv", index=False)


@pytest.fixture
def eval_params(params):
    p = dict(params["evaluate"])
    p.update(n_bootstrap=200, probe_folds=3, random_encoder_seeds=2, scale_fit_windows=40, batch_size=32,
             mask_ratios=[0.4], device="cpu", figure_windows=2)
    return {**params, "evaluate": p}


def test_evaluate_writes_metrics_and_figures(eval_params, tiny_cfg, tmp_path):
    d = tmp_path / "windows"
    for split, n, seed, first in (("train", 60, 1, 0), ("val", 30, 2, 100), ("test", 20, 3, 200)):
        write_meta(d, split, write_windows(d, split, n, seed=seed), 10, first)
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = MaskedTTM(cfg.model)
    (tmp_path / "model").mkdir()
    save_atomic(make_checkpoint(model, build_optimizer(model, cfg), cfg, 0, 1.0, {}, 1), tmp_path / "model" / "best_model.pt")
    ecfg = eval_config(eval_params)
    out = tmp_path / "metrics"
    res = run_evaluate(ecfg, tmp_path / "model", d, out / "evaluate.json", out / "rec.png", out / "probes.png",
                       progress=False, log=lambda s: None)
    m = json.loads((out / "evaluate.json").read_text())
    assert m == json.loads(json.dumps(res["metrics"]))
    assert m["val"]["windows"] == 30 and m["val"]["subjects"] == 10
    assert m["test"]["windows"] == 20 and m["test"]["subjects"] == 10
    assert set(m["test"]["reconstruction"]) == set(m["val"]["reconstruction"]) and set(m["test"]["probes"]) == {"hr", "bis"}
    assert set(m["val"]["reconstruction"]) == {"random_r40", "block_r40"}
    r = m["val"]["reconstruction"]["random_r40"]
    for name in ("model", "zero_fill", "linear_interpolation", "beat_repeat", "beat_repeat_scaled"):
        assert set(r[name]) == {"ppg", "ecg", "all"}
        assert r[name]["all"] == pytest.approx((r[name]["ppg"] + r[name]["ecg"]) / 2)
    assert r["zero_fill"]["all"] == pytest.approx(1.0, abs=0.15)          # z-scored windows
    best = r["best_baseline"]["all"]
    assert r[best]["all"] == min(r[b]["all"] for b in ("zero_fill", "linear_interpolation", "beat_repeat",
                                                        "beat_repeat_scaled"))
    d_all = r["model_minus_best"]["all"]
    assert d_all["value"] == pytest.approx(r["model"]["all"] - r[best]["all"])
    assert d_all["ci_low"] <= d_all["value"] <= d_all["ci_high"]
    probes = m["val"]["probes"]
    assert set(probes) == {"hr", "bis"} and probes["bis"]["n_eval"] == 15
    assert probes["hr"]["hand"]["r2"]["value"] > 0.95                      # the planted label is found
    assert probes["hr"]["random_mean"]["seeds"] == 2
    for k in ("pretrained_mean", "pretrained_channels", "random_mean", "random_channels", "hand"):
        e = probes["hr"][k]["mae"]
        assert e["ci_low"] <= e["value"] <= e["ci_high"]
    for png in ("rec.png", "probes.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_section_is_strict_and_accepted_by_pretrain(params):
    pretrain_config(params)                                   # the top-level check knows the section
    bad = {**params, "evaluate": {**params["evaluate"], "mask_ratio": [0.4]}}
    with pytest.raises(ConfigError, match="evaluate.mask_ratio"):
        eval_config(bad)
    with pytest.raises(ConfigError, match="evaluate.mask_types"):
        eval_config({**params, "evaluate": {**params["evaluate"], "mask_types": ["stripes"]}})


def test_missing_split_files_are_named(eval_params, tmp_path):
    from vitalssl.eval.splitdata import SplitData
    with pytest.raises(FileNotFoundError, match="val_windows.npy"):
        SplitData.load(tmp_path, "val", ("PPG", "ECG"))


def vitalssl_imports(path: Path) -> set:
    """Files of the ``vitalssl`` modules that ``path`` imports (absolute and relative), found by parsing it."""
    src = ROOT / "src"
    pkg = path.relative_to(src).parent.parts if src in path.parents else ()
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (node.module or "").split(".") if node.level == 0 else \
                list(pkg[:len(pkg) - node.level + 1]) + ([node.module] if node.module else [])
            base = [b for part in base for b in part.split(".") if b]
            names = [".".join(base + [a.name]) for a in node.names] + [".".join(base)]
        for name in names:
            if not name.startswith("vitalssl"):
                continue
            parts = name.split(".")
            for f in (src.joinpath(*parts).with_suffix(".py"), src.joinpath(*parts, "__init__.py")):
                if f.is_file():
                    out.add(f)
            for k in range(1, len(parts)):                                  # parent packages run too
                init = src.joinpath(*parts[:k], "__init__.py")
                if init.is_file():
                    out.add(init)
    return out


def test_stage_deps_cover_its_import_closure():
    """Every vitalssl module the stage imports lives under one of its dvc.yaml deps; the eval wing imports no data/."""
    todo, seen = [ROOT / "stages" / "evaluate.py"], set()
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            todo.extend(vitalssl_imports(f) - seen)
    files = sorted(f.relative_to(ROOT).as_posix() for f in seen if f.is_file())
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["evaluate"]["deps"]
    uncovered = [f for f in files if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)]
    assert "src/vitalssl/eval/run.py" in files and "src/vitalssl/ssl/encoder.py" in files
    assert not uncovered
    assert not any(f.startswith("src/vitalssl/data/") for f in files)
