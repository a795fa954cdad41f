"""The report stage: ``leaderboard.html`` and ``findings.md`` from a run folder's stored files.

    from benchmark.report import build_report, write_findings
    build_report(Path("results/quick-1"))     # writes leaderboard.html and findings.md
"""

from benchmark.report.findings import write_findings
from benchmark.report.html import build_report

__all__ = ["build_report", "write_findings"]
