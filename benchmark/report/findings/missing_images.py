"""The "Images missing" section: fusion candidates for patients without radiographs.

Read from ``missing_modality.csv`` (``evaluate.missing_modality``): each fusion candidate's
pooled outer-test AUC with the images withheld from every test patient (``none``) and from a
random half (``half``), beside the best register model on the same patients. A candidate is
named **worse** than the register model when images are missing when the paired difference's
interval lies below 0, and *below it, not shown worse* when only its estimate does.
"""

from __future__ import annotations

import math

import pandas as pd

from benchmark.report.explain_files import ExplainFiles
from benchmark.report.findings.wording import _signed, fmt, fmt_p
from benchmark.report.run_files import num

TITLE = "Images missing"
SCENARIO_TEXT = {"images": "with its images", "none": "without any images", "half": "with half the patients' images"}


def _ci(row: pd.Series, v: str, lo: str, hi: str) -> str:
    return f"{fmt(row.get(v))} [{fmt(row.get(lo))}, {fmt(row.get(hi))}]"


def worse_without_images(table: pd.DataFrame) -> tuple[list[pd.Series], list[pd.Series]]:
    """(rows shown worse than the register model with no images, rows only below it), scenario ``none``."""
    rows = table[table["scenario"].eq("none")] if "diff_hi" in table.columns else table.iloc[0:0]
    shown = [r for _, r in rows.iterrows() if num(r.get("diff_hi")) < 0]
    below = [r for _, r in rows.iterrows() if num(r.get("diff")) < 0 and not num(r.get("diff_hi")) < 0]
    return shown, below


def missing_section(ex: ExplainFiles | None) -> list[str]:
    lines = [f"## {TITLE}", ""]
    table = None if ex is None else ex.missing
    if table is None or table.empty:
        return lines + ["Not measured: the run has no missing_modality.csv (no fusion candidate that reads images, or "
                        "a run made before the harness measured it)."]
    ref = table["reference"].dropna().iloc[0] if "reference" in table.columns and table["reference"].notna().any() \
        else None
    lines += ["Each fusion candidate's predictor run again on its outer-test parts with the images withheld (a "
              "network then uses its learned missing-image features, a late fusion its other inputs), from every "
              "test patient and from a random half; pooled AUC with 95 % bootstrap intervals"
              + (f", beside the best register model, **{ref}**, on the same patients (paired difference, DeLong's p)."
                 if ref else "."), ""]
    several = table["repeat"].nunique() > 1
    for (cand, rep), g in table.groupby(["candidate", "repeat"], sort=False):
        parts = []
        for _, r in g.iterrows():
            text = f"{SCENARIO_TEXT.get(r['scenario'], r['scenario'])} {_ci(r, 'auc', 'auc_lo', 'auc_hi')}"
            if r["scenario"] != "images" and not math.isnan(num(r.get("diff"))):
                text += (f" (against {r['reference']} {_ci(r, 'ref_auc', 'ref_lo', 'ref_hi')}: "
                         f"{_signed(r['diff'])} [{fmt(r['diff_lo'])}, {fmt(r['diff_hi'])}], p {fmt_p(r.get('p'))})")
            parts.append(text)
        where = f" (repeat {int(rep)})" if several else ""
        lines.append(f"- **{cand}**{where}: " + "; ".join(parts) + ".")
    shown, below = worse_without_images(table)
    lines.append("")
    if ref is None:
        lines.append("No register candidate finished, so nothing is compared with the register model alone.")
    elif shown:
        lines.append("**Worse than the register model alone when images are missing**: "
                     + ", ".join(f"{r['candidate']} ({_signed(r['diff'])} [{fmt(r['diff_lo'])}, {fmt(r['diff_hi'])}])"
                                 for r in shown)
                     + f": for patients without radiographs, use {ref} instead.")
    else:
        lines.append(f"No fusion candidate is shown worse than {ref} alone when images are missing.")
    if below:
        lines.append("Below it without being shown worse: " + ", ".join(
            f"{r['candidate']} ({_signed(r['diff'])} [{fmt(r['diff_lo'])}, {fmt(r['diff_hi'])}])" for r in below) + ".")
    return lines
