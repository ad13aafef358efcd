"""Downstream tasks: label rules, case pooling, the binary scores against scikit-learn, planted answers, skips."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from vitalssl.config import ConfigError
from vitalssl.entry.evaluate_stage import eval_config
from vitalssl.eval.splitdata import SplitData
from vitalssl.eval.tasks import Rows, auprc, auroc, label_values, score_task, task_metrics, task_rows
from vitalssl.seeding import name_seed


@pytest.fixture
def cfg(params):
    return eval_config({**params, "evaluate": dict(params["evaluate"], n_bootstrap=300, probe_folds=3)})


def split(name, groups, labels=None, columns=None):
    return SplitData(name, None, np.asarray(groups), labels or {}, columns or {})


def test_auroc_and_auprc_equal_scikit_learn_with_ties_and_weights():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(y + rng.normal(0, 1.0, 200), 1)            # rounded: many ties
    w = rng.integers(0, 4, 200).astype(np.float64)           # bootstrap-like counts, zeros included
    W = np.stack([np.ones(200), w])
    assert auroc(y, s)(W) == pytest.approx([roc_auc_score(y, s), roc_auc_score(y, s, sample_weight=w)])
    assert auprc(y, s)(W) == pytest.approx([average_precision_score(y, s),
                                            average_precision_score(y, s, sample_weight=w)])


def test_rules_make_binary_labels_and_keep_missing():
    sp = split("val", ["a"] * 4, {"map": np.array([60.0, 65.0, 70.0, np.nan])},
               {"sex": np.array(["F", "M", np.nan, "F"], object), "asa": np.array([2.0, 3.0, 4.0, np.nan])})
    got = label_values(sp, {"label": "label_map", "level": "window", "kind": "binary", "rule": {"below": 65.0}})
    np.testing.assert_array_equal(got, [1.0, 0.0, 0.0, np.nan])
    got = label_values(sp, {"label": "sex", "level": "case", "kind": "binary", "rule": {"equals": "F"}})
    np.testing.assert_array_equal(got, [1.0, 0.0, np.nan, 1.0])
    got = label_values(sp, {"label": "asa", "level": "case", "kind": "binary", "rule": {"at_least": 3}})
    np.testing.assert_array_equal(got, [0.0, 1.0, 1.0, np.nan])
    # a number matches by value (the column is read as float where it has a blank), a text by its text
    got = label_values(sp, {"label": "asa", "level": "case", "kind": "binary", "rule": {"equals": 3}})
    np.testing.assert_array_equal(got, [0.0, 1.0, 0.0, np.nan])
    got = label_values(sp, {"label": "asa", "level": "case", "kind": "binary", "rule": {"equals": "3"}})
    np.testing.assert_array_equal(got, [0.0, 0.0, 0.0, np.nan])
    assert label_values(sp, {"label": "label_sbp", "level": "window", "kind": "regression"}) is None


def test_a_case_task_pools_each_subjects_windows_into_one_row():
    sp = split("val", ["s1", "s1", "s2", "s2", "s2", "s3"], columns={"age": np.array([40, 40, 70, 70, 70, 55.0])})
    x = np.arange(12, dtype=np.float64).reshape(6, 2)
    rows = task_rows(sp, {"label": "age", "level": "case", "kind": "regression"}, {"f": {"val": x}})
    assert rows.groups.tolist() == ["s1", "s2", "s3"] and rows.y.tolist() == [40.0, 70.0, 55.0]
    np.testing.assert_allclose(rows.features["f"], [x[:2].mean(0), x[2:5].mean(0), x[5]])


def _planted(seed, n_subj=24, per=10):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_subj * per, 4))
    g = np.repeat([f"s{i}" for i in range(n_subj)], per)
    return X, g, rng


@pytest.mark.parametrize("separable", [True, False])
def test_a_planted_label_is_found_and_an_independent_one_is_chance(cfg, separable):
    task = {"label": "y", "level": "window", "kind": "binary", "rule": {"above": 0}}
    (Xtr, gtr, r1), (Xte, gte, r2) = _planted(1), _planted(2)
    ytr = (Xtr[:, 0] > 0) * 1.0 if separable else r1.integers(0, 2, len(Xtr)) * 1.0
    yte = (Xte[:, 0] > 0) * 1.0 if separable else r2.integers(0, 2, len(Xte)) * 1.0
    out = score_task(task, Rows({"f": Xtr}, ytr, gtr), {"test": Rows({"f": Xte}, yte, gte)}, cfg, 0)["test"]["f"]
    a = out["auroc"]
    if separable:
        assert a["value"] > 0.98 and a["ci_low"] > 0.95
    else:
        assert a["ci_low"] < 0.5 < a["ci_high"] and abs(a["value"] - 0.5) < 0.1
        assert out["auprc"]["ci_low"] < yte.mean() < out["auprc"]["ci_high"]   # chance AUPRC is the prevalence


def test_a_task_that_cannot_be_scored_says_why_in_the_metrics(params):
    tasks = {"hypotension": {"label": "label_map", "level": "window", "kind": "binary", "rule": {"below": 65.0}},
             "sbp": {"label": "label_sbp", "level": "window", "kind": "regression"},
             "map": {"label": "label_map", "level": "window", "kind": "regression"}}
    cfg = eval_config({**params, "evaluate": dict(params["evaluate"], n_bootstrap=200, probe_folds=3, tasks=tasks)})
    X, g, rng = _planted(3, n_subj=12, per=8)
    tr = split("train", g, {"map": 80 + 10 * rng.random(len(g))})
    val_map = np.full(len(g), 80.0)
    val_map[[0, 1, 8]] = 60.0                                 # 3 hypotensive windows, in subjects s0 and s1
    ev = split("val", np.char.add("v", g), {"map": val_map + rng.random(len(g))})
    feats = {"f": {"train": X, "val": X}}
    m = task_metrics(cfg, feats, tr, [ev], lambda name: 0)["val"]
    assert m["hypotension"] == {"skipped": "hypotension: 0 positive windows in 0 train subjects; need at least 10 positive windows in at least 2 subjects"}
    assert m["sbp"] == {"skipped": "sbp: column 'label_sbp' is not in the train window metadata"}
    assert m["map"]["n"] == len(g) and m["map"]["subjects"] == 12 and "r2" in m["map"]["f"]
    tr.labels["map"][:40] = 60.0                              # now train has positives; val still has 3
    m = task_metrics(cfg, feats, tr, [ev], lambda name: 0)["val"]
    assert m["hypotension"] == {"skipped": "hypotension: 3 positive windows in 2 val subjects; need at least 10 positive windows in at least 2 subjects"}


def test_adding_a_task_moves_no_other_tasks_interval(params):
    base = {"map": {"label": "label_map", "level": "window", "kind": "regression"},
            "sbp": {"label": "label_sbp", "level": "window", "kind": "regression"}}
    more = {"aaa": {"label": "label_map", "level": "window", "kind": "binary", "rule": {"below": 85.0}}, **base}
    X, g, rng = _planted(4, n_subj=12, per=8)
    lab = {"map": 80 + 10 * X[:, 0] + rng.normal(0, 3, len(g)), "sbp": 120 + 10 * X[:, 1] + rng.normal(0, 3, len(g))}
    tr, ev = split("train", g, lab), split("val", np.char.add("v", g), lab)
    got = []
    for tasks in (base, more):
        cfg = eval_config({**params, "evaluate": dict(params["evaluate"], n_bootstrap=200, probe_folds=3, tasks=tasks)})
        got.append(task_metrics(cfg, {"f": {"train": X, "val": X}}, tr, [ev], lambda n: name_seed(0, 5, n))["val"])
    assert "aaa" in got[1] and "skipped" not in got[1]["aaa"]
    for name in base:
        assert got[0][name]["f"]["r2"] == got[1][name]["f"]["r2"] and got[0][name]["f"]["r2"]["ci_low"] > 0.5
    assert name_seed(0, 5, "map") != name_seed(0, 5, "sbp") != name_seed(1, 5, "sbp")


def test_a_task_entry_is_checked(params):
    bad = {"hypotension": {"label": "label_map", "level": "window", "kind": "binary", "rule": {"under": 65.0}}}
    with pytest.raises(ConfigError, match=r"evaluate\.tasks\.hypotension\.rule"):
        eval_config({**params, "evaluate": dict(params["evaluate"], tasks=bad)})


@pytest.mark.parametrize("entry, where", [("{label: smoker, level: case, kind: binary, rule: {equals: yes}}",
                                           r"evaluate\.tasks\.smoker\.rule\.equals`: must be a text or a number, got True"),
                                          ("{label: on, level: case, kind: regression}",
                                           r"evaluate\.tasks\.smoker\.label`: must be a column name, got True")])
def test_a_bare_yaml_boolean_in_a_task_is_refused_with_the_fix(params, tmp_path, entry, where):
    """YAML 1.1 reads a bare yes/on as true: the text a column holds is never matched, so it is refused."""
    from vitalssl.entry.params import load_yaml
    (tmp_path / "t.yaml").write_text(f"smoker: {entry}\n")
    tasks = load_yaml(tmp_path / "t.yaml", "tasks")
    with pytest.raises(ConfigError, match=where + ".*quote"):
        eval_config({**params, "evaluate": dict(params["evaluate"], tasks=tasks)})
    quoted = entry.replace(" yes", " 'yes'").replace(" on,", " 'on',")
    (tmp_path / "t.yaml").write_text(f"smoker: {quoted}\n")
    eval_config({**params, "evaluate": dict(params["evaluate"], tasks=load_yaml(tmp_path / "t.yaml", "tasks"))})


def test_an_infinite_alpha_is_the_prior_for_a_classifier_and_is_recorded_as_inf(cfg):
    from vitalssl.eval.probes import alpha_record
    from vitalssl.eval.tasks import logistic_probe
    (Xtr, gtr, r1), (Xte, _, _) = _planted(6), _planted(7)
    ytr = r1.integers(0, 2, len(Xtr)) * 1.0
    fit = logistic_probe(Xtr, ytr, gtr, [Xte], np.array([np.inf]), 3)
    p = ytr.mean()
    assert np.all(fit["scores"][0] == pytest.approx(np.log(p / (1 - p)))) and np.all(fit["coef"] == 0)
    assert auroc(np.r_[0, 1, 0, 1.0], fit["scores"][0][:4])(np.ones((1, 4)))[0] == 0.5   # ties: chance exactly
    assert alpha_record(np.inf) == "inf" and alpha_record(10.0) == 10.0


def test_a_text_column_for_a_numeric_task_names_the_task_and_column(params):
    tasks = {"sex_reg": {"label": "sex", "level": "case", "kind": "regression"}}
    cfg = eval_config({**params, "evaluate": dict(params["evaluate"], n_bootstrap=200, probe_folds=3, tasks=tasks)})
    X, g, _ = _planted(8, n_subj=6, per=2)
    tr = split("train", g, columns={"sex": np.array(["M", "F"] * 6, object)})
    with pytest.raises(ValueError, match=r"evaluate\.tasks\.sex_reg: column 'sex' of the train windows is not numeric"):
        task_metrics(cfg, {"f": {"train": X}}, tr, [], lambda n: 0)


@pytest.mark.parametrize("separable", [True, False])
def test_a_case_level_binary_task_scores_one_row_per_subject(params, separable):
    # the default icu task (icu_days > 0) on a split with enough subjects: pooled per subject, scored per subject
    tasks = {"icu": params["evaluate"]["tasks"]["icu"]}
    cfg = eval_config({**params, "evaluate": dict(params["evaluate"], n_bootstrap=300, probe_folds=3, tasks=tasks)})
    out = {}
    for name, seed in (("train", 5), ("val", 6)):
        X, g, rng = _planted(seed, n_subj=40, per=6)
        level = np.repeat(rng.normal(size=40), 6)                 # one value per subject, on every window
        X[:, 0] += 3 * level
        icu = level > 0 if separable else np.repeat(rng.random(40) < 0.5, 6)
        out[name] = (split(name, np.char.add(name, g), columns={"icu_days": np.where(icu, 3.0, 0.0)}), X)
    feats = {"f": {k: x for k, (_, x) in out.items()}}
    m = task_metrics(cfg, feats, out["train"][0], [out["val"][0]], lambda name: 0)["val"]["icu"]
    assert m["n"] == 40 and m["subjects"] == 40                 # one row per subject, not per window
    a = m["f"]["auroc"]
    if separable:
        assert a["value"] > 0.95 and a["ci_low"] > 0.85
    else:
        assert a["ci_low"] < 0.5 < a["ci_high"]


def test_a_case_level_binary_task_too_rare_says_how_many_subjects_it_needs(params):
    tasks = {"icu": params["evaluate"]["tasks"]["icu"]}
    cfg = eval_config({**params, "evaluate": dict(params["evaluate"], n_bootstrap=100, probe_folds=3, tasks=tasks)})
    X, g, _ = _planted(7, n_subj=20, per=3)
    icu = np.repeat(np.arange(20) < 4, 3)                       # 4 subjects admitted
    tr = split("train", g, columns={"icu_days": np.where(icu, 2.0, 0.0)})
    ev = split("val", np.char.add("v", g), columns={"icu_days": np.where(icu, 2.0, 0.0)})
    m = task_metrics(cfg, {"f": {"train": X, "val": X}}, tr, [ev], lambda name: 0)["val"]
    assert m["icu"] == {"skipped": "icu: 4 positive subjects in train; need at least 10"}
    # the larger of the two thresholds rules a case task; the negative class is held to it too
    cfg = eval_config({**params, "evaluate": dict(params["evaluate"], n_bootstrap=100, probe_folds=3, tasks=tasks,
                                                  min_positives=3, min_positive_subjects=5)})
    m = task_metrics(cfg, {"f": {"train": X, "val": X}}, tr, [ev], lambda name: 0)["val"]
    assert m["icu"] == {"skipped": "icu: 4 positive subjects in train; need at least 5"}
    every = split("train", g, columns={"icu_days": np.full(len(g), 2.0)})
    m = task_metrics(cfg, {"f": {"train": X, "val": X}}, every, [ev], lambda name: 0)["val"]
    assert m["icu"] == {"skipped": "icu: 0 negative subjects in train; need at least 5"}


def test_a_window_task_with_its_positives_in_one_subject_is_skipped(params):
    tasks = {"hypotension": params["evaluate"]["tasks"]["hypotension"]}
    cfg = eval_config({**params, "evaluate": dict(params["evaluate"], n_bootstrap=100, probe_folds=3, tasks=tasks,
                                                  min_positives=5)})
    X, g, rng = _planted(8, n_subj=12, per=8)
    two = 80 + rng.random(len(g))
    two[:12] = 55.0                                             # 12 hypotensive windows: all 8 of s0, 4 of s1
    one = two.copy()
    one[8:12] = 80.0                                            # 8, all in s0
    ev = split("val", np.char.add("v", g), {"map": two})
    feats = {"f": {"train": X, "val": X}}
    m = task_metrics(cfg, feats, split("train", g, {"map": two}), [ev], lambda n: 0)["val"]["hypotension"]
    assert m["n"] == len(g) and "auroc" in m["f"]
    m = task_metrics(cfg, feats, split("train", g, {"map": one}), [ev], lambda n: 0)["val"]["hypotension"]
    assert m == {"skipped": "hypotension: 8 positive windows in 1 train subjects; need at least 5 positive windows in "
                            "at least 2 subjects"}


@pytest.mark.parametrize("value, hint", [("'65'", r"got '65' \(YAML reads 5e-1 as text"), ("5e-1", r"got '5e-1'"),
                                         ("on", r"got True \(YAML reads a bare yes")])
def test_a_numeric_rule_given_as_text_or_boolean_is_refused_with_its_value(params, tmp_path, value, hint):
    from vitalssl.entry.params import load_yaml
    (tmp_path / "t.yaml").write_text(f"low: {{label: label_map, level: window, kind: binary, rule: {{below: {value}}}}}\n")
    tasks = load_yaml(tmp_path / "t.yaml", "tasks")
    with pytest.raises(ConfigError, match=r"evaluate\.tasks\.low\.rule\.below`: must be a number, " + hint):
        eval_config({**params, "evaluate": dict(params["evaluate"], tasks=tasks)})
