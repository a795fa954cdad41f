"""The input schema of an exported model, and new data checked against it.

    schema = schema_of(cohort, model_components, image_size=224)   # at export
    cohort = load_for_prediction("new.yaml", schema)                 # at predict: checked, typed

The schema names what the model reads and nothing about patients:

- ``register``: the training register's columns in order, each ``numeric`` or
  ``categorical`` with the levels seen in training (None when the model reads no register);
- ``images``: the image size the model resizes to, the file kinds it was trained on
  (dicom, png, jpeg, tiff, bmp) and how pixels are decoded (None when it reads no images).

New data are conformed, one line per problem:

- a register column the model reads is missing: an error naming it (and how many more);
- a numeric column holding text: an error naming it;
- a categorical level never seen in training: a warning; it counts as ``other`` when the
  model has that level (export pools levels seen in fewer than ``MIN_LEVEL_PATIENTS``
  patients into it: ``pool_rare_levels``), else the model's documented fallback applies
  (trees: missing value; networks and logistic regression: the 'other' level);
- columns the model does not read: a warning with their count; they are ignored;
- images of another kind than in training (e.g. PNG for a model trained on DICOM): an
  error, unless ``accept_image_kind`` (pixel statistics may differ; say so to the user);
- a model that reads images only and a dataset without images: an error; a model that reads
  images and register data (fusion): a warning, and every patient is predicted without images
  (``missing`` says so).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.cohort import Cohort
from benchmark.errors import UserError

KINDS = {".dcm": "dicom", "": "dicom", ".dicom": "dicom", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg",
         ".tif": "tiff", ".tiff": "tiff", ".bmp": "bmp"}


class SchemaWarning(UserWarning):
    """New data differ from the training data in a way the model has a fallback for."""


def image_kinds(cohort: Cohort) -> list[str]:
    """The file kinds of the cohort's images (from their suffixes), sorted."""
    if not cohort.has_images:
        return []
    return sorted({KINDS.get(Path(p).suffix.lower(), "dicom") for p in cohort.images["path"]})


def _level(v):
    return v.item() if isinstance(v, np.generic) else v


MIN_LEVEL_PATIENTS = 5   # a category level seen in fewer patients is not written into a bundle
OTHER = "other"          # what such levels become, in training and in new data


def pool_rare_levels(cohort: Cohort, min_patients: int = MIN_LEVEL_PATIENTS) -> Cohort:
    """``cohort`` with every categorical level seen in fewer than ``min_patients`` patients replaced by
    ``OTHER`` (and levels seen in none dropped), so that no rare level, which could single out a patient,
    reaches a bundle's schema or model files; export trains on this cohort."""
    if not cohort.has_register:
        return cohort
    reg = cohort.register.copy()
    for col in reg.columns:
        s = reg[col]
        if not isinstance(s.dtype, pd.CategoricalDtype):
            continue
        counts = s.value_counts(dropna=True)
        keep = [c for c in s.cat.categories if counts.get(c, 0) >= min_patients]
        rare = s.notna() & ~s.isin(keep)
        cats = keep + ([OTHER] if rare.any() and OTHER not in keep else [])
        reg[col] = pd.Categorical(s.astype(object).where(~rare, OTHER).where(s.notna(), None), categories=cats)
    return dataclasses.replace(cohort, register=reg)


def schema_of(cohort: Cohort, *, reads_register: bool, image_size: int | None) -> dict:
    """The schema of a model trained on ``cohort`` (reading the register and/or images at ``image_size``)."""
    register = None
    if reads_register and cohort.has_register:
        cols = []
        for name in cohort.register.columns:
            s = cohort.register[name]
            if isinstance(s.dtype, pd.CategoricalDtype):
                cols.append({"name": str(name), "kind": "categorical",
                             "levels": [_level(v) for v in s.cat.categories]})
            else:
                cols.append({"name": str(name), "kind": "numeric"})
        register = {"columns": cols}
    images = None
    if image_size is not None:
        images = {"size": int(image_size), "kinds": image_kinds(cohort),
                  "decoding": "benchmark.data.dicom / image_cache: DICOM window and photometric from each file's "
                              "header, grey, resized with the aspect kept and padded to a square"}
    return {"register": register, "images": images}


def load_for_prediction(path: str | Path, schema: dict, *, accept_image_kind: bool = False,
                        keep_ids: bool = False) -> Cohort:
    """Load a dataset file to predict on (labels optional, patients without images kept) and conform it.

    ``keep_ids`` attaches the dataset's own ids as ``cohort.ids`` (for ``predict --keep-ids`` only).
    """
    from benchmark.data.dataset import inspect_dataset, load_dataset

    reg = schema.get("register") or {}
    kw = dict(labels="optional", missing="keep",
              categorical=[c["name"] for c in reg.get("columns", []) if c["kind"] == "categorical"])
    cohort = conform(load_dataset(path, **kw), schema, accept_image_kind=accept_image_kind, where=str(path))
    if keep_ids:
        cohort.ids = list(inspect_dataset(path, **kw).ids)
    return cohort


def conform(cohort: Cohort, schema: dict, *, accept_image_kind: bool = False, where: str = "the dataset") -> Cohort:
    """``cohort`` with its register typed and ordered as the schema says (UserError / SchemaWarning per problem)."""
    reg_schema = (schema.get("register") or {}).get("columns")
    register = cohort.register
    categorical: list[str] = []
    if reg_schema:
        if not cohort.has_register:
            raise UserError(f"{where}: the model reads register data ({len(reg_schema)} columns) but the dataset has "
                            "no register; add a 'register' table with the training columns")
        register, categorical = _conform_register(cohort.register, reg_schema, where)
    img = schema.get("images")
    if img is not None and not cohort.has_images:
        if not reg_schema:
            raise UserError(f"{where}: the model reads images only and the dataset has none; add an 'images' section")
        warnings.warn(f"{where}: the dataset has no images; the model reads images and register data, so every "
                      "patient is predicted without images (the model's missing-image fallback; missing: image)",
                      SchemaWarning, stacklevel=2)
    elif img is not None:
        new, old = image_kinds(cohort), img.get("kinds") or []
        other = [k for k in new if k not in old]
        if other and old and not accept_image_kind:
            raise UserError(f"{where}: the images are {', '.join(other)} but the model was trained on "
                            f"{', '.join(old)} images; pixel values may differ between kinds: convert them, or pass "
                            "--accept-image-kind to predict anyway")
    return dataclasses.replace(cohort, register=register, categorical=categorical)


def _conform_register(df: pd.DataFrame, columns: list[dict], where: str) -> tuple[pd.DataFrame, list[str]]:
    names = [c["name"] for c in columns]
    missing = [n for n in names if n not in df.columns]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"{where}: register column {missing[0]!r}{more} is read by the model but missing; add it "
                        "(empty cells are fine: they count as missing values)")
    extra = [c for c in df.columns if c not in set(names)]
    if extra:
        warnings.warn(f"{where}: {len(extra)} register column(s) the model does not read are ignored "
                      f"(e.g. {extra[0]!r})", SchemaWarning, stacklevel=2)
    out, categorical = {}, []
    for col in columns:
        name, s = col["name"], df[col["name"]]
        if col["kind"] == "numeric":
            if isinstance(s.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(s.dtype):
                raise UserError(f"{where}: register column {name!r} holds text but is numeric in the training data; "
                                "give numbers (empty for missing)")
            out[name] = s.astype("float64")
            continue
        levels = list(col["levels"])
        by_text = {str(v): v for v in levels}
        values = s.astype("object").where(s.notna(), None)
        mapped = [None if v is None else by_text.get(str(_level(v)), _Unseen(str(_level(v)))) for v in values]
        unseen = sorted({m.text for m in mapped if isinstance(m, _Unseen)})
        if unseen and OTHER in by_text:   # rare levels were pooled at training: the model knows 'other'
            warnings.warn(f"{where}: register column {name!r} has {len(unseen)} level(s) the model does not know; "
                          f"they count as {OTHER!r}, as rare levels did in training", SchemaWarning, stacklevel=2)
            mapped = [by_text[OTHER] if isinstance(m, _Unseen) else m for m in mapped]
            unseen = []
        if unseen:
            shown = ", ".join(repr(u) for u in unseen[:3]) + (" ..." if len(unseen) > 3 else "")
            warnings.warn(f"{where}: register column {name!r} has {len(unseen)} level(s) never seen in training "
                          f"({shown}); the model treats them as unseen (trees: missing; networks and logistic "
                          "regression: the 'other' level)", SchemaWarning, stacklevel=2)
        extra_levels = [u for u in unseen if u not in by_text]
        cats = levels + extra_levels
        out[name] = pd.Categorical([m.text if isinstance(m, _Unseen) else m for m in mapped], categories=cats)
        categorical.append(name)
    return pd.DataFrame(out, index=range(len(df))), categorical


class _Unseen:
    def __init__(self, text: str) -> None:
        self.text = text
