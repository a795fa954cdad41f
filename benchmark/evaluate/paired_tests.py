"""The paired tests behind ``comparisons.csv``: DeLong for correlated AUCs, the z test of a
bootstrap SE, Holm's adjustment, non-inferiority and the verdict (rules: ``compare``).

    auc1, auc2, diff, se, z, p = delong_roc_test(y, p1, p2)
    p, lo, hi, z = z_test(diff, bootstrap_se(resampled_diffs))
    table = adjust_and_decide(table)          # p_holm within each holm_family, then verdict
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

HIGHER_IS_BETTER = {"auc": True, "ap": True, "brier": False, "log_loss": False, "ece": False,
                    "entropy_mean": False, "mutual_info_mean": False}
ALPHA = 0.05
Z95 = float(stats.norm.ppf(0.975))
VERDICTS = ("candidate_better", "reference_better", "equivalent", "not_shown")


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


def bootstrap_se(diffs: np.ndarray) -> float:
    """Standard deviation (ddof 1) of the resampled differences; NaN when fewer than half
    of them (or fewer than 2) are finite."""
    d = np.asarray(diffs, dtype=float)
    ok = d[np.isfinite(d)]
    if ok.size < 2 or ok.size < 0.5 * d.size:
        return float("nan")
    return float(np.std(ok, ddof=1))


def z_test(diff: float, se: float) -> tuple[float, float, float, float]:
    """``(p, lo, hi, z)`` of the normal approximation ``z = diff / se``: two-sided p and the
    95 % interval ``diff -/+ 1.96 se``. se = 0 with diff = 0 gives p = 1 and [0, 0]; a
    non-finite or zero se otherwise gives NaN.

    >>> p, lo, hi, z = z_test(-0.011, 0.0018)
    >>> p < 1e-6, round(lo, 4), round(hi, 4)
    (True, -0.0145, -0.0075)
    """
    if not (np.isfinite(diff) and np.isfinite(se)):
        return (float("nan"),) * 4
    if se <= 1e-15:
        return (1.0, float(diff), float(diff), 0.0) if diff == 0 else (float("nan"),) * 4
    z = diff / se
    return float(2 * stats.norm.sf(abs(z))), float(diff - Z95 * se), float(diff + Z95 * se), float(z)


def noninferior(metric: str, lo: float, hi: float, margin: float) -> bool:
    """Is the unfavourable end of the interval of ``diff`` within the margin?"""
    if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(margin)):
        return False
    return bool(lo > -margin) if HIGHER_IS_BETTER[metric] else bool(hi < margin)


def verdict(metric: str, diff: float, p_holm: float, lo: float, hi: float, margin: float,
            alpha: float = ALPHA) -> str:
    """One of ``VERDICTS`` (rules in ``compare``'s docstring): a side exactly when p_holm < alpha.

    >>> verdict("brier", -0.011, 0.001, -0.015, -0.008, 0.02)
    'candidate_better'
    >>> verdict("auc", 0.004, 0.6, -0.01, 0.018, 0.02), verdict("auc", 0.004, 0.6, -0.03, 0.04, 0.02)
    ('equivalent', 'not_shown')
    """
    if np.isfinite(p_holm) and p_holm < alpha:
        return "candidate_better" if (diff > 0) == HIGHER_IS_BETTER[metric] else "reference_better"
    if np.isfinite(lo) and np.isfinite(hi) and np.isfinite(margin) and -margin < lo and hi < margin:
        return "equivalent"
    return "not_shown"


def adjust_and_decide(table: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Fill ``p_holm`` (Holm within each ``holm_family`` over the whole table) and ``verdict``."""
    out = table.copy()
    out["p_holm"] = np.nan
    for _, idx in out.groupby("holm_family", sort=False).groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p_value"].to_numpy(dtype=float))
    out["verdict"] = [verdict(m, d, ph, lo, hi, mg, alpha) for m, d, ph, lo, hi, mg in
                      zip(out["metric"], out["diff"], out["p_holm"], out["lo"], out["hi"], out["margin"])]
    return out
