"""Which register columns carry the synthetic cohort's risk: the default risk, or one drawn by a seed.

``risk_model(None)`` is the default register risk (``synth_register.risk``: bisphosphonate
years with steps, glucocorticoids and their interaction, age, sex, comorbidity);
``risk_model(seed)`` draws another set of risk columns from the register pool, for checking
that an explanation finds whatever columns carry the risk, not the default's names::

    model = risk_model(3)
    g = model(pool)                  # the risk logit g(x), one value per row
    model.signs                      # {column: (sign, level)}: which way each column moves g

A drawn risk reads one continuous column (``age`` or ``charlson_index``), a duration with a
step at two years (``bisfo_d`` or ``proton_d``), four binary flags (an interaction between two
of the same sign) and ``sex`` half the time. The flags have a prevalence of at least 15 % and
are drawn in the pool independently of age, sex and each other (not the age-related flags,
not those the comorbidity index counts, not the duration's own flag), so no risk column
stands in for another. Every term is monotone in its column and large enough to matter (a
logit spread of about 0.3 to 0.7). The realism facts of the default (AFF younger, mostly
women, bisphosphonate users) do not hold for a drawn risk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from benchmark.data import synth_register

# binary pool columns a drawn risk may read: a prevalence of at least 15 %, drawn independently of age, sex and
# every other pool column (not age-related, not counted in the comorbidity index), and PPI use
DRAWN_FLAGS = tuple(sorted([name for name, prev in synth_register.FLAGS.items()
                            if prev >= 0.15 and name not in synth_register.AGE_RELATED + synth_register.CHRONIC]
                           + ["proton"]))
DRAWN_CONTINUOUS = {"age": 0.08, "charlson_index": 0.5}   # column: coefficient (a logit spread of ~0.7)
DRAWN_DURATIONS = ("bisfo_d", "proton_d")


@dataclass(frozen=True)
class RiskModel:
    """The register risk g(x) and the columns it reads (``signs``: column -> (sign, level or None))."""

    fn: Callable[[pd.DataFrame], np.ndarray]
    signs: dict[str, tuple[int, str | None]]
    description: str = ""
    seed: int | None = None
    terms: list[str] = field(default_factory=list)

    def __call__(self, x: pd.DataFrame) -> np.ndarray:
        return self.fn(x)


DEFAULT = RiskModel(synth_register.risk, dict(synth_register.RISK_SIGNS),
                    "the default risk: bisphosphonate years (steps at 3 and 5), glucocorticoids with a "
                    "bisphosphonate interaction, younger age, female sex, PPIs, RA, less comorbidity and dementia")


def risk_model(seed: int | None) -> RiskModel:
    """The default risk (``seed`` None) or the risk drawn by ``seed`` (module docstring)."""
    if seed is None:
        return DEFAULT
    rng = np.random.default_rng([int(seed), 77])
    terms: list[tuple[str, Callable[[pd.DataFrame], np.ndarray]]] = []
    signs: dict[str, tuple[int, str | None]] = {}

    def sign() -> int:
        return 1 if rng.random() < 0.5 else -1

    cont = list(DRAWN_CONTINUOUS)[int(rng.integers(len(DRAWN_CONTINUOUS)))]
    s_c = sign()
    coef = DRAWN_CONTINUOUS[cont]
    centre = 81.0 if cont == "age" else 1.0
    terms.append((f"{s_c * coef:+.2f} * ({cont} - {centre:g})",
                  lambda x, c=cont, k=s_c * coef, m=centre: k * (x[c].to_numpy(float) - m)))
    signs[cont] = (s_c, None)
    dur = DRAWN_DURATIONS[int(rng.integers(len(DRAWN_DURATIONS)))]
    eligible = [f for f in DRAWN_FLAGS if f != dur.removesuffix("_d")]   # not a duration's own flag
    flags = [str(f) for f in rng.choice(eligible, 4, replace=False)]
    flag_signs = [sign() for _ in flags]
    for name, s_f in zip(flags, flag_signs):
        k = s_f * float(rng.uniform(0.9, 1.3))
        terms.append((f"{k:+.2f} * {name}", lambda x, c=name, k=k: k * x[c].to_numpy(float)))
        signs[name] = (s_f, None)
    pair = next(((a, b) for i, a in enumerate(range(4)) for b in range(i + 1, 4)
                 if flag_signs[a] == flag_signs[b]), None)
    if pair is not None:   # an interaction that strengthens two effects of the same sign
        a, b = flags[pair[0]], flags[pair[1]]
        k = 0.5 * flag_signs[pair[0]]
        terms.append((f"{k:+.2f} * {a} * {b}",
                       lambda x, a=a, b=b, k=k: k * x[a].to_numpy(float) * x[b].to_numpy(float)))
    s_d = sign()
    terms.append((f"{s_d:+d} * (0.9 * ({dur} >= 2) + 0.08 * min({dur}, 10))",
                  lambda x, c=dur, s=s_d: s * (0.9 * (x[c].to_numpy(float) >= 2.0)
                                               + 0.08 * np.minimum(x[c].to_numpy(float), 10.0))))
    signs[dur] = (s_d, None)
    if rng.random() < 0.5:
        s_s = sign()
        terms.append((f"{0.9 * s_s:+.2f} * (sex == F)",
                      lambda x, s=s_s: 0.9 * s * (x["sex"].to_numpy() == "F").astype(float)))
        signs["sex"] = (s_s, "F")
    fns = [fn for _, fn in terms]

    def g(x: pd.DataFrame) -> np.ndarray:
        return np.sum([fn(x) for fn in fns], axis=0)

    texts = [t for t, _ in terms]
    return RiskModel(g, signs, f"the risk drawn by risk seed {seed}: " + " ".join(texts), seed=int(seed), terms=texts)
