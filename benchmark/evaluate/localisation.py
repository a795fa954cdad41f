"""Where a saliency map points, scored against known sign regions (synthetic cohorts).

Per image, for a non-negative map ``cam`` and the boolean mask of the image's sign regions
(``data.truth.region_mask``):

- **pointing game** (Zhang et al. 2016): a hit when the map's maximum (its first, in row
  order) lies inside a region;
- **share**: the map's mass inside the regions over its total mass;
- a map that is zero everywhere (Grad-CAM found no evidence for the class) points nowhere: a
  miss, and a share equal to the regions' area share (no better than uniform);
- the **random-map baseline**: the same scores for a map of uniform noise drawn on the
  saliency method's own grid and upsampled as it is (seeded), so it is as coarse as the map
  it stands beside; at random the share is close to the **area** share of the regions and
  the hit rate to the area share too.

A patient's scores are the means over their images; ``class_rows`` gives one row per class
(AFF, NFF) with the means over patients and their standard errors::

    hit, share = image_scores(cam, mask)
    rows = class_rows(per_patient_frame)          # cls, n_patients, hit, hit_se, share, ...
    summary_table(localisation_csv)               # pooled over folds, per candidate x class
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SCORES = ("hit", "share", "hit_random", "share_random", "area")


def image_scores(cam: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(pointing-game hit, share of the map inside ``mask``) of one map (module docstring)."""
    cam = np.asarray(cam, dtype=np.float64)
    total = float(cam.sum())
    if not total > 0:
        return 0.0, float(mask.mean())
    hit = float(mask.flat[int(np.argmax(cam))])
    return hit, float(cam[mask].sum() / total)


def random_map(rng: np.random.Generator, grid: int, size: int) -> np.ndarray:
    """Uniform noise on a ``grid`` x ``grid`` lattice, bilinearly upsampled to ``size`` (as a Grad-CAM map is)."""
    import torch
    import torch.nn.functional as F

    noise = torch.as_tensor(rng.random((1, 1, grid, grid)), dtype=torch.float32)
    return F.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()


def class_rows(per_patient: pd.DataFrame) -> pd.DataFrame:
    """Means over patients per class, with standard errors: ``per_patient`` has ``y`` and ``SCORES``."""
    rows = []
    for cls, name in ((1, "AFF"), (0, "NFF")):
        g = per_patient[per_patient["y"] == cls]
        if g.empty:
            continue
        row = {"cls": name, "n_patients": len(g), "n_images": int(g["n_images"].sum())}
        for s in SCORES:
            row[s] = float(g[s].mean())
            row[f"{s}_se"] = float(g[s].std(ddof=1) / np.sqrt(len(g))) if len(g) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table(loc: pd.DataFrame) -> pd.DataFrame:
    """``localisation.csv`` pooled over folds per candidate x class (means weighted by patients;
    standard errors combined as independent folds)."""
    out = []
    for (cand, cls), g in loc.groupby(["candidate", "cls"], sort=False):
        w = g["n_patients"].to_numpy(dtype=float)
        row = {"candidate": cand, "cls": cls, "n_patients": int(w.sum()), "n_images": int(g["n_images"].sum())}
        for s in SCORES:
            row[s] = float(np.average(g[s], weights=w))
            se = g.get(f"{s}_se")
            row[f"{s}_se"] = (float(np.sqrt(np.nansum((w / w.sum()) ** 2 * se.to_numpy(dtype=float) ** 2)))
                              if se is not None else float("nan"))
        out.append(row)
    return pd.DataFrame(out)
