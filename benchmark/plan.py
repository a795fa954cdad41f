"""Cost you can see before you pay it: the run plan's work, counted and priced, without training.

    python -m benchmark plan --suite all --profile quick                      # measures this CPU (cached)
    python -m benchmark plan --suite image --profile standard --device-profile h200
    python -m benchmark plan --suite all --profile standard --device-profile gpu   # measures this GPU (cached)

``build_cost_plan`` resolves the candidates, the cohort size after ``max_patients`` and the
profile's folds exactly as ``run`` does, then counts per candidate: work units, trials, fits
(trials x inner folds per unit; the bag reuses the best trial's models, so it adds no fit,
only prediction passes; ``refit_full`` adds one fit per unit) and the images seen in
training. A priced plan (``price``) turns that into seconds::

    plan = build_cost_plan(cfg, profile, cohort)
    costs = cpu_costs(plan) if device_profile == "cpu" else h200_costs(plan)
    priced = price(plan, costs)
    priced.total_s, priced.unit_s[("resnet18", 0, 1)]        # the run's and one unit's estimate

On several workers (``plan --workers N --gpus G --gpu-share S``, ``run --workers``) the run
takes its *makespan*: ``makespan`` simulates list scheduling of the run plan's units (a unit
waits for its ``needs``, holds one of N worker slots and, for a family that trains on the GPU,
S of one GPU) at the priced durations, and gives every unit's start and end, the critical
path and lower bounds::

    sched = priced.makespan(units, workers=8, gpus=8, gpu_share=0.25)
    sched.makespan, sched.speedup, sched.critical_s, sched.start[key], sched.end[key]

Epochs of a network fit: the candidate's ``fixed`` value; else the first trial (the
``start`` trial) takes its ``start`` value and later trials the space's upper bound (a
ceiling: the search draws lower values too); else the family default. Batch size: the start
trial's, and for later trials every batch size the space offers, priced at their mean
per-image cost (``_trial_batches``; the sampler draws them, and a smaller batch costs more
per image). The profile's epoch
cap applies, then its per-fit sample budget (``max_image_samples``: whole epochs, at least
one, as ``torch_train`` does). Register networks (the MLP) stop early on their own holdout,
so their measured fit time already holds their epochs.

Per-image costs: ``h200`` reads ``H200_IMAGES_PER_S`` (the harness's own loop measured on an
H200 at batch 64, 224 and 512 px), interpolated in pixel count between the two sizes and scaled
by pixel count outside them; an architecture not in the table takes the nearest one by
parameter count (the plan says so); an evaluation image costs ``EVAL_SHARE`` of a training
image; a batch b under 64 costs 64/b times as much per image (``h200_batch_factor``: the loop
is host-bound at 64; a model). ``cpu`` measures this machine (``calibrate``): a few training steps and one prediction
pass of each architecture with the harness's own ``timm_cnn`` code at the profile's image
size and the candidate's batch (and training steps at each other batch size its search may
draw), one fusion network against its backbone (the overhead every
neural fusion family gets), and one fit of each register family on a synthetic table of the
fit's size. Results are cached in ``cache_dir()/cost_calibration.json`` keyed by what they
depend on (architecture, size, batch, threads, device, torch version, ``LOOP_VERSION``), so ``run`` reuses them.
``gpu`` does the same on this machine's CUDA GPU (``GPU_CAL_STEPS`` timed steps); a GPU ``run``
prices with those figures once they are cached, else with the ``h200`` table. Register
families are measured on the CPU for the ``h200`` and ``gpu`` profiles too (they run on the CPU).

Under a profile's successive halving (``pruner``) a network trial is priced at its expected
share of full training (``pruning.halving_shares``), every trial at the epoch cap.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from benchmark.errors import UserError
from benchmark.paths import cache_dir
from benchmark.protocol import MODALITIES
from benchmark.search.pruning import EpochRungs, for_search, halving_shares, prunes_epochs

EVAL_SHARE = 0.25             # an evaluation image costs this share of a training image (h200 table; measured
                              # on an H200 after a warm-up pass: 0.14 resnet18, 0.24 convnext_nano, 0.22-0.38
                              # for two fusion networks)
HOLDOUT = 0.15                # share of a fit's training part held out for early stopping (preprocess)
CURVE_PASSES = 2              # learning-curve predictions at 25 % and 50 % of the budget (fold_runner)
LATE_FIT_S = 0.05             # a late-fusion fit on two columns (not measured)
CACHE_FILE = "cost_calibration.json"
CAL_STEPS = 3                 # timed training steps per architecture (after one warm-up epoch)
GPU_CAL_STEPS = 30            # the same on a GPU (--device-profile gpu), whose steps are milliseconds
LOOP_VERSION = 3              # part of every cache key: bump when the training loop's speed changes
                              # (2: channels_last on the CPU too; 3: cropped convolutions on small maps)

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


# ---- the plan: counts ---------------------------------------------------------------------------

@dataclass
class CandidatePlan:
    """What one candidate costs in work: counts per unit and over the run, and what prices it."""

    name: str
    modality: str
    family: str
    kind: str                     # cnn | fusion_net | embed | table | late
    arch: str | None
    batch: int | None
    units: int
    trials: int                   # per unit
    fits: int                     # per unit: trials x inner folds (+ 1 with refit_full)
    train_images: list[int]       # per fit of each trial (images seen in training), trial order
    trial_eval_images: list[int]  # per trial: images predicted by its K fits (inner-validation, holdout)
    bag_eval_images: int          # per unit: images the bag predicts (outer test, MC passes, curve, refit)
    fit_rows: int                 # patients in one fit's training part
    epoch_cap: int | None = None  # the profile's epoch cap for this candidate's networks
    epochs: list[int] = field(default_factory=list)   # per trial, after the caps
    # a warm-started fusion network takes the architecture of the fold's best image candidate,
    # unknown before the run: it is priced at the costliest of these (the run's image candidates)
    warm_archs: tuple[str, ...] = ()
    warm_source: str = ""         # best_image, or the image candidate it starts from in every fold
    # its family trains on the GPU (``uses_gpu``): on a GPU run a unit takes a share of a GPU
    on_gpu: bool = False
    # successive halving over epochs (profile ``pruner``): per trial, the expected share of its
    # full training (benchmark.search.pruning.halving_shares); empty: no trial is priced as pruned
    trial_shares: list[float] = field(default_factory=list)
    # networks: per trial, the batch sizes it may train at (``_trial_batches``: the start trial's,
    # then the space's choices), priced at their mean per-image cost; empty: every trial at ``batch``
    trial_batches: list[tuple[int, ...]] = field(default_factory=list)

    @property
    def images_seen(self) -> int:
        """Images seen in training over the whole run (every fit of every unit)."""
        return self.units * self.inner * sum(self.train_images) + self.units * self.refit_images

    inner: int = 1
    refit_images: int = 0


@dataclass
class CostPlan:
    profile: str
    n_patients: int
    images_per_patient: float
    outer: int
    inner: int
    repeats: int
    image_size: int
    candidates: list[CandidatePlan]
    unit_keys: dict[str, list[tuple[str, int, int]]]   # candidate -> the plan's unit keys


def _network_epochs(cand, fam_cls, trials: int, cap: int | None) -> list[int]:
    """Epochs per trial: fixed, else start (first trial) and the space's upper bound, else the default."""
    key = getattr(fam_cls, "epochs_param", "epochs")
    if key in cand.fixed:
        raw = [int(cand.fixed[key])] * trials
    else:
        spec = cand.space.get(key)
        high = None
        if spec is not None:
            high = max(spec["choices"]) if spec["type"] == "categorical" else int(spec["high"])
        default = int((fam_cls.defaults or {}).get(key) or 1)
        high = high if high is not None else default
        first = int(cand.start.get(key, high))
        raw = [first] + [high] * (trials - 1)
    return [min(e, cap) if cap else e for e in raw]


def uses_gpu(fam_cls) -> bool:
    """Whether a family's units take a GPU share on a GPU run: its ``trains_on_gpu`` flag where the
    family declares one, else every torch family (CNNs, the MLP, the fusion networks) and the
    embedding families (a frozen CNN encoder feeds their trees)."""
    from benchmark.candidates.fusion_embed import _EmbedTrees
    from benchmark.candidates.torch_family import TorchFamily

    flag = getattr(fam_cls, "trains_on_gpu", None)
    if flag is not None:
        return bool(flag)
    return isinstance(fam_cls, type) and issubclass(fam_cls, (TorchFamily, _EmbedTrees))


def _batch(cand, fam_cls) -> int:
    for src in (cand.fixed, cand.start):
        if "batch_size" in src:
            return int(src["batch_size"])
    return int((fam_cls.defaults or {}).get("batch_size") or 32)


def _trial_batches(cand, fam_cls, trials: int) -> list[tuple[int, ...]]:
    """Per trial, the batch sizes a network may train at: a fixed ``batch_size`` in every trial; else
    the start trial's, then the space's (categorical: its choices; a range: its two ends), which the
    sampler draws (uniformly in its random start-up trials); else the family default throughout."""
    first = _batch(cand, fam_cls)
    spec = None if "batch_size" in cand.fixed else cand.space.get("batch_size")
    later: tuple[int, ...] = (first,)
    if spec is not None:
        values = spec["choices"] if spec["type"] == "categorical" else (spec["low"], spec["high"])
        later = tuple(sorted({int(v) for v in values}))
    return [(first,)] + [later] * (trials - 1)


def build_cost_plan(cands: list, profile, n_patients: int, images_per_patient: float,
                    units: list | None = None) -> CostPlan:
    """Count every candidate's units, trials, fits and images (no training, no timing).

    ``units``: the run plan (``run_plan.build_plan``); when None the counts assume one unit per
    candidate x outer fold x repeat, which is what ``build_plan`` makes.
    """
    from benchmark.candidates.base import get_family
    from benchmark.candidates.fusion_embed import _EmbedTrees
    from benchmark.candidates.fusion_nets import NeuralFusion
    from benchmark.candidates.torch_family import ImageFamily, TorchFamily

    K, outer = profile.inner_folds, profile.outer_folds
    n_out_train = n_patients * (outer - 1) / outer
    n_fit = n_out_train * (K - 1) / K
    n_valid = n_out_train / K
    n_test = n_patients / outer
    ipp = images_per_patient
    keys: dict[str, list] = {}
    if units is not None:
        for u in units:
            keys.setdefault(u.candidate.name, []).append(u.key)
    out = []
    for cand in cands:
        fam = get_family(cand.family)
        trials = profile.trials_for(cand.modality)
        n_units = len(keys[cand.name]) if units is not None else outer * profile.repeats
        refit = profile.refits(cand.modality)
        if issubclass(fam, NeuralFusion):
            kind = "fusion_net"
        elif issubclass(fam, ImageFamily):
            kind = "cnn"
        elif issubclass(fam, _EmbedTrees):
            kind = "embed"
        elif cand.consumes:
            kind = "late"
        else:
            kind = "table"
        arch = None
        if kind in ("cnn", "fusion_net"):
            arch = cand.fixed.get("arch") or (fam.defaults or {}).get("arch")
        elif kind == "embed":
            arch = cand.fixed.get("encoder") or (fam.defaults or {}).get("encoder")
        train_images: list[int] = [0] * trials
        trial_eval: list[int] = [0] * trials
        epochs: list[int] = []
        eval_imgs = 0.0
        refit_images = 0
        cap = profile.epoch_cap(cand.modality, fam.uses_images)
        rungs = EpochRungs.of(profile.pruner, cap, K) if prunes_epochs(profile.pruner, cand, cap) else None
        searched = for_search(cand, profile.pruner, cap)
        shares: list[float] = []
        if rungs is not None and kind == "table":   # the MLP: its measured fit time, scaled by the expected share
            shares = list(halving_shares(trials, rungs, cap))
        if kind in ("cnn", "fusion_net"):
            part = 1 - HOLDOUT if kind == "fusion_net" else 1.0   # fusion nets hold out 15 % to stop early
            n_imgs = int(round(n_fit * ipp * part))
            epochs = _network_epochs(searched, fam, trials, profile.epoch_cap(cand.modality, True))
            if profile.max_image_samples:
                epochs = [max(1, min(e, profile.max_image_samples // max(n_imgs, 1))) for e in epochs]
            hold = n_fit * ipp * HOLDOUT if kind == "fusion_net" else 0.0
            # search: each fit predicts its inner-validation fold (+ its holdout every epoch)
            trial_eval = [int(round(K * (n_valid * ipp + hold * e))) for e in epochs]
            train_images = [e * n_imgs for e in epochs]
            if rungs is not None:   # a trial trains its share of K x epochs; each rung it reaches predicts a fold
                shares = list(halving_shares(trials, rungs, epochs[0]))
                n_rungs = len(rungs.steps())
                train_images = [int(round(t * f)) for t, f in zip(train_images, shares)]
                trial_eval = [int(round(m * f + n_rungs * f * n_valid * ipp)) for m, f in zip(trial_eval, shares)]
            # the bag: K members predict the outer test part (and MC passes), the curve re-predicts
            eval_imgs = K * n_test * ipp * (1 + profile.mc_passes) + K * CURVE_PASSES * n_valid * ipp
            if refit:
                refit_images = int(round(epochs[0] * n_out_train * ipp * part))
                eval_imgs += n_test * ipp
        out.append(CandidatePlan(
            name=cand.name, modality=cand.modality, family=cand.family, kind=kind, arch=arch,
            batch=_batch(cand, fam) if issubclass(fam, TorchFamily) else None, units=n_units, trials=trials,
            fits=trials * K + (1 if refit else 0), train_images=train_images,
            trial_eval_images=trial_eval, bag_eval_images=int(round(eval_imgs)),
            fit_rows=int(round(n_fit)), epoch_cap=cap, epochs=epochs, inner=K, refit_images=refit_images,
            on_gpu=uses_gpu(fam), trial_shares=shares,
            trial_batches=_trial_batches(searched, fam, trials) if kind in ("cnn", "fusion_net") else []))
    from benchmark.run.units import warm_start_role

    image_archs = tuple(dict.fromkeys(c.arch for c in out if c.kind == "cnn" and c.arch))
    arch_of = {c.name: c.arch for c in out if c.kind == "cnn" and c.arch}
    for c, cand in zip(out, cands):
        role = warm_start_role(cand) if c.kind == "fusion_net" else None
        c.warm_source = role or ""
        if role == "best_image" and image_archs:
            c.warm_archs = image_archs
        elif role in arch_of:   # a named source: its architecture in every fold
            c.warm_archs = (arch_of[role],)
    return CostPlan(profile=profile.name, n_patients=n_patients, images_per_patient=ipp, outer=outer, inner=K,
                    repeats=profile.repeats, image_size=profile.image_size, candidates=out, unit_keys=keys)


# ---- per-image and per-fit costs ----------------------------------------------------------------

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


def _image_archs(plan: CostPlan) -> dict[str, int]:
    """Architectures that train or embed images, with a typical batch (the largest asked)."""
    out: dict[str, int] = {}
    for c in plan.candidates:
        if c.arch and c.kind in ("cnn", "fusion_net", "embed"):
            out[c.arch] = max(out.get(c.arch, 0), c.batch or 64)
    return out


def _other_batches(plan: CostPlan) -> list[tuple[str, int]]:
    """(arch, batch) pairs a CNN's searched trials may train at besides the arch's typical batch."""
    typical = _image_archs(plan)
    pairs = {(c.arch, b) for c in plan.candidates if c.kind == "cnn" and c.arch
             for bs in c.trial_batches for b in bs if b != typical[c.arch]}
    return sorted(pairs)


# On an H200 the loop at batch 64 is bound by the host (kernel launches; 0.28-0.54 of the bare loop's
# images/s at batch 256), so a smaller batch takes about as long per step: a batch b < 64 is priced at
# 64/b times the per-image cost at 64 (a model, not measured); a larger one at the cost at 64 (no gain assumed).
H200_TABLE_BATCH = 64


def h200_batch_factor(batch: int) -> float:
    """Per-image cost at ``batch`` against the H200 table's batch (``H200_TABLE_BATCH``)."""
    return max(1.0, H200_TABLE_BATCH / max(1, batch))


def h200_costs(plan: CostPlan, *, measure_tables: bool = True, log: Callable[[str], None] = print) -> Costs:
    """Per-image costs from the H200 table; register fits measured on this CPU (cached)."""
    costs = Costs(source="H200 table (the harness's loop measured on an H200 at batch 64; eval = 1/4 of a training image); "
                         "register fits measured on this CPU")
    for arch in _image_archs(plan):
        r, note = h200_images_per_s(arch, plan.image_size)
        costs.train_s[arch], costs.eval_s[arch] = 1.0 / r, EVAL_SHARE / r
        if note:
            costs.notes.append(note)
    others = _other_batches(plan)
    for arch, b in others:
        costs.batch_train_s[(arch, b)] = costs.train_s[arch] * h200_batch_factor(b)
    if others:
        costs.notes.append(f"batch sizes other than {H200_TABLE_BATCH} are not in the H200 table: a batch b under "
                           f"{H200_TABLE_BATCH} is priced at {H200_TABLE_BATCH}/b times the per-image cost (the loop is "
                           f"host-bound at {H200_TABLE_BATCH}, so a step takes about as long), a larger one at the cost "
                           f"at {H200_TABLE_BATCH}; a model, not measured")
    if measure_tables:
        _table_costs(plan, costs, log)
        _note_busy(costs)
    return costs


# ---- calibration on this machine ---------------------------------------------------------------

def _cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def _load_cache() -> dict:
    try:
        return json.loads(_cache_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _store(key: str, value: dict) -> None:
    """Add one measurement to the cache (read again first: another process may have added some)."""
    path = _cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _load_cache()
    data[key] = value
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


BUSY_SHARE = 0.2   # other processes using this share of the machine's CPU during a calibration: said so


def _cpu_counters() -> tuple[float, float] | None:
    """(CPU seconds all processes have used, CPU seconds the machine has had) from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(v) - v[3] - v[4]) / hz, sum(v) / hz


class others_share:
    """The share of the machine's CPU that other processes used during the block (``share``; None
    where /proc/stat is missing): what this process used itself is taken off the machine's busy time.

    On the 2-core machine: 0.007 while nothing else ran, 0.33 beside one busy-looping process.
    """

    share: float | None = None

    def __enter__(self):
        self._start, self._mine = _cpu_counters(), sum(os.times()[:2])
        return self

    def __exit__(self, *exc) -> None:
        end = _cpu_counters()
        if self._start is None or end is None or end[1] <= self._start[1]:
            return
        mine = sum(os.times()[:2]) - self._mine
        self.share = max(0.0, (end[0] - self._start[0] - mine) / (end[1] - self._start[1]))


def _measure(key: str, cache: dict, fn: Callable[[], dict]) -> dict:
    """``fn()``'s measurement, with the other processes' CPU share beside it, stored in the cache."""
    with others_share() as busy:
        value = fn()
    if busy.share is not None:
        value["others"] = round(busy.share, 3)
    _store(key, value)
    cache[key] = value
    return value


def _note_busy(costs: Costs) -> None:
    """A note when a cost in use was measured while other processes took a fair share of the CPU."""
    worst = max(costs.others, default=0.0)
    if worst >= BUSY_SHARE:
        costs.notes.append(f"some costs were measured while other processes used {worst:.0%} of this machine's CPU: "
                           f"estimates may be too long; `plan --recalibrate` on an otherwise idle machine measures again")


_THREADS: int | None = None   # the CPU threads a fit is priced at (None: every core; ``fit_threads``)


def _threads() -> int:
    return _THREADS or os.cpu_count() or 1


class fit_threads:
    """Price (and calibrate) CPU fits at ``n`` threads inside the block, as ``run --threads n``
    (``--workers``) runs them; calibrations are cached per thread count."""

    def __init__(self, n: int | None) -> None:
        self.n, self.old = n, None

    def __enter__(self):
        global _THREADS
        self.old, _THREADS = _THREADS, self.n
        return self

    def __exit__(self, *exc) -> None:
        global _THREADS
        _THREADS = self.old


def _torch_key(device: str) -> str:
    import torch

    return f"{_threads()}t|{device}|torch{torch.__version__}|loop{LOOP_VERSION}|{_omp_wait()}"


def _omp_wait() -> str:
    """How OpenMP threads wait (``benchmark/__init__.py``): a CPU cost measured with one setting
    does not hold for another (2 threads passive vs a short spin: up to 1.8x)."""
    return "omp:" + ",".join(os.environ.get(k, "-") for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"))


def image_key(arch: str, size: int, batch: int, device: str = "cpu", kind: str = "cnn") -> str:
    return f"{kind}|{arch}|{size}px|b{batch}|{_torch_key(device)}"


def _synthetic_images(n: int, size: int, seed: int = 0):
    from benchmark.data.cohort import PatientData

    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(np.int64)
    y[:2] = [0, 1]
    reg = pd.DataFrame(rng.normal(size=(n, 8)), columns=[f"v{i}" for i in range(8)])
    return PatientData(patients=np.arange(n), register=reg,
                       images=rng.integers(0, 256, (n, size, size), dtype=np.uint8),
                       image_owner=np.arange(n), y=y)


def measure_image(arch: str, size: int, batch: int, *, family: str = "timm_cnn", steps: int = CAL_STEPS,
                  device: str = "cpu") -> dict:
    """Seconds per training image (the second of two epochs of ``steps`` batches) and per predicted image
    (on a GPU the second of two prediction passes: the first autotunes the new batch shape)."""
    from benchmark.candidates.base import TrialContext, get_family

    n = batch * steps
    data = _synthetic_images(n, size)
    ctx = TrialContext(device=device, seed=0, max_epochs=2, image_size=size, extra={"n_threads": _threads()})
    params = dict(arch=arch, pretrained=False, batch_size=batch, epochs=2, patience=None)
    fam = get_family(family)(**params)
    t0 = time.perf_counter()
    fam.fit(data, data if family != "timm_cnn" else None, ctx)   # fusion nets: no holdout split of a tiny set
    epoch = fam.history_[-1]
    if device != "cpu":   # a GPU's first pass at a new batch shape autotunes its kernels: time the second
        fam.predict_proba(data)
    t1 = time.perf_counter()
    fam.predict_proba(data)
    t_eval = time.perf_counter() - t1
    return {"train_s": epoch["train_s"] / max(1, epoch["samples"]), "eval_s": t_eval / n,
            "measured_s": round(time.perf_counter() - t0, 2)}


def _synthetic_table(rows: int, cols: int, prevalence: float, seed: int = 0):
    """A register-like table (numeric, 10 % missing, two planted columns) of the fit's size."""
    from benchmark.data.cohort import PatientData

    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < prevalence).astype(np.int64)
    y[:4] = [0, 1, 0, 1]
    x = rng.normal(size=(rows, cols)).astype(np.float32)
    x[:, 0] += 1.5 * y
    x[:, 1] -= y
    x[rng.random((rows, cols)) < 0.1] = np.nan
    x[:, 0] = np.nan_to_num(x[:, 0])
    reg = pd.DataFrame(x, columns=[f"v{i}" for i in range(cols)])
    return PatientData(patients=np.arange(rows), register=reg, images=None, image_owner=None, y=y)


def table_key(plan_c: CandidatePlan, cols: int, params: dict) -> str:
    import zlib

    h = zlib.crc32(json.dumps(params, sort_keys=True, default=str).encode())
    return (f"fit|{plan_c.name}|{plan_c.family}|{plan_c.fit_rows}x{cols}|e{plan_c.epoch_cap}|{h:08x}|"
            f"{_torch_key('cpu')}|{_TABLE_SHAPE['tag']}")


def _table_params(cand) -> tuple[str, dict]:
    """(family to fit, params): the candidate's fixed + start; an embed family's own tree family."""
    from benchmark.candidates.base import get_family
    from benchmark.candidates.fusion_embed import _EmbedTrees

    params = {**cand.fixed, **cand.start}
    family = cand.family
    if issubclass(get_family(family), _EmbedTrees):
        family = family.removeprefix("embed_")
        params = {k: v for k, v in params.items() if k not in ("n_components", "encoder", "pretrained")}
    return family, params


def calibration_table(rows: int, cols: int, prevalence: float = 0.2, cohort=None, extra_cols: int = 0):
    """The table a register fit is timed on: ``rows`` patients of ``cohort`` (the run's own
    register data and labels, a seeded stratified sample) when given, else a synthetic table of
    ``cols`` columns; ``extra_cols`` random columns stand in for an embedding family's features.

    The cohort's own rows, because an iterative model's cost follows the data: with early
    stopping, boosted trees on a synthetic table ran 3-4x longer than on the default cohort
    (xgboost 0.78 s against 0.25 s a fit, lightgbm 0.42 against 0.11; 2225 x 324, 2 cores).
    """
    from benchmark.data.splits import stratified_subsample

    if cohort is None:
        return _synthetic_table(rows, cols + extra_cols, prevalence)
    data = cohort.view(stratified_subsample(cohort.y, rows, seed=0), labels=True)
    if extra_cols:
        rng = np.random.default_rng(0)
        extra = pd.DataFrame(rng.normal(size=(len(data), extra_cols)).astype(np.float32),
                             columns=[f"_calibration_embedding_{i}" for i in range(extra_cols)])
        data = replace(data, register=pd.concat([data.register, extra], axis=1))
    return data


def measure_table_fit(family: str, params: dict, rows: int, cols: int, prevalence: float = 0.2,
                      epoch_cap: int | None = None, data=None) -> dict:
    """Seconds of one fit (and one prediction of a fifth as many rows) on ``data`` (a part with
    register data and labels; ``calibration_table``), else on a synthetic ``rows`` x ``cols`` table."""
    from benchmark.candidates.base import TrialContext, get_family

    from benchmark.candidates.torch_family import TorchFamily

    data = data if data is not None else _synthetic_table(rows, cols, prevalence)
    rows = len(data)
    ctx = TrialContext(device="cpu", seed=0, max_epochs=epoch_cap, extra={"n_jobs": _threads(), "n_threads": _threads()})
    if issubclass(get_family(family), TorchFamily):   # torch's first use in a process is slow: not a fit's cost
        small = _synthetic_table(32, cols, 0.5)
        get_family(family)(**params).fit(small, None, replace(ctx, max_epochs=1))
    t0 = time.perf_counter()
    model = get_family(family)(**params).fit(data, None, ctx)
    model.predict_proba(data.subset(np.arange(max(2, rows // 5))))
    return {"fit_s": time.perf_counter() - t0}


# set by build_costs' caller (``plan_for_run``): cohort facts the table calibration needs;
# ``cohort`` the run's cohort when it has labelled register data (None: a synthetic table),
# ``tag`` what the cache key records of it (the dataset's fingerprint and size, never a value)
_TABLE_SHAPE: dict = {"cols": 64, "prevalence": 0.2, "cands": {}, "cohort": None, "tag": "synthetic"}


def _table_costs(plan: CostPlan, costs: Costs, log: Callable[[str], None]) -> None:
    cache = _load_cache()
    cols, prev = _TABLE_SHAPE["cols"], _TABLE_SHAPE["prevalence"]
    for c in plan.candidates:
        if c.kind not in ("table", "embed"):
            continue
        cand = _TABLE_SHAPE["cands"].get(c.name)
        if cand is None:
            continue
        family, params = _table_params(cand)
        if ":" in family:   # a user's family from another package: not fitted behind the user's back
            costs.notes.append(f"{c.name}: a family from outside the harness ({family}) is not measured; priced at 0 s")
            costs.fit_s[c.name] = 0.0
            continue
        extra = 8 if c.kind == "embed" else 0
        key = table_key(c, cols + extra, params)
        if key not in cache:
            real = _TABLE_SHAPE["cohort"]
            what = (f"{min(c.fit_rows, real.n_patients)} patients of the cohort's register data" if real is not None
                    else f"a {c.fit_rows} x {cols} synthetic table")
            log(f"  calibrating {c.name}: one fit on {what} ...")
            t0 = time.perf_counter()
            try:
                table = calibration_table(c.fit_rows, cols, prev, real, extra)
                _measure(key, cache, lambda: measure_table_fit(family, params, c.fit_rows, cols + extra, prev,
                                                               c.epoch_cap, data=table))
            except (KeyboardInterrupt, UserError):
                raise
            except Exception as exc:   # a family that cannot fit a synthetic table: priced as free, said so
                costs.notes.append(f"{c.name}: not measured ({type(exc).__name__}: {str(exc)[:80]}); priced at 0 s")
                costs.fit_s[c.name] = 0.0
                continue
            costs.calibration_s += time.perf_counter() - t0
        costs.fit_s[c.name] = float(cache[key]["fit_s"])
        costs.others.append(float(cache[key].get("others", 0.0)))


def cpu_costs(plan: CostPlan, *, log: Callable[[str], None] = print, device: str = "cpu") -> Costs:
    """Measure (or read from the cache) this machine's costs for every architecture and family of the plan.

    ``device="cuda"`` (``--device-profile gpu``) times the networks on this machine's GPU
    (``GPU_CAL_STEPS`` steps: a GPU step is too short to time three); register families are
    always timed on the CPU, where they run.
    """
    import torch

    steps = GPU_CAL_STEPS if device == "cuda" else CAL_STEPS
    where = (f"cuda: {torch.cuda.get_device_name(0)}" if device == "cuda"
             else f"cpu, {_threads()} thread(s) per fit")
    costs = Costs(source=f"measured on this machine ({where}, torch {torch.__version__}); cached in {_cache_path()}")
    cache = _load_cache()
    archs = _image_archs(plan)
    size = plan.image_size

    def measured(arch: str, batch: int, why: str) -> dict:
        key = image_key(arch, size, batch, device)
        if key not in cache:
            log(f"  calibrating {arch} at {size} px, batch {batch} on {device} ({why}) ...")
            t0 = time.perf_counter()
            _measure(key, cache, lambda: measure_image(arch, size, batch, steps=steps, device=device))
            costs.calibration_s += time.perf_counter() - t0
        costs.others.append(float(cache[key].get("others", 0.0)))
        return cache[key]

    for arch, batch in archs.items():
        got = measured(arch, batch, f"{steps} training steps, one prediction pass")
        costs.train_s[arch], costs.eval_s[arch] = got["train_s"], got["eval_s"]
    for arch, batch in _other_batches(plan):   # the batch sizes a search draws besides the start's
        costs.batch_train_s[(arch, batch)] = measured(arch, batch, "a batch size its search draws")["train_s"]
    nets = [c for c in plan.candidates if c.kind == "fusion_net"]
    if nets:   # one fusion network against its backbone: the overhead of every neural fusion family
        c = nets[0]
        key = image_key(c.arch, size, c.batch or 64, device, kind=c.family)
        if key not in cache:
            log(f"  calibrating {c.family} ({c.arch} backbone) at {size} px on {device} ...")
            t0 = time.perf_counter()
            _measure(key, cache, lambda: measure_image(c.arch, size, c.batch or 64, family=c.family, steps=steps,
                                                       device=device))
            costs.calibration_s += time.perf_counter() - t0
        costs.others.append(float(cache[key].get("others", 0.0)))
        costs.fusion_overhead = max(1.0, cache[key]["train_s"] / costs.train_s[c.arch])
        costs.notes.append(f"neural fusion: {costs.fusion_overhead:.2f}x the image cost of its backbone "
                           f"(measured on {c.family})")
    _table_costs(plan, costs, log)
    _note_busy(costs)
    return costs


# ---- pricing -----------------------------------------------------------------------------------

@dataclass
class Priced:
    plan: CostPlan
    costs: Costs
    per_candidate: dict[str, dict]               # name -> trial_s, refit_s, unit_s, total_s
    unit_s: dict[tuple[str, int, int], tuple[float, float]]   # unit key -> (s per trial, s of the refit)
    schedule: "Schedule | None" = None           # run_estimate's makespan on several workers, when asked
    # warm-started fusion networks are priced at their costliest possible source (``warm_arch``):
    # (that architecture, the cheapest one, the total if every fold chose the cheapest); None: none
    warm_range: tuple[str, str, float] | None = None

    @property
    def total_s(self) -> float:
        return sum(v["total_s"] for v in self.per_candidate.values())

    def progress_costs(self) -> dict:
        """Unit key -> (seconds per trial, trials, seconds of the refit): ``progress.Progress``'s weights."""
        trials = {c.name: c.trials for c in self.plan.candidates}
        return {k: (t, trials[k[0]], r) for k, (t, r) in self.unit_s.items()}

    def warm_scale(self, candidate: str, arch: str | None) -> float | None:
        """For a warm-started fusion network priced at the costliest of the run's image architectures
        (``warm_arch``): the factor its cost takes once the fold's source is known to be ``arch``
        (None: not such a candidate, or ``arch`` not priced)."""
        c = next((c for c in self.plan.candidates if c.name == candidate), None)
        train = self.costs.train_s
        priced_at = None if c is None else warm_arch(c, self.costs)
        if priced_at is None or arch not in train or not train[priced_at] > 0:
            return None
        return train[arch] / train[priced_at]

    def unit_durations(self) -> dict[tuple[str, int, int], float]:
        """Unit key -> its estimated seconds in one process (trials x seconds per trial + the refit)."""
        return {k: t * n + r for k, (t, n, r) in self.progress_costs().items()}

    def gpu_units(self) -> set[tuple[str, int, int]]:
        """Keys of the units that use a GPU on a GPU run (``uses_gpu``: networks and image encoders)."""
        return {k for c in self.plan.candidates if c.on_gpu for k in _unit_keys(self.plan, c)}

    def makespan(self, units: list, workers: int = 1, gpus: int = 0, gpu_share: float = 1.0,
                 **kw) -> "Schedule":
        """``makespan`` of the run plan ``units`` at these durations (``kw``: ``util``, ``order``)."""
        return makespan(units, self.unit_durations(), workers, gpus, gpu_share, self.gpu_units().__contains__, **kw)

    def modality_s(self) -> dict[str, float]:
        out = {m: 0.0 for m in MODALITIES}
        for c in self.plan.candidates:
            out[c.modality] += self.per_candidate[c.name]["total_s"]
        return out


# The time a study spends between its trials' recorded durations (Optuna's ask/tell on SQLite,
# the sampler, the pruner's reads): 0.012-0.029 s a trial in `run --candidates lightgbm
# --profile standard` on 2 cores (unit wall time minus the trials' durations, over the trials;
# 0.21-0.30 s while every trial ended with a full garbage collection).
TRIAL_OVERHEAD_S = 0.02
UNIT_OVERHEAD_S = 1.0     # a unit's study set-up, views, calibration and part file (smoke run, 2 CPU cores)


def warm_arch(c: CandidatePlan, costs: Costs, pick=max) -> str | None:
    """The architecture a warm-started fusion network is priced at before its fold's image choice
    is made: the costliest of the run's image architectures (``warm_archs``), so the estimate
    does not promise less than the run may take; the runner re-prices each unit once its fold's
    choice is final (``Priced.warm_scale``). None: not warm-started, or an architecture unpriced.
    ``pick=min``: the cheapest (the other end of the range the plan prints)."""
    if not c.warm_archs or not all(a in costs.train_s and a in costs.eval_s for a in c.warm_archs):
        return None
    return pick(c.warm_archs, key=lambda a: (costs.train_s[a], costs.eval_s[a]))


def price(plan: CostPlan, costs: Costs, *, warm_pick=max) -> Priced:
    """Seconds per trial, per refit and in all for every candidate of ``plan`` at ``costs``
    (warm-started fusion networks at ``warm_pick`` of their possible sources; ``warm_arch``)."""
    per: dict[str, dict] = {}
    unit_s: dict = {}
    encoders_done: set = set()
    total_images = plan.n_patients * plan.images_per_patient
    for c in plan.candidates:
        refit_s, first_s = 0.0, 0.0
        if c.kind in ("cnn", "fusion_net"):
            over = costs.fusion_overhead if c.kind == "fusion_net" else 1.0
            arch = warm_arch(c, costs, warm_pick) or c.arch
            batches = c.trial_batches or [(c.batch or 64,)] * len(c.train_images)
            tr = [costs.train_at(arch, bs) * over for bs in batches]
            ev = costs.eval_s[arch] * over
            trial_list = [c.inner * n * t + m * ev + TRIAL_OVERHEAD_S
                          for n, m, t in zip(c.train_images, c.trial_eval_images, tr)]
            refit_s = c.bag_eval_images * ev + c.refit_images * tr[0]   # the refit priced at the start's batch
        elif c.kind == "embed":
            fit = costs.fit_s.get(c.name, 0.0)
            trial_list = [c.inner * fit + TRIAL_OVERHEAD_S] * c.trials
            if c.arch not in encoders_done:   # every image embedded once per run and encoder
                encoders_done.add(c.arch)
                first_s = total_images * costs.eval_s.get(c.arch, 0.0)
        elif c.kind == "late":
            trial_list = [c.inner * LATE_FIT_S + TRIAL_OVERHEAD_S] * c.trials
        else:
            fit = costs.fit_s.get(c.name, 0.0)
            shares = c.trial_shares or [1.0] * c.trials
            trial_list = [c.inner * fit * f + TRIAL_OVERHEAD_S for f in shares]
            refit_s = fit if c.fits > c.trials * c.inner else 0.0
        refit_s += UNIT_OVERHEAD_S
        trial_s = sum(trial_list) / max(1, len(trial_list))
        unit = sum(trial_list) + refit_s
        for i, k in enumerate(_unit_keys(plan, c)):
            extra = first_s / c.trials if i == 0 else 0.0
            unit_s[k] = (trial_s + extra, refit_s)
        per[c.name] = {"trial_s": trial_s, "refit_s": refit_s, "unit_s": unit, "total_s": unit * c.units + first_s}
    priced = Priced(plan, costs, per, unit_s)
    warm = [c for c in plan.candidates if warm_arch(c, costs) and len(c.warm_archs) > 1]
    if warm and warm_pick is max:
        high, low = warm_arch(warm[0], costs), warm_arch(warm[0], costs, min)
        if high != low:
            priced.warm_range = (high, low, price(plan, costs, warm_pick=min).total_s)
    return priced


def _unit_keys(plan: CostPlan, c: CandidatePlan) -> list:
    return plan.unit_keys.get(c.name) or [(c.name, 0, i) for i in range(c.units)]


# ---- the makespan on N workers and G GPUs -------------------------------------------------------

# k network units sharing one GPU each run at 1 / max(1, k * GPU_SHARE_UTIL) of their priced speed.
# Measured on an H200 (throughput --concurrent, resnet18 at 224 px, batch 64, separate processes):
# two fits at once ran at 4309 img/s each against 5982 alone, 1.44x in all, so util = 5982 / (2 x 4309).
# Four at once did not finish inside its time limit: the model's 1.44x for k >= 2 is unmeasured beyond 2.
# Larger models fill the GPU better and would gain less.
GPU_SHARE_UTIL = 0.694
SCHEDULE_ORDERS = ("critical", "longest", "plan")


@dataclass
class Schedule:
    """A simulated run of the plan on ``workers`` slots and ``gpus`` GPUs: start and end of every unit."""

    start: dict                   # unit key -> seconds from the run's start
    end: dict                     # unit key -> seconds
    gpu: dict                     # unit key -> the GPU it shares (None: no GPU)
    makespan: float               # the last end
    total_s: float                # the sum of the durations (the sequential run)
    critical_s: float             # the longest chain through ``needs``: no schedule is shorter
    critical_chain: list          # the keys of that chain, first to last
    workers: int
    gpus: int
    gpu_share: float
    util: float
    order: str

    @property
    def speedup(self) -> float:
        return self.total_s / self.makespan if self.makespan > 0 else 1.0

    @property
    def per_gpu(self) -> int:
        """Network units one GPU holds at once."""
        return int(1.0 / self.gpu_share + 1e-9) if self.gpus else 0

    gpu_total_s: float = 0.0      # the sum of the GPU units' durations (0 without GPUs)

    @property
    def gpu_bound(self) -> float:
        """The GPU units' work over the GPUs at their best throughput (k units at once, each at
        1 / max(1, k x util) speed); 0 without GPUs."""
        if not self.gpus or not self.gpu_total_s:
            return 0.0
        best = max(k / max(1.0, k * self.util) for k in range(1, self.per_gpu + 1))
        return self.gpu_total_s / (self.gpus * best)

    @property
    def lower_bound(self) -> float:
        """No schedule is shorter: the critical path, the total work over the worker slots, the GPU work over the GPUs."""
        return max(self.critical_s, self.total_s / self.workers, self.gpu_bound)


def critical_path(units: list, durations: dict) -> tuple[float, list]:
    """(seconds, keys) of the longest chain of ``units`` through their ``needs`` at ``durations``."""
    order, needs, _ = _graph(units)
    top: dict = {}
    before: dict = {}
    for k in order:
        prev = max(needs[k], key=lambda n: top[n], default=None)
        top[k] = float(durations.get(k, 0.0)) + (top[prev] if prev is not None else 0.0)
        before[k] = prev
    if not top:
        return 0.0, []
    k = max(order, key=lambda x: top[x])
    best, chain = top[k], []
    while k is not None:
        chain.append(k)
        k = before[k]
    return best, chain[::-1]


def _graph(units: list) -> tuple[list, dict, dict]:
    """(keys in a dependency order, needs per key, dependants per key); needs outside ``units`` are
    taken as met (reused or not part of this run). A cycle is an error."""
    keys = [u.key for u in units]
    present = set(keys)
    if len(present) != len(keys):
        raise ValueError("makespan: two units with one key")
    needs = {u.key: tuple(n for n in dict.fromkeys(u.needs) if n in present) for u in units}
    after: dict = {k: [] for k in keys}
    for k, ns in needs.items():
        for n in ns:
            after[n].append(k)
    left = {k: len(ns) for k, ns in needs.items()}
    order = [k for k in keys if not left[k]]
    for k in order:                      # Kahn's algorithm, plan order among the ready
        for s in after[k]:
            left[s] -= 1
            if not left[s]:
                order.append(s)
    if len(order) != len(keys):
        raise ValueError("makespan: the units' needs form a cycle")
    return order, needs, after


def makespan(units: list, durations: dict, workers: int = 1, gpus: int = 0, gpu_share: float = 1.0,
             is_gpu_unit=None, *, util: float = GPU_SHARE_UTIL, order: str = "critical") -> Schedule:
    """Simulate list scheduling of the run plan ``units`` (``run_plan.WorkUnit``s: ``key``, ``needs``).

    ``durations``: unit key -> seconds in one process, alone (``Priced.unit_durations``; a key
    missing: 0 s). A unit starts when every unit it ``needs`` has ended, a worker slot is free
    (``workers``: units at once, ``run --workers``) and, for a GPU unit (``is_gpu_unit(key)``)
    when ``gpus`` > 0, a GPU holds fewer than ``floor(1 / gpu_share)`` units: it takes the
    least-loaded such GPU. Without GPUs every unit runs on a worker slot at its priced speed
    (slots are assumed not to slow each other). ``k`` units sharing a GPU each run at
    ``1 / max(1, k * util)`` of their speed (``GPU_SHARE_UTIL``). A unit that must wait for a
    GPU lets the next ready unit take the free slot.

    ``order`` among the ready units: ``critical`` (default) the longest chain from the unit to the
    end of the plan first (its own duration plus its longest chain of dependants: inputs of a
    fusion unit go before an equally long unit nothing waits for), ``longest`` its own duration
    first, ``plan`` plan order; ties in plan order.
    """
    if workers < 1:
        raise ValueError(f"workers {workers}: at least 1")
    if gpus < 0:
        raise ValueError(f"gpus {gpus}: 0 or more")
    if gpus and not 0 < gpu_share <= 1:
        raise ValueError(f"gpu_share {gpu_share}: a share of one GPU, in (0, 1]")
    if util <= 0:
        raise ValueError(f"util {util}: positive")
    if order not in SCHEDULE_ORDERS:
        raise ValueError(f"order {order!r}: one of {', '.join(SCHEDULE_ORDERS)}")
    import heapq

    topo, needs, after = _graph(units)
    pos = {u.key: i for i, u in enumerate(units)}
    dur = {k: max(0.0, float(durations.get(k, 0.0))) for k in pos}
    test = is_gpu_unit if callable(is_gpu_unit) else (lambda k: is_gpu_unit is not None and k in is_gpu_unit)
    on_gpu_unit = {k: bool(gpus) and bool(test(k)) for k in pos}
    per_gpu = int(1.0 / gpu_share + 1e-9) if gpus else 0
    chain: dict = {}
    for k in reversed(topo):
        chain[k] = dur[k] + max((chain[s] for s in after[k]), default=0.0)
    rank = {"critical": lambda k: (-chain[k], pos[k]), "longest": lambda k: (-dur[k], pos[k]),
            "plan": lambda k: (pos[k],)}[order]

    start, end, gpu_of = {}, {}, {}
    left_needs = {k: len(ns) for k, ns in needs.items()}
    ready = [(rank(k), k) for k in pos if not left_needs[k]]
    heapq.heapify(ready)
    remaining = dict(dur)
    running: dict = {}                   # key -> GPU index or None
    load = [0] * gpus
    t = 0.0
    while ready or running:
        waiting = []
        while ready and len(running) < workers:
            item = heapq.heappop(ready)
            k = item[1]
            g = None
            if on_gpu_unit[k]:
                free = [i for i in range(gpus) if load[i] < per_gpu]
                if not free:
                    waiting.append(item)
                    continue
                g = min(free, key=lambda i: (load[i], i))
                load[g] += 1
            running[k], start[k], gpu_of[k] = g, t, g
        for item in waiting:
            heapq.heappush(ready, item)
        if not running:                  # cannot happen: a free GPU or slot always exists here
            raise RuntimeError("makespan: nothing can run")
        rate = {k: 1.0 if g is None else 1.0 / max(1.0, load[g] * util) for k, g in running.items()}
        first = min(running, key=lambda k: (remaining[k] / rate[k], pos[k]))
        dt = remaining[first] / rate[first]
        t += dt
        done = [first]
        for k in running:
            remaining[k] -= dt * rate[k]
            if k != first and remaining[k] <= 1e-9 * max(1.0, dur[k]):
                done.append(k)
        for k in done:
            remaining[k] = 0.0
            g = running.pop(k)
            if g is not None:
                load[g] -= 1
            end[k] = t
            for s in after[k]:
                left_needs[s] -= 1
                if not left_needs[s]:
                    heapq.heappush(ready, (rank(s), s))
    cp, cchain = critical_path(units, dur)
    return Schedule(start=start, end=end, gpu=gpu_of, makespan=max(end.values(), default=0.0),
                    total_s=sum(dur.values()), critical_s=cp, critical_chain=cchain, workers=workers,
                    gpus=gpus, gpu_share=gpu_share if gpus else 1.0, util=util, order=order,
                    gpu_total_s=sum(d for k, d in dur.items() if on_gpu_unit[k]))


def _unit_name(key) -> str:
    name, rep, fold = key
    return f"{name} r{rep} f{fold}"


def render_schedule(s: Schedule, device_profile: str | None = None) -> str:
    """The makespan lines of the printed plan: time on N workers / G GPUs, speed-up, the bounds and the model."""
    where = f"{s.workers} worker{'s' if s.workers != 1 else ''}"
    if s.gpus:
        share = (f"a GPU unit takes {s.gpu_share:g} of a GPU, up to {s.per_gpu} per GPU"
                 if s.per_gpu > 1 else "a GPU unit takes a whole GPU")
        where += f" and {s.gpus} GPU{'s' if s.gpus != 1 else ''} ({share})"
    else:
        where += ", no GPU"
    chain = " -> ".join(_unit_name(k) for k in s.critical_chain)
    bounds = f"the total over the workers {fmt_s(s.total_s / s.workers)}"
    if s.gpus:
        bounds += f", the GPU units' total over the GPUs {fmt_s(s.gpu_bound)}"
    lines = [f"  makespan on {where}: {fmt_s(s.makespan)}, a speed-up of {s.speedup:.1f}x over the sequential "
             f"{fmt_s(s.total_s)}",
             f"  critical path {fmt_s(s.critical_s)} ({chain})",
             f"  lower bound {fmt_s(s.lower_bound)} (no schedule is shorter: the critical path, {bounds})"]
    ordered = {"critical": "with the longest chain to the end first", "longest": "longest first",
               "plan": "in plan order"}[s.order]
    lines.append(f"  schedule model: list scheduling; a unit starts once the units it reads have ended, ready units "
                 f"{ordered}; every unit holds one worker and runs at its priced one-process speed (workers are "
                 f"assumed not to slow each other)")
    if s.gpus:
        lines.append(f"  GPU model: a GPU unit (its family trains on the GPU: the networks, embed_* encoders) also takes {s.gpu_share:g} of the "
                     f"least-loaded GPU with room; k units on one GPU each run at 1/max(1, k x {s.util:g}) of their speed"
                     + (" (no gain, no loss)" if s.util == 1.0 else
                        f" (two resnet18 fits at 224 px on an H200 ran at {1 / (2 * s.util):.2f}x each, "
                        f"{1 / s.util:.2f}x in all; more at once not measured)" if s.util == GPU_SHARE_UTIL else ""))
    if device_profile == "h200" and not s.gpus and s.workers > 1:
        lines.append("  note: GPU units are priced at H200 speed but no GPU is given (--gpus 0)")
    if device_profile == "cpu" and s.workers > 1:
        lines.append(f"  note: CPU costs were measured by one process on {_threads()} thread(s); {s.workers} workers "
                     f"sharing this machine's cores may run a little slower (two 1-thread training loops at once "
                     f"on 2 cores: 0-4 % slower per image, README)")
    if device_profile == "cpu" and s.gpus:
        lines.append("  note: GPU units are priced at this CPU's speed (device profile cpu); on a GPU they run faster")
    return "\n".join(lines)


# ---- from a run's settings -----------------------------------------------------------------------

def images_per_patient(cohort) -> float:
    if not cohort.has_images or cohort.n_patients == 0:
        return 0.0
    return float(len(cohort.images)) / cohort.n_patients


def plan_for_run(cands: list, profile, cohort, units: list) -> CostPlan:
    """The cost plan of a run whose cohort is already subsampled (``max_patients``) and planned."""
    reg = cohort.register
    cols = 64 if reg is None else max(1, reg.shape[1])
    real = reg is not None and getattr(cohort, "labelled", True) and len(np.unique(cohort.y)) == 2
    _TABLE_SHAPE.update(cols=cols, prevalence=float(np.mean(cohort.y)) if len(cohort.y) else 0.2,
                        cands={c.name: c for c in cands},
                        cohort=cohort if real else None,
                        tag=f"data:{_data_tag(cohort)}" if real else "synthetic")
    return build_cost_plan(cands, profile, cohort.n_patients, images_per_patient(cohort), units)


def _data_tag(cohort) -> str:
    """What identifies the register rows a table fit is timed on: the dataset's fingerprint and
    size, or (a cohort built in code, without one) a hash of the rows and labels."""
    import zlib

    if cohort.fingerprint:
        return f"{cohort.fingerprint}:{cohort.n_patients}"
    rows = int(pd.util.hash_pandas_object(cohort.register, index=False).sum()) & 0xFFFFFFFF
    return f"{zlib.crc32(np.asarray(cohort.y).tobytes(), rows):08x}:{cohort.n_patients}"


def missing_calibration(plan: CostPlan, device: str = "cpu") -> list[str]:
    """What a measured pricing of ``plan`` on ``device`` would have to measure now (nothing: all cached)."""
    cache = _load_cache()
    pairs = list(_image_archs(plan).items()) + _other_batches(plan)
    out = list(dict.fromkeys(a for a, b in pairs if image_key(a, plan.image_size, b, device) not in cache))
    nets = [c for c in plan.candidates if c.kind == "fusion_net"]
    if nets and image_key(nets[0].arch, plan.image_size, nets[0].batch or 64, device, kind=nets[0].family) not in cache:
        out.append(nets[0].family)
    for c in plan.candidates:
        cand = _TABLE_SHAPE["cands"].get(c.name)
        if c.kind in ("table", "embed") and cand is not None:
            family, params = _table_params(cand)
            if ":" not in family and table_key(c, _TABLE_SHAPE["cols"] + (8 if c.kind == "embed" else 0), params) not in cache:
                out.append(c.name)
    return out


def costs_for(plan: CostPlan, device_profile: str, log: Callable[[str], None] = print) -> Costs:
    if device_profile == "h200":
        return h200_costs(plan, log=log)
    if device_profile == "cpu":
        return cpu_costs(plan, log=log)
    if device_profile == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device-profile gpu measures this machine's GPU, but PyTorch sees no CUDA GPU; "
                            "use h200 (the stored H200 table) or cpu")
        return cpu_costs(plan, log=log, device="cuda")
    raise UserError(f"--device-profile {device_profile}: use cpu, gpu or h200")


def fmt_s(s: float) -> str:
    """``42s``, ``13m05s``, ``2h07m``, ``3d04h``."""
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _n(x: float) -> str:
    return f"{x:,.0f}" if x < 1e7 else f"{x:.2e}"


def render(priced: Priced, device_profile: str, *, per_candidate: bool = True) -> str:
    """The printed plan: a row per candidate (or per modality only), the total and where costs come from."""
    plan, costs = priced.plan, priced.costs
    lines = [f"plan: profile {plan.profile}, {plan.n_patients} patients ({plan.images_per_patient:.2f} images each), "
             f"{plan.outer} outer x {plan.inner} inner folds x {plan.repeats} repeat(s), {plan.image_size} px; "
             f"device profile {device_profile}"]
    if per_candidate:
        lines.append(f"  {'candidate':<16} {'modality':<9} {'units':>5} {'trials':>6} {'fits':>6} "
                     f"{'images seen':>13} {'est. time':>10}")
        for c in plan.candidates:
            p = priced.per_candidate[c.name]
            fits = c.units * c.fits
            lines.append(f"  {c.name:<16} {c.modality:<9} {c.units:>5} {c.units * c.trials:>6} {fits:>6} "
                         f"{_n(c.images_seen) if c.kind in ('cnn', 'fusion_net') else '-':>13} {fmt_s(p['total_s']):>10}")
    mod = priced.modality_s()
    lines.append("  by modality: " + ", ".join(f"{m} {fmt_s(s)}" for m, s in mod.items() if s > 0))
    lines.append(f"  estimated total: {fmt_s(priced.total_s)} (an estimate; bag predictions included, "
                 f"report and bootstrap not)")
    lines.append(f"  costs: {costs.source}")
    if priced.warm_range:
        high, low, low_s = priced.warm_range
        lines.append(f"  warm starts: the fusion networks start from each fold's best image model, priced here at the "
                     f"costliest, {high}; were {low} (the cheapest) best in every fold, the total would be "
                     f"{fmt_s(low_s)} (a run re-prices them once each fold's choice is made)")
    named = {c.warm_source: c.warm_archs[0] for c in plan.candidates if len(c.warm_archs) == 1
             and c.warm_source != "best_image"}
    for source, arch in named.items():
        who = [c.name for c in plan.candidates if c.warm_source == source]
        lines.append(f"  warm starts: {', '.join(who)} start{'' if len(who) > 1 else 's'} from "
                     f"{source}{'' if arch == source else f' ({arch})'} "
                     f"in every fold (warm_start_source), not from each fold's best image model")
    pruned = [c for c in plan.candidates if c.trial_shares]
    if pruned:
        lines.append("  pruner: successive halving over epochs for the networks; a trial is priced at its expected "
                     "share of full training (the pruner's rule replayed on random trial orders): "
                     + ", ".join(f"{c.name} {100 * float(np.mean(c.trial_shares)):.0f} %" for c in pruned))
    drawn = [c for c in plan.candidates if c.kind == "cnn" and c.arch in costs.train_s
             and len(c.trial_batches) > 1 and c.trial_batches[1] != c.trial_batches[0]]
    if drawn:
        lines.append("  batch sizes: a trial after the start draws its batch size from the space and is priced at the "
                     "mean per-image cost over its choices, against the start's batch: " + ", ".join(
                         f"{c.name} ({'/'.join(map(str, c.trial_batches[1]))} vs {c.trial_batches[0][0]}) "
                         f"{costs.train_at(c.arch, c.trial_batches[1]) / costs.train_at(c.arch, c.trial_batches[0]):.2f}x"
                         for c in drawn))
    for note in costs.notes:
        lines.append(f"  note: {note}")
    if costs.calibration_s:
        lines.append(f"  calibration took {costs.calibration_s:.0f}s (cached for next time)")
    return "\n".join(lines)


# ---- CLI --------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="all", help="suite to plan (register, image, fusion, all, or your own)")
    p.add_argument("--candidates", default=None, help="comma-separated candidate names (instead of --suite)")
    p.add_argument("--data", default=None, metavar="DATASET.yaml", help="dataset file (default: the synthetic cohort)")
    p.add_argument("--profile", default=None, help="budget profile (default: quick on CPU, standard on GPU)")
    p.add_argument("--spaces", action="append", default=[], metavar="DIR", help="extra folder of candidate files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device-profile", default=None, choices=["cpu", "gpu", "h200"],
                   help="per-image costs: cpu measures this machine's CPU (cached), gpu its CUDA GPU (cached), h200 "
                        "reads the stored H200 table (default: h200 with a CUDA GPU, else cpu)")
    p.add_argument("--recalibrate", action="store_true",
                   help="forget this machine's cached costs and measure again (do it on an otherwise idle machine: "
                        "costs measured under load make every later estimate too long)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="also predict the makespan with N units at once (run --workers N); default 1")
    p.add_argument("--gpus", type=int, default=None, metavar="G",
                   help="GPUs for the makespan (default: 1 with --device-profile h200, 0 with cpu)")
    p.add_argument("--gpu-share", type=float, default=1.0, metavar="S",
                   help="share of a GPU one GPU unit (a network, an image encoder) takes: 1/S of them share a GPU; default 1.0")


def command(args: argparse.Namespace) -> int:
    from benchmark.data.splits import outer_folds
    from benchmark.run.folder import RunConfig, threads_per_fit
    from benchmark.run.units import build_plan, default_profile, load_run_cohort, pick_device, resolve_candidates
    from benchmark.search.spaces import get_profile

    device = pick_device("auto")
    dp = args.device_profile or ("h200" if device == "cuda" else "cpu")
    gpus = args.gpus if args.gpus is not None else (1 if dp in ("h200", "gpu") else 0)
    _check_scale(args.workers, gpus, args.gpu_share)
    cfg = RunConfig(suite=args.suite, candidates=args.candidates.split(",") if args.candidates else None,
                    data=args.data, profile=args.profile or default_profile(device), spaces=args.spaces,
                    seed=args.seed, workers=args.workers if args.workers > 1 else None)
    profile = get_profile(cfg.profile, cfg.spaces)
    cands, _ = resolve_candidates(cfg, profile)
    if args.recalibrate:
        _cache_path().unlink(missing_ok=True)
    cohort, _ = load_run_cohort(cfg, profile)
    folds = outer_folds(cohort.y, n_folds=profile.outer_folds, repeats=profile.repeats, seed=cfg.seed)
    units = build_plan(cands, folds)
    plan = plan_for_run(cands, profile, cohort, units)
    with fit_threads(threads_per_fit(cfg)):   # as `run --workers N` runs its fits (1 thread each on 2 of 2 cores)
        costs = costs_for(plan, dp)
        priced = price(plan, costs)
        print(render(priced, dp))
        print(render_schedule(priced.makespan(units, args.workers, gpus, args.gpu_share), dp))
    return 0


def _check_scale(workers: int, gpus: int, gpu_share: float) -> None:
    if workers < 1:
        raise UserError(f"--workers {workers}: at least 1")
    if gpus < 0:
        raise UserError(f"--gpus {gpus}: 0 or more")
    if not 0 < gpu_share <= 1:
        raise UserError(f"--gpu-share {gpu_share}: a share of one GPU, more than 0 and at most 1 (0.25: four units per GPU)")


def run_estimate(cands: list, profile, cohort, units: list, device: str,
                 log: Callable[[str], None] = print, *, workers: int = 1, gpus: int = 0,
                 gpu_share: float = 1.0) -> Priced | None:
    """The estimate ``run`` prints first (per modality and in all); None when it would cost too long to price.

    With ``workers`` > 1 it also prints the makespan on ``workers`` slots and ``gpus`` GPUs
    (``makespan``) and keeps it in the returned ``Priced.schedule``.

    A GPU run prices with the H200 table. A CPU run reuses the cached calibration; what is
    missing is measured now when the images are small (<= ``RUN_CALIBRATE_MAX_PX``: a few seconds
    per architecture); at larger sizes on the CPU ``run`` does not spend minutes measuring
    and says to run ``plan`` first, and the progress line falls back to counting trials.
    """
    plan = plan_for_run(cands, profile, cohort, units)
    dp = "cpu"
    if device == "cuda":   # this GPU's own costs once `plan --device-profile gpu` has measured them
        dp = "gpu" if _image_archs(plan) and not missing_calibration(plan, "cuda") else "h200"
    if dp == "cpu":
        missing = missing_calibration(plan)
        if missing and plan.image_size > RUN_CALIBRATE_MAX_PX and any(c.kind != "table" for c in plan.candidates):
            log(f"cost estimate: no cached calibration at {plan.image_size} px for {', '.join(missing)}; "
                f"run `python -m benchmark plan` with the same options first (it measures and caches); "
                f"progress counts trials meanwhile")
            return None
        if missing:
            log(f"cost estimate: calibrating {', '.join(missing)} on this machine once (cached for later runs) ...")
    priced = price(plan, costs_for(plan, dp, log=log))
    log(render(priced, dp, per_candidate=False).replace("plan:", "cost estimate:", 1))
    if workers > 1:
        priced.schedule = priced.makespan(units, workers, gpus, gpu_share)
        log(render_schedule(priced.schedule, dp))
    return priced


RUN_CALIBRATE_MAX_PX = 64
