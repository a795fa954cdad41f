"""Timing one fit on this machine: a few training steps of an image network, one register fit.

``measure_image`` trains an architecture a few steps with the harness's own ``timm_cnn`` code
(or a fusion network) at the profile's image size and a batch size, then predicts once;
``measure_table_fit`` times one fit of a register family on ``calibration_table`` (the
cohort's own register rows, a seeded stratified sample; a synthetic table when the cohort has
no labelled register data). ``calibrate`` decides what to measure and caches it.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd

from benchmark.run.plan.cache import _threads

CAL_STEPS = 3                 # timed training steps per architecture (after one warm-up epoch)
GPU_CAL_STEPS = 30            # the same on a GPU (--device-profile gpu), whose steps are milliseconds


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
