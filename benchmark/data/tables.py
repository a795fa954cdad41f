"""The user's tables (register, image manifest, oracle) read as text, and helpers for their cells.

    >>> df, first_row = read_table(Path("register.csv"), Problems(), what="register")   # doctest: +SKIP

A CSV is read with every cell as text (separator ',' ';' or tab, taken from the header;
a byte-order mark's encoding (UTF-8, UTF-16 as Excel's "Unicode text" writes it, UTF-32),
else UTF-8, else cp1252, else latin-1; what ``register_format`` / ``manifest_format``
declares wins) so that each column's type is decided later, with row numbers in the
messages; Parquet keeps its types. Workbooks (.xlsx/.xls) and other binary files are
refused by name. ``first_row`` is the spreadsheet row of
data row 0 (2 for a CSV, whose header is row 1; 1 for Parquet).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.dataset_spec import Problems, TableFormat
from benchmark.errors import where


_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xef\xbb\xbf", "utf-8-sig"),
         (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
_BINARY = ((b"PK\x03\x04", "an Excel workbook (.xlsx) or another zip file"),
           (b"\xd0\xcf\x11\xe0", "an old Excel workbook (.xls)"), (b"PAR1", "a Parquet file"))


SNIFF_BYTES = 4096   # a NUL byte in the first this many bytes: UTF-16 text or a binary file, not a CSV
SEPARATORS = (",", ";", "\t")


def sniff_separator(header: str, declared: str | None = None) -> str:
    """The declared separator, else the one of ``SEPARATORS`` the header line holds most often."""
    return declared or max(SEPARATORS, key=header.count)


def read_table(path: Path, probs: Problems, *, what: str, fmt: TableFormat | None = None,
               fmt_key: str = "register_format", yaml_name: str = "the dataset file") -> tuple[pd.DataFrame | None, int]:
    """A CSV (all cells as text) or Parquet file; returns (table, spreadsheet row of data row 0).

    ``fmt`` is what the user declared (``register_format`` / ``manifest_format``, named
    ``fmt_key`` in messages); what it leaves None is detected. The table's ``attrs`` hold
    the separator (``sep``), the decimal mark (``decimal``) and whether it was declared
    (``decimal_declared``).
    """
    fmt = fmt or TableFormat()
    unit = "image" if what == "manifest" else "patient"
    if path.is_dir():
        probs.add(f"{path}: is a folder, not a file; give the path to the {what} file itself")
        return None, 2
    try:
        raw = path.read_bytes()
    except OSError as exc:
        probs.add(f"{path}: cannot be read ({exc.strerror or 'an operating-system error'}); check that the {what} file is readable")
        return None, 2
    if path.suffix.lower() in (".parquet", ".pq"):
        if not raw:
            probs.add(f"{path}: the {what} file is empty (0 bytes); export the {what} again")
            return None, 1
        if fmt != TableFormat():
            probs.warn(f"{path}: {fmt_key} is ignored for a Parquet file (Parquet stores its own types)")
        try:
            df = pd.read_parquet(io.BytesIO(raw))
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
            probs.add(f"{path}: cannot be read as Parquet (its data is malformed); export the {what} again")
            return None, 1
        if df.shape[0] == 0:
            probs.add(f"{path}: the {what} has no rows")
            return None, 1
        df = df.reset_index(drop=True)
        df.attrs.update(sep=None, decimal=".", decimal_declared=False)
        return df, 1
    empty = f"{path}: the {what} file is empty; it needs a header line and one row per {unit}"
    if not raw.strip():
        probs.add(empty)
        return None, 2
    text = _decode(raw, path, what, fmt, fmt_key, yaml_name, probs)
    if text is None:
        return None, 2
    text = text.lstrip("\ufeff")
    if not text.strip():
        probs.add(empty)
        return None, 2
    header = next((line for line in text.splitlines() if line.strip()), "")
    sep = sniff_separator(header, fmt.separator)
    names = [c.strip() for c in next(csv.reader([header], delimiter=sep), [])]
    dups = sorted({c for c in names if names.count(c) > 1})
    if dups:
        probs.add(f"{where(path, 1)}: column {dups[0]!r} appears more than once; give every column its own name")
        return None, 2
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=True, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        probs.add(empty)
        return None, 2
    except (pd.errors.ParserError, ValueError) as exc:
        hint = "" if fmt.separator else f", or declare the separator ({fmt_key}: {{separator: \";\"}} in {yaml_name})"
        probs.add(f"{path}: cannot be read as CSV ({str(exc).strip().splitlines()[-1][:120]}); check separators and "
                  f"quoting{hint}")
        return None, 2
    df.columns = [str(c).strip() for c in df.columns]
    if df.shape[0] == 0:
        probs.add(f"{path}: the {what} file has a header but no data rows; add one row per {unit}")
        return None, 2
    decimal = fmt.decimal or ("," if sep == ";" else ".")
    df.attrs.update(sep=sep, decimal=decimal, decimal_declared=fmt.decimal is not None, fmt_key=fmt_key)
    return df, 2


def _decode(raw: bytes, path: Path, what: str, fmt: TableFormat, fmt_key: str, yaml_name: str,
            probs: Problems) -> str | None:
    """The file as text: the declared encoding, else a BOM's, else UTF-8, cp1252 or latin-1; None if refused."""
    if fmt.encoding is not None:
        enc = "utf-8-sig" if fmt.encoding == "utf-8" else fmt.encoding
        try:
            return raw.decode(enc)
        except UnicodeDecodeError as exc:
            probs.add(f"{path}: cannot be read as {fmt.encoding} text (byte {exc.start + 1} does not fit); "
                      f"correct {fmt_key}.encoding in {yaml_name}, or remove it to let the encoding be detected")
            return None
    for bom, enc in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(enc)
            except UnicodeDecodeError:
                probs.add(f"{path}: starts with a {enc.upper()} byte-order mark but is not valid {enc.upper()} text; "
                          f"export the {what} again as CSV UTF-8")
                return None
    for magic, kind in _BINARY:
        if raw.startswith(magic):
            probs.add(f"{path}: this is {kind}, not a CSV text file; save the {what} as 'CSV UTF-8' (or Parquet, "
                      "named .parquet)")
            return None
    if b"\x00" in raw[:SNIFF_BYTES]:
        head = raw[:SNIFF_BYTES]
        odd_zero, even_zero = head[1::2].count(0), head[0::2].count(0)
        half = len(head) // 2
        if odd_zero > 0.4 * half and even_zero < 0.05 * half:
            return _decode_as(raw, "utf-16-le", path, what, probs)
        if even_zero > 0.4 * half and odd_zero < 0.05 * half:
            return _decode_as(raw, "utf-16-be", path, what, probs)
        probs.add(f"{path}: contains NUL bytes, so it is not a CSV text file (a spreadsheet or other binary file?); "
                  f"save the {what} as 'CSV UTF-8', or set {fmt_key}.encoding in {yaml_name}")
        return None
    for enc in ("utf-8", "cp1252", "latin-1"):  # Excel exports are often cp1252; latin-1 never fails
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")  # pragma: no cover - latin-1 decodes every byte


def _decode_as(raw: bytes, enc: str, path: Path, what: str, probs: Problems) -> str | None:
    try:
        return raw.decode(enc)
    except UnicodeDecodeError:
        probs.add(f"{path}: looks like UTF-16 text without a byte-order mark but is not valid UTF-16; "
                  f"export the {what} again as CSV UTF-8")
        return None


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
