"""Q3's uncertainty part: is each prediction's uncertainty lower with fusion, and is that earned?

"Lower" needs all of (``uncertainty_verdict``):

- the mean-entropy row is Holm-significant in fusion's favour (*better*);
- and lower by more than its stated margin: the whole 95 % interval of the difference lies
  beyond ``-margin`` (a difference inside the margin the same run calls negligible is no
  practical difference);
- and log loss and Brier score are not worse: non-inferior within their margins **and** not
  worse on the sample (difference <= 0). Entropy is that of the scored ``prob``, the very
  prediction log loss and Brier score are computed on, so a lower entropy with a worse proper
  score is overconfidence (with noisy labels, for one), not lower uncertainty.

Otherwise the verdict names what held and what did not, one clause each::

    lower, text = uncertainty_verdict(entropy_row, {"log_loss": row, "brier": row})
    lines = uncertainty_lines(comp, "late_average", "resnet18")
"""

from __future__ import annotations

import math

import pandas as pd

from benchmark.report.findings.wording import (_find, _label, _signed, _test_full, comparison_clause, fmt, fmt_p,
                                               outcome)
from benchmark.report.run_files import flag, num

PROPER = ("log_loss", "brier")


def _entropy_clause(ent: pd.Series) -> tuple[bool, str]:
    """(held, clause) for the mean-entropy row: lower by more than its margin, Holm-significant."""
    margin, lo, hi = num(ent.get("margin")), num(ent.get("lo")), num(ent.get("hi"))
    kind = outcome(ent)
    interval = f"{_signed(ent.get('diff'))} [{fmt(lo)}, {fmt(hi)}]"
    if kind == "better" and not math.isnan(margin) and hi < -margin:
        return True, f"entropy lower by more than its margin ±{fmt(margin)} ({interval})"
    if kind == "better":
        return False, (f"entropy lower ({interval}) but not by more than its margin ±{fmt(margin)}, "
                       "so by no practical amount")
    if kind == "worse":
        return False, f"entropy higher with fusion ({interval})"
    if kind == "equivalent":
        return False, f"entropy the same within its margin ±{fmt(margin)} ({interval})"
    return False, f"entropy not shown lower ({interval}, Holm-adjusted p {fmt_p(ent.get('p_holm'))})"


def _proper_clause(metric: str, c: pd.Series | None) -> tuple[bool, str]:
    """(held, clause) for a proper score: non-inferior within its margin and not worse on the sample."""
    name = _label(metric)
    if c is None:
        return False, f"{name} has no comparison row"
    diff, margin = num(c.get("diff")), fmt(c.get("margin"))
    ni = flag(c.get("noninferior"))
    interval = f"{_signed(diff)} [{fmt(c.get('lo'))}, {fmt(c.get('hi'))}]"
    if outcome(c) == "worse":
        return False, f"{name} worse with fusion ({interval}, Holm-adjusted p {fmt_p(c.get('p_holm'))})"
    if ni is not True:
        return False, f"{name} not shown within its margin {margin} ({interval})"
    if diff > 0:
        return False, f"{name} worse on this sample ({interval}), though within its margin {margin}"
    return True, f"{name} not worse ({interval}, within its margin {margin})"


def uncertainty_verdict(ent: pd.Series, proper: dict[str, pd.Series | None]) -> tuple[bool, str]:
    """(lower, the verdict sentence) from the mean-entropy row and the log-loss and Brier rows."""
    parts = [_entropy_clause(ent)] + [_proper_clause(m, proper.get(m)) for m in PROPER]
    held, failed = [t for ok, t in parts if ok], [t for ok, t in parts if not ok]
    if not failed:
        return True, f"uncertainty is lower with fusion, and earned: {'; '.join(held)}"
    text = "uncertainty is not called lower with fusion: " + "; ".join(failed)
    if held:
        text += f" (what held: {'; '.join(held)})"
    worse_score = any(c is not None and num(c.get("diff")) > 0 for c in proper.values())
    if outcome(ent) == "better" and worse_score:
        text += "; lower entropy with a worse proper score is overconfidence, not lower uncertainty"
    return False, text


def uncertainty_lines(comp: pd.DataFrame, fusion: str, ref: str) -> list[str]:
    """The detail lines of the uncertainty comparison of ``fusion`` against ``ref``, with the verdict."""
    lines = [f"Uncertainty ({fusion} against {ref}):", ""]
    ent = _find(comp, fusion, ref, "entropy_mean")
    if ent is None:
        return lines + ["- Cannot be answered: comparisons.csv has no entropy comparison for this pair."]
    lines.append(
        f"- What was tested: mean predictive entropy of the scored prediction lower with fusion by more than its "
        f"margin (paired {_test_full(ent)}, Holm-adjusted), and log loss and Brier score, proper scoring rules of the "
        "same prediction, not worse (within their margins and not worse on the sample). Lower entropy alone could "
        "be overconfidence.")
    lines.append(f"- {_label('entropy_mean')}: {fmt(ent.get('value_candidate'))} with fusion against "
                 f"{fmt(ent.get('value_reference'))}; {comparison_clause(ent, 'fusion', ref)}.")
    proper = {m: _find(comp, fusion, ref, m) for m in PROPER}
    for m, c in proper.items():
        if c is not None:
            lines.append(f"- {_label(m)}: {fmt(c.get('value_candidate'))} with fusion against "
                         f"{fmt(c.get('value_reference'))}; {comparison_clause(c, 'fusion', ref)}.")
    mi = _find(comp, fusion, ref, "mutual_info_mean")
    if mi is not None:
        lines.append(f"- {_label('mutual_info_mean')} of the bag's members (reported, not part of the verdict): "
                     f"{fmt(mi.get('value_candidate'))} against {fmt(mi.get('value_reference'))}; "
                     f"{comparison_clause(mi, 'fusion', ref)}.")
    lines.append(f"- Verdict: {uncertainty_verdict(ent, proper)[1]}.")
    return lines
