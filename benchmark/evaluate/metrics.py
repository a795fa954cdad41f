"""Binary classification metrics on per-patient predictions (never on models).

Plain functions of ``(y, p)`` for one set of predictions, built on scikit-learn where it
has the metric: the summary numbers (``binary_metrics``, ``ece``,
``calibration_intercept_slope``, ``sens_at_spec``, ``youden_threshold``) and the curves the
report draws (``roc_points``, ``pr_points``, ``reliability_curve``, ``risk_coverage_curve``,
``net_benefit``). Their bootstrap versions, one value per resample, are in ``weighted.py``
(``w_*``); the tests pin that both agree.

Definitions (stated here once):

- Predicted positive means ``p >= threshold`` (0.5 unless said otherwise).
- ECE uses ``n_bins`` (default 10) **equal-mass** bins: the patients sorted by ``p``
  (stable sort) are cut into ``n_bins`` consecutive groups whose sizes differ by at most
  one (``numpy.array_split``); ECE = sum_b (n_b / n) |mean(y_b) - mean(p_b)|.
- Calibration slope: ``b`` in the logistic regression ``logit P(y=1) = a + b logit(p)``.
  Calibration intercept (calibration-in-the-large): ``a`` in
  ``logit P(y=1) = a + logit(p)`` (``logit(p)`` as offset, slope fixed at 1).
  Perfect calibration gives slope 1 and intercept 0. ``p`` is clipped to
  ``[1e-10, 1 - 1e-10]``; a fit that does not converge (e.g. perfect separation) is NaN.
- Sensitivity at specificity s (``sens_at_spec``, "test-optimal" on the leaderboard):
  the largest sensitivity over thresholds whose specificity is at least s, on the same
  patients; the threshold is chosen with their labels.
- Threshold for a target specificity (``threshold_at_spec``, used with a fold's 'oof'
  rows): among the thresholds (observed scores, as ``roc_curve``) whose specificity on
  those patients is at least s, the highest one with the largest sensitivity there;
  ``inf`` (nobody positive) when none reaches s.
- Net benefit at threshold t: TP/n - FP/n * t / (1 - t) (Vickers & Elkin 2006).
- Risk-coverage: patients ranked by an uncertainty score (most certain first); the risk
  at coverage k/n is the error rate (threshold 0.5) of the k most certain; AURC is the
  mean risk over k = 1..n.

>>> import numpy as np
>>> y = np.array([0, 0, 1, 1]); p = np.array([0.1, 0.4, 0.35, 0.8])
>>> round(binary_metrics(y, p)["auc"], 2)
0.75
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    log_loss,
    matthews_corrcoef,
    precision_recall_curve,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from benchmark.evaluate.weighted import w_calibration


# ----------------------------------------------------------------------------- plain


def _as_arrays(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y and p differ in length ({y.size} vs {p.size})")
    return y, p


def _two_classes(y: np.ndarray) -> bool:
    return bool(y.size) and 0 < y.sum() < y.size


def ece(y, p, n_bins: int = 10) -> float:
    """Expected calibration error with ``n_bins`` equal-mass bins (see module docstring).

    >>> round(ece([0, 1, 0, 1], [0.2, 0.2, 0.6, 0.6], n_bins=2), 6)
    0.2
    """
    y, p = _as_arrays(y, p)
    if y.size == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    total = 0.0
    for idx in np.array_split(order, min(n_bins, y.size)):
        total += abs(y[idx].sum() - p[idx].sum())
    return float(total / y.size)


def roc_points(y, p) -> pd.DataFrame:
    """The ROC curve whose area is the AUC: ``fpr, tpr, threshold`` (scikit-learn's points).

    >>> roc_points([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])["tpr"].tolist()
    [0.0, 0.5, 0.5, 1.0, 1.0]
    """
    y, p = _as_arrays(y, p)
    fpr, tpr, thr = roc_curve(y, p)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thr})


def pr_points(y, p) -> pd.DataFrame:
    """The precision-recall curve that average precision summarises: ``recall, precision``,
    recall rising from 0 (scikit-learn's points in reverse).

    >>> pr_points([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])["recall"].tolist()
    [0.0, 0.5, 0.5, 1.0, 1.0]
    """
    y, p = _as_arrays(y, p)
    precision, recall, _ = precision_recall_curve(y, p)
    return pd.DataFrame({"recall": recall[::-1], "precision": precision[::-1]})


def reliability_curve(y, p, n_bins: int = 10) -> pd.DataFrame:
    """Equal-mass reliability diagram: one row per bin (same bins as ``ece``).

    Columns: ``bin, n, mean_predicted, fraction_positive, p_min, p_max``.
    """
    y, p = _as_arrays(y, p)
    order = np.argsort(p, kind="stable")
    rows = []
    for b, idx in enumerate(np.array_split(order, min(n_bins, max(y.size, 1)))):
        if idx.size == 0:
            continue
        rows.append({"bin": b, "n": int(idx.size), "mean_predicted": float(p[idx].mean()),
                     "fraction_positive": float(y[idx].mean()),
                     "p_min": float(p[idx].min()), "p_max": float(p[idx].max())})
    return pd.DataFrame(rows, columns=["bin", "n", "mean_predicted", "fraction_positive", "p_min", "p_max"])


def calibration_intercept_slope(y, p) -> tuple[float, float]:
    """(calibration intercept, calibration slope); definitions in the module docstring.

    >>> a, b = calibration_intercept_slope([0, 1, 1, 1], [0.5, 0.5, 0.5, 0.5])
    >>> round(a, 4)  # logit(0.75) - logit(0.5)
    1.0986
    """
    y, p = _as_arrays(y, p)
    a, b = w_calibration(y, p, np.ones((1, y.size)))
    return float(a[0]), float(b[0])


def sens_at_spec(y, p, spec: float) -> float:
    """Largest sensitivity among thresholds with specificity >= ``spec``."""
    y, p = _as_arrays(y, p)
    if not _two_classes(y):
        return float("nan")
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    ok = fpr <= 1.0 - spec + 1e-12
    return float(tpr[ok].max())


def threshold_at_spec(y, p, spec: float) -> float:
    """Threshold reaching specificity >= ``spec`` on ``(y, p)`` with the largest sensitivity
    (predict positive if p >= thr; ties to the highest such threshold). ``inf`` when no
    observed score reaches ``spec``; NaN when ``y`` has a single class.

    >>> threshold_at_spec([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.5, 0.9], 0.75)
    0.5
    """
    y, p = _as_arrays(y, p)
    if not _two_classes(y):
        return float("nan")
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    ok = (fpr <= 1.0 - spec + 1e-12) & np.isfinite(thr)
    if not ok.any():
        return float("inf")
    best = tpr[ok].max()
    return float(thr[ok & (tpr == best)].max())


def youden_threshold(y, p) -> float:
    """Threshold maximising sensitivity + specificity - 1 (predict positive if p >= thr).

    Ties go to the highest such threshold; NaN when ``y`` has a single class.
    """
    y, p = _as_arrays(y, p)
    if not _two_classes(y):
        return float("nan")
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    j = tpr - fpr
    finite = np.isfinite(thr)
    k = int(np.argmax(np.where(finite, j, -np.inf)))
    return float(thr[k])


def net_benefit(y, p, thresholds) -> pd.DataFrame:
    """Decision curve: net benefit of the model, of treating all and of treating none.

    Columns: ``threshold, net_benefit, treat_all, treat_none``.

    >>> net_benefit([0, 1], [0.2, 0.8], [0.5])["net_benefit"].tolist()
    [0.5]
    """
    y, p = _as_arrays(y, p)
    t = np.asarray(thresholds, dtype=float).ravel()
    if ((t <= 0) | (t >= 1)).any():
        raise ValueError("net_benefit thresholds must lie strictly between 0 and 1")
    n = y.size
    pos = p[None, :] >= t[:, None]
    tp = (pos & (y[None, :] == 1)).sum(1) / n
    fp = (pos & (y[None, :] == 0)).sum(1) / n
    odds = t / (1 - t)
    prev = y.mean() if n else float("nan")
    return pd.DataFrame({"threshold": t, "net_benefit": tp - fp * odds,
                         "treat_all": prev - (1 - prev) * odds, "treat_none": 0.0})


def risk_coverage_curve(y, p, uncertainty, threshold: float = 0.5) -> pd.DataFrame:
    """Selective prediction: ``coverage, risk`` keeping the most certain patients first.

    ``risk`` is the error rate at ``threshold`` among the ``k`` patients with the lowest
    ``uncertainty`` (stable order), for k = 1..n; ``aurc`` is ``risk.mean()``.
    """
    y, p = _as_arrays(y, p)
    u = np.asarray(uncertainty, dtype=float).ravel()
    err = ((p >= threshold).astype(float) != y).astype(float)
    order = np.argsort(u, kind="stable")
    k = np.arange(1, y.size + 1)
    return pd.DataFrame({"coverage": k / y.size, "risk": np.cumsum(err[order]) / k})


def _mcc(y: np.ndarray, hard: np.ndarray) -> float:
    with warnings.catch_warnings():  # scikit-learn warns when y and the predictions share one label
        warnings.simplefilter("ignore", UserWarning)
        return float(matthews_corrcoef(y, hard))


def binary_metrics(y, p, *, threshold: float = 0.5, n_bins: int = 10) -> dict[str, float]:
    """Discrimination and calibration of one set of predictions (scikit-learn based).

    Keys: ``auc, ap, accuracy, balanced_accuracy, sensitivity, specificity, mcc, brier,
    log_loss, ece, cal_intercept, cal_slope, sens_at_spec90, sens_at_spec95``. Metrics that
    need both classes are NaN with a single class.
    """
    y, p = _as_arrays(y, p)
    yi = y.astype(int)
    hard = (p >= threshold).astype(int)
    both = _two_classes(y)
    nan = float("nan")
    a, b = calibration_intercept_slope(y, p) if both else (nan, nan)
    return {
        "auc": float(roc_auc_score(yi, p)) if both else nan,
        "ap": float(average_precision_score(yi, p)) if both else nan,
        "accuracy": float(accuracy_score(yi, hard)),
        "balanced_accuracy": float(balanced_accuracy_score(yi, hard)) if both else nan,
        "sensitivity": float(recall_score(yi, hard, pos_label=1, zero_division=np.nan)),
        "specificity": float(recall_score(yi, hard, pos_label=0, zero_division=np.nan)),
        "mcc": _mcc(yi, hard),
        "brier": float(brier_score_loss(yi, p, pos_label=1)),
        "log_loss": float(log_loss(yi, p, labels=[0, 1])),
        "ece": ece(y, p, n_bins),
        "cal_intercept": a,
        "cal_slope": b,
        "sens_at_spec90": sens_at_spec(y, p, 0.90),
        "sens_at_spec95": sens_at_spec(y, p, 0.95),
    }
