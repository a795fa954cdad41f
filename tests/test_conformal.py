"""Class-conditional split conformal prediction sets."""

import numpy as np
import pytest

from benchmark.evaluate import conformal as C


def test_class_coverage_within_two_points_of_nominal_on_a_calibrated_model():
    rng = np.random.default_rng(0)

    def draw(n):
        p = rng.beta(1, 4, n)  # prevalence 0.2, calibrated by construction
        return (rng.random(n) < p).astype(int), p

    y_cal, p_cal = draw(20000)
    y_test, p_test = draw(20000)
    for alpha in (0.10, 0.05):
        sets = C.predict_sets(p_test, C.fit_thresholds(y_cal, p_cal, alpha))
        cov = C.class_coverage(y_test, sets)
        assert abs(cov[0] - (1 - alpha)) < 0.02, (alpha, cov)
        assert abs(cov[1] - (1 - alpha)) < 0.02, (alpha, cov)


def test_threshold_is_the_conformal_quantile_of_the_class_scores():
    # 9 positives with scores 1 - p = 0.1 .. 0.9; alpha 0.2: rank ceil(10 * 0.8) = 8 -> 0.8
    p_pos = 1 - np.arange(1, 10) / 10
    y = np.r_[np.ones(9), np.zeros(3)]
    p = np.r_[p_pos, [0.1, 0.2, 0.3]]
    q = C.fit_thresholds(y, p, alpha=0.2)
    assert q[1] == pytest.approx(0.8)
    # 3 negatives: rank ceil(4 * 0.8) = 4 > 3 -> the label is always included
    assert np.isinf(q[0])


def test_sets_and_rates_hand_computed():
    sets = C.predict_sets([0.05, 0.5, 0.95], [0.2, 0.2])  # include k when 1 - p_k <= 0.2
    assert sets.tolist() == [[True, False], [False, False], [False, True]]
    assert C.singleton_rate(sets) == pytest.approx(2 / 3)
    assert C.empty_rate(sets) == pytest.approx(1 / 3)
    assert C.class_coverage([0, 1, 1], sets) == {0: 1.0, 1: 0.5}


def test_alpha_outside_unit_interval_is_rejected():
    with pytest.raises(ValueError):
        C.fit_thresholds([0, 1], [0.2, 0.8], alpha=1.5)
