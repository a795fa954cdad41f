"""TreeSHAP contributions of the tree families, through the libraries' own implementations.

XGBoost's ``Booster.predict(..., pred_contribs=True)`` and LightGBM's
``predict(..., pred_contrib=True)`` give, per patient and input column, its exact
Shapley contribution to the raw score (log-odds; the columns and the bias sum to the
margin), for the trees kept by early stopping. The trees read the register as the user gave
it (native categoricals and missing values), so each contribution belongs to one register
column; an ``embed_*`` family's principal-component columns are summed into ``[image]``::

    C = tree_contributions(model, view)     # DataFrame (n, columns) or None for other families
    summary = shap_summary(C, view.register)   # column, shap_mean_abs, shap_direction, shap_level
"""

from __future__ import annotations

import numpy as np
import pandas as pd

IMAGE = "[image]"   # the summed contribution of an embed_* family's image components


def input_names(trees) -> dict[str, str]:
    """The tree library's column names (``f0, f1, ...``: ``preprocess.CategoryAligner``) -> register columns."""
    al = trees.align_
    numeric = [c for c in al.columns_ if c not in al.levels_]
    return dict(zip(al.names_, [str(c) for c in numeric + list(al.cat_cols_)]))


def tree_contributions(model, data) -> pd.DataFrame | None:
    """(n, columns) TreeSHAP contributions (log-odds) of ``model`` on ``data``; None when it is no tree family."""
    from benchmark.candidates.fusion_embed import _EmbedTrees
    from benchmark.candidates.tabular import LightGBMFamily, XGBoostFamily

    if isinstance(model, _EmbedTrees):
        trees, data = model.model_, model._augment(data)
    else:
        trees = model
    if not isinstance(trees, (XGBoostFamily, LightGBMFamily)):
        return None
    X = trees._table(data)
    if isinstance(trees, XGBoostFamily):
        import xgboost as xgb

        dm = xgb.DMatrix(X, enable_categorical=True)
        raw = trees.model_.get_booster().predict(dm, pred_contribs=True,
                                                 iteration_range=(0, trees.best_iteration_ + 1))
    else:
        raw = trees.model_.predict(X, pred_contrib=True, num_iteration=trees.best_iteration_ + 1)
    raw = np.asarray(raw, dtype=np.float64)[:, :X.shape[1]]
    names = input_names(trees)
    out = pd.DataFrame(raw, columns=[names.get(str(c), str(c)) for c in X.columns])
    emb = [c for c in out.columns if c.startswith("emb:")]
    if emb:
        out = out.drop(columns=emb).assign(**{IMAGE: out[emb].sum(axis=1)})
    return out


def shap_summary(contrib: pd.DataFrame, register: pd.DataFrame) -> pd.DataFrame:
    """Per column: mean |contribution| and the direction of its effect.

    ``shap_direction``: the correlation of a numeric column's contributions with its values
    (patients with a value); for a categorical, of the contributions with the indicator of the
    level whose correlation is largest in size (``shap_level``; ties: the first level in sorted
    order, so a two-level column always names the same one). NaN for a constant column.
    """
    reg = register.reset_index(drop=True)
    rows = []
    for c in contrib.columns:
        v = contrib[c].to_numpy()
        row = {"column": c, "shap_mean_abs": float(np.mean(np.abs(v))), "shap_direction": np.nan, "shap_level": None}
        if c in reg.columns and np.std(v) > 0:
            x = reg[c]
            if isinstance(x.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(x.dtype):
                values = x.astype("object").to_numpy()
                best = 0.0
                for level in sorted(map(str, pd.unique(values[pd.notna(values)]))):   # ties: the first level
                    r = _corr((values.astype(str) == level).astype(float), v)
                    if np.isfinite(r) and abs(r) > best + 1e-9:
                        best = abs(r)
                        row.update(shap_direction=r, shap_level=level)
            else:
                xv = x.to_numpy(dtype=float, na_value=np.nan)
                ok = np.isfinite(xv)
                row["shap_direction"] = _corr(xv[ok], v[ok])
        rows.append(row)
    return pd.DataFrame(rows)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def mean_summary(summaries: list[pd.DataFrame]) -> pd.DataFrame:
    """Several models' summaries (a bag's members) averaged per column."""
    both = pd.concat(summaries, ignore_index=True)
    level = both.dropna(subset=["shap_level"]).groupby("column")["shap_level"].agg(lambda s: s.mode().iloc[0])
    out = both.groupby("column", sort=False)[["shap_mean_abs", "shap_direction"]].mean().reset_index()
    out["shap_level"] = out["column"].map(level)
    return out
