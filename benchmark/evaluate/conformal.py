"""Class-conditional (Mondrian) split conformal prediction sets for a binary classifier.

Nonconformity of label k for a patient with P(AFF) = p: ``s_k = 1 - p_k`` with
``p_1 = p`` and ``p_0 = 1 - p``. For each class k separately, the threshold ``q_k`` is the
``ceil((n_k + 1)(1 - alpha))``-th smallest score among the ``n_k`` calibration patients of
that class (``+inf`` when that rank exceeds ``n_k``: the label is then always included).
A set contains k when ``s_k <= q_k``. If calibration and test patients are exchangeable
within a class, the set contains the true label with probability at least ``1 - alpha``
for each class separately (Vovk 2003; Angelopoulos & Bates 2021, section 4.1).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> p = rng.random(2000); y = (rng.random(2000) < p).astype(int)
>>> q = fit_thresholds(y, p, alpha=0.1)
>>> sets = predict_sets(p, q)
>>> cov = class_coverage(y, sets)
>>> bool(cov[0] >= 0.88 and cov[1] >= 0.88)
True
"""

from __future__ import annotations

import math

import numpy as np


def _scores(p: np.ndarray) -> np.ndarray:
    """(n, 2) nonconformity scores: column k is 1 - P(label k)."""
    p = np.asarray(p, dtype=float).ravel()
    return np.column_stack([p, 1.0 - p])


def fit_thresholds(y_cal, p_cal, alpha: float) -> np.ndarray:
    """Per-class score thresholds ``[q_NFF, q_AFF]`` from calibration data at level ``alpha``."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    y = np.asarray(y_cal).astype(int).ravel()
    s = _scores(p_cal)
    q = np.empty(2)
    for k in (0, 1):
        sk = np.sort(s[y == k, k])
        rank = math.ceil((sk.size + 1) * (1.0 - alpha))
        q[k] = np.inf if rank > sk.size else sk[rank - 1]
    return q


def predict_sets(p, thresholds) -> np.ndarray:
    """(n, 2) boolean prediction sets: column 0 = NFF included, column 1 = AFF included."""
    return _scores(p) <= np.asarray(thresholds, dtype=float)[None, :]


def class_coverage(y, sets: np.ndarray) -> dict[int, float]:
    """Fraction of patients of each class whose set contains their label (NaN if absent)."""
    y = np.asarray(y).astype(int).ravel()
    hit = sets[np.arange(y.size), y]
    return {k: float(hit[y == k].mean()) if (y == k).any() else float("nan") for k in (0, 1)}


def singleton_rate(sets: np.ndarray) -> float:
    """Fraction of sets with exactly one label (the informative ones)."""
    return float((sets.sum(1) == 1).mean()) if len(sets) else float("nan")


def empty_rate(sets: np.ndarray) -> float:
    """Fraction of empty sets."""
    return float((sets.sum(1) == 0).mean()) if len(sets) else float("nan")
