"""The model card's sections on the development data's distribution, subgroups and updates.

    lines = shift_lines(stats)                  # '## Development data (for shift checks)'
    lines = subgroup_lines(run_dir, "xgboost")  # '## Subgroups' from the run's subgroups.csv
    lines = update_lines(meta.get("updates"))   # '## Updates'
    text = updated_card(source_card, history)   # an updated bundle's card: the source's, with its updates

Aggregates only, as everywhere in a bundle.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

MAX_CARD_BYTES = 1 << 20


def _f(v, digits: int = 3) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def _ci(d: dict, key: str, digits: int = 2) -> str:
    v, lo, hi = d.get(key), d.get(f"{key}_lo"), d.get(f"{key}_hi")
    text = _f(v, digits)
    if text != "n/a" and _f(lo) != "n/a" and _f(hi) != "n/a":
        text += f" [{_f(lo, digits)}, {_f(hi, digits)}]"
    return text


def shift_lines(stats: dict | None) -> list[str]:
    """What ``shift_stats.json`` holds, in a few lines (the full aggregates are in the file)."""
    if not stats:
        return []
    reg = stats.get("register") or []
    num = [r for r in reg if r["kind"] == "numeric"]
    out = ["## Development data (for shift checks)", "",
           f"`shift_stats.json` holds aggregates of the {stats.get('n_patients')} training patients for each variable "
           f"the model reads ({len(num)} numeric: mean, SD and quantiles that are each the mean of "
           f"{stats.get('min_patients')} patients' values; {len(reg) - len(num)} categorical: the shares of levels "
           f"held by at least {stats.get('min_patients')} patients), so that `predict` on a labelled cohort can say "
           "which variables moved (standardised differences) and whether that can explain a calibration drift."]
    missing = sorted((r for r in reg if r["missing"] > 0), key=lambda r: -r["missing"])[:5]
    if missing:
        out.append("- Most often missing: " + ", ".join(f"{r['name']} {100 * r['missing']:.0f} %" for r in missing) + ".")
    img = stats.get("images")
    if img:
        parts = []
        if img.get("intensity"):
            parts.append(f"mean intensity {_f(img['intensity']['mean'], 1)} of 255 (SD {_f(img['intensity']['sd'], 1)})")
        if img.get("views"):
            parts.append(f"{_f(img['views']['mean'], 2)} images per patient")
        if img.get("rows") and img.get("columns"):
            parts.append(f"stored size about {_f(img['rows']['mean'], 0)} x {_f(img['columns']['mean'], 0)} px")
        out.append(f"- Images at {img['size']} px: " + ", ".join(parts) + ".")
    return out + [""]


def subgroup_lines(run_dir: Path | None, candidate: str) -> list[str]:
    """The run's subgroup figures of ``candidate`` as a table (nothing when the run has none)."""
    path = None if run_dir is None else Path(run_dir) / "subgroups.csv"
    if path is None or not path.is_file():
        return []
    sub = pd.read_csv(path)
    rows = sub[sub["candidate"].astype(str) == candidate]
    if rows.empty:
        return []
    out = ["## Subgroups (nested cross-validation)", "",
           "| subgroup | level | patients | AFF | AUC [95 % CI] | O/E [95 % CI] | slope [95 % CI] |", "|---|---|---|---|---|---|---|"]
    for _, r in rows.iterrows():
        n, pos = int(r["n"]), int(r["n_pos"])
        if str(r["status"]) != "ok":   # a count below 5 leaves the site as "fewer than 5", never as a number
            aff = "fewer than 5" if pos < 5 else "(NFF fewer than 5)"
            out.append(f"| {r['subgroup']} | {r['level']} | {n} | {aff} | too small | | |")
            continue
        d = r.to_dict()
        out.append(f"| {r['subgroup']} | {r['level']} | {n} | {pos} | {_ci(d, 'auc', 3)} | {_ci(d, 'oe_ratio')} | "
                   f"{_ci(d, 'cal_slope')} |")
    differs = rows[rows.get("differs", pd.Series(False, index=rows.index)).astype(str).str.lower().isin(["true", "1"])]
    out += ["", ("Levels that differ from the other patients beyond their interval (Holm-adjusted): "
                 + ", ".join(f"{a} = {b}" for a, b in zip(differs["subgroup"], differs["level"])) + ".")
            if len(differs) else "No level differs from the other patients beyond its interval (Holm-adjusted).", ""]
    return out


def update_lines(history: list[dict] | None) -> list[str]:
    """The update history, oldest first (nothing for a model as exported)."""
    if not history:
        return []
    out = ["## Updates", "",
           "This model was recalibrated at another site after export (`predict --update`); the map applies to its "
           "probabilities, and the decision and conformal thresholds were carried through it, so the ranking, the "
           "patients flagged and the prediction sets are the source model's.", ""]
    for i, h in enumerate(history, 1):
        before, after = h.get("before") or {}, h.get("after_out_of_fold") or {}
        out.append(f"{i}. {h.get('created')}: `{h.get('kind')}` update at {h.get('site')} ({h.get('n')} patients, "
                   f"{h.get('n_pos')} AFF; {h.get('folds')}-fold cross-validation): logit p' = {_f(h.get('intercept'))} + "
                   f"{_f(h.get('slope'))} logit p. O/E {_ci(before, 'oe_ratio')} before, {_ci(after, 'oe_ratio')} after "
                   f"(out-of-fold); calibration slope {_ci(before, 'cal_slope')} before, {_ci(after, 'cal_slope')} after. "
                   f"Source bundle SHA-256 (of its bundle.json) {h.get('source_bundle_sha256')}.")
    return out + [""]


def updated_card(source_card: str, history: list[dict]) -> str:
    """An updated bundle's card: a note on top, the source's card, and the update history."""
    body = source_card.encode("utf-8")[:MAX_CARD_BYTES].decode("utf-8", errors="ignore")
    if "\n## Updates\n" in body:   # an update of an update: the history is rewritten whole
        body = body[:body.index("\n## Updates\n")] + "\n"
    last = history[-1]
    note = (f"**Updated model: the source model recalibrated (`{last.get('kind')}`) at {last.get('site')}; the "
            "figures of the source card below describe the source model, and its nested-CV performance claim holds "
            "for discrimination only. This bundle's cv_figures.json holds the out-of-fold figures of the update at "
            "that site.**")
    return note + "\n\n" + body.rstrip() + "\n\n" + "\n".join(update_lines(history))
