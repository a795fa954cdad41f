"""Patient-level folds: outer folds stratified by label, inner folds inside each outer-train part.

Folds are made over patients, so every image of a patient lands in the same fold by
construction. Deterministic for a seed::

    >>> y = np.array([0] * 40 + [1] * 10)
    >>> outer = outer_folds(y, n_folds=5, repeats=1, seed=0)
    >>> [len(f.test) for f in outer]
    [10, 10, 10, 10, 10]
    >>> inner = inner_folds(y, outer[0].train, n_folds=3, seed=0)   # positions into the cohort
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold

from benchmark.errors import UserError


@dataclass(frozen=True)
class Fold:
    repeat: int
    index: int
    train: np.ndarray   # cohort patient positions
    test: np.ndarray


class FoldError(UserError):
    """A fold cannot get a patient of each class; ``short`` is the class that is short (1 or 0)."""

    def __init__(self, message: str, short: int) -> None:
        super().__init__(message)
        self.short = short


def _check(y: np.ndarray, n_folds: int, what: str) -> None:
    if n_folds < 2:
        raise UserError(f"{what}: need at least 2 folds, got {n_folds}; raise outer_folds/inner_folds in the profile")
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=2)
    if counts.min() < n_folds:
        short = 1 if counts[1] < counts[0] else 0
        cls = "positive (AFF)" if short else "negative"
        raise FoldError(
            f"{what}: only {counts.min()} {cls} patients for {n_folds} folds; every fold needs at "
            f"least one of each class: use fewer folds (profile outer_folds/inner_folds) or more patients",
            short,
        )


def _seed(seed: int, *parts: int) -> int:
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


def outer_folds(y: np.ndarray, *, n_folds: int, repeats: int = 1, seed: int = 0) -> list[Fold]:
    """Stratified outer folds over patients, ``repeats`` times with different shuffles."""
    y = np.asarray(y)
    _check(y, n_folds, "outer folds")
    folds = []
    for r in range(repeats):
        skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=_seed(seed, 1, r) % 2**31)
        for i, (tr, te) in enumerate(skf.split(np.zeros(len(y)), y)):
            folds.append(Fold(r, i, np.sort(tr), np.sort(te)))
    return folds


def inner_folds(y: np.ndarray, train: np.ndarray, *, n_folds: int, seed: int = 0,
                repeat: int = 0, outer_index: int = 0) -> list[Fold]:
    """Stratified inner folds of an outer-train part; positions are cohort positions."""
    train = np.asarray(train)
    yt = np.asarray(y)[train]
    _check(yt, n_folds, f"inner folds of outer fold {outer_index}")
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True,
                          random_state=_seed(seed, 2, repeat, outer_index) % 2**31)
    return [Fold(repeat, i, train[np.sort(tr)], train[np.sort(te)])
            for i, (tr, te) in enumerate(skf.split(np.zeros(len(yt)), yt))]


def stratified_subsample(y: np.ndarray, n: int | None, seed: int = 0) -> np.ndarray:
    """Positions of a stratified subsample of ``n`` patients (all when n is None or >= len)."""
    y = np.asarray(y)
    if n is None or n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(_seed(seed, 3))
    keep = []
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        k = max(1, int(round(n * len(idx) / len(y))))
        keep.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


def run_folds(y: np.ndarray, *, outer: int, inner: int, repeats: int = 1, max_patients: int | None = None,
              seed: int = 0) -> tuple[np.ndarray, list[Fold], list[list[Fold]]]:
    """The folds a run makes: (kept positions, outer folds, inner folds of each outer fold).

    The runner's steps in its order: the ``max_patients`` subsample, the outer folds over the
    kept patients, the inner folds of each outer-train part. A UserError when a fold lacks a
    class. ``validate`` calls this to say whether (and from how many positives) a profile runs.
    """
    keep = stratified_subsample(np.asarray(y), max_patients, seed=seed)
    yk = np.asarray(y)[keep]
    outer_list = outer_folds(yk, n_folds=outer, repeats=repeats, seed=seed)
    inner_list = [inner_folds(yk, f.train, n_folds=inner, seed=seed, repeat=f.repeat, outer_index=f.index)
                  for f in outer_list]
    return keep, outer_list, inner_list


def min_positives(n_neg: int, *, outer: int, inner: int, repeats: int = 1, max_patients: int | None = None,
                  seed: int = 0, upto: int = 5000) -> int | None:
    """The fewest positive patients, beside ``n_neg`` negatives, for which ``run_folds`` succeeds.

    Found by trying ``run_folds`` itself (so the answer follows the splitting code); None when
    the negatives are too few (more positives would not help) or no count up to ``upto`` works.

    >>> min_positives(100, outer=2, inner=2)
    4
    """
    for n_pos in range(2, upto + 1):
        y = np.r_[np.ones(n_pos, dtype=np.int64), np.zeros(n_neg, dtype=np.int64)]
        try:
            run_folds(y, outer=outer, inner=inner, repeats=repeats, max_patients=max_patients, seed=seed)
        except FoldError as exc:
            if exc.short == 0:
                return None
            continue
        return n_pos
    return None
