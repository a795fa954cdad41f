"""Post-hoc calibration, fitted on inner out-of-fold predictions only (never on outer test).

    >>> cal = Calibrator("platt").fit(p_oof, y_oof)
    >>> p_test_cal = cal.transform(p_test)

Methods: ``platt`` (logistic regression on the logit: a*logit(p)+b), ``temperature``
(a*logit(p), a > 0), ``isotonic`` (by choice only: step-shaped, can overfit with few
positives), ``none``. When the out-of-fold part has a single class, it falls back to none.
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
        if self._iso is not None:
            return self._iso.predict(np.nan_to_num(p, nan=0.5)).reshape(p.shape)
        return expit(self.a * _logit(p) + self.b)
