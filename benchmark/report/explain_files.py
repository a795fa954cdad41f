"""Readers of a run's explanation tables, for the findings and the page (``run.gather_explain`` writes them).

    ex = read_explain(Path("results/quick-1"))
    ex.importance     # pooled, ranked: one row per candidate x register column (or None)
    ex.truth          # the cohort's register truth (synthetic cohorts; else None)
    ex.notes          # candidate -> why its importance was not computed
    ex.missing        # missing_modality.csv (or None)
    ex.localisation   # localisation.csv (or None)

Every file is optional: a run made before they existed, or with ``--importance none``, has
none of them, and the report then says what is not there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark.evaluate.importance import TOP_K, pooled_importance
from benchmark.report.run_files import read_table


@dataclass
class ExplainFiles:
    importance: pd.DataFrame | None = None
    truth: dict | None = None
    notes: dict = field(default_factory=dict)
    missing: pd.DataFrame | None = None
    localisation: pd.DataFrame | None = None
    extra: list[str] = field(default_factory=list)   # candidates asked for besides the best two (report --risk-factors)
    k: int = TOP_K


def _json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_explain(run_dir: Path, extra: list[str] | None = None, k: int = TOP_K) -> ExplainFiles:
    """The explanation tables of ``run_dir`` (each None when absent)."""
    run_dir = Path(run_dir)
    rows = read_table(run_dir, "importance.csv", ("candidate", "column", "auc_drop"), optional=True)
    notes = _json(run_dir / "importance_notes.json") or {}
    return ExplainFiles(
        importance=None if rows is None or rows.empty else pooled_importance(rows, k=k),
        truth=_json(run_dir / "risk_truth.json"),
        notes={str(a): str(b) for a, b in notes.items()},
        missing=read_table(run_dir, "missing_modality.csv", ("candidate", "scenario", "auc"), optional=True),
        localisation=read_table(run_dir, "localisation.csv", ("candidate",), optional=True),
        extra=list(extra or []), k=k)
