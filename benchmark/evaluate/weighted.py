"""The bootstrap layer of the metrics: each metric for many resamples at once.

A resample is a row of a count matrix ``W`` of shape (B, n): how often each of the n
patients was drawn. Every function here returns one value per row, so a whole bootstrap
is a few matrix operations; ``W = ones((1, n))`` gives the plain estimate, equal to the
functions of ``metrics.py`` on the same patients (the tests pin that). The definitions of
the metrics are stated once, in ``metrics.py``'s module docstring.

>>> import numpy as np
>>> y = np.array([0, 0, 1, 1]); p = np.array([0.1, 0.4, 0.35, 0.8])
>>> W = resample_counts(["a", "b", "c", "d"], y, n_boot=200, seed=0)
>>> W.shape, round(float(w_auc(y, p, np.ones((1, 4)))[0]), 2)
((200, 4), 0.75)
>>> [slice_.stop for slice_ in chunks(n_boot=5, n=400_000)]
[2, 4, 5]
"""

from __future__ import annotations

import numpy as np
from scipy.special import logit

P_CLIP = 1e-10  # probabilities are clipped to [P_CLIP, 1 - P_CLIP] before the logit
_EPS = np.finfo(float).eps  # the clip scikit-learn's log_loss applies
CELLS = 1_000_000  # resamples x patients per chunk (bounds memory to tens of MB)


# -------------------------------------------------------------------- resamples


def resample_counts(patients, y: np.ndarray, n_boot: int, seed: int, cache: dict | None = None) -> np.ndarray:
    """The (n_boot, n) counts of ``stratified_counts`` for these patients, drawn with ``seed``.

    They depend only on the patient keys, the labels, ``n_boot`` and ``seed``, so candidates
    tested on the same patients get the same resamples; ``cache`` (a dict) keeps them.
    """
    y = np.asarray(y)
    key = (hash("\x1f".join(map(str, patients))), hash(y.tobytes()), n_boot, seed)
    if cache is not None and key in cache:
        return cache[key]
    counts = stratified_counts(y, n_boot, np.random.default_rng(seed))
    if cache is not None:
        cache[key] = counts
    return counts


def chunks(n_boot: int, n: int, cells: int = CELLS):
    """Slices of the resample rows, each of at most ``cells`` resamples x patients."""
    step = max(1, cells // max(n, 1))
    for start in range(0, n_boot, step):
        yield slice(start, min(start + step, n_boot))


# -------------------------------------------------------------------- metrics per resample


def stratified_counts(y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) int32 counts of a bootstrap that resamples positives and negatives
    separately (each class keeps its size). All index arrays are drawn at once."""
    y = np.asarray(y).ravel()
    n = y.size
    counts = np.zeros(n_boot * n, dtype=np.int32)
    rows = (np.arange(n_boot, dtype=np.int64) * n)[:, None]
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        if idx.size == 0:
            continue
        draws = idx[rng.integers(0, idx.size, size=(n_boot, idx.size))]
        counts += np.bincount((draws + rows).ravel(), minlength=n_boot * n).astype(np.int32)
    return counts.reshape(n_boot, n)


def _f(W: np.ndarray) -> np.ndarray:
    return np.asarray(W, dtype=float)


def w_mean(x: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Weighted mean of ``x`` per resample (NaN where the weights sum to 0)."""
    return w_means(np.asarray(x, dtype=float)[:, None], W)[:, 0]


def w_means(X: np.ndarray, W: np.ndarray) -> np.ndarray:
    """(B, k) weighted means of the k columns of ``X`` (n, k) in one matrix product."""
    Wf = _f(W)
    tot = Wf.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (Wf @ np.asarray(X, dtype=float)) / tot[:, None]


def _tie_groups(s_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position in a sorted array: start and (exclusive) end of its tie group."""
    n = s_sorted.size
    new = np.ones(n, dtype=bool)
    new[1:] = s_sorted[1:] != s_sorted[:-1]
    starts_at = np.flatnonzero(new)
    group = np.cumsum(new) - 1
    ends_at = np.append(starts_at[1:], n)
    return starts_at[group], ends_at[group]


def _cum0(A: np.ndarray) -> np.ndarray:
    """Row-wise cumulative sum with a leading zero column: (B, n) -> (B, n + 1)."""
    out = np.zeros((A.shape[0], A.shape[1] + 1))
    np.cumsum(A, axis=1, out=out[:, 1:])
    return out


def w_auc(label: np.ndarray, score: np.ndarray, W: np.ndarray) -> np.ndarray:
    """ROC AUC per resample (ties count one half); NaN without both labels.

    ``label`` may be any 0/1 vector, e.g. errors for ``error_auroc``.
    """
    order = np.argsort(np.asarray(score, dtype=float), kind="stable")
    s, lab = np.asarray(score, dtype=float)[order], np.asarray(label, dtype=float)[order]
    Ws = _f(W)[:, order]
    return _auc_sorted(s, lab, Ws, _cum0(Ws), _cum0(Ws * lab))


def _auc_sorted(s, lab, Ws, cw, cpos) -> np.ndarray:
    """AUC from weights sorted by ascending score and their cumulative sums."""
    gs, ge = _tie_groups(s)
    pos = np.flatnonzero(lab == 1)
    cneg_lo = cw[:, gs[pos]] - cpos[:, gs[pos]]
    cneg_hi = cw[:, ge[pos]] - cpos[:, ge[pos]]
    num = (Ws[:, pos] * (cneg_lo + cneg_hi)).sum(1) / 2.0
    npos, nneg = cpos[:, -1], cw[:, -1] - cpos[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((npos > 0) & (nneg > 0), num / (npos * nneg), np.nan)


def w_rank_metrics(y: np.ndarray, p: np.ndarray, W: np.ndarray, *, n_bins: int = 10,
                   specs: tuple[float, ...] = (0.90, 0.95)) -> dict[str, np.ndarray]:
    """``auc, ap, ece`` and ``sens_at_spec<100 s>`` per resample, sharing one sort by ``p``.

    AP follows scikit-learn: sum over distinct thresholds (high to low) of the recall
    increase times the precision (predict positive if p >= threshold).
    """
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    order = np.argsort(p, kind="stable")
    ps, ys = p[order], y[order]
    Ws = _f(W)[:, order]
    cw, cpos, cp = _cum0(Ws), _cum0(Ws * ys), _cum0(Ws * ps)
    out = {"auc": _auc_sorted(ps, ys, Ws, cw, cpos)}
    # thresholds = distinct values; TP/FP of "p >= value" from the cumulative sums below it
    starts = np.flatnonzero(np.append(True, ps[1:] != ps[:-1]))
    bounds = np.append(starts, ps.size)
    cpos_b, cw_b = (cpos, cw) if bounds.size == ps.size + 1 else (cpos[:, bounds], cw[:, bounds])  # views if no ties
    npos, ntot = cpos[:, -1], cw[:, -1]
    nneg = ntot - npos
    tp = npos[:, None] - cpos_b[:, :-1]
    fp = (ntot[:, None] - cw_b[:, :-1]) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = tp / np.maximum(tp + fp, 1e-300)        # 0 where nothing is predicted positive
        ap = (np.diff(cpos_b, axis=1) * prec).sum(1) / npos
        out["ap"] = np.where(npos > 0, ap, np.nan)
        tp_pad = np.concatenate([tp, np.zeros((tp.shape[0], 1))], axis=1)
        for spec in specs:
            # fp falls as the threshold rises: the first threshold within the bound is the best
            first_ok = (fp > (1.0 - spec + 1e-12) * nneg[:, None]).sum(1)
            sens = tp_pad[np.arange(tp.shape[0]), first_ok] / npos
            out[f"sens_at_spec{round(spec * 100)}"] = np.where((npos > 0) & (nneg > 0), sens, np.nan)
    out["ece"] = _ece_sorted(ys, ps, cw, cpos, cp, n_bins)
    return out


def w_average_precision(y: np.ndarray, p: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Average precision per resample (scikit-learn's definition)."""
    return w_rank_metrics(y, p, W)["ap"]


def w_sens_at_spec(y: np.ndarray, p: np.ndarray, W: np.ndarray, spec: float) -> np.ndarray:
    """Largest sensitivity with specificity >= ``spec`` per resample."""
    return w_rank_metrics(y, p, W, specs=(spec,))[f"sens_at_spec{round(spec * 100)}"]


def w_ece(y: np.ndarray, p: np.ndarray, W: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Equal-mass ECE per resample, identical to ``ece`` on the expanded resample."""
    return w_rank_metrics(y, p, W, n_bins=n_bins)["ece"]


def w_confusion(y: np.ndarray, hard: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted (tp, fp, tn, fn) per resample."""
    y = np.asarray(y, dtype=float)
    hard = np.asarray(hard, dtype=float)
    X = np.column_stack([y * hard, (1 - y) * hard, (1 - y) * (1 - hard), y * (1 - hard)])
    c = _f(W) @ X
    return c[:, 0], c[:, 1], c[:, 2], c[:, 3]


def confusion_metrics(tp, fp, tn, fn) -> dict[str, np.ndarray]:
    """accuracy, balanced accuracy, sensitivity, specificity, MCC (0 when undefined, as
    scikit-learn) from (weighted) confusion counts."""
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp / (tp + fn)
        spec = tn / (tn + fp)
        denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        mcc = np.where(denom > 0, (tp * tn - fp * fn) / np.where(denom > 0, denom, 1.0), 0.0)
        return {"accuracy": (tp + tn) / (tp + fp + tn + fn), "balanced_accuracy": (sens + spec) / 2,
                "sensitivity": sens, "specificity": spec, "mcc": mcc}


def brier_terms(y, p) -> np.ndarray:
    """Per-patient squared error; its (weighted) mean is the Brier score."""
    return (np.asarray(p, float) - np.asarray(y, float)) ** 2


def log_loss_terms(y, p) -> np.ndarray:
    """Per-patient log loss (p clipped to [eps, 1 - eps] as scikit-learn does)."""
    y = np.asarray(y, float)
    pc = np.clip(np.asarray(p, float), _EPS, 1 - _EPS)
    return -(y * np.log(pc) + (1 - y) * np.log1p(-pc))


def w_brier(y, p, W) -> np.ndarray:
    return w_mean(brier_terms(y, p), W)


def w_log_loss(y, p, W) -> np.ndarray:
    return w_mean(log_loss_terms(y, p), W)


def _expanded_cumsum_at(cw: np.ndarray, cv: np.ndarray, v: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Sum of the first ``e`` items of the expanded sorted sample (item j repeated W_j times).

    ``cw``/``cv``: (B, n+1) cumulative counts / values with a leading 0; ``e``: (B, K)."""
    B, n1 = cw.shape
    n = n1 - 1
    span = cw[:, -1].max() + 1.0
    off = (np.arange(B) * span)[:, None]
    j = np.searchsorted((cw + off).ravel(), (e + off).ravel(), side="right").reshape(e.shape)
    j = j - 1 - np.arange(B)[:, None] * n1
    rows = np.arange(B)[:, None]
    partial = (e - cw[rows, j]) * v[np.minimum(j, n - 1)]
    return cv[rows, j] + partial


def _ece_sorted(ys, ps, cw, cy, cp, n_bins) -> np.ndarray:
    N = np.rint(cw[:, -1]).astype(np.int64)
    k = np.minimum(n_bins, np.maximum(N, 1))[:, None]
    kk = np.minimum(np.arange(n_bins + 1)[None, :], k)
    edges = (kk * (N[:, None] // k) + np.minimum(kk, N[:, None] % k)).astype(float)  # as np.array_split
    sy = np.diff(_expanded_cumsum_at(cw, cy, ys, edges), axis=1)
    sp = np.diff(_expanded_cumsum_at(cw, cp, ps, edges), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(N > 0, np.abs(sy - sp).sum(1) / N, np.nan)


def _newton_logistic(Wf: np.ndarray, Wy: np.ndarray, x: np.ndarray, *, slope: bool, c0: np.ndarray,
                     c1: np.ndarray, max_iter: int, tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted logistic fit of ``logit P(y) = c0 + c1 x`` per row of ``Wf`` (``Wy = Wf * y``);
    with ``slope=False`` c1 stays fixed (offset model). Returns (c0, c1, converged)."""
    B = Wf.shape[0]
    c0, c1 = c0.copy(), c1.copy()
    step = np.full(B, np.inf)
    active = np.ones(B, dtype=bool)
    X = np.column_stack([np.ones_like(x), x, x * x])
    for _ in range(max_iter):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        w, wy = (Wf, Wy) if rows.size == B else (Wf[rows], Wy[rows])  # no copy while all are active
        mu = np.multiply(c1[rows, None], x[None, :])
        mu += c0[rows, None]
        np.negative(mu, out=mu); np.clip(mu, -700, 700, out=mu); np.exp(mu, out=mu)
        mu += 1.0; np.reciprocal(mu, out=mu)
        wmu = w * mu
        r = wy - wmu                     # w (y - mu)
        wmu *= 1.0 - mu                  # w mu (1 - mu)
        g = r @ X[:, :2]
        h = wmu @ X
        if slope:
            det = h[:, 0] * h[:, 2] - h[:, 1] ** 2
            ok = det > 1e-300
            s0 = np.divide(h[:, 2] * g[:, 0] - h[:, 1] * g[:, 1], det, out=np.zeros(rows.size), where=ok)
            s1 = np.divide(h[:, 0] * g[:, 1] - h[:, 1] * g[:, 0], det, out=np.zeros(rows.size), where=ok)
        else:
            ok = h[:, 0] > 1e-300
            s0 = np.divide(g[:, 0], h[:, 0], out=np.zeros(rows.size), where=ok)
            s1 = np.zeros(rows.size)
        size = np.maximum(np.abs(s0), np.abs(s1))
        scale = np.minimum(1.0, 5.0 / np.maximum(size, 1e-300))  # damped: at most 5 per step
        c0[rows] += scale * s0
        c1[rows] += scale * s1
        step[rows] = np.where(ok, size, np.inf)
        active[rows] = step[rows] >= tol
    return c0, c1, step < 1e-6


def w_calibration(y: np.ndarray, p: np.ndarray, W: np.ndarray, *, max_iter: int = 100,
                  tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """(intercept, slope) per resample by Newton's method (definitions in ``metrics.py``).

    The fit on all patients (weights 1) is the starting point of every resample's fit, so
    each resample needs only a few Newton steps.
    """
    y = np.asarray(y, float)
    x = logit(np.clip(np.asarray(p, float), P_CLIP, 1 - P_CLIP))
    Wf = _f(W)
    B = Wf.shape[0]
    Wy = Wf * y
    npos, ntot = Wy.sum(1), Wf.sum(1)
    valid = (npos > 0) & (npos < ntot)
    one, oney = np.ones((1, y.size)), y[None, :]
    a0, _, _ = _newton_logistic(one, oney, x, slope=False, c0=np.zeros(1), c1=np.ones(1), max_iter=max_iter, tol=tol)
    b0, b1, ok1 = _newton_logistic(one, oney, x, slope=True, c0=np.zeros(1), c1=np.ones(1),
                                   max_iter=max_iter, tol=tol)
    if not (np.isfinite(b0[0]) and np.isfinite(b1[0]) and ok1[0]):
        b0, b1 = np.zeros(1), np.ones(1)
    if not np.isfinite(a0[0]):
        a0 = np.zeros(1)
    a, _, a_ok = _newton_logistic(Wf, Wy, x, slope=False, c0=np.repeat(a0, B), c1=np.ones(B),
                                  max_iter=max_iter, tol=tol)
    _, b, b_ok = _newton_logistic(Wf, Wy, x, slope=True, c0=np.repeat(b0, B), c1=np.repeat(b1, B),
                                  max_iter=max_iter, tol=tol)
    b_ok &= ~_separated(x, Wf, y)
    return np.where(valid & a_ok, a, np.nan), np.where(valid & b_ok, b, np.nan)


def _separated(x: np.ndarray, Wf: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per resample: do the drawn positives and negatives not overlap in ``x`` (ties count)?

    Then the slope's maximum-likelihood estimate is infinite and Newton's method only stops
    because the fitted probabilities reach 0 and 1 in floating point; the slope is NaN.
    """
    pos, neg = (Wf * y) > 0, (Wf * (1 - y)) > 0
    lo_pos, hi_pos = np.where(pos, x, np.inf).min(1), np.where(pos, x, -np.inf).max(1)
    lo_neg, hi_neg = np.where(neg, x, np.inf).min(1), np.where(neg, x, -np.inf).max(1)
    return (hi_neg <= lo_pos) | (hi_pos <= lo_neg)


def w_selective_metrics(err: np.ndarray, uncertainty: np.ndarray, W: np.ndarray) -> dict[str, np.ndarray]:
    """``aurc`` and ``error_auroc`` per resample, sharing one sort by uncertainty.

    AURC equals ``risk_coverage_curve``'s mean risk on the expanded resample: a patient
    drawn c times after m0 others adds sum_{t=1..c} (E0 + t e) / (m0 + t), which the
    harmonic numbers H give without a loop over coverage levels.
    """
    u = np.asarray(uncertainty, float)
    order = np.argsort(u, kind="stable")
    us, e = u[order], np.asarray(err, float)[order]
    Ws = _f(W)[:, order]
    cw, ce = _cum0(Ws), _cum0(Ws * e)
    m0, e0 = cw[:, :-1], ce[:, :-1]
    N = np.rint(cw[:, -1]).astype(np.int64)
    H = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, max(N.max(), 1) + 1))])
    m0i = np.rint(m0).astype(np.int64)
    dH = H[m0i + np.rint(Ws).astype(np.int64)] - H[m0i]
    total = (e0 * dH + e[None, :] * (Ws - m0 * dH)).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        aurc = np.where(N > 0, total / N, np.nan)
    return {"aurc": aurc, "error_auroc": _auc_sorted(us, e, Ws, cw, ce)}


def w_aurc(err: np.ndarray, uncertainty: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Area under the risk-coverage curve per resample (see ``w_selective_metrics``)."""
    return w_selective_metrics(err, uncertainty, W)["aurc"]
