"""``python -m benchmark report RUN``: rebuild ``leaderboard.html`` and ``findings.md`` from a run's files.

The page opens offline: the plotly.js bundle is embedded once, the table sorts with a few
lines of vanilla JS. It reads only the stored files (manifest.json, leaderboard.csv,
comparisons.csv, studies.csv, predictions.parquet, trials.csv), through ``run_files``, and
never prints patient keys or dataset paths.

Page order: a compact header; the three answers of ``findings.md`` (one sentence each,
elements ``#answer-q1..3``) beside the forest plot of the paired AUC differences behind them,
so both fit the first screen at 1400 x 900; the detail of each answer folded
(``<details>``); the leaderboard with its key columns (candidate, modality, AUC, Brier,
calibration slope, sensitivity at 90 % specificity with the out-of-fold threshold, inner
score) and the rest behind a toggle; then the figures::

    from benchmark.report.html import build_report
    html_path = build_report(Path("results/quick-1"))   # results/quick-1/leaderboard.html

A run whose manifest status is not ``complete`` (``running``: still going or killed;
``failed``: stopped, with its reason) is refused with one line that says how to resume it,
unless ``partial=True`` (``report RUN --partial``): then what its stored tables hold is
drawn, and the page and ``findings.md`` say PARTIAL at the top.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import re
from pathlib import Path

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from benchmark.errors import UserError
from benchmark.paths import results_dir
from benchmark.report.explain_files import read_explain
from benchmark.report.explain_plots import explain_figures, findings_run
from benchmark.report.findings import Findings, build_findings, key_comparisons
from benchmark.report.findings.assemble import explained
from benchmark.report.html_table import SORT_JS, _duration, _e, leaderboard_table
from benchmark.report.plots import answers_figure, build_figures
from benchmark.report.run_files import budget_text, profile_of, read_manifest, read_run, safe_text
from benchmark.report.subgroup_report import best_models, read_subgroups, subgroups_html

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:12px auto;max-width:1500px;padding:0 16px;color:#222}
h1{margin:0 0 4px;font-size:22px}h2{margin-top:30px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{display:flex;flex-wrap:wrap;gap:2px 18px;font-size:13px;color:#444}
.meta b{color:#222}.versions{font-size:12px;color:#666;margin-top:2px}.versions summary{cursor:pointer}
.answers{display:grid;grid-template-columns:minmax(0,11fr) minmax(0,9fr);gap:18px;align-items:start;
 background:#f7f9fc;border:1px solid #dde4ee;border-radius:6px;padding:10px 16px;margin-top:10px}
.answers h2{margin:2px 0 8px;border:none;font-size:19px}
.answer{margin:0 0 10px;font-size:15px;line-height:1.4}
.answer .q{display:block;font-weight:600;color:#1f4e79;font-size:13px;text-transform:uppercase;letter-spacing:.02em}
.answer p{margin:2px 0 0}
.profile{font-size:13px;color:#6b4a00;background:#fff7e0;border-left:3px solid #e0a800;padding:4px 8px;margin:8px 0 0}
.answer-figure .caption{margin-top:0}
.findings{margin-top:14px}.findings h2{font-size:18px}
.findings details{border:1px solid #dde4ee;border-radius:6px;padding:4px 14px;margin:6px 0;background:#fbfcfe}
.findings summary{cursor:pointer;font-weight:600;font-size:15px;padding:4px 0}
.findings h3{font-size:15px}
table.sortable{border-collapse:collapse;font-size:12.5px;width:100%}
table.sortable th{background:#eef1f5;cursor:pointer;position:sticky;top:0;padding:5px 6px;text-align:left;user-select:none}
table.sortable th[data-dir=asc]::after{content:" \\25B2"}table.sortable th[data-dir=desc]::after{content:" \\25BC"}
table.sortable td{padding:3px 6px;border-bottom:1px solid #eee;white-space:nowrap}
table.compact .extra{display:none}
tr.ceiling td{font-style:italic;background:#f4f4f4}tr.failed td{color:#999}tr.failed td.info{color:#b22}
td.info{white-space:normal;max-width:360px}
.chip{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:middle}
.badge{font-size:10px;border:1px solid #999;border-radius:3px;padding:0 3px;margin-left:4px;font-style:normal;color:#555}
.badge.failed{border-color:#b22;color:#b22}
.caption{color:#555;font-size:13px;margin:2px 0 6px}.note{color:#b22}
.partial{font-size:16px;font-weight:600;color:#fff;background:#b22;border-radius:4px;padding:6px 10px;margin:6px 0}
.tablewrap{overflow-x:auto;max-height:80vh}
button.toggle{font-size:13px;margin:0 0 6px;padding:3px 10px;cursor:pointer}
"""


# ---------------------------------------------------------------- small pieces


def _inline(text: str) -> str:
    """Escaped text with the inline markdown the findings write: **bold** and `code`."""
    text = _e(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def markdown_to_html(md: str) -> str:
    """The small markdown subset the findings write: headings, paragraphs, '- ' lists, **bold**, `code`."""
    out, para, items = [], [], []

    def flush() -> None:
        if para:
            out.append("<p>" + "<br>".join(_inline(p) for p in para) + "</p>")
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    for line in md.splitlines():
        m = re.match(r"(#{1,4})\s+(.*)", line)
        if m:
            flush()
            level = len(m.group(1))
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif line.startswith("- "):
            if para:
                flush()
            items.append(line[2:])
        elif not line.strip():
            flush()
        else:
            if items:
                flush()
            para.append(line)
    flush()
    return "\n".join(out)


def _header(manifest: dict, run_dir: Path) -> str:
    ds = manifest.get("dataset") or {}
    fields = [
        ("run", manifest.get("run", run_dir.name)),
        ("profile", profile_of(manifest)[0]),
        ("seed", manifest.get("seed", "")),
        ("dataset", ds.get("name", "") + (" (synthetic)" if ds.get("synthetic") else "")),
        ("patients", f"{ds.get('n_patients', '')} ({ds.get('n_pos', '')} AFF)" if ds else ""),
        ("status", manifest.get("status", "")),
        ("started", manifest.get("started", "")),
        ("finished", manifest.get("finished", "")),
        ("wall time", _duration(manifest.get("wall_s"))),
        ("report built", _dt.datetime.now().strftime("%Y-%m-%d %H:%M")),
    ]
    profile = profile_of(manifest)[1]
    if profile:
        keys = ("outer_folds", "inner_folds", "repeats", "n_trials", "bootstrap", "image_size", "max_epochs")
        fields.append(("protocol", ", ".join(f"{k}={budget_text(profile[k])}" for k in keys if k in profile)))
    meta = "".join(f"<div><b>{_e(k)}</b>: {_e(safe_text(v))}</div>" for k, v in fields if v not in ("", None))
    versions = manifest.get("versions") or {}
    hardware = manifest.get("hardware") or {}
    vtext = ", ".join(f"{k} {safe_text(v)}" for k, v in versions.items()) if isinstance(versions, dict) else safe_text(versions)
    htext = (", ".join(f"{k}: {safe_text(v)}" for k, v in hardware.items() if v not in (None, "") and "<path>" not in safe_text(v))
             if isinstance(hardware, dict) else safe_text(hardware))
    title = _e(manifest.get("run", run_dir.name))
    missing = "" if manifest else '<p class="note">manifest.json is missing: run details unknown.</p>'
    return (f"<h1>AFF/NFF benchmark: {title}</h1>{missing}<div class='meta'>{meta}</div>"
            f"<details class='versions'><summary>versions and hardware</summary>versions: {_e(vtext)}<br>"
            f"hardware: {_e(htext)}</details>")


def _plot(fig, div_id: str, toolbar: bool = True) -> str:
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True, "displayModeBar": "hover" if toolbar else False})


def answers_html(findings: Findings, key_rows: pd.DataFrame) -> str:
    """The three answers (``#answer-q1..3``) and the profile note, beside the forest plot of their AUC rows."""
    answers = "".join(
        f'<div class="answer" id="answer-{_e(a.key)}"><span class="q">{_e(a.title)}</span><p>{_inline(a.text)}</p></div>'
        for a in findings.answers)
    if key_rows.empty:
        figure = "<p class='note'>Not drawn: comparisons.csv has no AUC comparison behind the answers.</p>"
    else:
        figure = ("<p class='caption'>Paired AUC differences behind the answers (candidate minus reference, 95 % CI, "
                  "from comparisons.csv); the blue band is each row's equivalence margin.</p>"
                  + _plot(answers_figure(key_rows), "fig-answers", toolbar=False))
    return (f'<section class="answers" id="answers"><div class="answer-list"><h2>Answers</h2>{answers}'
            f"<p class='profile'>{_inline(findings.profile)}</p></div>"
            f"<div class='answer-figure'>{figure}</div></section>")


def detail_html(findings: Findings) -> str:
    """The detail of each answer (and the caveats), each section folded in a ``<details>``."""
    parts = [f"<h2>How each answer was reached</h2><p class='caption'>{_inline(findings.intro)}</p>"]
    for section in findings.sections:
        title = section[0][3:] if section and section[0].startswith("## ") else "Detail"
        body = "\n".join(section[1:] if section and section[0].startswith("## ") else section)
        parts.append(f"<details><summary>{_inline(title)}</summary>{markdown_to_html(body)}</details>")
    return "".join(parts)


def _figures_html(specs) -> str:
    parts = []
    for s in specs:
        parts.append(f"<h2 id='{_e(s.div_id)}-section'>{_e(s.title)}</h2><p class='caption'>{_e(s.caption)}</p>")
        if s.figure is None:
            parts.append(f"<p class='note'>Not drawn: {_e(s.note)}</p>")
        else:
            parts.append(_plot(s.figure, s.div_id))
    return "\n".join(parts)


# ---------------------------------------------------------------- the page


COMPLETE = ("complete", "finished")   # "finished": what hand-written and older test manifests say


def run_status(manifest: dict) -> tuple[str, str]:
    """(status, reason) from a manifest; ("", "") when it records none (no manifest, or an old run)."""
    return str(manifest.get("status") or ""), safe_text(manifest.get("reason"), limit=300)


def incomplete_text(run_dir: Path, manifest: dict) -> str | None:
    """One line on a run that is not complete (None when it is, or says nothing): status, reason, how to resume."""
    status, reason = run_status(manifest)
    if not status or status in COMPLETE:
        return None
    name = manifest.get("run") or Path(run_dir).name
    what = {"running": "still running, or stopped without a trace (killed)"}.get(status, reason or "no reason recorded")
    return f"run {name} is {status} ({what})"


def partial_markdown(markdown: str, note: str) -> str:
    """``findings.md`` marked PARTIAL: its title and a first line saying why."""
    title, _, rest = markdown.partition("\n")
    return f"{title} (PARTIAL)\n\n**PARTIAL: {note}.**\n{rest}"


def build_report(run_dir: Path, partial: bool = False, risk_factors: list[str] | None = None) -> Path:
    """Write ``run_dir/leaderboard.html`` and ``run_dir/findings.md``; return the HTML path.

    A run that is not complete is a UserError, unless ``partial``: then the stored tables are
    drawn and both files are marked PARTIAL at the top. ``risk_factors``: candidates whose risk
    factors are shown besides the best register and fusion models'.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} not found; give a run folder path or a run name under results/")
    manifest = read_manifest(run_dir)
    state = incomplete_text(run_dir, manifest)
    name = manifest.get("run") or run_dir.name
    if not (run_dir.parent.resolve() == results_dir().resolve() and run_dir.name == name):
        name = str(run_dir)   # not under the default results folder: the hints name its path
    resume = f"resume it with `python -m benchmark run --resume --run {name}`"
    if state and not partial:
        raise UserError(f"{state}; {resume}, or draw what it stored with `python -m benchmark report {name} --partial`")
    if state and not (run_dir / "leaderboard.csv").is_file():
        raise UserError(f"{state} and stopped before writing leaderboard.csv, so there is nothing to draw; {resume}")
    run = read_run(run_dir)
    lb, manifest = run.leaderboard, run.manifest
    subgroups = read_subgroups(run_dir)
    explain = read_explain(run_dir, extra=risk_factors)
    findings = build_findings(lb, run.comparisons, manifest, run.studies, subgroups, explain)
    note = (f"{state}; this page shows only the tables it stored before that, not a finished benchmark; {resume}"
            if state else "")
    markdown = findings.markdown()
    (run_dir / "findings.md").write_text(partial_markdown(markdown, note) if note else markdown, encoding="utf-8")
    specs = build_figures(run) + (explain_figures(findings_run(run), explain) if explained(manifest, explain) else [])
    banner = f'<p class="partial" id="partial">PARTIAL: {_e(note)}.</p>' if note else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{'PARTIAL ' if note else ''}{_e(manifest.get('run', run_dir.name))}: AFF/NFF leaderboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<header>{banner}{_header(manifest, run_dir)}</header>
{answers_html(findings, key_comparisons(lb, run.comparisons))}
<section class="findings" id="findings">{detail_html(findings)}</section>
<h2 id="leaderboard-section">Leaderboard</h2>
<p class="caption">Pooled outer-test metrics with 95 % patient-level bootstrap CIs; click a header to sort.
Grey italic rows are oracle ceilings (exact posteriors of the synthetic generator), not models.
Sensitivity at 90 % specificity uses a threshold chosen on inner out-of-fold data (deployable); the value with the
threshold chosen on the test set (optimistic) is among all columns.</p>
{leaderboard_table(lb)}
{subgroups_html(subgroups, best_models(lb))}
{_figures_html(specs)}
<script>{SORT_JS}</script>
</body></html>
"""
    out = run_dir / "leaderboard.html"
    out.write_text(page, encoding="utf-8")
    return out


def resolve_run(run: str, results: Path | None = None) -> Path:
    """A run folder path, or a run name under ``results`` (default: ``paths.results_dir()``)."""
    results = Path(results) if results is not None else results_dir()
    path = Path(run)
    if path.is_dir():
        return path
    named = results / run
    if named.is_dir():
        return named
    existing = sorted(p.name for p in results.glob("*") if p.is_dir()) if results.is_dir() else []
    hint = f" (runs there: {', '.join(existing[:10])})" if existing else ""
    raise UserError(f"run {run!r} not found as a folder or under {results}/{hint}; give a run folder path or a run name")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder, or a run name under results/")
    parser.add_argument("--results", "--results-dir", dest="results_dir", type=Path, default=None,
                        help="where run names are looked up (default: $AFF_BENCHMARK_RESULTS or results/, as for run)")
    parser.add_argument("--partial", action="store_true",
                        help="draw a run that is not complete (failed or still running) from what it stored; "
                             "the page and findings.md are marked PARTIAL")
    parser.add_argument("--risk-factors", default=None, metavar="NAMES",
                        help="also show the register risk factors of these candidates (comma-separated), besides the "
                             "best register and fusion models'")


def command(args: argparse.Namespace) -> int:
    run_dir = resolve_run(args.run, args.results_dir)
    extra = [n for n in (args.risk_factors or "").split(",") if n]
    out = build_report(run_dir, partial=args.partial, risk_factors=extra)
    state = incomplete_text(run_dir, read_manifest(run_dir))
    print(f"wrote {out} and {out.with_name('findings.md')}" + (f" (PARTIAL: {state})" if state else ""))
    return 0
