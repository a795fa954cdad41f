"""Q2, register data: the neural network (the best MLP) against the best gradient-boosted trees."""

from __future__ import annotations

import math

import pandas as pd

from benchmark.report.findings.q1_images import _sens90
from benchmark.report.findings.tables import (QUESTIONS, Answer, _at_chance, _chance_interval, _inner, _is_mlp,
                                              _is_tree, _Run, best_by_inner)
from benchmark.report.findings.wording import (_equivalent, _evidence, _not_shown, _signed, comparison_clause, fmt,
                                               fmt_ci, outcome)

def _q2_row(run: _Run, mlp: pd.Series | None) -> pd.Series | None:
    """The AUC row of the Q2 comparison: the best MLP (by inner score) against the best trees."""
    if run.comp is None:
        return None
    rows = run.comp[run.comp["question"].eq("Q2") & run.comp["metric"].eq("auc")]
    if rows.empty:
        return None
    if mlp is not None and rows["candidate"].eq(mlp["candidate"]).any():
        rows = rows[rows["candidate"].eq(mlp["candidate"])]
    return rows.iloc[0]


def _q2_sentence(c: pd.Series) -> str:
    mlp, tree = f"**{c['candidate']}**", f"**{c['reference']}**"
    kind = outcome(c)
    if kind == "better":
        return f"Yes, and better: the neural network {mlp} discriminates better than the best trees, {tree}: {_evidence(c)}"
    if kind == "worse":
        return f"No: the neural network {mlp} discriminates worse than the best trees, {tree}: {_evidence(c)}"
    if kind == "equivalent":
        return f"Yes: the neural network {mlp} and the best trees, {tree}, are {_equivalent(c)}"
    if c.get("noninferior") is True:
        return (f"As well, within the margin: the neural network {mlp} is not worse than the best trees, {tree}, by more "
                f"than {fmt(c.get('margin'))} AUC (difference {_signed(c['diff'])} [{fmt(c['lo'])}, {fmt(c['hi'])}]; "
                "equivalence is not shown)")
    return f"Not shown: the neural network {mlp} against the best trees, {tree}: {_not_shown(c)}"


def _q2(run: _Run) -> tuple[Answer, list[str]]:
    lines = [f"## {QUESTIONS['q2']}", ""]
    reg = run.rows[run.rows["modality"].eq("register")]
    if reg.empty:
        text = "Cannot be answered: the run has no register candidate with test predictions."
        return Answer("q2", QUESTIONS["q2"], text), lines + [text]
    mlp = best_by_inner(reg[reg.apply(_is_mlp, axis=1)])
    tree = best_by_inner(reg[reg.apply(_is_tree, axis=1)])
    row = _q2_row(run, mlp)
    if mlp is not None and tree is not None and _at_chance(mlp) and _at_chance(tree):
        # Two models without skill: their paired difference says nothing about register data.
        text = (f"At chance: neither the neural network **{mlp['candidate']}** (AUC {fmt_ci(mlp, 'auc')}) nor the best "
                f"trees, **{tree['candidate']}** (AUC {fmt_ci(tree, 'auc')}), is shown better than chance, so "
                "comparing them says nothing about what register data hold")
    elif row is not None:
        text = _q2_sentence(row)
    elif mlp is not None and tree is not None:
        text = (f"No paired test: comparisons.csv has no row of the neural network **{mlp['candidate']}** (AUC "
                f"{fmt_ci(mlp, 'auc')}) against the best trees, **{tree['candidate']}** (AUC {fmt_ci(tree, 'auc')}), "
                "and their separate intervals do not answer it")
    else:
        missing = "MLP" if mlp is None else "tree"
        text = f"Cannot be answered: the run has no {missing} candidate with test predictions"
    best = run.best["register"]
    if best is not None and _at_chance(best) and not text.startswith("At chance"):
        text += (f"; register data alone are at chance here: the best register model, **{best['candidate']}**, has AUC "
                 f"{fmt_ci(best, 'auc')}, {_chance_interval(best)}")
    answer = Answer("q2", QUESTIONS["q2"], text + ".")

    if mlp is not None:
        lines.append(f"Neural network: **{mlp['candidate']}** ({_inner(mlp)}) reaches AUC {fmt_ci(mlp, 'auc')}, "
                     f"Brier score {fmt_ci(mlp, 'brier')}.")
    else:
        lines.append("No MLP candidate has test predictions, so the neural-network part cannot be answered.")
    if tree is not None:
        lines.append(f"Best gradient-boosted trees by inner score: **{tree['candidate']}** ({_inner(tree)}), "
                     f"AUC {fmt_ci(tree, 'auc')}, Brier score {fmt_ci(tree, 'brier')}.")
    else:
        lines.append("No tree candidate has test predictions, so the trees part cannot be answered.")
    q2 = None if run.comp is None else run.comp[run.comp["question"].eq("Q2")]
    if q2 is not None and not q2.empty:
        lines += ["", "Paired comparisons (comparisons.csv, question Q2):", ""]
        lines += [f"- {comparison_clause(c)}." for _, c in q2.iterrows() if c["metric"] in ("auc", "brier", "log_loss")]
    else:
        lines.append("comparisons.csv has no MLP-versus-trees row, so there is no paired test of the two.")
    lines.append("")
    if best is not None and all(best["candidate"] != r["candidate"] for r in (mlp, tree) if r is not None):
        lines.append(f"The best register model overall by inner score is **{best['candidate']}**, AUC {fmt_ci(best, 'auc')}.")
    if best is not None:
        sens = _sens90(best)
        if sens:
            lines.append(f"{best['candidate']}: {sens[0].lower()}{sens[1:]}")
    oracle = run.oracle["register"]
    if oracle is not None and best is not None:
        gap = run.gap(best)
        gap_text = f"; {best['candidate']} stands {fmt(gap)} AUC below it" if not math.isnan(gap) else ""
        lines.append(f"The register oracle reaches AUC {fmt_ci(oracle, 'auc')}{gap_text}.")
    lines += run.learning_lines(best)
    return answer, lines
