"""A run's register risk factors: the per-fold permutation importance pooled per candidate.

``importance.csv`` (``run.explain_unit``, gathered by ``run.gather``) holds one row per
candidate x repeat x outer fold x register column. ``pooled_importance`` turns it into one
row per candidate x column, ranked::

    pooled = pooled_importance(pd.read_csv("results/run-1/importance.csv"), k=10)
    pooled[pooled["candidate"] == "xgboost"].head(10)    # rank, column, auc_drop, drop_lo, drop_hi, direction, ...

- ``auc_drop``: the mean over outer folds (then over repeats) of a fold's AUC drop;
- its interval: ``auc_drop`` +- 1.96 SE, the folds' bootstrap SEs combined as independent
  (``sqrt(sum se^2) / folds``; repeats share patients, so their SEs are averaged, not
  combined);
- ``direction``: TreeSHAP's (``shap_direction``) where the candidate is a tree ensemble,
  else the permutations' (``perm_direction``), averaged over the folds that name the most
  common ``level`` (a categorical's direction refers to a level);
- ``top_k`` / ``n_folds``: in how many outer folds the column was among the ``k`` largest
  drops of that fold (stability);
- ``rank``: by ``auc_drop`` (ties: mean |SHAP contribution|, then name).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

Z95 = 1.959964
TOP_K = 10


def _fold_ranks(rows: pd.DataFrame) -> pd.Series:
    """Each row's rank within its own candidate x repeat x fold by AUC drop (1 = largest)."""
    keys = ["candidate", "repeat", "outer_fold"]
    return rows.groupby(keys)["auc_drop"].rank(ascending=False, method="first")


def _direction(g: pd.DataFrame) -> tuple[float, object]:
    use_shap = "shap_direction" in g.columns and g["shap_direction"].notna().any()
    value = g["shap_direction"] if use_shap else g["perm_direction"]
    level_col = "shap_level" if use_shap and "shap_level" in g.columns else "level"
    levels = g[level_col] if level_col in g.columns else pd.Series([None] * len(g), index=g.index)
    named = levels.dropna().astype(str)
    level = named.mode().iloc[0] if len(named) else None
    keep = levels.astype(str).eq(level) if level is not None else pd.Series(True, index=g.index)
    v = pd.to_numeric(value[keep], errors="coerce").dropna()
    return (float(v.mean()) if len(v) else float("nan")), level


def pooled_importance(rows: pd.DataFrame, k: int = TOP_K) -> pd.DataFrame:
    """One ranked row per candidate x column (module docstring); empty without rows."""
    cols = ["candidate", "family", "modality", "rank", "column", "auc_drop", "drop_se", "drop_lo", "drop_hi",
            "direction", "level", "shap_mean_abs", "top_k", "n_folds", "k"]
    if rows is None or rows.empty:
        return pd.DataFrame(columns=cols)
    rows = rows.copy()
    rows["_rank"] = _fold_ranks(rows)
    out = []
    for (cand, col), g in rows.groupby(["candidate", "column"], sort=False):
        per_repeat = g.groupby("repeat").agg(drop=("auc_drop", "mean"),
                                             se=("drop_se", lambda s: float(np.sqrt(np.nansum(s ** 2))) / max(len(s), 1)))
        drop, se = float(per_repeat["drop"].mean()), float(per_repeat["se"].mean())
        direction, level = _direction(g)
        shap = g["shap_mean_abs"].mean() if "shap_mean_abs" in g.columns else np.nan
        out.append({"candidate": cand, "family": g["family"].iloc[0], "modality": g["modality"].iloc[0],
                    "column": col, "auc_drop": drop, "drop_se": se, "drop_lo": drop - Z95 * se,
                    "drop_hi": drop + Z95 * se, "direction": direction, "level": level,
                    "shap_mean_abs": float(shap) if pd.notna(shap) else np.nan,
                    "top_k": int((g["_rank"] <= k).sum()), "n_folds": int(len(g)), "k": k})
    pooled = pd.DataFrame(out)
    pooled["_shap"] = pooled["shap_mean_abs"].fillna(0.0)
    pooled = pooled.sort_values(["candidate", "auc_drop", "_shap", "column"], ascending=[True, False, False, True])
    pooled["rank"] = pooled.groupby("candidate").cumcount() + 1
    return pooled[cols].reset_index(drop=True)
