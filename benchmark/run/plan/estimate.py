"""The cost plan of a run from its settings, and the estimate ``run`` prints first.

    priced = run_estimate(cands, profile, cohort, units, device)     # None: too costly to price now
    priced.progress_costs()        # unit key -> (s per trial, trials, s of the refit): Progress's weights
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from benchmark.run.plan.calibrate import _TABLE_SHAPE, costs_for, missing_calibration
from benchmark.run.plan.counts import CostPlan, _image_archs, build_cost_plan
from benchmark.run.plan.pricing import Priced, price
from benchmark.run.plan.render import render, render_schedule

def images_per_patient(cohort) -> float:
    if not cohort.has_images or cohort.n_patients == 0:
        return 0.0
    return float(len(cohort.images)) / cohort.n_patients


def plan_for_run(cands: list, profile, cohort, units: list, *, importance: str = "auto",
                 device: str = "cpu") -> CostPlan:
    """The cost plan of a run whose cohort is already subsampled (``max_patients``) and planned
    (``importance``, ``device``: what its units' register importance runs)."""
    reg = cohort.register
    cols = 64 if reg is None else max(1, reg.shape[1])
    real = reg is not None and getattr(cohort, "labelled", True) and len(np.unique(cohort.y)) == 2
    _TABLE_SHAPE.update(cols=cols, prevalence=float(np.mean(cohort.y)) if len(cohort.y) else 0.2,
                        cands={c.name: c for c in cands},
                        cohort=cohort if real else None,
                        tag=f"data:{_data_tag(cohort)}" if real else "synthetic")
    return build_cost_plan(cands, profile, cohort.n_patients, images_per_patient(cohort), units,
                           n_columns=0 if reg is None else reg.shape[1], importance=importance, device=device)


def _data_tag(cohort) -> str:
    """What identifies the register rows a table fit is timed on: the dataset's fingerprint and
    size, or (a cohort built in code, without one) a hash of the rows and labels."""
    import zlib

    if cohort.fingerprint:
        return f"{cohort.fingerprint}:{cohort.n_patients}"
    rows = int(pd.util.hash_pandas_object(cohort.register, index=False).sum()) & 0xFFFFFFFF
    return f"{zlib.crc32(np.asarray(cohort.y).tobytes(), rows):08x}:{cohort.n_patients}"


def run_estimate(cands: list, profile, cohort, units: list, device: str,
                 log: Callable[[str], None] = print, *, workers: int = 1, gpus: int = 0,
                 gpu_share: float = 1.0, importance: str = "auto") -> Priced | None:
    """The estimate ``run`` prints first (per modality and in all); None when it would cost too long to price.

    With ``workers`` > 1 it also prints the makespan on ``workers`` slots and ``gpus`` GPUs
    (``makespan``) and keeps it in the returned ``Priced.schedule``.

    A GPU run prices with the H200 table. A CPU run reuses the cached calibration; what is
    missing is measured now when the images are small (<= ``RUN_CALIBRATE_MAX_PX``: a few seconds
    per architecture); at larger sizes on the CPU ``run`` does not spend minutes measuring
    and says to run ``plan`` first, and the progress line falls back to counting trials.
    """
    plan = plan_for_run(cands, profile, cohort, units, importance=importance, device=device)
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


LONG_RUN_S = 8 * 3600          # a working day: over it, a run picked without --profile says so
SHORTER = {"paper": "hour", "standard": "hour", "hour": "quick"}


def long_run_note(total_s: float, profile: str) -> str | None:
    """One line when a run whose profile was picked for the machine is estimated at over ``LONG_RUN_S``,
    naming the shorter choice; None otherwise.

        long_run_note(22 * 3600, "standard")   # 'note: the estimate is over 8 hours ... --profile hour ...'
    """
    if total_s <= LONG_RUN_S:
        return None
    from benchmark.run.plan.render import fmt_s

    shorter = SHORTER.get(profile)
    choice = (f"`--profile {shorter}` is the shorter choice (`python -m benchmark plan --profile {shorter}` prices it)"
              if shorter else "pass a smaller --profile (`python -m benchmark list` shows them)")
    return f"note: this run is estimated at {fmt_s(total_s)}, over {LONG_RUN_S // 3600} hours; {choice}"

