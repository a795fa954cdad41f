"""Calibration of fixed predictions on a cohort, with intervals that keep the variance of the events.

    oe, lo, hi, se_log = oe_interval(y, p)        # observed / expected AFF, 95 % interval
    fit = logistic_calibration(y, p)              # citl, slope (and their standard errors)

A bootstrap that keeps each class's size (as the leaderboard's does) holds the number of
events fixed, and the observed count is the main source of uncertainty of O/E and of
calibration-in-the-large: such intervals come out several times too narrow. Here:

- O/E: ``se(log O/E) = sqrt((1 - O/N) / O)`` (the binomial variance of the observed count, the
  predictions held fixed; Debray et al. 2017), interval ``O/E * exp(-/+ 1.96 se)``;
- calibration-in-the-large ``a`` in ``logit P(y) = a + logit(p)`` and the slope ``b`` in
  ``logit P(y) = c + b logit(p)``, each by maximum likelihood with its Wald standard error
  (the inverse Fisher information of the fit); intervals ``estimate -/+ 1.96 se``.

Van Calster et al. 2016 (the calibration hierarchy): mean (O/E, calibration-in-the-large), weak
(slope), moderate (the reliability curve). NaN where a class is missing or a fit cannot
converge (perfect separation).

>>> import numpy as np
>>> rng = np.random.default_rng(0); p = rng.beta(2, 8, 4000); y = (rng.random(4000) < p).astype(int)
>>> oe, lo, hi, _ = oe_interval(y, p); bool(lo < 1 < hi)
True
>>> fit = logistic_calibration(y, p); round(fit["slope"], 1)
1.0
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit, logit

Z95 = 1.959963984540054
P_CLIP = 1e-10
NAN = float("nan")


def oe_interval(y, p) -> tuple[float, float, float, float]:
    """(O/E, lo, hi, se of log O/E); NaN without events or with no predicted risk."""
    y, p = np.asarray(y, dtype=float).ravel(), np.asarray(p, dtype=float).ravel()
    o, e, n = float(y.sum()), float(p.sum()), y.size
    if n == 0 or e <= 0 or o <= 0:
        return (o / e if e > 0 else NAN), NAN, NAN, NAN
    se = math.sqrt(max(1.0 - o / n, 0.0) / o)
    oe = o / e
    return oe, oe * math.exp(-Z95 * se), oe * math.exp(Z95 * se), se


def _loglik(y: np.ndarray, x: np.ndarray, c: np.ndarray) -> float:
    eta = c[0] + c[1] * x
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


def _newton(y: np.ndarray, x: np.ndarray, slope: bool, start: np.ndarray | None = None,
            max_iter: int = 100) -> tuple[np.ndarray, np.ndarray | None]:
    """ML fit of logit P(y) = c0 + c1 x (c1 fixed at 1 unless ``slope``) by Newton's method with step
    halving (the likelihood never decreases); (coefficients, covariance) or (NaN, None) when it does not
    converge."""
    c = np.array([0.0, 1.0]) if start is None else np.asarray(start, dtype=float).copy()
    ll = _loglik(y, x, c)

    def info(c: np.ndarray) -> np.ndarray:
        mu = expit(c[0] + c[1] * x)
        w = mu * (1 - mu)
        return np.array([[w.sum(), (w * x).sum()], [(w * x).sum(), (w * x * x).sum()]])

    for _ in range(max_iter):
        mu = expit(c[0] + c[1] * x)
        g = np.array([np.sum(y - mu), np.sum((y - mu) * x)])
        h = info(c)
        if not slope:
            if h[0, 0] <= 1e-300:
                return np.full(2, NAN), None
            step = np.array([g[0] / h[0, 0], 0.0])
        else:
            if np.linalg.det(h) <= 1e-300:
                return np.full(2, NAN), None
            step = np.linalg.solve(h, g)
        t = 1.0
        for _ in range(60):   # halve the step until the likelihood does not fall
            new = c + t * step
            new_ll = _loglik(y, x, new)
            if new_ll >= ll - 1e-12 * abs(ll):
                break
            t /= 2
        c, ll = new, new_ll
        if float(np.max(np.abs(t * step))) < 1e-10:
            h = info(c)
            if slope and np.linalg.det(h) <= 1e-300:
                return np.full(2, NAN), None
            cov = np.array([[1.0 / h[0, 0], 0.0], [0.0, 0.0]]) if not slope else np.linalg.inv(h)
            return c, cov
    return np.full(2, NAN), None


def _separated(y: np.ndarray, x: np.ndarray) -> bool:
    """The classes do not overlap in x: the slope's likelihood has no maximum."""
    pos, neg = x[y == 1], x[y == 0]
    return pos.size > 0 and neg.size > 0 and (pos.min() >= neg.max() or neg.min() >= pos.max())


def logistic_calibration(y, p) -> dict[str, float]:
    """``citl``, ``citl_se``, ``citl_lo``, ``citl_hi`` and ``slope``, ``slope_se``, ``slope_lo``, ``slope_hi``
    (with ``slope_intercept``: c of the slope fit); NaN where they cannot be estimated."""
    y = np.asarray(y, dtype=float).ravel()
    x = logit(np.clip(np.asarray(p, dtype=float).ravel(), P_CLIP, 1 - P_CLIP))
    out = {k: NAN for k in ("citl", "citl_se", "citl_lo", "citl_hi", "slope", "slope_se", "slope_lo", "slope_hi",
                            "slope_intercept")}
    if y.size == 0 or y.min() == y.max():
        return out
    c, cov = _newton(y, x, slope=False)
    if cov is not None:
        se = math.sqrt(cov[0, 0])
        out.update(citl=float(c[0]), citl_se=se, citl_lo=float(c[0] - Z95 * se), citl_hi=float(c[0] + Z95 * se))
    if not _separated(y, x):
        c, cov = _newton(y, x, slope=True, start=np.array([out["citl"], 1.0]) if out["citl"] == out["citl"] else None)
        if cov is not None and cov[1, 1] >= 0:
            se = math.sqrt(cov[1, 1])
            out.update(slope=float(c[1]), slope_se=se, slope_lo=float(c[1] - Z95 * se),
                       slope_hi=float(c[1] + Z95 * se), slope_intercept=float(c[0]))
    return out
