"""Label efficiency: nested subject fractions, the trained networks on planted labels, the stage's outputs."""

import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import write_windows
from test_evaluate_stage import write_meta
from vitalssl.config import ConfigError
from vitalssl.entry.evaluate_stage import eval_config
from vitalssl.entry.label_efficiency_stage import label_efficiency_config, run_label_efficiency
from vitalssl.eval.labelefficiency import METHODS, Network, fraction_key, nested_subjects, per_unit, pool_draws
from vitalssl.eval.probes import alpha_record
from vitalssl.eval.splitdata import SplitData
from vitalssl.eval.tasks import auroc
from vitalssl.ssl.checkpoint import make_checkpoint, save_atomic
from vitalssl.ssl.model import MaskedTTM, ttm_config
from vitalssl.ssl.train import build_optimizer


def test_fractions_nest_and_keep_at_least_two_subjects():
    groups = np.repeat([f"subject {i}" for i in range(40)], 3)
    a = nested_subjects(groups, (0.05, 0.2, 1.0), seed=1)
    assert [len(a[f]) for f in (0.05, 0.2, 1.0)] == [2, 8, 40]
    assert set(a[0.05]) <= set(a[0.2]) <= set(a[1.0]) == set(groups)
    assert all(np.array_equal(a[f], nested_subjects(groups, (1.0, 0.2, 0.05), seed=1)[f]) for f in a)
    assert not np.array_equal(a[0.2], nested_subjects(groups, (0.2,), seed=2)[0.2])
    assert fraction_key(0.05) == "5pct" and fraction_key(1.0) == "100pct" and fraction_key(0.125) == "12pct"


def test_case_tasks_score_one_row_per_subject_by_the_mean_prediction():
    g = np.array(["a", "a", "b", "b", "b"])
    p, y, ids = per_unit({"level": "case"}, np.array([1.0, 3.0, 2.0, 2.0, 5.0]), np.array([7, 7, 9, 9, 9.0]), g)
    assert ids.tolist() == ["a", "b"] and p.tolist() == [2.0, 3.0] and y.tolist() == [7.0, 9.0]
    same = per_unit({"level": "window"}, np.arange(5.0), np.arange(5.0), g)
    assert same[0].tolist() == list(range(5)) and same[2] is g


def _scores(v, lo, hi, steps=None):
    out = {"mae": {"value": v, "ci_low": lo, "ci_high": hi}}
    return out if steps is None else {**out, "steps": steps, "best_step": 0}


def test_draws_pool_to_the_mean_the_spanning_interval_and_the_per_draw_values():
    cells = [{"subjects": 4, "n_train": 40, **{m: _scores(2.0 + k, 1.0 + k, 3.0 + k, 10 * k) for k, m in enumerate(METHODS)}},
             {"skipped": "too few"},
             {"subjects": 4, "n_train": 44, **{m: _scores(4.0 + k, 0.5 + k, 5.0 + k, 20) for k, m in enumerate(METHODS)}}]
    p = pool_draws(cells)
    assert p["draws"] == 2 and p["subjects"] == [4, 4] and p["n_train"] == [40, 44]
    assert p["skipped_draws"] == ["draw 1: too few"]
    assert p["frozen_linear"]["mae"] == {"value": 3.0, "ci_low": 0.5, "ci_high": 5.0, "draws": [2.0, 4.0]}
    assert p["finetune"]["mae"]["value"] == 4.0 and p["finetune"]["steps"] == [10, 20]
    assert pool_draws([{"skipped": "a"}, {"skipped": "b"}]) == {"skipped": "draw 0: a; draw 1: b"}
    # a reason shared by several draws is said once, with the draws it stopped
    assert pool_draws([{"skipped": "a"}, {"skipped": "b"}, {"skipped": "a"}]) == {"skipped": "draws 0, 2: a; draw 1: b"}


def _split(tmp_path, name, x, y, subjects):
    from vitalssl.windowfile import NpyAppender
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    app = NpyAppender(d / f"{name}_windows.npy", x.shape[1:])
    app.append(x)
    app.close()
    (d / f"{name}_windows.json").write_text(json.dumps({"channels": ["PPG", "ECG"], "srate": 125}))
    pd.DataFrame({"caseid": subjects, "subjectid": subjects, "start_s": 0.0, "label_y": y}).to_csv(
        d / f"{name}_windows.meta.csv", index=False)
    return d


def _planted(n, seed, separable):
    """Windows whose class sets the PPG's frequency (separable) or is a coin flip (independent)."""
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, 2, n)
    t = np.arange(1250) / 125.0
    f = np.where(cls == 1, 2.0, 0.8)[:, None]
    x = np.stack([np.sin(2 * np.pi * f * t + rng.uniform(0, 6, (n, 1))), rng.standard_normal((n, 1250))], 1)
    x = ((x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)).astype(np.float32)
    y = cls if separable else rng.integers(0, 2, n)
    return x, y.astype(np.float64)


@pytest.mark.parametrize("separable, lo, hi", [(True, 0.95, 1.0), (False, 0.35, 0.65)])
def test_a_trained_network_finds_a_separable_label_and_not_an_independent_one(tmp_path, tiny_cfg, params,
                                                                             separable, lo, hi):
    from tsfm_public.models.tinytimemixer import TinyTimeMixerModel
    cfg = tiny_cfg().model
    lcfg = replace(label_efficiency_config(params), max_steps=80, eval_every=20, patience=4, batch_size=32,
                   lr_scratch=3e-3)
    splits = {}
    for name, n, seed in (("train", 256, 0), ("val", 96, 1), ("test", 160, 2)):
        x, y = _planted(n, seed, separable)
        d = _split(tmp_path, name, x, y, np.arange(n) // 8 + 1000 * seed)
        splits[name] = SplitData.load(d, name, ("PPG", "ECG"))
    net = Network(lambda: TinyTimeMixerModel(ttm_config(cfg)), cfg, "binary", lcfg, lcfg.lr_scratch, 0, "cpu")
    tr = (np.arange(len(splits["train"])), splits["train"].labels["y"])
    va = (np.arange(len(splits["val"])), splits["val"].labels["y"])
    info = net.fit(splits["train"], tr, splits["val"], va)
    assert 0 <= info["best_step"] <= info["steps"] <= 80
    score = net.predict(splits["test"], np.arange(len(splits["test"])))
    a = float(auroc(splits["test"].labels["y"], score)(np.ones((1, len(score))))[0])
    assert lo <= a <= hi, a


def test_early_stopping_keeps_the_weights_of_the_best_val_loss(tmp_path, tiny_cfg, params):
    from tsfm_public.models.tinytimemixer import TinyTimeMixerModel
    cfg = tiny_cfg().model
    lcfg = replace(label_efficiency_config(params), max_steps=30, eval_every=5, patience=100, batch_size=16)
    x, y = _planted(64, 0, separable=False)   # nothing to learn: val loss rises once the head fits noise
    splits = {n: SplitData.load(_split(tmp_path, n, x, y, np.arange(64) // 8 + k * 100), n, ("PPG", "ECG"))
              for k, n in enumerate(("train", "val"))}
    net = Network(lambda: TinyTimeMixerModel(ttm_config(cfg)), cfg, "binary", lcfg, 1e-2, 0, "cpu")
    all_tr, all_va = (np.arange(64), y), (np.arange(64), y)
    info = net.fit(splits["train"], all_tr, splits["val"], all_va)
    assert net.val_loss(splits["val"], all_va) == pytest.approx(info["val_loss"], rel=1e-5)
    assert info["steps"] == 30 and info["best_step"] % 5 == 0


@pytest.mark.parametrize("kind", ["regression", "binary"])
def test_lp_ft_starts_the_fine_tuned_network_as_the_frozen_encoder_probe(tmp_path, tiny_cfg, params, kind):
    """Before any step, the network's prediction is the probe's on the encoder's pooled, layer-normed features."""
    from tsfm_public.models.tinytimemixer import TinyTimeMixerModel
    from vitalssl.eval.probes import linear_probe
    from vitalssl.eval.tasks import logistic_probe
    cfg = tiny_cfg().model
    x, cls = _planted(96, 0, separable=True)
    y = cls if kind == "binary" else 60 + 40 * cls + np.random.default_rng(1).normal(0, 5, len(cls))
    sp = SplitData.load(_split(tmp_path, "train", x, y, np.arange(96) // 8), "train", ("PPG", "ECG"))
    net = Network(lambda: TinyTimeMixerModel(ttm_config(cfg)), cfg, kind, label_efficiency_config(params), 1e-4,
                  0, "cpu")
    net.model.eval()
    with torch.no_grad():
        X = net.model.encode(torch.as_tensor(x)).mean(dim=2).flatten(1).numpy().astype(np.float64)
    groups, alphas = np.arange(96) // 8, (0.1, 10.0, 1000.0)
    alpha = net.head_from_probe(X, y, groups, alphas, 3)
    Z = torch.nn.functional.layer_norm(torch.as_tensor(X), (X.shape[1],), eps=1e-5).numpy()
    if kind == "regression":
        ref = linear_probe(Z, y, groups, Z, alphas, 3)
        expect, got = ref["pred"], net.predict(sp, np.arange(96))
        assert alpha == ref["alpha"]
        assert np.abs(got - expect).max() < 1e-3 * y.std()
    else:
        ref = logistic_probe(Z, y, groups, [Z], np.asarray(alphas), 3)
        expect, got = 1 / (1 + np.exp(-ref["scores"][0])), net.predict(sp, np.arange(96))
        assert alpha == ref["alpha"]
        assert np.abs(got - expect).max() < 1e-4
    assert float(auroc(cls, got)(np.ones((1, 96)))[0]) > 0.95 if kind == "binary" else np.corrcoef(got, y)[0, 1] > 0.9


@pytest.fixture
def stage_inputs(tmp_path, tiny_cfg, params):
    """Tiny window files with HR planted from the PPG frequency and the demo's clinical columns, and a checkpoint."""
    d = tmp_path / "windows"
    for split, n, seed, first in (("train", 80, 1, 0), ("val", 30, 2, 100), ("test", 30, 3, 200)):
        write_meta(d, split, write_windows(d, split, n, seed=seed), 10, first)
        meta = pd.read_csv(d / f"{split}_windows.meta.csv")
        meta["age"] = 20 + (meta["subjectid"] % 60)
        meta.to_csv(d / f"{split}_windows.meta.csv", index=False)
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = MaskedTTM(cfg.model)
    (tmp_path / "model").mkdir()
    save_atomic(make_checkpoint(model, build_optimizer(model, cfg), cfg, 0, 1.0, {}, 1),
                tmp_path / "model" / "best_model.pt")
    ev = dict(params["evaluate"], n_bootstrap=100, probe_folds=3, batch_size=32, device="cpu",
              tasks={"hr": {"label": "label_hr", "level": "window", "kind": "regression"},
                     "fast": {"label": "label_hr", "level": "window", "kind": "binary", "rule": {"above": 90.0}},
                     "age": {"label": "age", "level": "case", "kind": "regression"},
                     "bis": {"label": "label_bis", "level": "window", "kind": "regression"}})
    le = dict(params["label_efficiency"], tasks=["hr", "fast", "age"], fractions=[0.2, 1.0], max_steps=4,
              eval_every=2, batch_size=16)
    return tmp_path, eval_config({**params, "evaluate": ev}), label_efficiency_config({"label_efficiency": le})


def test_the_stage_writes_every_task_fraction_and_method_and_the_plots(stage_inputs):
    root, cfg, lcfg = stage_inputs
    out = root / "metrics"
    m = run_label_efficiency(cfg, lcfg, root / "model", root / "windows", out / "le.json", out / "le", out / "le.png",
                             progress=False, log=lambda s: None)
    assert json.loads((out / "le.json").read_text()) == json.loads(json.dumps(m))
    assert m["split"] == "test" and m["fractions"] == [0.2, 1.0] and set(m["tasks"]) == {"hr", "fast", "age"}
    hr = m["tasks"]["hr"]
    assert hr["metric"] == "mae" and hr["level"] == "window"
    assert hr["20pct"]["subjects"] == 2 and hr["100pct"]["subjects"] == 10
    assert hr["20pct"]["n_train"] < hr["100pct"]["n_train"] == 80
    for method in METHODS:
        e = hr["100pct"][method]["mae"]
        assert e["ci_low"] <= e["value"] <= e["ci_high"]
    assert hr["100pct"]["beat_linear"]["r2"]["value"] > 0.9      # the planted HR, from the R-R intervals
    assert hr["100pct"]["finetune"]["steps"] <= 4
    assert m["budget"] == {"draws": 1, "max_steps": 4, "eval_every": 2, "patience": 3, "batch_size": 16,
                           "finetune_from_probe": True, "lr_finetune": 1e-4, "lr_scratch": 1e-3}
    assert hr["100pct"]["finetune"]["head_alpha"] in [alpha_record(a) for a in cfg.probe_alphas] and "head_alpha" not in hr["100pct"]["scratch"]
    assert m["tasks"]["fast"]["metric"] == "auroc"
    assert m["tasks"]["age"]["100pct"]["finetune"]["mae"]["value"] > 0
    rows = pd.read_csv(out / "le" / "hr.csv")
    assert rows["percent"].tolist() == [20, 100]
    assert set(rows.columns) == {"percent"} | set(METHODS) | {f"{m}_ci_{k}" for m in METHODS for k in ("low", "high")}
    assert rows.loc[1, "finetune"] == pytest.approx(hr["100pct"]["finetune"]["mae"]["value"], rel=1e-5)
    assert (out / "le.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_more_draws_keep_the_first_and_pool_the_others(stage_inputs):
    """Draw 0 of a two-draw run is the one-draw run (same subjects, same seeds); the cell reports the mean of the
    two, an interval spanning both, and per-draw records; another shuffle picks other subjects at 20%."""
    root, cfg, lcfg = stage_inputs
    lcfg = replace(lcfg, tasks=("hr",))
    run = lambda lc, tag: run_label_efficiency(cfg, lc, root / "model", root / "windows", root / f"{tag}.json",  # noqa: E731
                                               root / tag, root / f"{tag}.png", progress=False, log=lambda s: None)
    one, two = run(lcfg, "one")["tasks"]["hr"], run(replace(lcfg, draws=2), "two")["tasks"]["hr"]
    for key in ("20pct", "100pct"):
        for m in METHODS:
            a, b = one[key][m]["mae"], two[key][m]["mae"]
            assert b["draws"][0] == a["value"]
            assert b["value"] == pytest.approx(np.mean(b["draws"]))
            assert b["ci_low"] <= min(a["ci_low"], b["value"]) and b["ci_high"] >= max(a["ci_high"], b["value"])
        assert two[key]["draws"] == 2 and len(two[key]["finetune"]["best_step"]) == 2
        assert two[key]["finetune"]["steps"][0] == one[key]["finetune"]["steps"]
    assert two["100pct"]["n_train"] == [80, 80] and two["20pct"]["subjects"] == [2, 2]
    assert two["20pct"]["n_train"][0] == one["20pct"]["n_train"]
    assert two["20pct"]["beat_linear"]["mae"]["draws"][1] != two["20pct"]["beat_linear"]["mae"]["draws"][0]
    rows = pd.read_csv(root / "two" / "hr.csv")
    assert rows.loc[1, "scratch"] == pytest.approx(two["100pct"]["scratch"]["mae"]["value"], rel=1e-5)


def test_a_fraction_too_small_for_a_binary_task_is_skipped_with_the_reason(stage_inputs):
    root, cfg, lcfg = stage_inputs
    lcfg = replace(lcfg, tasks=("fast",), fractions=(0.05, 1.0))
    cfg = replace(cfg, min_positives=10)   # val and test hold 12 or more positive windows; 2 train subjects fewer
    m = run_label_efficiency(cfg, lcfg, root / "model", root / "windows", root / "m.json", root / "p", root / "f.png",
                             progress=False, log=lambda s: None)
    skipped = m["tasks"]["fast"]["5pct"]["skipped"]
    assert "fast:" in skipped and "positive windows in 2 train_5pct subjects" in skipped and "need at least 10 positive windows in at least 2 subjects" in skipped
    assert pd.read_csv(root / "p" / "fast.csv")["finetune"].isna().tolist()[0]


def test_unknown_task_names_and_bad_fractions_are_refused(params, stage_inputs):
    root, cfg, lcfg = stage_inputs
    with pytest.raises(ConfigError, match="label_efficiency.tasks.*'nope' is not an evaluate.tasks entry"):
        run_label_efficiency(cfg, replace(lcfg, tasks=("nope",)), root / "model", root / "windows", root / "m.json",
                             root / "p", root / "f.png", progress=False, log=lambda s: None)
    assert not (root / "m.json").exists()
    for bad in ([0.0, 1.0], [0.5, 0.5], [1.5]):
        with pytest.raises(ConfigError, match="label_efficiency.fractions"):
            label_efficiency_config({"label_efficiency": dict(params["label_efficiency"], fractions=bad)})
    with pytest.raises(ConfigError, match="label_efficiency.draws"):
        label_efficiency_config({"label_efficiency": dict(params["label_efficiency"], draws=0)})


@pytest.mark.parametrize("which", ["metrics", "figure", "plots"])
def test_an_output_path_of_the_wrong_kind_is_refused_before_any_work(stage_inputs, which):
    """A folder where a file goes (or a file where the plots folder goes) is named at once; nothing is written."""
    root, cfg, lcfg = stage_inputs
    out = {"metrics": root / "m.json", "figure": root / "f.png", "plots": root / "p"}
    if which == "plots":
        out[which].write_text("a user's notes\n")
    else:
        (out[which] / "keep.txt").parent.mkdir()
        (out[which] / "keep.txt").write_text("a user's notes\n")
    logged = []
    err = NotADirectoryError if which == "plots" else IsADirectoryError
    with pytest.raises(err, match=re.escape(str(out[which]))):
        run_label_efficiency(cfg, lcfg, root / "model", root / "windows", out["metrics"], out["plots"],
                             out["figure"], progress=False, log=logged.append)
    assert logged == []                                   # refused before the checkpoint was even read
    kept = out[which] if which == "plots" else out[which] / "keep.txt"
    assert kept.read_text() == "a user's notes\n"
    assert sorted(p.name for p in root.iterdir()) == sorted(["model", "windows", out[which].name])
