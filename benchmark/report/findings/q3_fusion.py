"""Q3, combining: the best fusion against the best image *and* the best register model, the ways of combining.

The two references are each modality's best model by inner-CV score. Their inner scores are
not compared with each other (a modality may get other trial budgets, or a refit whose test
prediction the inner score does not describe), so the best fusion is tested against both
(Holm across both, in comparisons.csv's primary family) and "Yes" needs it to beat both
(``_verdict``). A fusion gain is checked against what the single models could reach (their
oracles, or their learning curves: ``_fusion_caveat``); any other answer says when a single
model falls short of its ceiling or is at chance, since the run then cannot tell what combining
adds. Uncertainty is ``uncertainty``'s.
"""

from __future__ import annotations

import math

import pandas as pd

from benchmark.protocol import ROLES
from benchmark.report.findings.tables import (QUESTIONS, SINGLE_MODALITIES, STILL_RISING, UNDERTRAINED_GAP, Answer,
                                              _at_chance, _inner, _Run, best_by_inner)
from benchmark.report.findings.uncertainty import uncertainty_lines
from benchmark.report.findings.wording import (_equivalent, _evidence, _find, _not_shown, comparison_clause, fmt,
                                               fmt_ci, outcome)
from benchmark.report.run_files import num, profile_of

CEILING_TIE = 0.01  # joint oracle within this of a single-modality oracle: the other modality adds almost nothing


def _references(run: _Run) -> dict[str, pd.Series]:
    """Role (best_image, best_register) -> the leaderboard row of the candidate playing it in comparisons.csv."""
    comp, out = run.comp, {}
    for role in ROLES:
        names = comp.loc[comp["question"].eq("Q3") & comp["reference_role"].eq(role), "reference"].unique()
        rows = run.rows[run.rows["candidate"].isin(names)]
        if not rows.empty:
            out[role] = best_by_inner(rows)
    return out


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
            f"for a network without early stopping, when its full budget scored more than {STILL_RISING} above a fit "
            "with half of it, each on its own complete schedule, on the same inner fold)")
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


def _ref_name(role: str, ref: pd.Series) -> str:
    return f"the best {ROLES[role]} model, **{ref['candidate']}**"


def _against(role: str, ref: pd.Series, row: pd.Series) -> str:
    """One reference's AUC row in words, as a clause of the answer."""
    who, kind = _ref_name(role, ref), outcome(row)
    if kind in ("better", "worse"):
        return f"{kind} than {who} ({_evidence(row)})"
    if kind == "equivalent":
        return f"against {who}, {_equivalent(row)}"
    return f"against {who}, not shown either way: {_not_shown(row)}"


def _verdict(name: str, refs: dict[str, pd.Series], rows: dict[str, pd.Series]) -> tuple[str, str]:
    """(kind, sentence): Yes only when the fusion beats every single modality that ran; Worse when it is
    worse than one; No when it is equivalent to one (it adds no more than the margin over it)."""
    subject = f"**{name}**, the best fusion by inner-CV score,"
    kinds = {role: outcome(c) for role, c in rows.items()}
    first = next((r for k in ("worse", "equivalent") for r in rows if kinds[r] == k), None)
    rest = "; ".join(_against(r, refs[r], rows[r]) for r in rows if r != first)
    if first is not None and kinds[first] == "worse":
        return "worse", f"Worse: {subject} discriminates worse than {_ref_name(first, refs[first])}: " \
                        f"{_evidence(rows[first])}" + (f"; {rest}" if rest else "")
    if first is not None:
        return "no", (f"No: {subject} is not better than {_ref_name(first, refs[first])} by more than the margin: "
                      f"{_equivalent(rows[first])}" + (f"; {rest}" if rest else ""))
    if all(k == "better" for k in kinds.values()):
        both = "both single modalities" if len(rows) == len(ROLES) else "the one single modality this run has"
        return "yes", f"Yes: {subject} discriminates better than {both}: {rest}"
    return "not_shown", f"Not shown: {subject} {rest}"


def _shortfalls(run: _Run, refs: dict[str, pd.Series], kind: str) -> str:
    """The clause that limits a No / Not shown / Worse answer to these models: a single model at chance (Not
    shown: the run cannot tell what combining adds), far below its oracle or still improving (better-trained
    single models may change the answer), or, for Worse, that combining cannot lose at the Bayes limit."""
    parts, chance = [], []
    for role, ref in refs.items():
        m, who = ROLES[role], f"the best {ROLES[role]} model, {ref['candidate']}"
        if _at_chance(ref):
            chance.append(f"{who} (AUC {fmt_ci(ref, 'auc')})")
        elif run.oracle[m] is not None and run.gap(ref) > UNDERTRAINED_GAP:
            parts.append(f"{who}, stands {fmt(run.gap(ref))} AUC below the {m} oracle, so better-trained single models "
                         "may change this answer")
        elif run.oracle[m] is None and not run.still_improving(ref).empty:
            parts.append(f"{who}, was still improving when its training budget ran out, so better-trained single "
                         "models may change this answer")
    if chance and kind == "not_shown":
        parts.insert(0, f"{' and '.join(chance)} {'is' if len(chance) == 1 else 'are'} at chance, so this run cannot "
                        "tell what combining adds")
    if kind == "worse":
        parts.append("this is what the fusion models trained here reached: at the Bayes limit combining both data "
                     "types cannot discriminate worse than either alone")
    return f"but {'; '.join(parts)}" if parts else ""


def _comparable_note(run: _Run) -> str:
    """Why the best fusion is tested against both references rather than the better of them."""
    _, prof = profile_of(run.manifest)
    per = lambda v, m: v.get(m) if isinstance(v, dict) else v   # noqa: E731
    trials, refit = prof.get("n_trials"), prof.get("refit_full")
    differ = []
    if per(trials, "image") != per(trials, "register"):
        differ.append(f"{per(trials, 'image')} image against {per(trials, 'register')} register trials per study")
    refits = [m for m in SINGLE_MODALITIES if per(refit, m)]
    if refits:
        differ.append(f"for {' and '.join(refits)} models a refit on all of outer-train predicts the test patients, "
                      "while the inner score describes the bag")
    head = "The best image and the best register model are each their modality's best by inner-CV score"
    tail = "the best fusion is tested against both (Holm-adjusted), and 'Yes' needs it to beat both."
    if not differ:
        return f"{head}; {tail}"
    return (f"{head}; their inner scores are not comparable across modalities here ({'; '.join(differ)}), so neither "
            f"is called the better single model: {tail}")


def _q3_rows(run: _Run, name: str) -> tuple[dict[str, pd.Series], dict[str, pd.Series]]:
    """(role -> reference row, role -> the AUC row of ``name`` against it) for the references it was compared with."""
    refs = _references(run)
    rows = {role: c for role, ref in refs.items() if (c := _find(run.comp, name, str(ref["candidate"]), "auc")) is not None}
    return {role: refs[role] for role in rows}, rows


def combining_verdict(run: _Run) -> tuple[str, str | None]:
    """(kind, the best fusion by inner score) of the Q3 answer: ``yes`` (better than the best image and
    the best register model), ``no``, ``worse``, ``not_shown``, or ``cannot`` (no fusion, no paired test)."""
    top = run.best["fusion"]
    if top is None or run.comp is None:
        return "cannot", None
    refs, rows = _q3_rows(run, str(top["candidate"]))
    return (_verdict(str(top["candidate"]), refs, rows)[0] if rows else "cannot"), str(top["candidate"])


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
    top = run.best["fusion"]
    name = str(top["candidate"])
    refs, rows = _q3_rows(run, name)
    if not rows:
        return cannot(f"comparisons.csv has no AUC comparison of {name}, the best fusion by inner score, with a "
                      "single-modality model")
    which, which_lines = _which_way(run, fusion, top)
    kind, text = _verdict(name, refs, rows)
    caveat_lines = []
    if kind == "yes":
        caveat, caveat_lines = _fusion_caveat(run, top)
    else:
        caveat = _shortfalls(run, refs, kind)
    answer = Answer("q3", QUESTIONS["q3"], text + (f"; {caveat}" if caveat else "") + which + ".")

    lines += [_comparable_note(run), ""]
    for role, ref in refs.items():
        lines.append(f"- {_ref_name(role, ref)} ({_inner(ref)}, AUC {fmt_ci(ref, 'auc')}).")
    auc = run.comp[run.comp["metric"].eq("auc") & run.comp["question"].eq("Q3")
                   & run.comp["reference_role"].isin(list(ROLES)) & run.comp["candidate"].isin(fusion["candidate"])]
    for other, group in auc.groupby("reference", sort=False):
        lines += ["", f"Fusion against {other} (AUC, comparisons.csv):", ""]
        lines += [f"- {comparison_clause(c)}." for _, c in group.iterrows()]
    lines += _warm_source_lines(run, fusion)
    lines += caveat_lines + [""] + which_lines
    for ref in refs.values():
        lines += [""] + uncertainty_lines(run.comp, name, str(ref["candidate"]))
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
