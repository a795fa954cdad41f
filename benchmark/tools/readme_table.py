"""The README's "What the default run shows" table, printed from a run's own files.

    python -m benchmark.tools.readme_table results/my-run        # a run folder
    python -m benchmark.tools.readme_table docs/runs/default     # or a summary stored by perf_page --store

Prints Markdown: one line naming the command, profile, machine, date, wall time and cohort
(from ``manifest.json``, or ``summary.json`` of a stored summary), then every candidate's
pooled outer-test AUC with its 95 % CI from ``leaderboard.csv``, best first. Nothing is typed
by hand: paste the output between the README's ``readme_table`` markers (the docs' tests check
that the README holds this command's output for the summary the markers name).
"""

from __future__ import annotations

import argparse
import sys

from benchmark.tools.run_summary import RunSummary, auc_table, read_summary, run_tool


def render(summary: RunSummary) -> str:
    """The Markdown block: the run's line, then its AUC table."""
    lines = [summary.line(), "Pooled outer-test AUC with 95 % CI, from `leaderboard.csv`:", ""]
    return "\n".join(lines + auc_table(summary.leaderboard)) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.readme_table", description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run folder (results/<run>) or a stored summary (docs/runs/<name>)")
    args = p.parse_args(argv)
    return run_tool(lambda: sys.stdout.write(render(read_summary(args.run))))

if __name__ == "__main__":
    raise SystemExit(main())
