"""A plan's costs on a device profile: measured on this machine (cached), or the H200 table.

``cpu`` measures this machine (``cpu_costs``): a few training steps and one prediction pass of
each architecture with the harness's own ``timm_cnn`` code at the profile's image size and the
candidate's batch (and training steps at each other batch size its search may draw), one
fusion network against its backbone (the overhead every neural fusion family gets), and one
fit of each register family on the cohort's own register rows (``measure.calibration_table``).
Results are cached (``cache``), so ``run`` reuses them. ``gpu`` does the same on this
machine's CUDA GPU (``GPU_CAL_STEPS`` timed steps); a GPU ``run`` prices with those figures
once they are cached, else with the ``h200`` table (``h200_costs``). Register families are
measured on the CPU for the ``h200`` and ``gpu`` profiles too (they run on the CPU).
"""

from __future__ import annotations

import json
import time
from typing import Callable

from benchmark.errors import UserError
from benchmark.run.plan.cache import BUSY_SHARE, _cache_path, _load_cache, _measure, _threads, _torch_key, image_key
from benchmark.run.plan.costs import EVAL_SHARE, H200_TABLE_BATCH, Costs, h200_batch_factor, h200_images_per_s
from benchmark.run.plan.counts import CandidatePlan, CostPlan, _image_archs, _other_batches
from benchmark.run.plan.measure import CAL_STEPS, GPU_CAL_STEPS, calibration_table, measure_image, measure_table_fit

# set by build_costs' caller (``plan_for_run``): cohort facts the table calibration needs;
# ``cohort`` the run's cohort when it has labelled register data (None: a synthetic table),
# ``tag`` what the cache key records of it (the dataset's fingerprint and size, never a value)
_TABLE_SHAPE: dict = {"cols": 64, "prevalence": 0.2, "cands": {}, "cohort": None, "tag": "synthetic"}


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


def _note_busy(costs: Costs) -> None:
    """A note when a cost in use was measured while other processes took a fair share of the CPU."""
    worst = max(costs.others, default=0.0)
    if worst >= BUSY_SHARE:
        costs.notes.append(f"some costs were measured while other processes used {worst:.0%} of this machine's CPU: "
                           f"estimates may be too long; `plan --recalibrate` on an otherwise idle machine measures again")


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
