"""Paired comparisons: DeLong against R's pROC, Holm within families, studentized bootstrap
p-values, margins, reference choice for the questions, verdicts that agree with p_holm."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from benchmark.evaluate import weighted as wt
from benchmark.evaluate.compare import COMPARISON_COLUMNS, MARGINS, TEST_BOOTSTRAP, TEST_DELONG, compare_candidates
from benchmark.evaluate.paired_tests import (
    ALPHA, HIGHER_IS_BETTER, VERDICTS, delong_auc_variance, delong_roc_test, holm, noninferior, verdict, z_test,
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


def test_z_test_has_no_floor_and_its_interval_agrees_with_its_p_value():
    p, lo, hi, z = z_test(-0.011, 0.0018)  # a clear Brier difference (the case below)
    assert p < 1e-6 and lo == pytest.approx(-0.011 - 1.959964 * 0.0018) and hi < 0
    for diff, se in [(0.01, 0.005), (0.01, 0.0051), (-0.03, 0.1)]:
        p, lo, hi, _ = z_test(diff, se)
        assert (p < 0.05) == (lo > 0 or hi < 0)
    assert z_test(0.0, 0.0)[:3] == (1.0, 0.0, 0.0)
    assert np.isnan(z_test(0.01, np.nan)[0])


def test_verdict_names_a_side_exactly_when_holm_significant_and_reads_the_direction():
    assert verdict("auc", 0.03, 0.01, 0.01, 0.05, 0.02) == "candidate_better"
    assert verdict("brier", 0.03, 0.01, 0.01, 0.05, 0.02) == "reference_better"
    assert verdict("entropy_mean", -0.03, 0.001, -0.05, -0.01, 0.02) == "candidate_better"
    # a CI that excludes 0 is not enough without Holm significance
    assert verdict("log_loss", -0.03, 0.08, -0.05, -0.01, 0.1) == "equivalent"
    assert verdict("log_loss", -0.03, 0.08, -0.05, -0.01, 0.02) == "not_shown"
    assert verdict("auc", 0.0, 1.0, 0.0, 0.0, 0.02) == "equivalent"
    assert verdict("auc", 0.01, np.nan, np.nan, np.nan, 0.02) == "not_shown"
    assert "no_difference" not in VERDICTS


def test_noninferiority_looks_at_the_unfavourable_end_only():
    assert noninferior("auc", -0.015, 0.05, 0.02) and not noninferior("auc", -0.025, 0.05, 0.02)
    assert noninferior("brier", -0.5, 0.009, 0.01) and not noninferior("brier", -0.5, 0.011, 0.01)
    assert not noninferior("auc", np.nan, np.nan, 0.02)


def test_margins_are_stated_for_every_metric_and_scale_with_the_reference():
    ref = {"auc": 0.8, "ap": 0.5, "brier": 0.08, "log_loss": 0.3, "ece": 0.03, "entropy_mean": 0.25,
           "mutual_info_mean": 0.001}
    got = {m: MARGINS[m].value(m, ref) for m in HIGHER_IS_BETTER}
    assert got == pytest.approx({"auc": 0.02, "ap": 0.02, "brier": 0.008, "log_loss": 0.03, "ece": 0.01,
                                 "entropy_mean": 0.025, "mutual_info_mean": 0.025})
    assert MARGINS["ece"].value("ece", {"ece": 0.2}) == pytest.approx(0.02)


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
    assert auc["test"] == TEST_DELONG and auc["verdict"] == "candidate_better" and auc["p_value"] < 0.001
    assert auc["lo"] <= auc["diff"] <= auc["hi"] and auc["n_patients"] == 300
    assert set(cmp["test"]) == {TEST_DELONG, TEST_BOOTSTRAP}
    assert set(cmp["question"]) == {"Q3"}
    assert (cmp["p_holm"] >= cmp["p_value"]).all()
    brier = cmp[(cmp["metric"] == "brier") & (cmp["reference"] == "reg")].iloc[0]
    assert brier["diff"] < 0 and brier["verdict"] == "candidate_better"


def test_no_fusion_candidate_gives_an_empty_table_with_the_columns():
    pred = _fabricate({"img": ("cnn", "image", 1.0), "reg": ("xgb", "register", 1.0)}, n=60)
    lb, _ = build_leaderboard(pred, n_boot=10, seed=0)
    cmp = compare_candidates(pred, lb, n_boot=10, seed=0)
    assert cmp.empty and list(cmp.columns) == list(COMPARISON_COLUMNS)


def _board(spec):
    """A leaderboard with what the comparisons read: name -> (family, modality, inner_score[, status])."""
    return pd.DataFrame([{"candidate": k, "family": v[0], "modality": v[1], "inner_score": v[2],
                          "status": v[3] if len(v) > 3 else "ok"} for k, v in spec.items()])


def _rows(cmp, cand, ref, metric):
    r = cmp[(cmp["candidate"] == cand) & (cmp["reference"] == ref) & (cmp["metric"] == metric)]
    assert len(r) == 1, (cand, ref, metric)
    return r.iloc[0]


def test_clear_brier_difference_with_500_resamples_is_significant_after_holm():
    # "Brier difference -0.011 [-0.015, -0.008], Holm-adjusted p = 0.100" must not sit next to
    # candidate_better: a percentile-count p-value cannot go below 2 / 501, so Holm over the
    # table's rows would push every bootstrap row above 0.05.
    spec = {"fus": ("late_average", "fusion", 2.0), "img": ("timm_cnn", "image", 0.8),
            "reg": ("xgboost", "register", 0.8), "mlp": ("mlp", "register", 0.8)}
    pred = _fabricate({k: v for k, v in spec.items()}, n=300)
    board = _board({k: (v[0], v[1], 0.8) for k, v in spec.items()})
    cmp = compare_candidates(pred, board, n_boot=500, seed=0)
    assert len(cmp) >= 14
    row = _rows(cmp, "fus", "img", "brier")
    assert row["diff"] < 0 and row["hi"] < 0
    assert row["p_holm"] < ALPHA and row["verdict"] == "candidate_better"


def test_holm_is_applied_within_each_family_and_verdicts_agree_with_p_holm_on_a_generated_table():
    rng = np.random.default_rng(7)
    spec = {f"fus{i}": ("late_average", "fusion", s) for i, s in enumerate(rng.uniform(0.3, 2.0, 4))}
    spec.update({"img": ("timm_cnn", "image", 1.0), "reg": ("logreg", "register", 0.6),
                 "xgb": ("xgboost", "register", 0.9), "lgbm": ("lightgbm", "register", 1.2),
                 "mlp": ("mlp", "register", 0.9), "mlp2": ("mlp", "register", 0.9)})
    pred = _fabricate(spec, n=240, seed=3)
    board = _board({k: (v[0], v[1], float(rng.uniform(0.7, 0.9))) for k, v in spec.items()})
    cmp = compare_candidates(pred, board, n_boot=200, seed=1)
    assert list(cmp.columns) == list(COMPARISON_COLUMNS)
    assert set(cmp["holm_family"]) == {"primary", "secondary"}
    assert (cmp["holm_family"] == "primary").eq(cmp["metric"] == "auc").all()
    for _, fam in cmp.groupby("holm_family"):
        assert np.allclose(fam["p_holm"], holm(fam["p_value"]), equal_nan=True)
    assert set(cmp["verdict"]) <= set(VERDICTS) and cmp["verdict"].isin(["candidate_better", "equivalent"]).any()
    sided = cmp["verdict"].isin(["candidate_better", "reference_better"])
    assert (sided == (cmp["p_holm"] < ALPHA)).all()
    up = cmp["metric"].map(HIGHER_IS_BETTER)
    better = cmp["verdict"] == "candidate_better"
    assert ((cmp["diff"] > 0) == up)[better].all() and ((cmp["diff"] > 0) != up)[cmp["verdict"] == "reference_better"].all()
    eq = cmp[cmp["verdict"] == "equivalent"]
    assert ((eq["lo"] > -eq["margin"]) & (eq["hi"] < eq["margin"]) & (eq["p_holm"] >= ALPHA)).all()
    # the unadjusted 95 % interval and the unadjusted p-value tell the same story
    assert ((cmp["p_value"] < ALPHA) == ((cmp["lo"] > 0) | (cmp["hi"] < 0))).all()
    assert (cmp["margin"] > 0).all() and cmp["noninferior"].dtype == bool
    assert ((cmp["lo"] <= cmp["diff"]) & (cmp["diff"] <= cmp["hi"])).all()


def test_questions_reference_roles_and_best_fusion_chosen_by_inner_score():
    spec = {"fus_a": ("late_average", "fusion", 2.0, 0.90), "fus_b": ("gated", "fusion", 1.0, 0.93),
            "fus_c": ("film", "fusion", 1.5, 0.91), "img": ("timm_cnn", "image", 1.0, 0.80),
            "logreg": ("logreg", "register", 0.5, 0.95), "xgb": ("xgboost", "register", 1.0, 0.84),
            "lgbm": ("lightgbm", "register", 0.5, 0.86), "mlp1": ("mlp", "register", 0.7, 0.83),
            "emb": ("embed_xgboost", "fusion", 0.9, 0.10)}
    pred = _fabricate({k: v[:3] for k, v in spec.items()}, n=120)
    board = _board({**{k: (v[0], v[1], v[3]) for k, v in spec.items()},
                    "fus_broken": ("late_average", "fusion", 0.99, "failed"),
                    "xgb_broken": ("xgboost", "register", 0.99, "failed")})
    cmp = compare_candidates(pred, board, n_boot=30, seed=0)
    pairs = cmp.drop_duplicates(["candidate", "reference_role"])
    got = set(zip(pairs["question"], pairs["candidate"], pairs["reference_role"], pairs["reference"]))
    q3 = {("Q3", c, r, ref) for c in ("fus_a", "fus_b", "fus_c", "emb")
          for r, ref in (("best_image", "img"), ("best_register", "logreg"), ("best_fusion", "fus_b"))
          if c != ref}
    assert got == q3 | {("Q2", "mlp1", "best_tree", "lgbm")}
    # every pair has every metric, with a margin and a non-inferiority flag
    assert (cmp.groupby(["candidate", "reference"])["metric"].apply(set) == set(HIGHER_IS_BETTER)).all()
    assert cmp["margin"].notna().all() and cmp["noninferior"].isin([True, False]).all()


def test_a_network_warm_started_from_a_named_image_candidate_is_compared_with_it():
    """warm_sources: gated started from img2 (not the best image, img): one more Q3 pair, role
    warm_source; a source that is the best_image reference already, or failed, adds none."""
    spec = {"gated": ("gated", "fusion", 1.5), "film": ("film", "fusion", 1.0), "img": ("timm_cnn", "image", 1.0),
            "img2": ("timm_cnn", "image", 0.8), "lgbm": ("lightgbm", "register", 0.5)}
    pred = _fabricate(spec, n=120)
    board = _board({"gated": ("gated", "fusion", 0.9), "film": ("film", "fusion", 0.8),
                    "img": ("timm_cnn", "image", 0.85), "img2": ("timm_cnn", "image", 0.80),
                    "lgbm": ("lightgbm", "register", 0.7), "broken": ("timm_cnn", "image", 0.99, "failed")})
    cmp = compare_candidates(pred, board, n_boot=30, seed=0,
                             warm_sources={"gated": "img2", "film": "img", "late": "broken"})
    warm = cmp[cmp["reference_role"].eq("warm_source")]
    assert set(zip(warm["question"], warm["candidate"], warm["reference"])) == {("Q3", "gated", "img2")}
    assert set(warm["metric"]) == set(HIGHER_IS_BETTER)
    plain = compare_candidates(pred, board, n_boot=30, seed=0)
    assert len(cmp) == len(plain) + len(warm)


def test_uncertainty_rows_test_the_mean_by_bootstrap_not_a_per_patient_median_shift():
    # per-patient entropy differences: +0.01 for 80 % of patients, -0.04 for 20 %: the mean
    # entropy is the same, a signed-rank test over patients would call it a huge shift
    rng = np.random.default_rng(0)
    n = 400
    y = (np.arange(n) % 4 == 0).astype(int)
    base = rng.uniform(0.2, 0.6, n)
    d = np.where(rng.permutation(np.arange(n)) < 320, 0.01, -0.04)
    prob = np.clip(0.3 + 0.3 * y + rng.normal(0, 0.1, n), 0.01, 0.99)
    parts = []
    for name, modality, ent in (("fus", "fusion", base + d), ("img", "image", base)):
        parts.append(pd.DataFrame({"candidate": name, "family": name, "modality": modality, "repeat": 0,
                                   "outer_fold": 0, "set": "test", "patient": [f"P{i:05d}" for i in range(n)],
                                   "y": y, "prob": prob, "entropy": ent, "expected_entropy": ent,
                                   "mutual_info": 0.0, "member_std": 0.0}))
    pred = pd.concat(parts, ignore_index=True)
    cmp = compare_candidates(pred, _board({"fus": ("x", "fusion", 0.9), "img": ("y", "image", 0.8)}),
                             n_boot=300, seed=0)
    row = _rows(cmp, "fus", "img", "entropy_mean")
    assert row["test"] == TEST_BOOTSTRAP and "fitted models fixed" in row["test"]
    assert row["diff"] == pytest.approx(0.0, abs=1e-12) and row["p_value"] > 0.5
    assert row["verdict"] == "equivalent"  # the CI lies within 10 % of the mean entropy
    mi = _rows(cmp, "fus", "img", "mutual_info_mean")
    assert mi["p_value"] == 1.0 and mi["verdict"] == "equivalent" and mi["noninferior"]
