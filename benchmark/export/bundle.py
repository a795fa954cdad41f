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
    shift_stats.json       aggregates of the training data, for dataset-shift checks (export.shift_stats)
    model_card.md          intended use, training cohort, performance, calibration, limitations

    bundle.sig             optional: an Ed25519 signature of bundle.json (benchmark.export.signing)

The bundle is written into a temporary sibling folder and renamed when complete, so a
failed export leaves no half bundle. ``load_model`` reads each file once (``bundle_files``:
no links, sizes first, SHA-256 of the bytes it then decodes), checks every part
(``bundle_checks``, ``codec``), and runs the model on a blank patient before returning it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import UserError
from benchmark.export.bundle_files import FORMAT, FORMAT_VERSION, MANIFEST, SIGNATURE, sha256_bytes
from benchmark.export.codec import BundleFormatError, Reader, Writer
from benchmark.export.model import ExportedModel


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
    if model.update:
        u = model.update
        tree["update"] = {"kind": u["kind"], "intercept": w.encode(float(u["intercept"]), "update.intercept"),
                          "slope": w.encode(float(u["slope"]), "update.slope")}
    return tree, w


def write_bundle(model: ExportedModel, out: Path, *, cohort=None, run_dir: Path | None = None,
                 oof: tuple[np.ndarray, np.ndarray] | None = None, sign: Path | None = None,
                 files: dict[str, bytes] | None = None) -> Path:
    """Write ``model`` as a bundle folder ``out`` (created; must not hold files); returns ``out``.

    ``sign``: a private key file (``signing.new_keys``); the bundle then carries ``bundle.sig``. The folder
    is readable by its owner only unless shared output was asked for (``benchmark.outputs``). ``cohort``
    (the training cohort) gives ``shift_stats.json``; ``files`` replaces what would be computed for
    ``cv_figures.json``, ``model_card.md`` or ``shift_stats.json`` (an updated bundle: ``export.update``).
    """
    from safetensors.numpy import save as save_arrays

    from benchmark.export.card import cv_figures, model_card
    from benchmark.export.shift_stats import development_stats
    from benchmark.outputs import settle_dir

    out = Path(out)
    key = None
    if sign is not None:
        from benchmark.export.signing import load_private

        key = load_private(Path(sign))   # a bad key fails before the export is written
    try:
        tree, w = encode_model(model)
    except BundleFormatError as exc:
        raise UserError(f"{model.meta.get('candidate')} cannot be exported: {exc}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        given = dict(files or {})
        shift = development_stats(cohort, model.schema) if cohort is not None and "shift_stats.json" not in given else None
        contents = {
            "model.json": json.dumps(tree, indent=1, allow_nan=False).encode(),
            "arrays.safetensors": save_arrays(w.arrays), **w.files,
            "schema.json": json.dumps(model.schema, indent=1, allow_nan=False).encode(),
        }
        if shift is not None:
            contents["shift_stats.json"] = json.dumps(shift, indent=1, allow_nan=False).encode()
        if "cv_figures.json" not in given or "model_card.md" not in given:
            cv = cv_figures(run_dir, model) if run_dir is not None else None
            contents["cv_figures.json"] = json.dumps(cv, indent=1, default=_json_default).encode()
            contents["model_card.md"] = model_card(model, cohort=cohort, run_dir=run_dir, cv=cv, oof=oof,
                                                   shift=shift).encode()
        contents.update(given)
        for name, data in contents.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        files = {name: sha256_bytes(data) for name, data in sorted(contents.items())}
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "candidate": model.meta.get("candidate"),
                    "created": model.meta.get("created"), "meta": model.meta, "files": files}
        raw = json.dumps(manifest, indent=1, default=_json_default).encode()
        (tmp / MANIFEST).write_bytes(raw)
        if key is not None:
            from benchmark.export.signing import signature_bytes

            (tmp / SIGNATURE).write_bytes(signature_bytes(raw, key))
        if out.exists():
            out.rmdir()   # an empty folder only (export refuses a non-empty one)
        settle_dir(tmp)
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


def load_model(path: str | Path, device: str = "cpu", *, trust: list[str] | None = None) -> ExportedModel:
    """The exported model in the bundle folder ``path`` (every file checked first; see ``docs/security.md``).

    ``trust``: public key files or folders (``signing.load_trusted``); the bundle must then be signed by one
    of them. ``model.meta["signed_by"]`` is the trusted key's fingerprint, or None when nothing was asked.

        >>> from benchmark import load_model                             # doctest: +SKIP
        >>> m = load_model("results/run-1/bundles/late_stacking")         # doctest: +SKIP
        >>> m.predict("new-hospital.yaml").head()                         # doctest: +SKIP
    """
    from benchmark.candidates.weights import bundle_weights_only
    from benchmark.export.bundle_checks import check_cv_figures, check_meta, check_schema, decode_components, dry_run
    from benchmark.export.bundle_files import SIGNATURE, read_bundle
    from benchmark.export.safe_json import loads
    from benchmark.export.shift_stats import check_shift_stats

    path = Path(path)
    man, files, raw_manifest = read_bundle(path)
    signed_by = None
    if trust is not None:
        from benchmark.export.signing import load_trusted, verify

        signed_by = verify(path, raw_manifest, files.get(SIGNATURE), load_trusted(list(trust)))
    try:
        arrays = _arrays(files["arrays.safetensors"])
        tree = loads(files["model.json"], "model.json")
        schema = check_schema(loads(files["schema.json"], "schema.json"))
        meta = check_meta(man.get("meta"))
        cv = check_cv_figures(loads(files["cv_figures.json"], "cv_figures.json", allow_nan=True)
                              if "cv_figures.json" in files else None)
        shift = (check_shift_stats(loads(files["shift_stats.json"], "shift_stats.json"))
                 if "shift_stats.json" in files else None)
        reader = Reader(arrays, {n: b for n, b in files.items() if n.startswith(("weights/", "trees/"))}, device=device)
        with bundle_weights_only():
            comps, conformal, threshold, update = decode_components(tree, reader)
            model = ExportedModel(comps, conformal, threshold, schema, meta, cv=cv, shift=shift, update=update)
            dry_run(model)
    except BundleFormatError as exc:
        raise UserError(f"{path}: {exc}; the bundle is refused") from None
    model.meta["bundle"] = str(path)
    model.meta["signed_by"] = signed_by
    return model


def _arrays(data: bytes) -> dict[str, np.ndarray]:
    """arrays.safetensors as NumPy arrays (its header checked against its size first)."""
    from safetensors.numpy import load as load_arrays

    from benchmark.export.codec import safetensors_header

    safetensors_header(data, "arrays.safetensors")
    try:
        return load_arrays(data)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type
        raise BundleFormatError(f"arrays.safetensors is not readable ({str(exc).splitlines()[0][:120]})") from None
