"""The two scores a family computes for itself: a validation AUC that tolerates one class, and a sigmoid.

    safe_auc(np.array([0, 1, 1]), np.array([0.2, 0.9, 0.4]))   # 1.0
    safe_auc(np.array([1, 1]), np.array([0.2, 0.9]))           # nan (one class only)
    sigmoid(np.array([0.0]))                                   # [0.5]
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def safe_auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, or NaN when ``y`` holds one class only."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logits to probabilities (NaN stays NaN; a logit beyond float range gives 0 or 1 without a warning)."""
    from scipy.special import expit

    return expit(x)
