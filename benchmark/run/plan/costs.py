"""Per-image and per-fit costs (``Costs``), and the H200 table they may come from.

``h200`` (``--device-profile h200``) reads ``H200_IMAGES_PER_S`` (the harness's own loop measured
on an H200 at batch 64, 224 and 512 px), interpolated in pixel count between the two sizes and
scaled by pixel count outside them; an architecture not in the table takes the nearest one by
parameter count (the plan says so); an evaluation image costs ``EVAL_SHARE`` of a training
image; a batch b under 64 costs 64/b times as much per image (``h200_batch_factor``: the loop
is host-bound at 64; a model). ``cpu`` and ``gpu`` measure this machine instead (``calibrate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EVAL_SHARE = 0.25             # an evaluation image costs this share of a training image (h200 table; measured
                              # on an H200 after a warm-up pass: 0.14 resnet18, 0.24 convnext_nano, 0.22-0.38
                              # for two fusion networks)

# Training images per second of the harness's own loop (``timm_cnn``: bf16 autocast, channels_last, fused
# AdamW, augmentation at strength 1 on the GPU) on one H200 at batch 64, measured 2026-11-30 by
# benchmark/tools/device_check.sh (torch 2.11, timm 1.0.29): the throughput tool's 100-step epochs where it
# ran (resnet18 at 224 px: 5105 and 5856 in that day's two runs, here their mean), else the GPU
# calibration's 30-step epochs (efficientnet_b0, densenet121, convnext_nano at 224 px). At batch 64 the
# loop is host-bound: the bare loop of ../shared/device/README.md gives 13,253 img/s for resnet18 at batch
# 256, ours 6,859-7,793 at batch 64. Sizes not measured: the bare loop's 512 px figure x 0.95 (the harness
# ran at 0.93-0.97 of the bare loop at 512 px for both resnets); convnext_tiny: the bare figures, unmeasured.
H200_IMAGES_PER_S = {
    "resnet18": {224: 5480, 512: 2243},
    "resnet50": {224: 2555, 512: 876},
    "efficientnet_b0": {224: 1567, 512: 971},
    "densenet121": {224: 838, 512: 542},
    "convnext_nano": {224: 2191},
    "convnext_tiny": {224: 3063, 512: 608},
}

# Millions of parameters (timm, one input channel, one logit): the nearest-architecture fallback.
PARAMS_M = {"resnet18": 11.17, "resnet50": 23.5, "efficientnet_b0": 4.01, "convnext_tiny": 27.82,
            "densenet121": 6.95, "convnext_nano": 14.95, "test_resnet": 0.37}
FUSION_OVERHEAD_H200 = 1.1    # a fusion network's image cost against its backbone (H200, resnet18 at 224 px:
                              # joint_concat 0.97x, attention 1.20x; film and gated not measured)


@dataclass
class Costs:
    """Seconds per training image and per evaluation image by architecture, seconds per table fit."""

    source: str                                   # one line: where the figures come from
    train_s: dict[str, float] = field(default_factory=dict)     # arch -> s per training image
    eval_s: dict[str, float] = field(default_factory=dict)      # arch -> s per evaluated image
    fit_s: dict[str, float] = field(default_factory=dict)       # candidate -> s per fit (table, embed trees)
    fusion_overhead: float = FUSION_OVERHEAD_H200
    notes: list[str] = field(default_factory=list)
    calibration_s: float = 0.0                    # seconds spent measuring now (0: all cached)
    others: list[float] = field(default_factory=list)   # other processes' CPU share while each cost used was measured
    batch_train_s: dict[tuple[str, int], float] = field(default_factory=dict)   # (arch, batch) -> s per training image

    def train_at(self, arch: str, batches: tuple[int, ...]) -> float:
        """Mean seconds per training image of ``arch`` over ``batches`` (one not priced: the arch's own cost)."""
        return float(np.mean([self.batch_train_s.get((arch, b), self.train_s[arch]) for b in batches]))


def h200_images_per_s(arch: str, size: int) -> tuple[float, str | None]:
    """Training images/s of ``arch`` at ``size`` px on an H200, and a note when another arch stood in.

    Time per image is interpolated linearly in pixel count between the table's two sizes and
    scaled by pixel count outside them (one size only: scaled from it).
    """
    note = None
    if arch not in H200_IMAGES_PER_S:
        if arch in PARAMS_M:
            m = PARAMS_M[arch]
        else:
            import timm

            net = timm.create_model(arch, in_chans=1, num_classes=1)
            m = sum(p.numel() for p in net.parameters()) / 1e6
        near = min(H200_IMAGES_PER_S, key=lambda a: abs(PARAMS_M[a] - m))
        note = f"{arch} is not in the H200 table: priced as {near} (nearest by parameters, {PARAMS_M[near]:.1f} M vs {m:.1f} M)"
        arch = near
    pts = sorted((s * s, 1.0 / r) for s, r in H200_IMAGES_PER_S[arch].items())
    p = size * size
    if p <= pts[0][0]:
        t = pts[0][1] * p / pts[0][0]
    elif p >= pts[-1][0]:
        t = pts[-1][1] * p / pts[-1][0]
    else:
        (p0, t0), (p1, t1) = pts[0], pts[-1]
        t = t0 + (t1 - t0) * (p - p0) / (p1 - p0)
    return 1.0 / t, note


# On an H200 the loop at batch 64 is bound by the host (kernel launches; 0.28-0.54 of the bare loop's
# images/s at batch 256), so a smaller batch takes about as long per step: a batch b < 64 is priced at
# 64/b times the per-image cost at 64 (a model, not measured); a larger one at the cost at 64 (no gain assumed).
H200_TABLE_BATCH = 64


def h200_batch_factor(batch: int) -> float:
    """Per-image cost at ``batch`` against the H200 table's batch (``H200_TABLE_BATCH``)."""
    return max(1.0, H200_TABLE_BATCH / max(1, batch))
