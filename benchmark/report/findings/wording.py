"""Numbers and comparison rows in words: the formatting every findings sentence uses.

Every number is a cell of the run's stored files, written with ``fmt`` (3 decimals; p-values
below 0.001 as ``< 0.001``). A row of ``comparisons.csv`` reads as *better*, *worse*,
*equivalent* or *not shown* (``outcome``), and ``comparison_clause`` says it in one clause::

    outcome(row)                        # 'better' | 'worse' | 'equivalent' | 'not_shown'
    comparison_clause(row)              # 'film better than resnet18: AUC difference +0.054 [...], ...'
"""

from __future__ import annotations

import math

import pandas as pd

from benchmark.report.run_files import num

ALPHA = 0.05  # significance level for Holm-adjusted p-values


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


def _signed(v: object) -> str:
    x = num(v)
    return "n/a" if math.isnan(x) else f"{x:+.3f}"


def _label(metric: str) -> str:
    return {
        "auc": "AUC", "ap": "average precision", "brier": "Brier score", "ece": "ECE", "log_loss": "log loss",
        "entropy_mean": "mean predictive entropy", "mutual_info_mean": "mean mutual information",
        "member_std_mean": "mean member spread", "error_auroc": "error-detection AUROC", "aurc": "AURC",
        "sensitivity_thr": "sensitivity", "specificity_thr": "specificity", "balanced_accuracy": "balanced accuracy",
        "mcc": "MCC", "cal_slope": "calibration slope", "cal_intercept": "calibration intercept",
    }.get(metric, metric)


LOWER_IS_BETTER = ("brier", "log_loss", "ece", "entropy_mean", "mutual_info_mean")


def outcome(c: pd.Series) -> str:
    """``better``, ``worse``, ``equivalent`` or ``not_shown`` for a row of comparisons.csv.

    Better and worse need the verdict *and* ``p_holm < 0.05``; equivalent is the verdict
    ``equivalent`` (the interval within the margin); everything else is not shown.
    """
    verdict, p = str(c.get("verdict")), num(c.get("p_holm"))
    if verdict == "candidate_better" and p < ALPHA:
        return "better"
    if verdict == "reference_better" and p < ALPHA:
        return "worse"
    if verdict == "equivalent":
        return "equivalent"
    return "not_shown"


_SHORT_TESTS = {"delong": "DeLong", "bootstrap": "paired bootstrap", "wilcoxon": "Wilcoxon signed-rank"}


def _test_name(c: pd.Series) -> str:
    """``DeLong``, ``paired bootstrap``, ...: the test's name from the ``test`` cell (short or descriptive)."""
    test = str(c.get("test", "") or "").strip()
    first = test.split(" ")[0].lower() if test else ""
    return _SHORT_TESTS.get(first, test or "paired")


def _test_full(c: pd.Series) -> str:
    """What the ``test`` cell says was tested, e.g. ``bootstrap over test patients (fitted models fixed)``."""
    test = str(c.get("test", "") or "").strip()
    if test.lower() in _SHORT_TESTS:
        return f"{_SHORT_TESTS[test.lower()]} test over the test patients (fitted models fixed)"
    return test or "paired test over the test patients"


def _evidence(c: pd.Series) -> str:
    """``AUC difference +0.054 [0.021, 0.087], DeLong test, Holm-adjusted p = 0.004``."""
    return (f"{_label(c['metric'])} difference {_signed(c['diff'])} [{fmt(c['lo'])}, {fmt(c['hi'])}], "
            f"{_test_name(c)} test, Holm-adjusted p {fmt_p(c['p_holm'])}")


def _margin(c: pd.Series) -> str:
    m = num(c.get("margin"))
    return "" if math.isnan(m) else f"±{fmt(m)}"


def _worse_on_sample(c: pd.Series) -> bool:
    d = num(c.get("diff"))
    return d > 0 if c["metric"] in LOWER_IS_BETTER else d < 0


def _not_shown(c: pd.Series) -> str:
    """``AUC difference -0.012 (worse on this sample, not significant); the data still allow ...``.

    The row's interval is this comparison's own 95 % interval, not adjusted for the others. When
    it excludes no difference but Holm's adjustment leaves the comparison not significant, the
    interval does not "allow" no difference, and the sentence says which holds: the comparison
    alone, not the run's family of comparisons.
    """
    sample = " (worse on this sample, not significant)" if _worse_on_sample(c) else ""
    lo, hi = num(c.get("lo")), num(c.get("hi"))
    if lo > 0 or hi < 0:
        return (f"{_label(c['metric'])} difference {_signed(c['diff'])}{sample}: its own 95 % interval, "
                f"{fmt(lo)} to {fmt(hi)}, excludes no difference, but not after adjusting for the run's other "
                f"comparisons (Holm-adjusted p {fmt_p(c['p_holm'])})")
    return (f"{_label(c['metric'])} difference {_signed(c['diff'])}{sample}; the data still allow a difference "
            f"from {fmt(lo)} to {fmt(hi)} (Holm-adjusted p {fmt_p(c['p_holm'])})")


def _equivalent(c: pd.Series) -> str:
    return (f"equivalent within {_margin(c) or 'the margin'} {_label(c['metric'])} (difference {_signed(c['diff'])} "
            f"[{fmt(c['lo'])}, {fmt(c['hi'])}]: the data rule out a larger difference)")


def comparison_clause(c: pd.Series, cand: str | None = None, ref: str | None = None) -> str:
    """One comparison row in words, whatever its outcome (worse-but-not-significant included)."""
    cand, ref = cand or str(c["candidate"]), ref or str(c["reference"])
    kind = outcome(c)
    if kind == "better":
        return f"{cand} better than {ref}: {_evidence(c)}"
    if kind == "worse":
        return f"{cand} worse than {ref}: {_evidence(c)}"
    if kind == "equivalent":
        return f"{cand} and {ref} {_equivalent(c)}"
    return f"{cand} against {ref} not shown either way: {_not_shown(c)}"


def _find(comp: pd.DataFrame | None, cand: str, ref: str, metric: str) -> pd.Series | None:
    if comp is None or comp.empty:
        return None
    rows = comp[comp["candidate"].eq(cand) & comp["reference"].eq(ref) & comp["metric"].eq(metric)]
    return None if rows.empty else rows.iloc[0]


def _parenthesis(parts: list[str]) -> str:
    """`` (a; b)`` of the non-empty ``parts``, '' when none."""
    parts = [p for p in parts if p]
    return f" ({'; '.join(parts)})" if parts else ""
