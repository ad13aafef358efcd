"""Every bad input a user can give, as a table: how the run ends, what it says, what it leaves.

Each row sets up one bad input, runs the command line or stage entry point in
this process (``ttm-vitaldb``, ``pretrain-vitaldb-ssl``, ``stages/*.py``) and
returns what it did. The test then checks the row's exit code, that a failure
is exactly one ``error: ...`` line on stderr with no traceback, that the message
(or the report, for inputs that are skipped and reported) names the file, key,
flag or case, and that every earlier output and resume state the row protected
is byte-for-byte unchanged.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import tqdm as tqdm_module
import yaml

from conftest import ROOT, clean_case, tiny_pretrain_overrides, write_case, write_windows
from vitalssl.config import ConfigError
from vitalssl.entry.cli import pretrain_vitaldb_ssl, ttm_vitaldb
from vitalssl.entry.errors import one_line_errors

CASES = (1, 2, 3, 4, 5, 6)


# --------------------------------------------------------------------------- shared inputs (built once)

class _QuietTqdm(tqdm_module.tqdm):
    def __init__(self, *a, **k):
        k["disable"] = True
        super().__init__(*a, **k)


def quiet_progress_bars(monkeypatch) -> None:
    """No progress bars on stderr, so stderr holds only what the run says (the code imports tqdm when it runs)."""
    monkeypatch.setattr(tqdm_module, "tqdm", _QuietTqdm)


def _params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def _tiny_pretrain_params() -> dict:
    p = _params()
    for k, v in tiny_pretrain_overrides(epochs=2, model={"d_model": 8}).items():
        if isinstance(v, dict):
            p[k].update(v)
        else:
            p[k] = v
    p["device"] = "cpu"
    return p


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Clean local cases, tiny window files and a resumable state of an interrupted run."""
    root = tmp_path_factory.mktemp("bad_inputs_shared")
    cases = root / "cases"
    cases.mkdir()
    for c in CASES:
        write_case(cases / f"{c}.vital", c, *clean_case(40, seed=c), 40)
    windows = root / "windows"
    write_windows(windows, "train", 32, seed=1)
    write_windows(windows, "val", 16, seed=2)
    (root / "pretrain.yaml").write_text(yaml.safe_dump(_tiny_pretrain_params()))
    # an interrupted run: epoch 1 done, stopped in epoch 2
    import vitalssl.ssl.train as train_mod
    real, calls = train_mod.msm_objective, {"n": 0}

    def stop_in_epoch_2(recon, *a, **k):
        calls["n"] += 1
        if recon.requires_grad and calls["n"] > 3:
            raise KeyboardInterrupt
        return real(recon, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "msm_objective", stop_in_epoch_2)
        quiet_progress_bars(mp)
        with pytest.raises(SystemExit):
            pretrain_vitaldb_ssl(["--config", str(root / "pretrain.yaml"), "--data-dir", str(windows),
                                  "--output-dir", str(root / "interrupted" / "out")])
    state = root / "interrupted" / ".out.resume"
    assert (state / "state.pt").exists()
    return {"cases": cases, "windows": windows, "pretrain_yaml": root / "pretrain.yaml", "state": state}


# --------------------------------------------------------------------------- one row's world

@dataclass
class Result:
    code: int
    out: str
    err: str


def _digest(path: Path) -> dict:
    if path.is_dir():
        return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(path.rglob("*")) if p.is_file()}
    return {"": hashlib.sha256(path.read_bytes()).hexdigest()}


@dataclass
class Env:
    """A row's scratch directory with copies of the shared inputs, and ways to run the entry points."""
    root: Path
    shared: dict
    capsys: object
    monkeypatch: object
    protected: dict = field(default_factory=dict)
    last: Result | None = None  # the last entry point's result, shown when a row fails

    # ---- inputs
    def cases(self) -> Path:
        d = self.root / "cases"
        if not d.exists():
            shutil.copytree(self.shared["cases"], d)
        return d

    def data_params(self, **windows) -> Path:
        """A params file for source=local on this row's cases, one worker."""
        p = _params()
        p["data"].update(source="local", local_dir=str(self.cases()))
        p["splits"].update(mode="full", case_set="all", train=0.5, val=0.25, test=0.25)
        p["windows"].update({"num_workers": 1, **windows})
        path = self.root / "params.yaml"
        path.write_text(yaml.safe_dump(p))
        return path

    def split_file(self, train=CASES[:4], val=CASES[4:5], test=CASES[5:]) -> Path:
        doc = {"provenance": {"source": "local"}}
        for name, ids in (("train", train), ("val", val), ("test", test)):
            doc[name] = {"caseids": list(ids), "subjectids": [None] * len(ids)}
        path = self.root / "splits.json"
        path.write_text(json.dumps(doc))
        return path

    def earlier_windows(self) -> Path:
        """Window files of an earlier build, protected: a failed build must leave them alone."""
        out = self.root / "win"
        write_windows(out, "train", 8, seed=5)
        self.protect(out)
        return out

    def pretrain_params(self, **over) -> Path:
        p = _tiny_pretrain_params()
        for k, v in over.items():
            if isinstance(v, dict):
                p[k].update(v)
            else:
                p[k] = v
        path = self.root / "pretrain.yaml"
        path.write_text(yaml.safe_dump(p))
        return path

    def windows(self) -> Path:
        d = self.root / "windows"
        if not d.exists():
            shutil.copytree(self.shared["windows"], d)
        return d

    def earlier_run(self, state: bool = True) -> tuple[Path, Path]:
        """Outputs of an earlier finished run and (optionally) the state of an interrupted one, protected."""
        out = self.root / "out"
        out.mkdir()
        (out / "best_model.pt").write_bytes(b"earlier best model")
        (out / "training_history.json").write_text('{"epochs": []}\n')
        work = self.root / ".out.resume"
        if state:
            shutil.copytree(self.shared["state"], work)
            self.protect(work / "state.pt")
        self.protect(out)
        return out, work

    def protect(self, path: Path) -> None:
        self.protected[path] = _digest(path)

    # ---- entry points
    def _call(self, fn, *args) -> Result:
        self.capsys.readouterr()
        code = 0
        try:
            fn(*args)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        cap = self.capsys.readouterr()
        self.last = Result(code, cap.out, cap.err)
        return self.last

    def ttm(self, *argv) -> Result:
        return self._call(ttm_vitaldb, [str(a) for a in argv])

    def pretrain(self, *argv, params: Path | None = None) -> Result:
        params = params or self.pretrain_params()
        argv = ["--config", params, "--data-dir", self.windows(), "--output-dir", self.root / "out", *argv]
        return self._call(pretrain_vitaldb_ssl, [str(a) for a in argv])

    def stage(self, name: str, *argv, params) -> Result:
        """``stages/<name>.py``'s main, run in this row's directory with ``params`` (a dict or YAML text)."""
        (self.root / "params.yaml").write_text(params if isinstance(params, str) else yaml.safe_dump(params))
        spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        self.monkeypatch.chdir(self.root)
        self.monkeypatch.setattr(sys, "argv", [f"{name}.py", *map(str, argv)])
        return self._call(mod.main)


@dataclass
class Row:
    id: str
    code: int
    run: Callable[[Env], tuple]  # -> (Result, text that must name things, [names])
    marks: tuple = ()


ROWS: list[Row] = []


def row(id: str, code: int = 2, marks: tuple = ()):
    def add(fn):
        ROWS.append(Row(id, code, fn, marks))
        return fn
    return add


AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _report(env: Env, name: str = "train") -> dict:
    return json.loads((env.root / "win" / f"{name}_quality.json").read_text())


def _build(env: Env, **windows) -> Result:
    return env.ttm("build-windows", "--params", env.data_params(**windows), "--split-file", env.split_file(),
                   "--split", "train", "--outdir", env.root / "win")


# =========================================================================== data: silent wrong results

@row("two files for one case id (3.vital, 0003.vital)")
def _(env):
    shutil.copy(env.cases() / "3.vital", env.cases() / "0003.vital")
    earlier = env.root / "splits" / "splits_full.json"
    earlier.parent.mkdir()
    earlier.write_text('{"earlier": true}\n')
    env.protect(earlier)
    r = env.ttm("prepare-splits", "--params", env.data_params(), "--output", env.root / "splits")
    return r, r.err, ["case 3", "3.vital", "0003.vital", "data.local_dir"]


@row("a case id twice in one split")
def _(env):
    env.earlier_windows()
    r = env.ttm("build-windows", "--params", env.data_params(), "--split", "train", "--outdir", env.root / "win",
                "--split-file", env.split_file(train=(1, 2, 2)))
    return r, r.err, ["splits.json", "'train'", "more than once: 2"]


@row("a case in two splits")
def _(env):
    env.earlier_windows()
    r = env.ttm("build-windows", "--params", env.data_params(), "--split", "val", "--outdir", env.root / "win",
                "--split-file", env.split_file(train=(1, 2), val=(2, 3)))
    return r, r.err, ["splits.json", "2", "'train'", "'val'"]


def _clinical(env, text: str) -> Path:
    path = env.root / "clinical.csv"
    path.write_text(text)
    p = yaml.safe_load(env.data_params().read_text())
    p["data"]["clinical_csv"] = str(path)
    (env.root / "params.yaml").write_text(yaml.safe_dump(p))
    return env.root / "params.yaml"


@row("clinical table: one case, two subjects")
def _(env):
    params = _clinical(env, "caseid,subjectid\n1,10\n2,20\n3,30\n1,11\n")
    r = env.ttm("prepare-splits", "--params", params, "--output", env.root / "splits")
    return r, r.err, ["clinical.csv", "case 1", "line 2", "line 5", "'10'", "'11'"]


@row("clinical table: one case listed twice alike", code=0)
def _(env):
    params = _clinical(env, "caseid,subjectid\n1,10\n2,20\n1,10\n")
    r = env.ttm("prepare-splits", "--params", params, "--output", env.root / "splits")
    return r, r.out, ["clinical.csv", "case 1 (lines 2, 4)", "kept once"]


# =========================================================================== data: crashes -> one case or one line

@row("a directory named <id>.vital", code=0)
def _(env):
    (env.cases() / "3.vital").unlink()
    (env.cases() / "3.vital").mkdir()
    r = _build(env)
    [fail] = [f for f in _report(env)["failed_cases"] if f["caseid"] == 3]
    assert fail["reason"] == "unreadable" and "Is a directory" in fail["detail"]
    assert _report(env)["cases_read"] == 3
    return r, r.out, ["case 3 skipped: unreadable", "3.vital", "Is a directory"]


@row("an unreadable <id>.vital (no permission)", code=0,
     marks=(pytest.mark.skipif(AS_ROOT, reason="root reads any file"),))
def _(env):
    (env.cases() / "2.vital").chmod(0)
    r = _build(env)
    return r, r.out, ["case 2 skipped: unreadable", "Permission denied"]


@row("malformed YAML in the params file")
def _(env):
    path = env.data_params()
    path.write_text(path.read_text() + "windows: [unclosed\n")
    r = env.ttm("prepare-splits", "--params", path, "--output", env.root / "splits")
    return r, r.err, [str(path), "line", "column", "invalid YAML"]


@row("malformed YAML in --windows-yaml")
def _(env):
    bad = env.root / "w.yaml"
    bad.write_text("stride_s: 5.0\n  window_s: : 3\n")
    r = env.ttm("build-windows", "--params", env.data_params(), "--windows-yaml", bad, "--split-file",
                env.split_file(), "--split", "train")
    return r, r.err, ["--windows-yaml", str(bad), "line 2", "column"]


@row("windows.stride_s: 0 (--windows-yaml)")
def _(env):
    env.earlier_windows()
    (env.root / "w.yaml").write_text("stride_s: 0\n")
    r = env.ttm("build-windows", "--params", env.data_params(), "--windows-yaml", env.root / "w.yaml",
                "--split-file", env.split_file(), "--split", "train", "--outdir", env.root / "win")
    return r, r.err, ["windows.stride_s", "must be > 0"]


@row("wrong type: windows.num_workers: two")
def _(env):
    r = _build(env, num_workers="two")
    return r, r.err, ["windows.num_workers", "'two'", "integer"]


@row("float without a dot: windows.gate.flat_eps: 1e-6")
def _(env):
    p = yaml.safe_load(env.data_params().read_text())
    p["windows"]["gate"]["flat_eps"] = "1e-6"
    (env.root / "params.yaml").write_text(yaml.safe_dump(p))
    r = env.ttm("build-windows", "--params", env.root / "params.yaml", "--split-file", env.split_file(),
                "--split", "train")
    return r, r.err, ["windows.gate.flat_eps", "write 1.0e-6"]


@row("nothing usable left in a split")
def _(env):
    env.earlier_windows()
    for c in CASES:
        (env.cases() / f"{c}.vital").write_bytes(b"garbage")
    r = _build(env)
    assert not list((env.root / "win").glob("*.tmp*"))
    return r, r.err, ["split 'train'", "no usable window", "unreadable: 4"]


@row("build interrupted part-way (Ctrl-C)", code=130)
def _(env):
    env.earlier_windows()
    import vitalssl.data.windows as windows_mod
    real, seen = windows_mod.process_case, []

    def interrupted(path, caseid, *a):
        seen.append(caseid)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real(path, caseid, *a)

    env.monkeypatch.setattr(windows_mod, "process_case", interrupted)
    r = _build(env)
    assert not list((env.root / "win").glob("*.tmp*"))  # no partial file, under any name
    return r, r.err, ["interrupted"]


# =========================================================================== data: unclear reports

@row("gzip whole, .vital body cut short", code=0)
def _(env):
    body = gzip.decompress((env.cases() / "2.vital").read_bytes())
    (env.cases() / "2.vital").write_bytes(gzip.compress(body[: len(body) // 2]))
    r = _build(env)
    [fail] = [f for f in _report(env)["failed_cases"] if f["caseid"] == 2]
    assert fail["reason"] == "truncated"
    return r, r.out, ["case 2 skipped: truncated", "2.vital", "cut short"]


@row("a signal of +1e30 (beyond vitaldb's range)", code=0)
def _(env):
    ppg, ecg = clean_case(40)
    write_case(env.cases() / "3.vital", 3, np.full_like(ppg, 1e30), ecg, 40)
    r = _build(env)
    [fail] = [f for f in _report(env)["failed_cases"] if f["caseid"] == 3]
    assert fail["reason"] == "out_of_range"
    return r, r.out, ["case 3 skipped: out_of_range", "SNUADC/PLETH", "above 4e9", "1e+30"]


@row("a case shorter than one window", code=0)
def _(env):
    write_case(env.cases() / "4.vital", 4, *clean_case(8), 8)
    r = _build(env)
    rep = _report(env)
    assert rep["cases_without_windows"] == 1
    assert rep["cases_without_windows_list"] == [{"caseid": 4, "duration_s": 8.0, "windows": 0}]
    return r, r.out, ["case 4 (8 s) gave no window: shorter than one window"]


@row("files whose names are not case ids (abc.vital)", code=0)
def _(env):
    shutil.copy(env.cases() / "1.vital", env.cases() / "abc.vital")
    (env.cases() / "notes.vital").write_text("x")
    r = env.ttm("prepare-splits", "--params", env.data_params(), "--output", env.root / "splits")
    lines = [ln for ln in r.out.splitlines() if "abc.vital" in ln]
    assert len(lines) == 1
    doc = json.loads((env.root / "splits" / "splits_full.json").read_text())
    assert sorted(c for s in ("train", "val", "test") for c in doc[s]["caseids"]) == list(CASES)
    return r, lines[0], ["2 file(s)", "abc.vital", "notes.vital", "not <caseid>.vital"]


@row("clinical table: non-numeric case id")
def _(env):
    params = _clinical(env, "caseid,subjectid\n1,10\nabc,20\n")
    r = env.ttm("prepare-splits", "--params", params, "--output", env.root / "splits")
    return r, r.err, ["clinical.csv", "line 3", "column caseid", "'abc'"]


@row("clinical table: string subject ids (S-501) are labels", code=0)
def _(env):
    params = _clinical(env, "caseid,subjectid\n1,S-501\n2,S-501\n3,S-7\n4,S-8\n5,S-9\n6,S-10\n")
    r = env.ttm("prepare-splits", "--params", params, "--output", env.root / "splits")
    doc = json.loads((env.root / "splits" / "splits_full.json").read_text())
    where = [s for s in ("train", "val", "test") if 1 in doc[s]["caseids"]][0]
    assert 2 in doc[where]["caseids"] and "S-501" in doc[where]["subjects"]  # one subject, one split
    return r, r.out, ["6 cases from source 'local'"]


@row("bad cases of every known kind, reported by id", code=0)
def _(env):
    d = env.cases()
    ppg, ecg = clean_case(40)
    write_case(d / "1.vital", 1, None, ecg, 40)                      # missing track
    (d / "2.vital").write_bytes(b"garbage")                          # corrupt
    write_case(d / "3.vital", 3, ppg[::2], ecg[::2], 40, srate=250)  # wrong rate
    good = (d / "5.vital").read_bytes()
    (d / "6.vital").write_bytes(good[: len(good) // 2])              # cut gzip stream
    (d / "4.vital").unlink()                                         # unknown case id
    r = env.ttm("build-windows", "--params", env.data_params(), "--split-file",
                env.split_file(train=CASES, val=(), test=()), "--split", "train", "--outdir", env.root / "win")
    by_id = {f["caseid"]: f["reason"] for f in _report(env)["failed_cases"]}
    assert by_id == {1: "missing_track", 2: "unreadable", 3: "wrong_srate", 4: "unknown_case", 6: "truncated"}
    return r, r.out, [f"case {c} skipped: {why}" for c, why in by_id.items()]


@row("unknown splits.case_set")
def _(env):
    r = env.ttm("prepare-splits", "--params", env.data_params(), "--case-set", "nosuch")
    return r, r.err, ["splits.case_set", "'nosuch'"]


@row("build-windows without --split")
def _(env):
    r = env.ttm("build-windows", "--params", env.data_params(), "--split-file", env.split_file())
    return r, r.err, ["ttm-vitaldb build-windows", "--split"]


@row("missing split file")
def _(env):
    r = env.ttm("build-windows", "--params", env.data_params(), "--split-file", env.root / "none.json",
                "--split", "train")
    return r, r.err, ["split file", "none.json"]


# =========================================================================== model: sizes and types

@pytest.mark.parametrize("over,names", [
    ({"model": {"d_model": 0}}, ["model.d_model", ">= 1"]),
    ({"model": {"num_layers": 0}}, ["model.num_layers", ">= 1"]),
    ({"model": {"expansion_factor": 0}}, ["model.expansion_factor", ">= 1"]),
    ({"model": {"decoder_hidden": -4}}, ["model.decoder_hidden", ">= 0"]),
    ({"stft_weight": 0.3, "stft": {"fft_sizes": [512, 1024, 4096]}}, ["stft.fft_sizes", "4096", "context_length is 1250"]),
    ({"epochs": 2.5}, ["`epochs`", "integer", "2.5"]),
    ({"mask_ratio": "abc"}, ["`mask_ratio`", "'abc'"]),
    ({"lr": "5e-4"}, ["`lr`", "write 5.0e-4"]),
    ({"amp": "yes"}, ["`amp`", "true or false"]),
    ({"mask_type": True}, ["`mask_type`", "expected a string, got True", "quote the text"]),
    ({"mask_type": "foo"}, ["mask_type", "'foo'"]),
    ({"mask_ration": 0.5}, ["mask_ration"]),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else None)
def test_bad_pretrain_params_fail_before_training(over, names, shared, tmp_path, capsys, monkeypatch):
    quiet_progress_bars(monkeypatch)
    env = Env(tmp_path, shared, capsys, monkeypatch)
    env.earlier_run()
    r = env.pretrain(params=env.pretrain_params(**over))
    _check(Row("", 2, None), env, r, r.err, names)


@row("malformed YAML in --config")
def _(env):
    path = env.root / "bad.yaml"
    path.write_text("epochs: 3\nmodel: {d_model: 8\n")
    env.earlier_run()
    r = env.pretrain(params=path)
    return r, r.err, ["--config", str(path), "line 3", "column"]


@pytest.mark.parametrize("flags,names", [
    (["--mask-ratio", "1.5"], ["--mask-ratio", "1.5"]),
    (["--patch-size", "100"], ["--patch-size", "1250"]),
    (["--channels", "PPG", "ABP"], ["--channels", "ABP"]),
    (["--epochs", "0"], ["--epochs", ">= 1"]),
    (["--mask-type", "foo"], ["--mask-type", "invalid choice: 'foo'"]),
    (["--epochs", "2.5"], ["--epochs", "invalid int value: '2.5'"]),
])
def test_out_of_range_flags_name_the_flag(flags, names, shared, tmp_path, capsys, monkeypatch):
    quiet_progress_bars(monkeypatch)
    env = Env(tmp_path, shared, capsys, monkeypatch)
    env.earlier_run()
    r = env.pretrain(*flags)
    _check(Row("", 2, None), env, r, r.err, names)


@row("missing --data-dir")
def _(env):
    r = env._call(pretrain_vitaldb_ssl, ["--config", str(env.pretrain_params()), "--data-dir",
                                         str(env.root / "nowhere")])
    return r, r.err, ["--data-dir", "nowhere"]


# =========================================================================== model: window files

@row("NaN in one validation window")
def _(env):
    env.earlier_run()
    val = env.windows() / "val_windows.npy"
    x = np.load(val)
    x[7, 1, 100] = np.nan
    np.save(val, x)
    r = env.pretrain()
    return r, r.err, ["--val-file", str(val), "window 7", "channel ECG"]


@row("a value of 1e30 in one training window")
def _(env):
    env.earlier_run()
    train = env.windows() / "train_windows.npy"
    x = np.load(train)
    x[5, 0, 10] = 1e30
    np.save(train, x)
    r = env.pretrain()
    return r, r.err, ["--train-file", str(train), "window 5", "1e+30", "channel PPG"]


@row("a window file grown past its header (two builds interleaved)")
def _(env):
    env.earlier_run()
    train = env.windows() / "train_windows.npy"
    train.write_bytes(train.read_bytes() + b"\0" * 4 * 2 * 1250 * 3)
    r = env.pretrain()
    return r, r.err, ["--train-file", str(train), "its header says", "written by two runs at once"]


@row("truncated window file (.npy)")
def _(env):
    env.earlier_run()
    train = env.windows() / "train_windows.npy"
    data = train.read_bytes()
    train.write_bytes(data[: len(data) // 2])
    r = env.pretrain()
    return r, r.err, ["--train-file", str(train), "truncated or corrupt"]


@row("window file of the wrong dtype")
def _(env):
    env.earlier_run()
    val = env.windows() / "val_windows.npy"
    np.save(val, np.load(val).astype(np.float64))
    r = env.pretrain()
    return r, r.err, ["--val-file", str(val), "float32", "float64"]


@row("non-finite validation loss")
def _(env):
    out, work = env.earlier_run()
    import vitalssl.ssl.train as train_mod
    env.monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: {"loss": float("nan"), "msm": 0.0, "stft": 0.0})
    r = env.pretrain()
    assert (work / "last_model.pt").exists()  # the last good checkpoint of the resumed run is kept
    return r, r.err, ["non-finite validation loss", "epoch 2"]


# =========================================================================== model: resume states

def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@row("truncated state.pt with --resume")
def _(env):
    out, work = env.earlier_run(state=False)
    shutil.copytree(env.shared["state"], work)
    _cut(work / "state.pt")
    env.protect(work / "state.pt")
    r = env.pretrain("--resume")
    return r, r.err, ["--resume", str(work / "state.pt"), "truncated"]


@row("truncated state.pt, run again without flags", code=0)
def _(env):
    work = env.root / ".out.resume"
    shutil.copytree(env.shared["state"], work)
    _cut(work / "state.pt")
    cut = (work / "state.pt").read_bytes()
    r = env.pretrain("--epochs", "1")
    [aside] = list(env.root.glob(".out.resume.corrupt-*"))  # beside the work dir, not in any output
    assert (aside / "state.pt").read_bytes() == cut  # kept, whole, after the finished run
    assert (env.root / "out" / "best_model.pt").exists()
    lines = [ln for ln in r.out.splitlines() if "cannot be read" in ln]
    assert len(lines) == 1
    return r, lines[0], [str(work / "state.pt"), "moved aside", aside.name, "starting fresh"]


@row("state of another run with --resume")
def _(env):
    env.earlier_run()
    r = env.pretrain("--resume", params=env.pretrain_params(mask_ratio=0.6))
    return r, r.err, ["--resume", "state.pt", "differs in: config", "--fresh"]


@row("state of another run, run again without flags", code=0)
def _(env):
    shutil.copytree(env.shared["state"], env.root / ".out.resume")
    r = env.pretrain(params=env.pretrain_params(mask_ratio=0.6, epochs=1))
    lines = [ln for ln in r.out.splitlines() if "another run" in ln]
    assert len(lines) == 1
    [aside] = list(env.root.glob(".out.resume.other-run-*"))
    assert (aside / "state.pt").read_bytes() == (env.shared["state"] / "state.pt").read_bytes()  # kept
    return r, lines[0], ["state.pt", "differs in: config.epochs (2 -> 1), config.mask_ratio (0.4 -> 0.6)", "moved aside", aside.name,
                         "starting fresh"]


@row("run again without --resume: a matching state is continued", code=0)
def _(env):
    shutil.copytree(env.shared["state"], env.root / ".out.resume")
    r = env.pretrain()
    hist = json.loads((env.root / "out" / "training_history.json").read_text())["epochs"]
    assert [h["epoch"] for h in hist] == [1, 2]
    return r, r.out, ["Resuming from", "state.pt", "after epoch 1/2"]


@row("--resume without a state")
def _(env):
    env.earlier_run(state=False)
    r = env.pretrain("--resume")
    return r, r.err, ["--resume", "no resumable state", ".out.resume/state.pt"]


@row("--fresh discards a state on purpose, saying so", code=0)
def _(env):
    shutil.copytree(env.shared["state"], env.root / ".out.resume")
    r = env.pretrain("--fresh", "--epochs", "1")
    return r, r.out, ["--fresh: discarding the resumable state", ".out.resume"]


@row("state.pt that needs pickled code to load, with --resume")
def _(env):
    marker = env.root / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    out, work = env.earlier_run(state=False)
    work.mkdir()
    torch.save({"epoch": 0, "payload": Payload()}, work / "state.pt")
    env.protect(work / "state.pt")
    r = env.pretrain("--resume")
    assert not marker.exists()
    return r, r.err, ["--resume", "refusing to load", str(work / "state.pt")]


# =========================================================================== stage scripts

@row("stage pretrain: mask_type: foo (as dvc exp run -S mask_type=foo sets it)")
def _(env):
    p = _tiny_pretrain_params()
    p["mask_type"] = "foo"
    r = env.stage("pretrain", "--data-dir", env.windows(), "--output-dir", "out", "--work-dir", "work",
                  "--metrics", "m.json", "--plots", "h.csv", params=p)
    return r, r.err, ["mask_type (--mask-type)", "'foo'"]


@row("stage build-windows: windows.stride_s: 0")
def _(env):
    env.earlier_windows()
    p = yaml.safe_load(env.data_params().read_text())
    p["windows"]["stride_s"] = 0
    r = env.stage("build_windows", "--split", "train", "--split-file", env.split_file(), "--outdir", "win",
                  "--metrics", "m.json", params=p)
    return r, r.err, ["windows.stride_s"]


@row("stage build-windows: nothing usable (RuntimeError)")
def _(env):
    env.earlier_windows()
    for c in CASES:
        (env.cases() / f"{c}.vital").write_bytes(b"garbage")
    p = yaml.safe_load(env.data_params().read_text())
    r = env.stage("build_windows", "--split", "train", "--split-file", env.split_file(), "--outdir", "win",
                  "--metrics", "m.json", params=p)
    assert not (env.root / "m.json").exists()
    return r, r.err, ["split 'train'", "no usable window"]


@row("stage prepare-splits: malformed params.yaml")
def _(env):
    p = yaml.safe_load(env.data_params().read_text())
    assert env.stage("prepare_splits", "--out", "splits.json", params=p).code == 0
    env.protect(env.root / "splits.json")
    r = env.stage("prepare_splits", "--out", "splits.json", params="data: {source: local\nsplits: 3\n")
    return r, r.err, ["params file params.yaml", "line 2", "column"]


@row("stage demo: demo.n_cases: 2")
def _(env):
    p = _params()
    p["data"]["demo_dir"] = str(env.root / "demo")
    p["demo"]["n_cases"] = 2
    r = env.stage("demo", params=p)
    assert not (env.root / "demo").exists()
    return r, r.err, ["demo.n_cases", ">= 3"]


# =========================================================================== error handling itself

@row("a CheckpointError, an OSError: one line each")
def _(env):
    from vitalssl.ssl.checkpoint import CheckpointError

    @one_line_errors
    def fails(e):
        raise e

    r1 = env._call(fails, CheckpointError("cannot read /x/best_model.pt: it is truncated or corrupt\n(detail)"))
    assert r1.code == 2 and r1.err == "error: cannot read /x/best_model.pt: it is truncated or corrupt (detail)\n"
    r = env._call(fails, OSError(28, "No space left on device", "/x/out.npy"))
    return r, r.err, ["No space left on device", "/x/out.npy"]


def test_debug_environment_variable_keeps_the_traceback(shared, tmp_path, capsys, monkeypatch):
    env = Env(tmp_path, shared, capsys, monkeypatch)
    monkeypatch.setenv("VITALSSL_DEBUG", "1")
    with pytest.raises(ConfigError, match="model.d_model"):
        pretrain_vitaldb_ssl(["--config", str(env.pretrain_params(model={"d_model": 0})),
                              "--data-dir", str(env.windows())])


# =========================================================================== nothing lost: atomic writes

@row("a crash while publishing leaves the earlier outputs whole", code=0)
def _(env):
    from vitalssl.ssl import outputs
    from vitalssl.ssl.folders import mark
    out, _ = env.earlier_run(state=False)
    mark(out)  # a folder an earlier run published: replaced whole
    env.protect(out)
    work = env.root / "work"
    work.mkdir()
    (work / "best_model.pt").write_bytes(b"new best model")
    real, calls = os.replace, []

    def crash_on_swap(a, b):
        calls.append((a, b))
        if Path(b) == out.with_name("out.old"):
            raise OSError(5, "Input/output error", str(a))
        return real(a, b)

    env.monkeypatch.setattr(outputs.os, "replace", crash_on_swap)
    with pytest.raises(OSError):
        outputs.publish(work, out)
    assert calls
    return Result(0, "", ""), "", []


@row("a crash while the demo writes its tables leaves the earlier ones whole", code=0)
def _(env):
    from vitalssl.config import from_dict
    from vitalssl.data import demo
    from vitalssl.data.config import DemoConfig
    d = env.root / "demo"
    d.mkdir()
    (d / "clinical.csv").write_text("caseid,subjectid\n1,1\n")
    (d / "faults.json").write_text('{"earlier": true}\n')
    env.protect(d / "clinical.csv")
    env.protect(d / "faults.json")
    real = demo.atomic_write_text

    def crash_on_faults(path, text):
        if Path(path).name == "faults.json":
            raise OSError(28, "No space left on device", str(path))
        return real(path, text)

    env.monkeypatch.setattr(demo, "atomic_write_text", crash_on_faults)
    env.monkeypatch.setattr(demo, "write_vital", lambda *a, **k: None)  # skip writing the cases themselves
    cfg = from_dict(DemoConfig, {**_params()["demo"], "n_cases": 3, "n_subjects": 3, "duration_s": [60, 60]}, "demo")
    with pytest.raises(OSError):
        demo.generate_demo(cfg, d, progress=False)
    env.protected.pop(d / "clinical.csv")  # written whole before the crash: the new table, by design
    assert (d / "clinical.csv").read_text().startswith("caseid,subjectid,age") and not list(d.glob("*.tmp*"))
    return Result(0, "", ""), "", []


# =========================================================================== the table

def _check(r: Row, env: Env, res: Result, text: str, names: list) -> None:
    assert res.code == r.code, f"exit code {res.code}, expected {r.code}\nstdout:\n{res.out}\nstderr:\n{res.err}"
    assert "Traceback" not in res.err
    if r.code != 0:
        lines = res.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), res.err
    for name in names:
        assert name in text, f"{name!r} not named in: {text}"
    for path, digest in env.protected.items():
        assert path.exists() and _digest(path) == digest, f"{path} changed"


@pytest.mark.parametrize("r", [pytest.param(r, id=r.id, marks=r.marks) for r in ROWS])
def test_bad_input(r: Row, shared, tmp_path, capsys, monkeypatch):
    quiet_progress_bars(monkeypatch)
    env = Env(tmp_path, shared, capsys, monkeypatch)
    try:
        res, text, names = r.run(env)
    except BaseException:
        if env.last is not None:
            print(f"last run: exit {env.last.code}\nstdout:\n{env.last.out}\nstderr:\n{env.last.err}")
        raise
    _check(r, env, res, text, names)
