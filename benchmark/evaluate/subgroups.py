"""Discrimination and calibration per subgroup, and whether a subgroup differs from the other patients.

    rows = subgroup_rows(y, prob, groups)                  # one candidate's predictions
    table = subgroup_table(pred, groups_by_key)           # a run: every candidate, repeat 0

``groups`` holds one text column per subgroup (``data.subgroups``: levels of fewer than 5
patients already pooled into ``other``). For each level of each subgroup:

- ``n``, ``n_pos``; a level with fewer than ``MIN_POSITIVES`` AFF or NFF patients is
  ``status = too_small`` and gets no figures (an AUC of four positives is noise, not a number);
- ``auc`` with its 95 % DeLong interval, drawn on the logit scale (a level's AUC near 1 with few
  AFF has a DeLong variance that is too small on the AUC scale); ``oe_ratio`` (observed /
  expected AFF) with the binomial interval of the observed count and ``cal_slope`` with its Wald
  interval (``calibration_ci``);
- the level against the rest of the cohort (independent patients, so not a paired test):
  ``auc_diff`` = AUC(level) - AUC(rest) (its interval from the DeLong variances of both), tested on
  the logit scale, and ``log_oe_diff`` = log O/E(level) - log O/E(rest) with the standard errors
  of both; each a two-sided z test (``p_auc``, ``p_oe``), Holm-adjusted over every test of the call
  (``p_auc_holm``, ``p_oe_holm``); ``differs`` is true when either adjusted p is below 0.05.

Only aggregates: levels and counts, never a patient.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmark.evaluate.calibration_ci import logistic_calibration, oe_interval
from benchmark.evaluate.paired_tests import Z95, delong_auc_variance, holm, z_test

MIN_POSITIVES = 5      # AFF (and NFF) patients a level needs before its figures are given
ALPHA = 0.05
NAN = float("nan")
FIGURES = ("auc", "oe_ratio", "cal_slope")


def _auc(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(AUC, its DeLong variance); NaN with fewer than two patients of a class."""
    if min(int(y.sum()), int((1 - y).sum())) < 2:
        return NAN, NAN
    return delong_auc_variance(y, p)


def _logit_auc(auc: float, var: float) -> tuple[float, float]:
    """logit(AUC) and its standard error (delta method); NaN at 0 or 1, where no interval can be drawn."""
    if not (0.0 < auc < 1.0) or not var == var or var < 0:
        return NAN, NAN
    return math.log(auc / (1 - auc)), math.sqrt(var) / (auc * (1 - auc))


def _level(y: np.ndarray, p: np.ndarray, rest_y: np.ndarray, rest_p: np.ndarray) -> dict:
    auc, var = _auc(y, p)
    lg, se = _logit_auc(auc, var)
    oe, oe_lo, oe_hi, se_log = oe_interval(y, p)
    cal = logistic_calibration(y, p)
    out = {"auc": auc, "auc_lo": 1 / (1 + math.exp(-(lg - Z95 * se))) if se == se else NAN,
           "auc_hi": 1 / (1 + math.exp(-(lg + Z95 * se))) if se == se else NAN,
           "oe_ratio": oe, "oe_ratio_lo": oe_lo, "oe_ratio_hi": oe_hi,
           "cal_slope": cal["slope"], "cal_slope_lo": cal["slope_lo"], "cal_slope_hi": cal["slope_hi"]}
    # against the rest of the patients (independent samples), on the logit scale
    rest_auc, rest_var = _auc(rest_y, rest_p)
    rest_lg, rest_se = _logit_auc(rest_auc, rest_var)
    p_auc, _, _, _ = z_test(lg - rest_lg, math.sqrt(se ** 2 + rest_se ** 2))
    diff = auc - rest_auc
    spread = Z95 * math.sqrt(var + rest_var) if var == var and rest_var == rest_var else NAN
    lo, hi = diff - spread, diff + spread
    rest_oe, _, _, rest_se_log = oe_interval(rest_y, rest_p)
    log_diff = math.log(oe / rest_oe) if oe > 0 and rest_oe > 0 else NAN
    p_oe, log_lo, log_hi, _ = z_test(log_diff, math.sqrt(se_log ** 2 + rest_se_log ** 2))
    out.update(auc_rest=rest_auc, auc_diff=auc - rest_auc, auc_diff_lo=lo, auc_diff_hi=hi, p_auc=p_auc,
               oe_rest=rest_oe, log_oe_diff=log_diff, log_oe_diff_lo=log_lo, log_oe_diff_hi=log_hi, p_oe=p_oe)
    return out


def _order(levels: list[str]) -> list[str]:
    tail = [v for v in ("other", "missing") if v in levels]
    return sorted((v for v in levels if v not in tail), key=_sort_key) + tail


def _sort_key(level: str):
    """Bands ``[65, 80)`` by their lower edge, other levels by name."""
    if level.startswith("[") and "," in level:
        try:
            return (0, float(level[1:].split(",")[0]), level)
        except ValueError:
            pass
    return (1, 0.0, level)


def subgroup_rows(y, prob, groups: pd.DataFrame) -> list[dict]:
    """One row per (subgroup, level): counts, status, figures with intervals, the test against the rest."""
    from benchmark.data.subgroups import pool_levels

    y = np.asarray(y, dtype=float).ravel()
    p = np.clip(np.asarray(prob, dtype=float).ravel(), 1e-12, 1 - 1e-12)
    rows: list[dict] = []
    for i, name in enumerate(groups.columns):
        levels = pool_levels(groups[name].astype(object).reset_index(drop=True))
        for j, level in enumerate(_order(sorted(set(levels.dropna())))):
            inside = (levels == level).to_numpy()
            n, n_pos = int(inside.sum()), int(y[inside].sum())
            row = {"subgroup": str(name), "level": str(level), "n": n, "n_pos": n_pos}
            rest = ~inside
            small = min(n_pos, n - n_pos) < MIN_POSITIVES
            rest_small = min(int(y[rest].sum()), int((1 - y[rest]).sum())) < MIN_POSITIVES
            if small:
                row["status"] = "too_small"
            else:
                row["status"] = "ok"
                row.update(_level(y[inside], p[inside], y[rest], p[rest]))
                if rest_small:   # nothing to compare with
                    row.update(p_auc=NAN, p_oe=NAN)
            rows.append(row)
    p_all = [r.get(k, NAN) for r in rows for k in ("p_auc", "p_oe")]
    adjusted = holm(p_all)
    for k, r in enumerate(rows):
        r["p_auc_holm"], r["p_oe_holm"] = float(adjusted[2 * k]), float(adjusted[2 * k + 1])
        r["differs"] = bool(r["p_auc_holm"] < ALPHA or r["p_oe_holm"] < ALPHA)
    return rows


COLUMNS = ["candidate", "modality", "subgroup", "level", "n", "n_pos", "status", "auc", "auc_lo", "auc_hi",
           "oe_ratio", "oe_ratio_lo", "oe_ratio_hi", "cal_slope", "cal_slope_lo", "cal_slope_hi", "auc_rest",
           "auc_diff", "auc_diff_lo", "auc_diff_hi", "p_auc", "p_auc_holm", "oe_rest", "log_oe_diff",
           "log_oe_diff_lo", "log_oe_diff_hi", "p_oe", "p_oe_holm", "differs"]


def subgroup_table(pred: pd.DataFrame, groups_by_key: pd.DataFrame) -> pd.DataFrame:
    """``subgroups.csv`` of a run: ``subgroup_rows`` of every candidate's pooled outer-test predictions
    (repeat 0: every patient once), oracle rows left out. ``groups_by_key`` is indexed by patient key."""
    test = pred[(pred["set"] == "test") & (pred["repeat"] == 0) & (pred["modality"] != "oracle")]
    out = []
    for cand, rows in test.groupby("candidate", sort=True):
        rows = rows[rows["prob"].notna()]
        if rows.empty:
            continue
        groups = groups_by_key.loc[rows["patient"].to_numpy()].reset_index(drop=True)
        for r in subgroup_rows(rows["y"].to_numpy(), rows["prob"].to_numpy(), groups):
            out.append({"candidate": cand, "modality": rows["modality"].iloc[0], **r})
    return pd.DataFrame(out, columns=COLUMNS)
