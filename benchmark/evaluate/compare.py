"""Paired comparisons: each fusion candidate against the best image and best register one.

The references are chosen by ``inner_score`` (mean best inner-CV value; never by outer-test
metrics; ties by name). Both candidates are compared on the same outer-test patients of
the **first repeat** both have (the lowest repeat index; with a single repeat that is the
whole comparison). Per metric one row:

- ``auc``: DeLong test for correlated ROC curves (fast algorithm of Sun & Xu 2014),
  with a paired stratified bootstrap CI for the difference;
- ``ap, brier, log_loss, ece``: paired stratified bootstrap CI and a two-sided bootstrap
  p-value ``min(1, 2 min((1 + #{d_b <= 0}) / (B + 1), (1 + #{d_b >= 0}) / (B + 1)))``;
- ``entropy_mean, mutual_info_mean``: paired bootstrap CI and the Wilcoxon signed-rank
  test on the per-patient differences (scipy; p = 1 when all differences are 0).

"Paired" means the same resampled patients for both candidates in every resample;
resampling is stratified by class. ``p_holm`` applies Holm's step-down correction over
every row of the table. ``verdict`` reads the 95 % CI of ``diff = candidate - reference``
and the metric's direction: higher is better for AUC and AP, lower for Brier, log loss,
ECE, mean entropy and mean mutual information (less uncertainty); a CI that excludes 0
names the better side, otherwise ``no_difference``.

>>> cmp = compare_candidates(pred, leaderboard, n_boot=1000, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.errors import UserError
from benchmark.evaluate import weighted as wt
from benchmark.evaluate.leaderboard import PatientTable, validate_predictions, weighted_metrics
from benchmark.protocol import ROLES

COMPARISON_COLUMNS: tuple[str, ...] = (
    "candidate", "reference", "reference_role", "metric", "value_candidate", "value_reference",
    "diff", "lo", "hi", "p_value", "test", "p_holm", "verdict", "n_patients",
)
HIGHER_IS_BETTER = {"auc": True, "ap": True, "brier": False, "log_loss": False, "ece": False,
                    "entropy_mean": False, "mutual_info_mean": False}
TEST_OF = {"auc": "delong", "ap": "bootstrap", "brier": "bootstrap", "log_loss": "bootstrap",
           "ece": "bootstrap", "entropy_mean": "wilcoxon", "mutual_info_mean": "wilcoxon"}


# ------------------------------------------------------------------------------ DeLong


def _delong_cov(y, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for k score vectors (k, n) on one label
    vector, by the midrank algorithm of Sun & Xu (2014), O(k n log n)."""
    y = np.asarray(y).astype(int).ravel()
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError("DeLong needs at least two patients of each class")
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = tz[:, :m].sum(1) / (m * n) - (m + 1.0) / (2.0 * n)
    v01 = (tz[:, :m] - tx) / n          # structural components of the positives
    v10 = 1.0 - (tz[:, m:] - ty) / m    # ... and of the negatives
    cov = np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    return aucs, cov


def delong_auc_variance(y, p) -> tuple[float, float]:
    """(AUC, DeLong variance of the AUC).

    >>> auc, var = delong_auc_variance([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> round(auc, 2)
    0.75
    """
    aucs, cov = _delong_cov(y, np.asarray(p, dtype=float)[None, :])
    return float(aucs[0]), float(cov[0, 0])


def delong_roc_test(y, p1, p2) -> tuple[float, float, float, float, float, float]:
    """Two-sided DeLong test of AUC(p1) = AUC(p2) on the same patients.

    Returns ``(auc1, auc2, diff, se, z, p)`` with ``diff = auc1 - auc2``; ``z`` and ``p`` are
    NaN when the two score vectors give identical structural components (se = 0).
    """
    aucs, cov = _delong_cov(y, np.vstack([np.asarray(p1, float), np.asarray(p2, float)]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    if se <= 1e-15:
        return float(aucs[0]), float(aucs[1]), diff, se, float("nan"), float("nan")
    z = diff / se
    return float(aucs[0]), float(aucs[1]), diff, se, float(z), float(2 * stats.norm.sf(abs(z)))


# --------------------------------------------------------------------------- helpers


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries stay NaN and do not count."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


def bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p-value for ``diff = 0`` (formula in the module docstring)."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    lo = (1 + np.sum(d <= 0)) / (d.size + 1)
    hi = (1 + np.sum(d >= 0)) / (d.size + 1)
    return float(min(1.0, 2 * min(lo, hi)))


def verdict(metric: str, lo: float, hi: float) -> str:
    """'candidate_better', 'reference_better' or 'no_difference' from the CI of the difference."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no_difference"
    up = HIGHER_IS_BETTER[metric]
    if lo > 0:
        return "candidate_better" if up else "reference_better"
    if hi < 0:
        return "reference_better" if up else "candidate_better"
    return "no_difference"


def select_references(leaderboard: pd.DataFrame, *, higher_is_better: bool = True) -> dict[str, str]:
    """``{'best_image': name, 'best_register': name}`` by ``inner_score`` (roles without a
    usable candidate are left out)."""
    out = {}
    lb = leaderboard[leaderboard["status"].astype(str) != "failed"]
    for role, modality in ROLES.items():
        c = lb[(lb["modality"] == modality) & pd.to_numeric(lb["inner_score"], errors="coerce").notna()]
        if c.empty:
            continue
        score = pd.to_numeric(c["inner_score"]) * (1 if higher_is_better else -1)
        best = c.assign(_s=score).sort_values(["_s", "candidate"], ascending=[False, True])
        out[role] = str(best["candidate"].iloc[0])
    return out


def _table(rows: pd.DataFrame) -> PatientTable:
    n = len(rows)
    return PatientTable(patient=rows["patient"].astype(str).to_numpy(), y=rows["y"].to_numpy(float),
                        prob=rows["prob"].to_numpy(float), hard_thr=np.full(n, np.nan),
                        entropy=rows["entropy"].to_numpy(float), mutual_info=rows["mutual_info"].to_numpy(float),
                        member_std=rows["member_std"].to_numpy(float), uncertainty=rows["entropy"].to_numpy(float),
                        sets={})


def _paired_rows(pred: pd.DataFrame, cand: str, ref: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    test = pred[pred["set"] == "test"]
    a, b = test[test["candidate"] == cand], test[test["candidate"] == ref]
    common = sorted(set(a["repeat"]) & set(b["repeat"]))
    if not common:
        return None
    r = common[0]
    a = a[a["repeat"] == r].assign(patient=lambda d: d["patient"].astype(str)).set_index("patient")
    b = b[b["repeat"] == r].assign(patient=lambda d: d["patient"].astype(str)).set_index("patient")
    keys = sorted(set(a.index) & set(b.index))
    a, b = a.loc[keys].reset_index(), b.loc[keys].reset_index()
    if (a["y"].to_numpy() != b["y"].to_numpy()).any():
        raise UserError(f"predictions.parquet: candidates {cand!r} and {ref!r} disagree on the label of "
                        "some patients; all candidates must be evaluated on the same labels.")
    return a, b


def compare_pair(pred: pd.DataFrame, cand: str, ref: str, *, n_boot: int, seed: int,
                 n_bins: int = 10, counts_cache: dict | None = None) -> list[dict]:
    """Rows of ``comparisons.csv`` for one candidate against one reference (no Holm yet).

    Resamples depend only on ``seed`` and the paired patients; ``counts_cache`` reuses them.
    """
    pair = _paired_rows(pred, cand, ref)
    if pair is None:
        return []
    a, b = pair
    ta, tb = _table(a), _table(b)
    y = ta.y
    names = tuple(HIGHER_IS_BETTER)
    ones = np.ones((1, y.size))
    va, vb = weighted_metrics(ta, ones, n_bins=n_bins, only=names), weighted_metrics(tb, ones, n_bins=n_bins, only=names)
    diffs: dict[str, list[np.ndarray]] = {m: [] for m in names}
    if n_boot > 0:
        counts = wt.resample_counts(ta.patient, y, n_boot, seed, counts_cache)
        for part in wt.chunks(n_boot, y.size):
            W = counts[part]
            da, db = weighted_metrics(ta, W, n_bins=n_bins, only=names), weighted_metrics(tb, W, n_bins=n_bins, only=names)
            for m in names:
                diffs[m].append(da[m] - db[m])
    rows = []
    for m in names:
        d = np.concatenate(diffs[m]) if diffs[m] else np.empty(0)
        d = d[np.isfinite(d)]
        lo, hi = (float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))) if d.size else (np.nan, np.nan)
        test = TEST_OF[m]
        if test == "delong":
            try:
                p = delong_roc_test(y, ta.prob, tb.prob)[5]
            except ValueError:
                p = float("nan")
        elif test == "bootstrap":
            p = bootstrap_p(d)
        else:
            col = "entropy" if m == "entropy_mean" else "mutual_info"
            dd = getattr(ta, col) - getattr(tb, col)
            if np.all(dd == 0):
                p = 1.0
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    p = float(stats.wilcoxon(dd).pvalue)
        rows.append({"candidate": cand, "reference": ref, "metric": m,
                     "value_candidate": float(va[m][0]), "value_reference": float(vb[m][0]),
                     "diff": float(va[m][0] - vb[m][0]), "lo": lo, "hi": hi, "p_value": p, "test": test,
                     "verdict": verdict(m, lo, hi), "n_patients": int(y.size)})
    return rows


def compare_candidates(pred: pd.DataFrame, leaderboard: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
                       n_bins: int = 10, higher_is_better: bool = True) -> pd.DataFrame:
    """``comparisons.csv``: every fusion candidate (not failed) versus the best image and the
    best register candidate by ``inner_score`` (``higher_is_better`` says which way the
    inner objective points), with Holm-adjusted p-values over the whole table."""
    pred = validate_predictions(pred)
    refs = select_references(leaderboard, higher_is_better=higher_is_better)
    fusion = leaderboard[(leaderboard["modality"] == "fusion") & (leaderboard["status"].astype(str) != "failed")]
    rows, cache = [], {}
    for cand in fusion["candidate"].astype(str):
        for role, ref in refs.items():
            for r in compare_pair(pred, cand, ref, n_boot=n_boot, seed=seed, n_bins=n_bins, counts_cache=cache):
                rows.append({**r, "reference_role": role})
    out = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    out["p_holm"] = holm(out["p_value"].to_numpy(dtype=float)) if len(out) else pd.Series(dtype=float)
    return out
