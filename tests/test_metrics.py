"""Metrics: hand-computed cases for our own metrics (ECE, calibration intercept/slope) and
agreement of the vectorised bootstrap layer with scikit-learn on expanded resamples."""

import numpy as np
import pytest
from scipy.optimize import brentq, minimize
from scipy.special import expit, logit

from benchmark.evaluate import metrics as M
from benchmark.evaluate import weighted as wt


def test_ece_equal_mass_bins_hand_computed():
    # sorted by p, 3 bins of 2: (0.1, 0.2 | y 0, 0), (0.3, 0.6 | y 1, 1), (0.7, 0.9 | y 0, 1)
    y = [0, 1, 0, 1, 0, 1]
    p = [0.1, 0.3, 0.2, 0.6, 0.7, 0.9]
    expected = (abs(0 - 0.3) + abs(2 - 0.9) + abs(1 - 1.6)) / 6
    assert M.ece(y, p, n_bins=3) == pytest.approx(expected)
    assert expected == pytest.approx(1 / 3)


def test_ece_bins_follow_array_split_when_n_is_not_a_multiple():
    # 5 patients, 2 bins: sizes 3 and 2
    y = [1, 0, 0, 1, 1]
    p = [0.1, 0.2, 0.3, 0.4, 0.5]
    expected = (abs(1 - 0.6) + abs(2 - 0.9)) / 5
    assert M.ece(y, p, n_bins=2) == pytest.approx(expected)


def test_reliability_curve_uses_the_same_equal_mass_bins():
    y = [0, 1, 0, 1, 0, 1]
    p = [0.1, 0.3, 0.2, 0.6, 0.7, 0.9]
    rc = M.reliability_curve(y, p, n_bins=3)
    assert rc["n"].tolist() == [2, 2, 2]
    assert rc["fraction_positive"].tolist() == pytest.approx([0.0, 1.0, 0.5])
    assert rc["mean_predicted"].tolist() == pytest.approx([0.15, 0.45, 0.8])


def test_calibration_intercept_is_logit_difference_for_a_constant_prediction():
    y = np.array([1, 1, 0, 0, 1, 0, 0, 0, 1, 1])  # observed rate 0.5
    p = np.full(10, 0.2)
    a, _ = M.calibration_intercept_slope(y, p)
    assert a == pytest.approx(logit(0.5) - logit(0.2), abs=1e-8)


def test_calibration_slope_two_groups_is_saturated_logit_ratio():
    # two predicted values 0.2 / 0.8 with observed rates 0.1 / 0.7: the two-parameter
    # model is saturated, so the slope is the ratio of logit differences
    p = np.r_[np.full(10, 0.2), np.full(10, 0.8)]
    y = np.r_[[1] + [0] * 9, [1] * 7 + [0] * 3]
    a, b = M.calibration_intercept_slope(y, p)
    assert b == pytest.approx((logit(0.7) - logit(0.1)) / (logit(0.8) - logit(0.2)), abs=1e-8)
    # intercept with logit(p) as offset solves sum(y) = sum(expit(a + logit(p)))
    root = brentq(lambda t: y.sum() - expit(t + logit(p)).sum(), -10, 10)
    assert a == pytest.approx(root, abs=1e-8)


def test_calibration_matches_direct_likelihood_maximisation():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.02, 0.98, 400)
    y = (rng.random(400) < expit(0.3 + 0.7 * logit(p))).astype(float)
    x = logit(p)

    def nll(c):
        z = c[0] + c[1] * x
        return np.sum(np.logaddexp(0, z) - y * z)

    ref = minimize(nll, [0.0, 1.0], method="BFGS", options={"gtol": 1e-10}).x
    _, b = M.calibration_intercept_slope(y, p)
    assert b == pytest.approx(ref[1], abs=1e-5)


def test_perfectly_calibrated_large_sample_has_slope_one_intercept_zero():
    rng = np.random.default_rng(0)
    p = rng.beta(2, 5, 20000)
    y = (rng.random(p.size) < p).astype(int)
    a, b = M.calibration_intercept_slope(y, p)
    assert abs(a) < 0.05 and abs(b - 1) < 0.05
    # an overconfident model (logits doubled) has slope about 1/2
    _, b2 = M.calibration_intercept_slope(y, expit(2 * logit(p)))
    assert b2 == pytest.approx(0.5, abs=0.05)


def test_calibration_is_nan_under_perfect_separation():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    _, b = M.calibration_intercept_slope(y, p)
    assert np.isnan(b)


def test_sens_at_spec_hand_computed():
    y = np.array([0] * 10 + [1] * 4)
    p = np.r_[np.linspace(0.0, 0.9, 10), [0.95, 0.85, 0.5, 0.05]]
    # negatives 0.0, 0.1, ..., 0.9. spec >= 0.9 allows one false positive: threshold 0.85
    # predicts 0.95, 0.9 (negative), 0.85 positive -> sensitivity 2/4; spec 1.0 allows none:
    # threshold 0.95 -> sensitivity 1/4
    assert M.sens_at_spec(y, p, 0.9) == pytest.approx(0.5)
    assert M.sens_at_spec(y, p, 1.0) == pytest.approx(0.25)


def test_youden_threshold_separates_a_clean_split():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.35, 0.8, 0.9])
    assert M.youden_threshold(y, p) == pytest.approx(0.35)


def test_net_benefit_hand_computed():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.3, 0.6, 0.1, 0.2])
    nb = M.net_benefit(y, p, [0.25, 0.5])
    # t=0.25: positives 0.9, 0.3, 0.6 -> tp 2, fp 1: 2/5 - 1/5 * 1/3
    # t=0.5: 0.9, 0.6 -> tp 1, fp 1: 1/5 - 1/5 * 1
    assert nb["net_benefit"].tolist() == pytest.approx([0.4 - 0.2 / 3, 0.0])
    assert nb["treat_all"].tolist() == pytest.approx([0.4 - 0.6 / 3, 0.4 - 0.6])


def test_binary_metrics_single_class_gives_nan_auc_not_an_exception():
    out = M.binary_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert np.isnan(out["auc"]) and out["accuracy"] == 1.0


def test_stratified_counts_keep_class_sizes():
    y = np.array([1] * 7 + [0] * 30)
    W = wt.stratified_counts(y, 50, np.random.default_rng(0))
    assert W.shape == (50, 37)
    assert (W[:, y == 1].sum(1) == 7).all() and (W[:, y == 0].sum(1) == 30).all()


def test_weighted_metrics_equal_sklearn_on_expanded_resamples():
    rng = np.random.default_rng(1)
    n = 300
    y = (rng.random(n) < 0.2).astype(float)
    p = np.round(np.clip(rng.beta(2, 5, n) + 0.3 * y, 0, 1), 2)  # rounded: ties on purpose
    W = wt.stratified_counts(y, 20, rng)
    rank = wt.w_rank_metrics(y, p, W)
    a, b = wt.w_calibration(y, p, W)
    cm = wt.confusion_metrics(*wt.w_confusion(y, p >= 0.5, W))
    for r in range(W.shape[0]):
        idx = np.repeat(np.arange(n), W[r])
        ref = M.binary_metrics(y[idx], p[idx])
        got = {**{k: v[r] for k, v in rank.items() if k != "ece"}, **{k: v[r] for k, v in cm.items()},
               "brier": wt.w_brier(y, p, W[r:r + 1])[0], "log_loss": wt.w_log_loss(y, p, W[r:r + 1])[0],
               "cal_intercept": a[r], "cal_slope": b[r]}
        for k, v in got.items():
            assert v == pytest.approx(ref[k], abs=1e-6), k


def test_weighted_ece_and_aurc_equal_plain_versions_on_expanded_resamples():
    rng = np.random.default_rng(2)
    n = 200
    y = (rng.random(n) < 0.3).astype(float)
    p, u = rng.random(n), rng.random(n)  # continuous: no ties in the sort
    W = wt.stratified_counts(y, 10, rng)
    err = ((p >= 0.5) != y).astype(float)
    ece_w = wt.w_ece(y, p, W, n_bins=7)
    sel = wt.w_selective_metrics(err, u, W)
    for r in range(W.shape[0]):
        idx = np.repeat(np.arange(n), W[r])
        assert ece_w[r] == pytest.approx(M.ece(y[idx], p[idx], n_bins=7), abs=1e-12)
        curve = M.risk_coverage_curve(y[idx], p[idx], u[idx])
        assert sel["aurc"][r] == pytest.approx(curve["risk"].mean(), abs=1e-12)
        from sklearn.metrics import roc_auc_score
        assert sel["error_auroc"][r] == pytest.approx(roc_auc_score(err[idx], u[idx]), abs=1e-12)


def test_shuffled_labels_auc_bootstrap_ci_covers_one_half():
    rng = np.random.default_rng(5)
    n = 600
    p = rng.random(n)
    y = rng.permutation((np.arange(n) < 60).astype(float))
    W = wt.stratified_counts(y, 1000, rng)
    auc = wt.w_auc(y, p, W)
    lo, hi = np.percentile(auc, [2.5, 97.5])
    assert lo < 0.5 < hi


def test_uninformative_uncertainty_has_error_auroc_near_half_and_informative_one_high():
    rng = np.random.default_rng(6)
    n = 4000
    p = rng.random(n)
    y = (rng.random(n) < p).astype(float)
    err = ((p >= 0.5) != y).astype(float)
    ones = np.ones((1, n))
    random_u = wt.w_selective_metrics(err, rng.random(n), ones)["error_auroc"][0]
    entropy_u = wt.w_selective_metrics(err, -np.abs(p - 0.5), ones)["error_auroc"][0]
    assert abs(random_u - 0.5) < 0.05 and entropy_u > 0.65


def test_threshold_at_spec_hand_computed():
    y = np.array([0] * 10 + [1] * 4)
    p = np.r_[np.linspace(0.0, 0.9, 10), [0.95, 0.85, 0.5, 0.05]]
    # spec >= 0.9 allows one false positive (0.9): the lowest such threshold is 0.85 (sens 2/4)
    assert M.threshold_at_spec(y, p, 0.9) == pytest.approx(0.85)
    assert M.threshold_at_spec(y, p, 1.0) == pytest.approx(0.95)
    # applied to the same patients it reaches the test-optimal sensitivity
    for s in (0.5, 0.8, 0.9, 1.0):
        thr = M.threshold_at_spec(y, p, s)
        assert ((p >= thr) & (y == 1)).sum() / 4 == pytest.approx(M.sens_at_spec(y, p, s))
        assert ((p < thr) & (y == 0)).sum() / 10 >= s
    # ties at the top: no observed score reaches specificity 1, nobody is called positive
    assert M.threshold_at_spec([0, 1, 0], [0.9, 0.9, 0.1], 1.0) == np.inf
    assert np.isnan(M.threshold_at_spec([0, 0], [0.1, 0.2], 0.9))
