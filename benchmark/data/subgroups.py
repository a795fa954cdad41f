"""Subgroups of a cohort: the dataset file's ``subgroups`` key and each patient's level.

    subgroups: [sex, site, {column: age, bands: [0, 65, 80, 200]}]

Each entry names a register feature column. A categorical column (or a numeric one with at
most ``MAX_PLAIN_LEVELS`` distinct values, such as a 0/1 flag) gives one subgroup per value;
a numeric column with ``bands`` gives one per band, ``[65, 80)`` holding 65 <= value < 80 (the
last band includes its upper edge). Missing values form the level ``missing``. Levels seen in
fewer than ``MIN_LEVEL_PATIENTS`` patients are pooled into ``other`` (so no output names a
level that could single out a patient), whenever levels are counted: at loading and again on
the patients a table is made of (``pool_levels``).

    >>> probs = Problems()                                                  # doctest: +SKIP
    >>> specs = parse_subgroups(Path("d.yaml"), ["sex", {"column": "age", "bands": [0, 80, 200]}], probs)
    >>> levels = subgroup_levels(specs, register, Path("d.yaml"), probs)    # doctest: +SKIP
    >>> levels.columns.tolist()                                             # doctest: +SKIP
    ['sex', 'age']

Problems are one line each, naming the file and the key (``subgroups[1].bands``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

MIN_LEVEL_PATIENTS = 5     # the same rule as an exported bundle's category levels (export.schema)
MAX_PLAIN_LEVELS = 20      # a numeric column with more distinct values needs bands
MISSING = "missing"
OTHER = "other"
EXAMPLE = "e.g. subgroups: [sex, site, {column: age, bands: [0, 65, 80, 200]}]"


@dataclass(frozen=True)
class SubgroupSpec:
    """One entry of ``subgroups``: a register column, and band edges for a numeric one."""

    column: str
    bands: tuple[float, ...] | None = None

    @property
    def name(self) -> str:
        return self.column


def parse_subgroups(path: Path, raw, probs) -> tuple[SubgroupSpec, ...]:
    """The ``subgroups`` key of the dataset file at ``path`` (None: no subgroups); problems go to ``probs``."""
    if raw is None:
        return ()
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list):
        probs.add(f"{path}, key 'subgroups': expected a list of register columns, {EXAMPLE}")
        return ()
    out: list[SubgroupSpec] = []
    for i, item in enumerate(raw):
        key = f"subgroups[{i}]"
        if isinstance(item, (str, int)) and not isinstance(item, bool):
            out.append(SubgroupSpec(str(item)))
            continue
        if not isinstance(item, dict):
            probs.add(f"{path}, key '{key}': expected a column name or {{column: NAME, bands: [...]}}, {EXAMPLE}")
            continue
        unknown = sorted(set(map(str, item)) - {"column", "bands"})
        if unknown:
            probs.add(f"{path}, key '{key}.{unknown[0]}': unknown key; the keys are column and bands")
            continue
        column = item.get("column")
        if not isinstance(column, (str, int)) or isinstance(column, bool):
            probs.add(f"{path}, key '{key}.column': expected a register column name, {EXAMPLE}")
            continue
        bands = item.get("bands")
        edges = None
        if bands is not None:
            edges = _edges(bands)
            if edges is None:
                probs.add(f"{path}, key '{key}.bands': expected at least two increasing numbers (band edges), "
                          "e.g. bands: [0, 65, 80, 200]")
                continue
        out.append(SubgroupSpec(str(column), edges))
    names = [s.name for s in out]
    for name in sorted({n for n in names if names.count(n) > 1}):
        probs.add(f"{path}, key 'subgroups': column {name!r} is listed twice; list it once")
    return tuple(out)


def _edges(bands) -> tuple[float, ...] | None:
    if not isinstance(bands, list) or len(bands) < 2:
        return None
    if not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bands):
        return None
    edges = tuple(float(b) for b in bands)
    return edges if all(a < b for a, b in zip(edges, edges[1:])) else None


def band_labels(edges: tuple[float, ...]) -> list[str]:
    """``[65, 80)`` for each band; the last one closed: ``[80, 200]``."""
    txt = [f"{e:g}" for e in edges]
    return [f"[{a}, {b}{']' if i == len(edges) - 2 else ')'}" for i, (a, b) in enumerate(zip(txt, txt[1:]))]


def _banded(values: pd.Series, edges: tuple[float, ...]) -> pd.Series:
    v = values.to_numpy(dtype=float)
    labels = band_labels(edges)
    idx = np.searchsorted(np.asarray(edges), v, side="right") - 1
    idx = np.where(v == edges[-1], len(labels) - 1, idx)           # the last band includes its upper edge
    inside = np.isfinite(v) & (idx >= 0) & (idx < len(labels))
    out = np.array([labels[k] if ok else None for k, ok in zip(np.clip(idx, 0, len(labels) - 1), inside)],
                   dtype=object)
    out[~np.isfinite(v)] = MISSING
    return pd.Series(out, index=values.index)


def _plain_value(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def subgroup_levels(specs: tuple[SubgroupSpec, ...], register: pd.DataFrame | None, path: Path,
                    probs) -> pd.DataFrame | None:
    """Per patient (rows of ``register``), each subgroup's level as text (rare levels pooled into ``other``);
    None when there are no subgroups or a problem was added to ``probs``."""
    if not specs:
        return None
    if register is None:
        probs.add(f"{path}, key 'subgroups': subgroups are read from the register, and this dataset has none; "
                  "remove the key or add a register")
        return None
    out = {}
    for i, s in enumerate(specs):
        key = f"subgroups[{i}]"
        if s.column not in register.columns:
            probs.add(f"{path}, key '{key}': column {s.column!r} is not a feature column of the register (dropped, "
                      "the id or label column, or misspelt); subgroups are read from the feature columns")
            continue
        col = register[s.column]
        categorical = isinstance(col.dtype, pd.CategoricalDtype)
        if s.bands is not None:
            if categorical:
                probs.add(f"{path}, key '{key}.bands': column {s.column!r} is categorical; bands are for numeric "
                          "columns (remove bands to use its levels)")
                continue
            levels = _banded(col, s.bands)
            outside = int(levels.isna().sum())
            if outside:
                probs.warn(f"{path}, key '{key}.bands': {outside} patients lie outside the bands "
                           f"{band_labels(s.bands)[0]}...{band_labels(s.bands)[-1]}; they count as {OTHER!r}")
                levels = levels.fillna(OTHER)
        elif categorical:
            levels = col.astype(object).map(lambda v: MISSING if v is None or v != v else str(v))
        else:
            distinct = col.dropna().unique()
            if len(distinct) > MAX_PLAIN_LEVELS:
                probs.add(f"{path}, key '{key}': column {s.column!r} is numeric with {len(distinct)} distinct values; "
                          f"give bands, e.g. {{column: {s.column}, bands: [0, 65, 80, 200]}}")
                continue
            levels = col.map(lambda v: MISSING if v != v else _plain_value(v))
        out[s.name] = pool_levels(levels.astype(object))
    if len(out) < len(specs):
        return None
    return pd.DataFrame(out, index=pd.RangeIndex(len(register)))


def pool_levels(levels: pd.Series, min_patients: int = MIN_LEVEL_PATIENTS) -> pd.Series:
    """``levels`` with every level held by fewer than ``min_patients`` patients replaced by ``other``."""
    counts = levels.value_counts()
    rare = set(counts.index[counts < min_patients])
    return levels.map(lambda v: OTHER if v in rare else v)
