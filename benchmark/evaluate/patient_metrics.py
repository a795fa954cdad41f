"""Per-patient arrays of one candidate x repeat, and every leaderboard metric on them.

``PatientTable`` holds one candidate's outer-test patients of one repeat (from its 'test'
rows, with the out-of-fold thresholds and conformal sets of its 'oof' rows);
``weighted_metrics(t, W)`` computes the metrics of ``METRICS`` for each row of a count
matrix ``W`` (bootstrap resamples; ``ones((1, n))`` for the plain estimate). What each metric
means: ``leaderboard``'s docstring.

    tables = candidate_tables(cpred)                  # repeat -> PatientTable
    values = weighted_metrics(tables[0], np.ones((1, tables[0].y.size)))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmark.errors import UserError
from benchmark.evaluate import conformal
from benchmark.evaluate import weighted as wt
from benchmark.evaluate.metrics import threshold_at_spec, youden_threshold
from benchmark.evaluate.uncertainty import UNCERTAINTY_COLUMNS

METRICS: tuple[str, ...] = (
    "auc", "ap", "accuracy", "balanced_accuracy", "sensitivity", "specificity",
    "sensitivity_thr", "specificity_thr", "mcc", "brier", "log_loss", "ece",
    "cal_intercept", "cal_slope", "sens_at_spec90", "sens_at_spec95",
    "sens_at_spec90_oof", "spec_at_spec90_oof", "sens_at_spec95_oof", "spec_at_spec95_oof",
    "entropy_mean", "mutual_info_mean", "member_std_mean", "aurc", "error_auroc",
    "conformal90_coverage_pos", "conformal90_coverage_neg", "conformal90_singleton",
    "conformal95_coverage_pos", "conformal95_coverage_neg", "conformal95_singleton",
)
CONFORMAL_LEVELS = {90: 0.10, 95: 0.05}
SPEC_TARGETS = {90: 0.90, 95: 0.95}  # sens_at_spec<k>_oof: target specificity of the OOF threshold


@dataclass
class PatientTable:
    """Per-patient arrays of one candidate x repeat (test rows), ready for ``weighted_metrics``."""

    patient: np.ndarray
    y: np.ndarray
    prob: np.ndarray
    hard_thr: np.ndarray        # 0/1 at the fold's Youden threshold, NaN without 'oof' rows
    entropy: np.ndarray
    mutual_info: np.ndarray
    member_std: np.ndarray
    uncertainty: np.ndarray
    sets: dict[int, np.ndarray]  # level -> (n, 2) float 0/1, NaN without 'oof' rows
    # target -> 0/1 at the fold's OOF threshold for that specificity, NaN without 'oof' rows
    hard_spec: dict[int, np.ndarray] = field(default_factory=dict)
    # the score AUC, AP and test-optimal sensitivity rank by (``prob_rank``); None: ``prob``
    rank: np.ndarray | None = None

    def take(self, idx: np.ndarray) -> "PatientTable":
        return PatientTable(self.patient[idx], self.y[idx], self.prob[idx], self.hard_thr[idx],
                            self.entropy[idx], self.mutual_info[idx], self.member_std[idx],
                            self.uncertainty[idx], {k: v[idx] for k, v in self.sets.items()},
                            {k: v[idx] for k, v in self.hard_spec.items()},
                            None if self.rank is None else self.rank[idx])

    @property
    def ranked(self) -> np.ndarray:
        """The score discrimination is measured on: ``rank`` when given, else ``prob``."""
        return self.prob if self.rank is None else self.rank


def weighted_metrics(t: PatientTable, W: np.ndarray, *, n_bins: int = 10,
                     only: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """All leaderboard metrics (or those in ``only``) for each row of the count matrix
    ``W`` (B, n); ``W = ones((1, n))`` gives the plain estimate."""
    want = set(METRICS if only is None else only)
    W = np.asarray(W, dtype=float)  # converted once; the metric functions then avoid copies
    y, p = t.y, t.prob
    B, n = W.shape
    nan = np.full(B, np.nan)
    hard = (p >= 0.5).astype(float)
    out: dict[str, np.ndarray] = {}
    # every metric that is a mean over patients: one matrix product
    cols: dict[str, np.ndarray] = {
        "y": y, "tp": y * hard, "fp": (1 - y) * hard, "tn": (1 - y) * (1 - hard), "fn": y * (1 - hard),
        "brier": wt.brier_terms(y, p), "log_loss": wt.log_loss_terms(y, p),
        "entropy_mean": t.entropy, "mutual_info_mean": t.mutual_info, "member_std_mean": t.member_std,
    }
    thr_ok = not np.isnan(t.hard_thr).any()
    if thr_ok:
        cols.update(tp_thr=y * t.hard_thr, fn_thr=y * (1 - t.hard_thr),
                    tn_thr=(1 - y) * (1 - t.hard_thr), fp_thr=(1 - y) * t.hard_thr)
    spec_ok = {k for k, h in t.hard_spec.items() if not np.isnan(h).any()}
    for k in spec_ok:
        h = t.hard_spec[k]
        cols.update({f"tp_s{k}": y * h, f"fn_s{k}": y * (1 - h), f"tn_s{k}": (1 - y) * (1 - h),
                     f"fp_s{k}": (1 - y) * h})
    for level, sets in t.sets.items():
        if not np.isnan(sets).any():
            hit = sets[np.arange(n), y.astype(int)]
            cols[f"c{level}_pos"], cols[f"c{level}_neg"] = hit * y, hit * (1 - y)
            cols[f"c{level}_single"] = (sets.sum(1) == 1).astype(float)
    names = list(cols)
    means = dict(zip(names, wt.w_means(np.column_stack([cols[k] for k in names]), W).T))
    cm = wt.confusion_metrics(means["tp"], means["fp"], means["tn"], means["fn"])
    out.update(cm)
    for k in ("brier", "log_loss", "entropy_mean", "mutual_info_mean", "member_std_mean"):
        out[k] = means[k]
    if thr_ok:
        cm = wt.confusion_metrics(means["tp_thr"], means["fp_thr"], means["tn_thr"], means["fn_thr"])
        out["sensitivity_thr"], out["specificity_thr"] = cm["sensitivity"], cm["specificity"]
    else:
        out["sensitivity_thr"] = out["specificity_thr"] = nan
    for k in SPEC_TARGETS:
        if k in spec_ok:
            cm = wt.confusion_metrics(means[f"tp_s{k}"], means[f"fp_s{k}"], means[f"tn_s{k}"], means[f"fn_s{k}"])
            out[f"sens_at_spec{k}_oof"], out[f"spec_at_spec{k}_oof"] = cm["sensitivity"], cm["specificity"]
        else:
            out[f"sens_at_spec{k}_oof"] = out[f"spec_at_spec{k}_oof"] = nan
    with np.errstate(invalid="ignore", divide="ignore"):
        for level in t.sets:
            keys = [f"conformal{level}_coverage_pos", f"conformal{level}_coverage_neg", f"conformal{level}_singleton"]
            if f"c{level}_pos" in means:
                out[keys[0]] = means[f"c{level}_pos"] / means["y"]
                out[keys[1]] = means[f"c{level}_neg"] / (1 - means["y"])
                out[keys[2]] = means[f"c{level}_single"]
            else:
                out.update({k: nan for k in keys})
    if want & {"auc", "ap", "ece", "sens_at_spec90", "sens_at_spec95"}:
        out.update(wt.w_rank_metrics(y, t.ranked, W, n_bins=n_bins, specs=(0.90, 0.95)))
        if t.rank is not None and "ece" in want and not np.array_equal(t.rank, p):   # calibration: on prob
            out["ece"] = wt.w_rank_metrics(y, p, W, n_bins=n_bins, specs=())["ece"]
    if want & {"cal_intercept", "cal_slope"}:
        out["cal_intercept"], out["cal_slope"] = wt.w_calibration(y, p, W)
    if want & {"aurc", "error_auroc"}:
        out.update(wt.w_selective_metrics((hard != y).astype(float), t.uncertainty, W))
    return {k: out[k] for k in (METRICS if only is None else only) if k in out}


def patient_table(rows: pd.DataFrame, oof: pd.DataFrame, *, uncertainty: str = "entropy") -> PatientTable:
    """Per-patient arrays of one candidate x repeat from its 'test' rows and 'oof' rows."""
    rows = rows.sort_values("patient", kind="stable")
    n = len(rows)
    hard_thr = np.full(n, np.nan)
    sets = {lvl: np.full((n, 2), np.nan) for lvl in CONFORMAL_LEVELS}
    hard_spec = {k: np.full(n, np.nan) for k in SPEC_TARGETS}
    folds = rows["outer_fold"].to_numpy()
    p = rows["prob"].to_numpy(dtype=float)
    oof_by_fold = dict(tuple(oof.groupby("outer_fold"))) if len(oof) else {}
    for f in np.unique(folds):
        m = folds == f
        cal = oof_by_fold.get(f)
        if cal is None or cal["y"].nunique() < 2:
            continue
        yc, pc = cal["y"].to_numpy(dtype=int), cal["prob"].to_numpy(dtype=float)
        thr = youden_threshold(yc, pc)
        hard_thr[m] = (p[m] >= thr).astype(float)
        for k, spec in SPEC_TARGETS.items():
            hard_spec[k][m] = (p[m] >= threshold_at_spec(yc, pc, spec)).astype(float)
        for lvl, alpha in CONFORMAL_LEVELS.items():
            sets[lvl][m] = conformal.predict_sets(p[m], conformal.fit_thresholds(yc, pc, alpha))
    if uncertainty not in rows.columns:
        raise UserError(f"predictions.parquet has no uncertainty column {uncertainty!r}; "
                        f"choose one of {list(UNCERTAINTY_COLUMNS)}.")
    return PatientTable(
        patient=rows["patient"].astype(str).to_numpy(), y=rows["y"].to_numpy(dtype=float), prob=p,
        hard_thr=hard_thr, entropy=rows["entropy"].to_numpy(dtype=float),
        mutual_info=rows["mutual_info"].to_numpy(dtype=float),
        member_std=rows["member_std"].to_numpy(dtype=float),
        uncertainty=rows[uncertainty].to_numpy(dtype=float), sets=sets, hard_spec=hard_spec,
        rank=ranking_score(rows))


def ranking_score(rows: pd.DataFrame) -> np.ndarray | None:
    """``prob_rank`` of the rows (the order-preserving map discrimination is measured on), where
    stored and complete; None (use ``prob``) for oracle rows and runs written before it existed."""
    if "prob_rank" not in rows.columns:
        return None
    r = pd.to_numeric(rows["prob_rank"], errors="coerce").to_numpy(dtype=float)
    return r if np.isfinite(r).all() else None


def candidate_tables(cpred: pd.DataFrame, *, uncertainty: str = "entropy") -> dict[int, PatientTable]:
    """``repeat -> PatientTable`` for one candidate's rows (test patients only)."""
    out = {}
    for r, rp in cpred.groupby("repeat", sort=True):
        test = rp[rp["set"] == "test"]
        if test.empty:
            continue
        if test["patient"].duplicated().any():
            raise UserError(f"predictions.parquet: candidate {rp['candidate'].iloc[0]!r}, repeat {r} has "
                            "more than one 'test' row for some patients; each patient must be tested once per repeat.")
        out[int(r)] = patient_table(test, rp[rp["set"] == "oof"], uncertainty=uncertainty)
    return out
