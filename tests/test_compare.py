"""Paired comparisons: DeLong against R's pROC, Holm, reference choice, verdicts."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from benchmark.evaluate import weighted as wt
from benchmark.evaluate.compare import (
    COMPARISON_COLUMNS, bootstrap_p, compare_candidates, delong_auc_variance, delong_roc_test, holm, verdict,
)
from benchmark.evaluate.leaderboard import build_leaderboard

# 60 patients, scores rounded to 2 decimals (ties included). Reference values from R 4.2.2,
# pROC 1.18.0 (Debian r-cran-proc):
#   r1 <- roc(y, s1, levels=c(0,1), direction="<"); r2 <- roc(y, s2, levels=c(0,1), direction="<")
#   roc.test(r1, r2, method="delong", paired=TRUE); var(r1, method="delong")
Y = [1] * 20 + [0] * 40
S1 = [1.0, 1.0, 1.0, 0.61, 0.52, 0.81, 0.97, 0.9, 1.0, 0.95, 0.93, 0.65, 0.58, 1.0, 0.81, 0.96, 0.52, 0.71,
      0.54, 0.64, 0.48, 0.0, 0.19, 0.33, 0.17, 0.25, 0.26, 0.38, 0.21, 0.35, 0.31, 0.38, 0.34, 0.63, 0.17, 0.54,
      0.22, 0.11, 0.54, 0.21, 0.22, 0.02, 0.0, 0.43, 0.07, 0.46, 0.67, 0.28, 0.07, 0.38, 0.45, 0.25, 0.3, 0.57,
      0.55, 0.44, 0.13, 0.29, 0.42, 0.26]
S2 = [0.53, 0.5, 0.52, 0.52, 0.56, 0.88, 0.49, 0.83, 0.73, 0.68, 0.48, 0.56, 1.0, 0.67, 0.76, 0.78, 0.86, 0.6,
      0.53, 0.64, 0.3, 0.51, 0.39, 0.4, 0.38, 0.6, 0.24, 0.25, 0.53, 0.33, 0.42, 0.2, 0.35, 0.44, 0.08, 0.21,
      0.43, 0.8, 0.44, 0.34, 0.18, 0.43, 0.0, 0.34, 0.28, 0.25, 0.81, 0.0, 0.35, 0.36, 0.44, 0.03, 0.26, 0.05,
      0.32, 0.39, 0.38, 0.31, 0.39, 0.39]
PROC = {"auc1": 0.9712500000, "auc2": 0.9368750000, "z": 1.0531643703, "p": 0.2922656650,
        "var1": 0.0002787576, "var2": 0.0010210031}


def test_delong_matches_proc_to_four_decimals():
    auc1, auc2, diff, se, z, p = delong_roc_test(Y, S1, S2)
    assert auc1 == pytest.approx(PROC["auc1"], abs=1e-4)
    assert auc2 == pytest.approx(PROC["auc2"], abs=1e-4)
    assert z == pytest.approx(PROC["z"], abs=1e-4)
    assert p == pytest.approx(PROC["p"], abs=1e-4)
    assert diff == pytest.approx(auc1 - auc2)
    assert delong_auc_variance(Y, S1)[1] == pytest.approx(PROC["var1"], abs=1e-8)
    assert delong_auc_variance(Y, S2)[1] == pytest.approx(PROC["var2"], abs=1e-8)


def test_delong_variance_agrees_with_a_large_stratified_bootstrap():
    rng = np.random.default_rng(0)
    y = (np.arange(400) < 80).astype(float)
    p = expit(1.2 * y + rng.normal(size=400))
    auc, var = delong_auc_variance(y, p)
    boot = wt.w_auc(y, p, wt.stratified_counts(y, 4000, rng))
    assert auc == pytest.approx(boot.mean(), abs=0.005)
    assert var == pytest.approx(boot.var(), rel=0.15)


def test_delong_of_identical_scores_has_no_test_statistic():
    *_, se, z, p = delong_roc_test(Y, S1, S1)
    assert se == 0.0 and np.isnan(z) and np.isnan(p)


def test_holm_hand_computed():
    assert holm([0.01, 0.04, 0.03, np.nan]).tolist()[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(holm([0.01, np.nan])[1])


def test_bootstrap_p_is_small_when_all_differences_share_a_sign():
    assert bootstrap_p(np.full(999, 0.1)) == pytest.approx(2 / 1000)
    assert bootstrap_p(np.r_[-np.ones(500), np.ones(500)]) == pytest.approx(1.0)


def test_verdict_reads_the_metric_direction():
    assert verdict("auc", 0.01, 0.05) == "candidate_better"
    assert verdict("brier", 0.01, 0.05) == "reference_better"
    assert verdict("entropy_mean", -0.05, -0.01) == "candidate_better"
    assert verdict("log_loss", -0.05, 0.01) == "no_difference"


def _fabricate(cands, n=300, prev=0.25, folds=3, seed=0):
    """Predictions table: candidate -> (family, modality, separation of the classes)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prev).astype(int)
    patients = np.array([f"p{i:04d}" for i in range(n)])
    fold = rng.permutation(np.arange(n) % folds)
    parts = []
    for name, (family, modality, strength) in cands.items():
        mem = expit(strength * (2 * y - 1)[:, None] + rng.normal(size=(n, 1)) + rng.normal(0, 0.3, (n, 4)))
        parts.append(pd.DataFrame({"candidate": name, "family": family, "modality": modality, "repeat": 0,
                                   "outer_fold": fold, "set": "test", "inner_fold": -1, "patient": patients,
                                   "y": y, "prob": mem.mean(1), "prob_raw": mem.mean(1), "members": list(mem)}))
    return pd.concat(parts, ignore_index=True)


def test_fusion_is_compared_with_references_chosen_by_inner_score_not_test_metrics():
    pred = _fabricate({"fus": ("late", "fusion", 2.0), "img_a": ("cnn", "image", 0.3),
                       "img_b": ("cnn", "image", 1.5), "reg": ("xgb", "register", 0.5)})
    # img_a is worse on the outer test but has the better inner score: it must be the reference
    studies = pd.DataFrame({"candidate": ["fus", "img_a", "img_b", "reg"], "repeat": 0, "outer_fold": 0,
                            "best_value": [0.9, 0.8, 0.7, 0.75], "n_trials": 3, "n_failed": 0,
                            "wall_s": 1.0, "status": "ok", "info": ""})
    lb, _ = build_leaderboard(pred, studies=studies, n_boot=50, seed=0)
    cmp = compare_candidates(pred, lb, n_boot=200, seed=0)
    assert list(cmp.columns) == list(COMPARISON_COLUMNS)
    assert set(cmp["reference"]) == {"img_a", "reg"}
    assert dict(zip(cmp["reference_role"], cmp["reference"])) == {"best_image": "img_a", "best_register": "reg"}
    auc = cmp[(cmp["metric"] == "auc") & (cmp["reference"] == "reg")].iloc[0]
    assert auc["test"] == "delong" and auc["verdict"] == "candidate_better" and auc["p_value"] < 0.001
    assert auc["lo"] <= auc["diff"] <= auc["hi"] and auc["n_patients"] == 300
    assert set(cmp["test"]) == {"delong", "bootstrap", "wilcoxon"}
    assert (cmp["p_holm"] >= cmp["p_value"]).all()
    brier = cmp[(cmp["metric"] == "brier") & (cmp["reference"] == "reg")].iloc[0]
    assert brier["diff"] < 0 and brier["verdict"] == "candidate_better"


def test_no_fusion_candidate_gives_an_empty_table_with_the_columns():
    pred = _fabricate({"img": ("cnn", "image", 1.0), "reg": ("xgb", "register", 1.0)}, n=60)
    lb, _ = build_leaderboard(pred, n_boot=10, seed=0)
    cmp = compare_candidates(pred, lb, n_boot=10, seed=0)
    assert cmp.empty and list(cmp.columns) == list(COMPARISON_COLUMNS)
