"""Readers of a run folder's stored files, shared by ``findings/``, ``html.py`` and ``plots.py``.

The report never recomputes a metric: it reads what the run stored (``manifest.json``,
``leaderboard.csv``, ``comparisons.csv``, ``studies.csv``, ``trials.csv``,
``predictions.parquet``) with the types the report relies on, and a missing required file
or column is a one-line UserError that names it. ``num`` and ``safe_text`` turn single
cells into a float and into text safe to print::

    from benchmark.report.run_files import read_run
    run = read_run(Path("results/quick-1"))
    run.leaderboard.head(), run.comparisons, run.manifest.get("seed")
    run.studies            # one row per candidate x repeat x outer fold (or None)
    run.predictions        # outer-test rows of the first repeat, no patient keys (or None)

Older runs are read as the current format: ``comparisons.csv`` without ``question``,
``holm_family``, ``margin`` or ``noninferior`` gets them empty (``question`` from the
reference role), and its verdict ``no_difference`` reads as ``not_shown``; ``studies.csv``
without the learning-curve columns (``curve_25``, ``curve_50``, ``curve_100``,
``at_budget``) or ``timed_out`` gets them empty.

>>> num("0.25"), num(None) != num(None), safe_text("failed reading /data/site/x.dcm\\nTraceback")
(0.25, True, 'failed reading <path>')
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from benchmark.errors import UserError
from benchmark.evaluate.uncertainty import UNCERTAINTY_COLUMNS, add_uncertainty

LEADERBOARD_REQUIRED = ("candidate", "modality", "status")
COMPARISONS_REQUIRED = ("candidate", "reference", "reference_role", "metric", "diff", "lo", "hi", "p_holm", "verdict")
TRIALS_REQUIRED = ("candidate", "outer_fold", "trial", "value")
COMPARISONS_OPTIONAL = ("value_candidate", "value_reference", "p_value", "test", "question", "holm_family", "margin",
                       "noninferior", "n_patients")
VERDICTS = ("candidate_better", "reference_better", "equivalent", "not_shown")
OLD_VERDICTS = {"no_difference": "not_shown"}  # runs written before the equivalence margins
QUESTION_OF_ROLE = {"best_tree": "Q2"}  # every other reference role is a Q3 (fusion) row
STUDIES_REQUIRED = ("candidate", "outer_fold")
CURVE_COLUMNS = ("curve_25", "curve_50", "curve_100")  # inner score at 25 / 50 / 100 % of the training budget
PREDICTION_COLUMNS = ("candidate", "modality", "repeat", "set", "y", "prob", "members") + UNCERTAINTY_COLUMNS


# ---------------------------------------------------------------- single cells


def num(v: object) -> float:
    """A cell as a float; NaN when it is missing or not a number."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def flag(v: object) -> bool | None:
    """A stored boolean cell (``True``, ``"true"``, ``1``) as a bool; None when missing or unreadable."""
    if isinstance(v, (bool,)):
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    text = str(v).strip().lower()
    if text in ("true", "1", "1.0", "yes"):
        return True
    if text in ("false", "0", "0.0", "no"):
        return False
    return None


def safe_text(text: object, limit: int = 200) -> str:
    """A stored text (a failure reason, a version) made safe to print: first line, no
    path-like tokens, at most ``limit`` characters."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    line = re.sub(r"\S*[\\/]\S+", "<path>", line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


# ---------------------------------------------------------------- the stored files


def read_table(run_dir: Path, name: str, required: Iterable[str] = (), optional: bool = False) -> pd.DataFrame | None:
    """Read ``run_dir/name`` (CSV); None if absent and ``optional``; UserError on a missing column."""
    path = Path(run_dir) / name
    if not path.is_file():
        if optional:
            return None
        raise UserError(f"{path} not found; finish the run (python -m benchmark run --resume ...) or give another run folder")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        df = pd.DataFrame(columns=list(required))
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise UserError(f"{path}, column {missing[0]!r} is missing; rebuild the run's tables with the current harness")
    return df


def read_leaderboard(run_dir: Path) -> pd.DataFrame:
    """``leaderboard.csv`` with ``is_ceiling`` as bool and ``family``/``info`` as text."""
    lb = read_table(run_dir, "leaderboard.csv", LEADERBOARD_REQUIRED)
    lb["candidate"] = lb["candidate"].astype(str)
    lb["modality"] = lb["modality"].astype(str)
    lb["status"] = lb["status"].fillna("ok").astype(str)
    if "is_ceiling" in lb.columns:
        lb["is_ceiling"] = lb["is_ceiling"].astype(str).str.lower().isin(["true", "1", "1.0", "yes"])
    else:
        lb["is_ceiling"] = lb["modality"].eq("oracle")
    lb["is_ceiling"] = lb["is_ceiling"] | lb["modality"].eq("oracle")
    for col in ("family", "info"):
        lb[col] = lb[col].map(lambda v: "" if pd.isna(v) else str(v)) if col in lb.columns else ""
    return lb.copy()  # one block per dtype again after the column edits


def read_comparisons(run_dir: Path) -> pd.DataFrame | None:
    """``comparisons.csv`` or None when the run has none (no fusion candidate).

    Columns of the current format that an older run lacks are added empty; ``question``
    defaults to ``Q2`` for ``best_tree`` rows and ``Q3`` otherwise; ``noninferior`` holds
    True, False or None; an old verdict ``no_difference`` reads as ``not_shown``.
    """
    comp = read_table(run_dir, "comparisons.csv", COMPARISONS_REQUIRED, optional=True)
    if comp is None:
        return None
    for col in COMPARISONS_OPTIONAL:
        if col not in comp.columns:
            comp[col] = math.nan
    for col in ("candidate", "reference", "reference_role", "metric", "verdict"):
        comp[col] = comp[col].astype(str)
    comp["verdict"] = comp["verdict"].replace(OLD_VERDICTS)
    role_question = comp["reference_role"].map(lambda r: QUESTION_OF_ROLE.get(r, "Q3"))
    comp["question"] = comp["question"].where(comp["question"].notna(), role_question).astype(str)
    comp["noninferior"] = comp["noninferior"].map(flag).astype(object)
    comp["test"] = comp["test"].map(lambda v: "" if pd.isna(v) else str(v))
    comp["holm_family"] = comp["holm_family"].map(lambda v: "" if pd.isna(v) else str(v))
    return comp


def read_studies(run_dir: Path) -> pd.DataFrame | None:
    """``studies.csv`` (one row per candidate x repeat x outer fold) or None when absent.

    The learning-curve columns and ``at_budget`` are floats (NaN where missing or for a
    non-iterative family), ``timed_out`` True, False or None.
    """
    studies = read_table(run_dir, "studies.csv", STUDIES_REQUIRED, optional=True)
    if studies is None:
        return None
    studies["candidate"] = studies["candidate"].astype(str)
    if "repeat" not in studies.columns:
        studies["repeat"] = 0
    for col in CURVE_COLUMNS + ("at_budget", "best_value"):
        studies[col] = pd.to_numeric(studies[col], errors="coerce") if col in studies.columns else math.nan
    studies["timed_out"] = (studies["timed_out"].map(flag).astype(object) if "timed_out" in studies.columns
                            else None)
    return studies


def read_trials(run_dir: Path) -> pd.DataFrame | None:
    """``trials.csv`` (one row per Optuna trial) or None when absent."""
    trials = read_table(run_dir, "trials.csv", TRIALS_REQUIRED, optional=True)
    if trials is not None:
        trials["candidate"] = trials["candidate"].astype(str)
    return trials


def profile_of(manifest: dict) -> tuple[str, dict]:
    """(profile name, its settings) from a manifest: ``profile_name`` and the ``profile``
    dict, or ``profile`` given as a name; ``("", {})`` when it records none."""
    profile = manifest.get("profile")
    settings = dict(profile) if isinstance(profile, dict) else {}
    name = manifest.get("profile_name") or settings.get("name") or (profile if isinstance(profile, str) else "")
    return str(name or ""), settings


def read_manifest(run_dir: Path) -> dict:
    """``manifest.json`` as a dict ({} when absent)."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}); restore it or rerun the benchmark") from None


def read_test_predictions(run_dir: Path) -> pd.DataFrame | None:
    """Outer-test rows of ``predictions.parquet`` (first repeat only), without patient keys.

    The uncertainty columns are the stored ones; a table written without them gets them
    from ``evaluate.uncertainty.add_uncertainty``, as the leaderboard does. None when the
    file is absent.
    """
    path = Path(run_dir) / "predictions.parquet"
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    df = pd.read_parquet(path, columns=[c for c in PREDICTION_COLUMNS if c in names])
    if "set" in df.columns:
        df = df[df["set"].eq("test")]
    if "repeat" in df.columns and len(df):
        df = df[df["repeat"].eq(df["repeat"].min())]
    df = df.dropna(subset=["prob", "y"]).copy()
    df["candidate"] = df["candidate"].astype(str)
    if not all(c in df.columns and df[c].notna().any() for c in ("entropy", "mutual_info")):
        df = add_uncertainty(df.drop(columns=[c for c in UNCERTAINTY_COLUMNS if c in df.columns]))
    return df.drop(columns=[c for c in ("members", "set", "repeat") if c in df.columns])


@dataclass
class RunFiles:
    """What the report reads from one run folder."""

    path: Path
    leaderboard: pd.DataFrame
    comparisons: pd.DataFrame | None
    manifest: dict
    predictions: pd.DataFrame | None
    trials: pd.DataFrame | None
    studies: pd.DataFrame | None = None


def read_run(run_dir: Path) -> RunFiles:
    """All the stored files the report uses; ``leaderboard.csv`` is the one that must exist."""
    run_dir = Path(run_dir)
    return RunFiles(path=run_dir, leaderboard=read_leaderboard(run_dir), comparisons=read_comparisons(run_dir),
                    manifest=read_manifest(run_dir), predictions=read_test_predictions(run_dir),
                    trials=read_trials(run_dir), studies=read_studies(run_dir))


def budget_text(value: object) -> str:
    """A profile budget in words: ``6`` or, per modality, ``register 6 / image 1 / fusion 2``."""
    if isinstance(value, dict):
        return " / ".join(f"{safe_text(k)} {safe_text(v)}" for k, v in value.items())
    return safe_text(value)


def smallest(value: object) -> float:
    """The smallest number of a budget given as one number or per modality (NaN when none)."""
    vals = [num(v) for v in (value.values() if isinstance(value, dict) else [value])]
    vals = [v for v in vals if v == v]
    return min(vals) if vals else float("nan")

