"""Q1, images alone: the best image model by inner-CV score, its AUC, and what it finds at 90 % specificity."""

from __future__ import annotations

import math

import pandas as pd

from benchmark.report.findings.tables import QUESTIONS, Answer, _at_chance, _chance_interval, _inner, _Run
from benchmark.report.findings.wording import _parenthesis, fmt, fmt_ci
from benchmark.report.run_files import num

def _sens90(row: pd.Series) -> str:
    """Sensitivity at 90 % specificity: the out-of-fold threshold (deployable) next to the test-optimal one."""
    oof, test = num(row.get("sens_at_spec90_oof")), num(row.get("sens_at_spec90"))
    if math.isnan(oof) and math.isnan(test):
        return ""
    parts = []
    if not math.isnan(oof):
        spec = num(row.get("spec_at_spec90_oof"))
        reached = "" if math.isnan(spec) else f", specificity reached on the test patients {fmt(spec)}"
        parts.append(f"{fmt_ci(row, 'sens_at_spec90_oof')} with the threshold set on out-of-fold data "
                     f"(deployable{reached})")
    if not math.isnan(test):
        parts.append(f"{fmt_ci(row, 'sens_at_spec90')} with the threshold chosen on the test set (optimistic)")
    text = "Sensitivity at 90 % specificity: " + "; ".join(parts)
    if math.isnan(oof):
        text += "; this run's leaderboard has no out-of-fold-threshold value"
    return text + "."


def _q1(run: _Run) -> tuple[Answer, list[str]]:
    lines = [f"## {QUESTIONS['q1']}", ""]
    best = run.best["image"]
    if best is None:
        failed = run.lb[run.lb["modality"].eq("image") & ~run.lb["is_ceiling"]]
        why = " (the image candidates failed; see the caveats)" if not failed.empty else ""
        text = f"Cannot be answered: the run has no image candidate with test predictions{why}."
        return Answer("q1", QUESTIONS["q1"], text), lines + [text]
    name = best["candidate"]
    oof = num(best.get("sens_at_spec90_oof"))
    if _at_chance(best):
        text = (f"At chance: the best image model, **{name}** (by inner-CV score), has AUC {fmt_ci(best, 'auc')}, "
                f"{_chance_interval(best)}")
    else:
        text = f"The best image model, **{name}** (by inner-CV score), reaches AUC {fmt_ci(best, 'auc')}"
        if not math.isnan(oof):
            text += (f" and finds {fmt(oof)} of AFF cases at 90 % specificity with a threshold set on out-of-fold "
                     "data")
    caveat = run.shortfall(best, "image")
    answer = Answer("q1", QUESTIONS["q1"], text + (f"; {caveat}" if caveat else "") + ".")

    detail = (f"The best image model is **{name}** ({_inner(best)}): AUC {fmt_ci(best, 'auc')}, "
              f"average precision {fmt_ci(best, 'ap')}")
    if "sensitivity_thr" in best.index and not math.isnan(num(best.get("sensitivity_thr"))):
        detail += (f", sensitivity {fmt_ci(best, 'sensitivity_thr')} and specificity {fmt_ci(best, 'specificity_thr')} "
                   "at the threshold chosen on inner out-of-fold data")
    lines.append(detail + ".")
    if _at_chance(best):
        lines.append(f"Its AUC has {_chance_interval(best)}: it is not shown to be better than chance.")
    sens = _sens90(best)
    if sens:
        lines.append(sens)
    oracle = run.oracle["image"]
    if oracle is not None:
        gap = run.gap(best)
        gap_text = f"; {name} stands {fmt(gap)} AUC below it" if not math.isnan(gap) else ""
        lines.append(f"The image oracle (exact posterior from the image evidence) reaches AUC {fmt_ci(oracle, 'auc')}{gap_text}.")
    lines += [""] + run.learning_lines(best)
    others = run.rows[run.rows["modality"].eq("image") & run.rows["candidate"].ne(name)]
    if not others.empty:
        lines.append("")
        lines.append("Other image models: " + "; ".join(
            f"{r['candidate']} AUC {fmt_ci(r, 'auc')}" + _parenthesis(["at chance"] * _at_chance(r) + [run.improving_note(r)])
            for _, r in others.iterrows()) + ".")
    return answer, lines
