"""Leaderboard and fold metrics built from a fabricated predictions table."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from benchmark.errors import UserError
from benchmark.evaluate import conformal as C
from benchmark.evaluate import metrics as M
from benchmark.evaluate.leaderboard import (
    FOLD_METRIC_COLUMNS, LEADERBOARD_COLUMNS, METRICS, build_leaderboard,
)

CANDS = {"reg": ("xgboost", "register", 0.8), "img": ("timm_cnn", "image", 1.2), "fus": ("late", "fusion", 1.5)}


def fabricate(cands=CANDS, n=240, prev=0.25, folds=3, repeats=1, seed=0, oracle=True):
    """test rows (5 members) and oof rows for every candidate x repeat x outer fold."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prev).astype(int)
    patients = np.array([f"p{i:04d}" for i in range(n)])
    parts = []

    def frame(name, family, modality, r, fold, set_, pats, yy, members):
        prob = np.array([np.mean(m) for m in members])
        return pd.DataFrame({"candidate": name, "family": family, "modality": modality, "repeat": r,
                             "outer_fold": fold, "set": set_, "inner_fold": -1, "patient": pats, "y": yy,
                             "prob": prob, "prob_raw": prob, "members": list(members)})

    for r in range(repeats):
        fold = rng.permutation(np.arange(n) % folds)
        for name, (family, modality, s) in cands.items():
            mem = expit(s * (2 * y - 1)[:, None] + rng.normal(size=(n, 1)) + rng.normal(0, 0.4, (n, 5)))
            parts.append(frame(name, family, modality, r, fold, "test", patients, y, mem))
            for f in range(folds):
                tr = np.flatnonzero(fold != f)
                po = expit(s * (2 * y[tr] - 1) + rng.normal(size=tr.size))
                parts.append(frame(name, family, modality, r, f, "oof", patients[tr], y[tr], po[:, None]))
        if oracle:
            for name in ("oracle_register", "oracle_image", "oracle_both"):
                po = expit(2.5 * (2 * y - 1) + rng.normal(size=n))
                parts.append(frame(name, "oracle", "oracle", r, fold, "test", patients, y, po[:, None]))
    return pd.concat(parts, ignore_index=True)


STUDIES = pd.DataFrame({
    "candidate": ["reg", "reg", "img", "fus", "broken"], "repeat": 0, "outer_fold": [0, 1, 0, 0, 0],
    "best_value": [0.80, 0.84, 0.86, 0.90, np.nan], "n_trials": [5, 5, 5, 5, 5], "n_failed": [0, 1, 0, 0, 5],
    "wall_s": [1.0, 2.0, 3.0, 4.0, 0.5], "status": ["ok", "ok", "ok", "ok", "failed"],
    "info": ["", "", "", "", "CUDA out of memory in every trial"]})


@pytest.fixture(scope="module")
def built():
    pred = fabricate()
    lb, folds = build_leaderboard(pred, studies=STUDIES, n_boot=200, seed=0)
    return pred, lb.set_index("candidate", drop=False), folds


def test_leaderboard_has_exactly_the_documented_columns(built):
    _, lb, folds = built
    assert list(lb.columns) == list(LEADERBOARD_COLUMNS)
    assert list(folds.columns) == list(FOLD_METRIC_COLUMNS)
    assert set(folds["metric"]) == set(METRICS)
    assert len(folds) == 6 * 3 * len(METRICS)  # 6 candidates with predictions x 3 folds


def test_failed_candidate_gets_a_row_with_status_and_reason_and_empty_metrics(built):
    _, lb, _ = built
    row = lb.loc["broken"]
    assert row["status"] == "failed" and row["info"] == "CUDA out of memory in every trial"
    assert row[[m for m in METRICS]].isna().all() and pd.isna(row["auc_lo"])
    assert row["n_failed_trials"] == 5


def test_study_summary_fills_inner_score_time_and_trials(built):
    _, lb, _ = built
    row = lb.loc["reg"]
    assert row["inner_score"] == pytest.approx(0.82)
    assert row["wall_s"] == pytest.approx(3.0) and row["n_trials"] == 10 and row["n_failed_trials"] == 1
    assert row["status"] == "ok" and row["n_patients"] == 240


def test_point_estimates_equal_scikit_learn_on_pooled_test_rows(built):
    pred, lb, _ = built
    test = pred[(pred["candidate"] == "fus") & (pred["set"] == "test")]
    ref = M.binary_metrics(test["y"], test["prob"])
    for k, v in ref.items():
        assert lb.loc["fus", k] == pytest.approx(v, abs=1e-9), k


def test_bootstrap_ci_contains_the_point_estimate(built):
    _, lb, _ = built
    for cand in ("reg", "img", "fus"):
        for m in ("auc", "ap", "brier", "log_loss", "accuracy", "entropy_mean"):
            assert lb.loc[cand, f"{m}_lo"] <= lb.loc[cand, m] <= lb.loc[cand, f"{m}_hi"], (cand, m)


def test_threshold_and_conformal_sets_come_from_each_folds_oof_rows(built):
    pred, lb, _ = built
    tp = fn = 0
    cover_pos = n_pos = 0
    for f in range(3):
        oof = pred[(pred["candidate"] == "img") & (pred["set"] == "oof") & (pred["outer_fold"] == f)]
        test = pred[(pred["candidate"] == "img") & (pred["set"] == "test") & (pred["outer_fold"] == f)]
        thr = M.youden_threshold(oof["y"], oof["prob"])
        pos = test[test["y"] == 1]
        tp += int((pos["prob"] >= thr).sum())
        fn += int((pos["prob"] < thr).sum())
        sets = C.predict_sets(pos["prob"], C.fit_thresholds(oof["y"], oof["prob"], 0.10))
        cover_pos += int(sets[:, 1].sum())
        n_pos += len(pos)
    assert lb.loc["img", "sensitivity_thr"] == pytest.approx(tp / (tp + fn))
    assert lb.loc["img", "conformal90_coverage_pos"] == pytest.approx(cover_pos / n_pos)


def test_sensitivity_at_specificity_with_a_threshold_from_each_folds_oof_rows(built):
    pred, lb, _ = built
    for cand in ("reg", "fus"):
        for target in (90, 95):
            tp = fn = tn = fp = 0
            for f in range(3):
                rows = pred[(pred["candidate"] == cand) & (pred["outer_fold"] == f)]
                oof, test = rows[rows["set"] == "oof"], rows[rows["set"] == "test"]
                thr = M.threshold_at_spec(oof["y"], oof["prob"], target / 100)
                pos, y = test["prob"] >= thr, test["y"] == 1
                tp += int((pos & y).sum()); fn += int((~pos & y).sum())
                tn += int((~pos & ~y).sum()); fp += int((pos & ~y).sum())
            row = lb.loc[cand]
            assert row[f"sens_at_spec{target}_oof"] == pytest.approx(tp / (tp + fn)), (cand, target)
            assert row[f"spec_at_spec{target}_oof"] == pytest.approx(tn / (tn + fp)), (cand, target)
            assert row[f"sens_at_spec{target}_oof_lo"] <= row[f"sens_at_spec{target}_oof"] \
                <= row[f"sens_at_spec{target}_oof_hi"]
    assert np.isnan(lb.loc["oracle_both", "sens_at_spec90_oof"]) and np.isnan(lb.loc["oracle_both", "spec_at_spec95_oof"])
    assert np.isfinite(lb.loc["oracle_both", "sens_at_spec90"])  # the test-optimal one needs no oof rows


def test_oracle_rows_are_ceilings_and_define_the_auc_gap(built):
    _, lb, _ = built
    assert lb.loc["oracle_both", "is_ceiling"] and not lb.loc["fus", "is_ceiling"]
    assert np.isnan(lb.loc["oracle_both", "sensitivity_thr"])  # no oof rows for oracles
    assert lb.loc["fus", "auc_gap"] == pytest.approx(lb.loc["oracle_both", "auc"] - lb.loc["fus", "auc"])
    assert lb.loc["reg", "auc_gap"] == pytest.approx(lb.loc["oracle_register", "auc"] - lb.loc["reg", "auc"])
    assert np.isnan(lb.loc["oracle_both", "auc_gap"])


def test_no_patient_key_appears_in_the_outputs(built):
    pred, lb, folds = built
    text = lb.to_csv() + folds.to_csv()
    assert not any(p in text for p in pred["patient"].unique()[:50])


def test_repeats_are_averaged():
    pred = fabricate({"fus": ("late", "fusion", 1.0)}, n=120, repeats=2, oracle=False)
    lb, folds = build_leaderboard(pred, n_boot=50, seed=1)
    aucs = [M.binary_metrics(g["y"], g["prob"])["auc"]
            for _, g in pred[pred["set"] == "test"].groupby("repeat")]
    assert lb.loc[0, "auc"] == pytest.approx(np.mean(aucs))
    assert lb.loc[0, "auc_lo"] <= lb.loc[0, "auc"] <= lb.loc[0, "auc_hi"]
    assert sorted(folds["repeat"].unique()) == [0, 1]


def test_missing_outer_fold_makes_a_candidate_partial():
    pred = fabricate({"a": ("late", "fusion", 1.0), "b": ("late", "fusion", 1.0)}, n=90, oracle=False)
    pred = pred[~((pred["candidate"] == "b") & (pred["outer_fold"] == 2))]
    lb, _ = build_leaderboard(pred, n_boot=20, seed=0)
    row = lb.set_index("candidate").loc["b"]
    assert row["status"] == "partial" and "1 of 3" in row["info"] and row["n_patients"] == 60


def test_shuffled_labels_give_an_auc_ci_that_covers_one_half():
    pred = fabricate({"noise": ("late", "fusion", 0.0)}, n=300, oracle=False, seed=4)
    lb, _ = build_leaderboard(pred, n_boot=300, seed=0)
    assert lb.loc[0, "auc_lo"] < 0.5 < lb.loc[0, "auc_hi"]


def test_bad_predictions_table_is_a_user_error():
    pred = fabricate({"a": ("late", "fusion", 1.0)}, n=30, oracle=False)
    with pytest.raises(UserError, match="'prob'"):
        build_leaderboard(pred.drop(columns="prob"), n_boot=0, seed=0)
    bad = pred.copy()
    bad.loc[bad.index[0], "y"] = 2
    with pytest.raises(UserError, match="column 'y'"):
        build_leaderboard(bad, n_boot=0, seed=0)
