"""Dataset shift: a new cohort against the development data's aggregates (``export.shift_stats``).

    rows = compare_shift(dev_stats, cohort, schema)     # one row per variable (and image measure)
    moved = shifted(rows)                               # the rows that moved, largest |SMD| first

For each register variable the model reads and each image measure:

- numeric: the standardised mean difference ``SMD = (mean_new - mean_dev) / sqrt((sd_new^2 +
  sd_dev^2) / 2)`` (Austin 2009: |SMD| > 0.1 is notable) with its large-sample standard error
  ``sqrt((n1 + n2) / (n1 n2) + SMD^2 / (2 (n1 + n2)))`` and a z test;
- categorical: the multinomial SMD of the level shares (Yang & Dalton 2012: the Mahalanobis
  distance of the share vectors under their pooled covariance) and a chi-square test on the
  counts; levels of the new cohort the development data did not have (``new_levels``, named
  when at least 5 patients hold them) and development levels absent here (``vanished_levels``);
- missingness: the development and new missing shares, and the SMD of the missing indicator
  (its own test, so that a variable recorded less often here counts as a shift too).

p-values are Holm-adjusted over every test of the comparison. A variable has **shifted** when
an |SMD| (of its values or of its missingness) exceeds ``NOTABLE_SMD`` and its Holm-adjusted p
is below 0.05: with hundreds of variables some exceed 0.1 by chance alone, and those are not
named. Only aggregates of the new cohort are reported, never a patient's value.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.evaluate.paired_tests import holm
from benchmark.export.shift_stats import MIN_PATIENTS, image_dims, image_measures, summary

NOTABLE_SMD = 0.1
ALPHA = 0.05
NAN = float("nan")
IMAGE_LABELS = {"intensity": "image mean intensity", "contrast": "image contrast (pixel SD)",
                "views": "images per patient", "rows": "image rows (stored)", "columns": "image columns (stored)"}


def _smd_numeric(dev: dict, new: dict) -> tuple[float, float]:
    """(SMD, its p-value)."""
    pooled = math.sqrt((dev["sd"] ** 2 + new["sd"] ** 2) / 2)
    diff = new["mean"] - dev["mean"]
    if pooled <= 0:
        return (0.0, 1.0) if diff == 0 else (NAN, NAN)
    d = diff / pooled
    n1, n2 = dev["n"], new["n"]
    se = math.sqrt((n1 + n2) / (n1 * n2) + d * d / (2 * (n1 + n2)))
    return d, float(2 * stats.norm.sf(abs(d) / se))


def _smd_binary(p1: float, p2: float, n1: int, n2: int) -> tuple[float, float]:
    var = (p1 * (1 - p1) + p2 * (1 - p2)) / 2
    if var <= 0:
        return (0.0, 1.0) if p1 == p2 else (NAN, NAN)
    d = (p2 - p1) / math.sqrt(var)
    pooled = (p1 * n1 + p2 * n2) / max(n1 + n2, 1)
    se = math.sqrt(pooled * (1 - pooled) * (1 / max(n1, 1) + 1 / max(n2, 1)))
    return d, (float(2 * stats.norm.sf(abs(p2 - p1) / se)) if se > 0 else NAN)


def _smd_categorical(dev: dict[str, float], new: dict[str, float], n1: int, n2: int) -> tuple[float, float]:
    levels = list(dict.fromkeys(list(dev) + list(new)))
    if len(levels) < 2:
        return 0.0, 1.0
    p, q = np.array([dev.get(k, 0.0) for k in levels]), np.array([new.get(k, 0.0) for k in levels])
    t, c = q[1:], p[1:]
    cov = lambda s: np.diag(s) - np.outer(s, s)   # noqa: E731 - the multinomial covariance
    d2 = float((t - c) @ np.linalg.pinv((cov(t) + cov(c)) / 2) @ (t - c))
    table = np.array([p * n1, q * n2])
    table = table[:, table.sum(0) > 0]
    pval = float(stats.chi2_contingency(table)[1]) if table.shape[1] > 1 else 1.0
    return math.sqrt(max(d2, 0.0)), pval


def _numeric_text(s: dict | None) -> str:
    if s is None:
        return "n/a"
    q = s.get("quantiles")
    if q:
        return f"median {q['0.50']:.3g} (IQR {q['0.25']:.3g} to {q['0.75']:.3g}), mean {s['mean']:.3g}"
    return f"mean {s['mean']:.3g} (SD {s['sd']:.3g})"


def _shares_text(shares: dict[str, float]) -> str:
    top = sorted(shares.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{k} {100 * v:.0f} %" for k, v in top) + (" ..." if len(shares) > 3 else "")


def _new_shares(s: pd.Series) -> tuple[dict[str, float], int]:
    counts = s.astype(object).where(s.notna(), None).dropna().map(str).value_counts()
    total = int(counts.sum())
    return ({str(k): c / total for k, c in counts.items()} if total else {}), total


def _row(variable: str, kind: str, dev_text: str, new_text: str, smd: float, p: float, **extra) -> dict:
    return {"variable": variable, "kind": kind, "development": dev_text, "new": new_text, "smd": smd, "p": p,
            **extra}


def _register_rows(dev_rows: list[dict], register: pd.DataFrame, n_dev: int) -> list[dict]:
    out = []
    for d in dev_rows:
        name = d["name"]
        if name not in register.columns:
            continue
        s = register[name]
        miss_new = float(s.isna().mean()) if len(s) else NAN
        n_new = len(s)
        if d["kind"] == "numeric":
            new = summary(s.to_numpy(dtype=float))
            if "mean" in d and new is not None:
                smd, p = _smd_numeric(d, new)
            else:
                smd, p = NAN, NAN
            out.append(_row(name, "numeric", _numeric_text(d if "mean" in d else None), _numeric_text(new), smd, p))
        else:
            new, total = _new_shares(s)
            pooled_new = {k: v for k, v in new.items() if k in d["shares"]}
            unknown = {k: v for k, v in new.items() if k not in d["shares"]}
            if unknown and "other" in d["shares"]:
                pooled_new["other"] = pooled_new.get("other", 0.0) + sum(unknown.values())
            elif unknown:
                pooled_new.update(unknown)
            smd, p = _smd_categorical(d["shares"], pooled_new, d["n"], total) if total else (NAN, NAN)
            named = sorted(k for k, v in unknown.items() if v * total >= MIN_PATIENTS)
            vanished = sorted(k for k in d["shares"] if new.get(k, 0.0) == 0.0 and k != "other")
            out.append(_row(name, "categorical", _shares_text(d["shares"]), _shares_text(new) if new else "n/a", smd, p,
                            new_levels=named, n_new_levels=len(unknown), vanished_levels=vanished))
        if d["missing"] > 0 or miss_new > 0:
            smd, p = _smd_binary(d["missing"], miss_new, n_dev, n_new)
            out.append(_row(f"{name} (missing)", "missing", f"{100 * d['missing']:.1f} % missing",
                            f"{100 * miss_new:.1f} % missing", smd, p, of=name))
    return out


def _image_rows(dev: dict, cohort, roots) -> list[dict]:
    m = image_measures(cohort, int(dev["size"]))
    rows, cols = image_dims(cohort.images["path"].tolist(), roots)
    new = {"views": summary(m["views"]), "intensity": summary(m["intensity"]), "contrast": summary(m["contrast"]),
           "rows": summary(rows), "columns": summary(cols)}
    out = []
    for key, label in IMAGE_LABELS.items():
        d, n = dev.get(key), new.get(key)
        if d is None or n is None:
            continue
        smd, p = _smd_numeric(d, n)
        out.append(_row(label, "image", _numeric_text(d), _numeric_text(n), smd, p))
    return out


def compare_shift(dev: dict | None, cohort, schema: dict) -> list[dict]:
    """Every row of the comparison with ``smd``, ``p``, ``p_holm`` and ``shifted`` (empty without ``dev``)."""
    if not dev:
        return []
    rows = []
    if dev.get("register") and cohort.has_register:
        rows += _register_rows(dev["register"], cohort.register, int(dev.get("n_patients") or 0))
    if dev.get("images") and cohort.has_images:
        rows += _image_rows(dev["images"], cohort, cohort.image_roots)
    adjusted = holm([r["p"] for r in rows])
    for r, ph in zip(rows, adjusted):
        r["p_holm"] = float(ph)
        r["shifted"] = bool(abs(r["smd"]) > NOTABLE_SMD and ph < ALPHA) if math.isfinite(r["smd"]) else False
    return rows


def shifted(rows: list[dict]) -> list[dict]:
    """The rows that shifted, largest |SMD| first (a categorical variable with new or vanished levels too)."""
    moved = [r for r in rows if r["shifted"]]
    return sorted(moved, key=lambda r: -abs(r["smd"]))


def shift_frame(rows: list[dict]) -> pd.DataFrame:
    """The rows as ``shift.csv``: variable, kind, development, new, smd, p, p_holm, shifted, the model's mean
    prediction with the variable at its development distribution and its difference from the mean here
    (``counterfactual_mean``, ``effect``: where measured), notes; largest |SMD| first."""
    cols = ["variable", "kind", "development", "new", "smd", "p", "p_holm", "shifted", "counterfactual_mean", "effect"]
    df = pd.DataFrame([{k: r.get(k) for k in cols} | {"notes": level_notes(r)} for r in rows], columns=cols + ["notes"])
    return df.sort_values("smd", key=lambda s: -s.abs(), na_position="last", kind="stable").reset_index(drop=True)


def level_notes(row: dict) -> str:
    """New and vanished categories in words ('' when none)."""
    parts = []
    if row.get("n_new_levels"):
        named = row.get("new_levels") or []
        shown = f" ({', '.join(named[:5])})" if named else ""
        parts.append(f"{row['n_new_levels']} level(s) not seen in development{shown}")
    if row.get("vanished_levels"):
        parts.append(f"absent here: {', '.join(row['vanished_levels'][:5])}")
    return "; ".join(parts)
