"""The generative model of the synthetic cohort: register, label, image latents, oracle.

``simulate(config)`` does everything but rendering images (fast). Order of draws:

1. A pool of fracture patients with register variables x (``synth_register.draw_pool``).
2. True label y ~ Bernoulli(sigmoid(f(x) + b)), f = register_strength * g(x) (g: the default
   risk, or the one ``risk_seed`` draws, ``synth_risk``), b set so
   the pool prevalence equals the requested one; observed label = y flipped with
   probability ``label_noise``.
3. Case-control sampling: exactly ``n_aff`` observed positives and ``n_patients - n_aff``
   negatives, drawn without replacement from the pool (sampling fractions s1, s0).
4. Image latents z | y (``synth_latents``), independent of x given y; in ``redundant``
   mode the image also shows the register risk f(x) as the cortical thickness.
5. Exact posteriors in the sample (with q(v) = eps + (1 - 2 eps) sigmoid(v)):
   ``oracle_register = sigmoid(logit q(f + b) + log(s1/s0))``,
   ``oracle_both = sigmoid(logit q(f + b + LLR(z)) + log(s1/s0))``,
   ``oracle_image`` = Bayes on z with the sample prevalence (with label noise, the
   class-conditional densities of z are mixtures with the pool's flip fractions);
   in redundant mode ``oracle_image = oracle_both``.

>>> from benchmark.data.synth import SynthConfig
>>> register, latents, oracle = simulate(SynthConfig(n_patients=200, n_aff=20))
>>> int((register["group"] == "AFF").sum())
20
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.data import synth_latents, synth_register, synth_risk
from benchmark.data.synth_site import apply_shifts

MAX_IMAGES = 8


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def _logit_q(v: np.ndarray, eps: float) -> np.ndarray:
    """logit(eps + (1 - 2 eps) sigmoid(v)), exact for eps = 0."""
    if eps == 0:
        return v
    q = eps + (1 - 2 * eps) * _sig(v)
    return np.log(q) - np.log1p(-q)


def _intercept(f: np.ndarray, prevalence: float) -> float:
    lo, hi = -40.0, 40.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _sig(f + mid).mean() < prevalence:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def simulate(config) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(register, latents, oracle) for ``config`` (a ``SynthConfig``); rows align by patient."""
    config.validate()
    n, n1 = config.n_patients, config.n_aff
    n0 = n - n1
    eps = float(config.label_noise)
    rng = np.random.default_rng([config.seed, 1])
    chunk = max(4 * n, 2000)
    risk = synth_risk.risk_model(getattr(config, "risk_seed", None))
    pools, ys, yobs, fs = [], [], [], []
    b = None
    while True:
        pool = synth_register.draw_pool(rng, chunk)
        f = config.register_strength * risk(pool)
        if b is None:
            b = _intercept(f, n1 / n)
        y = (rng.random(chunk) < _sig(f + b)).astype(np.int64)
        flip = rng.random(chunk) < eps
        pools.append(pool)
        ys.append(y)
        yobs.append(np.where(flip, 1 - y, y))
        fs.append(f)
        yo = np.concatenate(yobs)
        if (yo == 1).sum() >= n1 and (yo == 0).sum() >= n0:
            break
    pool = pd.concat(pools, ignore_index=True)
    y_true, f = np.concatenate(ys), np.concatenate(fs)
    pos, neg = np.flatnonzero(yo == 1), np.flatnonzero(yo == 0)
    s1, s0 = n1 / len(pos), n0 / len(neg)
    # fractions of truly positive patients among observed positives / negatives (label noise)
    a_pos, c_neg = float(y_true[pos].mean()), float(y_true[neg].mean())
    pick = np.concatenate([rng.choice(pos, n1, replace=False), rng.choice(neg, n0, replace=False)])
    pick = pick[rng.permutation(n)]

    x = pool.iloc[pick].reset_index(drop=True)
    f, y_true, y_obs = f[pick], y_true[pick], yo[pick]
    ids = [f"SYN{i + 1:06d}" for i in range(n)]
    reg = synth_register.add_noise_columns(np.random.default_rng([config.seed, 2]), x, config.sparse_columns)
    reg = apply_shifts(reg, tuple(getattr(config, "shifts", ())))   # a second site's recording (synth_site)
    reg.insert(0, "group", np.where(y_obs == 1, "AFF", "NFF"))
    reg.insert(0, "patient_id", ids)

    z = synth_latents.draw(np.random.default_rng([config.seed, 3]), y_true, config.image_strength)
    lat = pd.concat([pd.DataFrame({"patient_id": ids, "y_true": y_true, "y": y_obs}), z], axis=1)
    lat = pd.concat([lat, _nuisance(np.random.default_rng([config.seed, 4]), n, config, f)], axis=1)

    llr = synth_latents.llr(z, config.image_strength)
    log_ratio = np.log(s1 / s0)
    o_reg = _sig(_logit_q(f + b, eps) + log_ratio)
    o_both = _sig(_logit_q(f + b + llr, eps) + log_ratio)
    if config.relation == "redundant":
        o_img = o_both
    else:
        e = np.exp(np.clip(llr, -50, 50))
        like1 = a_pos * e + (1 - a_pos)
        like0 = c_neg * e + (1 - c_neg)
        o_img = n1 * like1 / (n1 * like1 + n0 * like0)
    oracle = pd.DataFrame({"patient_id": ids, "oracle_register": o_reg, "oracle_image": o_img,
                           "oracle_both": o_both})
    return reg, lat, oracle


def _nuisance(rng: np.random.Generator, n: int, config, f: np.ndarray) -> pd.DataFrame:
    """Patient-level rendering parameters that do not depend on the label."""
    n_img = np.minimum(1 + rng.poisson(max(config.images_per_patient - 1.0, 0.0), n), MAX_IMAGES)
    cortex = rng.uniform(0.24, 0.36, n)
    if config.relation == "redundant":
        sd = f.std() if f.std() > 0 else 1.0
        cortex = 0.30 + 0.07 * np.tanh((f - f.mean()) / sd)
    implant = rng.choice(["none", "plate", "nail"], n, p=[0.92, 0.04, 0.04])
    return pd.DataFrame({
        "n_images": n_img,
        "side": np.where(rng.random(n) < 0.5, "R", "L"),
        "level": rng.uniform(0.48, 0.70, n),          # fracture height in the canonical frame
        "shift": rng.normal(0.0, 0.6, n),            # transverse displacement, shaft radii
        "shorten": rng.uniform(-0.1, 0.35, n),        # axial displacement, shaft radii
        "angulation": rng.normal(0.0, 5.0, n),        # degrees
        "gap": rng.uniform(0.012, 0.024, n),          # fracture gap width, image fraction
        "cortex": cortex,                             # cortical thickness / shaft radius
        "bow": rng.uniform(-0.04, 0.05, n),
        "radius": rng.uniform(0.052, 0.064, n),
        "implant": implant,
        "seed": rng.integers(0, 2**31 - 1, n),        # per-patient stream for shapes of fragments
    })
