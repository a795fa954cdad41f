"""Permutation importance of the register columns on an outer-test part, with a unit's own models.

    perms = shuffles(len(test), seed)                      # (SHUFFLES, n): the fold's shuffles
    res = permuted_scores(scorers, view.register, perms)   # every column shuffled, the predictor re-run
    table = importance_rows(res, y_test, keys_test, seed)  # one row per column (below)

The *predictor* is what gave the part's outer-test ``prob``: the refit when the profile
refits, else the bag (each member on its own view; their mean logit is the score). A column's
**AUC drop** is the predictor's AUC on the part minus its AUC with that column's values
shuffled among the part's patients (mean over ``SHUFFLES`` shuffles): the discrimination that
rests on the column. One-hot levels, missing-value flags and embeddings never split a
column: the shuffle happens in the user's table, before each family's own preprocessing.
Its uncertainty: ``N_BOOT`` stratified bootstrap resamples of the part's patients (the
harness's ``weighted.resample_counts``), the same resamples for the unshuffled and shuffled
scores, giving ``drop_se`` and a percentile interval ``drop_lo``, ``drop_hi``.

**Direction** (``perm_direction`` in [-1, 1], with ``level`` for a categorical): how the
score moved with the value the shuffle put in, the cosine of (new value - old value) and
(new logit - old logit) over patients and shuffles; for a categorical, of the indicator of
the level that moves the score most. Positive: a larger value (or being ``level``) raises
P(AFF). NaN when the shuffles never changed the score.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import logit

SHUFFLES = 2       # shuffles of each column
N_BOOT = 200       # bootstrap resamples of the part's patients for the interval
_EPS = 1e-6


def to_logit(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS))


def shuffles(n: int, seed: int, k: int = SHUFFLES) -> np.ndarray:
    """(k, n) permutations of the part's positions, seeded (every candidate of a fold gets the same)."""
    rng = np.random.default_rng([int(seed) & 0x7FFFFFFF, 2718])
    return np.stack([rng.permutation(n) for _ in range(k)])


def shuffled(register: pd.DataFrame, column: str, perm: np.ndarray) -> pd.DataFrame:
    """``register`` with ``column``'s values put in the order ``perm`` (its dtype kept)."""
    out = register.copy()
    out[column] = register[column].iloc[perm].set_axis(register.index)
    return out


@dataclass
class Permuted:
    """The predictor's scores (mean member logit) on a part, plain and with each column shuffled."""

    base: np.ndarray                   # (n,)
    scores: dict[str, np.ndarray]      # column -> (k, n); a column the predictor cannot read is absent
    perms: np.ndarray                  # (k, n)
    columns: list[str]
    member_base: list[np.ndarray]      # each scorer's own logit, unshuffled (n,)
    members: list[dict[str, np.ndarray]]   # each scorer's own logits, column -> (k, n), for the columns in scores


def permuted_scores(scorers: list, register: pd.DataFrame, perms: np.ndarray) -> Permuted:
    """Shuffle each register column by each of ``perms`` and re-run every scorer (``scorers.Scorer``)."""
    with ExitStack() as stack:
        for sc in scorers:
            stack.enter_context(sc)
        return _permuted_scores(scorers, register, perms)


def _permuted_scores(scorers: list, register: pd.DataFrame, perms: np.ndarray) -> Permuted:
    columns = [str(c) for c in register.columns]
    base_p = [sc.base() for sc in scorers]
    base = np.mean([to_logit(p) for p in base_p], axis=0)
    scores: dict[str, np.ndarray] = {}
    read = [c for c in columns if any(sc.reads(c) for sc in scorers)]
    total = np.zeros((len(read), len(perms), len(base)))
    per_scorer = []
    index = {c: j for j, c in enumerate(read)}
    for i, sc in enumerate(scorers):
        items = [(c, r) for c in read if sc.reads(c) for r in range(len(perms))]
        step = 64   # items per call (bounded memory)
        mine = np.repeat(to_logit(base_p[i])[None, None, :], len(read), axis=0).repeat(len(perms), axis=1)
        for start in range(0, len(items), step):
            batch = items[start:start + step]
            for (c, r), p in zip(batch, sc.predict(batch, register, perms)):
                mine[index[c], r] = to_logit(p)
        total += mine
        per_scorer.append(mine)
    total /= len(scorers)
    for j, c in enumerate(read):
        if not np.allclose(total[j], base[None, :], rtol=0, atol=1e-9):
            scores[c] = total[j]
    members = [{c: m[index[c]] for c in scores} for m in per_scorer]
    return Permuted(base, scores, perms, columns, [to_logit(p) for p in base_p], members)


def _direction(x: pd.Series, res: Permuted, column: str) -> tuple[float, str | None]:
    """(cosine of value change and logit change, the level it refers to for a categorical)."""
    ds = res.scores[column] - res.base[None, :]                       # (k, n)
    if isinstance(x.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(x.dtype):
        values = x.astype("object").to_numpy()
        best, best_level = np.nan, None
        for level in sorted(map(str, pd.unique(values[pd.notna(values)]))):   # ties: the first level
            ind = (values.astype(str) == level).astype(float)
            dx = np.stack([ind[p] - ind for p in res.perms])
            cos = _cos(dx, ds)
            if np.isfinite(cos) and (not np.isfinite(best) or abs(cos) > abs(best) + 1e-9):
                best, best_level = cos, level
        return best, best_level
    v = x.to_numpy(dtype=float, na_value=np.nan)
    dx = np.stack([v[p] - v for p in res.perms])
    return _cos(dx, ds), None


def _cos(dx: np.ndarray, ds: np.ndarray) -> float:
    ok = np.isfinite(dx) & np.isfinite(ds)
    a, b = dx[ok], ds[ok]
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def importance_rows(res: Permuted, register: pd.DataFrame, y: np.ndarray, keys, seed: int,
                    n_boot: int = N_BOOT) -> pd.DataFrame:
    """One row per register column: auc_drop, drop_se, drop_lo, drop_hi, perm_direction, level,
    base_auc, n_test, n_pos (columns the predictor cannot read: a drop of exactly 0)."""
    from benchmark.evaluate.weighted import resample_counts, w_auc

    y = np.asarray(y, dtype=int)
    ones = np.ones((1, len(y)))
    W = resample_counts(list(keys), y, n_boot, seed)
    base_b = w_auc(y, res.base, W)
    base_auc = float(w_auc(y, res.base, ones)[0])
    rows = []
    for c in res.columns:
        row = {"column": c, "auc_drop": 0.0, "drop_se": 0.0, "drop_lo": 0.0, "drop_hi": 0.0,
               "perm_direction": np.nan, "level": None}
        if c in res.scores:
            s = res.scores[c]
            drop = base_auc - float(np.mean([w_auc(y, s[r], ones)[0] for r in range(len(s))]))
            boot = base_b - np.mean([w_auc(y, s[r], W) for r in range(len(s))], axis=0)
            boot = boot[np.isfinite(boot)]
            direction, level = _direction(register[c].reset_index(drop=True), res, c)
            row.update(auc_drop=drop, drop_se=float(np.std(boot, ddof=1)) if len(boot) > 1 else np.nan,
                       drop_lo=float(np.quantile(boot, 0.025)) if len(boot) else np.nan,
                       drop_hi=float(np.quantile(boot, 0.975)) if len(boot) else np.nan,
                       perm_direction=direction, level=level)
        rows.append(row)
    out = pd.DataFrame(rows)
    out["base_auc"], out["n_test"], out["n_pos"] = base_auc, len(y), int(y.sum())
    return out
