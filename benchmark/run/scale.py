"""Scale-out: the run plan's work units run in parallel on Ray.

``run --workers N`` starts a local Ray instance and runs up to N units at once; ``run
--cluster ADDRESS`` joins a Ray cluster started with ``ray start --head`` / ``ray start
--address`` (under Slurm too: README). Without either, the runner works through the plan in
its own process as before, and nothing here is imported.

    rows = run_units(plan, UnitEnv(...), progress, Resources(workers=2, threads=1))

What is run where:

- A unit (candidate x repeat x outer fold: ``units.WorkUnit``) is one Ray task. It asks for
  ``threads`` CPUs, and a network unit on a GPU run also for ``gpu_share`` of a GPU, so
  ``1 / gpu_share`` small fits share one GPU. A unit is submitted once every unit it waits
  for (``needs``) has finished, with their studies.csv rows, so a fusion unit resolves
  ``best_image`` / ``best_register`` exactly as the sequential runner does.
- The worker runs ``FoldRunner.run_unit``, the code of the sequential path: the Optuna study
  lives in the run's storage (a journal file on one machine, PostgreSQL across machines), and
  the unit's part is written atomically into the run folder (a shared filesystem on a
  cluster). ``--resume`` and ``report`` are unchanged.
- The cohort is sent once (``ray.put``) without its decoded pixels; every worker maps the same
  image cache file, so the workers of one machine share one copy in the page cache.
- A task that fails (its worker died, or an error escaped ``run_unit``) is retried once by
  Ray, in a new worker process; a second failure is recorded as the unit's failed row with
  the reason. A ``UserError`` (bad input) is not retried: it stops the run as it would
  sequentially.
- Progress: each worker sends its trial events to one queue; the driver prints them on one
  line each with the ETA over all units (``progress.Progress`` with ``workers``).

Same answer: a unit's result depends only on the run's seed, its fold, its inputs' parts and
the threads each fit uses (PyTorch's CPU reductions depend on the thread count), so a run
with ``--workers N`` equals a sequential run with the same ``--threads``.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from benchmark.errors import UserError

__all__ = ["Resources", "UnitEnv", "run_units", "gpu_unit", "start_ray"]

MAX_RETRIES = 1     # a failed unit is run once more, in another worker process, then recorded as failed
POLL_S = 0.25       # how often the driver drains the progress queue while units run
# Environment a worker needs from the driver (the cache folder, test probes, cuBLAS determinism).
_ENV_PREFIXES = ("AFF_", "CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")


@dataclass(frozen=True)
class Resources:
    """What the run may use: ``workers`` units at once locally (None on a cluster), ``threads``
    CPU threads per fit (each unit reserves as many CPUs), and ``gpu_share`` of a GPU per
    network unit when the run's device is a GPU."""

    workers: int | None
    threads: int
    gpu_share: float = 1.0
    cluster: str | None = None
    device: str = "cpu"


@dataclass
class UnitEnv:
    """Everything a worker needs to run units of one run (sent once, kept per worker process)."""

    cohort: object
    profile: object
    run_path: str
    run_id: str
    storage: str
    seed: int
    metric: str
    calibration: str
    ctx_base: object
    candidates: dict


def gpu_unit(cand, device: str) -> bool:
    """Whether a unit of ``cand`` takes a GPU share: a network family (or boosted trees, which
    train on the GPU too) on a GPU run."""
    from benchmark.candidates.base import get_family

    return device == "cuda" and bool(getattr(get_family(cand.family), "trains_on_gpu", False))


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError('--workers/--cluster need Ray: pip install -e ".[cluster]"') from None
    return ray


def start_ray(res: Resources):
    """Start a local Ray instance for ``res.workers`` units at once, or join ``res.cluster``."""
    ray = _import_ray()
    env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
    # Workers import what this process imports (the package, a --spaces family module, test helpers).
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    kw = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
              runtime_env={"env_vars": env})
    try:
        if res.cluster:
            ray.init(address=res.cluster, **kw)
        else:
            n_gpus = local_gpus() if res.device == "cuda" else 0
            ray.init(num_cpus=res.workers * res.threads, num_gpus=n_gpus, **kw)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {res.cluster}" if res.cluster else "a local Ray instance"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "check `ray status` (cluster) or run without --workers"
        cause = exc
        while cause is not None:
            if "AuthenticationError" in type(cause).__name__ or "InvalidAuthToken" in str(cause):
                hint = ("the cluster wants its token: export RAY_AUTH_MODE=token here too, with the cluster's "
                        "token in ~/.ray/auth_token or RAY_AUTH_TOKEN")
                break
            cause = cause.__cause__ or cause.__context__
        raise UserError(f"could not start or join {where}: {first}; {hint}") from None
    return ray


def local_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# ---- the worker side --------------------------------------------------------------------------

class QueueProgress:
    """What a worker's ``FoldRunner`` calls as its progress: events sent to the driver's queue.

    Sent without waiting for the queue (``actor.put_nowait.remote``; Ray keeps one caller's
    calls in order). A task that blocks on ``ray.get`` lends its CPUs to another task
    meanwhile, so waiting here would let more units run at once than the run allows.
    """

    def __init__(self, queue, key) -> None:
        self.queue, self.key = queue, key

    def _send(self, *event) -> None:
        try:
            self.queue.actor.put_nowait.remote(event)
        except Exception:   # a progress line lost never stops a unit
            pass

    def begin(self, key, reused: bool = False) -> None:
        self.key = key
        self._send("begin", key, reused)

    def unit_done(self, n: int = 1, key=None) -> None:
        self._send("tick", key or self.key, n)

    def say(self, msg: str) -> None:
        self._send("say", self.key, msg)


def _run_unit(env: UnitEnv, unit, rows: list, queue, device: str) -> dict:
    """One work unit in a worker: the sequential path's ``FoldRunner.run_unit``.

    ``env`` arrives as an argument (Ray unpacks it before the task starts; its arrays are
    read from the shared object store): nothing here blocks on ``ray.get``.
    """
    from benchmark.run.fold_runner import FoldRunner
    from benchmark.run.folder import RunDir

    ctx = env.ctx_base if device == env.ctx_base.device else replace(env.ctx_base, device=device)
    progress = QueueProgress(queue, unit.key)
    fr = FoldRunner(env.cohort, env.profile, RunDir(Path(env.run_path), run_id=env.run_id), env.storage, progress,
                    seed=env.seed, metric=env.metric, calibration=env.calibration, ctx_base=ctx,
                    candidates=env.candidates)
    progress.begin(unit.key)
    fr.recall(rows)
    try:
        return fr.run_unit(unit)
    except UserError as exc:   # bad input: stop the run, as sequentially; never retried
        return {"__user_error__": str(exc)}


# ---- the driver side --------------------------------------------------------------------------

def run_units(plan: list, env: UnitEnv, progress, res: Resources, *, reused=lambda unit: None,
              on_row=None) -> dict:
    """Run the plan's units on Ray; returns unit key -> studies.csv row.

    ``reused(unit)`` gives the row of a unit finished by an earlier run (``--resume``), or None;
    those are not sent anywhere. ``on_row(unit, row)`` is called once a unit's row is in (after
    ``progress.end``): the runner re-prices what the row decides (a fold's best image model).
    Units are submitted in plan order as soon as what they wait for has finished; Ray starts
    them as CPUs and GPU shares free up.
    """
    from benchmark.run.fold_runner import REUSED

    ray = start_ray(res)
    pending: dict = {}
    if res.workers is None:   # a cluster: as many units at once as its CPUs allow
        progress.workers = max(2, int(ray.cluster_resources().get("CPU", 1) // res.threads))
    try:
        from ray.util.queue import Empty, Queue

        queue = Queue(actor_options={"num_cpus": 0})
        env_ref = ray.put(env)
        remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=True)(_run_unit)
        rows: dict = {}
        waiting = list(plan)
        order = {u.key: i for i, u in enumerate(plan)}
        while waiting or pending:
            for unit in [u for u in waiting if all(n in rows for n in u.needs)]:
                waiting.remove(unit)
                row = reused(unit)
                if row is not None:
                    progress.begin(unit.key, reused=True)
                    progress.unit_done(unit.steps(env.profile), key=unit.key)
                    progress.say(f"{unit.label(env.profile)}: {REUSED}")
                    progress.end(unit.key)
                    rows[unit.key] = row
                    if on_row is not None:
                        on_row(unit, row)
                    continue
                on_gpu = gpu_unit(unit.candidate, res.device)
                opts = {"num_cpus": res.threads, "num_gpus": res.gpu_share if on_gpu else 0}
                needed = [(n[0], rows[n]) for n in unit.needs]
                pending[remote.options(**opts).remote(env_ref, unit, needed, queue,
                                                      "cuda" if on_gpu else "cpu")] = unit
            if not pending:
                continue
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            _drain(queue, Empty, progress)
            for ref in done:
                unit = pending.pop(ref)
                rows[unit.key] = _result(ray, ref, unit)
                progress.end(unit.key)
                if on_row is not None:
                    on_row(unit, rows[unit.key])
        _drain(queue, Empty, progress)
        return dict(sorted(rows.items(), key=lambda kv: order[kv[0]]))
    except BaseException:   # Ctrl-C or a UserError: stop what still runs (a cluster keeps running otherwise)
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        ray.shutdown()


def _drain(queue, empty, progress) -> None:
    while True:
        try:
            kind, key, payload = queue.get_nowait()
        except empty:
            return
        if kind == "begin":
            progress.begin(key, reused=payload)
        elif kind == "tick":
            progress.unit_done(payload, key=key)
        else:
            progress.say(payload)


def _result(ray, ref, unit) -> dict:
    """The unit's row, or a failed row saying why the unit failed twice."""
    from benchmark.run.fold_runner import failed_row

    try:
        row = ray.get(ref)
    except ray.exceptions.RayError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        kind = "its worker died" if isinstance(exc, ray.exceptions.WorkerCrashedError) else type(exc).__name__
        return failed_row(unit, f"failed on two workers ({kind}): {first}"[:300])
    if "__user_error__" in row:
        raise UserError(row["__user_error__"])
    return row
