"""The synthetic cohort's ground truth for explanations: ``truth.json`` beside the data.

The generator knows which register columns carry the risk and where each image's signs are
drawn, so explanations can be scored (``benchmark.evaluate.recovery``,
``benchmark.evaluate.localisation``). ``synth`` writes::

    {"format": "aff-benchmark-truth/1",
     "register": {"rule": "...", "risk": "...",
                  "signal": [{"column": "bisfo", "sign": 1, "level": null, "effect": 0.076}, ...],
                  "weak": [...],                    # read by the risk, too weak to rank (effect below the rule)
                  "proxies": {"bisfo": ["bisfo_d", "bisfo_n"], ...},
                  "noise": ["site", "bmi", ..., "dx_A12", ...]},
     "images": {"regions": ["line", "spike", "beak", "fragments"],
                "files": {"SYN000001/SYN000001_1.dcm": {"size": [256, 256],
                                                        "boxes": {"line": [x0, y0, x1, y1], ...}}}}}

**The rule.** A column the risk reads is *signal* when shuffling it among the cohort's
patients costs the exact register posterior at least ``SIGNAL_MIN_EFFECT`` of expected AUC
(the AUC against labels drawn from that posterior, so the label draw adds no noise; mean of
five seeded shuffles); otherwise it is *weak*: the risk reads it, but no cohort of this size
can rank it. ``sign`` is the way the column moves the risk (for a categorical, the way being
``level`` does). *Proxies* are columns derived from the same quantity (a drug flag, its years
and its dispensations; the comorbidity index and the flags it counts): a model may read a
proxy in place of a risk column. *Noise* are the columns drawn independently of the risk
(laboratory values, site, smoking, living, sparse diagnosis and drug indicators). Other pool
columns (drug and disease flags the risk does not read) are neither: some correlate with
risk columns (osteoporosis with bisphosphonates, COPD with glucocorticoids).

Boxes are fractions of the image's width and height (``size`` is [rows, columns]).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmark.data import synth_register
from benchmark.data.synth_images import REGIONS
from benchmark.data.synth_risk import RiskModel

FORMAT = "aff-benchmark-truth/1"
SIGNAL_MIN_EFFECT = 0.005   # expected-AUC cost of shuffling a risk column for it to count as signal
N_SHUFFLES = 5
RULE = (f"signal: a column the risk reads whose shuffling costs the exact register posterior at least "
        f"{SIGNAL_MIN_EFFECT} expected AUC in this cohort; weak: the other risk columns; proxies: columns derived "
        "from the same quantity; noise: columns drawn independently of the risk")


def expected_auc(score: np.ndarray, p: np.ndarray) -> float:
    """The AUC of ``score`` expected over labels drawn from ``p`` (ties count one half)."""
    order = np.argsort(score, kind="mergesort")
    s, w1 = score[order], p[order]
    w0 = 1.0 - w1
    # negatives' weight below each score, ties split in half
    _, first, counts = np.unique(s, return_index=True, return_counts=True)
    neg_cum = np.concatenate([[0.0], np.cumsum(w0)])
    below = neg_cum[first]
    tied = neg_cum[first + counts] - below
    group = np.repeat(np.arange(len(first)), counts)
    num = float(np.sum(w1 * (below[group] + 0.5 * tied[group])) - 0.5 * np.sum(w1 * w0))   # no self-pairs
    den = float(w1.sum() * w0.sum() - np.sum(w1 * w0))
    return num / den if den > 0 else float("nan")


def register_truth(risk: RiskModel, register: pd.DataFrame, posterior: np.ndarray, pool_columns: list[str],
                   seed: int) -> dict:
    """The register part of ``truth.json`` for a cohort whose risk is ``risk`` (module docstring)."""
    rng = np.random.default_rng([int(seed), 11])
    g = risk(register)
    base = expected_auc(g, posterior)
    signal, weak = [], []
    for col, (sign, level) in risk.signs.items():
        drops = []
        for _ in range(N_SHUFFLES):
            shuffled = register.copy()
            shuffled[col] = register[col].to_numpy()[rng.permutation(len(register))]
            drops.append(base - expected_auc(risk(shuffled), posterior))
        entry = {"column": col, "sign": int(sign), "level": level, "effect": round(float(np.mean(drops)), 5)}
        (signal if entry["effect"] >= SIGNAL_MIN_EFFECT else weak).append(entry)
    features = [c for c in register.columns if c not in ("patient_id", "group")]
    read = set(risk.signs)
    proxies = {c: [q for q in synth_register.PROXIES.get(c, ()) if q in features and q not in read] for c in risk.signs}
    pool = set(pool_columns)
    return {
        "rule": RULE, "risk": risk.description,
        "signal": sorted(signal, key=lambda e: -e["effect"]), "weak": sorted(weak, key=lambda e: -e["effect"]),
        "proxies": {c: q for c, q in proxies.items() if q},
        "noise": [c for c in features if c not in pool],
    }


def image_truth(views: list[tuple[str, list[int], dict]]) -> dict:
    """The images part of ``truth.json`` from (path relative to images/, [rows, cols], boxes) per image."""
    return {"regions": list(REGIONS),
            "files": {rel: {"size": list(size), "boxes": boxes} for rel, size, boxes in sorted(views)}}
