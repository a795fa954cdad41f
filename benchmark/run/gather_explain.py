"""The end of a run, for its explanations: the units' files gathered into the run's tables.

    gather_explanations(rd, cohort, pred, board, cands, n_boot=500, seed=0)

writes, from what ``explain_unit`` left beside the parts:

- ``importance.csv``: every unit's register importance rows (one per candidate x repeat x
  outer fold x register column; aggregates only);
- ``importance_notes.json``: candidates whose importance was not computed, and why;
- ``risk_truth.json``: the cohort's register truth (column names and signs, no patient
  data) when the dataset has one, for the recovery score of the report;
- ``missing_modality.csv``: each fusion candidate's pooled AUC with the images withheld,
  beside the best register candidate (by inner-CV score) on the same patients
  (``evaluate.missing_modality``);
- ``localisation.csv``: an explained image candidate's localisation scores per fold and class.

The register models' shuffled predictions (``*.permuted.npz``) are deleted: only late
fusions' importance read them, during the run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from benchmark.data.cohort import Cohort
from benchmark.run.folder import RunDir
from benchmark.search.spaces import Candidate

_PART = re.compile(r"^(?P<cand>.+)__r(?P<r>\d+)_f(?P<f>\d+)\.(?P<what>[a-z_]+)\.(?P<ext>csv|txt|npz)$")


def _unit_files(rd: RunDir, what: str, names: set[str]) -> list[tuple[str, int, int, Path]]:
    out = []
    for p in sorted(rd.parts.glob(f"*.{what}.*")):
        m = _PART.match(p.name)
        if m and m["what"] == what and m["cand"] in names:
            out.append((m["cand"], int(m["r"]), int(m["f"]), p))
    return out


def _write_csv(rd: RunDir, name: str, frames: list[pd.DataFrame]) -> None:
    path = rd.path / name
    if frames:
        table = pd.concat(frames, ignore_index=True)
        rd.write_atomic(path, lambda q: table.to_csv(q, index=False))
    elif path.exists():
        path.unlink()


def gather_explanations(rd: RunDir, cohort: Cohort, pred: pd.DataFrame, board: pd.DataFrame,
                        cands: list[Candidate], *, n_boot: int, seed: int) -> None:
    """The run's explanation tables (module docstring)."""
    from benchmark.evaluate.compare import select_references
    from benchmark.evaluate.missing_modality import missing_modality_table

    names = {c.name for c in cands}
    _write_csv(rd, "importance.csv", [pd.read_csv(p) for *_, p in _unit_files(rd, "importance", names)])
    notes = {}
    for cand, _, _, p in _unit_files(rd, "importance_skipped", names):
        notes[cand] = p.read_text(encoding="utf-8").strip()
    if notes:
        rd.write_json("importance_notes.json", notes)
    if cohort.truth is not None:
        rd.write_json("risk_truth.json", cohort.truth)
    scores = []
    for cand, r, f, p in _unit_files(rd, "missing", names):
        scores.append(pd.read_csv(p).assign(candidate=cand, repeat=r, outer_fold=f))
    reference = select_references(board).get("best_register")
    table = missing_modality_table(pd.concat(scores, ignore_index=True) if scores else None, pred, reference,
                                   n_boot=n_boot, seed=seed)
    _write_csv(rd, "missing_modality.csv", [table] if not table.empty else [])
    _write_csv(rd, "localisation.csv", [pd.read_csv(p) for *_, p in _unit_files(rd, "localisation", names)])
    for *_, p in _unit_files(rd, "permuted", names):
        p.unlink(missing_ok=True)

