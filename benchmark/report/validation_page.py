"""External validation on file: ``validation.csv`` and ``validation.html``, from the figures of
``validation.validation_figures`` (the external cohort's, and the nested cross-validation's).

``write_validation(out_dir, external, cv, meta)`` writes ``validation.csv`` (one row per
scalar metric) and ``validation.html`` (one offline page: plotly.js embedded once, no
external URL, only aggregates, never patient keys). ``meta`` keys read: ``candidate``,
``synthetic`` (bool), ``bundle_created``, ``training_summary``, ``threshold_text``,
``cohort`` (name of the external cohort), ``profile`` (of the run the model came from); all optional.
The page opens with the answers (``validation_answers``: one sentence per question, and the caveat
that changes them), then the dataset shift, subgroup and update sections (``validation_sections``).

    csv_path, html_path = write_validation(Path("out"), fig, cv_fig, {"candidate": "xgb_register"})
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
import tempfile
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from benchmark.report.plots import LAYOUT
from benchmark.report.run_files import safe_text
from benchmark.report.validation import DECISION_THRESHOLDS, MIN_PER_BIN, NAN, _level_target

CSV_COLUMNS = ["metric", "external", "external_lo", "external_hi", "nested_cv", "nested_cv_lo",
               "nested_cv_hi", "description"]

# (key in the figures dict, description); each may have <key>_lo / <key>_hi.
SCALARS = [
    ("n", "patients"),
    ("n_pos", "AFF patients"),
    ("prevalence", "share of AFF"),
    ("mean_prob", "mean predicted P(AFF)"),
    ("auc", "ROC AUC, 95 % DeLong CI"),
    ("brier", "Brier score (lower is better), 95 % bootstrap CI"),
    ("log_loss", "log loss (lower is better), 95 % bootstrap CI"),
    ("citl", "calibration-in-the-large: intercept with logit(prob) as offset (0 is ideal)"),
    ("oe_ratio", "observed / expected AFF events (1 is ideal)"),
    ("cal_slope", "calibration slope (1 is ideal; < 1: predictions too extreme)"),
    ("ece", "expected calibration error, 10 equal-mass bins"),
    ("threshold", "decision threshold (AFF when P(AFF) >= threshold)"),
    ("sensitivity", "sensitivity at the threshold, 95 % Wilson CI"),
    ("specificity", "specificity at the threshold, 95 % Wilson CI"),
    ("ppv", "positive predictive value at the threshold, 95 % Wilson CI"),
    ("npv", "negative predictive value at the threshold, 95 % Wilson CI"),
]
CONFORMAL_SCALARS = [
    ("coverage", "share of sets containing the true label"),
    ("coverage_aff", "coverage among AFF"),
    ("coverage_nff", "coverage among NFF"),
    ("singleton_rate", "share of sets with exactly one label"),
    ("empty_rate", "share of empty sets"),
    ("mean_set_size", "mean number of labels per set"),
]


def scalar_rows(fig: dict | None) -> dict[str, tuple[float, float, float, str]]:
    """``metric -> (value, lo, hi, description)`` for every scalar figure (conformal ones included)."""
    if not fig:
        return {}

    def num(v) -> float:
        try:
            return float(v)
        except (TypeError, ValueError):
            return NAN

    rows = {k: (num(fig.get(k)), num(fig.get(f"{k}_lo")), num(fig.get(f"{k}_hi")), d) for k, d in SCALARS}
    for level, c in (fig.get("conformal") or {}).items():
        for k, d in CONFORMAL_SCALARS:
            rows[f"conformal{level}_{k}"] = (num(c.get(k)), NAN, NAN, f"{level} % conformal sets: {d}")
    return rows


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cell(v: float) -> str:
    if math.isnan(v):
        return ""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def validation_csv(external: dict, cv: dict | None) -> str:
    ext, nested = scalar_rows(external), scalar_rows(cv)
    names = list(ext) + [k for k in nested if k not in ext]
    blank = (NAN, NAN, NAN, "")
    lines: list[list[str]] = [CSV_COLUMNS]
    for k in names:
        e, c = ext.get(k, blank), nested.get(k, blank)
        lines.append([k, _cell(e[0]), _cell(e[1]), _cell(e[2]), _cell(c[0]), _cell(c[1]), _cell(c[2]), e[3] or c[3]])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    return buf.getvalue()


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:12px auto;max-width:1200px;padding:0 16px;color:#222}
h1{margin:0 0 6px;font-size:22px}h2{margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
.synthetic{font-size:16px;font-weight:700;color:#fff;background:#b22;border-radius:4px;padding:6px 10px;margin:6px 0}
.meta{font-size:14px;color:#333;line-height:1.5}.meta b{color:#111}
table.figures{border-collapse:collapse;font-size:13px;width:100%}
table.figures th{background:#eef1f5;padding:5px 6px;text-align:left}
table.figures td{padding:3px 6px;border-bottom:1px solid #eee}
td.num{white-space:nowrap;font-variant-numeric:tabular-nums}td.desc{color:#555}
.caption{color:#555;font-size:13px;margin:2px 0 6px}.note{color:#b22}
"""
EXT_COLOR, CV_COLOR = "#d62728", "#1f77b4"


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _fmt(key: str, v: float, lo: float, hi: float) -> str:
    if not math.isfinite(v):
        return "" if math.isnan(v) else str(v)
    text = f"{int(v)}" if key in ("n", "n_pos") else f"{v:.3f}"
    if math.isfinite(lo) and math.isfinite(hi):
        text += f" [{lo:.3f}, {hi:.3f}]"
    return text


def _plot(fig: go.Figure, div_id: str) -> str:
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True, "displayModeBar": "hover"})


def _sides(external: dict, cv: dict | None) -> list[tuple[str, dict, str]]:
    return [("external", external, EXT_COLOR)] + ([("nested CV", cv, CV_COLOR)] if cv else [])


def reliability_figure(external: dict, cv: dict | None) -> go.Figure:
    fig = go.Figure()
    for name, f, color in _sides(external, cv):
        bins = f.get("reliability") or []
        fig.add_trace(go.Scatter(
            x=[b["mean_predicted"] for b in bins], y=[b["observed"] for b in bins], mode="lines+markers", name=name,
            line=dict(color=color, width=2), customdata=[b["n"] for b in bins],
            hovertemplate=f"{name}<br>predicted %{{x:.3f}}, observed %{{y:.3f}}, n=%{{customdata}}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line=dict(color="#bbb", dash="dot")))
    fig.update_layout(**LAYOUT, height=480, xaxis_title="mean predicted P(AFF) (equal-mass bins)",
                      yaxis_title="observed AFF frequency")
    return fig


def decision_figure(external: dict, cv: dict | None) -> go.Figure:
    fig = go.Figure()
    for name, f, color in _sides(external, cv):
        curve = f.get("decision_curve") or []
        t = [c["threshold"] for c in curve]
        fig.add_trace(go.Scatter(x=t, y=[c["net_benefit_model"] for c in curve], mode="lines",
                                 name=f"model, {name}", line=dict(color=color, width=2)))
        fig.add_trace(go.Scatter(x=t, y=[c["net_benefit_all"] for c in curve], mode="lines",
                                 name=f"treat all ({name} prevalence)",
                                 line=dict(color=color, width=1, dash="dot")))
    fig.add_trace(go.Scatter(x=[DECISION_THRESHOLDS[0], DECISION_THRESHOLDS[-1]], y=[0, 0], mode="lines",
                             name="treat none", line=dict(color="#444", dash="dash")))
    prev = [float(f.get("prevalence", NAN)) for _, f, _ in _sides(external, cv)]
    prev = [v for v in prev if math.isfinite(v)]
    if prev:
        fig.update_yaxes(range=[min(-0.01, -max(prev) * 0.2), max(max(prev) * 1.1, 0.01)])
    fig.update_layout(**LAYOUT, height=460, xaxis_title="threshold probability", yaxis_title="net benefit")
    return fig


def conformal_figure(external: dict, cv: dict | None) -> go.Figure | None:
    levels = list(dict.fromkeys(list(external.get("conformal") or {}) + list((cv or {}).get("conformal") or {})))
    if not levels:
        return None
    kinds = (("coverage", "all"), ("coverage_aff", "AFF"), ("coverage_nff", "NFF"))
    x = [f"{lvl} %: {label}" for lvl in levels for _, label in kinds]
    fig = go.Figure()
    for name, f, color in _sides(external, cv):
        conf = f.get("conformal") or {}
        fig.add_trace(go.Bar(x=x, y=[(conf.get(lvl) or {}).get(k, NAN) for lvl in levels for k, _ in kinds],
                             name=name, marker_color=color))
    targets = [_level_target(lvl) for lvl in levels for _ in kinds]
    fig.add_trace(go.Scatter(x=x, y=targets, mode="markers", name="target coverage",
                             marker=dict(symbol="line-ew-open", size=36, line=dict(width=3, color="#222"))))
    fig.update_layout(**LAYOUT, height=420, barmode="group", yaxis_title="coverage", yaxis_range=[0, 1.02])
    return fig


def _table(external: dict, cv: dict | None) -> str:
    ext, nested = scalar_rows(external), scalar_rows(cv)
    blank = (NAN, NAN, NAN, "")
    body = []
    for k in list(ext) + [k for k in nested if k not in ext]:
        e, c = ext.get(k, blank), nested.get(k, blank)
        body.append(f"<tr><td>{_e(k)}</td><td class='num'>{_e(_fmt(k, *e[:3]))}</td>"
                    f"<td class='num'>{_e(_fmt(k, *c[:3]) if cv else '')}</td><td class='desc'>{_e(e[3] or c[3])}</td></tr>")
    return ("<table class='figures' id='figures'><thead><tr><th>metric</th><th>external [95 % CI]</th>"
            "<th>nested CV [95 % CI]</th><th>what it is</th></tr></thead><tbody>" + "".join(body) + "</tbody></table>")


def _meta_html(meta: dict, external: dict) -> str:
    fields = [("external cohort", meta.get("cohort")), ("bundle created", meta.get("bundle_created")),
              ("training cohort", meta.get("training_summary")), ("threshold", meta.get("threshold_text")),
              ("external patients", f"{external.get('n')} ({external.get('n_pos')} AFF)")]
    return "<div class='meta'>" + "".join(
        f"<div><b>{_e(k)}</b>: {_e(safe_text(v, limit=400))}</div>" for k, v in fields if v not in (None, "")) + "</div>"


def validation_html(external: dict, cv: dict | None, meta: dict, *, shift: list[dict] | None = None,
                    has_shift_stats: bool = True, subgroups: list[dict] | None = None,
                    update: dict | None = None) -> str:
    """The page: the answers first (``validation_answers``), then the shift, subgroups and update sections
    (``validation_sections``), then every figure beside the nested CV's, the curves and the notes."""
    from benchmark.report.validation_answers import caveat, validation_answers
    from benchmark.report.validation_sections import CSS as SECTIONS_CSS
    from benchmark.report.validation_sections import (answers_box, shift_section, subgroup_section_html,
                                                      update_section)

    name = str(meta.get("candidate") or "exported model")
    warning = ('<p class="synthetic" id="synthetic-warning"><b>Warning: this model was trained on synthetic data; '
               "its figures say nothing about real patients.</b></p>" if meta.get("synthetic") else "")
    no_cv = "" if cv else "<p class='note'>No nested cross-validation figures were given: external figures only.</p>"
    notes = [("external", n) for n in external.get("notes") or []] + [("nested CV", n) for n in (cv or {}).get("notes") or []]
    notes_html = ("<ul>" + "".join(f"<li>{_e(side)}: {_e(n)}</li>" for side, n in notes) + "</ul>") if notes else "<p>None.</p>"
    conf = conformal_figure(external, cv)
    conf_html = _plot(conf, "fig-conformal") if conf else "<p class='note'>Not drawn: no conformal levels were given.</p>"
    answers = answers_box(validation_answers(external, cv, shift, subgroups, update), caveat(external, meta))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(name)}: external validation</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{CSS}{SECTIONS_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
{warning}<h1>External validation: {_e(name)} on {_e(safe_text(meta.get('cohort') or 'the new cohort', limit=120))}</h1>
{answers}
<h2 id="about-section">What was compared</h2>
{_meta_html(meta, external)}
{no_cv}
{shift_section(shift, has_shift_stats, external)}
{subgroup_section_html(subgroups)}
{update_section(update)}
<h2 id="figures-section">External against nested cross-validation</h2>
<p class="caption">Nested CV: the pooled outer-test predictions of the run that produced the model. AUC with a 95 %
DeLong interval; O/E with the binomial interval of the observed count; calibration-in-the-large and slope with Wald
intervals; Brier and log loss with 95 % stratified-bootstrap intervals; sensitivity, specificity, PPV and NPV at the
threshold with 95 % Wilson intervals.</p>
{_table(external, cv)}
<h2 id="reliability-section">Reliability diagram</h2>
<p class="caption">Observed AFF frequency against mean predicted P(AFF) in equal-mass bins (at most 10, each of at
least {MIN_PER_BIN} patients); the diagonal is perfect calibration.</p>
{_plot(reliability_figure(external, cv), "fig-reliability")}
<h2 id="decision-section">Decision curve</h2>
<p class="caption">Net benefit = TP/n - FP/n &times; t / (1 - t) at threshold probability t, for the model and for
treating everyone (at each cohort's prevalence) or no one.</p>
{_plot(decision_figure(external, cv), "fig-decision")}
<h2 id="conformal-section">Conformal coverage</h2>
<p class="caption">Share of prediction sets that contain the true label, overall and per class, against the target
level (the black mark).</p>
{conf_html}
<h2 id="notes-section">Notes</h2>
{notes_html}
</body></html>
"""


def write_validation(out_dir: Path, external: dict, cv: dict | None, meta: dict, *, shift: list[dict] | None = None,
                     has_shift_stats: bool = True, subgroups: list[dict] | None = None,
                     update: dict | None = None) -> tuple[Path, Path]:
    """Write ``out_dir/validation.csv`` and ``out_dir/validation.html`` (each atomically); return their paths.

    ``external`` and ``cv`` are ``validation_figures`` dicts (``cv`` None: external only). With them,
    ``shift.csv`` (``shift_compare.shift_frame``), ``subgroups.csv`` (``evaluate.subgroups``) and
    ``update.csv`` (before and after, out-of-fold) are written too.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, html_path = out_dir / "validation.csv", out_dir / "validation.html"
    _atomic_write(csv_path, validation_csv(external, cv))
    if shift:
        from benchmark.report.shift_compare import shift_frame

        _atomic_write(out_dir / "shift.csv", shift_frame(shift).to_csv(index=False))
    if subgroups:
        _atomic_write(out_dir / "subgroups.csv", pd.DataFrame(subgroups).to_csv(index=False))
    if update:
        _atomic_write(out_dir / "update.csv", validation_csv(update["after"], update["before"]).replace(
            "external,external_lo,external_hi,nested_cv,nested_cv_lo,nested_cv_hi",
            "updated_oof,updated_oof_lo,updated_oof_hi,source,source_lo,source_hi", 1))
    _atomic_write(html_path, validation_html(external, cv, meta, shift=shift, has_shift_stats=has_shift_stats,
                                             subgroups=subgroups, update=update))
    return csv_path, html_path
