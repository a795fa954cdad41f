"""The folder that holds patient data: saliency maps are computed from individual radiographs.

A map shows where a network looked in one patient's image, and its overlay shows the image
itself: they are patient data and never go into the shareable report (``leaderboard.html``,
``findings.md`` and the CSV tables hold aggregates only, and the page links nothing here).
They are written under ``<run>/patient_data/`` (``predict --explain``: ``<out>/patient_data/``),
which holds a README.txt that says so; files are named by the run's patient key (``P00001``),
never by a source file name or an identifier::

    folder = saliency_folder(run_dir, "resnet18", repeat=0)   # <run>/patient_data/saliency/resnet18/r0
    write_patient_maps(folder, keys, owner, images, maps)     # P00001.npz (maps, images), P00001.png (overlay)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

README = """This folder holds PATIENT DATA.

The files here were computed from individual patients' radiographs: saliency maps (where a
network looked) and overlays that show the images themselves. Treat them like the images:
keep them where the images may be kept, and do not share them.

Files are named by the run's patient keys (P00001, ...), in the order of the dataset's
register rows; the key-to-patient mapping is the dataset itself. The shareable outputs
(leaderboard.html, findings.md and the CSV tables next to this folder) hold aggregate
numbers only and do not link here.

Each P<key>.npz holds `maps` (images x S x S, float16, each scaled to a maximum of 1) and
`images` (the model's input pixels, uint8); P<key>.png shows each image (left) beside its
map laid over it (right), one row per image.
"""
SCALE = 4   # the overlay's upscaling (small model inputs)


def patient_data_root(base: Path) -> Path:
    """``base/patient_data`` with its README.txt (created once; owner-only permissions)."""
    root = Path(base) / "patient_data"
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    readme = root / "README.txt"
    if not readme.exists():
        readme.write_text(README, encoding="utf-8")
    return root


def saliency_folder(base: Path, candidate: str, repeat: int) -> Path:
    folder = patient_data_root(base) / "saliency" / candidate / f"r{int(repeat)}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """(S, 2S, 3) uint8: the image, and the image with the map in red laid over it."""
    g = image.astype(np.float32) / 255.0
    left = np.repeat(g[..., None], 3, axis=2)
    right = left * 0.6
    right[..., 0] = np.clip(right[..., 0] + cam, 0, 1)
    right[..., 1] = np.clip(right[..., 1] + 0.3 * cam, 0, 1)
    return (np.concatenate([left, right], axis=1) * 255).astype(np.uint8)


def write_patient_maps(folder: Path, keys: np.ndarray, owner: np.ndarray, images: np.ndarray | None,
                       maps: np.ndarray) -> int:
    """One npz and one png per patient with images; returns the number of patients written."""
    from PIL import Image

    if images is None or len(maps) == 0:
        return 0
    owner = np.asarray(owner)
    n = 0
    for p in np.unique(owner):
        idx = np.flatnonzero(owner == p)
        key = str(keys[int(p)])
        np.savez_compressed(folder / f"{key}.npz", maps=maps[idx].astype(np.float16), images=images[idx])
        tiles = np.concatenate([_overlay(images[i], maps[i]) for i in idx], axis=0)
        im = Image.fromarray(tiles).resize((tiles.shape[1] * SCALE, tiles.shape[0] * SCALE), Image.NEAREST)
        im.save(folder / f"{key}.png")
        n += 1
    return n
