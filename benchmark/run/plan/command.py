"""``python -m benchmark plan``: count a run's work and price it, without training.

    python -m benchmark plan --suite all --profile quick
    python -m benchmark plan --suite all --profile standard --device-profile h200 --workers 8 --gpus 8 --gpu-share 0.25
"""

from __future__ import annotations

import argparse

from benchmark.errors import UserError
from benchmark.run.plan.cache import _cache_path, fit_threads
from benchmark.run.plan.calibrate import costs_for
from benchmark.run.plan.estimate import plan_for_run
from benchmark.run.plan.pricing import price
from benchmark.run.plan.render import render, render_schedule

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="all", help="suite to plan (register, image, fusion, all, or your own)")
    p.add_argument("--candidates", default=None, help="comma-separated candidate names (instead of --suite)")
    p.add_argument("--data", default=None, metavar="DATASET.yaml", help="dataset file (default: the synthetic cohort)")
    p.add_argument("--profile", default=None, help="budget profile (default: quick on CPU, hour on GPU)")
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
    p.add_argument("--importance", default=None, choices=["auto", "all", "tables", "none"],
                   help="price the register importance as run --importance would compute it (default: the profile's)")
    p.add_argument("--gpu-share", type=float, default=1.0, metavar="S",
                   help="share of a GPU one GPU unit (a network, an image encoder) takes: 1/S of them share a GPU; default 1.0")


def command(args: argparse.Namespace) -> int:
    from benchmark.data.splits import outer_folds
    from benchmark.run.folder import RunConfig, threads_per_fit
    from benchmark.run.units import build_plan, default_profile, load_run_cohort, pick_device, resolve_candidates
    from benchmark.search.profiles import get_profile

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
    plan = plan_for_run(cands, profile, cohort, units, importance=args.importance or profile.importance,
                        device="cuda" if dp in ("gpu", "h200") else "cpu")
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
