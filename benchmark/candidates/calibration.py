"""Post-hoc calibration, fitted on inner out-of-fold predictions only (never on outer test).

    >>> cal = Calibrator("platt").fit(p_oof, y_oof)
    >>> p_test_cal = cal.transform(p_test)
    >>> prob, prob_raw, members = bag_prediction(cal, raw_members)   # (K, n) raw member predictions

Methods: ``platt`` (logistic regression on the logit: a*logit(p)+b), ``temperature``
(a*logit(p), a > 0), ``isotonic`` (by choice only: step-shaped, can overfit with few
positives), ``none``. When the out-of-fold part has a single class, it falls back to none.

**Calibrate what is predicted.** The calibrator is fitted on out-of-fold predictions, each
made by *one* bag member. A test patient is predicted by *all* K members, and their mean
is a different kind of prediction: averaging removes the members' independent noise, so
the mean logit carries more signal per unit of spread than one member's logit, and a
calibrator fitted on single members makes it under-confident (calibration slope > 1; about
1.27 for three members whose noise variance is half the signal's). ``bag_prediction``
therefore maps the mean logit back to the scale of one member before calibrating it
(regression calibration under additive member noise): with ``z_k`` the members' logits,
``z_bar`` their mean and ``mu`` the mean of all member logits over the test patients,

    z_star = mu + r * (z_bar - mu),   r = mean_k Var_i(z_ik) / Var_i(z_bar_i)   (clipped to [1, K])

so that ``E[signal | z_star as one member] = E[signal | z_bar]``; ``r`` uses the members'
predictions only (no label). Identical members give ``r = 1`` (nothing changes). Each
member's own calibrated prediction (the same kind as the out-of-fold ones) is kept for the
uncertainty measures. With ``none`` the mean logit is used as it is.

**Discrimination is measured on an order-preserving map.** Isotonic regression is a step
function: it ties predictions the raw score told apart (about 26 distinct values per fold),
which lowers AUC. ``order_preserving(cal, p, y)`` is the calibrator whose map keeps the raw
score's order: ``cal`` itself for Platt, temperature and none, and for isotonic a Platt map
fitted on the same out-of-fold predictions. Its output (``prob_rank`` in a run's parts) puts
every outer fold on one probability scale, so AUC, AP and DeLong pooled over folds compare
like with like; calibration metrics use the calibrated ``prob``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit

METHODS = ("platt", "temperature", "isotonic", "none")
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    return logit(np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS))


class Calibrator:
    def __init__(self, method: str = "platt") -> None:
        if method not in METHODS:
            raise ValueError(f"unknown calibration {method!r}; use one of {METHODS}")
        self.method = method
        self.a, self.b, self._iso = 1.0, 0.0, None
        self.fitted_method = method

    def fit(self, p: np.ndarray, y: np.ndarray) -> "Calibrator":
        p, y = np.asarray(p, dtype=np.float64), np.asarray(y)
        ok = np.isfinite(p)
        p, y = p[ok], y[ok]
        if self.method == "none" or len(np.unique(y)) < 2:
            self.fitted_method = "none"
            return self
        z = _logit(p)
        if self.method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e4, solver="lbfgs", max_iter=1000).fit(z[:, None], y)
            self.a, self.b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        elif self.method == "temperature":
            def nll(log_a: float) -> float:
                q = np.clip(expit(np.exp(log_a) * z), _EPS, 1 - _EPS)
                return -float(np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

            self.a = float(np.exp(minimize_scalar(nll, bounds=(-5, 5), method="bounded").x))
        else:
            from sklearn.isotonic import IsotonicRegression

            self._iso = IsotonicRegression(out_of_bounds="clip", y_min=_EPS, y_max=1 - _EPS).fit(p, y)
        return self

    def transform(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        if self.fitted_method == "none":
            return p.copy()
        if self._iso is not None:   # IsotonicRegression.predict takes a 1-d array
            return self._iso.predict(np.nan_to_num(p, nan=0.5).ravel()).reshape(p.shape)
        return expit(self.a * _logit(p) + self.b)


def order_preserving(cal: Calibrator, p: np.ndarray, y: np.ndarray) -> Calibrator:
    """``cal`` when its map keeps the order of the raw score, else (isotonic) Platt scaling fitted on
    the same predictions ``p`` and labels ``y`` (module docstring)."""
    return Calibrator("platt").fit(p, y) if cal._iso is not None else cal


def member_scale_ratio(z: np.ndarray) -> float:
    """``r`` of the module docstring for member logits ``z`` (K, n): single-member over mean spread."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2 or z.shape[1] < 3:
        return 1.0
    ok = np.isfinite(z).all(axis=0)
    z = z[:, ok]
    if z.shape[1] < 3:
        return 1.0
    var_single = float(np.mean(np.var(z, axis=1)))
    var_mean = float(np.var(z.mean(axis=0)))
    if not (var_mean > 1e-12):
        return 1.0
    return float(np.clip(var_single / var_mean, 1.0, z.shape[0]))


def bag_prediction(cal: Calibrator, raw_members: np.ndarray, *, r: float | None = None,
                   mu: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prob, prob_raw, members) of test patients from the bag's raw member predictions (K, n).

    ``prob`` is the calibrated single-member-equivalent mean (module docstring); ``prob_raw``
    the sigmoid of the mean logit; ``members`` each member calibrated on its own (K, n).
    ``r`` and ``mu`` fixed in advance (an exported model: a patient's prediction must not
    depend on who else is in the batch) replace the estimates from these patients.
    """
    raw = np.atleast_2d(np.asarray(raw_members, dtype=np.float64))
    z = _logit(raw)
    z_bar = z.mean(axis=0)
    prob_raw = expit(z_bar)
    members = cal.transform(raw)
    if cal.fitted_method == "none":
        return prob_raw, prob_raw, members
    if r is None:
        r = member_scale_ratio(z)
    if mu is None:
        mu = float(np.mean(z[np.isfinite(z)])) if np.isfinite(z).any() else 0.0
    z_star = mu + r * (z_bar - mu)
    return cal.transform(expit(z_star)), prob_raw, members
