"""A cohort's ground truth for explanations (``truth:`` in the dataset file; synthetic cohorts only).

``synth`` writes ``truth.json`` (format: ``benchmark.data.synth_truth``); the loader reads it
into ``Cohort.truth`` (the register part: signal, weak, proxies, noise) and one entry per
cohort image (``Cohort.images["regions"]``: the image's size and its sign boxes, or None)::

    cohort = load_dataset("synth/dataset.yaml")
    cohort.truth["signal"][0]          # {"column": "bisfo", "sign": 1, "level": None, "effect": 0.07}
    mask = region_mask(cohort.images["regions"][0], size=32)   # (32, 32) bool, the boxes in the cached square

Real cohorts have no truth file; explanations are then reported without a recovery or
localisation score. Everything is checked once here (types, box bounds); a problem is one
line naming the file and the key.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MAX_BYTES = 512 * 2**20       # a truth file larger than this is refused unread
KINDS = ("signal", "weak")


def read_truth(path: Path, image_rel: list[str] | None, add_problem) -> tuple[dict | None, list | None]:
    """(register truth, one regions entry per image of ``image_rel``) from ``path``; (None, None) on a problem
    (``add_problem(message)`` told)."""
    if path.stat().st_size > MAX_BYTES:
        add_problem(f"{path}: larger than {MAX_BYTES >> 20} MiB; a truth file holds column names and boxes only")
        return None, None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        add_problem(f"{path}: not a JSON file ({type(exc).__name__}); write it with `python -m benchmark synth`")
        return None, None
    if not isinstance(doc, dict) or not str(doc.get("format", "")).startswith("aff-benchmark-truth/"):
        add_problem(f"{path}: no 'format: aff-benchmark-truth/1' key; this is not a truth file written by synth")
        return None, None
    register = _register(doc.get("register"), path, add_problem)
    regions = _regions(doc.get("images"), image_rel, path, add_problem)
    if register is False or regions is False:
        return None, None
    return register, regions


def _register(raw, path: Path, add_problem) -> dict | None | bool:
    if raw is None:
        return None
    where = f"{path}, key 'register'"
    if not isinstance(raw, dict):
        add_problem(f"{where}: expected a mapping of signal, weak, proxies and noise")
        return False
    out: dict = {"rule": str(raw.get("rule", "")), "risk": str(raw.get("risk", ""))}
    for kind in KINDS:
        entries = raw.get(kind, [])
        if not isinstance(entries, list):
            add_problem(f"{where}.{kind}: expected a list of {{column, sign, level, effect}}")
            return False
        out[kind] = []
        for e in entries:
            if not (isinstance(e, dict) and isinstance(e.get("column"), str) and e.get("sign") in (-1, 1)):
                add_problem(f"{where}.{kind}: each entry needs a column name and a sign of 1 or -1")
                return False
            level = e.get("level")
            effect = e.get("effect")
            out[kind].append({"column": e["column"], "sign": int(e["sign"]),
                              "level": None if level is None else str(level),
                              "effect": float(effect) if isinstance(effect, (int, float)) else None})
    proxies = raw.get("proxies", {})
    noise = raw.get("noise", [])
    if not (isinstance(proxies, dict) and all(isinstance(v, list) and all(isinstance(q, str) for q in v)
                                              for v in proxies.values())):
        add_problem(f"{where}.proxies: expected a mapping of column -> list of column names")
        return False
    if not (isinstance(noise, list) and all(isinstance(c, str) for c in noise)):
        add_problem(f"{where}.noise: expected a list of column names")
        return False
    out["proxies"] = {str(k): list(v) for k, v in proxies.items()}
    out["noise"] = list(noise)
    return out


def _regions(raw, image_rel: list[str] | None, path: Path, add_problem) -> list | None | bool:
    if raw is None or image_rel is None:
        return None
    files = raw.get("files") if isinstance(raw, dict) else None
    if not isinstance(files, dict):
        add_problem(f"{path}, key 'images.files': expected a mapping of image path -> {{size, boxes}}")
        return False
    out = []
    for rel in image_rel:
        entry = files.get(rel)
        if entry is None:
            out.append(None)
            continue
        size, boxes = entry.get("size") if isinstance(entry, dict) else None, entry.get("boxes", {})
        ok = (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
              and isinstance(boxes, dict))
        ok = ok and all(isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b)
                        and -0.01 <= b[0] <= b[2] <= 1.01 and -0.01 <= b[1] <= b[3] <= 1.01 for b in boxes.values())
        if not ok:
            add_problem(f"{path}, key 'images.files': the entry of one image is not {{size: [rows, cols], boxes: "
                        "{name: [x0, y0, x1, y1]}}} with fractions in [0, 1]")
            return False
        out.append({"size": (int(size[0]), int(size[1])),
                    "boxes": {str(k): tuple(float(v) for v in b) for k, b in boxes.items()}})
    return out


def region_mask(entry: dict | None, size: int, names: tuple[str, ...] | None = None) -> np.ndarray | None:
    """(size, size) bool: the image's sign boxes (``names``, default all) in the padded square the image
    cache makes of it (aspect kept, centred: ``image_cache.resize_square``); None without regions."""
    if not entry or not entry["boxes"]:
        return None
    h, w = entry["size"]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    top, left = (size - nh) // 2, (size - nw) // 2
    c = np.arange(size) + 0.5
    mask = np.zeros((size, size), dtype=bool)
    for name, (x0, y0, x1, y1) in entry["boxes"].items():
        if names is not None and name not in names:
            continue
        cols = (c >= left + x0 * nw) & (c <= left + x1 * nw)
        rows = (c >= top + y0 * nh) & (c <= top + y1 * nh)
        mask |= rows[:, None] & cols[None, :]
    return mask if mask.any() else None
