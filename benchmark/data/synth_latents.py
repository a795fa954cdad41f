"""Image latents z | y of the synthetic cohort and their exact log-likelihood ratio.

One fracture per patient (all views show the same z). Class-conditional densities, AFF
(y=1) vs NFF (y=0), all overlapping; ``strength`` moves each parameter pair towards its
midpoint (0: identical, no evidence; 1: the defaults below):

- ``angle`` (degrees from transverse): 0.5 N(+c_y, s_y) + 0.5 N(-c_y, s_y); AFF near 0
  (transverse), NFF oblique/spiral.
- ``fragments`` (comminution): Poisson(lambda_y); AFF mostly none.
- ``spike`` (length of the oblique medial part, in shaft radii): log-normal; longer in AFF.
- ``beaking`` (lateral cortical thickening, in cortex thicknesses): log-normal; thicker
  in AFF.

The values are drawn in the image through monotone, exaggerated maps
(``synth_images._drawn_angle``, ``_spike_drop``, ``_beak_height``); clipping happens only
there, never here, so the densities below stay exact.

>>> import numpy as np
>>> z = draw(np.random.default_rng(0), np.array([1, 0]), strength=1.0)
>>> llr(z, strength=1.0).shape
(2,)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# name: (AFF params, NFF params)
PARAMS = {
    "angle": ((4.0, 10.0), (22.0, 15.0)),               # (centre, sd) of each half of the mixture
    "fragments": ((0.15,), (0.7,)),                     # Poisson rate
    "spike": ((np.log(0.9), 0.5), (np.log(0.4), 0.6)),  # log-normal (mu, sigma)
    "beaking": ((np.log(0.6), 0.5), (np.log(0.25), 0.6)),
}


def _params(name: str, y: int, strength: float) -> tuple[float, ...]:
    p1, p0 = PARAMS[name]
    if name == "fragments":
        mid = 0.5 * (np.log(p1[0]) + np.log(p0[0]))
        own = np.log((p1, p0)[1 - y][0])
        return (float(np.exp(mid + strength * (own - mid))),)
    own = (p1, p0)[1 - y]
    out = []
    for a, b, o in zip(p1, p0, own):
        mid = 0.5 * (a + b)
        out.append(mid + strength * (o - mid))
    out[1] = max(out[1], 1e-3)
    return tuple(out)


def _norm_logpdf(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)


def _logpdf(name: str, v: np.ndarray, y: int, strength: float) -> np.ndarray:
    p = _params(name, y, strength)
    if name == "angle":
        return np.logaddexp(_norm_logpdf(v, p[0], p[1]), _norm_logpdf(v, -p[0], p[1])) - np.log(2.0)
    if name == "fragments":
        from scipy.special import gammaln
        return v * np.log(p[0]) - p[0] - gammaln(v + 1.0)
    lv = np.log(v)
    return _norm_logpdf(lv, p[0], p[1]) - lv


def draw(rng: np.random.Generator, y: np.ndarray, strength: float) -> pd.DataFrame:
    """Latents for patients with true labels ``y`` (one row each)."""
    n = len(y)
    out = {}
    for name in PARAMS:
        vals = np.empty(n)
        for cls in (0, 1):
            idx = np.flatnonzero(y == cls)
            p = _params(name, cls, strength)
            if name == "angle":
                sign = np.where(rng.random(len(idx)) < 0.5, 1.0, -1.0)
                vals[idx] = rng.normal(sign * p[0], p[1])
            elif name == "fragments":
                vals[idx] = rng.poisson(p[0], len(idx))
            else:
                vals[idx] = np.exp(rng.normal(p[0], p[1], len(idx)))
        out[name] = vals
    out["fragments"] = out["fragments"].astype(np.int64)
    return pd.DataFrame(out)


def llr(z: pd.DataFrame, strength: float) -> np.ndarray:
    """log p(z | AFF) - log p(z | NFF), exact (the latents are independent given y)."""
    total = np.zeros(len(z))
    for name in PARAMS:
        v = z[name].to_numpy(float)
        total += _logpdf(name, v, 1, strength) - _logpdf(name, v, 0, strength)
    return total
