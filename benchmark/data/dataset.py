"""Read a dataset file (YAML) and the files it names into a validated ``Cohort``.

    >>> from benchmark.data.dataset import load_dataset
    >>> cohort = load_dataset("data/my-cohort.yaml")          # doctest: +SKIP
    >>> cohort.n_patients, int(cohort.y.sum()), cohort.keys[:2]  # doctest: +SKIP
    (4172, 172, array(['P00001', 'P00002'], dtype='<U6'))

The dataset file (paths are relative to it)::

    name: my-aff-cohort
    register: register.csv            # CSV (',' ';' or tab) or Parquet, one row per patient
    id_column: patient_id             # default patient_id
    label: {column: group, positive: AFF, negative: NFF}   # negative optional; 1/0 works too
    images:
      root: images/                   # DICOM (.dcm or no suffix), PNG, JPEG, TIFF, BMP
      manifest: images.csv            # columns path, patient_id (path relative to root) ...
      # path_column: file             # ... or other names for those two columns
      # pattern: "(?P<patient_id>[^/]+)/.*\\.dcm"   # instead of a manifest: a regex matched
      #                                 against each path relative to root (full match)
    drop_columns: [personnummer]      # identifiers and anything else that is not a feature
    categorical: [site]               # non-numeric feature columns (text anywhere else is an error)
    missing_images: drop              # patients with no image: drop (default, with a warning) | fail
    orphan_images: drop               # images whose patient has no register row: drop | fail
    oracle: oracle.csv                # optional: id column + oracle_register/_image/_both
    cache_dir: ~/.cache/aff-benchmark # optional; default $AFF_BENCHMARK_CACHE or ~/.cache/aff-benchmark

Either ``register`` or ``images`` may be left out. Without a register the label comes from
the manifest (a ``label.column`` there, one value per patient) or from a named group
``label`` in the pattern.

Everything is checked before anything is returned; problems are gathered (so that
``python -m benchmark validate`` can list them all) and ``load_dataset`` raises the first as
a one-line ``UserError`` naming file, row and column. Messages never quote an identifier,
a file name or a free-text cell: they give row numbers (row 2 is the first data row, as a
spreadsheet shows it). The user's files are only read.

Outputs refer to patients by ``Cohort.keys`` (``P00001``... in register row order), never by
the id column.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmark.data.cohort import Cohort
from benchmark.errors import UserError, where

TOP_KEYS = {"name", "register", "id_column", "label", "images", "drop_columns", "categorical",
            "missing_images", "orphan_images", "oracle", "cache_dir", "description", "synthetic"}
LABEL_KEYS = {"column", "positive", "negative"}
IMAGE_KEYS = {"root", "manifest", "pattern", "path_column", "patient_column"}
ORACLE_COLUMNS = ("oracle_register", "oracle_image", "oracle_both")
CHECKS_VERSION = "1"
_MAX_LISTED = 20          # image problems listed one by one before they are summed up
_SHOW_VALUES_UPTO = 10    # label values are quoted only when a column has this few distinct values


class DatasetWarning(UserWarning):
    """Something was dropped or ignored while loading; the data are still usable."""


@dataclass(frozen=True)
class LabelSpec:
    column: str
    positive: str
    negative: str | None = None


@dataclass(frozen=True)
class ImageSpec:
    root: Path
    manifest: Path | None = None
    pattern: str | None = None
    path_column: str = "path"
    patient_column: str = "patient_id"


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed, checked dataset file; paths are absolute."""

    path: Path
    name: str
    label: LabelSpec
    register: Path | None = None
    id_column: str = "patient_id"
    images: ImageSpec | None = None
    drop_columns: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    missing_images: str = "drop"
    orphan_images: str = "drop"
    oracle: Path | None = None
    cache_dir: Path | None = None
    description: str = ""
    synthetic: bool = False


@dataclass
class Inspection:
    """Everything ``validate`` reports: the cohort (None when unusable) and what was found."""

    spec: DatasetSpec | None
    cohort: Cohort | None
    problems: list[str]
    warnings: list[str]
    image_where: list[str] = field(default_factory=list)   # per cohort image row: manifest row etc.
    label_names: tuple[str, str] = ("positive", "negative")
    dropped_patients: int = 0
    dropped_images: int = 0
    unmatched_files: int = 0


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.warnings: list[str] = []

    def add(self, msg: str) -> None:
        self.items.append(msg)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)


# ============================================================================ public API

def load_dataset(path: str | Path, *, missing: str | None = None) -> Cohort:
    """Load and validate the dataset file at ``path``; ``UserError`` on the first problem.

    ``missing`` ('drop' or 'fail') overrides the file's ``missing_images`` setting. Dropped
    patients or images are reported with a ``DatasetWarning`` giving their count.
    """
    ins = inspect_dataset(path, missing=missing)
    if ins.problems:
        first = ins.problems[0]
        more = len(ins.problems) - 1
        if more:
            first += f" ({more} more problem{'s' if more > 1 else ''}: run `python -m benchmark validate {path}` to list them)"
        raise UserError(first)
    for msg in ins.warnings:
        warnings.warn(msg, DatasetWarning, stacklevel=2)
    assert ins.cohort is not None
    return ins.cohort


def load_dataset_file(path: str | Path) -> DatasetSpec:
    """Parse and check the YAML file only (keys, types, that the named paths exist)."""
    probs = _Problems()
    spec = _parse_spec(Path(path), probs)
    if probs.items:
        raise UserError(probs.items[0])
    assert spec is not None
    return spec


def inspect_dataset(path: str | Path, *, missing: str | None = None) -> Inspection:
    """Check everything and gather all problems instead of stopping at the first."""
    probs = _Problems()
    spec = _parse_spec(Path(path), probs)
    if spec is None:
        return Inspection(None, None, probs.items, probs.warnings)
    if missing is not None:
        if missing not in ("drop", "fail"):
            raise ValueError(f"missing must be 'drop' or 'fail', got {missing!r}")
        spec = _replace(spec, missing_images=missing)
    reg = _read_register(spec, probs) if spec.register is not None else None
    imgs = _read_images(spec, probs) if spec.images is not None else None
    if (spec.register is not None and reg is None) or (spec.images is not None and imgs is None) or probs.items:
        return Inspection(spec, None, probs.items, probs.warnings,
                          unmatched_files=imgs.unmatched if imgs is not None else 0)
    return _assemble(spec, reg, imgs, probs)


# ============================================================================ dataset file

def _replace(spec: DatasetSpec, **changes) -> DatasetSpec:
    from dataclasses import replace

    return replace(spec, **changes)


def _parse_spec(path: Path, probs: _Problems) -> DatasetSpec | None:
    if not path.is_file():
        probs.add(f"{path}: dataset file not found; give the path to a dataset YAML file (see README, 'Bring your own data')")
        return None
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        probs.add(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', None) or 'syntax error'}); fix the syntax")
        return None
    except UnicodeDecodeError:
        probs.add(f"{path}: not a UTF-8 text file; save the dataset file as UTF-8")
        return None
    if not isinstance(doc, dict):
        probs.add(f"{path}: expected a mapping of keys (name, register, label, images, ...), found {type(doc).__name__}")
        return None
    base = path.parent.resolve()
    n_before = len(probs.items)

    unknown = sorted(set(map(str, doc)) - TOP_KEYS)
    for key in unknown:
        probs.add(f"{path}, key {key!r}: unknown key; the keys are {', '.join(sorted(TOP_KEYS))}")

    def text(key: str, value, default=None) -> str | None:
        if value is None:
            return default
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        hint = "; YAML reads yes/no/true/false as booleans: quote the value, e.g. 'yes'" if isinstance(value, bool) else ""
        probs.add(f"{path}, key {key!r}: expected a text value, found {type(value).__name__}{hint}")
        return default

    def str_list(key: str) -> tuple[str, ...]:
        value = doc.get(key) or []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            probs.add(f"{path}, key {key!r}: expected a list of column names, e.g. [a, b]")
            return ()
        return tuple(str(v) for v in value)

    def existing(key: str, value, *, directory: bool = False) -> Path | None:
        raw = text(key, value)
        if raw is None:
            return None
        p = (base / Path(raw).expanduser()).resolve()
        ok = p.is_dir() if directory else p.is_file()
        if not ok:
            kind = "folder" if directory else "file"
            probs.add(f"{path}, key {key!r}: {kind} {raw!r} not found (relative paths are relative to the dataset file)")
        return p

    def choice(key: str) -> str:
        value = doc.get(key, "drop")
        if value not in ("drop", "fail"):
            probs.add(f"{path}, key {key!r}: expected 'drop' or 'fail', found {value!r}")
            return "drop"
        return value

    name = text("name", doc.get("name"), default=path.stem)
    register = existing("register", doc.get("register"))
    id_column = text("id_column", doc.get("id_column"), default="patient_id")

    label = None
    raw_label = doc.get("label")
    if not isinstance(raw_label, dict):
        probs.add(f"{path}, key 'label': required, e.g. label: {{column: group, positive: AFF}}")
    else:
        for key in sorted(set(map(str, raw_label)) - LABEL_KEYS):
            probs.add(f"{path}, key 'label.{key}': unknown key; the keys are column, positive, negative")
        column = text("label.column", raw_label.get("column"))
        positive = text("label.positive", raw_label.get("positive"))
        negative = text("label.negative", raw_label.get("negative"))
        if column is None or positive is None:
            probs.add(f"{path}, key 'label': needs 'column' and 'positive', e.g. label: {{column: group, positive: AFF}}")
        else:
            label = LabelSpec(column, _norm_label(positive), None if negative is None else _norm_label(negative))
            if label.negative == label.positive:
                probs.add(f"{path}, key 'label': positive and negative are the same value; give two different values")

    images = None
    raw_images = doc.get("images")
    if raw_images is not None:
        if not isinstance(raw_images, dict):
            probs.add(f"{path}, key 'images': expected a mapping with root and manifest (or pattern)")
        else:
            for key in sorted(set(map(str, raw_images)) - IMAGE_KEYS):
                probs.add(f"{path}, key 'images.{key}': unknown key; the keys are {', '.join(sorted(IMAGE_KEYS))}")
            root = existing("images.root", raw_images.get("root", "."), directory=True)
            manifest = existing("images.manifest", raw_images.get("manifest"))
            pattern = text("images.pattern", raw_images.get("pattern"))
            if (raw_images.get("manifest") is None) == (pattern is None):
                probs.add(f"{path}, key 'images': give exactly one of 'manifest' (a CSV of path, patient_id) and 'pattern' (a regex)")
            if pattern is not None:
                try:
                    rx = re.compile(pattern)
                    if "patient_id" not in rx.groupindex:
                        probs.add(f"{path}, key 'images.pattern': the regex needs a named group (?P<patient_id>...)")
                except re.error as exc:
                    probs.add(f"{path}, key 'images.pattern': not a valid regular expression ({exc})")
            images = ImageSpec(
                root=root or base, manifest=manifest, pattern=pattern,
                path_column=text("images.path_column", raw_images.get("path_column"), default="path"),
                patient_column=text("images.patient_column", raw_images.get("patient_column"), default="patient_id"),
            )

    if doc.get("register") is None and raw_images is None:
        probs.add(f"{path}: needs 'register' (a CSV/Parquet file), 'images', or both")

    oracle = existing("oracle", doc.get("oracle"))
    cache_raw = text("cache_dir", doc.get("cache_dir"))
    cache_dir = (base / Path(cache_raw).expanduser()).resolve() if cache_raw else None
    synthetic = doc.get("synthetic", False)
    if not isinstance(synthetic, bool):
        probs.add(f"{path}, key 'synthetic': expected true or false")
        synthetic = False
    spec_kwargs = dict(
        path=path.resolve(), name=name, label=label, register=register, id_column=id_column, images=images,
        drop_columns=str_list("drop_columns"), categorical=str_list("categorical"),
        missing_images=choice("missing_images"), orphan_images=choice("orphan_images"),
        oracle=oracle, cache_dir=cache_dir, description=text("description", doc.get("description"), default="") or "",
        synthetic=synthetic,
    )
    if len(probs.items) > n_before:
        return None
    return DatasetSpec(**spec_kwargs)


# ============================================================================ tables

def _read_table(path: Path, probs: _Problems, *, what: str) -> tuple[pd.DataFrame | None, int]:
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


@dataclass
class _Register:
    ids: list[str]
    y: np.ndarray | None    # None when the label column has problems
    features: pd.DataFrame
    first_row: int          # spreadsheet row of data row 0
    categorical: list[str]


def _read_register(spec: DatasetSpec, probs: _Problems) -> _Register | None:
    path = spec.register
    df, first_row = _read_table(path, probs, what="register")
    if df is None:
        return None
    cols = list(df.columns)
    fatal = False
    for key, col in (("id_column", spec.id_column), ("label.column", spec.label.column)):
        if col not in cols:
            probs.add(f"{path}: column {col!r} ({key} in {spec.path.name}) not found; the columns are {_some(cols)}")
            fatal = True
    for key in ("drop_columns", "categorical"):
        for col in getattr(spec, key):
            if col not in cols:
                probs.add(f"{spec.path}, key {key!r}: column {col!r} is not in {path.name}; fix the name or remove it")
    if fatal:
        return None
    ids = _id_text(df[spec.id_column])
    _check_ids(ids, path, spec.id_column, first_row, probs)
    drop = set(spec.drop_columns) | {spec.id_column, spec.label.column}
    feats = [c for c in cols if c not in drop]
    categorical = [c for c in feats if c in set(spec.categorical)]
    sep = df.attrs.get("sep", ",")
    out = {}
    for col in feats:
        out[col] = _feature(df[col], col, col in categorical, path, first_row, sep, spec.path.name, probs)
    features = pd.DataFrame(out, index=pd.RangeIndex(len(df)))
    y = _labels(df[spec.label.column].tolist(), spec, lambda i: where(path, first_row + i, spec.label.column), probs)
    return _Register(ids=ids, y=y, features=features, first_row=first_row, categorical=categorical)


def _some(cols: list[str], k: int = 12) -> str:
    shown = ", ".join(repr(c) for c in cols[:k])
    return shown + (f" and {len(cols) - k} more" if len(cols) > k else "")


def _id_text(s: pd.Series) -> list[str]:
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


def _check_ids(ids: list[str], path: Path, col: str, first_row: int, probs: _Problems) -> None:
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


def _feature(s: pd.Series, col: str, categorical: bool, path: Path, first_row: int, sep: str,
             yaml_name: str, probs: _Problems) -> pd.Series:
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
    if sep == ";":  # Excel in comma-decimal locales writes 74,5 with ';' separators
        text = text.map(lambda v: v.replace(",", ".") if isinstance(v, str) and _DECIMAL_COMMA.match(v) else v)
    num = pd.to_numeric(text, errors="coerce")
    bad = np.flatnonzero(text.notna().to_numpy() & num.isna().to_numpy())
    if len(bad):
        more = f" ({len(bad)} cells)" if len(bad) > 1 else ""
        probs.add(f"{where(path, first_row + int(bad[0]), col)}: text in a numeric column{more}; list the column under "
                  f"categorical in {yaml_name} if it is a category, or fix the cells (leave missing values empty)")
    num = num.astype("float64")
    if np.isinf(num.to_numpy()).any():
        i = int(np.flatnonzero(np.isinf(num.to_numpy()))[0])
        probs.add(f"{where(path, first_row + i, col)}: infinite value; replace it with a number or leave it empty")
    return num


# ============================================================================ labels

def _norm_label(v) -> str:
    t = str(v).strip()
    if re.fullmatch(r"[+-]?\d+\.0*", t):
        t = str(int(float(t)))
    return t


def _labels(values: list, spec: DatasetSpec, locate, probs: _Problems) -> np.ndarray | None:
    """Label cells -> int8 1/0; ``locate(i)`` names the file/row/column of cell i."""
    lab = spec.label
    norm = ["" if (v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA) else _norm_label(v)
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


def _check_classes(y: np.ndarray, spec: DatasetSpec, where_text: str, probs: _Problems) -> bool:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        have = "positive" if n_pos else "negative"
        probs.add(f"{where_text}: all {len(y)} patients have the {have} label (one class only); the benchmark needs "
                  f"both classes: check label.positive ({spec.label.positive!r}) in {spec.path.name}")
        return False
    return True


# ============================================================================ images

@dataclass
class _Images:
    patient_ids: list[str]       # per image
    paths: list[str]             # absolute
    where: list[str]             # per image: location for messages (manifest row or listing position)
    labels: list | None          # per image raw label (image-only cohorts)
    source: Path                 # manifest file or root folder
    rel: list[str]               # paths relative to root, for the fingerprint
    unmatched: int = 0


def _read_images(spec: DatasetSpec, probs: _Problems) -> _Images | None:
    im = spec.images
    imgs = _from_manifest(spec, probs) if im.manifest is not None else _from_pattern(spec, probs)
    if imgs is None:
        return None
    _check_image_files(spec, imgs, probs)
    return imgs


def _from_manifest(spec: DatasetSpec, probs: _Problems) -> _Images | None:
    im = spec.images
    df, first_row = _read_table(im.manifest, probs, what="manifest")
    if df is None:
        return None
    need = [im.path_column, im.patient_column]
    if spec.register is None:
        need.append(spec.label.column)
    missing = [c for c in need if c not in df.columns]
    for c in missing:
        probs.add(f"{im.manifest}: column {c!r} not found; the columns are {_some(list(df.columns))} "
                  "(set images.path_column / images.patient_column, or label.column for an image-only cohort)")
    if missing:
        return None
    pids = _id_text(df[im.patient_column])
    rels = _id_text(df[im.path_column])
    paths, wheres, seen = [], [], {}
    n_before = len(probs.items)
    absent = []
    for i, (pid, rel) in enumerate(zip(pids, rels)):
        loc = where(im.manifest, first_row + i, im.path_column)
        wheres.append(loc)
        if pid == "":
            probs.add(f"{where(im.manifest, first_row + i, im.patient_column)}: the patient id is empty; fill it in or remove the row")
        if rel == "":
            probs.add(f"{loc}: the image path is empty; fill it in or remove the row")
            paths.append("")
            continue
        p = os.path.normpath(os.path.join(im.root, os.path.expanduser(rel)))
        paths.append(p)
        if p in seen:
            probs.add(f"{im.manifest}, rows {first_row + seen[p]} and {first_row + i}, column {im.path_column!r}: "
                      "the same image is listed twice; list each image once")
        else:
            seen[p] = i
        if not os.path.isfile(p):
            absent.append(i)
    if absent:
        more = f" ({len(absent)} images in all)" if len(absent) > 1 else ""
        probs.add(f"{wheres[absent[0]]}: image file not found under {im.root}{more}; fix the path (relative to images.root) "
                  "or remove the row")
    if len(probs.items) > n_before:
        return None
    labels = df[spec.label.column].tolist() if spec.register is None else None
    rel_list = [os.path.relpath(p, im.root) for p in paths]
    return _Images(pids, paths, wheres, labels, im.manifest, rel_list)


def _from_pattern(spec: DatasetSpec, probs: _Problems) -> _Images | None:
    im = spec.images
    rx = re.compile(im.pattern)
    if spec.register is None and "label" not in rx.groupindex:
        probs.add(f"{spec.path}, key 'images.pattern': an image-only cohort without a manifest needs a named group "
                  "(?P<label>...) in the pattern, or a manifest with a label column")
        return None
    files = []
    for dirpath, dirnames, filenames in os.walk(im.root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if not fn.startswith("."):
                files.append(os.path.join(dirpath, fn))
    pids, paths, rels, labels = [], [], [], []
    unmatched = 0
    for p in files:
        rel = Path(os.path.relpath(p, im.root)).as_posix()
        m = rx.fullmatch(rel)
        if m is None or not m.group("patient_id"):
            unmatched += 1
            continue
        pids.append(m.group("patient_id").strip())
        paths.append(os.path.normpath(p))
        rels.append(rel)
        labels.append(m.group("label") if "label" in rx.groupindex else None)
    if not paths:
        probs.add(f"{spec.path}, key 'images.pattern': no file under {im.root} matches the pattern "
                  f"({len(files)} files looked at; the regex must match the whole path relative to root)")
        return None
    if unmatched:
        probs.warn(f"{im.root}: {unmatched} files do not match images.pattern and were ignored")
    n = len(paths)
    wheres = [f"{im.root} (images.pattern), file {k + 1} of {n} in sorted order" for k in range(n)]
    return _Images(pids, paths, wheres, labels if spec.register is None else None, im.root, rels, unmatched)


def _check_image_files(spec: DatasetSpec, imgs: _Images, probs: _Problems) -> None:
    """Header checks of every image (no decoding), skipped when this exact list passed before."""
    from benchmark.data.dicom import ImageError, check_image
    from benchmark.data.image_cache import default_cache_dir, image_digests

    digests = image_digests(imgs.paths)
    key = hashlib.sha256(f"checks\0{CHECKS_VERSION}\0".encode() + digests.tobytes()).hexdigest()[:32]
    marker = (spec.cache_dir or default_cache_dir()) / "checks" / f"{key}.ok"
    if marker.exists():
        return
    bad = 0
    for path, loc in zip(imgs.paths, imgs.where):
        try:
            check_image(path)
        except ImageError as exc:
            bad += 1
            if bad <= _MAX_LISTED:
                probs.add(f"{loc}: {exc}")
    if bad > _MAX_LISTED:
        probs.add(f"{imgs.source}: {bad - _MAX_LISTED} more images with problems (only the first {_MAX_LISTED} are listed)")
    if bad == 0:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass  # a read-only cache only costs the checks next time


# ============================================================================ assembly

def _assemble(spec: DatasetSpec, reg: _Register | None, imgs: _Images | None, probs: _Problems) -> Inspection:
    dropped_patients = dropped_images = 0
    if reg is not None:
        ids, y = reg.ids, reg.y
        keep = np.ones(len(ids), dtype=bool)
    else:
        ids, y, keep = _patients_from_images(spec, imgs, probs)
    if y is None:
        return Inspection(spec, None, probs.items, probs.warnings)

    img_patient = img_paths = img_where = img_rel = None
    if imgs is not None:
        pos = {pid: i for i, pid in enumerate(ids)}
        owner = np.array([pos.get(pid, -1) for pid in imgs.patient_ids], dtype=np.int64)
        orphans = np.flatnonzero(owner < 0)
        if reg is not None and len(orphans) == len(owner):
            probs.add(f"{imgs.source}: no image belongs to a patient of {spec.register.name}: the patient ids never agree; "
                      "check their spelling (leading zeros, spaces, number formats) in both files")
            return Inspection(spec, None, probs.items, probs.warnings)
        if len(orphans):
            n_pat = len({imgs.patient_ids[i] for i in orphans})
            msg = (f"{len(orphans)} images of {n_pat} patient ids have no row in {spec.register.name if spec.register else 'the register'}")
            if spec.orphan_images == "fail":
                probs.add(f"{imgs.where[orphans[0]]}: {msg} (this is the first); add the patients to the register or set "
                          f"orphan_images: drop in {spec.path.name}")
            else:
                probs.warn(f"{msg}; they were dropped (orphan_images: drop)")
                dropped_images += len(orphans)
        has_image = np.zeros(len(ids), dtype=bool)
        has_image[owner[owner >= 0]] = True
        without = np.flatnonzero(~has_image)
        if len(without):
            first = (where(spec.register, reg.first_row + int(without[0]), spec.id_column) if reg is not None
                     else str(imgs.source))
            if spec.missing_images == "fail":
                probs.add(f"{first}: {len(without)} patients have no image (this is the first); add their images or set "
                          f"missing_images: drop in {spec.path.name}")
            else:
                probs.warn(f"{len(without)} patients have no image; they were dropped (missing_images: drop)")
                keep &= has_image
                dropped_patients += len(without)
        if probs.items:
            return Inspection(spec, None, probs.items, probs.warnings)
        new_pos = np.cumsum(keep) - 1
        valid = np.flatnonzero((owner >= 0) & keep[np.clip(owner, 0, None)])
        order = valid[np.argsort(new_pos[owner[valid]], kind="stable")]
        img_patient = new_pos[owner[order]]
        img_paths = [imgs.paths[i] for i in order]
        img_where = [imgs.where[i] for i in order]
        img_rel = [imgs.rel[i] for i in order]

    kept = np.flatnonzero(keep)
    y = y[kept]
    where_text = str(spec.register if spec.register is not None else imgs.source)
    if not _check_classes(y, spec, where_text, probs):
        return Inspection(spec, None, probs.items, probs.warnings)
    kept_ids = [ids[i] for i in kept]
    oracle = _read_oracle(spec, kept_ids, probs) if spec.oracle is not None else None
    if probs.items:
        return Inspection(spec, None, probs.items, probs.warnings)

    register = None
    categorical: list[str] = []
    if reg is not None:
        register = reg.features.iloc[kept].reset_index(drop=True)
        categorical = list(reg.categorical)
    images = None
    if img_patient is not None:
        images = pd.DataFrame({"patient": img_patient.astype(np.int64), "path": img_paths})
    n = len(kept)
    width = max(5, len(str(n)))
    keys = np.array([f"P{i + 1:0{width}d}" for i in range(n)])
    cohort = Cohort(
        name=spec.name, y=y.astype(np.int8), register=register, images=images, keys=keys,
        categorical=categorical, oracle=oracle, fingerprint=_fingerprint(spec, img_rel, img_paths),
        source=spec.path, cache_dir=spec.cache_dir or _default_cache(),
    )
    names = (spec.label.positive, spec.label.negative or "other")
    return Inspection(spec, cohort, probs.items, probs.warnings, image_where=img_where or [], label_names=names,
                      dropped_patients=dropped_patients, dropped_images=dropped_images,
                      unmatched_files=imgs.unmatched if imgs is not None else 0)


def _default_cache() -> Path:
    from benchmark.data.image_cache import default_cache_dir

    return default_cache_dir()


def _patients_from_images(spec: DatasetSpec, imgs: _Images, probs: _Problems):
    """Image-only cohort: patients in order of first appearance, one label per patient."""
    ids: list[str] = []
    first: dict[str, int] = {}
    for i, pid in enumerate(imgs.patient_ids):
        if pid not in first:
            first[pid] = i
            ids.append(pid)
    y_img = _labels(imgs.labels, spec, lambda i: f"{imgs.where[i]} (label)", probs)
    if y_img is None:
        return ids, None, None
    y = np.array([y_img[first[pid]] for pid in ids], dtype=np.int8)
    for i, pid in enumerate(imgs.patient_ids):
        if y_img[i] != y_img[first[pid]]:
            probs.add(f"{imgs.where[i]}: this image's label differs from that of the patient's first image "
                      f"({imgs.where[first[pid]]}); a patient has one label")
            return ids, None, None
    return ids, y, np.ones(len(ids), dtype=bool)


def _read_oracle(spec: DatasetSpec, ids: list[str], probs: _Problems) -> pd.DataFrame | None:
    df, first_row = _read_table(spec.oracle, probs, what="oracle")
    if df is None:
        return None
    id_col = spec.id_column if spec.id_column in df.columns else "patient_id"
    cols = [c for c in ORACLE_COLUMNS if c in df.columns]
    if id_col not in df.columns or not cols:
        probs.add(f"{spec.oracle}: needs an id column ({spec.id_column!r}) and at least one of {', '.join(ORACLE_COLUMNS)}; "
                  f"the columns are {_some(list(df.columns))}")
        return None
    oid = _id_text(df[id_col])
    pos = {v: i for i, v in enumerate(oid)}
    missing = [i for i, pid in enumerate(ids) if pid not in pos]
    if missing:
        probs.add(f"{spec.oracle}: {len(missing)} patients of the cohort have no row; write one row per patient")
        return None
    rows = [pos[pid] for pid in ids]
    out = {}
    for c in cols:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(v) | (v < 0) | (v > 1))
        if len(bad):
            probs.add(f"{where(spec.oracle, first_row + int(bad[0]), c)}: expected a probability in [0, 1]")
            return None
        out[c] = v[rows]
    return pd.DataFrame(out)


def _fingerprint(spec: DatasetSpec, rel: list[str] | None, paths: list[str] | None) -> str:
    """Hash of the dataset file, register/manifest/oracle bytes and the image list (path, size)."""
    h = hashlib.sha256(b"aff-dataset-v1\0")
    for f in (spec.path, spec.register, spec.images.manifest if spec.images else None, spec.oracle):
        h.update(b"\0file\0")
        if f is not None:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    h.update(f"\0settings\0{spec.missing_images}\0{spec.orphan_images}\0".encode())
    for r, p in zip(rel or [], paths or []):
        h.update(f"{r}\0{os.path.getsize(p)}\n".encode())
    return h.hexdigest()[:20]
