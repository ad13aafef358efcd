"""Bad inputs about subject ids, split overlap, label tracks, repeated YAML keys and one-subject splits.

Rows as in :mod:`test_bad_inputs` (same checks: exit code, one ``error:`` line naming the thing, protected
outputs byte-identical), plus a unit test for each place a subject id is read or written, and the whole chain
prepare-splits -> build-windows -> pretrain -> evaluate on string subject ids.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import clean_case, write_case, write_windows
from test_bad_inputs import CASES, Env, Result, Row, _check, _params, quiet_progress_bars
from vitalssl.data.demo import write_vital
from vitalssl.data.sources import _subject_label, read_clinical
from vitalssl.data.splits import split_cases_of
from vitalssl.data.windows import _column

ROWS: list[Row] = []


def row(id: str, code: int = 2):
    def add(fn):
        ROWS.append(Row(id, code, fn))
        return fn
    return add


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs_ids")
    cases = root / "cases"
    cases.mkdir()
    for c in CASES:
        write_case(cases / f"{c}.vital", c, *clean_case(40, seed=c), 40)
    windows = root / "windows"
    write_windows(windows, "train", 32, seed=1)
    write_windows(windows, "val", 16, seed=2)
    return {"cases": cases, "windows": windows}


# --------------------------------------------------------------------------- unit: each id-handling site

def test_clinical_subject_ids_are_kept_as_written(tmp_path):
    p = tmp_path / "clinical.csv"
    p.write_text('caseid,subjectid\n1,S-501\n2,0012\n3,12.0\n4,NA\n5,"S,9"\n6,1e3\n')
    assert read_clinical(p) == {1: "S-501", 2: "0012", 3: "12", 4: "NA", 5: "S,9", 6: "1e3"}
    assert [_subject_label(t) for t in ("12.0", "-3.00", "12.5", "007")] == ["12", "-3", "12.5", "007"]


def test_meta_cells_quote_a_subject_id_with_a_comma():
    assert _column(["S-501", 'a,"b"', None]) == ["S-501", '"a,""b"""', ""]


def test_split_file_subject_ids_compare_as_text(tmp_path):
    doc = {"train": {"caseids": [1], "subjectids": [501]}, "val": {"caseids": [2], "subjectids": ["501"]}}
    with pytest.raises(ValueError, match=r"subject\(s\) '501' have cases in both split 'train' and split 'val'"):
        split_cases_of(doc, "train", tmp_path / "s.json")
    doc["val"]["subjectids"] = [1.5]
    with pytest.raises(ValueError, match="split 'val' has subject id 1.5"):
        split_cases_of(doc, "train", tmp_path / "s.json")


def test_eval_reads_subject_ids_as_text(tmp_path):
    from vitalssl.eval.splitdata import SplitData
    write_windows(tmp_path, "val", 4, seed=0)
    pd.DataFrame({"caseid": [1, 2, 3, 4], "subjectid": ["S-10033", "0012", "", "NA"], "start_s": 0.0,
                  "label_hr": [60.0, np.nan, 70.0, 80.0]}).to_csv(tmp_path / "val_windows.meta.csv", index=False)
    sd = SplitData.load(tmp_path, "val", ("PPG", "ECG"))
    assert sd.groups.tolist() == ["subject S-10033", "subject 0012", "case 3", "subject NA"]
    assert np.isnan(sd.labels["hr"][1]) and sd.labels["hr"][3] == 80.0


def test_repeated_key_in_a_list_item_and_a_merge_override(tmp_path):
    from vitalssl.config import ConfigError
    from vitalssl.entry.params import load_yaml
    p = tmp_path / "a.yaml"
    p.write_text("base: &b {x: 1}\nover:\n  <<: *b\n  x: 2\n")
    assert load_yaml(p, "--config")["over"] == {"x": 2}          # a merge key may be overridden on purpose
    p.write_text("items:\n  - a: 1\n    b: 2\n    a: 3\n")
    with pytest.raises(ConfigError, match=r"key `items\[0\].a` is given twice \(lines 2 and 4\)"):
        load_yaml(p, "--config")


# --------------------------------------------------------------------------- rows

def _split(env, **ids) -> object:
    """A split file with subject ids: ``train=[(case, subject)]`` ..."""
    doc = {"provenance": {"source": "local"}}
    for name, pairs in ids.items():
        doc[name] = {"caseids": [c for c, _ in pairs], "subjectids": [s for _, s in pairs]}
    path = env.root / "splits.json"
    path.write_text(json.dumps(doc))
    return path


@row("split file: one subject in train and val")
def _(env):
    env.earlier_windows()
    split = _split(env, train=[(1, "S-1"), (2, "S-2")], val=[(3, "S-2"), (4, "S-4")], test=[(5, "S-5")])
    r = env.ttm("build-windows", "--params", env.data_params(), "--split-file", split, "--split", "train",
                "--outdir", env.root / "win")
    return r, r.err, ["splits.json", "'S-2'", "split 'train'", "split 'val'"]


@row("stage build-windows: one subject in train and test")
def _(env):
    env.earlier_windows()
    p = yaml.safe_load(env.data_params().read_text())
    split = _split(env, train=[(1, "S-1")], val=[(3, "S-3")], test=[(5, "S-1")])
    r = env.stage("build_windows", "--split", "test", "--split-file", split, "--outdir", env.root / "win",
                  "--metrics", env.root / "q.json", params=p)
    return r, r.err, ["'S-1'", "split 'train'", "split 'test'"]


def _eval_params(env) -> dict:
    p = _params()
    p["evaluate"].update(n_bootstrap=100, probe_folds=2, random_encoder_seeds=1, scale_fit_windows=16,
                         batch_size=32, mask_ratios=[0.4], mask_types=["random"], device="cpu", figure_windows=1)
    return p


def _meta(d, split: str, subjects: list) -> None:
    n = len(subjects)
    pd.DataFrame({"caseid": range(1, n + 1), "subjectid": subjects, "start_s": 0.0}).to_csv(
        d / f"{split}_windows.meta.csv", index=False)


def _evaluate(env, windows) -> Result:
    """The evaluate stage on ``windows`` with a tiny model's checkpoint; earlier metrics are protected."""
    import torch
    from conftest import tiny_pretrain_overrides
    from vitalssl.entry.pretrain_stage import pretrain_config
    from vitalssl.ssl.checkpoint import make_checkpoint, save_atomic
    from vitalssl.ssl.model import MaskedTTM
    from vitalssl.ssl.train import build_optimizer
    cfg = pretrain_config(_params(), tiny_pretrain_overrides())
    torch.manual_seed(0)
    m = MaskedTTM(cfg.model)
    model = env.root / "model"
    model.mkdir()
    save_atomic(make_checkpoint(m, build_optimizer(m, cfg), cfg, 0, 1.0, {}, 1), model / "best_model.pt")
    out = env.root / "metrics"
    out.mkdir()
    (out / "evaluate.json").write_text('{"earlier": true}\n')
    env.protect(out)
    return env.stage("evaluate", "--model-dir", model, "--windows-dir", windows, "--metrics", out / "evaluate.json",
                     "--reconstruction-plot", out / "r.png", "--probes-plot", out / "p.png", params=_eval_params(env))


@row("evaluate: window files with a subject in train and val")
def _(env):
    d = env.windows()
    _meta(d, "train", ["S-1"] * 16 + ["S-2"] * 16)
    _meta(d, "val", ["S-2"] * 8 + ["S-3"] * 8)
    r = _evaluate(env, d)
    return r, r.err, ["val_windows.npy", "split 'train'", "split 'val'", "subject S-2"]


@row("evaluate: a val split of one subject")
def _(env):
    d = env.windows()
    _meta(d, "train", ["S-1"] * 16 + ["S-2"] * 16)
    _meta(d, "val", ["S-10033"] * 16)
    r = _evaluate(env, d)
    return r, r.err, ["split 'val'", "1 subject", "subject S-10033", "at least 2"]


def _case_without(path, caseid: int, drop: str) -> None:
    from conftest import numerics
    ppg, ecg = clean_case(40, seed=caseid)
    tn, vals = numerics(40)
    write_vital(path, caseid, ppg, ecg, (tn, vals), 40)
    if drop:  # rewrite without one numeric track
        import vitaldb
        vf = vitaldb.VitalFile(str(path))
        vf.remove_track(drop)
        vf.to_vital(str(path))


@row("windows.label_tracks: a typo no case has", code=0)
def _(env):
    p = yaml.safe_load(env.data_params().read_text())
    p["windows"]["label_tracks"]["bis"] = "BIS/BSI"
    (env.root / "params.yaml").write_text(yaml.safe_dump(p))
    r = env.ttm("build-windows", "--params", env.root / "params.yaml", "--split-file", env.split_file(),
                "--split", "train", "--outdir", env.root / "win")
    report = json.loads((env.root / "win" / "train_quality.json").read_text())
    assert "bis" in report["labels_absent"]     # an empty column, listed; evaluate skips its tasks with the reason
    return r, r.out, ["label bis", "'BIS/BSI'", "not in 4 of 4 case(s)", "check the track name"]


@row("windows.label_tracks: a track two cases lack", code=0)
def _(env):
    for c in (2, 4):
        _case_without(env.cases() / f"{c}.vital", c, "BIS/BIS")
    r = env.ttm("build-windows", "--params", env.data_params(), "--split-file", env.split_file(),
                "--split", "train", "--outdir", env.root / "win")
    report = json.loads((env.root / "win" / "train_quality.json").read_text())
    assert {k: report["labels_missing"][k] for k in ("hr", "spo2", "map", "bis")} == {
        "hr": [], "spo2": [], "map": [], "bis": [2, 4]}
    meta = pd.read_csv(env.root / "win" / "train_windows.meta.csv")
    assert meta.loc[meta.caseid.isin([2, 4]), "label_bis"].isna().all()
    assert (meta.loc[meta.caseid.isin([1, 3]), "label_bis"] == 45.0).all()
    return r, r.out, ["label bis", "'BIS/BIS'", "not in 2 of 4 case(s)", "case(s) 2, 4"]


@row("duplicated key in --config")
def _(env):
    env.earlier_run(state=False)
    path = env.pretrain_params()
    path.write_text(path.read_text() + "epochs: 7\n")
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if t.startswith("epochs:"))
    r = env.pretrain(params=path)
    return r, r.err, ["--config", str(path), "`epochs`", f"lines {line} and", "given twice"]


@row("duplicated key in --channels-yaml")
def _(env):
    env.earlier_windows()
    y = env.root / "ch.yaml"
    y.write_text("ppg_track: SNUADC/PLETH\necg_track: SNUADC/ECG_II\nlabel_tracks:\n  hr: Solar8000/HR\n"
                 "  hr: Solar8000/PLETH_HR\n")
    r = env.ttm("build-windows", "--params", env.data_params(), "--channels-yaml", y, "--split-file",
                env.split_file(), "--split", "train", "--outdir", env.root / "win")
    return r, r.err, ["--channels-yaml", str(y), "`label_tracks.hr`", "lines 4 and 5"]


@row("stage prepare-splits: duplicated key in params.yaml")
def _(env):
    text = (env.data_params().read_text().replace("splits:\n", "splits:\n  seed: 1\n", 1))
    split = env.root / "data" / "splits_full.json"
    split.parent.mkdir()
    split.write_text('{"earlier": true}\n')
    env.protect(split)
    r = env.stage("prepare_splits", "--out", split, params=text)
    return r, r.err, ["params file", "params.yaml", "`splits.seed`", "given twice"]


@pytest.mark.parametrize("r", [pytest.param(r, id=r.id) for r in ROWS])
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


# --------------------------------------------------------------------------- the whole chain on string subject ids

STRING_SUBJECTS = {1: "S-501", 2: "S-501", 3: "0012", 4: "NA", 5: "S,9", 6: "S-10033", 7: "S-7", 8: "S-8",
                   9: "s 9", 10: "S-10", 11: "S-11", 12: "S-12"}


@pytest.mark.slow  # two processes, or the whole chain: CI runs it with -m slow
def test_string_subject_ids_pass_the_whole_chain(tmp_path, capsys, monkeypatch):
    """prepare-splits -> build-windows -> pretrain (1 epoch, tiny model) -> evaluate, with ids that are not numbers."""
    from conftest import numerics
    from test_bad_inputs import _tiny_pretrain_params
    from vitalssl.entry.cli import pretrain_vitaldb_ssl
    quiet_progress_bars(monkeypatch)
    cases = tmp_path / "cases"
    cases.mkdir()
    for c in STRING_SUBJECTS:
        tn, vals = numerics(40)
        vals["hr"] = np.full(len(tn), 60.0 + 3 * c)               # a label that differs between subjects
        write_vital(cases / f"{c}.vital", c, *clean_case(40, hr=60.0 + 3 * c, seed=c), (tn, vals), 40)
    clinical = tmp_path / "clinical.csv"
    clinical.write_text("caseid,subjectid\n" + "".join(
        f'{c},"{s}"\n' for c, s in STRING_SUBJECTS.items()))
    env = Env(tmp_path, {"cases": cases}, capsys, monkeypatch)
    p = yaml.safe_load(env.data_params().read_text())
    p["data"]["clinical_csv"] = str(clinical)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(p))
    r = env.ttm("prepare-splits", "--params", params, "--output", tmp_path / "splits")
    assert r.code == 0, r.err
    doc = json.loads((tmp_path / "splits" / "splits_full.json").read_text())
    assert sorted(s for k in ("train", "val", "test") for s in doc[k]["subjects"]) == sorted(set(STRING_SUBJECTS.values()))
    win = tmp_path / "win"
    for split in ("train", "val", "test"):
        r = env.ttm("build-windows", "--params", params, "--split-file", tmp_path / "splits" / "splits_full.json",
                    "--split", split, "--outdir", win)
        assert r.code == 0, r.err
    meta = pd.read_csv(win / "val_windows.meta.csv", dtype={"subjectid": str}, keep_default_na=False)
    assert set(meta.subjectid) == set(doc["val"]["subjects"])   # "0012", "NA", "S,9" come back as written
    pre = _tiny_pretrain_params()
    pre.update(epochs=1, warmup_epochs=0)
    (tmp_path / "pretrain.yaml").write_text(yaml.safe_dump(pre))
    r = env._call(pretrain_vitaldb_ssl, ["--config", str(tmp_path / "pretrain.yaml"), "--data-dir", str(win),
                                         "--output-dir", str(tmp_path / "model")])
    assert r.code == 0, r.err
    out = tmp_path / "metrics"
    r = env.stage("evaluate", "--model-dir", tmp_path / "model", "--windows-dir", win, "--metrics",
                  out / "evaluate.json", "--reconstruction-plot", out / "r.png", "--probes-plot", out / "p.png",
                  params=_eval_params(env))
    assert r.code == 0, r.err
    m = json.loads((out / "evaluate.json").read_text())
    assert m["val"]["subjects"] == len(doc["val"]["subjects"]) >= 2
    assert m["val"]["windows"] == len(meta)
    assert np.isfinite(m["val"]["reconstruction"]["random_r40"]["model"]["all"])


def test_bootstrap_interval_leaves_out_undefined_replicates():
    from vitalssl.eval.bootstrap import interval
    lo, hi = interval(np.array([np.nan, -np.inf, 1.0, 2.0, 3.0]), 0.5)
    assert (lo, hi) == (1.5, 2.5)
    assert all(np.isnan(interval(np.array([np.nan, np.inf]))))
