"""Read a dataset file (YAML) and the files it names into a validated ``Cohort``.

    >>> from benchmark.data.dataset import load_dataset
    >>> cohort = load_dataset("data/my-cohort.yaml")          # doctest: +SKIP
    >>> cohort.n_patients, int(cohort.y.sum()), cohort.keys[:2]  # doctest: +SKIP
    (4172, 172, array(['P00001', 'P00002'], dtype='<U6'))

The dataset file (paths are relative to it)::

    name: my-aff-cohort
    register: register.csv            # CSV (',' ';' or tab) or Parquet, one row per patient
    id_column: patient_id             # default patient_id
    label: {column: group, positive: AFF, negative: NFF}   # negative optional; 1/0 works too; the
    #                                   whole key may be left out in a dataset to predict on (see below)
    images:
      root: images/                   # DICOM (.dcm or no suffix), PNG, JPEG, TIFF, BMP
      manifest: images.csv            # columns path, patient_id (path relative to root) ...
      # path_column: file             # ... or other names for those two columns
      # pattern: "(?P<patient_id>[^/]+)/.*\\.dcm"   # instead of a manifest: a regex matched
      #                                 against each path relative to root (full match)
      # allowed_roots: [/data/xrays]  # other folders image paths may lead into (else refused, never opened)
      # max_megapixels: 100           # larger declared images are refused from their header, never decoded
    drop_columns: [personnummer]      # identifiers and anything else that is not a feature; a column that
    #                                   looks like one (name, personal number, e-mail, phone, a text unique
    #                                   per patient) is refused until it is listed here
    categorical: [site]               # non-numeric feature columns (text anywhere else is an error)
    missing_images: drop              # patients with no image: drop (default, with a warning) | fail
    orphan_images: drop               # images whose patient has no register row: drop | fail
    oracle: oracle.csv                # optional: id column + oracle_register/_image/_both
    truth: truth.json                 # optional (synth writes it): risk columns and image sign regions
    cache_dir: ~/.cache/aff-benchmark # optional; default $AFF_BENCHMARK_CACHE or ~/.cache/aff-benchmark
    register_format: {separator: ";", decimal: ",", encoding: utf-16}   # optional, each key too:
    #                                   what detection got wrong (default: separator from the header,
    #                                   decimal ',' with ';' else '.', encoding from a BOM, else UTF-8,
    #                                   cp1252, latin-1); ignored for Parquet
    manifest_format: {separator: ","} # the same for the images manifest CSV
    subgroups: [sex, site, {column: age, bands: [0, 65, 80, 200]}]   # optional: AUC and calibration
    #                                   reported per level of these feature columns (data/subgroups.py)

Either ``register`` or ``images`` may be left out. Without a register the label comes from
the manifest (a ``label.column`` there, one value per patient) or from a named group
``label`` in the pattern.

``label`` is required for ``validate`` and ``run``. A dataset that a trained model is applied
to (``load_dataset(path, labels="optional")``, as ``predict`` does) may leave it out: its
patients are then unlabelled (``Cohort.labelled`` False, ``Cohort.y`` all -1). When such a
file does give ``label``, the label column must exist and every cell be filled, as always,
but one class only is allowed (a warning says that AUC and the other metrics needing both
classes will be missing). ``load_dataset(..., categorical=[...])`` adds columns treated as
if listed under ``categorical`` (e.g. those the model was trained with as categories);
names not in the register are ignored.

Everything is checked before anything is returned; problems are gathered (so that
``python -m benchmark validate`` can list them all) and ``load_dataset`` raises the first as
a one-line ``UserError`` naming file, row and column. Messages never quote an identifier,
a file name or a free-text cell: they give row numbers (row 2 is the first data row, as a
spreadsheet shows it). The user's files are only read.

Outputs refer to patients by ``Cohort.keys`` (``P00001``... in register row order), never by
the id column.

This module holds the public API and puts the cohort together (patients matched to their
images, the oracle, the fingerprint); the pieces it assembles live next to it:
``dataset_spec`` (the dataset file parsed into a ``DatasetSpec``; this docstring is its
format), ``tables`` (reading a CSV or Parquet file), ``register_table`` (ids, features and
labels) and ``image_index`` (the images of each patient, their files checked).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.cohort import Cohort
from benchmark.data.dataset_spec import DatasetSpec, ImageSpec, LabelSpec, Problems, parse_spec
from benchmark.data.image_index import ImageIndex, image_roots, read_images
from benchmark.data.register_table import Register, check_classes, parse_labels, read_register
from benchmark.data.subgroups import subgroup_levels
from benchmark.data.tables import columns_text, id_text, read_table
from benchmark.data.truth import read_truth
from benchmark.errors import UserError, where
from benchmark.paths import cache_dir as default_cache_dir
from benchmark.protocol import ORACLE_COLUMNS

__all__ = ["DatasetSpec", "DatasetWarning", "ImageSpec", "Inspection", "LabelSpec", "inspect_dataset",
           "load_dataset", "load_dataset_file"]


class DatasetWarning(UserWarning):
    """Something was dropped or ignored while loading; the data are still usable."""


def warn(msg: str) -> None:
    """Issue a ``DatasetWarning``; it prints as one line, ``warning: <file>: <what>``, without a source path."""
    warnings.warn(msg, DatasetWarning, stacklevel=3)


_plain_formatwarning = warnings.formatwarning


def _formatwarning(message, category, filename, lineno, line=None):
    if isinstance(category, type) and issubclass(category, DatasetWarning):
        return f"warning: {' '.join(str(message).split())}\n"
    return _plain_formatwarning(message, category, filename, lineno, line)


if getattr(warnings.formatwarning, "__name__", "") != "_formatwarning":
    warnings.formatwarning = _formatwarning  # dataset warnings print as one clean line; others as before


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
    ids: list[str] = field(default_factory=list, repr=False)   # the cohort's own ids (never printed; predict --keep-ids)


# ============================================================================ public API

def load_dataset(path: str | Path, *, missing: str | None = None, labels: str = "required",
                 categorical: tuple[str, ...] | list[str] = ()) -> Cohort:
    """Load and validate the dataset file at ``path``; ``UserError`` on the first problem.

    ``missing`` ('drop', 'fail', or 'keep': patients without images stay, for a model with a
    missing-image fallback) overrides the file's ``missing_images`` setting. Dropped
    patients or images are reported with a ``DatasetWarning`` giving their count.
    ``labels="optional"`` (a dataset to predict on) accepts a file without ``label``: the
    cohort then has ``labelled`` False and ``y`` all -1; a labelled file may hold one class
    (a warning). ``categorical`` names more categorical columns, united with the file's
    list; those not in the register are ignored.

        >>> new = load_dataset("new-hospital.yaml", labels="optional", categorical=["site"])  # doctest: +SKIP
        >>> new.labelled, set(new.y.tolist())                                                # doctest: +SKIP
        (False, {-1})
    """
    ins = inspect_dataset(path, missing=missing, labels=labels, categorical=categorical)
    if ins.problems:
        first = ins.problems[0]
        more = len(ins.problems) - 1
        if more:
            first += f" ({more} more problem{'s' if more > 1 else ''}: run `python -m benchmark validate {path}` to list them)"
        raise UserError(first)
    for msg in ins.warnings:
        warn(msg)
    assert ins.cohort is not None
    return ins.cohort


def load_dataset_file(path: str | Path, *, labels: str = "required") -> DatasetSpec:
    """Parse and check the YAML file only (keys, types, that the named paths exist).

    ``labels`` as for ``load_dataset``.
    """
    probs = Problems()
    spec = parse_spec(Path(path), probs, labels=labels)
    if probs.items:
        raise UserError(probs.items[0])
    assert spec is not None
    return spec


def inspect_dataset(path: str | Path, *, missing: str | None = None, labels: str = "required",
                    categorical: tuple[str, ...] | list[str] = ()) -> Inspection:
    """Check everything and gather all problems instead of stopping at the first; keywords as for ``load_dataset``."""
    if isinstance(categorical, str):
        categorical = (categorical,)
    categorical = tuple(str(c) for c in categorical)
    probs = Problems()
    spec = parse_spec(Path(path), probs, labels=labels)
    if spec is None:
        return Inspection(None, None, probs.items, probs.warnings)
    if missing is not None:
        if missing not in ("drop", "fail", "keep"):
            raise ValueError(f"missing must be 'drop', 'fail' or 'keep', got {missing!r}")
        spec = dataclasses.replace(spec, missing_images=missing)
    reg = read_register(spec, probs, extra_categorical=categorical) if spec.register is not None else None
    imgs = read_images(spec, probs) if spec.images is not None else None
    if (spec.register is not None and reg is None) or (spec.images is not None and imgs is None) or probs.items:
        return Inspection(spec, None, probs.items, probs.warnings,
                          unmatched_files=imgs.unmatched if imgs is not None else 0)
    return _assemble(spec, reg, imgs, probs, labels_required=labels == "required")


# ============================================================================ assembly

def _assemble(spec: DatasetSpec, reg: Register | None, imgs: ImageIndex | None, probs: Problems, *,
              labels_required: bool = True) -> Inspection:
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
                probs.warn(f"{imgs.source}: {msg}; they were dropped (orphan_images: drop)")
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
            elif spec.missing_images == "keep":   # prediction: the model's missing-image fallback applies
                probs.warn(f"{spec.register if reg is not None else imgs.source}: {len(without)} patients have no "
                           "image; they are kept (missing_images: keep)")
            else:
                probs.warn(f"{spec.register if reg is not None else imgs.source}: {len(without)} patients have no "
                           "image; they were dropped (missing_images: drop)")
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
    if spec.label is not None and not check_classes(y, spec, where_text, probs, required=labels_required):
        return Inspection(spec, None, probs.items, probs.warnings)
    kept_ids = [ids[i] for i in kept]
    oracle = _read_oracle(spec, kept_ids, probs) if spec.oracle is not None else None
    truth = regions = None
    if spec.truth is not None:
        truth, regions = read_truth(spec.truth, img_rel, probs.add)
    if probs.items:
        return Inspection(spec, None, probs.items, probs.warnings)

    register = None
    categorical: list[str] = []   # the register's categorical columns (the file's list and the caller's)
    if reg is not None:
        register = reg.features.iloc[kept].reset_index(drop=True)
        categorical = list(reg.categorical)
    groups = subgroup_levels(spec.subgroups, register, spec.path, probs)
    if probs.items:
        return Inspection(spec, None, probs.items, probs.warnings)
    images = None
    if img_patient is not None:
        images = pd.DataFrame({"patient": img_patient.astype(np.int64), "path": img_paths})
        if regions is not None:
            images["regions"] = regions
    n = len(kept)
    width = max(5, len(str(n)))
    keys = np.array([f"P{i + 1:0{width}d}" for i in range(n)])
    cohort = Cohort(
        name=spec.name, y=y.astype(np.int8), register=register, images=images, keys=keys,
        categorical=categorical, oracle=oracle, truth=truth,
        fingerprint=_fingerprint(spec, img_rel, img_paths, [c for c in categorical if c not in spec.categorical]),
        source=spec.path, cache_dir=spec.cache_dir or default_cache_dir(), labelled=spec.label is not None,
        image_roots=tuple(image_roots(spec)) if spec.images is not None else (), groups=groups,
    )
    names = ("positive", "negative")
    if spec.label is not None:
        names = (spec.label.positive, spec.label.negative or "other")
    return Inspection(spec, cohort, probs.items, probs.warnings, image_where=img_where or [], label_names=names,
                      dropped_patients=dropped_patients, dropped_images=dropped_images,
                      unmatched_files=imgs.unmatched if imgs is not None else 0, ids=kept_ids)


def _patients_from_images(spec: DatasetSpec, imgs: ImageIndex, probs: Problems):
    """Image-only cohort: patients in order of first appearance, one label per patient (-1 without a label)."""
    ids: list[str] = []
    first: dict[str, int] = {}
    for i, pid in enumerate(imgs.patient_ids):
        if pid not in first:
            first[pid] = i
            ids.append(pid)
    if spec.label is None:
        return ids, np.full(len(ids), -1, dtype=np.int8), np.ones(len(ids), dtype=bool)
    y_img = parse_labels(imgs.labels, spec, lambda i: f"{imgs.where[i]} (label)", probs)
    if y_img is None:
        return ids, None, None
    y = np.array([y_img[first[pid]] for pid in ids], dtype=np.int8)
    for i, pid in enumerate(imgs.patient_ids):
        if y_img[i] != y_img[first[pid]]:
            probs.add(f"{imgs.where[i]}: this image's label differs from that of the patient's first image "
                      f"({imgs.where[first[pid]]}); a patient has one label")
            return ids, None, None
    return ids, y, np.ones(len(ids), dtype=bool)


def _read_oracle(spec: DatasetSpec, ids: list[str], probs: Problems) -> pd.DataFrame | None:
    df, first_row = read_table(spec.oracle, probs, what="oracle")
    if df is None:
        return None
    id_col = spec.id_column if spec.id_column in df.columns else "patient_id"
    cols = [c for c in ORACLE_COLUMNS if c in df.columns]
    if id_col not in df.columns or not cols:
        probs.add(f"{spec.oracle}: needs an id column ({spec.id_column!r}) and at least one of {', '.join(ORACLE_COLUMNS)}; "
                  f"the columns are {columns_text(list(df.columns))}")
        return None
    oid = id_text(df[id_col])
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


def _fingerprint(spec: DatasetSpec, rel: list[str] | None, paths: list[str] | None,
                 extra_categorical: list[str]) -> str:
    """Hash of the dataset file, register/manifest/oracle bytes, the image list (path, size) and the
    columns made categorical by the caller beyond the file's list (none: the hash of the file alone)."""
    h = hashlib.sha256(b"aff-dataset-v1\0")
    for f in (spec.path, spec.register, spec.images.manifest if spec.images else None, spec.oracle):
        h.update(b"\0file\0")
        if f is not None:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    h.update(f"\0settings\0{spec.missing_images}\0{spec.orphan_images}\0".encode())
    if extra_categorical:
        h.update(("\0categorical\0" + "\0".join(extra_categorical) + "\0").encode())
    for r, p in zip(rel or [], paths or []):
        h.update(f"{r}\0{os.path.getsize(p)}\n".encode())
    return h.hexdigest()[:20]
