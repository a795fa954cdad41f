"""Q3, combining: the best fusion against the best single-modality model, the ways of combining, uncertainty.

A fusion gain is checked against what the single models could reach (their oracles, or their
learning curves: ``_fusion_caveat``); uncertainty is called lower with fusion only when
entropy is lower and log loss and Brier score are not worse by more than their margins
(``_uncertainty``).
"""

from __future__ import annotations

import math

import pandas as pd

from benchmark.protocol import ROLES
from benchmark.report.findings.tables import (QUESTIONS, SINGLE_MODALITIES, STILL_RISING, UNDERTRAINED_GAP, Answer,
                                              _inner, _Run, best_by_inner)
from benchmark.report.findings.wording import (_equivalent, _evidence, _find, _label, _not_shown, _signed,
                                               _test_full, comparison_clause, fmt, fmt_ci, fmt_p, outcome)
from benchmark.report.run_files import num

CEILING_TIE = 0.01  # joint oracle within this of a single-modality oracle: the other modality adds almost nothing


def _best_single(run: _Run) -> pd.Series | None:
    """The best single-modality model by inner score among the Q3 references (best image, best register)."""
    comp = run.comp
    refs = comp.loc[comp["question"].eq("Q3") & comp["reference_role"].isin(list(ROLES)), "reference"].unique()
    return best_by_inner(run.rows[run.rows["candidate"].isin(refs)])


def _fusion_caveat(run: _Run, fusion: pd.Series) -> tuple[str, list[str]]:
    """(answer clause, detail lines): is a fusion gain explained by a single model short of its ceiling?"""
    joint = run.oracle["fusion"]
    lines, clause = [], ""
    with_oracles = [m for m in SINGLE_MODALITIES if run.oracle[m] is not None]
    if with_oracles:
        for m in with_oracles:
            best, oracle = run.best[m], run.oracle[m]
            if best is None:
                continue
            other = "register" if m == "image" else "image"
            gap = run.gap(best)
            line = (f"- {m}: the best {m} model, {best['candidate']}, reaches AUC {fmt(best['auc'])}, "
                    f"the {m} oracle {fmt(oracle['auc'])}" + (f" ({fmt(gap)} above it)" if not math.isnan(gap) else ""))
            tie = joint is not None and num(joint["auc"]) - num(oracle["auc"]) <= CEILING_TIE
            if joint is not None:
                line += (f"; at the Bayes limit both modalities together reach {fmt(joint['auc'])}"
                         + (f", so {other} data add almost nothing to {m} data" if tie else ""))
            lines.append(line + ".")
            explains = gap > UNDERTRAINED_GAP and num(oracle["auc"]) >= num(fusion["auc"])
            if explains and not clause:
                if tie:
                    clause = (f"but the gain is explained by an under-trained {m} model, not by complementary "
                              f"modalities: {best['candidate']} stands {fmt(gap)} AUC below the {m} oracle, and at the "
                              f"Bayes limit {other} data add almost nothing to {m} data ({m} oracle AUC "
                              f"{fmt(oracle['auc'])}, both together {fmt(joint['auc'])})")
                else:
                    clause = (f"but an under-trained {m} model may explain the gain: {best['candidate']} stands "
                              f"{fmt(gap)} AUC below the {m} oracle, and that oracle alone (AUC {fmt(oracle['auc'])}) "
                              f"reaches what {fusion['candidate']} reached, so this is not by itself evidence that the "
                              "modalities complement each other")
        head = ("What the single models could reach (a fusion gain over a single model that stands far below its "
                f"oracle, more than {UNDERTRAINED_GAP} AUC, may only make up for that model):")
        return clause, ["", head, ""] + lines
    for m in SINGLE_MODALITIES:
        best = run.best[m]
        lines += run.learning_lines(best)
        if best is not None and not run.still_improving(best).empty and not clause:
            clause = (f"but the best {m} model, {best['candidate']}, was still improving when its training budget ran "
                      "out, so the gain may reflect under-trained single models rather than complementary modalities")
    if not lines:
        lines = ["- Whether the single models reached what they could is unknown: the run has no oracle rows and "
                 "studies.csv has no learning curves."]
    head = ("Were the single models still improving? (learning curves from studies.csv: still improving when more "
            "than half of the bag was still improving at the end of its budget (early stopping did not fire), or, "
            f"for a model without early stopping, when the inner score rose by more than {STILL_RISING} from 50 to "
            "100 % of the budget)")
    return clause, ["", head, ""] + lines


def _which_way(run: _Run, fusion: pd.DataFrame, top: pd.Series) -> tuple[str, list[str]]:
    """(answer clause, detail lines): the best fusion by inner score and those not shown worse than it."""
    name = str(top["candidate"])
    head = f"Best way of combining by inner score: **{name}** ({_inner(top)}), AUC {fmt_ci(top, 'auc')}."
    if len(fusion) < 2:
        return "", [head]
    rows = run.comp[run.comp["reference_role"].eq("best_fusion") & run.comp["metric"].eq("auc")]
    if rows["reference"].eq(name).any():
        rows = rows[rows["reference"].eq(name)]
    rows = rows[rows["candidate"].isin(fusion["candidate"])]
    inner = fusion.set_index("candidate")["inner_score"].astype(float) if "inner_score" in fusion.columns else None
    if inner is not None and not rows.empty:  # listed by inner score, best first
        rows = rows.assign(_s=rows["candidate"].map(inner).fillna(-math.inf)).sort_values("_s", ascending=False, kind="stable")
    if rows.empty:
        return ("; the ways of combining were not tested against each other",
                [head, "The fusion strategies are not tested against each other (comparisons.csv has no best_fusion "
                 "rows), so their order on the test set is not evidence."])
    kept = [str(c["candidate"]) for _, c in rows.iterrows() if outcome(c) != "worse"]
    worse = [str(c["candidate"]) for _, c in rows.iterrows() if outcome(c) == "worse"]
    if kept:
        clause = f"; not shown worse than {name} among the ways of combining: {', '.join(kept)}"
    else:
        clause = f"; every other way of combining is worse than {name}"
    lines = [head, "", f"Other ways of combining against {rows['reference'].iloc[0]} (comparisons.csv, role best_fusion):", ""]
    lines += [f"- {comparison_clause(c)}." for _, c in rows.iterrows()]
    lines += ["", f"Not shown worse than the best: {', '.join([name] + kept)}"
              + (f"; shown worse: {', '.join(worse)}." if worse else ".")]
    return clause, lines


def _q3(run: _Run) -> tuple[Answer, list[str]]:
    lines = [f"## {QUESTIONS['q3']}", ""]
    fusion = run.rows[run.rows["modality"].eq("fusion")]

    def cannot(why: str) -> tuple[Answer, list[str]]:
        text = f"Cannot be answered: {why}."
        return Answer("q3", QUESTIONS["q3"], text), lines + [text]

    if fusion.empty:
        return cannot("the run has no fusion candidate with test predictions")
    missing = [m for m in SINGLE_MODALITIES if run.best[m] is None]
    if missing:
        lines.append(f"There is no {' or '.join(missing)} candidate to compare with, so fusion can only be compared "
                     "with the modality that ran.")
    if run.comp is None:
        return cannot("comparisons.csv is missing or empty, so there is no paired test of fusion against the single "
                      "modalities")
    single = _best_single(run)
    top = run.best["fusion"]
    if single is None:
        return cannot("comparisons.csv has no comparison of fusion with a single-modality model")
    ref, name = str(single["candidate"]), str(top["candidate"])
    row = _find(run.comp, name, ref, "auc")
    if row is None:
        return cannot(f"comparisons.csv has no AUC comparison of {name}, the best fusion by inner score, with {ref}")
    which, which_lines = _which_way(run, fusion, top)
    kind = outcome(row)
    subject = f"**{name}**, the best fusion by inner-CV score"
    target = f"**{ref}**, the best single-modality model"
    caveat, caveat_lines = "", []
    if kind == "better":
        text = f"Yes: {subject}, discriminates better than {target}: {_evidence(row)}"
        caveat, caveat_lines = _fusion_caveat(run, top)
    elif kind == "equivalent":
        text = f"No: {subject}, and {target}, are {_equivalent(row)}"
    elif kind == "worse":
        text = f"Worse: {subject}, discriminates worse than {target}: {_evidence(row)}"
    else:
        text = f"Not shown: {subject}, against {target}: {_not_shown(row)}"
    answer = Answer("q3", QUESTIONS["q3"], text + (f"; {caveat}" if caveat else "") + which + ".")

    role = row.get("reference_role", "")
    role = f"best {ROLES[role]} model" if role in ROLES else "best single-modality model"
    lines.append(f"The best single-modality model by inner score is **{ref}** ({role}, {_inner(single)}, "
                 f"AUC {fmt_ci(single, 'auc')}).")
    auc = run.comp[run.comp["metric"].eq("auc") & run.comp["question"].eq("Q3")
                   & run.comp["reference_role"].isin(list(ROLES)) & run.comp["candidate"].isin(fusion["candidate"])]
    for other, group in auc.groupby("reference", sort=False):
        lines += ["", f"Fusion against {other} (AUC, comparisons.csv):", ""]
        lines += [f"- {comparison_clause(c)}." for _, c in group.iterrows()]
    lines += _warm_source_lines(run, fusion)
    lines += caveat_lines + [""] + which_lines + [""]
    lines += _uncertainty(run.comp, name, ref)
    return answer, lines


def _warm_source_lines(run: _Run, fusion: pd.DataFrame) -> list[str]:
    """End-to-end fusion networks against the image candidate they started from (role warm_source)."""
    rows = run.comp[run.comp["metric"].eq("auc") & run.comp["reference_role"].eq("warm_source")
                    & run.comp["candidate"].isin(fusion["candidate"])]
    if rows.empty:
        return []
    lines = ["", "End-to-end fusion networks against the image model they started from (their warm start in "
             "every fold; AUC, comparisons.csv, role warm_source):", ""]
    lines += [f"- {comparison_clause(c)}." for _, c in rows.iterrows()]
    worse = [f"{c['candidate']} ({c['reference']})" for _, c in rows.iterrows() if outcome(c) == "worse"]
    lower = [f"{c['candidate']} ({c['reference']})" for _, c in rows.iterrows()
             if num(c["diff"]) < 0 and outcome(c) != "worse"]
    if worse:
        lines.append(f"- Below the model they started from, on these test patients: {', '.join(worse)}. Their joint "
                     "training with the register data ended with worse discrimination than the image model's own "
                     "weights gave.")
    if lower:
        lines.append(f"- Lower than the model they started from on this sample, but not shown worse after Holm's "
                     f"adjustment: {', '.join(lower)}.")
    for _, c in rows.iterrows():   # why a network ended below its start: its budget, or not that
        if num(c["diff"]) < 0:
            lines += run.learning_lines(pd.Series({"candidate": c["candidate"]}))
    return lines


def _uncertainty(comp: pd.DataFrame, fusion: str, ref: str) -> list[str]:
    """Is uncertainty lower with fusion, and is that earned (proper scoring rules not worse)?"""
    lines = [f"Uncertainty ({fusion} against {ref}):", ""]
    ent = _find(comp, fusion, ref, "entropy_mean")
    if ent is None:
        return lines + ["- Cannot be answered: comparisons.csv has no entropy comparison for this pair."]
    lines.append(
        f"- What was tested: mean predictive entropy lower with fusion (paired {_test_full(ent)}), and log loss and "
        "Brier score, proper scoring rules, not worse with fusion by more than their margins (non-inferiority: the "
        "unfavourable end of the 95 % interval of the difference within the margin). Lower entropy alone could be "
        "overconfidence.")
    lines.append(f"- {_label('entropy_mean')}: {fmt(ent.get('value_candidate'))} with fusion against "
                 f"{fmt(ent.get('value_reference'))}; {comparison_clause(ent, 'fusion', ref)}.")
    proper, unknown, failing = [], [], []
    for m in ("log_loss", "brier"):
        c = _find(comp, fusion, ref, m)
        if c is None:
            unknown.append(_label(m))
            continue
        ni = c.get("noninferior")
        margin = fmt(c.get("margin"))
        verdict = {True: f"not worse by more than the margin {margin}",
                   False: f"not shown to be within the margin {margin} of the reference's",
                   None: "no non-inferiority result stored"}[ni if ni in (True, False) else None]
        if ni is False and outcome(c) == "worse":
            verdict = f"worse with fusion (Holm-adjusted p {fmt_p(c['p_holm'])}), not within the margin {margin}"
        lines.append(f"- {_label(m)}: {fmt(c.get('value_candidate'))} with fusion against {fmt(c.get('value_reference'))}, "
                     f"difference {_signed(c['diff'])} [{fmt(c['lo'])}, {fmt(c['hi'])}]: {verdict}.")
        (proper if ni is True else failing if ni is False else unknown).append(_label(m))
    mi = _find(comp, fusion, ref, "mutual_info_mean")
    if mi is not None:
        lines.append(f"- {_label('mutual_info_mean')} (reported, not part of the verdict): "
                     f"{fmt(mi.get('value_candidate'))} against {fmt(mi.get('value_reference'))}; "
                     f"{comparison_clause(mi, 'fusion', ref)}.")
    kind = outcome(ent)
    if kind != "better":
        word = {"worse": "higher with fusion", "equivalent": "the same with and without fusion, within the margin"}.get(
            kind, "not shown to be lower with fusion")
        lines.append(f"- Verdict: uncertainty is {word}.")
    elif failing:
        lines.append(f"- Verdict: predictions are more confident with fusion (lower entropy), but {' and '.join(failing)} "
                     "is not shown to stay within its margin, so the lower entropy is not earned (it may be "
                     "overconfidence); uncertainty is not called lower.")
    elif unknown:
        lines.append(f"- Verdict: entropy is lower with fusion, but comparisons.csv has no non-inferiority result for "
                     f"{' and '.join(unknown)}, so whether that is earned cannot be said; uncertainty is not called lower.")
    else:
        lines.append("- Verdict: uncertainty is lower with fusion, and earned: entropy is lower, and log loss and Brier "
                     "score are not worse by more than their margins.")
    return lines
