"""The test split is read once, by the final report: pretraining never opens it, evaluate does.

Every file a process opens raises the ``open`` audit event (builtins.open, io.open, os.open; numpy's
load and memmap go through them), so recording those events sees every read, whatever library does it.
"""

import sys
from pathlib import Path

import torch
import yaml

from conftest import tiny_pretrain_overrides, write_windows
from test_evaluate_stage import write_meta
from vitalssl.entry.cli import pretrain_vitaldb_ssl
from vitalssl.entry.evaluate_stage import eval_config, run_evaluate

_OPENED: list = []
_RECORDING = {"on": False}


def _record(event, args):
    if event == "open" and _RECORDING["on"] and isinstance(args[0], (str, bytes, Path)):
        _OPENED.append(str(Path(args[0] if not isinstance(args[0], bytes) else args[0].decode())))


sys.addaudithook(_record)   # an audit hook cannot be removed, so it records only while a test switches it on


def opened_during(fn) -> list:
    _OPENED.clear()
    _RECORDING["on"] = True
    try:
        fn()
    finally:
        _RECORDING["on"] = False
    return list(_OPENED)


def _windows(d: Path) -> None:
    for split, n, seed, first in (("train", 48, 1, 0), ("val", 24, 2, 100), ("test", 24, 3, 200)):
        write_meta(d, split, write_windows(d, split, n, seed=seed), 8, first)


def test_pretrain_never_opens_the_test_windows_and_evaluate_reports_them(params, tmp_path):
    d = tmp_path / "windows"
    _windows(d)
    p = {**params, **tiny_pretrain_overrides(epochs=2, model={"d_model": 8}), "device": "cpu"}
    p["model"] = {**params["model"], **tiny_pretrain_overrides(model={"d_model": 8})["model"]}
    (tmp_path / "pretrain.yaml").write_text(yaml.safe_dump(p))
    out = tmp_path / "model"
    torch.manual_seed(0)
    seen = opened_during(lambda: pretrain_vitaldb_ssl(["--config", str(tmp_path / "pretrain.yaml"), "--data-dir",
                                                       str(d), "--output-dir", str(out)]))
    windows_read = sorted({Path(s).name for s in seen if Path(s).parent == d})
    assert "train_windows.npy" in windows_read and "val_windows.npy" in windows_read   # the recorder sees reads
    assert not [s for s in seen if "test_windows" in Path(s).name], windows_read
    assert (out / "best_model.pt").is_file()

    ep = dict(params["evaluate"], n_bootstrap=100, probe_folds=3, random_encoder_seeds=1, scale_fit_windows=16,
              batch_size=32, mask_ratios=[0.4], mask_types=["random"], device="cpu", figure_windows=1)
    m = tmp_path / "metrics"
    res = {}
    seen = opened_during(lambda: res.update(run_evaluate(
        eval_config({**params, "evaluate": ep}), out, d, m / "evaluate.json", m / "r.png", m / "p.png",
        progress=False, log=lambda s: None)))
    assert d / "test_windows.npy" in {Path(s) for s in seen}
    assert res["metrics"]["test"]["windows"] == 24 and res["metrics"]["val"]["windows"] == 24
