"""The page's figures of the explanations, drawn from the run's stored tables (``explain_files``).

- risk factors: each shown candidate's top columns by AUC drop with their 95 % intervals,
  coloured by direction; on a synthetic cohort the marker says what the truth calls the
  column (signal, proxy, weak, noise, other);
- images missing: each fusion candidate's pooled AUC with its images, with half, and with
  none, beside the register model's band;
- where the CNN looks: the pointing-game hit rate and the share of attribution inside the
  sign regions, AFF and NFF, against the random-map baseline and the regions' area share.

Only aggregates: no patient's map, value or key reaches the page::

    specs = explain_figures(findings_run(read_run(run_dir)), read_explain(run_dir))
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from benchmark.report.explain_files import ExplainFiles
from benchmark.report.findings.risk import risk_candidates
from benchmark.report.findings.tables import _Run
from benchmark.report.plots import LAYOUT, FigureSpec
from benchmark.report.run_files import RunFiles, num

UP, DOWN, UNKNOWN = "#c0392b", "#2e6fb0", "#8a8a8a"
KIND_SYMBOL = {"signal": "circle", "proxy": "diamond", "weak": "circle-open", "noise": "x", "other": "square-open"}


def findings_run(run: RunFiles) -> _Run:
    """The tables as the findings read them (for the same choice of the best models)."""
    return _Run(run.leaderboard, run.comparisons, run.manifest, run.studies)


def _kind(column: str, truth: dict | None) -> str | None:
    if truth is None:
        return None
    if column in {e["column"] for e in truth.get("signal", [])}:
        return "signal"
    if column in {e["column"] for e in truth.get("weak", [])}:
        return "weak"
    if column in {q for v in truth.get("proxies", {}).values() for q in v}:
        return "proxy"
    return "noise" if column in set(truth.get("noise", [])) else "other"


def risk_figure(names: list[str], ex: ExplainFiles) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.18)
    shown = set()
    for j, name in enumerate(names, start=1):
        rows = ex.importance[ex.importance["candidate"].eq(name)].sort_values("rank").head(ex.k).iloc[::-1]
        for _, r in rows.iterrows():
            d = num(r["direction"])
            color = UNKNOWN if d != d or d == 0 else (UP if d > 0 else DOWN)
            kind = _kind(str(r["column"]), ex.truth)
            legend = f"{'raises' if color == UP else 'lowers' if color == DOWN else 'unknown'}" + (f", {kind}" if kind else "")
            fig.add_trace(go.Scatter(
                x=[r["auc_drop"]], y=[str(r["column"])], mode="markers", name=legend,
                legendgroup=legend, showlegend=legend not in shown,
                marker=dict(color=color, size=10, symbol=KIND_SYMBOL.get(kind, "circle")),
                error_x=dict(type="data", symmetric=False, array=[r["drop_hi"] - r["auc_drop"]],
                             arrayminus=[r["auc_drop"] - r["drop_lo"]], color=color),
                hovertemplate=f"{r['column']}: AUC drop %{{x:.3f}} [{r['drop_lo']:.3f}, {r['drop_hi']:.3f}]<br>"
                              f"top {ex.k} in {int(r['top_k'])} of {int(r['n_folds'])} folds<extra></extra>"), row=1, col=j)
            shown.add(legend)
        fig.add_vline(x=0, line=dict(color="#999", dash="dot"), row=1, col=j)
        fig.update_xaxes(title_text="AUC drop when shuffled", row=1, col=j)
    fig.update_layout(**LAYOUT, height=60 + 28 * ex.k)
    return fig


def missing_figure(table) -> go.Figure:
    fig = go.Figure()
    order = {"images": 0, "half": 1, "none": 2}
    colors = {"images": "#2ca02c", "half": "#98c46f", "none": "#d62728"}
    label = {"images": "with images", "half": "half without", "none": "none with images"}
    for scenario in order:
        rows = table[table["scenario"].eq(scenario)]
        fig.add_trace(go.Scatter(
            x=rows["auc"], y=rows["candidate"], mode="markers", name=label[scenario],
            marker=dict(color=colors[scenario], size=10),
            error_x=dict(type="data", symmetric=False, array=rows["auc_hi"] - rows["auc"],
                         arrayminus=rows["auc"] - rows["auc_lo"])))
    if "ref_auc" in table.columns and table["ref_auc"].notna().any():
        r = table[table["ref_auc"].notna()].iloc[0]
        fig.add_vrect(x0=r["ref_lo"], x1=r["ref_hi"], fillcolor="#1f77b4", opacity=0.12, line_width=0)
        fig.add_vline(x=r["ref_auc"], line=dict(color="#1f77b4"),
                      annotation_text=f"{r['reference']} (register)", annotation_position="top")
    fig.update_layout(**LAYOUT, height=120 + 40 * table["candidate"].nunique(), xaxis_title="pooled outer-test AUC")
    return fig


def localisation_figure(table) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=["pointing game: hit rate", "attribution inside the regions"])
    for col, (metric, base) in enumerate((("hit", "hit_random"), ("share", "share_random")), start=1):
        for series, color, name in ((metric, "#2ca02c", "Grad-CAM"), (base, "#7f7f7f", "random map"),
                                    ("area", "#bbbbbb", "area share (expected at random)")):
            if series == "area" and metric == "hit":
                continue
            fig.add_trace(go.Bar(x=[f"{c} {k}" for c, k in zip(table["candidate"], table["cls"])], y=table[series],
                                 name=name, marker_color=color, showlegend=col == 2 or series != "area",
                                 legendgroup=name), row=1, col=col)
    fig.update_layout(**LAYOUT, barmode="group", height=360, yaxis=dict(range=[0, 1]), yaxis2=dict(range=[0, 1]))
    return fig


def explain_figures(run: _Run, ex: ExplainFiles) -> list[FigureSpec]:
    """The figures of the explanations (each with a note instead when its table is absent)."""
    names = [n for n, _ in risk_candidates(run, ex)]
    if ex.importance is not None:
        names = [n for n in names if ex.importance["candidate"].eq(n).any()]
    specs = [FigureSpec(
        "fig-risk", "Risk factors",
        f"Top {ex.k} register columns of the best register and fusion models by the AUC lost when the column is "
        "shuffled among outer-test patients (95 % intervals); red raises P(AFF), blue lowers it"
        + ("; markers: what the synthetic cohort's truth calls the column." if ex.truth else "."),
        risk_figure(names, ex) if ex.importance is not None and names else None,
        "the run has no importance rows for these candidates")]
    table = ex.missing
    specs.append(FigureSpec(
        "fig-missing", "Images missing",
        "Each fusion candidate's pooled outer-test AUC (95 % CI) with its images, with half the patients' images "
        "withheld, and with none; the band is the best register model on the same patients.",
        missing_figure(table) if table is not None and not table.empty else None,
        "no fusion candidate that reads images"))
    loc = ex.localisation
    if loc is not None and not loc.empty:
        from benchmark.evaluate.localisation import summary_table

        specs.append(FigureSpec(
            "fig-localisation", "Where the CNN looks",
            "Grad-CAM of the explained image candidates on their outer-test images, scored against the synthetic "
            "sign regions: the share of images whose map peaks inside a region (pointing game) and the share of "
            "the map's mass inside, per class, beside a random map and the regions' area.",
            localisation_figure(summary_table(loc)), ""))
    return specs
