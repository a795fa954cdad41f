"""The findings put together: the answers, the profile note, the introduction, the sections, the caveats.

    findings = build_findings(lb, comp, manifest, studies)     # Findings: answers, profile, intro, sections
    write_findings(run_dir)                                     # findings.md, and its markdown returned
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from benchmark.protocol import ROLES
from benchmark.report.explain_files import ExplainFiles, read_explain
from benchmark.report.findings.missing_images import missing_section
from benchmark.report.findings.q1_images import _q1
from benchmark.report.findings.q2_register import _q2
from benchmark.report.findings.q3_fusion import _q3, combining_verdict
from benchmark.report.findings.risk import risk_section
from benchmark.report.findings.tables import Findings, _Run
from benchmark.report.findings.weights import weights_section
from benchmark.report.findings.wording import fmt, outcome
from benchmark.report.run_files import (
    RunFiles, budget_text, num, profile_of, read_comparisons, read_leaderboard, read_manifest, read_studies, safe_text, smallest,
)
from benchmark.report.subgroup_report import read_subgroups, subgroup_section

SMALL_IMAGES_PX = 128  # profiles below this image size (or FEW_TRIALS) get the "says little" warning
FEW_TRIALS = 20


def _intro(run: _Run) -> str:
    counts = run.lb[~run.lb["is_ceiling"]]
    n = counts["n_patients"].max() if "n_patients" in counts.columns else math.nan
    pos = counts["n_pos"].max() if "n_pos" in counts.columns else math.nan
    cohort = "a synthetic cohort" if run.manifest.get("dataset", {}).get("synthetic") else "the cohort"
    if not math.isnan(num(n)) and not math.isnan(num(pos)):
        cohort += f" of {int(n)} patients, {int(pos)} of them AFF"
    return (f"Pooled outer-test estimates on {cohort}, with 95 % patient-level bootstrap confidence intervals in "
            "brackets. The best candidate of a kind is the one with the highest inner cross-validation score "
            "(inner_score), never the one with the best test number. Differences come from paired tests on the same "
            "test patients (comparisons.csv), Holm-adjusted; separate intervals are never compared.")


def _profile(manifest: dict) -> str:
    """The profile and what it cannot tell, from the manifest's cells."""
    name, s = profile_of(manifest)
    if not name and not s:
        return ("**Profile unknown**: manifest.json is missing or records no profile, so how much training and search "
                "these numbers reflect is unknown.")
    budget = []
    if "outer_folds" in s and "inner_folds" in s:
        budget.append(f"{s['outer_folds']} x {s['inner_folds']} folds")
    if "n_trials" in s:
        budget.append(f"{budget_text(s['n_trials'])} trials per study")
    if "image_size" in s:
        budget.append(f"{s['image_size']} px images")
    if "max_epochs" in s:
        budget.append(f"at most {budget_text(s['max_epochs'])} epochs per fit")
    head = f"**Profile `{safe_text(name) or 'unnamed'}`**" + (f" ({', '.join(budget)})" if budget else "")
    size, trials = num(s.get("image_size")), smallest(s.get("n_trials"))
    if name == "smoke":
        return f"{head}: a check that everything runs; its numbers mean nothing about the models."
    if name == "quick" or size < SMALL_IMAGES_PX or trials < FEW_TRIALS:
        return (f"{head}: small images and few trials, so the numbers say little about what the models can reach, "
                "least of all the image and end-to-end fusion networks; run `standard` (one GPU) for that and "
                "`paper` for numbers to publish.")
    return f"{head}: the answers hold for this budget; a larger search or longer training may change them."


def _caveats(run: _Run) -> list[str]:
    lines = ["## Caveats", ""]
    rows = run.rows
    pos = rows["n_pos"].max() if "n_pos" in rows.columns and not rows.empty else math.nan
    if not math.isnan(num(pos)):
        widest = None
        if {"auc_lo", "auc_hi"} <= set(rows.columns) and rows["auc_lo"].notna().any():
            width = rows["auc_hi"].astype(float) - rows["auc_lo"].astype(float)
            widest = rows.loc[width.idxmax()]
        example = f" (for example, {widest['candidate']}'s AUC interval is [{fmt(widest['auc_lo'])}, {fmt(widest['auc_hi'])}])" if widest is not None else ""
        lines.append(f"- Few positives: only {int(pos)} AFF patients, so intervals are wide{example} and small differences are not evidence.")
    comp = run.comp
    if comp is not None:
        families = sorted(f for f in comp["holm_family"].unique() if f)
        if families:
            named = ("the AUC rows (primary) and the other metrics (secondary)" if families == ["primary", "secondary"]
                     else ", ".join(families))
            lines.append(f"- Multiple comparisons: p-values are Holm-adjusted within each family of comparisons.csv, "
                         f"{named}; an unadjusted p below the significance level that does not survive adjustment is "
                         "not a finding.")
        else:
            lines.append("- Multiple comparisons: p-values are Holm-adjusted over all comparisons in comparisons.csv; "
                         "an unadjusted p below the significance level that does not survive adjustment is not a finding.")
        lines.append("- 'Not shown' is not 'no difference': only a result within the stated margin (equivalent) rules "
                     "a meaningful difference out.")
    lines.append(
        "- Selection: the best models were chosen by inner cross-validation only, so their test estimates are not "
        "inflated by the choice; ranking all candidates by their test numbers in the table below would be."
    )
    st = run.studies
    if st is not None and "timed_out" in st.columns:
        cut = st[st["timed_out"].map(lambda v: v is True)]
        for cand, g in cut.groupby("candidate", sort=False):
            folds = ", ".join(str(int(f)) for f in g["outer_fold"])
            lines.append(f"- {cand}: the study's time limit (a safety net) stopped the search before its trial budget "
                         f"in outer fold {folds}.")
    failed = run.lb[~run.lb["is_ceiling"] & ~run.lb["status"].isin(["ok"])]
    for _, r in failed.iterrows():
        reason = safe_text(r.get("info")) or "no reason recorded"
        kind = "failed" if r["status"] == "failed" else f"is {r['status']}"
        lines.append(f"- {r['candidate']} {kind}: {reason}.")
    return lines


def key_comparisons(lb: pd.DataFrame, comp: pd.DataFrame | None) -> pd.DataFrame:
    """The AUC rows of comparisons.csv behind the answers, in answer order, with a ``label``
    (``Q2: mlp − xgboost``) and an ``outcome``: Q2 rows, every fusion against the best image and
    the best register model, the other fusions against the best fusion. Empty without rows."""
    columns = list(comp.columns) + ["label", "outcome"] if comp is not None else ["label", "outcome"]
    run = _Run(lb, comp, {}, None)
    if run.comp is None:
        return pd.DataFrame(columns=columns)
    auc = run.comp[run.comp["metric"].eq("auc")]
    parts = [auc[auc["question"].eq("Q2")]]
    parts.append(auc[auc["question"].eq("Q3") & auc["reference_role"].isin(list(ROLES))])
    parts.append(auc[auc["reference_role"].eq("best_fusion")])
    rows = pd.concat(parts).drop_duplicates(subset=["candidate", "reference", "metric"])
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.assign(label=rows["question"] + ": " + rows["candidate"] + " \u2212 " + rows["reference"],
                       outcome=[outcome(c) for _, c in rows.iterrows()])
    return rows.reset_index(drop=True)


def explained(manifest: dict, ex: ExplainFiles | None) -> bool:
    """Whether the findings speak of explanations: a run made by a harness that computes them
    (its manifest records the ``importance`` setting), or one whose folder holds their tables."""
    if ex is None:
        return False
    has_tables = any(t is not None for t in (ex.importance, ex.missing, ex.localisation)) or bool(ex.notes)
    return has_tables or "importance" in (manifest.get("config") or {})


def build_findings(lb: pd.DataFrame, comp: pd.DataFrame | None, manifest: dict,
                   studies: pd.DataFrame | None = None, subgroups: pd.DataFrame | None = None,
                   explain: ExplainFiles | None = None) -> Findings:
    """The findings (answers and detail) from the tables as ``run_files`` and ``explain_files`` read them
    (``subgroups``: ``subgroups.csv``, when the dataset file names subgroups)."""
    run = _Run(lb, comp, manifest, studies)
    (a1, s1), (a2, s2), (a3, s3) = _q1(run), _q2(run), _q3(run)
    sections = [s1, s2, s3, subgroup_section(subgroups, run.best)]
    if explained(manifest, explain):
        from benchmark.report.findings.saliency import saliency_section

        sections += [risk_section(run, explain), missing_section(explain), saliency_section(run, explain)]
    sections += [weights_section(manifest), _caveats(run)]
    return Findings([a1, a2, a3], _profile(manifest), _intro(run), [s for s in sections if s])


def findings_text(lb: pd.DataFrame, comp: pd.DataFrame | None, manifest: dict,
                  studies: pd.DataFrame | None = None, subgroups: pd.DataFrame | None = None,
                  explain: ExplainFiles | None = None) -> str:
    """The findings as markdown from the tables as ``run_files`` reads them."""
    return build_findings(lb, comp, manifest, studies, subgroups, explain).markdown()


def findings_markdown(run_dir: Path) -> str:
    """The findings of a run folder as markdown (nothing written)."""
    run_dir = Path(run_dir)
    return findings_text(read_leaderboard(run_dir), read_comparisons(run_dir), read_manifest(run_dir),
                         read_studies(run_dir), read_subgroups(run_dir), read_explain(run_dir))


def combining_answer(run_dir: Path) -> tuple[str, str | None]:
    """(kind, the best fusion) of a run folder's Q3 answer (``q3_fusion.combining_verdict``): what
    ``export`` reads to choose the model the evidence supports."""
    run_dir = Path(run_dir)
    return combining_verdict(_Run(read_leaderboard(run_dir), read_comparisons(run_dir), read_manifest(run_dir),
                                  read_studies(run_dir)))


def write_findings(run_dir: Path, run: RunFiles | None = None) -> str:
    """Write ``run_dir/findings.md`` and return its markdown; ``run`` saves reading the tables again.

    >>> md = write_findings(Path("results/quick-1"))      # doctest: +SKIP
    >>> md.splitlines()[0]                                  # doctest: +SKIP
    '# Findings'
    """
    text = (findings_markdown(run_dir) if run is None
            else findings_text(run.leaderboard, run.comparisons, run.manifest, run.studies, read_subgroups(run_dir),
                               read_explain(run_dir)))
    (Path(run_dir) / "findings.md").write_text(text, encoding="utf-8")
    return text
