"""Per-patient uncertainty of the scored prediction and of the bag's members (or MC-dropout passes).

For a binary outcome with the scored probability ``prob`` (the very column log loss, Brier
score and calibration are computed on), member probabilities ``p_1 .. p_M`` of AFF and their
mean ``p_bar``, all in natural log (nats, maximum ``ln 2 ~= 0.693``):

- ``entropy``          = H(prob), the predictive entropy of the scored prediction (the bag's
  calibrated mean mapped to one member's spread, or a refit's prediction: whatever ``prob``
  is), so an entropy and a log loss compared in one row describe one predictor;
- ``expected_entropy`` = mean_m H(p_m), the members' aleatoric part;
- ``mutual_info``      = H(p_bar) - expected_entropy (>= 0), the members' epistemic part
  (their disagreement; 0 with a single member);
- ``member_std``       = population standard deviation (ddof=0) of the p_m.

``H(q) = -q ln q - (1 - q) ln(1 - q)`` with ``0 ln 0 = 0``. ``expected_entropy`` and
``mutual_info`` describe the bag's members, ``entropy`` the predictor that is scored; the
decomposition ``entropy = expected_entropy + mutual_info`` holds when ``prob`` is the
members' mean (out-of-fold rows: one member, ``prob`` itself). A table without ``prob``
takes ``p_bar`` as the prediction.

>>> import pandas as pd
>>> df = add_uncertainty(pd.DataFrame({"prob": [0.5, 0.5], "members": [[0.5], [0.1, 0.9]]}))
>>> df[["entropy", "mutual_info"]].round(3).values.tolist()
[[0.693, 0.0], [0.693, 0.368]]
>>> add_uncertainty(pd.DataFrame({"prob": [0.2], "members": [[0.1, 0.9]]}))["entropy"].round(3).tolist()
[0.5]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import xlogy

from benchmark.errors import UserError

UNCERTAINTY_COLUMNS = ("entropy", "expected_entropy", "mutual_info", "member_std")


def binary_entropy(q: np.ndarray) -> np.ndarray:
    """Entropy in nats of Bernoulli(q), elementwise; 0 at q in {0, 1}."""
    q = np.clip(np.asarray(q, dtype=float), 0.0, 1.0)
    return -(xlogy(q, q) + xlogy(1.0 - q, 1.0 - q))


def _flatten_members(pred: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Members as one flat array plus the number per row; rows without members use ``prob``."""
    n = len(pred)
    if "members" not in pred.columns:
        return pred["prob"].to_numpy(dtype=float), np.ones(n, dtype=np.int64)
    prob = pred["prob"].to_numpy(dtype=float) if "prob" in pred.columns else np.full(n, np.nan)
    chunks: list[np.ndarray] = []
    counts = np.empty(n, dtype=np.int64)
    for i, m in enumerate(pred["members"].to_numpy(dtype=object)):
        arr = np.atleast_1d(np.asarray(m, dtype=float)) if m is not None else np.empty(0)
        if arr.size == 0 or (arr.size == 1 and np.isnan(arr[0])):
            arr = prob[i : i + 1]
        chunks.append(arr)
        counts[i] = arr.size
    flat = np.concatenate(chunks) if chunks else np.empty(0)
    return flat, counts


def add_uncertainty(pred: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``pred`` with ``entropy, expected_entropy, mutual_info, member_std``.

    ``pred`` needs ``members`` (list of member probabilities per row) or, failing that,
    ``prob`` (treated as a single member). Rows with an empty member list fall back to
    ``prob``. ``entropy`` is that of ``prob`` (of the members' mean where ``prob`` is missing).
    """
    out = pred.copy()
    if len(out) == 0:
        for c in UNCERTAINTY_COLUMNS:
            out[c] = pd.Series(dtype=float)
        return out
    if "members" not in out.columns and "prob" not in out.columns:
        raise UserError("predictions table has neither a 'members' nor a 'prob' column; "
                        "write the calibrated probabilities of the bag members into 'members'.")
    flat, counts = _flatten_members(out)
    if np.isnan(flat).any() or (flat < 0).any() or (flat > 1).any():
        raise UserError("predictions table, column 'members': found values outside [0, 1] or NaN; "
                        "members must be calibrated probabilities.")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    mean = np.add.reduceat(flat, starts) / counts
    exp_ent = np.add.reduceat(binary_entropy(flat), starts) / counts
    dev2 = (flat - np.repeat(mean, counts)) ** 2
    std = np.sqrt(np.add.reduceat(dev2, starts) / counts)
    ent_mean = binary_entropy(mean)
    prob = out["prob"].to_numpy(dtype=float) if "prob" in out.columns else mean
    out["entropy"] = binary_entropy(np.where(np.isfinite(prob), prob, mean))
    out["expected_entropy"] = exp_ent
    out["mutual_info"] = np.maximum(ent_mean - exp_ent, 0.0)
    out["member_std"] = std
    return out
