"""What the development data looked like, as aggregates only: the bundle's ``shift_stats.json``.

    stats = development_stats(cohort, schema)           # at export, on the cohort the model trained on
    stats = check_shift_stats(loads(raw, "shift_stats.json"))   # at load: every field checked and bounded

``predict`` compares a new cohort with these (``report.shift_compare``). Per register variable
the model reads:

- numeric: patients with a value, the missing share, mean, SD and five quantiles (10, 25, 50,
  75, 90 %), each quantile the **mean of the ``MIN_PATIENTS`` sorted values around its rank**,
  so that no figure is one patient's value (a plain quantile, or a minimum or maximum, of a
  continuous variable would be; evenly spaced values, whose mean is their middle one, widen the
  window). Mean and SD need ``MIN_PATIENTS`` values, quantiles twice that;
- categorical: the missing share and the share of each level seen in at least ``MIN_PATIENTS``
  patients (export has already pooled rarer levels into ``other``; here too, any level below
  the limit is pooled).

For the images (at the model's image size, as the model sees them): images per patient (mean,
SD, shares of 1, 2 and 3 or more), each image's mean intensity and contrast (SD of its pixels,
0-255), and the stored size (rows and columns, read from the headers of up to ``MAX_HEADERS``
images), each summarised as above. Nothing else: no value of one patient, no identifier, no path.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmark.export.fields import Float, Int, Str
from benchmark.export.limits import MAX_COLUMNS, BundleFormatError

MIN_PATIENTS = 5
QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)
MAX_HEADERS = 500          # image headers read for the stored sizes (a seeded sample beyond that)
MAX_LEVELS = 10_000        # levels listed for one categorical variable in shift_stats.json
FORMAT = 1


def summary(values) -> dict | None:
    """n, mean, sd and the window-mean quantiles of the finite ``values`` (None with fewer than ``MIN_PATIENTS``)."""
    v = np.sort(np.asarray(values, dtype=float))
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n < MIN_PATIENTS:
        return None
    out = {"n": n, "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if n > 1 else 0.0}
    if n >= 2 * MIN_PATIENTS:
        quantiles = {f"{q:.2f}": window_quantile(v, q) for q in QUANTILES}
        if all(math.isfinite(x) for x in quantiles.values()):
            out["quantiles"] = quantiles
    return out


def window_quantile(sorted_values: np.ndarray, q: float, width: int = MIN_PATIENTS) -> float:
    """The mean of the ``width`` sorted values centred on quantile ``q``'s rank (never one value alone).

    Evenly spaced values average to their middle one; when the mean equals (to 9 digits) a value held by
    fewer than ``MIN_PATIENTS`` patients, the window widens (up to ``2 * width``) until it does not, else NaN."""
    n = sorted_values.size
    centre = int(round(q * (n - 1)))
    for w in range(width, min(2 * width, n) + 1):
        start = min(max(centre - w // 2, 0), n - w)
        value = float(sorted_values[start:start + w].mean())
        tol = 1e-9 * max(1.0, abs(value))
        lo = np.searchsorted(sorted_values, value - tol, "left")
        hi = np.searchsorted(sorted_values, value + tol, "right")
        if hi - lo == 0 or hi - lo >= MIN_PATIENTS:
            return value
    return float("nan")


def _register_stats(register: pd.DataFrame, columns: list[dict]) -> list[dict]:
    out = []
    for col in columns:
        name = col["name"]
        if name not in register.columns:
            continue
        s = register[name]
        row = {"name": name, "kind": col["kind"], "missing": float(s.isna().mean())}
        if col["kind"] == "numeric":
            summ = summary(s.to_numpy(dtype=float))
            row["n"] = int(s.notna().sum())
            if summ is not None:
                row.update({k: v for k, v in summ.items() if k != "n"})
        else:
            counts = s.astype(object).where(s.notna(), None).dropna().map(str).value_counts()
            row["n"] = int(counts.sum())
            rare = int(counts[counts < MIN_PATIENTS].sum())
            shares = {str(k): int(c) for k, c in counts.items() if c >= MIN_PATIENTS}
            if rare:
                shares["other"] = shares.get("other", 0) + rare
            total = max(int(counts.sum()), 1)
            row["shares"] = {k: c / total for k, c in shares.items() if c >= MIN_PATIENTS}
        out.append(row)
    return out


def image_measures(cohort, size: int) -> dict[str, np.ndarray]:
    """Per image: mean intensity and contrast at ``size`` px; per patient: the number of images."""
    px = cohort.pixels(size)
    means, sds = np.empty(len(px)), np.empty(len(px))
    for start in range(0, len(px), 512):
        block = np.asarray(px[start:start + 512], dtype=np.float32).reshape(min(512, len(px) - start), -1)
        means[start:start + len(block)] = block.mean(1)
        sds[start:start + len(block)] = block.std(1)
    views = np.bincount(cohort.images["patient"].to_numpy(), minlength=cohort.n_patients)
    return {"intensity": means, "contrast": sds, "views": views[views > 0]}


def image_dims(paths: list[str], roots=(), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns stored in the headers of up to ``MAX_HEADERS`` of ``paths`` (unreadable ones skipped)."""
    from benchmark.data.dicom import image_kind
    from benchmark.data.safe_open import open_image

    paths = list(paths)
    if len(paths) > MAX_HEADERS:
        pick = np.sort(np.random.default_rng(seed).choice(len(paths), MAX_HEADERS, replace=False))
        paths = [paths[i] for i in pick]
    rows, cols = [], []
    for path in paths:
        try:
            with open_image(path, roots or None) as fh:
                if image_kind(path, fh) == "dicom":
                    import pydicom

                    ds = pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=["Rows", "Columns"], force=True)
                    r, c = int(ds.Rows), int(ds.Columns)
                else:
                    from PIL import Image

                    with Image.open(fh) as im:
                        c, r = im.size
        except Exception:  # noqa: BLE001 - a size we cannot read is left out of the summary
            continue
        rows.append(r)
        cols.append(c)
    return np.asarray(rows, dtype=float), np.asarray(cols, dtype=float)


def _views(views: np.ndarray) -> dict | None:
    out = summary(views)
    if out is None:
        return None
    out.pop("quantiles", None)
    shares = {"1": float(np.mean(views == 1)), "2": float(np.mean(views == 2)), "3+": float(np.mean(views >= 3))}
    out["shares"] = {k: v for k, v in shares.items() if v * views.size >= MIN_PATIENTS}
    return out


def development_stats(cohort, schema: dict) -> dict:
    """The aggregates of ``cohort`` (the data the model trained on) for the variables and images it reads."""
    out: dict = {"format": FORMAT, "min_patients": MIN_PATIENTS, "n_patients": int(cohort.n_patients),
                 "n_pos": int(np.sum(cohort.y == 1)), "register": [], "images": None}
    cols = (schema.get("register") or {}).get("columns") or []
    if cols and cohort.has_register:
        out["register"] = _register_stats(cohort.register, cols)
    img = schema.get("images")
    if img is not None and cohort.has_images:
        m = image_measures(cohort, int(img["size"]))
        rows, cols_ = image_dims(cohort.images["path"].tolist(), cohort.image_roots)
        out["images"] = {"size": int(img["size"]), "n_images": int(len(cohort.images)),
                         "views": _views(m["views"]), "intensity": summary(m["intensity"]),
                         "contrast": summary(m["contrast"]), "rows": summary(rows), "columns": summary(cols_)}
    return out


# ---------------------------------------------------------------- reading it back from a bundle

_NUM = Float(-1e300, 1e300)
_SHARE = Float(0.0, 1.0)
_COUNT = Int(0, 1 << 40)
_NAME = Str(256)


def _keys(node, allowed: set[str], where: str, required: set[str] = frozenset()) -> dict:
    if not isinstance(node, dict):
        raise BundleFormatError(f"{where}: expected an object")
    extra, missing = set(node) - allowed, set(required) - set(node)
    if extra or missing:
        odd = sorted(map(str, extra or missing))[0][:40]
        raise BundleFormatError(f"{where}: {'unexpected' if extra else 'missing'} key {odd!r}")
    return node


def _summary(node, where: str) -> dict | None:
    if node is None:
        return None
    _keys(node, {"n", "mean", "sd", "quantiles", "shares"}, where, {"n", "mean", "sd"})
    out = {"n": _COUNT.read(None, node["n"], f"{where}.n"), "mean": _NUM.read(None, node["mean"], f"{where}.mean"),
           "sd": Float(0.0, 1e300).read(None, node["sd"], f"{where}.sd")}
    if out["n"] < MIN_PATIENTS:
        raise BundleFormatError(f"{where}: a summary of fewer than {MIN_PATIENTS} patients")
    if "quantiles" in node:
        q = _keys(node["quantiles"], {f"{q:.2f}" for q in QUANTILES}, f"{where}.quantiles")
        out["quantiles"] = {k: _NUM.read(None, v, f"{where}.quantiles.{k}") for k, v in q.items()}
    if "shares" in node:
        sh = _keys(node["shares"], {"1", "2", "3+"}, f"{where}.shares")
        out["shares"] = {k: _SHARE.read(None, v, f"{where}.shares.{k}") for k, v in sh.items()}
    return out


def check_shift_stats(node) -> dict:
    """``shift_stats.json`` with every field read through a typed, bounded field (BundleFormatError otherwise)."""
    where = "shift_stats.json"
    _keys(node, {"format", "min_patients", "n_patients", "n_pos", "register", "images"}, where,
          {"format", "register", "images"})
    if node["format"] != FORMAT:
        raise BundleFormatError(f"{where}: format {str(node['format'])[:20]!r} is not {FORMAT}")
    out = {"format": FORMAT, "min_patients": Int(MIN_PATIENTS, 1 << 20).read(None, node.get("min_patients", MIN_PATIENTS),
                                                                              f"{where}.min_patients"),
           "n_patients": _COUNT.read(None, node.get("n_patients", 0), f"{where}.n_patients"),
           "n_pos": _COUNT.read(None, node.get("n_pos", 0), f"{where}.n_pos"), "register": [], "images": None}
    reg = node["register"]
    if not isinstance(reg, list) or len(reg) > MAX_COLUMNS:
        raise BundleFormatError(f"{where}: register is not a list of at most {MAX_COLUMNS:,} variables")
    for i, row in enumerate(reg):
        w = f"{where}: register[{i}]"
        _keys(row, {"name", "kind", "missing", "n", "mean", "sd", "quantiles", "shares"}, w, {"name", "kind", "missing", "n"})
        kind = Str(16, choices=("numeric", "categorical")).read(None, row["kind"], f"{w}.kind")
        item = {"name": _NAME.read(None, row["name"], f"{w}.name"), "kind": kind,
                "missing": _SHARE.read(None, row["missing"], f"{w}.missing"), "n": _COUNT.read(None, row["n"], f"{w}.n")}
        if kind == "numeric":
            if "mean" in row:
                item.update(_summary({k: row[k] for k in ("n", "mean", "sd", "quantiles") if k in row}, w))
            elif "quantiles" in row or "shares" in row:
                raise BundleFormatError(f"{w}: quantiles without a mean")
        else:
            shares = row.get("shares")
            if not isinstance(shares, dict) or len(shares) > MAX_LEVELS or "mean" in row:
                raise BundleFormatError(f"{w}.shares: not an object of at most {MAX_LEVELS:,} level shares")
            item["shares"] = {_NAME.read(None, k, f"{w}.shares key"): _SHARE.read(None, v, f"{w}.shares")
                              for k, v in shares.items()}
        out["register"].append(item)
    img = node["images"]
    if img is not None:
        _keys(img, {"size", "n_images", "views", "intensity", "contrast", "rows", "columns"}, f"{where}: images",
              {"size", "n_images"})
        out["images"] = {"size": Int(1, 1 << 16).read(None, img["size"], f"{where}: images.size"),
                         "n_images": _COUNT.read(None, img["n_images"], f"{where}: images.n_images")}
        for key in ("views", "intensity", "contrast", "rows", "columns"):
            out["images"][key] = _summary(img.get(key), f"{where}: images.{key}")
    return out

