"""The plan's work, counted: units, trials, fits and images per candidate (no training, no timing).

    plan = build_cost_plan(cands, profile, n_patients, images_per_patient, units)
    plan.candidates[0].fits, plan.candidates[0].images_seen

Epochs of a network fit: the candidate's ``fixed`` value; else the first trial (the
``start`` trial) takes its ``start`` value and later trials the space's upper bound (a
ceiling: the search draws lower values too); else the family default. Batch size: the start
trial's, and for later trials every batch size the space offers, priced at their mean
per-image cost (``_trial_batches``; the sampler draws them, and a smaller batch costs more
per image). The profile's epoch
cap applies, then its per-fit sample budget (``max_image_samples``: whole epochs, at least
one, as ``torch_train`` does). Register networks (the MLP) stop early on their own holdout,
so their measured fit time already holds their epochs.

Under a profile's successive halving (``pruner``) a network trial is priced at its expected
share of full training (``pruning.halving_shares``), every trial at the epoch cap.

A network without early stopping that could fire (a CNN, a warm-started fusion network, a
network whose budget is within its patience) adds one fit at half the budget per unit (the
learning curve's ``bag._half_budget``: ``half_images`` or ``half_fits``) and its prediction of
one inner-validation fold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmark.search.pruning import EpochRungs, for_search, halving_shares, prunes_epochs

HOLDOUT = 0.15                # share of a fit's training part held out for early stopping (preprocess)
CURVE_PASSES = 2              # learning-curve predictions at 25 % and 50 % of the budget (fold_runner)


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
        return self.units * self.inner * sum(self.train_images) + self.units * (self.refit_images + self.half_images)

    inner: int = 1
    refit_images: int = 0
    # per unit: the learning curve's fit at half the budget (``bag._half_budget``) of a network without
    # early stopping that could fire: images it trains on (CNNs, fusion networks), or its share of a
    # measured fit (the MLP); its prediction of one inner-validation fold is in ``bag_eval_images``
    half_images: int = 0
    half_fits: float = 0.0
    # register importance of a unit (run --importance): "" none, "shuffle" (predictions of shuffled
    # tables, image features kept), "full" (film: a network pass per shuffled column); the
    # models it runs (1 with a refit, else the bag's K); missing: the fusion's missing-image passes
    importance: str = ""
    predictor_models: int = 1
    missing_images: bool = False


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
    n_columns: int = 0            # register columns (each shuffled by the importance)
    importance: str = "auto"      # the run's importance level (run --importance, or the profile's)


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


def _stops_early(cand, fam_cls, epochs: int, warm: bool) -> bool:
    """Whether a network's early stopping can fire: it has a holdout (not a CNN, not a warm-started
    fusion network) and a budget of more epochs than its patience (``TorchFamily.fit``)."""
    from benchmark.candidates.image import TimmCNN

    if warm or issubclass(fam_cls, TimmCNN):
        return False
    patience = next((src["patience"] for src in (cand.fixed, cand.start) if "patience" in src),
                    (fam_cls.defaults or {}).get("patience"))
    return bool(patience) and epochs > int(patience)


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
                    units: list | None = None, *, n_columns: int = 0, importance: str = "auto",
                    device: str = "cpu") -> CostPlan:
    """Count every candidate's units, trials, fits and images (no training, no timing).

    ``units``: the run plan (``units.build_plan``); when None the counts assume one unit per
    candidate x outer fold x repeat, which is what ``build_plan`` makes. ``n_columns``,
    ``importance`` and ``device``: what a unit's register importance runs (``explain_unit``).
    """
    from benchmark.candidates.base import get_family
    from benchmark.candidates.fusion_embed import _EmbedTrees
    from benchmark.candidates.fusion_nets import NeuralFusion
    from benchmark.candidates.torch_family import ImageFamily, TorchFamily
    from benchmark.run.units import warm_start_role

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
        half_images, half_fits = 0, 0.0
        if kind in ("cnn", "fusion_net"):
            warm = kind == "fusion_net" and warm_start_role(cand) is not None   # no holdout: fusion_nets.fit_parts
            held = kind == "fusion_net" and not warm
            part = 1 - HOLDOUT if held else 1.0   # a fusion net from its own init holds out 15 % to stop early
            n_imgs = int(round(n_fit * ipp * part))
            epochs = _network_epochs(searched, fam, trials, profile.epoch_cap(cand.modality, True))
            if profile.max_image_samples:
                epochs = [max(1, min(e, profile.max_image_samples // max(n_imgs, 1))) for e in epochs]
            hold = n_fit * ipp * HOLDOUT if held else 0.0
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
            if not _stops_early(searched, fam, epochs[0], warm):   # the half-budget fit, priced at the start's epochs
                half_images = int(round(0.5 * epochs[0] * n_imgs))
                eval_imgs += n_valid * ipp + 0.5 * epochs[0] * hold
        elif kind == "table" and issubclass(fam, TorchFamily):   # the MLP: its measured fit includes its epochs
            e = _network_epochs(searched, fam, 1, cap)[0]
            half_fits = 0.0 if _stops_early(searched, fam, e, False) else 0.5
        out.append(CandidatePlan(
            name=cand.name, modality=cand.modality, family=cand.family, kind=kind, arch=arch,
            batch=_batch(cand, fam) if issubclass(fam, TorchFamily) else None, units=n_units, trials=trials,
            fits=trials * K + (1 if refit else 0), train_images=train_images,
            trial_eval_images=trial_eval, bag_eval_images=int(round(eval_imgs)),
            fit_rows=int(round(n_fit)), epoch_cap=cap, epochs=epochs, inner=K, refit_images=refit_images,
            on_gpu=uses_gpu(fam), trial_shares=shares, half_images=half_images, half_fits=half_fits,
            trial_batches=_trial_batches(searched, fam, trials) if kind in ("cnn", "fusion_net") else [],
            importance=_importance_kind(cand, fam, kind, importance, device) if n_columns else "",
            predictor_models=1 if refit else K,
            missing_images=cand.modality == "fusion" and (fam.uses_images or kind == "late")))
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
                    repeats=profile.repeats, image_size=profile.image_size, candidates=out, unit_keys=keys,
                    n_columns=n_columns, importance=importance)


def _importance_kind(cand, fam, kind: str, importance: str, device: str) -> str:
    """How a unit's register importance runs (``CandidatePlan.importance``)."""
    from benchmark.candidates.fusion_nets import FiLMFamily
    from benchmark.explain.scorers import costly_to_shuffle

    if importance == "none" or cand.modality == "image" or (kind == "late" and not cand.consumes):
        return ""
    if costly_to_shuffle(fam, device, importance):   # the run's rule for leaving a unit's importance out
        return ""
    return "full" if issubclass(fam, FiLMFamily) else "shuffle"


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
