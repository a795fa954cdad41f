"""The grey display pipeline shared by DICOM and Pillow images: VOI windowing, percentile window, box reduction.

    x = apply_voi_window(values, ds, bits)          # DICOM: VOI LUT, Window Center/Width, or a robust window
    x = percentile_window(values)                   # 0.5th..99.5th percentile -> [0, 1]
    small = box_reduce(array, 4)                    # (h, w[, c]) -> mean of each 4 x 4 block, float64

Windowing follows PS3.3 C.11.2.1.2/3 with output range [0, 1].
"""

from __future__ import annotations

import numpy as np

_PERCENTILES = (0.5, 99.5)


def box_reduce(arr, f: int) -> np.ndarray:
    """The mean of each ``f`` x ``f`` block of ``arr`` (the last, partial blocks over the pixels they have), as
    Pillow's ``Image.reduce``; ``arr`` unchanged when ``f`` is 1. ``arr``: a (h, w[, c]) array, or a Pillow
    image (read in strips of rows, so no full-size array of it is made). Works through strips of rows, so the
    float64 copies it makes are a few megabytes, never the full image's."""
    if f <= 1:
        return arr if not hasattr(arr, "getbands") else np.asarray(arr)
    pil = hasattr(arr, "getbands")
    w, h = arr.size if pil else (arr.shape[1], arr.shape[0])
    step = f * max(1, (8 << 20) // max(1, 8 * w * f))   # rows per strip: about 8 MB of float64
    cols = np.arange(0, w, f)
    parts = []
    for y0 in range(0, h, step):
        strip = np.asarray(arr.crop((0, y0, w, min(h, y0 + step)))) if pil else arr[y0:y0 + step]
        rows = np.add.reduceat(strip, np.arange(0, len(strip), f), axis=0, dtype=np.float64)
        parts.append(np.add.reduceat(rows, cols, axis=1))
    out = np.concatenate(parts)
    n_r, n_c = np.diff(np.append(np.arange(0, h, f), h)), np.diff(np.append(cols, w))
    counts = np.outer(n_r, n_c).astype(np.float64)
    return out / (counts[..., None] if out.ndim == 3 else counts)


def apply_voi_window(x: np.ndarray, ds, bits: int) -> np.ndarray:
    from pydicom.pixels import apply_voi

    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        xi = np.rint(x).astype(np.int64) if not np.issubdtype(x.dtype, np.integer) else x
        out = apply_voi(xi, ds, 0).astype(np.float64)
        n_entries, first_map = int(seq[0].LUTDescriptor[0]) or 2**16, int(seq[0].LUTDescriptor[1])
        lut = apply_voi(np.arange(first_map, first_map + n_entries, dtype=np.int64), ds, 0)
        lo, hi = float(np.min(lut)), float(np.max(lut))
        return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
    window = _first_window(ds)
    if window is not None:
        return _window(x.astype(np.float64), *window, str(ds.get("VOILUTFunction", "LINEAR")).strip().upper())
    rescaled = ds.get("ModalityLUTSequence") or (
        "RescaleSlope" in ds and (float(ds.RescaleSlope), float(ds.get("RescaleIntercept", 0))) != (1.0, 0.0)
    )
    if int(ds.get("PixelRepresentation", 0)) == 0 and bits <= 8 and not rescaled and np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float64) / float(2**bits - 1)
    return percentile_window(x)


def _first_window(ds) -> tuple[float, float] | None:
    c, w = _first_value(ds.get("WindowCenter")), _first_value(ds.get("WindowWidth"))
    if c is None or w is None or not (np.isfinite(c) and np.isfinite(w)) or w <= 0:
        return None
    return c, w


def _first_value(value) -> float | None:
    """The first value of a DS element that may hold one value or several."""
    if value is None:
        return None
    try:
        if isinstance(value, (str, bytes, float, int)):
            return float(value)
        return float(value[0]) if len(value) else None
    except (TypeError, ValueError, IndexError):
        return None


def _window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """VOI windowing of PS3.3 C.11.2.1.2/3 with output range [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    c, w = center - 0.5, width - 1.0  # LINEAR (the default)
    if w <= 0:
        return (x > c).astype(np.float64)
    return np.clip((x - c) / w + 0.5, 0.0, 1.0)


def percentile_window(x: np.ndarray) -> np.ndarray:
    """Map the 0.5th..99.5th percentile of ``x`` to [0, 1] (min-max for tiny images)."""
    x = np.asarray(x, dtype=np.float64)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.zeros_like(x)
    lo, hi = np.percentile(finite, _PERCENTILES) if finite.size >= 400 else (finite.min(), finite.max())
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)
