"""The printed plan: a row per candidate (or per modality), the total, the notes and the makespan."""

from __future__ import annotations

import numpy as np

from benchmark.run.plan.cache import _threads
from benchmark.run.plan.pricing import Priced
from benchmark.run.plan.schedule import GPU_SHARE_UTIL, Schedule

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
    explained = [c for c in plan.candidates if c.importance]
    if explained:
        from benchmark.run.plan.pricing import explain_s

        total = sum(explain_s(c, plan, costs) * c.units for c in plan.candidates)
        lines.append(f"  register importance (run --importance): {fmt_s(total)} of it, for "
                     f"{len(explained)} candidate(s) reading {plan.n_columns} register columns; "
                     "--importance none leaves it out")
    networks = [c.name for c in plan.candidates if c.kind == "fusion_net" and not c.importance]
    if networks and plan.importance == "tables" and plan.n_columns:
        lines.append(f"  register importance left out for {', '.join(networks)} (--importance tables: a pass over "
                     "every test image's features per shuffled column); --importance auto includes them")
    for note in costs.notes:
        lines.append(f"  note: {note}")
    if costs.calibration_s:
        lines.append(f"  calibration took {costs.calibration_s:.0f}s (cached for next time)")
    return "\n".join(lines)


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
