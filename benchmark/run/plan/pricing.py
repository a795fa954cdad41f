"""Seconds per trial, per refit, per unit and per candidate: a counted plan at its costs.

    priced = price(plan, costs)
    priced.total_s, priced.per_candidate["resnet18"]["unit_s"], priced.unit_s[("resnet18", 0, 1)]
    priced.makespan(units, workers=8, gpus=8, gpu_share=0.25)      # on several workers (``schedule``)

A warm-started fusion network is priced at the costliest of the run's image architectures
(``warm_arch``); the runner re-prices its units once each fold's choice is made
(``Priced.warm_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.protocol import MODALITIES
from benchmark.run.plan.costs import Costs
from benchmark.run.plan.counts import CandidatePlan, CostPlan
from benchmark.run.plan.schedule import Schedule, makespan

LATE_FIT_S = 0.05             # a late-fusion fit on two columns (not measured)
# Register importance (explain_unit), measured with `permuted_scores` on an outer-test part of the default
# cohort (1391 patients, 324 columns, 2 shuffles, 2 members; 2 CPU cores): logistic regression 7.9 s and the
# MLP 10.1 s (4.4-5.6 us per patient row), XGBoost 6.1 s and LightGBM 3.1 s (their columns only);
# joint_concat on cached image features 0.056 s per shuffled table (3476 images at 32 px: ~16 us per image;
# 0.10-0.12 s while the machine was busy)
IMPORTANCE_ROW_S = 5e-6
IMPORTANCE_IMAGE_S = 2e-5


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
            # the refit and the half-budget fit priced at the start's batch
            refit_s = c.bag_eval_images * ev + (c.refit_images + c.half_images) * tr[0]
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
            refit_s = (fit if c.fits > c.trials * c.inner else 0.0) + fit * c.half_fits
        refit_s += UNIT_OVERHEAD_S + explain_s(c, plan, costs)
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


def explain_s(c: CandidatePlan, plan: CostPlan, costs: Costs) -> float:
    """Seconds of a unit's explanations: its register importance (shuffled tables, ``IMPORTANCE_*``; film's
    one network pass per table at the architecture's eval cost) and a fusion's two missing-image passes."""
    from benchmark.explain.permutation import SHUFFLES

    n_test = plan.n_patients / max(plan.outer, 1)
    images = n_test * plan.images_per_patient
    ev = costs.eval_s.get(c.arch, 0.0) * (costs.fusion_overhead if c.kind == "fusion_net" else 1.0)
    tables = plan.n_columns * SHUFFLES * c.predictor_models
    s = 0.0
    if c.importance == "shuffle":
        s = tables * (images * IMPORTANCE_IMAGE_S if c.kind == "fusion_net" else n_test * IMPORTANCE_ROW_S)
        s += c.predictor_models * images * ev if c.kind == "fusion_net" else 0.0   # the first, full pass
    elif c.importance == "full":
        s = tables * images * ev
    if c.missing_images and c.kind == "fusion_net":
        s += 3 * c.predictor_models * images * ev
    return s


def _unit_keys(plan: CostPlan, c: CandidatePlan) -> list:
    return plan.unit_keys.get(c.name) or [(c.name, 0, i) for i in range(c.units)]
