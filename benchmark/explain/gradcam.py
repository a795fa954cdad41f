"""Grad-CAM maps of an image network (``timm_cnn``, or a fusion network's CNN) and their localisation.

Grad-CAM (Selvaraju et al. 2017): the feature maps A of one backbone stage, weighted per
channel by the mean gradient of the class score over the map, summed, ReLU, bilinearly
upsampled to the image and scaled to a maximum of 1. The class score is the logit for AFF
and minus the logit for NFF, so a map shows the evidence *for* the class asked about.

**The stage.** The last stage of a small-image CNN is too coarse to point anywhere (a
ResNet's last stage is 1 x 1 at 32 px and 2 x 2 at 64 px), so the map is taken at the
deepest stage whose map is at least ``MIN_GRID`` x ``MIN_GRID`` at the run's image size
(a ResNet at 224 px: its last stage, 7 x 7; at 64 px: the stride-8 stage, 8 x 8; at 32 px:
the stride-4 stage, 8 x 8), from the network's ``feature_info``::

    maps, grid, layer = gradcam_maps(family, view, signs)    # (images, S, S) in [0, 1]
    table = unit_saliency(pairs, cohort, fold, run_dir, "resnet18", seed=3)   # run --explain

A bag's map is the mean of its members' maps. ``unit_saliency`` writes each test patient's
maps and an overlay into the run's patient-data folder (``patient_data``) and, where the
cohort knows its sign regions, returns the localisation rows per class
(``evaluate.localisation``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

MIN_GRID = 7
BATCH = 64


def backbone_of(family) -> torch.nn.Module:
    """The timm CNN inside a fitted image family: ``timm_cnn``'s network or a fusion network's backbone."""
    net = family.model_
    return net.backbone if hasattr(net, "backbone") else net.net


def target_stage(backbone: torch.nn.Module, size: int, min_grid: int = MIN_GRID) -> tuple[torch.nn.Module, str, int]:
    """(module, its name, its map side at ``size``): the deepest stage whose map is at least ``min_grid`` wide."""
    info = [f for f in (getattr(backbone, "feature_info", None) or []) if f.get("module")]
    if not info:
        raise ValueError("the network has no feature_info to take a Grad-CAM stage from")
    sides = [(f, math.ceil(size / int(f["reduction"]))) for f in info]
    ok = [(f, s) for f, s in sides if s >= min_grid]
    f, side = ok[-1] if ok else sides[0]
    return backbone.get_submodule(f["module"]), str(f["module"]), int(side)


def gradcam_maps(family, data, signs: np.ndarray) -> tuple[np.ndarray, int, str]:
    """(maps of the images of ``data`` in its order (m, S, S), the map's grid, the stage's name).

    ``signs``: +1 (AFF) or -1 (NFF) per patient of ``data``: the class each map is for.
    """
    arrays, owner = family.samples(data)
    if "has_image" in arrays:
        is_image = np.asarray(arrays["has_image"], dtype=bool)
    else:
        is_image = np.ones(len(owner), dtype=bool)
    if len(owner) == 0 or not is_image.any():
        size = int(data.images.shape[-1]) if data.images is not None and data.images.ndim == 3 else 0
        return np.zeros((0, size, size), np.float32), 0, ""
    net = family.model_.eval()
    backbone = backbone_of(family)
    size = int(arrays["image"].shape[-1])
    stage, name, grid = target_stage(backbone, size)
    device = next(net.parameters()).device
    store: dict = {}
    handle = stage.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    signs = np.asarray(signs, dtype=np.float32)[np.asarray(owner)]
    out = np.zeros((len(owner), size, size), np.float32)
    from benchmark.candidates.torch_device import torch_threads

    try:
        with torch_threads(getattr(family, "n_threads_", None)), torch.enable_grad():
            for start in range(0, len(owner), BATCH):
                idx = np.arange(start, min(start + BATCH, len(owner)))
                batch = {k: torch.as_tensor(np.asarray(v)[idx]).to(device) for k, v in arrays.items()}
                batch = family.prepare(batch, None)
                batch["image"] = batch["image"].float().requires_grad_(True)
                logits = net(batch).reshape(-1).float()
                target = (torch.as_tensor(signs[idx], device=device) * logits).sum()
                act = store["a"]
                grad, = torch.autograd.grad(target, act)
                weights = grad.float().mean(dim=(2, 3), keepdim=True)
                cam = torch.relu((weights * act.float()).sum(dim=1, keepdim=True))
                cam = F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
                peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
                out[idx] = (cam / peak).detach().cpu().numpy()
    finally:
        handle.remove()
    return out[is_image], grid, name


def unit_saliency(pairs: list, cohort, fold, run_dir, name: str, seed: int) -> pd.DataFrame:
    """Maps of a unit's predictor for its outer-test images (towards each patient's own class), written as
    patient data; the localisation rows per class when the cohort has sign regions (else empty)."""
    from benchmark.data.truth import region_mask
    from benchmark.evaluate.localisation import class_rows, image_scores, random_map
    from benchmark.explain.patient_data import saliency_folder, write_patient_maps

    view = pairs[0][1]
    y = cohort.y[fold.test].astype(int)
    signs = np.where(y == 1, 1.0, -1.0)
    results = [gradcam_maps(m, v, signs) for m, v, _ in pairs]
    maps = np.mean([r[0] for r in results], axis=0)
    grid, layer = results[0][1], results[0][2]
    rows, owner = cohort.image_rows(fold.test)
    folder = saliency_folder(run_dir, name, fold.repeat)
    write_patient_maps(folder, cohort.keys[fold.test], owner, view.images, maps)
    if "regions" not in cohort.images.columns:
        return pd.DataFrame()
    regions = cohort.images["regions"].to_numpy()[rows]
    rng = np.random.default_rng([int(seed) & 0x7FFFFFFF, 97])
    size = maps.shape[-1]
    per_image = []
    for i, entry in enumerate(regions):
        mask = region_mask(entry, size)
        if mask is None:
            continue
        hit, share = image_scores(maps[i], mask)
        hit_r, share_r = image_scores(random_map(rng, max(grid, 1), size), mask)
        per_image.append({"patient": owner[i], "hit": hit, "share": share, "hit_random": hit_r,
                          "share_random": share_r, "area": float(mask.mean())})
    if not per_image:
        return pd.DataFrame()
    per = pd.DataFrame(per_image).groupby("patient").agg(
        hit=("hit", "mean"), share=("share", "mean"), hit_random=("hit_random", "mean"),
        share_random=("share_random", "mean"), area=("area", "mean"), n_images=("hit", "size")).reset_index()
    per["y"] = y[per["patient"].to_numpy()]
    table = class_rows(per)
    table["layer"], table["grid"], table["image_size"] = layer, grid, size
    return table
