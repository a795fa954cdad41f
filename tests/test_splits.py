"""Patient-level folds: stratified, disjoint, deterministic, nested, with clear errors."""

import numpy as np
import pytest

from benchmark.data.splits import inner_folds, outer_folds, stratified_subsample
from benchmark.errors import UserError

Y = np.array([1] * 12 + [0] * 88)


def test_outer_folds_partition_patients_and_keep_the_class_ratio():
    folds = outer_folds(Y, n_folds=4, seed=1)
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests) == list(range(len(Y)))                     # every patient tested once
    for f in folds:
        assert not set(f.train) & set(f.test) and len(f.train) + len(f.test) == len(Y)
        assert Y[f.test].sum() == 3


def test_repeats_reshuffle_and_seeds_are_deterministic():
    a = outer_folds(Y, n_folds=4, repeats=2, seed=5)
    b = outer_folds(Y, n_folds=4, repeats=2, seed=5)
    assert all(np.array_equal(x.test, z.test) for x, z in zip(a, b))
    assert not np.array_equal(a[0].test, a[4].test)
    assert not np.array_equal(a[0].test, outer_folds(Y, n_folds=4, seed=6)[0].test)


def test_inner_folds_stay_inside_the_outer_train_part():
    outer = outer_folds(Y, n_folds=4, seed=0)[2]
    inner = inner_folds(Y, outer.train, n_folds=3, seed=0, outer_index=2)
    assert sorted(np.concatenate([f.test for f in inner])) == sorted(outer.train)
    for f in inner:
        assert not set(f.train) & set(outer.test) and not set(f.test) & set(outer.test)


def test_too_few_positives_for_the_folds_is_a_clear_error():
    with pytest.raises(UserError, match="only 3 positive .* for 5 folds"):
        outer_folds(np.array([1, 1, 1] + [0] * 20), n_folds=5)
    outer = outer_folds(Y, n_folds=4, seed=0)[0]
    with pytest.raises(UserError, match="inner folds of outer fold 0: only 9 positive"):
        inner_folds(Y, outer.train, n_folds=10)


def test_stratified_subsample_keeps_prevalence():
    keep = stratified_subsample(Y, 50, seed=0)
    assert len(keep) == 50 and Y[keep].sum() == 6
    assert np.array_equal(stratified_subsample(Y, None), np.arange(len(Y)))
