"""The user's tables (register, image manifest, oracle) read as text, and helpers for their cells.

    >>> df, first_row = read_table(Path("register.csv"), Problems(), what="register")   # doctest: +SKIP

A CSV is read with every cell as text (separator ',' ';' or tab, taken from the header;
UTF-8, else cp1252, else latin-1) so that each column's type is decided later, with row
numbers in the messages; Parquet keeps its types. ``first_row`` is the spreadsheet row of
data row 0 (2 for a CSV, whose header is row 1; 1 for Parquet).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.dataset_spec import Problems
from benchmark.errors import where


def read_table(path: Path, probs: Problems, *, what: str) -> tuple[pd.DataFrame | None, int]:
    """A CSV (all cells as text) or Parquet file; returns (table, spreadsheet row of data row 0)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
            probs.add(f"{path}: cannot be read as Parquet ({type(exc).__name__}); export the {what} again")
            return None, 1
        if df.shape[0] == 0:
            probs.add(f"{path}: the {what} has no rows")
            return None, 1
        return df.reset_index(drop=True), 1
    raw = path.read_bytes()
    if not raw.strip():
        probs.add(f"{path}: the {what} file is empty; it needs a header line and one row per {'patient' if what == 'register' else 'image'}")
        return None, 2
    for enc in ("utf-8-sig", "cp1252", "latin-1"):  # Excel exports are often cp1252; latin-1 never fails
        try:
            text = raw.decode(enc)
            break
        except UnicodeDecodeError:
            continue
    header = text.splitlines()[0] if text.strip() else ""
    sep = max([",", ";", "\t"], key=header.count)
    names = [c.strip() for c in next(csv.reader([header], delimiter=sep), [])]
    dups = sorted({c for c in names if names.count(c) > 1})
    if dups:
        probs.add(f"{where(path, 1)}: column {dups[0]!r} appears more than once; give every column its own name")
        return None, 2
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=True, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        probs.add(f"{path}: the {what} file is empty; it needs a header line and one row per patient")
        return None, 2
    except (pd.errors.ParserError, ValueError) as exc:
        probs.add(f"{path}: cannot be read as CSV ({str(exc).strip().splitlines()[-1][:120]}); check separators and quoting")
        return None, 2
    df.columns = [str(c).strip() for c in df.columns]
    if df.shape[0] == 0:
        probs.add(f"{path}: the {what} file has a header but no data rows")
        return None, 2
    df.attrs["sep"] = sep
    return df, 2


def columns_text(cols: list[str], k: int = 12) -> str:
    """The first ``k`` column names, quoted, for a message ('... and N more')."""
    shown = ", ".join(repr(c) for c in cols[:k])
    return shown + (f" and {len(cols) - k} more" if len(cols) > k else "")


def id_text(s: pd.Series) -> list[str]:
    """Ids as stripped text; integral floats (Parquet) lose their '.0'; missing -> ''."""
    out = []
    for v in s.tolist():
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            out.append("")
        elif isinstance(v, float) and v.is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v).strip())
    return out
