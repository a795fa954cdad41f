"""External validation of an exported model: the figures (``validation_page`` writes them as files).

TRIPOD-style external validation compares what the model does on a new, labelled cohort
with what the nested cross-validation of the same procedure estimated. One function
computes the figures of one set of predictions, ``validation_figures(y, prob, ...)``; it is
called at export time on the run's pooled outer-test predictions (stored as JSON in the
bundle) and by ``predict`` on the new cohort. ``validation_page.write_validation`` puts both
side by side.

What is computed (``prob`` is the calibrated P(AFF), ``y`` 1 = AFF):

- ``n, n_pos, prevalence, mean_prob`` (and ``n_boot``, ``seed`` of the bootstrap);
- ``auc`` with a 95 % DeLong interval (``paired_tests.delong_auc_variance``; AUC +/- 1.96 SE,
  clipped to [0, 1]; NaN with fewer than two patients of a class);
- ``brier``, ``log_loss`` with 95 % percentile intervals from a class-stratified bootstrap of
  the patients (``n_boot`` resamples drawn with ``seed``, ``weighted.stratified_counts``; NaN
  when fewer than half of the resamples give a finite value);
- ``citl``, ``cal_slope`` with 95 % Wald intervals of their maximum-likelihood fits, and
  ``oe_ratio`` with the binomial interval of the observed count
  (``evaluate.calibration_ci``: a bootstrap that keeps the class sizes fixes the number of
  events and gives intervals several times too narrow for these three);
- ``ece`` (10 equal-mass bins, ``metrics.ece``);
- at the deployed ``threshold`` (positive when ``prob >= threshold``): ``sensitivity``,
  ``specificity``, ``ppv``, ``npv``, each with a Wilson 95 % score interval;
- per conformal level (``conformal["90"] = [q_NFF, q_AFF]``, ``evaluate/conformal.py``):
  coverage overall, among AFF and among NFF, singleton rate, empty rate, mean set size;
- ``reliability``: equal-mass bins (``metrics.reliability_curve``), at most 10 and at
  least ``MIN_PER_BIN`` patients per bin (one bin below that), so no bin shows one patient;
- ``decision_curve``: net benefit of the model and of treating all, thresholds 0.01..0.50;
- ``notes``: what could not be computed and why. Nothing raises on one class or few
  patients: such metrics are NaN.

Definitions (as in ``evaluate/metrics.py``):

- Calibration-in-the-large (CITL): ``a`` in ``logit P(y=1) = a + logit(prob)`` (logit(prob)
  as offset, slope fixed at 1); 0 is ideal, > 0 means the model under-predicts risk.
  ``oe_ratio`` = observed / expected events = sum(y) / sum(prob); 1 is ideal.
- Calibration slope: ``b`` in ``logit P(y=1) = c + b logit(prob)``; 1 is ideal, < 1 means
  predictions too extreme (overfitting), > 1 too modest.
- Net benefit at threshold t: ``TP/n - FP/n * t / (1 - t)``; treating all gives
  ``prevalence - (1 - prevalence) * t / (1 - t)``, treating none 0.

The returned dict is plain JSON-ready Python (floats, ints, strings, lists, dicts).
NaN stays ``float('nan')`` (``json.dumps`` writes ``NaN``). An infinite conformal
threshold (the label is always in the set) and an infinite decision ``threshold`` (nobody
predicted AFF, as ``metrics.threshold_at_spec`` may return) are stored as the **string**
``"inf"``: read a stored threshold back with ``float(q)``, which works for numbers and for
``"inf"``; ``validation_figures`` accepts either form for the conformal thresholds.

>>> import json, numpy as np
>>> rng = np.random.default_rng(0)
>>> p = rng.beta(2, 5, 2000); y = (rng.random(2000) < p).astype(int)
>>> fig = validation_figures(y, p, threshold=0.4, conformal={"90": [0.55, "inf"]}, n_boot=200)
>>> abs(fig["cal_slope"] - 1) < 0.3, fig["conformal"]["90"]["thresholds"]
(True, [0.55, 'inf'])
>>> _ = json.dumps(fig)
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest

from benchmark.evaluate import conformal as cf
from benchmark.evaluate import metrics
from benchmark.evaluate import weighted as wt
from benchmark.evaluate.calibration_ci import logistic_calibration, oe_interval
from benchmark.evaluate.paired_tests import delong_auc_variance

Z95 = 1.959963984540054
MAX_BINS = 10
MIN_PER_BIN = 20          # reliability bins hold at least this many patients (one bin below that)
DECISION_THRESHOLDS = [round(k / 100, 2) for k in range(1, 51)]
INF = "inf"               # how an infinite conformal threshold is stored
ONE_CLASS_NOTE = ("only one class: AUC, calibration slope and sensitivity/specificity need both classes "
                  "(they are NaN)")
NAN = float("nan")


def _wilson(k: int, n: int) -> tuple[float, float, float]:
    """(k / n, Wilson 95 % lo, hi); NaN when n is 0."""
    if n <= 0:
        return NAN, NAN, NAN
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return k / n, float(ci.low), float(ci.high)


def _percentile_ci(values: np.ndarray, n_boot: int) -> tuple[float, float]:
    """2.5 / 97.5 percentiles of the finite resampled values; NaN when fewer than half are finite."""
    finite = values[np.isfinite(values)]
    if n_boot <= 0 or finite.size < max(2, 0.5 * n_boot):
        return NAN, NAN
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return float(lo), float(hi)


def _bootstrap(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int) -> dict[str, tuple[float, float]]:
    """Stratified-bootstrap 95 % CIs of brier and log_loss."""
    names = ("brier", "log_loss")
    if n_boot <= 0 or y.size == 0:
        return {k: (NAN, NAN) for k in names}
    counts = wt.stratified_counts(y, n_boot, np.random.default_rng(seed))
    terms = np.column_stack([wt.brier_terms(y, p), wt.log_loss_terms(y, p)])
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for rows in wt.chunks(n_boot, y.size):
        means = wt.w_means(terms, counts[rows].astype(float))
        for k, v in zip(names, (means[:, 0], means[:, 1])):
            parts[k].append(v)
    return {k: _percentile_ci(np.concatenate(v), n_boot) for k, v in parts.items()}


def _thresholds(q) -> np.ndarray:
    return np.array([float(v) for v in q], dtype=float)


def _stored(q: np.ndarray) -> list:
    return [INF if np.isposinf(v) else float(v) for v in q]


def _level_target(level: str) -> float:
    try:
        return float(level) / 100.0
    except ValueError:
        return NAN


def _conformal(y: np.ndarray, p: np.ndarray, conformal: dict) -> dict[str, dict]:
    out = {}
    for level, q in conformal.items():
        q = _thresholds(q)
        sets = cf.predict_sets(p, q)
        by_class = cf.class_coverage(y, sets) if y.size else {0: NAN, 1: NAN}
        hit = sets[np.arange(y.size), y.astype(int)]
        out[str(level)] = {
            "target": _level_target(str(level)),
            "thresholds": _stored(q),
            "coverage": float(hit.mean()) if y.size else NAN,
            "coverage_aff": by_class[1],
            "coverage_nff": by_class[0],
            "singleton_rate": cf.singleton_rate(sets),
            "empty_rate": cf.empty_rate(sets),
            "mean_set_size": float(sets.sum(1).mean()) if y.size else NAN,
        }
    return out


def _reliability(y: np.ndarray, p: np.ndarray) -> list[dict]:
    if y.size == 0:
        return []
    n_bins = int(min(MAX_BINS, max(1, y.size // MIN_PER_BIN)))
    bins = metrics.reliability_curve(y, p, n_bins)
    return [{"mean_predicted": float(r.mean_predicted), "observed": float(r.fraction_positive), "n": int(r.n)}
            for r in bins.itertuples()]


def _decision_curve(y: np.ndarray, p: np.ndarray) -> list[dict]:
    if y.size == 0:
        return []
    curve = metrics.net_benefit(y, p, DECISION_THRESHOLDS)
    return [{"threshold": t, "net_benefit_model": float(m), "net_benefit_all": float(a)}
            for t, m, a in zip(DECISION_THRESHOLDS, curve["net_benefit"], curve["treat_all"])]


def _plain(x):
    """numpy scalars and arrays as plain Python, recursively."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_plain(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    return x


def validation_figures(y, prob, *, threshold: float, conformal: dict[str, list[float]], n_boot: int = 1000,
                       seed: int = 0) -> dict:
    """The validation figures of one set of predictions (see the module docstring for the keys).

    ``y`` 0/1, ``prob`` the calibrated P(AFF); ``conformal`` maps a level name ("90") to the
    per-class thresholds ``[q_NFF, q_AFF]`` (numbers, ``inf`` or ``"inf"``). Metrics that
    cannot be computed are NaN and ``notes`` says why; nothing raises for one class.
    """
    y, p = metrics._as_arrays(y, prob)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("validation_figures: y must hold only 0 and 1")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("validation_figures: prob must hold probabilities in [0, 1]")
    n, n_pos = int(y.size), int(y.sum())
    both = metrics._two_classes(y)
    notes: list[str] = []
    if n == 0:
        notes.append("no patients: every figure is NaN")
    elif not both:
        notes.append(ONE_CLASS_NOTE)
    out: dict = {"n": n, "n_pos": n_pos, "prevalence": n_pos / n if n else NAN,
                 "mean_prob": float(p.mean()) if n else NAN}

    point = metrics.binary_metrics(y, p, threshold=threshold) if n else {}
    # discrimination: DeLong interval
    auc, lo, hi = NAN, NAN, NAN
    if both and min(n_pos, n - n_pos) >= 2:
        auc, var = delong_auc_variance(y, p)
        se = math.sqrt(max(var, 0.0))
        lo, hi = max(0.0, auc - Z95 * se), min(1.0, auc + Z95 * se)
        if se == 0.0:
            notes.append(f"AUC is {auc:g} (the classes do not overlap): the DeLong interval has width 0")
    elif both:
        auc = point["auc"]
        notes.append("fewer than two patients of a class: no DeLong interval for the AUC")
    out.update(auc=auc, auc_lo=lo, auc_hi=hi)

    # overall accuracy: bootstrap intervals; calibration: intervals that keep the events' variance
    ci = _bootstrap(y, p, n_boot, seed)
    for k in ("brier", "log_loss"):
        out[k], (out[f"{k}_lo"], out[f"{k}_hi"]) = float(point.get(k, NAN)), ci[k]
    cal = logistic_calibration(y, p)
    oe, oe_lo, oe_hi, _ = oe_interval(y, p)
    out.update(citl=cal["citl"], citl_lo=cal["citl_lo"], citl_hi=cal["citl_hi"], oe_ratio=oe, oe_ratio_lo=oe_lo,
               oe_ratio_hi=oe_hi, cal_slope=cal["slope"], cal_slope_lo=cal["slope_lo"], cal_slope_hi=cal["slope_hi"])
    slope = cal["slope"]
    if both and not math.isfinite(slope):
        notes.append("calibration slope could not be estimated (the fit did not converge, e.g. perfect separation)")
    out["ece"] = metrics.ece(y, p)

    # at the deployed threshold
    pos = p >= threshold
    tp, fp = int((pos & (y == 1)).sum()), int((pos & (y == 0)).sum())
    fn, tn = n_pos - tp, (n - n_pos) - fp
    out["threshold"] = float(threshold) if math.isfinite(threshold) else INF
    for name, k, m in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp),
                       ("ppv", tp, tp + fp), ("npv", tn, tn + fn)):
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = _wilson(k, m)
    if n and not pos.any():
        notes.append("no patient is predicted AFF at the threshold: PPV is NaN")
    if n and pos.all():
        notes.append("every patient is predicted AFF at the threshold: NPV is NaN")

    out["conformal"] = _conformal(y, p, conformal)
    for level, c in out["conformal"].items():
        for label, q in zip(("NFF", "AFF"), c["thresholds"]):
            if q == INF:
                notes.append(f"conformal {level} %: the {label} threshold is infinite (too few calibration "
                             f"patients of that class), so {label} is in every set")
    out["reliability"] = _reliability(y, p)
    out["decision_curve"] = _decision_curve(y, p)
    if 0 < n < 100:
        notes.append(f"only {n} patients: intervals are wide and the reliability diagram coarse")
    out["n_boot"], out["seed"] = int(n_boot), int(seed)
    out["notes"] = notes
    return _plain(out)
