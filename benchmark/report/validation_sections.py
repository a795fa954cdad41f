"""The parts of ``validation.html`` above the figures: the answers, the dataset shift, the subgroups, the update.

    html = answers_box(answers, note)          # first screen: one sentence per question
    html = shift_section(rows)                 # the inputs that moved, then every comparison folded
    html = subgroup_section_html(rows)         # per level: AUC, O/E, slope, the test against the rest
    html = update_section(update)              # before and after (out-of-fold) of predict --update

Aggregates only: variables, levels, counts and figures, never a patient.
"""

from __future__ import annotations

import html
import math
import re

import pandas as pd

from benchmark.report.findings.tables import Answer
from benchmark.report.shift_compare import NOTABLE_SMD, level_notes
from benchmark.report.subgroup_report import CAPTION as SUBGROUP_CAPTION
from benchmark.report.subgroup_report import subgroup_table_html
from benchmark.report.validation_answers import ordered_moved

CSS = """
.answers{background:#f7f9fc;border:1px solid #dde4ee;border-radius:6px;padding:8px 16px;margin-top:10px}
.answers h2{margin:2px 0 6px;border:none;font-size:19px}
.answer{margin:0 0 8px;font-size:15px;line-height:1.4}
.answer .q{display:block;font-weight:600;color:#1f4e79;font-size:13px;text-transform:uppercase;letter-spacing:.02em}
.answer p{margin:2px 0 0}
.profile{font-size:14px;color:#6b4a00;background:#fff7e0;border-left:3px solid #e0a800;padding:4px 8px;margin:8px 0 2px}
table.shift{border-collapse:collapse;font-size:13px;width:100%}
table.shift th{background:#eef1f5;padding:5px 6px;text-align:left}
table.shift td{padding:3px 6px;border-bottom:1px solid #eee}
table.shift tr.moved td{font-weight:600}
table.subgroups{border-collapse:collapse;font-size:13px}table.subgroups th{background:#eef1f5;padding:4px 6px;text-align:left}
table.subgroups td{padding:3px 6px;border-bottom:1px solid #eee}table.subgroups tr.differs td{font-weight:700}
table.subgroups tr.small td{color:#777}
details.all{margin:6px 0}details.all summary{cursor:pointer;color:#1f4e79}
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _inline(text: str) -> str:
    """Markdown's ``**bold**`` and ``code`` in a sentence, the rest escaped."""
    out = _e(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _lead(text: str) -> str:
    """The sentence with its verdict (``No:``, ``Yes:``, ``Worse here:`` ...) in bold."""
    head, sep, rest = text.partition(":")
    if sep and len(head) <= 40 and "(" not in head and "`" not in head:
        return f"<b>{_inline(head)}:</b>{_inline(rest)}"
    return _inline(text)


def answers_box(answers: list[Answer], note: str) -> str:
    items = "".join(f'<div class="answer" id="answer-{_e(a.key)}"><span class="q">{_e(a.title)}</span>'
                    f"<p>{_lead(a.text)}</p></div>" for a in answers)
    profile = f"<p class='profile' id='caveat'>{_inline(note)}</p>" if note else ""
    return f'<section class="answers" id="answers"><h2>Answers</h2>{items}{profile}</section>'


def _smd(v) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(x) else f"{x:+.2f}"


def _p(v) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(x) else ("< 0.001" if x < 0.001 else f"{x:.3f}")


def _effect(r: dict) -> str:
    try:
        mean, effect = float(r.get("counterfactual_mean")), float(r.get("effect"))
    except (TypeError, ValueError):
        return ""
    if math.isnan(effect):
        return ""
    return f"{100 * mean:.1f} % ({100 * effect:+.1f})"


def _shift_table(rows: list[dict], table_id: str) -> str:
    body = "".join(
        f"<tr{' class=moved' if r['shifted'] else ''}><td>{_e(r['variable'])}</td><td>{_e(r['kind'])}</td>"
        f"<td>{_e(r['development'])}</td><td>{_e(r['new'])}</td><td class='num'>{_smd(r['smd'])}</td>"
        f"<td class='num'>{_p(r.get('p_holm'))}</td><td class='num'>{_e(_effect(r))}</td>"
        f"<td>{_e(level_notes(r))}</td></tr>" for r in rows)
    return (f"<table class='shift' id='{table_id}'><thead><tr><th>variable</th><th>kind</th><th>development</th>"
            "<th>here</th><th>SMD</th><th>Holm p</th><th>mean prediction at its development distribution</th>"
            "<th>notes</th></tr></thead><tbody>" + body + "</tbody></table>")


def shift_section(rows: list[dict] | None, has_stats: bool = True, ext: dict | None = None) -> str:
    head = "<h2 id='shift-section'>Dataset shift</h2>"
    if not has_stats:
        return head + ("<p class='note'>The bundle carries no aggregates of its training data (shift_stats.json), "
                       "so the cohorts cannot be compared; export the model again to add them.</p>")
    if not rows:
        return head + "<p class='caption'>Nothing to compare: the model reads no register variable or image here.</p>"
    order = sorted(rows, key=lambda r: -abs(r["smd"]) if r["smd"] == r["smd"] else 0.0)
    moved = ordered_moved(ext or {}, [r for r in order if r["shifted"]])
    caption = (f"Standardised mean differences (here minus development, over the pooled SD; |SMD| > {NOTABLE_SMD} is "
               "notable) of each register variable the model reads, its missing share and the images as the model "
               "sees them; for a categorical variable the multinomial SMD of its level shares. Holm-adjusted p over "
               "all rows; bold rows moved beyond chance, those that move the model's predictions first. Where the "
               "calibration drifted, the model's mean prediction here with the variable moved back to its "
               "development mean and SD (and its change). Development figures are aggregates stored in the bundle.")
    moved_html = (_shift_table(moved, "shift-moved") if moved
                  else "<p>No input moved beyond chance.</p>")
    return (head + f"<p class='caption'>{_e(caption)}</p>" + moved_html
            + f"<details class='all'><summary>all {len(order)} comparisons</summary>{_shift_table(order, 'shift-all')}"
              "</details>")


def subgroup_section_html(rows: list[dict] | None) -> str:
    if not rows:
        return ""
    return (f"<h2 id='subgroups-section'>Subgroups</h2><p class='caption'>{_e(SUBGROUP_CAPTION)}</p>"
            + subgroup_table_html(pd.DataFrame(rows), "subgroups"))


def _fig(f: dict, key: str, digits: int = 3) -> str:
    try:
        v, lo, hi = float(f.get(key)), float(f.get(f"{key}_lo")), float(f.get(f"{key}_hi"))
    except (TypeError, ValueError):
        return "n/a"
    if math.isnan(v):
        return "n/a"
    return f"{v:.{digits}f}" + ("" if math.isnan(lo) or math.isnan(hi) else f" [{lo:.{digits}f}, {hi:.{digits}f}]")


UPDATE_ROWS = (("oe_ratio", "observed / expected AFF"), ("citl", "calibration-in-the-large"),
               ("cal_slope", "calibration slope"), ("auc", "ROC AUC"), ("brier", "Brier score"),
               ("log_loss", "log loss"))


def update_section(update: dict | None) -> str:
    if not update:
        return ""
    before, after = update["before"], update["after"]
    body = "".join(f"<tr><td>{_e(label)}</td><td class='num'>{_e(_fig(before, k))}</td>"
                   f"<td class='num'>{_e(_fig(after, k))}</td></tr>" for k, label in UPDATE_ROWS)
    caption = (f"The {update['kind']} update, fitted by {update['folds']}-fold cross-validation over this site's "
               "patients: 'after' are the out-of-fold predictions (each patient's from a map fitted without them), "
               "the honest estimate for this site; the map in the new bundle is fitted on all of them "
               f"(logit p' = {update['intercept']:.3f} + {update['slope']:.3f} logit p).")
    return (f"<h2 id='update-section'>Update ({_e(update['kind'])})</h2><p class='caption'>{_e(caption)}</p>"
            "<table class='figures' id='update'><thead><tr><th>figure</th><th>source model here</th>"
            "<th>updated, out-of-fold</th></tr></thead><tbody>" + body + "</tbody></table>")
