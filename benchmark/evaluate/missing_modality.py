"""Fusion candidates without images: pooled outer-test AUC against the register model on the same patients.

Each fusion unit that reads images stored its calibrated outer-test predictions with the
images as they are (``prob``), withheld from every test patient (``prob_all``) and from a
seeded random half (``prob_half``) (``explain.missing``). ``missing_modality_table`` pools
them over the outer folds of each repeat (as the leaderboard pools predictions) and sets
each beside the register model's own outer-test predictions of the same patients::

    table = missing_modality_table(scores, predictions, "xgboost", n_boot=500, seed=0)
    # candidate, scenario (images | none | half), repeat, n, auc, auc_lo, auc_hi, reference,
    # ref_auc, ref_lo, ref_hi, diff, diff_lo, diff_hi, p

Intervals: patient-level stratified bootstrap (the harness's resamples, the same for both
models of a row); ``p``: DeLong's paired test of the two AUCs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.evaluate.paired_tests import delong_roc_test
from benchmark.evaluate.weighted import resample_counts, w_auc

SCENARIOS = {"images": "prob", "none": "prob_all", "half": "prob_half"}


def _ci(b: np.ndarray) -> tuple[float, float]:
    b = b[np.isfinite(b)]
    return (float(np.quantile(b, 0.025)), float(np.quantile(b, 0.975))) if len(b) else (np.nan, np.nan)


def missing_modality_table(scores: pd.DataFrame, pred: pd.DataFrame, reference: str | None, *,
                           n_boot: int, seed: int) -> pd.DataFrame:
    """One row per fusion candidate x scenario x repeat (module docstring); empty without scores."""
    if scores is None or scores.empty:
        return pd.DataFrame()
    ref = pd.DataFrame()
    if reference is not None:
        ref = pred[(pred["candidate"] == reference) & (pred["set"] == "test")][["repeat", "patient", "prob"]]
    rows = []
    for (cand, rep), g in scores.groupby(["candidate", "repeat"], sort=True):
        both = g.merge(ref.rename(columns={"prob": "ref"}), on=["repeat", "patient"], how="left") if len(ref) else g
        y = both["y"].to_numpy(dtype=int)
        if len(np.unique(y)) < 2:
            continue
        W = resample_counts(both["patient"].tolist(), y, n_boot, seed)
        ones = np.ones((1, len(y)))
        for scenario, column in SCENARIOS.items():
            p = both[column].to_numpy(dtype=float)
            row = {"candidate": cand, "scenario": scenario, "repeat": int(rep), "n": len(y), "n_pos": int(y.sum()),
                   "auc": float(w_auc(y, p, ones)[0])}
            b = w_auc(y, p, W)
            row["auc_lo"], row["auc_hi"] = _ci(b)
            if "ref" in both.columns and both["ref"].notna().all():
                r = both["ref"].to_numpy(dtype=float)
                rb = w_auc(y, r, W)
                row.update(reference=reference, ref_auc=float(w_auc(y, r, ones)[0]))
                row["ref_lo"], row["ref_hi"] = _ci(rb)
                row["diff"] = row["auc"] - row["ref_auc"]
                row["diff_lo"], row["diff_hi"] = _ci(b - rb)
                row["p"] = delong_roc_test(y, p, r)[5]
            rows.append(row)
    return pd.DataFrame(rows)
