"""The runner: works through the run plan and gathers the results; it only orchestrates.

    dataset -> Cohort -> outer folds -> run plan (candidate x repeat x outer fold units)
        each unit (fold_runner): Optuna study on the inner folds -> the bag -> inner out-of-fold
        and outer-test predictions -> calibration fitted on the out-of-fold part -> parts/
    -> predictions.parquet -> leaderboard.csv, comparisons.csv -> leaderboard.html

The protocol and the data flow are described in docs/design.md. Each finished unit is
written to ``parts/`` at once, so ``--resume`` reuses it; unfinished studies continue from
the Optuna storage. A run that stops with an error (or Ctrl-C) leaves ``manifest.json``
with ``status: failed`` and the reason in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from benchmark.candidates.base import TrialContext, get_family
from benchmark.candidates.calibration import METHODS as CAL_METHODS
from benchmark.data.cohort import Cohort
from benchmark.data.splits import outer_folds
from benchmark.errors import UserError
from benchmark.outputs import private_dir
from benchmark.paths import results_dir
from benchmark.protocol import ROLES
from benchmark.run.fold_runner import FoldRunner
from benchmark.run.folder import (RunConfig, RunDir, manifest, mark_failed, new_run_id, new_run_name, restore_config,
                                  threads_per_fit, write_folds)
from benchmark.run.gather import finish_run
from benchmark.run.pretrained import recorded_weights, start_weights
from benchmark.run.progress import Progress
from benchmark.run.units import (ROLE_SOURCE, build_plan, default_dataset, default_profile, inner_fold_list,
                                 load_run_cohort, pick_device, resolve_candidates, warm_start_role)
from benchmark.search.profiles import IMPORTANCE_LEVELS, Profile, get_profile
from benchmark.search.spaces import Candidate

__all__ = ["RunConfig", "run", "default_dataset"]


def base_context(device: str, profile: Profile, seed: int, deterministic: bool = False,
                 threads: int | None = None) -> TrialContext:
    """What every fit of the run shares: device, profile caps, threads; ``fit_context`` adds the rest.

    ``max_epochs`` here is the image-network cap; each candidate's own cap is
    ``profile.epoch_cap(modality, uses_images)``, set per unit by the fold runner. ``threads``
    (default: every core) is what each fit uses on the CPU.
    """
    threads = threads or os.cpu_count() or 1
    return TrialContext(device=device, seed=seed, max_epochs=profile.epoch_cap("image", True),
                        image_size=profile.image_size,
                        extra={"n_jobs": threads, "n_threads": threads, "mc_passes": profile.mc_passes,
                               "max_image_samples": profile.max_image_samples, "deterministic": deterministic})


def _check_modalities(cfg: RunConfig, cands: list[Candidate], cohort: Cohort) -> None:
    needs_images = [c for c in cands if c.modality == "image" or get_family(c.family).uses_images]
    if needs_images and not cohort.has_images:
        raise UserError(f"{cfg.data}: the cohort has no images but the run includes image/fusion candidates; "
                        f"use --suite register or add images to the dataset file")
    if any(c.modality != "image" for c in cands) and not cohort.has_register:
        raise UserError(f"{cfg.data}: the cohort has no register data but the run includes register/fusion candidates; "
                        f"use --suite image or add a register file")


def _run_path(cfg: RunConfig) -> tuple[RunConfig, Path]:
    base = Path(cfg.results_dir) if cfg.results_dir else results_dir()
    if cfg.resume:
        return restore_config(cfg, base)
    if cfg.run and (base / cfg.run).exists():
        raise UserError(f"run folder {base / cfg.run} exists; pass --resume to continue it or choose another --run")
    return cfg, base / (cfg.run or new_run_name(base))


def _check_execution(cfg: RunConfig) -> None:
    if cfg.workers is not None and cfg.workers < 1:
        raise UserError(f"--workers {cfg.workers}: give a number of units to run at once, 1 or more")
    if cfg.workers is not None and cfg.cluster:
        raise UserError("--workers and --cluster: choose one (a cluster's size is its own; --threads sets a unit's CPUs)")
    if not 0 < cfg.gpu_share <= 1:
        raise UserError(f"--gpu-share {cfg.gpu_share}: give the share of one GPU a network unit takes, in (0, 1]")
    if cfg.threads is not None and cfg.threads < 1:
        raise UserError(f"--threads {cfg.threads}: give the CPU threads per fit, 1 or more")


def storage_spec(cfg: RunConfig, run_path: Path) -> tuple[str, str]:
    """(the Optuna storage the run's studies go to, the file name in the manifest).

    ``--storage`` when given; else the run folder's own file: a journal file for a parallel
    run (and for a run that began as one), SQLite (``optuna.db``) for a sequential one. SQLite
    cannot take concurrent writers ("database is locked"), so a parallel run refuses it.
    """
    from benchmark.search.storage import open_storage, redact, uses_concurrent_writers_safely

    parallel = cfg.workers is not None or bool(cfg.cluster)
    if cfg.storage:
        if parallel and not uses_concurrent_writers_safely(cfg.storage):
            raise UserError(f"--storage {redact(cfg.storage)}: SQLite cannot take several workers writing at once; use "
                            f"--storage postgresql://... or leave --storage out (a journal file in the run folder)")
        open_storage(cfg.storage)   # an unreachable server is a one-line error now, not in a worker later
        return cfg.storage, "external"
    journal, db = run_path / "optuna.journal", run_path / "optuna.db"
    if parallel and db.exists() and not journal.exists():
        raise UserError(f"--resume with --workers/--cluster: run {run_path.name} keeps its trials in SQLite "
                        f"(optuna.db), which cannot take several workers; resume it without --workers")
    if parallel or journal.exists():
        return str(journal.resolve()), journal.name
    return f"sqlite:///{db.resolve()}", db.name


def run(cfg: RunConfig) -> Path:
    """Run a benchmark; returns the run folder."""
    _check_execution(cfg)
    cfg, run_path = _run_path(cfg)
    if cfg.calibration not in CAL_METHODS:
        raise UserError(f"--calibration {cfg.calibration}: use one of {', '.join(CAL_METHODS)}")
    cfg.threads = threads_per_fit(cfg)
    if cfg.deterministic:   # cuBLAS reads this when CUDA starts; torch_device.configure_determinism does the rest
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    device = pick_device(cfg.device)
    picked = cfg.profile is None
    if picked:
        cfg.profile = default_profile(device)
        print(f"profile: {cfg.profile} (picked for this machine: {'a CUDA GPU' if device == 'cuda' else 'no GPU'}; "
              f"pass --profile to choose)", flush=True)
    profile = get_profile(cfg.profile, cfg.spaces)
    if cfg.importance is None:   # the profile's (recorded in the manifest's config, so --resume keeps it)
        cfg.importance = profile.importance
    cands, _ = resolve_candidates(cfg, profile)
    cands, weights = start_weights(cands, profile, recorded_weights(run_path) if cfg.resume else None)
    cohort, n_in_file = load_run_cohort(cfg, profile)
    if cfg.data is None:
        cfg.data = str(default_dataset())
    _check_modalities(cfg, cands, cohort)
    folds = outer_folds(cohort.y, n_folds=profile.outer_folds, repeats=profile.repeats, seed=cfg.seed)
    plan = build_plan(cands, folds)

    storage, storage_file = storage_spec(cfg, run_path)
    man_path = run_path / "manifest.json"
    run_id, started = new_run_id(run_path.name), None
    if cfg.resume and man_path.exists():
        old = json.loads(man_path.read_text())
        if old["dataset"]["fingerprint"] != cohort.fingerprint:
            raise UserError(f"--resume: the dataset changed since run {run_path.name} started (fingerprint differs); "
                            f"start a new run")
        _check_same_budget(old.get("profile"), profile, run_path.name)
        # the same identity, so the run's studies continue (a run from before run ids: its folder name)
        run_id, started = old.get("run_id", run_path.name), old.get("started")
    rd = RunDir(run_path, run_id=run_id)
    private_dir(rd.path).joinpath("parts").mkdir(exist_ok=True)   # patient-derived: owner-only (benchmark.outputs)
    man = manifest(run_path, cfg, profile, cohort, n_in_file, device, [c.name for c in cands], run_id=run_id,
                   storage_file=storage_file)
    man["started"] = started or man["started"]
    man["weights"] = weights
    rd.write_json("manifest.json", man)
    try:
        write_folds(run_path, cohort, folds, lambda f: inner_fold_list(cohort.y, f, profile, cfg.seed))
        print(f"run {run_path.name}: {len(cands)} candidates x {len(folds)} outer folds, profile {profile.name}, "
              f"device {device}, {cohort.n_patients} patients ({int(cohort.y.sum())} AFF)", flush=True)
        priced = _cost_estimate(cands, profile, cohort, plan, device, cfg)
        if picked and priced is not None:
            from benchmark.run.plan.estimate import long_run_note

            if note := long_run_note(priced.total_s, profile.name):
                print(note, flush=True)
        costs = None if priced is None else priced.progress_costs()
        t0 = time.monotonic()
        ctx = base_context(device, profile, cfg.seed, cfg.deterministic, threads=cfg.threads)
        ctx.extra["explain"] = {"importance": cfg.importance, "saliency": cfg.explain}
        steps = sum(u.steps(profile) for u in plan)
        if cfg.workers is not None or cfg.cluster:
            studies = _run_parallel(cfg, plan, cohort, profile, rd, storage, ctx, cands, priced, steps, device)
        else:
            progress = Progress(steps, costs=costs)
            fr = FoldRunner(cohort, profile, rd, storage, progress, seed=cfg.seed, metric=cfg.metric,
                            calibration=cfg.calibration, ctx_base=ctx, candidates={c.name: c for c in cands})
            studies = []
            reprice = warm_repricer(priced, progress, plan)
            for unit in plan:   # each unit's steps weigh its estimated cost; a reused unit is no work now
                reprice(fr)
                progress.begin(unit.key, reused=rd.finished_row(*unit.key) is not None)
                studies.append(fr.run_unit(unit))
                progress.end(unit.key)
        # A storage of the run's own holds only its studies; a shared one (--storage) is read by run id.
        finish_run(rd, cohort, folds, studies, cands, profile, storage, man, time.monotonic() - t0,
                   run_id=None if cfg.storage is None else run_id)
    except BaseException as exc:   # any stop, Ctrl-C included: the manifest says failed, and why
        rd.write_json("manifest.json", mark_failed(man, exc))
        raise
    return run_path


def _run_parallel(cfg: RunConfig, plan: list, cohort: Cohort, profile: Profile, rd: RunDir, storage: str,
                  ctx: TrialContext, cands: list[Candidate], priced, steps: int, device: str) -> list[dict]:
    """The plan's units on Ray (``benchmark.run.scale``): ``--workers N`` locally, or ``--cluster``.

    As in a sequential run, a warm-started fusion unit is re-priced at its fold's chosen image
    architecture once that fold's image units have ended (``warm_repricer``); the driver
    keeps the fold choices from the rows as they come in (a tie may resolve differently from the
    workers' plan-order choice; it changes only the estimate)."""
    from benchmark.run.plan.schedule import makespan
    from benchmark.run.scale import Resources, UnitEnv, gpu_unit, local_gpus, run_units

    if any(c.modality == "image" or get_family(c.family).uses_images for c in cands):
        cohort.pixels(profile.image_size)   # decode once here; the workers map the cache file
    res = Resources(workers=cfg.workers, threads=cfg.threads, gpu_share=cfg.gpu_share, cluster=cfg.cluster,
                    device=device)
    where = f"the Ray cluster at {cfg.cluster}" if cfg.cluster else f"{cfg.workers} local workers"
    print(f"parallel: {where}, {cfg.threads} CPU thread(s) per unit"
          + (f", {cfg.gpu_share:g} of a GPU per network unit" if device == "cuda" else ""), flush=True)
    gpus = local_gpus() if device == "cuda" else 0
    on_gpu = {u.key for u in plan if gpu_unit(u.candidate, device)}

    def schedule(remaining: dict) -> float:   # the time left sees the tail: units waiting for their inputs
        return makespan(plan, remaining, workers=cfg.workers, gpus=gpus, gpu_share=cfg.gpu_share,
                        is_gpu_unit=on_gpu).makespan

    costs = None if priced is None else priced.progress_costs()
    progress = Progress(steps, costs=costs, workers=cfg.workers or 1,
                        schedule=schedule if costs and cfg.workers else None)
    choices = FoldRunner(cohort, profile, rd, storage, progress, seed=cfg.seed, metric=cfg.metric,
                         calibration=cfg.calibration, ctx_base=ctx, candidates={c.name: c for c in cands})
    env = UnitEnv(cohort=cohort, profile=profile, run_path=str(rd.path.resolve()), run_id=rd.run_id, storage=storage,
                  seed=cfg.seed, metric=cfg.metric, calibration=cfg.calibration, ctx_base=ctx,
                  candidates={c.name: c for c in cands})

    return list(run_units(plan, env, progress, res, reused=lambda unit: rd.finished_row(*unit.key),
                          on_row=row_repricer(priced, progress, choices, plan)).values())


def row_repricer(priced, progress: Progress, choices, plan: list):
    """``on_row(unit, row)`` for the parallel driver: record the row's fold choice in ``choices``
    (a ``FoldRunner``, used only for its ``best_name``), then re-price the warm-started units
    whose source it settles (``warm_repricer``)."""
    reprice = warm_repricer(priced, progress, plan)

    def on_row(unit, row: dict) -> None:
        choices.recall([(unit.candidate.name, row)])
        reprice(choices)

    return on_row


# profile keys added after runs were made: the value a manifest without the key stands for
_PROFILE_KEY_BEFORE = {"warm_start_source": ROLE_SOURCE, "pretrained": None}


def _check_same_budget(old: dict | None, profile, run: str) -> None:
    """UserError when ``--resume`` would finish a run under another budget than it started with
    (the profile's file was edited, or a newer version changed a built-in profile): its units
    would not be comparable. Keys a manifest lacks are skipped, except those whose old meaning
    is known (``_PROFILE_KEY_BEFORE``)."""
    if not old:
        return
    new = json.loads(json.dumps(profile.as_dict()))
    for key in sorted(new):
        if key == "description" or (key not in old and key not in _PROFILE_KEY_BEFORE):
            continue
        was = old.get(key, _PROFILE_KEY_BEFORE.get(key))
        if was != new[key]:
            raise UserError(f"--resume: profile {profile.name!r} changed since run {run} started ({key}: {was!r} "
                            f"then, {new[key]!r} now); its units would not be comparable, so start a new run "
                            f"(or restore the profile)")


def warm_repricer(priced, progress: Progress, plan: list):
    """``reprice(fr)``: units of warm-started fusion networks are priced at the costliest of the
    run's image architectures; once a fold's source is chosen (``fr.best_name``, and every unit
    that competes for the role in that fold has ended), the units not begun yet take that
    architecture's cost, so the time left counts what they will really cost. Each unit is
    re-priced once; the competing units are listed once per run."""
    waiting: dict = {}   # unit key -> (unit, role, the keys of the units competing for the role in its fold)
    for unit in plan if priced is not None else ():
        role = warm_start_role(unit.candidate)
        if role in ROLES:   # a named source is priced at its own architecture from the start
            fold = (unit.fold.repeat, unit.fold.index)
            waiting[unit.key] = (unit, role, [u.key for u in plan if u.candidate.modality == ROLES.get(role)
                                              and (u.fold.repeat, u.fold.index) == fold])

    def reprice(fr) -> None:
        for key, (unit, role, rivals) in list(waiting.items()):
            source = fr.best_name(role, unit.fold)
            if source is None or not all(k in progress.closed for k in rivals):   # the choice is not final yet
                continue
            del waiting[key]
            factor = priced.warm_scale(unit.candidate.name, fr.cands[source].fixed.get("arch"))
            if factor is not None:
                progress.rescale(key, factor)

    return reprice


def _cost_estimate(cands: list[Candidate], profile: Profile, cohort: Cohort, plan: list, device: str,
                   cfg: RunConfig):
    """Print the plan's estimate (``benchmark.run.plan``) and return it (``pricing.Priced``) for ``Progress``.

    An estimate that cannot be made is one line, never a failed run: progress then counts trials.
    """
    from benchmark.run.plan.cache import fit_threads
    from benchmark.run.plan.estimate import run_estimate

    try:
        parallel = {}
        if cfg.workers:   # a cluster's size is unknown here: its estimate stays the sequential one
            from benchmark.run.scale import local_gpus

            parallel = dict(workers=cfg.workers, gpus=local_gpus() if device == "cuda" else 0, gpu_share=cfg.gpu_share)
        with fit_threads(cfg.threads):   # the fits' own thread count (1 per unit on 2 workers of 2 cores)
            priced = run_estimate(cands, profile, cohort, plan, device, log=lambda m: print(m, flush=True),
                                  importance=cfg.importance, **parallel)
    except (KeyboardInterrupt, UserError):
        raise
    except Exception as exc:   # the estimate is advice; the run goes on without it
        print(f"cost estimate: not available ({type(exc).__name__}: {str(exc)[:120]}); progress counts trials",
              flush=True)
        return None
    return priced


# ---- CLI ------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="all", help="suite to run (register, image, fusion, all, or your own)")
    p.add_argument("--candidates", default=None, help="comma-separated candidate names (instead of --suite)")
    p.add_argument("--data", default=None, metavar="DATASET.yaml", help="dataset file (default: the synthetic cohort)")
    p.add_argument("--profile", default=None, help="budget profile (default: quick on CPU, hour on GPU)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite in the run folder)")
    p.add_argument("--run", default=None, help="run name (folder under results/)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run (default: the latest)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spaces", action="append", default=[], metavar="DIR", help="extra folder of candidate files")
    p.add_argument("--calibration", default="platt", choices=list(CAL_METHODS))
    p.add_argument("--metric", default="auc", choices=["auc", "ap", "neg_log_loss"], help="objective metric")
    p.add_argument("--results", default=None, metavar="DIR", help="where run folders go (default: results/)")
    p.add_argument("--deterministic", action="store_true",
                   help="identical reruns on a GPU too (deterministic cuDNN/cuBLAS algorithms; slower)")
    p.add_argument("--importance", default=None, choices=list(IMPORTANCE_LEVELS),
                   help="register risk factors per unit (permutation importance, TreeSHAP): auto leaves out film on "
                        "a CPU (a network pass per shuffled column), all includes it, tables also leaves out the "
                        "fusion networks (a pass over every test image's features per shuffled column), none turns "
                        "it off (default: the profile's, auto except under hour, which uses tables)")
    p.add_argument("--explain", action="store_true",
                   help="also write Grad-CAM maps of the image candidates (patient data, in patient_data/) and "
                        "score their localisation on a synthetic cohort")
    g = p.add_argument_group("parallel runs (Ray; pip install -e \".[cluster]\")")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run N work units at once on a local Ray instance (default: one at a time, in this process)")
    g.add_argument("--cluster", default=None, metavar="ADDRESS",
                   help="run the units on an existing Ray cluster (ray start --head; e.g. 10.0.0.1:6379 or auto)")
    g.add_argument("--gpu-share", type=float, default=1.0, metavar="S",
                   help="the share of a GPU one network unit takes (0.25: four fits per GPU; default 1)")
    g.add_argument("--threads", type=int, default=None, metavar="T",
                   help="CPU threads per fit (default: the cores / --workers; PyTorch's CPU results depend on it, "
                        "so a run equals another with the same --threads)")


def command(args: argparse.Namespace) -> int:
    cfg = RunConfig(suite=args.suite, candidates=args.candidates.split(",") if args.candidates else None,
                    data=args.data, profile=args.profile, device=args.device, storage=args.storage, run=args.run,
                    resume=args.resume, seed=args.seed, spaces=args.spaces, calibration=args.calibration,
                    metric=args.metric, results_dir=args.results, deterministic=args.deterministic,
                    workers=args.workers, cluster=args.cluster, gpu_share=args.gpu_share, threads=args.threads,
                    importance=args.importance, explain=args.explain,
                    command="python -m benchmark " + " ".join(sys.argv[1:]))
    run(cfg)
    return 0
