"""The second site's questions answered in one sentence each, from the external-validation figures.

    answers = validation_answers(ext, cv, meta, shift_rows, subgroup_rows, update)
    [a.title for a in answers]     # discrimination, calibration, threshold, conformal sets, ... (Answer records)
    note = caveat(ext, meta)       # what changes the meaning of all of them (the source run's profile, few AFF)

Every number is a figure of ``validation.validation_figures`` (external: ``ext``; the run's
nested CV: ``cv``), of ``shift_compare`` or ``evaluate.subgroups``; nothing is recomputed. Rules:

- discrimination: the external AUC and the nested-CV AUC come from different patients, so the
  difference gets the interval of independent samples, ``diff -/+ 1.96 sqrt(se_ext^2 + se_cv^2)``
  (each se from its 95 % DeLong interval); "as well as" when that interval includes 0;
- calibration drifted when the O/E interval excludes 1, the calibration-in-the-large interval
  excludes 0, or the slope interval excludes 1 (mean and weak calibration, Van Calster et al. 2016);
  "predicts 32 % too many AFF" is ``1 / (O/E) - 1``; when it drifted, the prevalence here and in
  development, the register variables that moved (``shift_compare.shifted``) and whose
  development distribution would change the model's mean prediction by at least ``EFFECT`` of it
  (``counterfactual_mean``, ``effect``: ``export.external``), largest change first, and the
  image measures that moved;
- threshold: sensitivity and specificity at the exported threshold here and in development;
- conformal sets: coverage among AFF and among NFF against the level, lost when the upper end of
  its Wilson interval lies below the level.
"""

from __future__ import annotations

import math

from benchmark.report.findings.tables import Answer
from benchmark.report.subgroup_report import differing_lines, oe_words

Z95 = 1.959963984540054
FEW_POSITIVES = 50       # fewer AFF patients than this: the intervals are said to be wide
SHOWN_SHIFTS = 3
EFFECT = 0.05            # a moved input explains a drift when its development distribution changes the mean prediction this much


def _n(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _f(v, digits: int = 3) -> str:
    x = _n(v)
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def _ci(fig: dict | None, key: str, digits: int = 3) -> str:
    if not fig:
        return "n/a"
    v, lo, hi = _n(fig.get(key)), _n(fig.get(f"{key}_lo")), _n(fig.get(f"{key}_hi"))
    if math.isnan(v):
        return "n/a"
    return f"{v:.{digits}f}" + ("" if math.isnan(lo) or math.isnan(hi) else f" [{lo:.{digits}f}, {hi:.{digits}f}]")


def _excludes(fig: dict, key: str, value: float) -> bool:
    lo, hi = _n(fig.get(f"{key}_lo")), _n(fig.get(f"{key}_hi"))
    return not (math.isnan(lo) or math.isnan(hi)) and not lo <= value <= hi


def auc_difference(ext: dict, cv: dict) -> tuple[float, float, float]:
    """External minus nested-CV AUC with the 95 % interval of independent samples (NaN when unknown)."""
    se = [(_n(f.get("auc_hi")) - _n(f.get("auc_lo"))) / (2 * Z95) for f in (ext, cv)]
    diff = _n(ext.get("auc")) - _n(cv.get("auc"))
    width = Z95 * math.sqrt(se[0] ** 2 + se[1] ** 2)
    return diff, diff - width, diff + width


def _discrimination(ext: dict, cv: dict | None) -> Answer:
    title = "Does it discriminate as well as in development?"
    here = f"AUC {_ci(ext, 'auc')} here"
    if math.isnan(_n(ext.get("auc"))):
        return Answer("discrimination", title, "Cannot tell: the AUC needs AFF and NFF patients (see the notes).")
    if _n(ext.get("auc_lo")) <= 0.5:
        return Answer("discrimination", title, f"No better than chance here: {here}, an interval that includes 0.5.")
    if not cv or math.isnan(_n(cv.get("auc"))):
        return Answer("discrimination", title, f"{here}; the bundle has no nested-CV figures to compare with.")
    diff, lo, hi = auc_difference(ext, cv)
    against = f"{here} against {_ci(cv, 'auc')} in the nested cross-validation"
    spread = f"the difference, {diff:+.3f} [{lo:+.3f}, {hi:+.3f}] (independent patients, not a paired test)"
    if math.isnan(lo):
        verdict = f"{against.capitalize()}."
    elif lo > 0:
        verdict = f"Better here: {against}; {spread}, excludes 0."
    elif hi < 0:
        verdict = f"Worse here: {against}; {spread}, excludes 0."
    else:
        verdict = f"As well as these patients can tell: {against}; {spread}, includes 0."
    return Answer("discrimination", title, verdict)


def drifted(ext: dict) -> bool:
    """Mean or weak calibration off beyond its interval here."""
    return _excludes(ext, "oe_ratio", 1.0) or _excludes(ext, "citl", 0.0) or _excludes(ext, "cal_slope", 1.0)


def explaining(ext: dict, moved: list[dict]) -> list[dict]:
    """The moved inputs whose development distribution would change the mean prediction here by at least
    ``EFFECT`` of it, largest change first."""
    mean = _n(ext.get("mean_prob"))
    rows = [r for r in moved if not math.isnan(_n(r.get("effect"))) and abs(_n(r["effect"])) >= EFFECT * mean]
    return sorted(rows, key=lambda r: -abs(_n(r["effect"])))


def _causes(ext: dict, cv: dict | None, moved: list[dict]) -> str:
    parts = []
    p_ext, p_cv = _n(ext.get("prevalence")), _n((cv or {}).get("prevalence"))
    if not (math.isnan(p_ext) or math.isnan(p_cv)) and abs(p_ext - p_cv) > 0.2 * p_cv:
        parts.append(f"AFF are {100 * p_ext:.1f} % of the patients here against {100 * p_cv:.1f} % in development "
                     "(a different prevalence moves calibration-in-the-large)")
    mean = 100 * _n(ext.get("mean_prob"))
    named = [f"{r['variable']} (SMD {r['smd']:+.2f}; with its development distribution the model would predict "
             f"{100 * _n(r['counterfactual_mean']):.1f} % AFF on average here instead of {mean:.1f} %)"
             for r in explaining(ext, moved)[:SHOWN_SHIFTS]]
    tried = [r for r in moved if not math.isnan(_n(r.get("effect")))]
    if named:
        parts.append("inputs that moved and move the model's predictions: " + ", ".join(named))
    elif tried:
        parts.append(f"none of the {len(tried)} register variables that moved changes the model's mean prediction "
                     f"by {100 * EFFECT:.0f} % or more when given its development distribution")
    images = [f"{r['variable']} (SMD {r['smd']:+.2f})" for r in moved if r["kind"] == "image"]
    if images:
        parts.append("the images differ too: " + ", ".join(images))
    if not tried and not images and moved:
        parts.append("the inputs that moved most: " + ", ".join(f"{r['variable']} (SMD {r['smd']:+.2f})"
                                                              for r in moved[:SHOWN_SHIFTS]))
    return ("; ".join(parts) + ". ") if parts else ""


def _calibration(ext: dict, cv: dict | None, moved: list[dict]) -> Answer:
    title = "Is it calibrated here?"
    oe = _n(ext.get("oe_ratio"))
    figures = (f"O/E {_ci(ext, 'oe_ratio', 2)}, calibration-in-the-large {_ci(ext, 'citl', 2)}, "
               f"slope {_ci(ext, 'cal_slope', 2)}")
    if math.isnan(oe):
        return Answer("calibration", title, f"Cannot tell ({figures}).")
    if not drifted(ext):
        return Answer("calibration", title, f"Yes, within what these patients can tell: {figures}.")
    slope = _n(ext.get("cal_slope"))
    shape = ""
    if _excludes(ext, "cal_slope", 1.0):
        shape = " and its predictions are too extreme" if slope < 1 else " and its predictions are too modest"
    return Answer("calibration", title,
                  f"No: it {oe_words(oe)}{shape} ({figures}). {_causes(ext, cv, moved)}"
                  "`predict --update intercept` (or `logistic`) recalibrates it for this site.")


def _threshold(ext: dict, cv: dict | None) -> Answer:
    title = "What does the exported threshold give here?"
    t = ext.get("threshold")
    at = f"P(AFF) >= {_f(t)}" if t != "inf" else "a threshold nobody reached in development"
    text = f"At {at}: sensitivity {_ci(ext, 'sensitivity', 2)} and specificity {_ci(ext, 'specificity', 2)} here"
    if cv:
        text += (f", against {_ci(cv, 'sensitivity', 2)} and {_ci(cv, 'specificity', 2)} in development"
                 + ("; a calibration drift moves what a fixed threshold selects" if drifted(ext) else ""))
    return Answer("threshold", title, text + ".")


def _wilson_hi(p: float, n: int) -> float:
    if n <= 0 or math.isnan(p):
        return float("nan")
    z2 = Z95 ** 2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return centre + half


def _conformal(ext: dict) -> Answer | None:
    conf = (ext.get("conformal") or {}).get("90")
    if not conf:
        return None
    n_pos, n = int(ext.get("n_pos") or 0), int(ext.get("n") or 0)
    cov = {"AFF": (_n(conf.get("coverage_aff")), n_pos), "NFF": (_n(conf.get("coverage_nff")), n - n_pos)}
    lost = [k for k, (p, m) in cov.items() if _wilson_hi(p, m) < 0.90]
    shares = " and ".join(f"{100 * p:.0f} % of {k}" for k, (p, _) in cov.items() if not math.isnan(p))
    title = "Do the conformal sets keep their coverage?"
    if not shares:
        return Answer("conformal", title, "Cannot tell without AFF and NFF patients.")
    if lost:
        return Answer("conformal", title, f"Not for {' and '.join(lost)}: the 90 % sets hold the true label for "
                                          f"{shares} patients here, below 90 % beyond chance; the sets assume new "
                                          "patients like the development ones.")
    return Answer("conformal", title, f"Yes: the 90 % sets hold the true label for {shares} patients here "
                                      f"(target 90 % per class; {100 * _n(conf.get('singleton_rate')):.0f} % of the "
                                      "sets name one class).")


def ordered_moved(ext: dict, moved: list[dict]) -> list[dict]:
    """The moved inputs that explain a drift (largest change first), then the image measures, then the rest."""
    first = explaining(ext, moved)
    rest = [r for r in moved if r not in first]
    return first + [r for r in rest if r["kind"] == "image"] + [r for r in rest if r["kind"] != "image"]


def _shift(ext: dict, rows: list[dict], moved: list[dict]) -> Answer | None:
    if not rows:
        return None
    title = "Which inputs moved?"
    n_var = len({r.get("of", r["variable"]) for r in rows if r["kind"] != "image"})
    if not moved:
        return Answer("shift", title, f"None beyond chance: no variable of the {n_var} the model reads, nor the "
                                      "images, differs by a standardised difference above 0.1 with a Holm-adjusted "
                                      "p below 0.05.")
    first = explaining(ext, moved)
    order = ordered_moved(ext, moved)
    shown = ", ".join(f"{r['variable']} ({r['smd']:+.2f})" for r in order[:6])
    lead = "those that move the model's predictions first, then the images, then by size" if first else "largest first"
    return Answer("shift", title, f"{len(moved)} of the inputs beyond chance (|SMD| > 0.1, Holm-adjusted p < 0.05), "
                                  f"{lead}: {shown}{' ...' if len(order) > 6 else ''}; the table below has all of them.")


def _subgroups(rows: list[dict] | None) -> Answer | None:
    if not rows:
        return None
    import pandas as pd

    lines = differing_lines(pd.DataFrame(rows), "")
    title = "Does it do as well in every subgroup?"
    if lines:
        return Answer("subgroups", title, "Not in all: " + " ".join(lines))
    names = ", ".join(dict.fromkeys(r["subgroup"] for r in rows))
    return Answer("subgroups", title, f"No level of {names} differs from the other patients beyond its interval "
                                      "(AUC and O/E, Holm-adjusted); small levels can hide a difference.")


def _update(update: dict | None) -> Answer | None:
    if not update:
        return None
    after, before = update["after"], update["before"]
    signed = "signed" if update.get("signed") else "unsigned (`python -m benchmark keys sign BUNDLE --key KEY` signs it)"
    return Answer("update", f"After the {update['kind']} update?",
                  f"Out-of-fold at this site ({update['folds']}-fold cross-validation): O/E {_ci(after, 'oe_ratio', 2)} "
                  f"(before: {_ci(before, 'oe_ratio', 2)}), calibration-in-the-large {_ci(after, 'citl', 2)}, slope "
                  f"{_ci(after, 'cal_slope', 2)}; AUC {_ci(after, 'auc')} (a recalibration keeps the ranking). The "
                  f"updated model is a new bundle, {signed}: {update['path']}.")


def validation_answers(ext: dict, cv: dict | None, shift_rows: list[dict] | None = None,
                       subgroup_rows: list[dict] | None = None, update: dict | None = None) -> list[Answer]:
    """The answers in reading order (those without data to speak of left out)."""
    from benchmark.report.shift_compare import shifted

    rows = shift_rows or []
    moved = shifted(rows)
    answers = [_discrimination(ext, cv), _calibration(ext, cv, moved), _threshold(ext, cv), _conformal(ext),
               _update(update), _shift(ext, rows, moved), _subgroups(subgroup_rows)]
    return [a for a in answers if a is not None]


def caveat(ext: dict, meta: dict) -> str:
    """What changes the meaning of every answer: the source run's profile, synthetic data, few AFF here."""
    parts = []
    profile = str(meta.get("profile") or "")
    if profile == "smoke":
        parts.append("**A model from a `smoke` run: its numbers mean nothing** about what a model can do (the run "
                     "only checked that everything works)")
    elif profile == "quick":
        parts.append("A model from a `quick` run (small images, few trials): it says little about what a well-trained "
                     "model would do here")
    elif profile:
        parts.append(f"A model from a `{profile}` run")
    if meta.get("synthetic"):
        parts.append("trained on synthetic data")
    n_pos = int(ext.get("n_pos") or 0)
    if n_pos < FEW_POSITIVES:
        parts.append(f"only {n_pos} AFF patients here, so every interval is wide")
    return ("; ".join(parts) + ".") if parts else ""
