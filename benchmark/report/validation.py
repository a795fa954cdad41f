"""External validation of an exported model: the figures, ``validation.csv`` and ``validation.html``.

TRIPOD-style external validation compares what the model does on a new, labelled cohort
with what the nested cross-validation of the same procedure estimated. One function
computes the figures of one set of predictions, ``validation_figures(y, prob, ...)``; it is
called at export time on the run's pooled outer-test predictions (stored as JSON in the
bundle) and by ``predict`` on the new cohort. ``write_validation`` puts both side by side.

What is computed (``prob`` is the calibrated P(AFF), ``y`` 1 = AFF):

- ``n, n_pos, prevalence, mean_prob`` (and ``n_boot``, ``seed`` of the bootstrap);
- ``auc`` with a 95 % DeLong interval (``compare.delong_auc_variance``; AUC +/- 1.96 SE,
  clipped to [0, 1]; NaN with fewer than two patients of a class);
- ``brier``, ``log_loss``, ``citl``, ``oe_ratio``, ``cal_slope`` with 95 % percentile
  intervals from a class-stratified bootstrap of the patients (``n_boot`` resamples drawn
  with ``seed``, ``weighted.stratified_counts``; NaN when fewer than half of the resamples
  give a finite value);
- ``ece`` (10 equal-mass bins, ``metrics.ece``);
- at the deployed ``threshold`` (positive when ``prob >= threshold``): ``sensitivity``,
  ``specificity``, ``ppv``, ``npv``, each with a Wilson 95 % score interval;
- per conformal level (``conformal["90"] = [q_NFF, q_AFF]``, ``evaluate/conformal.py``):
  coverage overall, among AFF and among NFF, singleton rate, empty rate, mean set size;
- ``reliability``: equal-mass bins (``metrics.reliability_curve``), at most 10 and at
  least ``MIN_PER_BIN`` patients per bin (one bin below that), so no bin shows one patient;
- ``decision_curve``: net benefit of the model and of treating all, thresholds 0.01..0.50;
- ``notes``: what could not be computed and why. Nothing raises on one class or few
  patients: such metrics are NaN.

Definitions (as in ``evaluate/metrics.py``):

- Calibration-in-the-large (CITL): ``a`` in ``logit P(y=1) = a + logit(prob)`` (logit(prob)
  as offset, slope fixed at 1); 0 is ideal, > 0 means the model under-predicts risk.
  ``oe_ratio`` = observed / expected events = sum(y) / sum(prob); 1 is ideal.
- Calibration slope: ``b`` in ``logit P(y=1) = c + b logit(prob)``; 1 is ideal, < 1 means
  predictions too extreme (overfitting), > 1 too modest.
- Net benefit at threshold t: ``TP/n - FP/n * t / (1 - t)``; treating all gives
  ``prevalence - (1 - prevalence) * t / (1 - t)``, treating none 0.

The returned dict is plain JSON-ready Python (floats, ints, strings, lists, dicts).
NaN stays ``float('nan')`` (``json.dumps`` writes ``NaN``). An infinite conformal
threshold (the label is always in the set) and an infinite decision ``threshold`` (nobody
predicted AFF, as ``metrics.threshold_at_spec`` may return) are stored as the **string**
``"inf"``: read a stored threshold back with ``float(q)``, which works for numbers and for
``"inf"``; ``validation_figures`` accepts either form for the conformal thresholds.

``write_validation(out_dir, external, cv, meta)`` writes ``validation.csv`` (one row per
scalar metric) and ``validation.html`` (one offline page: plotly.js embedded once, no
external URL, only aggregates, never patient keys). ``meta`` keys read: ``candidate``,
``synthetic`` (bool), ``bundle_created``, ``training_summary``, ``threshold_text``,
``cohort`` (name of the external cohort); all optional.

>>> import json, numpy as np
>>> rng = np.random.default_rng(0)
>>> p = rng.beta(2, 5, 2000); y = (rng.random(2000) < p).astype(int)
>>> fig = validation_figures(y, p, threshold=0.4, conformal={"90": [0.55, "inf"]}, n_boot=200)
>>> abs(fig["cal_slope"] - 1) < 0.3, fig["conformal"]["90"]["thresholds"]
(True, [0.55, 'inf'])
>>> _ = json.dumps(fig)
>>> # csv_path, html_path = write_validation(Path("out"), fig, cv_fig, {"candidate": "xgb_register"})
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs
from scipy.stats import binomtest

from benchmark.evaluate import conformal as cf
from benchmark.evaluate import metrics
from benchmark.evaluate import weighted as wt
from benchmark.evaluate.compare import delong_auc_variance
from benchmark.report.plots import LAYOUT
from benchmark.report.run_files import safe_text

Z95 = 1.959963984540054
MAX_BINS = 10
MIN_PER_BIN = 20          # reliability bins hold at least this many patients (one bin below that)
DECISION_THRESHOLDS = [round(k / 100, 2) for k in range(1, 51)]
INF = "inf"               # how an infinite conformal threshold is stored
CSV_COLUMNS = ["metric", "external", "external_lo", "external_hi", "nested_cv", "nested_cv_lo",
               "nested_cv_hi", "description"]
ONE_CLASS_NOTE = ("only one class: AUC, calibration slope and sensitivity/specificity need both classes "
                  "(they are NaN)")

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

NAN = float("nan")


# ---------------------------------------------------------------- the figures


def _wilson(k: int, n: int) -> tuple[float, float, float]:
    """(k / n, Wilson 95 % lo, hi); NaN when n is 0."""
    if n <= 0:
        return NAN, NAN, NAN
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return k / n, float(ci.low), float(ci.high)


def _percentile_ci(values: np.ndarray, n_boot: int) -> tuple[float, float]:
    """2.5 / 97.5 percentiles of the finite resampled values; NaN when fewer than half are finite."""
    finite = values[np.isfinite(values)]
    if n_boot <= 0 or finite.size < max(2, 0.5 * n_boot):
        return NAN, NAN
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return float(lo), float(hi)


def _bootstrap(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int) -> dict[str, tuple[float, float]]:
    """Stratified-bootstrap 95 % CIs of brier, log_loss, citl, oe_ratio and cal_slope."""
    names = ("brier", "log_loss", "citl", "oe_ratio", "cal_slope")
    if n_boot <= 0 or y.size == 0:
        return {k: (NAN, NAN) for k in names}
    counts = wt.stratified_counts(y, n_boot, np.random.default_rng(seed))
    terms = np.column_stack([wt.brier_terms(y, p), wt.log_loss_terms(y, p), y, p])
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for rows in wt.chunks(n_boot, y.size):
        W = counts[rows].astype(float)
        means = wt.w_means(terms, W)
        a, b = wt.w_calibration(y, p, W)
        with np.errstate(invalid="ignore", divide="ignore"):
            oe = means[:, 2] / means[:, 3]
        for k, v in zip(names, (means[:, 0], means[:, 1], a, oe, b)):
            parts[k].append(v)
    return {k: _percentile_ci(np.concatenate(v), n_boot) for k, v in parts.items()}


def _thresholds(q) -> np.ndarray:
    return np.array([float(v) for v in q], dtype=float)


def _stored(q: np.ndarray) -> list:
    return [INF if np.isposinf(v) else float(v) for v in q]


def _level_target(level: str) -> float:
    try:
        return float(level) / 100.0
    except ValueError:
        return NAN


def _conformal(y: np.ndarray, p: np.ndarray, conformal: dict) -> dict[str, dict]:
    out = {}
    for level, q in conformal.items():
        q = _thresholds(q)
        sets = cf.predict_sets(p, q)
        by_class = cf.class_coverage(y, sets) if y.size else {0: NAN, 1: NAN}
        hit = sets[np.arange(y.size), y.astype(int)]
        out[str(level)] = {
            "target": _level_target(str(level)),
            "thresholds": _stored(q),
            "coverage": float(hit.mean()) if y.size else NAN,
            "coverage_aff": by_class[1],
            "coverage_nff": by_class[0],
            "singleton_rate": cf.singleton_rate(sets),
            "empty_rate": cf.empty_rate(sets),
            "mean_set_size": float(sets.sum(1).mean()) if y.size else NAN,
        }
    return out


def _reliability(y: np.ndarray, p: np.ndarray) -> list[dict]:
    if y.size == 0:
        return []
    n_bins = int(min(MAX_BINS, max(1, y.size // MIN_PER_BIN)))
    bins = metrics.reliability_curve(y, p, n_bins)
    return [{"mean_predicted": float(r.mean_predicted), "observed": float(r.fraction_positive), "n": int(r.n)}
            for r in bins.itertuples()]


def _decision_curve(y: np.ndarray, p: np.ndarray) -> list[dict]:
    if y.size == 0:
        return []
    curve = metrics.net_benefit(y, p, DECISION_THRESHOLDS)
    return [{"threshold": t, "net_benefit_model": float(m), "net_benefit_all": float(a)}
            for t, m, a in zip(DECISION_THRESHOLDS, curve["net_benefit"], curve["treat_all"])]


def _plain(x):
    """numpy scalars and arrays as plain Python, recursively."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_plain(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    return x


def validation_figures(y, prob, *, threshold: float, conformal: dict[str, list[float]], n_boot: int = 1000,
                       seed: int = 0) -> dict:
    """The validation figures of one set of predictions (see the module docstring for the keys).

    ``y`` 0/1, ``prob`` the calibrated P(AFF); ``conformal`` maps a level name ("90") to the
    per-class thresholds ``[q_NFF, q_AFF]`` (numbers, ``inf`` or ``"inf"``). Metrics that
    cannot be computed are NaN and ``notes`` says why; nothing raises for one class.
    """
    y, p = metrics._as_arrays(y, prob)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("validation_figures: y must hold only 0 and 1")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("validation_figures: prob must hold probabilities in [0, 1]")
    n, n_pos = int(y.size), int(y.sum())
    both = metrics._two_classes(y)
    notes: list[str] = []
    if n == 0:
        notes.append("no patients: every figure is NaN")
    elif not both:
        notes.append(ONE_CLASS_NOTE)
    out: dict = {"n": n, "n_pos": n_pos, "prevalence": n_pos / n if n else NAN,
                 "mean_prob": float(p.mean()) if n else NAN}

    point = metrics.binary_metrics(y, p, threshold=threshold) if n else {}
    # discrimination: DeLong interval
    auc, lo, hi = NAN, NAN, NAN
    if both and min(n_pos, n - n_pos) >= 2:
        auc, var = delong_auc_variance(y, p)
        se = math.sqrt(max(var, 0.0))
        lo, hi = max(0.0, auc - Z95 * se), min(1.0, auc + Z95 * se)
        if se == 0.0:
            notes.append(f"AUC is {auc:g} (the classes do not overlap): the DeLong interval has width 0")
    elif both:
        auc = point["auc"]
        notes.append("fewer than two patients of a class: no DeLong interval for the AUC")
    out.update(auc=auc, auc_lo=lo, auc_hi=hi)

    # calibration and overall accuracy: point estimates, bootstrap intervals
    citl, slope = point.get("cal_intercept", NAN), point.get("cal_slope", NAN)
    ci = _bootstrap(y, p, n_boot, seed)
    values = {"brier": point.get("brier", NAN), "log_loss": point.get("log_loss", NAN), "citl": citl,
              "oe_ratio": float(y.sum() / p.sum()) if n and p.sum() > 0 else NAN, "cal_slope": slope}
    for k, v in values.items():
        out[k], (out[f"{k}_lo"], out[f"{k}_hi"]) = float(v), ci[k]
    if both and not math.isfinite(slope):
        notes.append("calibration slope could not be estimated (the fit did not converge, e.g. perfect separation)")
    out["ece"] = metrics.ece(y, p)

    # at the deployed threshold
    pos = p >= threshold
    tp, fp = int((pos & (y == 1)).sum()), int((pos & (y == 0)).sum())
    fn, tn = n_pos - tp, (n - n_pos) - fp
    out["threshold"] = float(threshold) if math.isfinite(threshold) else INF
    for name, k, m in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp),
                       ("ppv", tp, tp + fp), ("npv", tn, tn + fn)):
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = _wilson(k, m)
    if n and not pos.any():
        notes.append("no patient is predicted AFF at the threshold: PPV is NaN")
    if n and pos.all():
        notes.append("every patient is predicted AFF at the threshold: NPV is NaN")

    out["conformal"] = _conformal(y, p, conformal)
    for level, c in out["conformal"].items():
        for label, q in zip(("NFF", "AFF"), c["thresholds"]):
            if q == INF:
                notes.append(f"conformal {level} %: the {label} threshold is infinite (too few calibration "
                             f"patients of that class), so {label} is in every set")
    out["reliability"] = _reliability(y, p)
    out["decision_curve"] = _decision_curve(y, p)
    if 0 < n < 100:
        notes.append(f"only {n} patients: intervals are wide and the reliability diagram coarse")
    out["n_boot"], out["seed"] = int(n_boot), int(seed)
    out["notes"] = notes
    return _plain(out)


# ---------------------------------------------------------------- the files


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


# ---------------------------------------------------------------- the page


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


def validation_html(external: dict, cv: dict | None, meta: dict) -> str:
    name = str(meta.get("candidate") or "exported model")
    warning = ('<p class="synthetic" id="synthetic-warning"><b>Warning: this model was trained on synthetic data; '
               "its figures say nothing about real patients.</b></p>" if meta.get("synthetic") else "")
    no_cv = "" if cv else "<p class='note'>No nested cross-validation figures were given: external figures only.</p>"
    notes = [("external", n) for n in external.get("notes") or []] + [("nested CV", n) for n in (cv or {}).get("notes") or []]
    notes_html = ("<ul>" + "".join(f"<li>{_e(side)}: {_e(n)}</li>" for side, n in notes) + "</ul>") if notes else "<p>None.</p>"
    conf = conformal_figure(external, cv)
    conf_html = _plot(conf, "fig-conformal") if conf else "<p class='note'>Not drawn: no conformal levels were given.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(name)}: external validation</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
{warning}<h1>External validation: {_e(name)}</h1>
{_meta_html(meta, external)}
{no_cv}
<h2 id="figures-section">External against nested cross-validation</h2>
<p class="caption">Nested CV: the pooled outer-test predictions of the run that produced the model. AUC with a 95 %
DeLong interval; Brier, log loss and calibration with 95 % stratified-bootstrap intervals; sensitivity, specificity,
PPV and NPV at the threshold with 95 % Wilson intervals.</p>
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


def write_validation(out_dir: Path, external: dict, cv: dict | None, meta: dict) -> tuple[Path, Path]:
    """Write ``out_dir/validation.csv`` and ``out_dir/validation.html`` (each atomically); return their paths.

    ``external`` and ``cv`` are ``validation_figures`` dicts (``cv`` None: external only).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, html_path = out_dir / "validation.csv", out_dir / "validation.html"
    _atomic_write(csv_path, validation_csv(external, cv))
    _atomic_write(html_path, validation_html(external, cv, meta))
    return csv_path, html_path
