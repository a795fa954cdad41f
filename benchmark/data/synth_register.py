"""Register variables and the register risk of the synthetic cohort (no labels here).

``draw_pool(rng, n)`` draws ``n`` fracture patients from the population model (marginals
modelled on Swedish registers, close to those of NFF patients); ``risk(pool)`` is the
known register risk g(x) whose logit, scaled by the register strength, drives P(AFF | x);
``add_noise_columns`` adds the columns that carry no signal (sparse diagnosis and drug
indicators, laboratory values and categoricals with realistic missingness).

>>> import numpy as np
>>> pool = draw_pool(np.random.default_rng(0), 1000)
>>> g = risk(pool)           # one value per row, larger = more AFF-like
>>> len(g) == len(pool)
True

Every column the risk reads is observed without missing values, so the oracle posterior
computed from g(x) is attainable from the register file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SITES = ["Karolinska", "Sahlgrenska", "Skane", "Uppsala", "Linkoping", "Orebro", "Umea", "Vasteras"]

# (column, prevalence) of binary disease-group and drug flags; the risk uses a few of them
FLAGS = {
    "cardiovascular": 0.42, "diabetes": 0.17, "malignancy": 0.12, "previous_fracture": 0.30,
    "dementia": 0.14, "stroke": 0.11, "renal_failure": 0.08, "copd": 0.10, "parkinson": 0.03,
    "alcohol_abuse": 0.04, "asthma": 0.07, "ibd": 0.01, "hyperthyroidism": 0.03,
    "hypothyroidism": 0.09, "liver_disease": 0.02, "falls_history": 0.22,
    "antiepileptics": 0.06, "antidepressants": 0.22, "opioids": 0.20, "benzodiazepines": 0.16,
    "anticoagulants": 0.18, "thiazides": 0.15, "loop_diuretics": 0.20, "statins": 0.30,
    "levothyroxine": 0.09, "aromatase_inhibitors": 0.01, "calcium_vitd": 0.25,
}
# flags commoner in the old (their prevalence rises with age)
AGE_RELATED = ("cardiovascular", "dementia", "stroke", "renal_failure", "falls_history")
# the flags counted in the Charlson-like comorbidity index (``charlson_index``)
CHRONIC = ("cardiovascular", "diabetes", "malignancy", "dementia", "stroke", "renal_failure", "copd",
           "parkinson", "liver_disease")
# columns derived from the same latent quantity (a use flag, its years and its dispensations; the
# comorbidity index and the flags it counts): a model may read one in place of another
PROXIES = {
    "bisfo": ("bisfo_d", "bisfo_n"), "bisfo_d": ("bisfo", "bisfo_n"), "bisfo_n": ("bisfo", "bisfo_d"),
    "kort": ("kort_d", "kort_n"), "kort_d": ("kort", "kort_n"), "kort_n": ("kort", "kort_d"),
    "proton": ("proton_d",), "proton_d": ("proton",),
    "charlson_index": CHRONIC, **{flag: ("charlson_index",) for flag in CHRONIC},
}


def _sig(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def draw_pool(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """The register variables the risk depends on (and those correlated with them)."""
    age = np.clip(np.round(101.0 - rng.gamma(4.0, 5.0, n)), 50, 101).astype(np.int64)
    a = (age - 81.0) / 10.0
    female = rng.random(n) < 0.70
    osteoporosis = rng.random(n) < _sig(-1.5 + 1.2 * female + 0.3 * a)
    ra = rng.random(n) < 0.04
    flags = {}
    for name, prev in FLAGS.items():
        # age-related conditions are commoner in the old
        slope = 0.5 if name in AGE_RELATED else 0.0
        flags[name] = rng.random(n) < _sig(np.log(prev / (1 - prev)) + slope * a)
    bisfo = rng.random(n) < _sig(-2.4 + 2.2 * osteoporosis + 0.5 * female + 0.6 * ra)
    bisfo_d = np.where(bisfo, np.round(rng.gamma(1.6, 2.2, n), 1), 0.0)
    bisfo_d = np.where(bisfo & (bisfo_d < 0.1), 0.1, bisfo_d)
    bisfo_n = np.where(bisfo, 1 + rng.poisson(3.5 * bisfo_d), 0)
    kort = rng.random(n) < _sig(-2.3 + 2.0 * ra + 0.8 * flags["copd"] + 0.6 * flags["asthma"])
    kort_d = np.where(kort, np.round(rng.gamma(1.3, 1.8, n), 1), 0.0)
    kort_n = np.where(kort, 1 + rng.poisson(4.0 * kort_d), 0)
    proton = rng.random(n) < 0.30
    proton_d = np.where(proton, np.round(rng.gamma(1.5, 2.0, n), 1), 0.0)
    hrt = female & (rng.random(n) < 0.06)
    serm = female & (rng.random(n) < 0.015)
    chronic = sum(flags[k].astype(np.int64) for k in CHRONIC)
    charlson = chronic + rng.poisson(np.clip(0.6 + 0.4 * a, 0.1, None))
    df = pd.DataFrame({
        "age": age,
        "sex": np.where(female, "F", "M"),
        "osteoporosis": osteoporosis.astype(np.int64),
        "bisfo": bisfo.astype(np.int64),
        "bisfo_d": bisfo_d,
        "bisfo_n": bisfo_n.astype(np.int64),
        "kort": kort.astype(np.int64),
        "kort_d": kort_d,
        "kort_n": kort_n.astype(np.int64),
        "proton": proton.astype(np.int64),
        "proton_d": proton_d,
        "ra": ra.astype(np.int64),
        "hrt": hrt.astype(np.int64),
        "serm": serm.astype(np.int64),
        "charlson_index": charlson.astype(np.int64),
    })
    for name, v in flags.items():
        df[name] = v.astype(np.int64)
    return df


def risk(x: pd.DataFrame) -> np.ndarray:
    """The register risk g(x) (a logit up to a constant) with thresholds and interactions.

    Risk rises steeply with years of bisphosphonate use (steps at 3 and 5 years), with
    glucocorticoids (more so together with bisphosphonates), is higher in women and the
    younger, and lower with comorbidity and dementia.
    """
    age = x["age"].to_numpy(float)
    female = (x["sex"].to_numpy() == "F").astype(float)
    bisfo = x["bisfo"].to_numpy(float)
    bd = x["bisfo_d"].to_numpy(float)
    kort = x["kort"].to_numpy(float)
    return (
        -0.06 * (age - 81.0)
        + 1.1 * female
        + 1.5 * bisfo
        + 0.6 * (bd >= 3.0) + 0.5 * (bd >= 5.0) + 0.06 * np.minimum(bd, 10.0)
        + 0.6 * kort + 0.5 * kort * bisfo
        + 0.2 * np.minimum(x["kort_d"].to_numpy(float), 5.0)
        + 0.35 * x["proton"].to_numpy(float)
        + 0.4 * x["ra"].to_numpy(float)
        - 0.15 * x["charlson_index"].to_numpy(float)
        - 0.5 * x["dementia"].to_numpy(float)
    )


# what ``risk`` reads and which way each column moves it: (sign, the level a categorical's sign is for)
RISK_SIGNS = {
    "age": (-1, None), "sex": (1, "F"), "bisfo": (1, None), "bisfo_d": (1, None), "kort": (1, None),
    "kort_d": (1, None), "proton": (1, None), "ra": (1, None), "charlson_index": (-1, None), "dementia": (-1, None),
}


def add_noise_columns(rng: np.random.Generator, reg: pd.DataFrame, n_sparse: int) -> pd.DataFrame:
    """Columns without signal: labs, categoricals and ``n_sparse`` sparse 0/1 indicators.

    Missingness: BMI missing more often when it is high (not at random), smoking status
    missing more often for current smokers (not at random), vitamin D measured mostly in
    patients with an osteoporosis diagnosis (at random given an observed column).
    """
    n = len(reg)
    age = reg["age"].to_numpy(float)
    out = {}
    out["site"] = np.array(SITES)[rng.choice(len(SITES), n, p=np.linspace(2, 1, len(SITES)) / np.linspace(2, 1, len(SITES)).sum())]
    out["diagnosis_year"] = rng.integers(2008, 2011, n)
    bmi = np.round(rng.normal(25.5 - 0.08 * (age - 81), 4.2, n), 1)
    out["bmi"] = np.where(rng.random(n) < _sig(-1.2 + 0.25 * (bmi - 25.5)), np.nan, bmi)
    smoke = np.array(["never", "former", "current"])[rng.choice(3, n, p=[0.5, 0.35, 0.15])]
    miss_s = rng.random(n) < np.where(smoke == "current", 0.6, 0.25)
    out["smoking"] = np.where(miss_s, None, smoke)
    out["living"] = np.array(["own_home", "nursing_home", "assisted"])[rng.choice(3, n, p=[0.72, 0.18, 0.10])]
    vitd = np.round(rng.lognormal(np.log(55), 0.45, n), 0)
    measured = rng.random(n) < np.where(reg["osteoporosis"].to_numpy() == 1, 0.7, 0.15)
    out["vitamin_d"] = np.where(measured, vitd, np.nan)
    crea = np.round(rng.lognormal(np.log(80), 0.35, n), 0)
    out["creatinine"] = np.where(rng.random(n) < 0.2, np.nan, crea)
    hb = np.round(rng.normal(125, 15, n), 0)
    out["hemoglobin"] = np.where(rng.random(n) < 0.15, np.nan, hb)
    out["albumin"] = np.where(rng.random(n) < 0.45, np.nan, np.round(rng.normal(36, 5, n), 0))
    out["n_hospital_days_prev_year"] = rng.negative_binomial(0.5, 0.08, n)
    out["n_prescriptions_prev_year"] = rng.poisson(6.0, n)
    out["n_outpatient_visits"] = rng.poisson(3.0, n)
    names = sparse_names(n_sparse)
    prev = np.exp(rng.uniform(np.log(0.002), np.log(0.08), n_sparse))
    sparse = (rng.random((n, n_sparse)) < prev).astype(np.int64)
    extra = pd.DataFrame(out, index=reg.index)
    return pd.concat([reg, extra, pd.DataFrame(sparse, columns=names, index=reg.index)], axis=1)


def sparse_names(k: int) -> list[str]:
    """``k`` distinct ICD-10 (``dx_``) and ATC (``atc_``) style indicator names, fixed order."""
    rng = np.random.default_rng(12345)
    names: list[str] = []
    seen = set()
    atc = "ABCDGHJLMNPRS"
    while len(names) < k:
        if len(names) % 2 == 0:
            name = f"dx_{chr(65 + rng.integers(0, 26))}{rng.integers(0, 100):02d}"
        else:
            name = (f"atc_{atc[rng.integers(0, len(atc))]}{rng.integers(1, 15):02d}"
                    f"{chr(65 + rng.integers(0, 8))}{chr(65 + rng.integers(0, 8))}")
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names
