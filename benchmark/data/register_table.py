"""The register table: patient ids, feature columns, and the labels (of the register or the images).

    >>> reg = read_register(spec, probs)          # doctest: +SKIP
    >>> reg.ids[:2], reg.features.dtypes, reg.y   # doctest: +SKIP

``read_register`` checks the id column (no empty or repeated id), turns every other column
not dropped into a float feature (or a category when listed under ``categorical``, or among
the caller's ``extra_categorical`` where present) and the label column into 1/0 with
``parse_labels``, which image-only cohorts use as well. A spec without a label (a dataset
to predict on) gives -1 for every patient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.dataset_spec import DatasetSpec, Problems, norm_label
from benchmark.data.identifiers import DATE, MOSTLY, refuse_identifier, share_matching
from benchmark.data.tables import columns_text, id_text, read_table
from benchmark.errors import where

_SHOW_VALUES_UPTO = 10    # label values are quoted only when a column has this few distinct values


@dataclass
class Register:
    """The register as read: ids and labels per row, features without the id, label and dropped columns."""

    ids: list[str]
    y: np.ndarray | None    # None when the label column has problems; all -1 when the spec has no label
    features: pd.DataFrame
    first_row: int          # spreadsheet row of data row 0
    categorical: list[str]


def read_register(spec: DatasetSpec, probs: Problems, *, extra_categorical: tuple[str, ...] = ()) -> Register | None:
    """Read and check ``spec.register``; None when it cannot be read or lacks the id or label column.

    ``extra_categorical``: more categorical columns besides the file's ``categorical`` (those
    not in the register are ignored, unlike the file's own list).
    """
    path = spec.register
    df, first_row = read_table(path, probs, what="register", fmt=spec.register_format, fmt_key="register_format",
                               yaml_name=spec.path.name)
    if df is None:
        return None
    cols = list(df.columns)
    fatal = False
    label_col = spec.label.column if spec.label is not None else None
    for key, col in (("id_column", spec.id_column), ("label.column", label_col)):
        if col is not None and col not in cols:
            probs.add(f"{path}: column {col!r} ({key} in {spec.path.name}) not found; the columns are {columns_text(cols)}")
            fatal = True
    for key in ("drop_columns", "categorical"):
        for col in getattr(spec, key):
            if col not in cols:
                probs.add(f"{spec.path}, key {key!r}: column {col!r} is not in {path.name}; fix the name or remove it")
    if fatal:
        return None
    ids = id_text(df[spec.id_column])
    _check_ids(ids, path, spec.id_column, first_row, probs)
    drop = set(spec.drop_columns) | {spec.id_column} | ({label_col} if label_col is not None else set())
    feats = [c for c in cols if c not in drop]
    categorical = [c for c in feats if c in set(spec.categorical) | set(extra_categorical)]
    out = {}
    for col in feats:
        if refuse_identifier(df[col], col, path, spec.path.name, probs):
            out[col] = pd.Series(np.nan, index=pd.RangeIndex(len(df)), dtype="float64")
            continue
        out[col] = _feature(df[col], col, col in categorical, path, first_row, df.attrs, spec.path.name, probs)
    features = pd.DataFrame(out, index=pd.RangeIndex(len(df)))
    if label_col is None:
        y = np.full(len(df), -1, dtype=np.int8)
    else:
        y = parse_labels(df[label_col].tolist(), spec, lambda i: where(path, first_row + i, label_col), probs)
    return Register(ids=ids, y=y, features=features, first_row=first_row, categorical=categorical)


def _check_ids(ids: list[str], path: Path, col: str, first_row: int, probs: Problems) -> None:
    seen: dict[str, int] = {}
    dup_pairs = []
    for i, v in enumerate(ids):
        if v == "":
            probs.add(f"{where(path, first_row + i, col)}: the patient id is empty; fill it in or remove the row")
            continue
        if v in seen:
            dup_pairs.append((seen[v], i))
        else:
            seen[v] = i
    if dup_pairs:
        a, b = dup_pairs[0]
        more = f" ({len(dup_pairs)} duplicated rows in all)" if len(dup_pairs) > 1 else ""
        probs.add(f"{path}, rows {first_row + a} and {first_row + b}, column {col!r}: the same patient id appears twice{more}; "
                  "each patient needs exactly one row")


_DECIMAL_COMMA = re.compile(r"^\s*[+-]?\d+,\d+\s*$")


def _feature(s: pd.Series, col: str, categorical: bool, path: Path, first_row: int, attrs: dict,
             yaml_name: str, probs: Problems) -> pd.Series:
    s = s.reset_index(drop=True)
    if categorical:
        if s.dtype == object or pd.api.types.is_string_dtype(s):
            s = s.map(lambda v: v.strip() if isinstance(v, str) else v).replace("", np.nan)
        return s.astype("category")
    if pd.api.types.is_bool_dtype(s):
        return s.astype("float64")
    if pd.api.types.is_numeric_dtype(s):
        return s.astype("float64")
    if pd.api.types.is_datetime64_any_dtype(s):
        probs.add(f"{where(path, column=col)}: dates are not features; convert them to a number (e.g. age or days) "
                  f"or list the column under drop_columns in {yaml_name}")
        return pd.Series(np.nan, index=s.index, dtype="float64")
    text = s.map(lambda v: v.strip() if isinstance(v, str) else v)
    text = text.replace("", np.nan)
    if attrs.get("decimal", ".") == ",":  # Excel in comma-decimal locales writes 74,5 (with ';' separators)
        text = text.map(lambda v: v.replace(",", ".") if isinstance(v, str) and _DECIMAL_COMMA.match(v) else v)
    num = pd.to_numeric(text, errors="coerce")
    bad = np.flatnonzero(text.notna().to_numpy() & num.isna().to_numpy())
    if len(bad) and share_matching(text.iloc[bad], _DECIMAL_COMMA) >= 0.9:
        key = attrs.get("fmt_key", "register_format")
        sep_name = {",": "comma", ";": "semicolon", "\t": "tab"}.get(attrs.get("sep"), repr(attrs.get("sep")))
        said = ("although decimal \".\" is declared" if attrs.get("decimal_declared")
                else f"in a {sep_name}-separated file")
        probs.add(f"{where(path, column=col)}: looks like numbers with decimal commas ({len(bad)} cells), {said}; "
                  f"declare the decimal mark with {key}: {{decimal: \",\"}} in {yaml_name}")
    elif len(bad) and share_matching(text.iloc[bad], DATE) >= MOSTLY:
        probs.add(f"{where(path, first_row + int(bad[0]), col)}: looks like dates; dates are not features: convert them to "
                  f"a number (e.g. age or days) or list the column under drop_columns in {yaml_name}")
    elif len(bad):
        more = f" ({len(bad)} cells)" if len(bad) > 1 else ""
        probs.add(f"{where(path, first_row + int(bad[0]), col)}: text in a numeric column{more}; list the column under "
                  f"categorical in {yaml_name} if it is a category, or fix the cells (leave missing values empty)")
    num = num.astype("float64")
    if np.isinf(num.to_numpy()).any():
        i = int(np.flatnonzero(np.isinf(num.to_numpy()))[0])
        probs.add(f"{where(path, first_row + i, col)}: infinite value; replace it with a number or leave it empty")
    return num


def parse_labels(values: list, spec: DatasetSpec, locate, probs: Problems) -> np.ndarray | None:
    """Label cells -> int8 1/0; ``locate(i)`` names the file/row/column of cell i."""
    lab = spec.label
    norm = ["" if (v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA) else norm_label(v)
            for v in values]
    n_before = len(probs.items)
    empty = [i for i, v in enumerate(norm) if v == ""]
    if empty:
        more = f" ({len(empty)} rows)" if len(empty) > 1 else ""
        probs.add(f"{locate(empty[0])}: the label is empty{more}; fill it in or remove the row")
    distinct = sorted({v for v in norm if v != ""})
    quote = len(distinct) <= _SHOW_VALUES_UPTO
    known = {lab.positive} | ({lab.negative} if lab.negative is not None else set())
    if lab.negative is not None:
        unknown = [i for i, v in enumerate(norm) if v != "" and v not in known]
        if unknown:
            what = f"label {norm[unknown[0]]!r}" if quote else "a label value"
            more = f" ({len(unknown)} rows)" if len(unknown) > 1 else ""
            probs.add(f"{locate(unknown[0])}: {what} is neither positive {lab.positive!r} nor negative {lab.negative!r}{more}; "
                      f"fix or remove these rows, or correct label in {spec.path.name}")
    else:
        others = [v for v in distinct if v != lab.positive]
        if len(others) > 1:
            shown = f" ({', '.join(repr(v) for v in distinct)})" if quote else ""
            i = next(i for i, v in enumerate(norm) if v == others[1])
            probs.add(f"{locate(i)}: the label column has {len(distinct)} different values{shown}, more than two classes; "
                      f"set label.negative in {spec.path.name} and fix or remove the other rows")
    if len(probs.items) > n_before:
        return None
    y = np.array([1 if v == lab.positive else 0 for v in norm], dtype=np.int8)
    return y


def check_classes(y: np.ndarray, spec: DatasetSpec, where_text: str, probs: Problems, *,
                  required: bool = True) -> bool:
    """False (with a problem added) when ``y`` holds one class only.

    ``required=False`` (external validation, ``labels="optional"``): one class is allowed,
    with a warning that the metrics needing both classes will be missing.
    """
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        have = "positive" if n_pos else "negative"
        if not required:
            probs.warn(f"{where_text}: all {len(y)} patients have the {have} label (one class only); metrics that "
                       f"need both classes (AUC) will be missing: check label.positive ({spec.label.positive!r}) "
                       f"in {spec.path.name} if that is not what you expect")
            return True
        probs.add(f"{where_text}: all {len(y)} patients have the {have} label (one class only); the benchmark needs "
                  f"both classes: check label.positive ({spec.label.positive!r}) in {spec.path.name}")
        return False
    return True
