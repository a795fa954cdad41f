"""The bundle: an exported model as a folder of safe files, each checked by SHA-256 on load.

    path = write_bundle(model, out, cohort=cohort, run_dir=run_dir, oof=oof)   # export.py
    model = load_model(path)                  # UserError naming a changed, missing or extra file

Layout (nothing in it runs code when loaded; no pickle anywhere)::

    bundle.json            format, candidate, created, package versions, SHA-256 of every other file
    model.json             the model tree: components, members, preprocessing, calibration,
                           thresholds (benchmark.export.codec), references to the files below
    arrays.safetensors     every numeric array of the tree (medians, scales, coefficients, ...)
    weights/*.safetensors  torch networks' weights
    trees/*.ubj|*.txt      XGBoost (UBJSON) and LightGBM (text) models
    schema.json            the input schema (benchmark.export.schema)
    cv_figures.json        the run's nested-CV figures of this candidate (for external validation)
    model_card.md          intended use, training cohort, performance, calibration, limitations

The bundle is written into a temporary sibling folder and renamed when complete, so a
failed export leaves no half bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import UserError
from benchmark.export.codec import BundleFormatError, Reader, Writer
from benchmark.export.model import Component, ExportedModel

FORMAT = "aff-benchmark-bundle"
FORMAT_VERSION = 1
MANIFEST = "bundle.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def encode_model(model: ExportedModel) -> tuple[dict, Writer]:
    """The model tree (JSON-able) and the writer holding its arrays and files."""
    w = Writer()
    comps = []
    for i, c in enumerate(model.components):
        comps.append({
            "name": c.name, "family": c.family, "modality": c.modality, "sources": c.sources,
            "image_size": c.image_size, "r": w.encode(c.r, f"c{i}.r"), "mu": w.encode(c.mu, f"c{i}.mu"),
            "calibrator": w.encode(c.calibrator, f"c{i}.calibrator"),
            "members": [w.encode(m, f"c{i}.m{k}") for k, m in enumerate(c.members)],
            "full": None if c.full is None else w.encode(c.full, f"c{i}.full"),
        })
    tree = {"components": comps, "conformal": w.encode(model.conformal, "conformal"),
            "threshold": w.encode(model.threshold, "threshold")}
    return tree, w


def decode_model(tree: dict, reader: Reader, schema: dict, meta: dict) -> ExportedModel:
    comps = []
    for node in tree["components"]:
        comps.append(Component(
            name=node["name"], family=node["family"], modality=node["modality"],
            members=[reader.decode(m) for m in node["members"]], calibrator=reader.decode(node["calibrator"]),
            r=float(reader.decode(node["r"])), mu=float(reader.decode(node["mu"])), sources=dict(node["sources"]),
            image_size=node["image_size"], full=None if node.get("full") is None else reader.decode(node["full"])))
    return ExportedModel(comps, reader.decode(tree["conformal"]), float(reader.decode(tree["threshold"])), schema, meta)


def write_bundle(model: ExportedModel, out: Path, *, cohort=None, run_dir: Path | None = None,
                 oof: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Write ``model`` as a bundle folder ``out`` (created; must not hold files); returns ``out``."""
    from safetensors.numpy import save as save_arrays

    from benchmark.export.card import cv_figures, model_card

    out = Path(out)
    try:
        tree, w = encode_model(model)
    except BundleFormatError as exc:
        raise UserError(f"{model.meta.get('candidate')} cannot be exported: {exc}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        (tmp / "model.json").write_text(json.dumps(tree, indent=1, allow_nan=False))
        (tmp / "arrays.safetensors").write_bytes(save_arrays(w.arrays))
        for name, data in w.files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        (tmp / "schema.json").write_text(json.dumps(model.schema, indent=1, allow_nan=False))
        cv = cv_figures(run_dir, model) if run_dir is not None else None
        (tmp / "cv_figures.json").write_text(json.dumps(cv, indent=1, default=_json_default))
        (tmp / "model_card.md").write_text(model_card(model, cohort=cohort, run_dir=run_dir, cv=cv, oof=oof))
        files = {p.relative_to(tmp).as_posix(): sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "candidate": model.meta.get("candidate"),
                    "created": model.meta.get("created"), "meta": model.meta, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=_json_default))
        if out.exists():
            out.rmdir()   # an empty folder only (export refuses a non-empty one)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (pd.Timestamp, Path)):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def check_bundle(path: Path) -> dict:
    """The bundle's manifest after checking every file's SHA-256 (UserError naming the first problem)."""
    path = Path(path)
    man_path = path / MANIFEST
    if not man_path.is_file():
        raise UserError(f"{path}: not a model bundle (no {MANIFEST}); give the folder `benchmark export` wrote")
    try:
        man = json.loads(man_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{man_path}: not valid JSON; the bundle is damaged, export it again") from None
    if man.get("format") != FORMAT:
        raise UserError(f"{man_path}: not a model bundle of this harness (format {man.get('format')!r})")
    if int(man.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"{path}: bundle format {man['format_version']} is newer than this installation reads "
                        f"({FORMAT_VERSION}); update the package")
    listed = man.get("files") or {}
    for name, digest in listed.items():
        f = path / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise UserError(f"{man_path}: file entry {name!r} points outside the bundle; the bundle is refused")
        if not f.is_file():
            raise UserError(f"{path}: file {name} listed in {MANIFEST} is missing; the bundle is refused (export again)")
        if sha256(f) != digest:
            raise UserError(f"{path}: file {name} was changed after export (SHA-256 differs from {MANIFEST}); "
                            "the bundle is refused (export again, or restore the file)")
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path).as_posix()
        if f.is_file() and rel != MANIFEST and rel not in listed:
            raise UserError(f"{path}: file {rel} is not part of the exported bundle; remove it (only checked files "
                            "may sit in a bundle)")
    return man


def load_model(path: str | Path, device: str = "cpu") -> ExportedModel:
    """The exported model in the bundle folder ``path`` (every file checked first).

        >>> from benchmark import load_model                             # doctest: +SKIP
        >>> m = load_model("results/run-1/bundles/late_stacking")         # doctest: +SKIP
        >>> m.predict("new-hospital.yaml").head()                         # doctest: +SKIP
    """
    from safetensors.numpy import load as load_arrays

    path = Path(path)
    man = check_bundle(path)
    files = {name: (path / name).read_bytes() for name in man["files"] if name.startswith(("weights/", "trees/"))}
    arrays = load_arrays((path / "arrays.safetensors").read_bytes())
    tree = json.loads((path / "model.json").read_text())
    schema = json.loads((path / "schema.json").read_text())
    try:
        model = decode_model(tree, Reader(arrays, files, device=device), schema, man.get("meta") or {})
    except BundleFormatError as exc:
        raise UserError(f"{path}: {exc}") from None
    model.meta["bundle"] = str(path)
    return model
