"""The report stage: ``leaderboard.html`` and ``findings.md`` from a run folder's stored files.

    from benchmark.report import build_report, write_findings
    build_report(Path("results/quick-1"))     # writes leaderboard.html and findings.md
    build_findings(lb, comp, manifest, studies).answers   # the three one-sentence answers
"""

from benchmark.report.findings import build_findings, write_findings
from benchmark.report.html import build_report

__all__ = ["build_findings", "build_report", "write_findings"]
