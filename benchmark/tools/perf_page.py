"""The documentation's "Measured performance" page, rendered from stored run summaries.

    python -m benchmark.tools.perf_page --store results/my-run docs/runs/my-run   # keep a finished run's summary
    python -m benchmark.tools.perf_page docs/runs > docs/performance.md           # render the page from them

``--store`` keeps ``summary.json`` (the manifest without paths or secrets, plus this machine's
CPU model: store a run on the machine that ran it, or give ``--machine``) and the headline
columns of ``leaderboard.csv``. The page lists every stored run, smallest profile first: the
command, machine, date and wall time, then per candidate the pooled outer-test figures with
their 95 % CIs, the inner-CV score and the candidate's wall time. The docs' tests check that
docs/performance.md is this command's output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from benchmark.errors import UserError
from benchmark.tools.run_summary import RunSummary, fmt_ci, read_summary, run_tool, store, wall_time

PROFILE_ORDER = ("smoke", "quick", "standard", "paper")
HEADER = """# Measured performance

Every table on this page comes from a run's own files, kept small in `docs/runs/<name>/`
(`summary.json`: the manifest without paths or secrets, and the machine's CPU; `leaderboard.csv`:
the headline columns). The page is rendered from them, never typed:

```
python -m benchmark.tools.perf_page --store results/my-run docs/runs/my-run
python -m benchmark.tools.perf_page docs/runs > docs/performance.md
```

Figures are pooled over the outer test folds with 95 % patient-level bootstrap CIs
([Reading the results](results.md)); *sens@90 % spec* uses the threshold chosen on out-of-fold
data (deployable); *wall* is each candidate's own time. CPU results differ in the last digits
between CPU kinds and thread counts; a run's time depends on the CPU and on what else runs on
the machine, so compare times within one run.
"""


def _order(item: tuple[str, RunSummary]) -> tuple[int, str]:
    name, s = item
    prof = s.info.get("profile_name")
    return (PROFILE_ORDER.index(prof) if prof in PROFILE_ORDER else len(PROFILE_ORDER), name)


def _num(value, digits: int = 3) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def run_section(name: str, s: RunSummary) -> list[str]:
    """One run: heading, its line, versions, the per-candidate table and the time by modality."""
    v = s.info.get("versions") or {}
    versions = ", ".join(f"{k} {v[k]}" for k in ("python", "torch", "timm", "xgboost", "lightgbm", "optuna") if k in v)
    lines = [f"## {name}", "", s.line(), ""]
    if s.info.get("note"):
        lines += [f"Conditions: {s.info['note']}", ""]
    if s.info.get("budget"):
        lines += [f"Profile `{s.info.get('profile_name')}`: {s.info['budget']}.", ""]
    if versions:
        lines += [f"Versions: {versions}.", ""]
    lines += ["| candidate | modality | AUC | Brier | ECE | calibration slope | sens@90 % spec | inner-CV | wall |",
              "|---|---|---|---|---|---|---|---|---|"]
    board = s.leaderboard.sort_values("auc", ascending=False, na_position="last", kind="stable")
    for _, r in board.iterrows():
        ceiling = " (ceiling)" if r.get("modality") == "oracle" else ""
        wall = "-" if pd.isna(r.get("wall_s")) else wall_time(r["wall_s"])
        lines.append(f"| `{r['candidate']}`{ceiling} | {r.get('modality', '')} | {fmt_ci(r, 'auc')} | "
                     f"{_num(r.get('brier'))} | {_num(r.get('ece'))} | {_num(r.get('cal_slope'), 2)} | "
                     f"{_num(r.get('sens_at_spec90_oof'))} | {_num(r.get('inner_score'))} | {wall} |")
    by_mod = s.leaderboard.dropna(subset=["wall_s"]).groupby("modality")["wall_s"].sum()
    if len(by_mod):
        lines += ["", "Candidates' time by modality: " + ", ".join(f"{m} {wall_time(t)}" for m, t in by_mod.items()) + "."]
    return lines + [""]


def render(folder: str | Path) -> str:
    """The page for every stored summary under ``folder`` (one sub-folder each)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder of stored run summaries (docs/runs)")
    runs = [(d.name, read_summary(d)) for d in sorted(folder.iterdir()) if (d / "summary.json").is_file()]
    if not runs:
        raise UserError(f"{folder} holds no stored run (store one with --store RUN_DIR {folder}/NAME)")
    lines = [HEADER]
    for name, s in sorted(runs, key=_order):
        lines += run_section(name, s)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.perf_page", description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default="docs/runs", help="stored summaries to render (default docs/runs)")
    p.add_argument("--store", nargs=2, metavar=("RUN_DIR", "DEST"), help="store a finished run's summary in DEST")
    p.add_argument("--machine", help="with --store: the machine, as the page names it (default: this CPU's model)")
    p.add_argument("--note", help="with --store: the conditions of the run (e.g. other jobs on the machine)")
    args = p.parse_args(argv)

    def work() -> None:
        if args.store:
            dest = store(args.store[0], args.store[1], args.machine, args.note)
            print(f"stored {dest / 'summary.json'} and {dest / 'leaderboard.csv'}", file=sys.stderr)
        else:
            sys.stdout.write(render(args.folder))

    return run_tool(work)

if __name__ == "__main__":
    raise SystemExit(main())
