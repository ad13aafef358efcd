"""Linear probes on planted signals, and the subject-level bootstrap's coverage."""

import numpy as np
import pytest

from vitalssl.eval import bootstrap as bs
from vitalssl.eval.probes import Standardiser, group_folds, linear_probe, ridge_fit, ridge_path, ridge_predict



def test_group_folds_keep_subjects_whole_and_balance_windows():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(23), rng.integers(1, 30, 23))
    folds = group_folds(groups, 5)
    for g in np.unique(groups):
        assert len(np.unique(folds[groups == g])) == 1
    sizes = np.bincount(folds, minlength=5)
    assert sizes.min() > 0 and sizes.max() - sizes.min() <= 29
    with pytest.raises(ValueError, match="at least 5 subjects"):
        group_folds(np.arange(4), 5)


def test_ridge_path_matches_the_normal_equations():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((50, 7)), rng.standard_normal(50)
    coef, b = ridge_path(X, y, [0.3, 10.0])
    for a, w, c in zip([0.3, 10.0], coef, b):
        Xc, yc = X - X.mean(0), y - y.mean()
        ref = np.linalg.solve(Xc.T @ Xc + a * np.eye(7), Xc.T @ yc)
        np.testing.assert_allclose(w, ref, rtol=1e-10)
        assert c == pytest.approx(y.mean() - X.mean(0) @ ref)


def test_probe_finds_a_planted_linear_signal_on_held_out_subjects():
    rng = np.random.default_rng(2)
    g_tr, g_te = np.repeat(np.arange(30), 10), np.repeat(np.arange(30, 40), 10)
    w = rng.standard_normal(32)
    X_tr, X_te = rng.standard_normal((300, 32)), rng.standard_normal((100, 32))
    y_tr, y_te = X_tr @ w + 0.1 * rng.standard_normal(300), X_te @ w + 0.1 * rng.standard_normal(100)
    p = linear_probe(X_tr, y_tr, g_tr, X_te, [1e-3, 1e-1, 10.0, 1e3, 1e5], 5)
    r2 = bs.estimate(bs.r2(y_te, p["pred"]), g_te, 500, 0)
    assert r2["value"] > 0.99 and r2["ci_low"] > 0.98 and p["alpha"] <= 10.0
    # without a signal the CV picks heavy shrinkage and the probe predicts about the train mean
    p = linear_probe(X_tr, rng.standard_normal(300), g_tr, X_te, [1e-3, 1e-1, 10.0, 1e3, 1e5], 5)
    assert p["alpha"] >= 1e3 and np.std(p["pred"]) < 0.2


def test_standardiser_leaves_constant_features_at_zero():
    X = np.c_[np.ones(10), np.arange(10.0)]
    Z = Standardiser(X)(X)
    assert np.all(Z[:, 0] == 0) and Z[:, 1].std() == pytest.approx(1.0)


def test_statistics_with_unit_weights_are_the_plain_ones():
    rng = np.random.default_rng(3)
    y, p = rng.standard_normal(40), rng.standard_normal(40)
    one = np.ones((1, 40))
    assert bs.mae(y, p)(one)[0] == pytest.approx(np.mean(np.abs(y - p)))
    assert bs.r2(y, p)(one)[0] == pytest.approx(1 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2))
    assert bs.ratio_of_means(y + 5, p + 5)(one)[0] == pytest.approx(np.mean(y + 5) / np.mean(p + 5))


def test_out_of_sample_r2_is_zero_for_the_train_mean_and_tight_about_zero_for_an_unrelated_label():
    rng = np.random.default_rng(4)
    y, p = rng.standard_normal(40), rng.standard_normal(40)
    assert bs.r2(y, p, 0.3)(np.ones((1, 40)))[0] == pytest.approx(1 - np.sum((y - p) ** 2) / np.sum((y - 0.3) ** 2))
    # a label with a level per subject and nothing in the features (as BIS in the demo), five draws
    g_tr, g_te = np.repeat(np.arange(40), 20), np.repeat(np.arange(40, 50), 20)
    contains = below = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        y_tr = np.repeat(rng.normal(50, 8, 40), 20) + rng.standard_normal(800)
        y_te = np.repeat(rng.normal(50, 8, 10), 20) + rng.standard_normal(200)
        X_tr, X_te = rng.standard_normal((800, 16)), rng.standard_normal((200, 16))
        pred = linear_probe(X_tr, y_tr, g_tr, X_te, [1e-1, 10.0, 1e3, 1e5], 5)["pred"]
        W = bs.subject_weights(g_te, 400, 0)
        const = bs.r2(y_te, np.full(200, y_tr.mean()), y_tr.mean())(W)
        np.testing.assert_allclose(const, 0.0, atol=1e-12)             # every replicate: exactly no skill
        oos = bs.estimate(bs.r2(y_te, pred, y_tr.mean()), g_te, 400, 0)
        assert -0.05 < oos["ci_low"] <= oos["value"] <= oos["ci_high"] < 0.05
        contains += oos["ci_low"] < 0 < oos["ci_high"]
        # about each replicate's own mean, the same predictions score far below 0 in most draws
        inner = bs.estimate(bs.r2(y_te, pred), g_te, 400, 0)
        assert inner["ci_low"] < -0.5 and inner["ci_high"] < 0.02
        below += inner["ci_high"] < 0
    assert contains == 5 and below == 4


def test_subject_weights_resample_whole_subjects():
    groups = np.repeat(["a", "b", "c", "d"], [1, 2, 3, 4])
    W = bs.subject_weights(groups, 50, 0)
    codes, G = bs.group_index(groups)
    for r in range(50):
        per_subject = [np.unique(W[r, codes == g]) for g in range(G)]
        assert all(len(u) == 1 for u in per_subject)               # a subject's windows share one weight
        assert sum(u[0] for u in per_subject) == G                  # G subjects drawn


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(4)
    hits, trials = 0, 300
    for k in range(trials):
        n_subj, per = 15, 8
        groups = np.repeat(np.arange(n_subj), per)
        # subject effects make windows of one subject correlated: a window-level bootstrap would undercover
        v = np.repeat(rng.standard_normal(n_subj), per) + 0.5 * rng.standard_normal(n_subj * per)
        e = bs.estimate(bs.weighted_mean(v), groups, 400, k)
        hits += e["ci_low"] <= 0.0 <= e["ci_high"]
    assert 0.87 <= hits / trials <= 0.99


def test_ridge_path_gram_and_svd_routes_agree_with_the_normal_equations():
    rng = np.random.default_rng(6)
    alphas = [1e-2, 1.0, 1e3]
    for n, d in [(300, 40), (30, 80)]:            # more rows than columns: the Gram route; fewer: the SVD
        X = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + 3.0
        y = X[:, 0] - 2 * X[:, 1] + rng.standard_normal(n)
        coef, b = ridge_path(X, y, alphas)
        Xc = X - X.mean(0)
        for a, c, i in zip(alphas, coef, b):
            ref = np.linalg.solve(Xc.T @ Xc + a * np.eye(d), Xc.T @ (y - y.mean()))
            np.testing.assert_allclose(c, ref, rtol=1e-7, atol=1e-9)
            assert i == pytest.approx(y.mean() - X.mean(0) @ ref)


def test_ridge_predict_names_a_column_mismatch():
    rng = np.random.default_rng(7)
    fit = ridge_fit(rng.standard_normal((40, 5)), rng.standard_normal(40), np.repeat(np.arange(8), 5), [1.0], 2)
    assert ridge_predict(fit, np.zeros((3, 5))).shape == (3,)
    with pytest.raises(ValueError, match="5 columns, eval features 4"):
        ridge_predict(fit, np.zeros((3, 4)))


@pytest.mark.parametrize("n", [40, 400])                      # the SVD (n < d) and Gram (n >= d) routes
def test_an_infinite_alpha_is_the_intercept_only_model_and_an_unrelated_label_picks_it(n):
    rng = np.random.default_rng(5)
    X, g = rng.normal(size=(n, 60)), np.repeat(np.arange(n // 4), 4)
    y = 50 + rng.normal(0, 5, n)                                # carries nothing of X
    coef, b = ridge_path(X, y, [1.0, np.inf])
    assert np.all(coef[1] == 0) and b[1] == pytest.approx(y.mean()) and np.any(coef[0] != 0)
    fit = ridge_fit(X, y, g, [1e-2, 1.0, 1e2, np.inf], 5)
    assert fit["alpha"] == np.inf and np.all(ridge_predict(fit, rng.normal(size=(7, 60))) == pytest.approx(y.mean()))
    r2 = bs.estimate(bs.r2(y[:20], ridge_predict(fit, X[:20]), y.mean()), g[:20], 300, 0, 0.95)
    assert r2["value"] == pytest.approx(0, abs=1e-12) and r2["ci_low"] <= 0 <= r2["ci_high"]
    planted = X[:, 0] * 3 + rng.normal(0, 0.5, n)               # a carried label keeps a finite alpha
    assert np.isfinite(ridge_fit(X, planted, g, [1e-2, 1.0, 1e2, np.inf], 5)["alpha"])
