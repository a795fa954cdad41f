"""A small register-data part with a planted signal, shared by the register-family tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.data.cohort import PatientData

LEVELS = ["north", "south", "east", "west"]


def make_part(n: int, seed: int, labels: bool = True, p: int = 20) -> PatientData:
    """Planted signal in x0, x1 and the site; NaN in x3; the rest noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    site = rng.choice(LEVELS, size=n)
    logit = 2.0 * X[:, 0] - 1.5 * X[:, 1] + 1.5 * (site == "north") - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(p)])
    df.loc[rng.random(n) < 0.2, "x3"] = np.nan
    df["site"] = pd.Categorical(site, categories=LEVELS + ["unused"])
    return PatientData(np.arange(n), df, None, None, y if labels else None, ["site"])


def unlabelled(part: PatientData) -> PatientData:
    return PatientData(part.patients, part.register.copy(), None, None, None, list(part.categorical))
