"""The parts of a bundle around the model tree, each read through checked fields.

    schema = check_schema(loads(files["schema.json"], "schema.json"))
    meta = check_meta(manifest.get("meta"))
    comps = decode_components(tree, reader)      # members of the component's own family only
    dry_run(model)                                # the model predicts a blank patient, or BundleFormatError

Each raises ``BundleFormatError`` naming the file and the field; ``bundle.load_model`` turns
it into one ``UserError`` line.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmark.export.field_specs import NAME, Obj
from benchmark.export.fields import Any_, Bool, Float, Int, List, NoneOr, OneOf, Str
from benchmark.export.limits import MAX_COLUMNS, MAX_COMPONENTS, MAX_IMAGE_SIZE, MAX_MEMBERS, BundleFormatError

KINDS = ("dicom", "png", "jpeg", "tiff", "bmp")
LEVELS = ("90", "95")


def _dict(value, keys: set[str], where: str, required: set[str] | None = None) -> dict:
    if not isinstance(value, dict):
        raise BundleFormatError(f"{where}: expected an object")
    extra = set(value) - keys
    missing = (keys if required is None else required) - set(value)
    if extra or missing:
        odd = sorted(map(str, extra or missing))[0][:40]
        raise BundleFormatError(f"{where}: {'unexpected' if extra else 'missing'} key {odd!r}")
    return value


def check_schema(schema) -> dict:
    """schema.json: the register's columns (numeric, or categorical with their levels) and the images."""
    _dict(schema, {"register", "images"}, "schema.json")
    reg = schema["register"]
    if reg is not None:
        _dict(reg, {"columns"}, "schema.json: register")
        cols = reg["columns"]
        if not isinstance(cols, list) or len(cols) > MAX_COLUMNS:
            raise BundleFormatError("schema.json: register.columns is not a list of columns")
        names = set()
        for i, col in enumerate(cols):
            where = f"schema.json: register.columns[{i}]"
            _dict(col, {"name", "kind", "levels"}, where, {"name", "kind"})
            Str(NAME).read(None, col["name"], f"{where}.name")
            Str(choices=("numeric", "categorical")).read(None, col["kind"], f"{where}.kind")
            if col["kind"] == "categorical":
                List(OneOf(Str(NAME), Int(), Float(), Bool()), 100_000).read(None, col.get("levels"), f"{where}.levels")
            elif "levels" in col:
                raise BundleFormatError(f"{where}: a numeric column with levels")
            if col["name"] in names:
                raise BundleFormatError(f"{where}: column {col['name'][:40]!r} is listed twice")
            names.add(col["name"])
    img = schema["images"]
    if img is not None:
        _dict(img, {"size", "kinds", "decoding"}, "schema.json: images")
        Int(1, MAX_IMAGE_SIZE).read(None, img["size"], "schema.json: images.size")
        List(Str(choices=KINDS), len(KINDS)).read(None, img["kinds"], "schema.json: images.kinds")
        Str(1024).read(None, img["decoding"], "schema.json: images.decoding")
    return schema


_META_TYPES = {"seed": Int(), "synthetic": Bool(), "member_patients_run": Int(0, 1 << 40),
               "member_patients_export": Int(0, 1 << 40)}


def check_meta(meta) -> dict:
    """bundle.json's ``meta``: plain values only; the ones predict and the card read, of their types."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise BundleFormatError("bundle.json: meta is not an object")
    out = {}
    for key, value in meta.items():
        where = f"bundle.json: meta.{str(key)[:40]}"
        fld = _META_TYPES.get(key)
        if key == "updates":
            out[key] = check_updates(value)
        elif fld is not None:
            out[key] = NoneOr(fld).read(None, value, where)
        elif isinstance(value, str) or value is None:
            out[key] = Str().read(None, value, where) if value is not None else None
        else:
            out[key] = _plain(value, where)
    return out


_FIGURE = NoneOr(Float(nan=True))
_HISTORY = {"kind": Str(16, choices=("intercept", "logistic")), "intercept": Float(-100.0, 100.0),
            "slope": Float(-100.0, 100.0), "created": Str(40), "source_bundle_sha256": Str(64, pattern=r"[0-9a-f]{64}"),
            "source_candidate": NoneOr(Str(NAME)), "site": Str(200), "n": Int(0, 1 << 40), "n_pos": Int(0, 1 << 40),
            "folds": Int(2, 100)}
_FIGURES = tuple(f"{k}{s}" for k in ("oe_ratio", "citl", "cal_slope", "auc") for s in ("", "_lo", "_hi"))


def check_updates(value) -> list[dict]:
    """bundle.json's ``meta.updates``: the update history of an updated bundle, each field typed and bounded."""
    where = "bundle.json: meta.updates"
    if not isinstance(value, list) or len(value) > 100:
        raise BundleFormatError(f"{where}: not a list of at most 100 updates")
    out = []
    for i, h in enumerate(value):
        w = f"{where}[{i}]"
        _dict(h, set(_HISTORY) | {"before", "after_out_of_fold"}, w)
        item = {k: fld.read(None, h[k], f"{w}.{k}") for k, fld in _HISTORY.items()}
        for part in ("before", "after_out_of_fold"):
            figs = _dict(h[part], set(_FIGURES), f"{w}.{part}")
            item[part] = {k: _FIGURE.read(None, v, f"{w}.{part}.{k}") for k, v in figs.items()}
        out.append(item)
    return out


def _plain(value, where: str):
    """JSON values as they are (lists, objects, numbers, text), with their strings bounded."""
    if isinstance(value, dict):
        return {Str(NAME).read(None, k, f"{where} key"): _plain(v, f"{where}.{k[:40]}") for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str):
        return Str().read(None, value, where)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    raise BundleFormatError(f"{where}: not a plain value")


_NUMBER = OneOf(Float(nan=True), Str(8, choices=("inf", "-inf", "nan", "NaN")))


def check_cv_figures(cv) -> dict | None:
    """cv_figures.json (``report.validation.validation_figures`` of the run): numbers, short notes, the curves."""
    if cv is None:
        return None
    if not isinstance(cv, dict) or len(cv) > 200:
        raise BundleFormatError("cv_figures.json: not an object of figures")
    out = {}
    for key, value in cv.items():
        where = f"cv_figures.json: {str(key)[:40]}"
        Str(64, pattern=r"[a-z0-9_]+").read(None, key, where)
        if key == "conformal":
            if not isinstance(value, dict):
                raise BundleFormatError(f"{where}: not an object of levels")
            out[key] = {Str(8, choices=LEVELS).read(None, lv, where): _conformal(v, f"{where}.{lv}")
                        for lv, v in value.items()}
        elif key in ("reliability", "decision_curve"):
            rows = value
            if not isinstance(rows, list) or len(rows) > 1000 or not all(isinstance(row, dict) and len(row) <= 10 for row in rows):
                raise BundleFormatError(f"{where}: not a list of points")
            out[key] = [{Str(64).read(None, k, where): Float(nan=True).read(None, v, f"{where}[{i}].{k}")
                         for k, v in row.items()} for i, row in enumerate(rows)]
        elif key == "notes":
            out[key] = List(Str(1000), 100).read(None, value, where)
        elif key == "source":
            out[key] = Str(1000).read(None, value, where)
        else:
            out[key] = _NUMBER.read(None, value, where)
    return out


def _conformal(value, where: str) -> dict:
    if not isinstance(value, dict) or len(value) > 20:
        raise BundleFormatError(f"{where}: not an object of figures")
    return {Str(64).read(None, k, where): (List(_NUMBER, length=2).read(None, v, f"{where}.{k}") if k == "thresholds"
                                           else _NUMBER.read(None, v, f"{where}.{k}"))
            for k, v in value.items()}


_COMPONENT = {"name", "family", "modality", "sources", "image_size", "r", "mu", "calibrator", "members", "full"}


def decode_components(tree, reader) -> tuple[list, dict, float, dict | None]:
    """(components, conformal thresholds, decision threshold, recalibration or None) of model.json, each field
    checked."""
    from benchmark.export.field_specs import FAMILY_CLASSES
    from benchmark.export.model import Component
    from benchmark.protocol import MODALITIES

    _dict(tree, {"components", "conformal", "threshold", "update"}, "model.json", {"components", "conformal", "threshold"})
    nodes = tree["components"]
    if not isinstance(nodes, list) or not 1 <= len(nodes) <= MAX_COMPONENTS:
        raise BundleFormatError(f"model.json: components is not a list of 1 to {MAX_COMPONENTS}")
    comps: list = []
    for i, node in enumerate(nodes):
        where = f"model.json: components[{i}]"
        _dict(node, _COMPONENT, where, _COMPONENT - {"full"})
        name = Str(NAME, pattern=r"[A-Za-z0-9_.\-]+").read(reader, node["name"], f"{where}.name")
        family = Str(64, choices=tuple(FAMILY_CLASSES)).read(reader, node["family"], f"{where}.family")
        modality = Str(16, choices=tuple(MODALITIES)).read(reader, node["modality"], f"{where}.modality")
        size = NoneOr(Int(8, MAX_IMAGE_SIZE)).read(reader, node["image_size"], f"{where}.image_size")
        sources = node["sources"]
        if not isinstance(sources, dict) or len(sources) > MAX_COMPONENTS:
            raise BundleFormatError(f"{where}.sources: not a map of inputs to components")
        earlier = {c.name for c in comps}
        for role, src in sources.items():
            Str(NAME).read(reader, role, f"{where}.sources key")
            if src not in earlier:
                raise BundleFormatError(f"{where}.sources.{role[:40]}: {str(src)[:40]!r} is not an earlier component")
        if name in earlier:
            raise BundleFormatError(f"{where}.name: {name!r} is used twice")
        member = Obj(FAMILY_CLASSES[family])   # members of the component's own family only
        members = List(member, MAX_MEMBERS).read(reader, node["members"], f"{where}.members")
        if not members:
            raise BundleFormatError(f"{where}.members: no member")
        if (size is not None) != bool(type(members[0]).uses_images):
            raise BundleFormatError(f"{where}.image_size: {size!r} for family {family!r}, which "
                                    f"{'reads' if type(members[0]).uses_images else 'does not read'} images")
        comps.append(Component(
            name=name, family=family, modality=modality, members=members,
            calibrator=Obj("benchmark.candidates.calibration:Calibrator").read(reader, node["calibrator"],
                                                                              f"{where}.calibrator"),
            r=Float(1e-9, 1e9).read(reader, node["r"], f"{where}.r"),
            mu=Float(-1e6, 1e6).read(reader, node["mu"], f"{where}.mu"), sources=dict(sources), image_size=size,
            full=NoneOr(member).read(reader, node.get("full"), f"{where}.full")))
    conformal = _dict(_dict(tree["conformal"], {"__map__"}, "model.json: conformal")["__map__"], set(LEVELS),
                      "model.json: conformal")
    thresholds = {lv: List(Float(nan=True), length=2).read(reader, v, f"model.json: conformal.{lv}")
                  for lv, v in conformal.items()}
    if any(math.isnan(q) for v in thresholds.values() for q in v):
        raise BundleFormatError("model.json: conformal: a threshold is NaN")
    threshold = Float(nan=True).read(reader, tree["threshold"], "model.json: threshold")
    if math.isnan(threshold):
        raise BundleFormatError("model.json: threshold is NaN")
    return comps, thresholds, threshold, _update(tree.get("update"), reader)


def _update(node, reader) -> dict | None:
    """model.json's ``update``: the recalibration an updated bundle applies (``export.update``)."""
    if node is None:
        return None
    _dict(node, {"kind", "intercept", "slope"}, "model.json: update")
    return {"kind": Str(16, choices=("intercept", "logistic")).read(reader, node["kind"], "model.json: update.kind"),
            "intercept": Float(-100.0, 100.0).read(reader, node["intercept"], "model.json: update.intercept"),
            "slope": Float(-100.0, 100.0).read(reader, node["slope"], "model.json: update.slope")}


def blank_cohort(schema: dict, sizes: list[int]):
    """Two patients with nothing known (missing register values, one black image): what ``dry_run`` predicts."""
    from benchmark.data.cohort import Cohort

    cols = (schema.get("register") or {}).get("columns") or []
    data, categorical = {}, []
    for c in cols:
        if c["kind"] == "numeric":
            data[c["name"]] = np.array([np.nan, 0.0])
        else:
            levels = list(c.get("levels") or [])
            data[c["name"]] = pd.Categorical([None, levels[0] if levels else None], categories=levels)
            categorical.append(c["name"])
    register = pd.DataFrame(data, index=range(2)) if cols else None
    images = pixels = None
    if sizes:
        images = pd.DataFrame({"patient": [0], "path": [""]})
        pixels = {s: np.zeros((1, s, s), dtype=np.uint8) for s in sizes}
    cohort = Cohort(name="blank", y=np.full(2, -1, dtype=np.int8), register=register, images=images,
                    keys=np.array(["P00001", "P00002"]), categorical=categorical, labelled=False)
    if pixels:
        cohort._pixels.update(pixels)
    return cohort


def dry_run(model) -> None:
    """BundleFormatError unless ``model`` predicts two blank patients (probabilities in [0, 1])."""
    sizes = sorted({c.image_size for c in model.components if c.image_size is not None})
    try:
        table = model.table(blank_cohort(model.schema, sizes))
        prob = table["prob"].to_numpy(dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - whatever the bundle's objects raise, the bundle is at fault
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise BundleFormatError(f"its model does not run on a blank patient ({(lines[0] if lines else 'it failed without a message')[:160]}); "
                                "the bundle is damaged or was edited") from None
    if not np.all((prob >= 0) & (prob <= 1) | np.isnan(prob)):
        raise BundleFormatError("its model predicts probabilities outside [0, 1]; the bundle is damaged or was edited")
