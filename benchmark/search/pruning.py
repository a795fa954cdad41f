"""The search's pruners: the median rule between inner folds, or successive halving over epochs.

A profile's ``pruner`` key picks one (``search_spaces/profiles.yaml``):

- ``median`` (the default): Optuna's ``MedianPruner``. A trial reports its running mean over
  the inner folds done so far (and a network its holdout score per epoch); it stops when that
  is below the median of earlier trials at the same point.
- ``{type: successive_halving, min_epochs: 1, reduction_factor: 3}``: Optuna's
  ``SuccessiveHalvingPruner`` with **epochs as the resource**, for the networks (the torch
  families; the trees and logreg keep the median rule). Every trial of such a study trains the
  profile's epoch cap (``epochs`` is taken out of the search: the pruner decides how many
  epochs a configuration gets, and trials with different schedules would not be comparable
  at a rung). The rungs are at ``min_epochs * reduction_factor**i`` epochs of training
  counted over the trial's inner folds in order (fold k's epoch e is step ``k * cap + e``). At
  a rung epoch the fit predicts its inner-validation fold (the fold that scores the trial, no
  labels handed to the fit) and reports the mean of the finished folds' scores and this one.
  A trial goes on only when that is in the top ``1 / reduction_factor`` of the trials that
  reached the rung (the best of them while fewer than ``reduction_factor`` did).

Pruning reads only inner-validation folds, as the median rule does: the outer-test part is
never seen, and the predictions of a trial that is not pruned are those of an unmonitored fit
(a monitor predicts in eval mode and draws no random numbers).

Why not Hyperband: Optuna's ``HyperbandPruner`` spreads a study's trials over several brackets
that never compete; with the 10-25 trials of ``standard``/``paper`` each bracket holds 2-6.

``halving_shares`` prices a study under successive halving for ``plan``: the expected share of
its full training that each trial does, by replaying the pruner's rule on seeded random draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from benchmark.errors import UserError

MEDIAN = {"type": "median"}
HALVING = "successive_halving"
HALVING_DEFAULTS = {"min_epochs": 1, "reduction_factor": 3}
PRICE_DRAWS = 400


def parse_pruner(value, path: Path | str, profile: str) -> dict:
    """A profile's ``pruner`` value, checked and completed (``median`` or a halving mapping)."""
    where = f"{path}: profile {profile!r} key 'pruner'"
    if value is None or value == "median" or value == MEDIAN:
        return dict(MEDIAN)
    if value == HALVING:
        value = {"type": HALVING}
    if not isinstance(value, dict) or value.get("type") != HALVING:
        raise UserError(f"{where} must be 'median' or a mapping like {{type: {HALVING}, min_epochs: 1, "
                        f"reduction_factor: 3}}, got {value!r}")
    unknown = set(value) - {"type", *HALVING_DEFAULTS}
    if unknown:
        raise UserError(f"{where}: unknown key {sorted(unknown)[0]!r}; allowed: type, {', '.join(HALVING_DEFAULTS)}")
    spec = {"type": HALVING, **HALVING_DEFAULTS, **value}
    for key, low in (("min_epochs", 1), ("reduction_factor", 2)):
        v = spec[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise UserError(f"{where}.{key} must be a whole number >= {low}, got {v!r}")
    return spec


def prunes_epochs(spec: dict | None, cand, cap: int | None) -> bool:
    """Whether a study of ``cand`` prunes over epochs: halving asked, a torch family, an epoch cap."""
    if not (spec and spec.get("type") == HALVING and cap):
        return False
    from benchmark.candidates.base import get_family
    from benchmark.candidates.torch_family import TorchFamily

    return issubclass(get_family(cand.family), TorchFamily)


def for_search(cand, spec: dict | None, cap: int | None):
    """The candidate a study searches: under successive halving over epochs, ``cand`` with its
    epoch parameter fixed at the cap and out of the space and the start trial; else ``cand``.
    The bag, the refit and the export build from this one too."""
    from dataclasses import replace

    from benchmark.candidates.base import get_family

    if not prunes_epochs(spec, cand, cap):
        return cand
    key = getattr(get_family(cand.family), "epochs_param", "epochs")
    return replace(cand, fixed={**cand.fixed, key: int(cap)},
                   space={k: v for k, v in cand.space.items() if k != key},
                   start={k: v for k, v in cand.start.items() if k != key})


@dataclass(frozen=True)
class EpochRungs:
    """Where a halving study's trials are judged: ``folds`` inner folds of ``cap`` steps each."""

    min_epochs: int
    reduction_factor: int
    cap: int
    folds: int

    @classmethod
    def of(cls, spec: dict, cap: int, folds: int) -> "EpochRungs":
        return cls(int(spec["min_epochs"]), int(spec["reduction_factor"]), int(cap), int(folds))

    def steps(self) -> list[int]:
        """Rung steps before the trial's end (a trial that trained everything is not judged again)."""
        out, s = [], self.min_epochs
        while s < self.cap * self.folds:
            out.append(s)
            s *= self.reduction_factor
        return out

    def offset(self, fold: int) -> int:
        return fold * self.cap

    def monitor_epochs(self, fold: int) -> frozenset[int]:
        """Epochs (1-based) of inner fold ``fold`` at which a rung falls."""
        lo = self.offset(fold)
        return frozenset(s - lo for s in self.steps() if lo < s <= lo + self.cap)

    def pruner(self):
        import optuna

        return optuna.pruners.SuccessiveHalvingPruner(min_resource=self.min_epochs,
                                                      reduction_factor=self.reduction_factor,
                                                      min_early_stopping_rate=0)


def make_pruner(spec: dict | None, rungs: EpochRungs | None):
    """The Optuna pruner of one study: successive halving over ``rungs``, else the median rule."""
    import optuna

    if rungs is not None:
        return rungs.pruner()
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


@dataclass
class Monitor:
    """What a pruned network predicts at its rung epochs (``TrialContext.monitor``).

    ``data``: the inner-validation fold, without labels; ``epochs``: the 1-based epochs to
    predict it at; ``score(probs)``: the value to report (the mean over the finished folds and
    this one), computed by the study, which holds the labels.
    """

    data: object
    epochs: frozenset
    score: object


def _promotable(value: float, competing: list[float], eta: int) -> bool:
    """Optuna's ``_is_trial_promotable_to_next_rung`` (maximising); ``competing`` includes ``value``."""
    idx = max(len(competing) // eta - 1, 0)
    return value >= sorted(competing)[-(idx + 1)]


def halving_run(quality: np.ndarray, rungs: EpochRungs, trained: int) -> list[float]:
    """Per trial (in order), the share of its full training done under successive halving.

    ``quality``: the trials' scores, the same at every rung (a better trial stays better);
    ``trained``: epochs a fit really trains (the sample budget may stop it before ``cap``). A
    rung past a fold's last trained epoch is judged at the fold's end report, as the study does.
    """
    at_rung: dict[int, list[float]] = {}
    steps = rungs.steps()
    full = rungs.folds * trained
    shares = []
    for q in quality:
        done = full
        for i, s in enumerate(steps):
            fold, e = divmod(s - 1, rungs.cap)
            e += 1
            if e > trained:                 # judged at the fold's end (no end report after the last fold)
                if fold == rungs.folds - 1:
                    break
                e = trained
            comp = at_rung.setdefault(i, [])
            comp.append(float(q))
            if not _promotable(float(q), comp, rungs.reduction_factor):
                done = fold * trained + e
                break
        shares.append(done / full)
    return shares


@lru_cache(maxsize=256)
def halving_shares(n_trials: int, rungs: EpochRungs, trained: int, draws: int = PRICE_DRAWS) -> tuple[float, ...]:
    """Expected share of full training per trial (trial order), over ``draws`` seeded random orders.

    The first trial always trains everything; later ones are pruned more often as the rungs fill.
    """
    rng = np.random.default_rng(0)
    total = np.zeros(n_trials)
    for _ in range(draws):
        total += halving_run(rng.random(n_trials), rungs, max(1, min(trained, rungs.cap)))
    return tuple(float(x) for x in total / draws)
