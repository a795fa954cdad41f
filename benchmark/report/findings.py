"""Plain-words answers to the three questions, written from a run's stored tables.

Reads ``leaderboard.csv``, ``comparisons.csv`` (optional) and ``manifest.json`` (optional)
through ``run_files`` and never recomputes a metric: every number in the text is a cell of ``leaderboard.csv``
or ``comparisons.csv``, formatted with :func:`fmt` (3 decimals; p-values below 0.001 are
written ``< 0.001``). Fusion is said to help only when the Holm-adjusted comparison says
so (verdict ``candidate_better`` and ``p_holm < 0.05``)::

    from benchmark.report.findings import write_findings
    markdown = write_findings(Path("results/quick-1"))   # also writes findings.md there
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from benchmark.protocol import ORACLE_OF, ROLES
from benchmark.report.run_files import RunFiles, num, read_comparisons, read_leaderboard, read_manifest, safe_text

ALPHA = 0.05  # significance level for Holm-adjusted p-values
TREE_FAMILIES = ("xgboost", "lightgbm")  # the register families that are gradient-boosted trees
SINGLE_MODALITIES = tuple(ROLES.values())  # ("image", "register"): what fusion is compared with


# ---------------------------------------------------------------- formatting


def fmt(v: object, digits: int = 3) -> str:
    """``0.91234 -> '0.912'``; missing -> ``'n/a'``."""
    x = num(v)
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def fmt_p(p: object) -> str:
    x = num(p)
    if math.isnan(x):
        return "n/a"
    return "< 0.001" if x < 0.001 else f"= {x:.3f}"


def fmt_ci(row: pd.Series, metric: str) -> str:
    """``'0.912 [0.884, 0.941]'`` from the leaderboard columns ``m, m_lo, m_hi``."""
    v = fmt(row.get(metric))
    lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    if v == "n/a" or math.isnan(num(lo)) or math.isnan(num(hi)):
        return v
    return f"{v} [{fmt(lo)}, {fmt(hi)}]"


def _label(metric: str) -> str:
    return {
        "auc": "AUC", "ap": "average precision", "brier": "Brier score", "ece": "ECE", "log_loss": "log loss",
        "entropy_mean": "mean predictive entropy", "mutual_info_mean": "mean mutual information",
        "member_std_mean": "mean member spread", "error_auroc": "error-detection AUROC", "aurc": "AURC",
        "sensitivity_thr": "sensitivity", "specificity_thr": "specificity", "balanced_accuracy": "balanced accuracy",
        "mcc": "MCC", "cal_slope": "calibration slope", "cal_intercept": "calibration intercept",
    }.get(metric, metric)


# ---------------------------------------------------------------- selecting rows


def _usable(lb: pd.DataFrame) -> pd.DataFrame:
    """Non-oracle candidates with test metrics (status ok or partial)."""
    keep = ~lb["is_ceiling"] & lb["status"].isin(["ok", "partial"])
    if "auc" in lb.columns:
        keep &= lb["auc"].notna()
    return lb[keep]


def best_by_inner(rows: pd.DataFrame) -> pd.Series | None:
    """The row with the highest ``inner_score`` (the only selection score); None if no rows."""
    if rows.empty:
        return None
    if "inner_score" in rows.columns and rows["inner_score"].notna().any():
        return rows.loc[rows["inner_score"].astype(float).idxmax()]
    return rows.iloc[0]


def _oracle(lb: pd.DataFrame, name: str) -> pd.Series | None:
    rows = lb[lb["candidate"].eq(name) & lb["is_ceiling"]]
    return None if rows.empty else rows.iloc[0]


def _is_tree(row: pd.Series) -> bool:
    return str(row.get("family", "")).lower() in TREE_FAMILIES


def _is_mlp(row: pd.Series) -> bool:
    return str(row.get("family", "")).lower() == "mlp"


def _inner(row: pd.Series) -> str:
    return f"inner-CV score {fmt(row.get('inner_score'))}"


def _significant(c: pd.Series) -> bool:
    """Holm-adjusted evidence that the candidate is better (the only basis for a 'fusion helps' claim)."""
    p = num(c.get("p_holm"))
    return c.get("verdict") == "candidate_better" and not math.isnan(p) and p < ALPHA


def _significantly_worse(c: pd.Series) -> bool:
    """Holm-adjusted evidence that the reference is better than the candidate."""
    p = num(c.get("p_holm"))
    return c.get("verdict") == "reference_better" and not math.isnan(p) and p < ALPHA


def _comparison_sentence(c: pd.Series) -> str:
    test = str(c.get("test", "")).strip()
    test = {"delong": "DeLong", "bootstrap": "paired bootstrap", "wilcoxon": "Wilcoxon"}.get(test, test or "paired test")
    return (
        f"{_label(c['metric'])} difference {fmt(c['diff'])} [{fmt(c['lo'])}, {fmt(c['hi'])}], "
        f"{test} test, Holm-adjusted p {fmt_p(c['p_holm'])}"
    )


# ---------------------------------------------------------------- the sections


def _intro(lb: pd.DataFrame, manifest: dict) -> list[str]:
    lines = ["# Findings", ""]
    counts = lb[~lb["is_ceiling"]]
    n = counts["n_patients"].max() if "n_patients" in counts.columns else math.nan
    pos = counts["n_pos"].max() if "n_pos" in counts.columns else math.nan
    cohort = "a synthetic cohort" if manifest.get("dataset", {}).get("synthetic") else "the cohort"
    if not math.isnan(num(n)) and not math.isnan(num(pos)):
        cohort += f" of {int(n)} patients, {int(pos)} of them AFF"
    lines.append(
        f"Pooled outer-test estimates on {cohort}, with 95 % patient-level bootstrap confidence intervals "
        "in brackets. The best candidate of a kind is the one with the highest inner cross-validation score "
        "(inner_score), never the one with the best test number."
    )
    return lines + [""]


def _q1(lb: pd.DataFrame) -> list[str]:
    lines = ["## Q1. Images alone", ""]
    rows = _usable(lb)
    best = best_by_inner(rows[rows["modality"].eq("image")])
    if best is None:
        failed = lb[lb["modality"].eq("image") & ~lb["is_ceiling"]]
        why = " (the image candidates failed; see the caveats)" if not failed.empty else ""
        return lines + [f"Cannot be answered: the run has no image candidate with test predictions{why}.", ""]
    text = (
        f"The best image model is **{best['candidate']}** ({_inner(best)}): AUC {fmt_ci(best, 'auc')}, "
        f"average precision {fmt_ci(best, 'ap')}"
    )
    if "sensitivity_thr" in best.index and "specificity_thr" in best.index:
        text += (f", sensitivity {fmt_ci(best, 'sensitivity_thr')} and specificity {fmt_ci(best, 'specificity_thr')} "
                 "at the threshold chosen on inner out-of-fold data")
    lines.append(text + ".")
    oracle = _oracle(lb, ORACLE_OF["image"])
    if oracle is not None:
        gap = f"; the gap to {best['candidate']} is {fmt(best['auc_gap'])} AUC" if not math.isnan(num(best.get("auc_gap"))) else ""
        lines.append(f"The image oracle (exact posterior from the image evidence) reaches AUC {fmt_ci(oracle, 'auc')}{gap}.")
    others = rows[rows["modality"].eq("image") & rows["candidate"].ne(best["candidate"])]
    if not others.empty:
        lines.append("Other image models: " + "; ".join(f"{r['candidate']} AUC {fmt_ci(r, 'auc')}" for _, r in others.iterrows()) + ".")
    return lines + [""]


def _q2(lb: pd.DataFrame) -> list[str]:
    lines = ["## Q2. Register data alone", ""]
    reg = _usable(lb)
    reg = reg[reg["modality"].eq("register")]
    if reg.empty:
        return lines + ["Cannot be answered: the run has no register candidate with test predictions.", ""]
    mlp = best_by_inner(reg[reg.apply(_is_mlp, axis=1)])
    tree = best_by_inner(reg[reg.apply(_is_tree, axis=1)])
    if mlp is not None:
        lines.append(f"Neural network: **{mlp['candidate']}** ({_inner(mlp)}) reaches AUC {fmt_ci(mlp, 'auc')}, Brier score {fmt_ci(mlp, 'brier')}.")
    else:
        lines.append("No MLP candidate has test predictions, so the neural-network part cannot be answered.")
    if tree is not None:
        lines.append(f"Best gradient-boosted trees by inner score: **{tree['candidate']}** ({_inner(tree)}), AUC {fmt_ci(tree, 'auc')}, Brier score {fmt_ci(tree, 'brier')}.")
    else:
        lines.append("No tree candidate has test predictions, so the trees part cannot be answered.")
    if mlp is not None and tree is not None:
        overlap = num(mlp.get("auc_lo")) <= num(tree.get("auc_hi")) and num(tree.get("auc_lo")) <= num(mlp.get("auc_hi"))
        lines.append(
            "Their AUC intervals overlap, so these data do not separate them (no paired test between register models is stored)."
            if overlap else
            "Their AUC intervals do not overlap (no paired test between register models is stored)."
        )
    best = best_by_inner(reg)
    if best is not None and all(best["candidate"] != r["candidate"] for r in (mlp, tree) if r is not None):
        lines.append(f"The best register model overall by inner score is **{best['candidate']}**, AUC {fmt_ci(best, 'auc')}.")
    oracle = _oracle(lb, ORACLE_OF["register"])
    if oracle is not None:
        top = best if best is not None else reg.iloc[0]
        gap = f"; the gap to {top['candidate']} is {fmt(top['auc_gap'])} AUC" if not math.isnan(num(top.get("auc_gap"))) else ""
        lines.append(f"The register oracle reaches AUC {fmt_ci(oracle, 'auc')}{gap}.")
    return lines + [""]


def _best_single(lb: pd.DataFrame, comp: pd.DataFrame) -> str | None:
    """Name of the reference that is the best single-modality model (highest inner score)."""
    refs = comp["reference"].unique().tolist()
    rows = lb[lb["candidate"].isin(refs)]
    best = best_by_inner(rows)
    if best is not None:
        return str(best["candidate"])
    return refs[0] if refs else None


def _q3(lb: pd.DataFrame, comp: pd.DataFrame | None) -> list[str]:
    lines = ["## Q3. Does combining images and register data help?", ""]
    rows = _usable(lb)
    fusion = rows[rows["modality"].eq("fusion")]
    if fusion.empty:
        return lines + ["Cannot be answered: the run has no fusion candidate with test predictions.", ""]
    singles = rows[rows["modality"].isin(SINGLE_MODALITIES)]
    missing = [m for m in SINGLE_MODALITIES if singles[singles["modality"].eq(m)].empty]
    if missing:
        lines.append(f"There is no {' or '.join(missing)} candidate to compare with, so fusion can only be compared with the modality that ran.")
    if comp is None or comp.empty:
        return lines + ["Cannot be answered: comparisons.csv is missing or empty, so there is no paired test of fusion against the single modalities.", ""]
    ref = _best_single(lb, comp)
    auc = comp[comp["metric"].eq("auc") & comp["reference"].eq(ref) & comp["candidate"].isin(fusion["candidate"])]
    role = auc["reference_role"].iloc[0] if not auc.empty else ""
    role = f"best {ROLES[role]} model" if role in ROLES else "best single-modality model"
    lines.append(f"The best single-modality model by inner score is **{ref}** ({role}).")
    if auc.empty:
        lines.append("Cannot be answered: comparisons.csv has no AUC comparison of a fusion candidate with it.")
    else:
        winners = [c for _, c in auc.iterrows() if _significant(c)]
        if winners:
            names = "; ".join(f"**{c['candidate']}**, {_comparison_sentence(c)}" for c in winners)
            lines.append(f"Yes: fusion discriminates better than {ref}: {names}.")
        else:
            top = auc.loc[auc["diff"].astype(float).idxmax()]
            lines.append(
                f"No: no fusion candidate has a higher AUC than {ref} after Holm adjustment. "
                f"The largest difference is {top['candidate']}'s, {_comparison_sentence(top)}."
            )
        others = auc[~auc["candidate"].isin([c["candidate"] for c in winners])]
        worse = [c for _, c in others.iterrows() if _significantly_worse(c)]
        rest = [f"{c['candidate']}: {_comparison_sentence(c)}" for _, c in others.iterrows() if not _significantly_worse(c)]
        if worse:
            lines.append(f"Worse than {ref} after Holm adjustment: "
                         + "; ".join(f"{c['candidate']}: {_comparison_sentence(c)}" for c in worse) + ".")
        if winners and rest:
            lines.append("Not significant after Holm adjustment: " + "; ".join(rest) + ".")
        other_ref = comp[comp["metric"].eq("auc") & comp["reference"].ne(ref) & comp["candidate"].isin(fusion["candidate"])]
        for other, group in other_ref.groupby("reference", sort=False):
            parts = [f"{c['candidate']} {'better' if _significant(c) else 'not shown better'}, {_comparison_sentence(c)}"
                     for _, c in group.iterrows()]
            lines.append(f"Against {other}: " + "; ".join(parts) + ".")
    best_fusion = best_by_inner(fusion)
    lines.append("")
    lines.append(
        f"Best fusion strategy by inner score: **{best_fusion['candidate']}** ({_inner(best_fusion)}), "
        f"AUC {fmt_ci(best_fusion, 'auc')}."
        + (" The fusion strategies are not tested against each other, so their order on the test set is not evidence."
           if len(fusion) > 1 else "")
    )
    lines.append("")
    lines += _uncertainty(lb, comp, str(best_fusion["candidate"]), ref)
    return lines + [""]


def _find(comp: pd.DataFrame, cand: str, ref: str, metric: str) -> pd.Series | None:
    rows = comp[comp["candidate"].eq(cand) & comp["reference"].eq(ref) & comp["metric"].eq(metric)]
    return None if rows.empty else rows.iloc[0]


def _uncertainty(lb: pd.DataFrame, comp: pd.DataFrame, fusion: str, ref: str) -> list[str]:
    """Is uncertainty lower with fusion, and is that earned (calibration, error detection)?"""
    lines = [f"Uncertainty ({fusion} against {ref}):", ""]
    unc = [m for m in ("entropy_mean", "mutual_info_mean") if _find(comp, fusion, ref, m) is not None]
    if not unc:
        return lines + ["- Cannot be answered: comparisons.csv has no uncertainty comparison for this pair."]
    lower = False
    for m in unc:
        c = _find(comp, fusion, ref, m)
        sig_lower = num(c["diff"]) < 0 and num(c["p_holm"]) < ALPHA
        lower |= sig_lower
        sig_higher = num(c["diff"]) > 0 and num(c["p_holm"]) < ALPHA
        word = "lower" if sig_lower else "higher" if sig_higher else ("not significantly lower" if num(c["diff"]) < 0 else "not lower")
        lines.append(f"- {_label(m)}: {word} with fusion, {fmt(c.get('value_candidate'))} against {fmt(c.get('value_reference'))}; {_comparison_sentence(c)}.")
    worse, checked = [], []
    for m in ("brier", "ece", "error_auroc"):
        c = _find(comp, fusion, ref, m)
        if c is None:
            continue
        checked.append(m)
        if c["verdict"] == "reference_better" and num(c["p_holm"]) < ALPHA:
            worse.append(_label(m))
        lines.append(f"- {_label(m)}: {fmt(c.get('value_candidate'))} against {fmt(c.get('value_reference'))}; {_comparison_sentence(c)}.")
    if "error_auroc" not in checked:
        line = _error_detection_from_leaderboard(lb, fusion, ref)
        if line:
            checked.append("error_auroc")
            lines.append(line)
            if "below" in line:
                worse.append(_label("error_auroc"))
    if not lower:
        lines.append("- Verdict: fusion does not make predictions measurably more certain.")
    elif not checked:
        lines.append("- Verdict: uncertainty is lower, but comparisons.csv has no calibration or error-detection comparison, so whether it is earned cannot be answered.")
    elif worse:
        lines.append(f"- Verdict: uncertainty is lower but not earned: {', '.join(worse)} is worse with fusion, which points to overconfidence.")
    else:
        lines.append("- Verdict: uncertainty is lower and, as far as these tests show, earned: calibration and error detection are not significantly worse.")
    return lines


def _error_detection_from_leaderboard(lb: pd.DataFrame, fusion: str, ref: str) -> str:
    """Error-detection AUROC of both from the leaderboard (no paired test stored): intervals only."""
    if "error_auroc" not in lb.columns:
        return ""
    a, b = (lb[lb["candidate"].eq(n)] for n in (fusion, ref))
    if a.empty or b.empty or pd.isna(a["error_auroc"].iloc[0]) or pd.isna(b["error_auroc"].iloc[0]):
        return ""
    a, b = a.iloc[0], b.iloc[0]
    below = num(a.get("error_auroc_hi")) < num(b.get("error_auroc_lo"))
    how = ("its interval lies below the reference's, so uncertainty flags errors less well with fusion" if below
           else "the intervals overlap or fusion is higher (no paired test is stored for this metric)")
    return f"- {_label('error_auroc')}: {fmt_ci(a, 'error_auroc')} against {fmt_ci(b, 'error_auroc')}; {how}."


def _caveats(lb: pd.DataFrame, comp: pd.DataFrame | None) -> list[str]:
    lines = ["## Caveats", ""]
    rows = _usable(lb)
    pos = rows["n_pos"].max() if "n_pos" in rows.columns and not rows.empty else math.nan
    if not math.isnan(num(pos)):
        widest = rows.assign(w=rows["auc_hi"].astype(float) - rows["auc_lo"].astype(float)).sort_values("w").iloc[-1] \
            if {"auc_lo", "auc_hi"} <= set(rows.columns) and rows["auc_lo"].notna().any() else None
        example = f" (for example, {widest['candidate']}'s AUC interval is [{fmt(widest['auc_lo'])}, {fmt(widest['auc_hi'])}])" if widest is not None else ""
        lines.append(f"- Few positives: only {int(pos)} AFF patients, so intervals are wide{example} and small differences are not evidence.")
    if comp is not None and not comp.empty:
        lines.append(
            "- Multiple comparisons: p-values are Holm-adjusted over all comparisons in comparisons.csv; "
            "an unadjusted p below the significance level that does not survive adjustment is not a finding."
        )
    lines.append(
        "- Selection: the best models were chosen by inner cross-validation only, so their test estimates are not "
        "inflated by the choice; ranking all candidates by their test numbers in the table below would be."
    )
    failed = lb[~lb["is_ceiling"] & ~lb["status"].isin(["ok"])]
    for _, r in failed.iterrows():
        reason = safe_text(r.get("info")) or "no reason recorded"
        kind = "failed" if r["status"] == "failed" else f"is {r['status']}"
        lines.append(f"- {r['candidate']} {kind}: {reason}.")
    return lines + [""]


def findings_text(lb: pd.DataFrame, comp: pd.DataFrame | None, manifest: dict) -> str:
    """The findings as markdown from the tables as ``run_files`` reads them."""
    parts = _intro(lb, manifest) + _q1(lb) + _q2(lb) + _q3(lb, comp) + _caveats(lb, comp)
    return "\n".join(parts).rstrip() + "\n"


def findings_markdown(run_dir: Path) -> str:
    """The findings of a run folder as markdown (nothing written)."""
    run_dir = Path(run_dir)
    return findings_text(read_leaderboard(run_dir), read_comparisons(run_dir), read_manifest(run_dir))


def write_findings(run_dir: Path, run: RunFiles | None = None) -> str:
    """Write ``run_dir/findings.md`` and return its markdown; ``run`` saves reading the tables again.

    >>> md = write_findings(Path("results/quick-1"))      # doctest: +SKIP
    >>> md.splitlines()[0]                                  # doctest: +SKIP
    '# Findings'
    """
    text = (findings_markdown(run_dir) if run is None
            else findings_text(run.leaderboard, run.comparisons, run.manifest))
    (Path(run_dir) / "findings.md").write_text(text, encoding="utf-8")
    return text
