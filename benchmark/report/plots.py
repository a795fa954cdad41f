"""Plotly figures of a run, drawn from its stored predictions, leaderboard, comparisons and trials.

The report draws what ``benchmark/evaluate`` computes: the curves (ROC, precision-recall,
reliability bins, risk-coverage, decision curve) come from ``evaluate.metrics`` on the
pooled outer-test predictions, entropy and mutual information are the columns
``evaluate.uncertainty`` stored, and the numbers in legends are cells of
``leaderboard.csv``. The forest plots draw rows of ``comparisons.csv`` (the one beside the
answers: the AUC rows ``findings.key_comparisons`` names, with each row's margin), and the
learning curves the ``curve_25/50/100`` cells of ``studies.csv``. Curves are thinned to a
few hundred points so the page stays small::

    from benchmark.report.run_files import read_run
    for spec in build_figures(read_run(Path("results/quick-1"))):
        print(spec.div_id, spec.title, spec.figure is not None)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from benchmark.evaluate import metrics
from benchmark.protocol import MODALITIES, ORACLE_OF
from benchmark.report.run_files import RunFiles, num

MODALITY_ORDER = MODALITIES + ("oracle",)
MODALITY_COLOR = {"register": "#1f77b4", "image": "#e6770f", "fusion": "#2ca02c", "oracle": "#6b6b6b"}
_SCALE = {"register": "Blues", "image": "Oranges", "fusion": "Greens", "oracle": "Greys"}
VERDICT_COLOR = {"candidate_better": "#2ca02c", "reference_better": "#d62728", "equivalent": "#1f77b4",
                 "not_shown": "#7f7f7f", "no_difference": "#7f7f7f"}
OUTCOME_COLOR = {"better": "#2ca02c", "worse": "#d62728", "equivalent": "#1f77b4", "not_shown": "#7f7f7f"}
OUTCOME_NAME = {"better": "candidate better", "worse": "candidate worse", "equivalent": "equivalent (within margin)",
                "not_shown": "not shown either way"}
CURVE_POINTS = (("curve_25", 25), ("curve_50", 50), ("curve_100", 100))  # studies.csv column, % of the budget
MAX_POINTS = 150
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=40, b=50), legend=dict(font=dict(size=11)))
DECISION_THRESHOLDS = np.linspace(0.01, 0.5, 50)


@dataclass
class FigureSpec:
    """One figure of the page: its div id, title, caption and the figure (None: ``note`` says why)."""

    div_id: str
    title: str
    caption: str
    figure: go.Figure | None
    note: str = ""


# ---------------------------------------------------------------- colours, order, traces


def candidate_colors(lb: pd.DataFrame) -> dict[str, str]:
    """A colour per candidate: its modality's hue, one shade per candidate."""
    colors = {}
    for modality, group in lb.groupby("modality", sort=False):
        names = group["candidate"].tolist()
        if modality not in _SCALE:
            colors.update({n: "#9467bd" for n in names})
            continue
        stops = np.linspace(0.85, 0.45, len(names)) if len(names) > 1 else [0.7]
        colors.update(dict(zip(names, sample_colorscale(_SCALE[modality], list(stops)))))
    return colors


def ordered_candidates(lb: pd.DataFrame, preds: pd.DataFrame) -> list[str]:
    """Candidates with test predictions, by modality then inner score (oracles last)."""
    have = set(preds["candidate"].unique())
    lb = lb[lb["candidate"].isin(have)].copy()
    lb["_m"] = lb["modality"].map({m: i for i, m in enumerate(MODALITY_ORDER)}).fillna(len(MODALITY_ORDER))
    score = lb["inner_score"] if "inner_score" in lb.columns else pd.Series(0.0, index=lb.index)
    lb["_s"] = -score.astype(float).fillna(-1.0)
    return lb.sort_values(["_m", "_s", "candidate"])["candidate"].tolist()


def _thin(*arrays: np.ndarray, n: int = MAX_POINTS) -> list[np.ndarray]:
    size = len(arrays[0])
    if size <= n:
        return [np.asarray(a) for a in arrays]
    idx = np.unique(np.linspace(0, size - 1, n).round().astype(int))
    return [np.asarray(a)[idx] for a in arrays]


def _r(a: np.ndarray, digits: int = 4) -> np.ndarray:
    return np.round(np.asarray(a, dtype=float), digits)


def _stat(lb: pd.DataFrame, cand: str, metric: str) -> str:
    row = lb[lb["candidate"].eq(cand)]
    value = num(row[metric].iloc[0]) if not row.empty and metric in row.columns else math.nan
    return "" if math.isnan(value) else f" ({metric.upper() if len(metric) <= 3 else metric} {value:.3f})"


def _line(cand: str, lb: pd.DataFrame, colors: dict, x, y, metric: str, mode: str = "lines") -> go.Scatter:
    modality = lb.loc[lb["candidate"].eq(cand), "modality"]
    modality = modality.iloc[0] if len(modality) else ""
    return go.Scatter(
        x=_r(x), y=_r(y), mode=mode, name=cand + _stat(lb, cand, metric), legendgroup=modality,
        line=dict(color=colors.get(cand), width=2, dash="dash" if modality == "oracle" else "solid"),
        hovertemplate=f"{cand}<br>%{{x:.3f}}, %{{y:.3f}}<extra></extra>",
    )


def _groups(preds: pd.DataFrame, order: list[str]):
    by = dict(tuple(preds.groupby("candidate", sort=False)))
    for cand in order:
        g = by[cand]
        y = g["y"].to_numpy(int)
        if len(np.unique(y)) == 2:
            yield cand, y, g["prob"].to_numpy(float), g


# ---------------------------------------------------------------- figures


def roc_figure(preds: pd.DataFrame, lb: pd.DataFrame, order: list[str], colors: dict) -> go.Figure:
    fig = go.Figure()
    for cand, y, p, _ in _groups(preds, order):
        roc = metrics.roc_points(y, p)
        fig.add_trace(_line(cand, lb, colors, *_thin(roc["fpr"], roc["tpr"]), metric="auc"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line=dict(color="#bbb", dash="dot")))
    fig.update_layout(**LAYOUT, height=520, xaxis_title="1 - specificity", yaxis_title="sensitivity")
    return fig


def pr_figure(preds: pd.DataFrame, lb: pd.DataFrame, order: list[str], colors: dict) -> go.Figure:
    fig = go.Figure()
    prevalence = None
    for cand, y, p, _ in _groups(preds, order):
        pr = metrics.pr_points(y, p)
        fig.add_trace(_line(cand, lb, colors, *_thin(pr["recall"], pr["precision"]), metric="ap"))
        prevalence = y.mean()
    if prevalence is not None:
        fig.add_trace(go.Scatter(x=[0, 1], y=[prevalence] * 2, mode="lines", name="prevalence", line=dict(color="#bbb", dash="dot")))
    fig.update_layout(**LAYOUT, height=520, xaxis_title="recall (sensitivity)", yaxis_title="precision (PPV)")
    return fig


def reliability_figure(preds: pd.DataFrame, lb: pd.DataFrame, order: list[str], colors: dict, n_bins: int = 10) -> go.Figure:
    fig = go.Figure()
    for cand, y, p, _ in _groups(preds, order):
        bins = metrics.reliability_curve(y, p, n_bins)  # the equal-mass bins of the stored ECE
        fig.add_trace(_line(cand, lb, colors, bins["mean_predicted"], bins["fraction_positive"], metric="ece",
                            mode="lines+markers"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration", line=dict(color="#bbb", dash="dot")))
    fig.update_layout(**LAYOUT, height=520, xaxis_title=f"mean predicted P(AFF) ({n_bins} equal-mass bins)",
                      yaxis_title="observed AFF frequency")
    return fig


def uncertainty_figure(preds: pd.DataFrame, lb: pd.DataFrame, order: list[str], colors: dict) -> go.Figure:
    """Per-candidate box summaries (precomputed quantiles: small HTML), grouped by modality."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("predictive entropy (nats)", "mutual information (nats)"))
    by = dict(tuple(preds.groupby("candidate", sort=False)))
    shown = set()
    for cand in order:
        g = by[cand]
        modality = str(g["modality"].iloc[0]) if "modality" in g.columns else ""
        for col, column in ((1, "entropy"), (2, "mutual_info")):
            v = g[column].dropna().to_numpy(float)
            if not len(v):
                continue
            q1, med, q3 = np.percentile(v, [25, 50, 75])
            lo, hi = np.percentile(v, [2.5, 97.5])
            fig.add_trace(go.Box(
                x=[f"{modality}: {cand}"], q1=[q1], median=[med], q3=[q3], lowerfence=[lo], upperfence=[hi],
                mean=[v.mean()], name=modality, legendgroup=modality, showlegend=modality not in shown,
                marker_color=MODALITY_COLOR.get(modality, "#9467bd"), fillcolor=colors.get(cand),
                line=dict(color=MODALITY_COLOR.get(modality, "#9467bd")),
            ), row=1, col=col)
            shown.add(modality)
    fig.update_layout(**LAYOUT, height=480, boxmode="overlay")
    fig.update_xaxes(tickangle=-40)
    return fig


def risk_coverage_figure(preds: pd.DataFrame, lb: pd.DataFrame, order: list[str], colors: dict) -> go.Figure:
    fig = go.Figure()
    for cand, y, p, g in _groups(preds, order):
        curve = metrics.risk_coverage_curve(y, p, g["entropy"].to_numpy(float))  # the curve under the stored AURC
        fig.add_trace(_line(cand, lb, colors, *_thin(curve["coverage"], curve["risk"]), metric="aurc"))
    fig.update_layout(**LAYOUT, height=520, xaxis_title="coverage (share of patients kept, most certain first)",
                      yaxis_title="error rate among kept patients")
    return fig


def decision_curve_figure(preds: pd.DataFrame, lb: pd.DataFrame, top: list[str], colors: dict) -> go.Figure:
    fig = go.Figure()
    curve, prevalence = None, None
    for cand, y, p, _ in _groups(preds, top):
        curve = metrics.net_benefit(y, p, DECISION_THRESHOLDS)
        fig.add_trace(_line(cand, lb, colors, curve["threshold"], curve["net_benefit"], metric="auc"))
        prevalence = y.mean()
    if curve is not None:
        fig.add_trace(go.Scatter(x=_r(curve["threshold"]), y=_r(curve["treat_all"]), mode="lines", name="treat all",
                                 line=dict(color="#999", dash="dot")))
        fig.add_trace(go.Scatter(x=[DECISION_THRESHOLDS[0], DECISION_THRESHOLDS[-1]], y=[0, 0], mode="lines", name="treat none",
                                 line=dict(color="#444", dash="dot")))
        fig.update_yaxes(range=[min(-0.01, -prevalence * 0.2), prevalence * 1.1])
    fig.update_layout(**LAYOUT, height=480, xaxis_title="threshold probability", yaxis_title="net benefit")
    return fig


def forest_figure(comp: pd.DataFrame) -> go.Figure:
    metrics = list(dict.fromkeys(comp["metric"]))
    sizes = [int(comp["metric"].eq(m).sum()) for m in metrics]
    fig = make_subplots(rows=len(metrics), cols=1, subplot_titles=metrics, row_heights=sizes,
                        vertical_spacing=min(0.08, 0.3 / max(1, len(metrics))))
    shown = set()
    for i, m in enumerate(metrics, start=1):
        rows = comp[comp["metric"].eq(m)]
        for verdict, group in rows.groupby("verdict", sort=False):
            diff, lo, hi = (group[c].astype(float).to_numpy() for c in ("diff", "lo", "hi"))
            labels = (group["candidate"] + " vs " + group["reference"]).tolist()
            hover = [f"{lab}<br>diff {d:.3f} [{a:.3f}, {b:.3f}]<br>p {p:.3g}, Holm p {ph:.3g} ({t})"
                     for lab, d, a, b, p, ph, t in zip(labels, diff, lo, hi, group.get("p_value", group["p_holm"]).astype(float),
                                                       group["p_holm"].astype(float), group.get("test", pd.Series([""] * len(group))))]
            fig.add_trace(go.Scatter(
                x=_r(diff), y=labels, mode="markers", name=verdict.replace("_", " "), legendgroup=verdict,
                showlegend=verdict not in shown, marker=dict(color=VERDICT_COLOR.get(verdict, "#9467bd"), size=9),
                error_x=dict(type="data", symmetric=False, array=_r(hi - diff), arrayminus=_r(diff - lo)),
                hovertext=hover, hoverinfo="text",
            ), row=i, col=1)
            shown.add(verdict)
        fig.add_vline(x=0, line=dict(color="#444", width=1, dash="dot"), row=i, col=1)
    fig.update_layout(**LAYOUT, height=max(320, 90 + 34 * sum(sizes) + 40 * len(metrics)))
    return fig


def answers_figure(rows: pd.DataFrame) -> go.Figure:
    """The forest plot beside the answers: AUC difference (candidate - reference) with its 95 % CI per
    answering row, coloured by outcome, over a grey band of each row's equivalence margin."""
    rows = rows.iloc[::-1]  # first answer on top
    labels = rows["label"].tolist()
    fig = go.Figure()
    margin = rows["margin"].astype(float).to_numpy() if "margin" in rows.columns else np.full(len(rows), np.nan)
    if np.isfinite(margin).any():
        m = np.where(np.isfinite(margin), margin, 0.0)
        fig.add_trace(go.Bar(x=_r(2 * m), base=_r(-m), y=labels, orientation="h", name="margin",
                             marker=dict(color="rgba(31,119,180,0.12)"), hoverinfo="skip", width=0.6))
    shown = set()
    for kind in OUTCOME_COLOR:
        g = rows[rows["outcome"].eq(kind)]
        if g.empty:
            continue
        diff, lo, hi = (g[c].astype(float).to_numpy() for c in ("diff", "lo", "hi"))
        hover = [f"{lab}<br>AUC difference {d:+.3f} [{a:.3f}, {b:.3f}]<br>Holm p {ph:.3g}<br>{OUTCOME_NAME[kind]}"
                 for lab, d, a, b, ph in zip(g["label"], diff, lo, hi, g["p_holm"].astype(float))]
        fig.add_trace(go.Scatter(
            x=_r(diff), y=g["label"].tolist(), mode="markers", name=OUTCOME_NAME[kind], showlegend=kind not in shown,
            marker=dict(color=OUTCOME_COLOR[kind], size=9),
            error_x=dict(type="data", symmetric=False, array=_r(hi - diff), arrayminus=_r(diff - lo), thickness=1.5),
            hovertext=hover, hoverinfo="text"))
        shown.add(kind)
    fig.add_vline(x=0, line=dict(color="#444", width=1, dash="dot"))
    fig.update_layout(**{**LAYOUT, "margin": dict(l=10, r=10, t=10, b=40),
                         "legend": dict(orientation="h", yanchor="bottom", y=1.0, x=0, font=dict(size=11))},
                      height=max(240, 90 + 24 * len(labels)), barmode="overlay",
                      xaxis_title="AUC difference (candidate - reference), 95 % CI")
    fig.update_yaxes(categoryorder="array", categoryarray=labels, automargin=True)
    return fig


def learning_curve_figure(studies: pd.DataFrame, order: list[str]) -> go.Figure:
    """Inner out-of-fold score of each bag at 25 / 50 / 100 % of its training budget, one line per outer fold."""
    cols = [c for c, _ in CURVE_POINTS]
    have = studies[studies[cols].notna().any(axis=1)]
    names = [c for c in order if c in set(have["candidate"])] + sorted(set(have["candidate"]) - set(order))
    palette = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac"]
    fig = go.Figure()
    x = [pct for _, pct in CURVE_POINTS]
    several = have["repeat"].nunique() > 1 if "repeat" in have.columns else False
    for k, cand in enumerate(names):
        for j, (_, r) in enumerate(have[have["candidate"].eq(cand)].iterrows()):
            fold = f"outer fold {int(r['outer_fold'])}" + (f", repeat {int(r['repeat'])}" if several else "")
            share = num(r.get("at_budget"))
            extra = "" if math.isnan(share) else f"<br>share of the bag still improving at the end: {share:.2f}"
            fig.add_trace(go.Scatter(
                x=x, y=_r([num(r[c]) for c in cols]), mode="lines+markers", name=cand, legendgroup=cand,
                showlegend=j == 0, line=dict(color=palette[k % len(palette)], width=1.5),
                hovertemplate=f"{cand}, {fold}<br>%{{x}} % of the budget: %{{y:.4f}}{extra}<extra></extra>"))
    fig.update_layout(**LAYOUT, height=420, xaxis_title="share of the training budget (epochs or boosting rounds, %)",
                      yaxis_title="inner out-of-fold score of the bag")
    fig.update_xaxes(tickvals=x)
    return fig


def search_history_figure(trials: pd.DataFrame, order: list[str], cols: int = 3) -> go.Figure:
    names = [c for c in order if c in set(trials["candidate"])] + sorted(set(trials["candidate"]) - set(order))
    rows = math.ceil(len(names) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, vertical_spacing=min(0.12, 0.5 / max(rows, 1)))
    palette = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d"]
    shown = set()
    for k, cand in enumerate(names):
        r, c = divmod(k, cols)
        g = trials[trials["candidate"].eq(cand)]
        if not g["value"].astype(float).notna().any():
            fig.add_annotation(text="no completed trial", showarrow=False, xref="x domain", yref="y domain", x=0.5, y=0.5,
                               font=dict(color="#b22"), row=r + 1, col=c + 1)
            continue
        if "repeat" not in g.columns:
            g = g.assign(repeat=0)
        for j, ((rep, fold), h) in enumerate(g.groupby(["repeat", "outer_fold"])):
            h = h.sort_values("trial")
            label = f"outer fold {fold}" + (f", repeat {rep}" if g["repeat"].nunique() > 1 else "")
            symbols = ["circle" if s == "COMPLETE" else "circle-open" for s in h.get("state", pd.Series(["COMPLETE"] * len(h)))]
            fig.add_trace(go.Scatter(
                x=h["trial"].to_numpy(), y=_r(h["value"].astype(float)), mode="lines+markers", name=label, legendgroup=label,
                showlegend=label not in shown, connectgaps=False, line=dict(color=palette[j % len(palette)], width=1),
                marker=dict(symbol=symbols, size=6),
                hovertemplate=f"{cand}, {label}<br>trial %{{x}}: %{{y:.4f}}<extra></extra>",
            ), row=r + 1, col=c + 1)
            shown.add(label)
    fig.update_layout(**LAYOUT, height=max(300, 230 * rows))
    fig.update_annotations(font_size=12)
    return fig


def _top_candidates(lb: pd.DataFrame, order: list[str]) -> list[str]:
    """Best per modality by inner score, plus the joint oracle: the decision-curve set."""
    top = []
    rows = lb[lb["candidate"].isin(order)]
    for modality in MODALITIES:
        g = rows[rows["modality"].eq(modality)]
        if not g.empty and "inner_score" in g.columns and g["inner_score"].notna().any():
            top.append(str(g.loc[g["inner_score"].astype(float).idxmax(), "candidate"]))
    oracle = [c for c in (ORACLE_OF["fusion"],) if c in order]
    return top + oracle


def build_figures(run: RunFiles) -> list[FigureSpec]:
    """Every figure of the report, in page order; a missing input gives a figure with a note."""
    preds, lb, comp, trials, studies = run.predictions, run.leaderboard, run.comparisons, run.trials, run.studies
    colors = candidate_colors(lb)
    specs: list[FigureSpec] = []
    no_preds = "predictions.parquet is missing or has no outer-test rows."
    order = ordered_candidates(lb, preds) if preds is not None and len(preds) else []
    pooled = "Pooled outer-test predictions (first repeat); one curve per candidate, legend values from leaderboard.csv."

    def add(div_id, title, caption, make, ok, note):
        specs.append(FigureSpec(div_id, title, caption, make() if ok else None, "" if ok else note))

    add("fig-roc", "ROC curves", pooled, lambda: roc_figure(preds, lb, order, colors), bool(order), no_preds)
    add("fig-pr", "Precision-recall curves", pooled + " The dotted line is the prevalence.",
        lambda: pr_figure(preds, lb, order, colors), bool(order), no_preds)
    add("fig-reliability", "Reliability diagrams",
        "Calibrated P(AFF) against observed frequency in 10 equal-mass bins per candidate; legend shows the stored ECE.",
        lambda: reliability_figure(preds, lb, order, colors), bool(order), no_preds)
    add("fig-uncertainty", "Uncertainty distributions",
        "Per-patient predictive entropy of the scored P(AFF) and mutual information (the members' disagreement, from "
        "bag members or MC-dropout passes), "
        "grouped by modality; boxes show quartiles, whiskers the 2.5-97.5 % range.",
        lambda: uncertainty_figure(preds, lb, order, colors), bool(order), no_preds)
    add("fig-risk-coverage", "Risk-coverage curves",
        "Patients sorted by predictive entropy, most certain first; error at threshold 0.5 among those kept. Lower is better; legend shows the stored AURC.",
        lambda: risk_coverage_figure(preds, lb, order, colors), bool(order), no_preds)
    has_comp = comp is not None and not comp.empty
    add("fig-forest", "Paired differences, every metric",
        "Candidate minus reference with 95 % CI from comparisons.csv (every row: Q2 and Q3, every metric); colour is "
        "the verdict.",
        lambda: forest_figure(comp), has_comp, "comparisons.csv is missing or empty (no fusion candidate).")
    top = _top_candidates(lb, order)
    has_curves = (studies is not None and all(c in studies.columns for c, _ in CURVE_POINTS)
                  and studies[[c for c, _ in CURVE_POINTS]].notna().any().any())
    add("fig-learning", "Learning curves",
        "Inner out-of-fold score of each candidate's bag (the objective of the search) when its members predict at "
        "25, 50 and 100 % of their training budget (epochs for networks, boosting rounds for trees), one line per "
        "outer fold, from studies.csv. For boosted trees a line still rising at 100 % means the model was still "
        "improving; for a network without early stopping the 25 and 50 % points are snapshots part-way through its "
        "learning-rate schedule, so the findings judge it by a fit with half the budget on its own schedule "
        "(half_budget_score) instead. Non-iterative families (logistic regression, late fusion) have none.",
        lambda: learning_curve_figure(studies, order or lb["candidate"].tolist()), has_curves,
        "studies.csv is missing or has no learning-curve columns (curve_25, curve_50, curve_100).")
    add("fig-decision", "Decision curves (net benefit)",
        "Best candidate per modality by inner score (and the joint oracle): net benefit against treating all or none.",
        lambda: decision_curve_figure(preds, lb, top, colors), bool(top), no_preds)
    has_trials = trials is not None and not trials.empty and "value" in trials.columns
    add("fig-search", "Search history",
        "Inner-CV objective of each Optuna trial by trial number, one line per outer fold; open markers are pruned trials.",
        lambda: search_history_figure(trials, order), has_trials, "trials.csv is missing or empty.")
    return specs
