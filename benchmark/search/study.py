"""One Optuna study per candidate x outer fold: the search over the inner folds.

The search sees only the outer-train part: the objective trains on inner-train parts and
scores inner-validation parts (``metric``, default ROC AUC, averaged over inner folds).
Trials are asked and told one at a time with a sampler re-seeded from (study seed, number
of finished trials), so an interrupted study resumed from its storage draws exactly the
trials an uninterrupted one would have drawn.

The budget is ``n_trials`` finished trials, the same on every machine. ``timeout_s`` is only
a safety net: the search time of every run of the study counts (kept in the study's user
attributes, so ``--resume`` does not restart the clock), and a study stopped by it says so
(``StudyResult.timed_out``).

    res = run_study(cand, make_view, cohort.y, inner, storage="sqlite:///optuna.db",
                    study_name=study_name("20250101-120000-1a2b3c4d", "xgboost", 0, 0), n_trials=8,
                    timeout_s=14400, seed=1, ctx_base=ctx)
    res.best_params, res.best_value, res.best_models      # the bag: the best trial's inner-fold models
    res.timed_out                                         # True only when the safety net fired

Study names carry the run's identity (``trials.study_name``), so runs sharing one storage
never read each other's trials; ``trials.trials_frame(storage, run_id)`` lists one run's trials.

``storage`` is a spec for ``storage.open_storage``: an ``sqlite:///`` URL, a journal file path
(parallel workers on one machine) or a ``postgresql://`` URL (workers on many machines); the
heartbeats of running trials and the ``worker`` of each trial: ``trials``.

``make_view(positions, labels)`` gives the ``PatientData`` of cohort positions (labels only
where ``labels`` is true); ``inner`` are the outer-train part's inner folds. Every model
of the search and of a refit gets its ``TrialContext`` from ``fit_context``: the same seed
for the same (study, repeat, outer fold, inner fold) wherever it is trained.
"""

from __future__ import annotations

import math
import time
import traceback
import warnings
import zlib
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import optuna
from sklearn.metrics import roc_auc_score, average_precision_score, log_loss

from benchmark.candidates.base import TrialContext
from benchmark.data.splits import Fold
from benchmark.errors import UserError
from benchmark.search.pruning import EpochRungs, Monitor, for_search, make_pruner, prunes_epochs
from benchmark.search.storage import open_storage, scrub
from benchmark.search.trials import _heartbeat_interval, _Heartbeat, _interrupted, _short, worker_id

STEP_STRIDE = 10_000   # steps of inner fold k are k*STEP_STRIDE + epoch; the fold score goes last
ELAPSED_ATTR = "search_s"   # study user attribute: seconds of trials run so far, over every run of the study
_clock = time.monotonic     # the search clock (tests replace it)


def score(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    """Higher is better for every objective metric."""
    p = np.asarray(p, dtype=np.float64)
    if not np.all(np.isfinite(p)):
        raise FloatingPointError("non-finite predictions (NaN loss or overflow)")
    if len(np.unique(y)) < 2:
        return float("nan")
    if metric == "auc":
        return float(roc_auc_score(y, p))
    if metric == "ap":
        return float(average_precision_score(y, p))
    if metric == "neg_log_loss":
        return -float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]))
    raise UserError(f"objective metric {metric!r} is unknown; use auc, ap or neg_log_loss")


def stable_seed(*parts) -> int:
    """A 31-bit seed from ints and strings, the same on every machine and Python run."""
    ints = [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(1)[0] % 2**31)


def fit_seed(seed: int, repeat: int, outer: int, inner: int) -> int:
    """Seed of the model trained on one inner fold; the same in the search and in the refit."""
    return stable_seed(seed, "fit", repeat, outer, inner)


def fit_context(base: TrialContext, seed: int, repeat: int, outer: int, inner: int, trial=None) -> TrialContext:
    """The context of the model trained on inner fold ``inner``: ``base`` with its own seed, trial and lists.

    ``extra["inner_index"]`` says which inner fold it is (K: the refit on the whole part), so
    a family can start from the weights of another model trained on the same patients.
    """
    return replace(base, seed=fit_seed(seed, repeat, outer, inner), trial=trial,
                   step_offset=inner * STEP_STRIDE if trial is not None else 0,
                   extra={**base.extra, "inner_index": inner}, history=[], notes=[], monitor=None, reported=set())


@dataclass
class StudyResult:
    best_params: dict | None
    best_value: float
    n_trials: int
    n_failed: int
    n_pruned: int
    fail_reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    best_models: list | None = None   # the best trial's inner-fold models, when trained in this process
    best_valid_preds: list | None = None   # and their predictions on their inner-validation folds
    timed_out: bool = False   # the time limit (a safety net) stopped the study before n_trials finished trials
    search_s: float = 0.0     # seconds of trials so far, over every run of the study


def _running_score(metric: str, y_fold: np.ndarray, done: list[float]) -> Callable[[np.ndarray], float]:
    """The value a monitored fit reports: the mean of the finished folds' scores and this fold's."""
    def value(probs: np.ndarray) -> float:
        vals = [v for v in [*done, score(metric, y_fold, probs)] if np.isfinite(v)]
        return float(np.mean(vals)) if vals else float("nan")
    return value


def _sampler(seed: int):
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True)


def run_study(
    cand,
    make_view: Callable,          # (positions, labels: bool) -> PatientData
    y: np.ndarray,                # cohort labels (used for the inner-validation score only)
    inner: list[Fold],
    *,
    storage: str,
    study_name: str,
    n_trials: int,
    timeout_s: float | None,
    seed: int,
    ctx_base: TrialContext,
    metric: str = "auc",
    repeat: int = 0,
    outer_index: int = 0,
    on_trial: Callable[[int, float | None, str], None] | None = None,
    keep_models: bool = True,
    pruner: dict | None = None,
) -> StudyResult:
    """Run (or continue) the study until it holds ``n_trials`` finished trials.

    ``timeout_s`` (None: no limit) is a safety net over the search time of every run of this
    study: once it is spent no further trial starts, and the result has ``timed_out`` set.
    ``pruner``: the profile's (``benchmark.search.pruning``; None: the median rule). Under
    successive halving a network's trials all train ``ctx_base.max_epochs`` epochs (``epochs``
    leaves the search) and report at the rung epochs.
    """
    rungs = None
    if prunes_epochs(pruner, cand, ctx_base.max_epochs):
        rungs = EpochRungs.of(pruner, ctx_base.max_epochs, len(inner))
        cand = for_search(cand, pruner, ctx_base.max_epochs)   # idempotent: the runner and export fix it already
    store = open_storage(storage)
    study = optuna.create_study(study_name=study_name, storage=store, direction="maximize",
                                load_if_exists=True, sampler=_sampler(seed), pruner=make_pruner(pruner, rungs))
    if _heartbeat_interval(store):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)   # RUNNING trials whose process stopped beating
    # Trials left RUNNING by an interrupted process: close them as failed, not counted. Every
    # failure this loop records carries a fail_reason, so a FAIL without one was interrupted.
    # A study belongs to one work unit, which one process runs at a time: a RUNNING trial
    # here is always from a process that is gone, however fresh its heartbeat.
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)

    def finished() -> list:
        return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and not _interrupted(t)]

    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    if cand.start and not finished() and not waiting:
        study.enqueue_trial(cand.start)   # a known-good default first: a short budget still gets it
    spent = float(study.user_attrs.get(ELAPSED_ATTR, 0.0))   # earlier runs of this study count too
    limit = math.inf if timeout_s is None else float(timeout_s)
    timed_out = False
    # The scoring fold is handed to no fit and carries no labels: early stopping, epoch and
    # boosting-round choice come from the fit's own training part (``valid`` is None).
    views = [(make_view(f.train, True), make_view(f.test, False)) for f in inner]
    kept: dict = {"value": -np.inf, "number": None, "models": None}
    while True:
        done = finished()
        if len(done) >= n_trials:
            break
        if spent >= limit:
            timed_out = True
            break
        t_trial = _clock()
        # A sampler seeded by the number of finished trials: resume draws what a fresh run would.
        study.sampler = _sampler(stable_seed(seed, len(done)))
        with warnings.catch_warnings():   # Optuna expects heartbeats with study.optimize; we beat ourselves
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
            trial = study.ask()
        trial.set_user_attr("worker", worker_id())
        beat = _Heartbeat(store, trial._trial_id)   # stopped when the trial ends (the finally below)
        try:
            params = cand.sample(trial)
        except BaseException:
            beat.stop()
            raise
        scores = []
        models = []
        preds = []
        notes: list[str] = []
        try:
            for k, ((tr, va), fold) in enumerate(zip(views, inner)):
                model = cand.build(params)
                ctx = fit_context(ctx_base, seed, repeat, outer_index, k, trial=trial)
                if rungs is not None:
                    ctx.step_offset = rungs.offset(k)
                    ctx.monitor = Monitor(va, rungs.monitor_epochs(k),
                                          _running_score(metric, y[fold.test], list(scores)))
                model.fit(tr, None, ctx)
                p_va = model.predict_proba(va)
                s = score(metric, y[fold.test], p_va)
                preds.append(p_va)
                notes += ctx.notes
                scores.append(s)
                models.append(model if keep_models else None)
                del model
                running = float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")
                end = rungs.offset(k + 1) if rungs is not None else k * STEP_STRIDE + STEP_STRIDE - 1
                if np.isfinite(running) and k < len(inner) - 1 and end not in ctx.reported:
                    trial.report(running, end)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"pruned after inner fold {k}")
            value = float(np.nanmean(scores))
            if not np.isfinite(value):
                raise FloatingPointError("the objective is undefined on every inner fold (one class only?)")
            if notes:
                trial.set_user_attr("notes", "; ".join(notes)[:500])
            study.tell(trial, value)
            state = "COMPLETE"
            if keep_models and value > kept["value"]:
                kept.update(value=value, number=trial.number, models=models, preds=preds)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            value, state = None, "PRUNED"
        except (KeyboardInterrupt, SystemExit):
            raise
        except UserError:
            raise
        except Exception as exc:  # a failed trial is recorded with its reason; the study goes on
            reason = scrub(_short(exc))   # no storage password in what the study keeps
            trial.set_user_attr("fail_reason", reason)
            trial.set_user_attr("traceback", scrub(traceback.format_exc()[-2000:]))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            value, state = None, "FAIL: " + reason
        finally:
            beat.stop()
            del models
            _free_gpu()
        spent += _clock() - t_trial
        study.set_user_attr(ELAPSED_ATTR, round(spent, 3))
        if on_trial:
            on_trial(trial.number, value, state)

    done = finished()
    complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t for t in done if t.state == optuna.trial.TrialState.FAIL]
    reasons = [t.user_attrs["fail_reason"] for t in failed]
    notes = [t.user_attrs["notes"] for t in done if "notes" in t.user_attrs]
    if not complete:
        return StudyResult(None, float("nan"), len(done), len(failed),
                           len(done) - len(complete) - len(failed), reasons, notes,
                           timed_out=timed_out, search_s=spent)
    best = max(complete, key=lambda t: (t.value, -t.number))
    # The bag is the best trial's inner-fold models: reuse them when this process trained them
    # (same params and seeds as a refit would use), otherwise the runner refits.
    reuse = kept["number"] == best.number
    return StudyResult(dict(best.params), float(best.value), len(done), len(failed),
                       len(done) - len(complete) - len(failed), reasons, notes,
                       kept["models"] if reuse else None, kept.get("preds") if reuse else None,
                       timed_out=timed_out, search_s=spent)


def _free_gpu() -> None:
    """After a trial that used a GPU: collect its cyclic garbage and hand cached CUDA blocks back.

    Nothing otherwise: a full collection after every trial took 0.2-0.3 s (39 % of a `standard`
    lightgbm run on 2 cores, py-spy), and Python's own collector frees the cycles on the CPU.
    """
    import sys

    torch = sys.modules.get("torch")   # a run that never imported torch never used a GPU
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        from benchmark.candidates.torch_device import free_memory

        free_memory()
