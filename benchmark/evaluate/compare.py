"""Paired comparisons that answer the benchmark's questions (``comparisons.csv``).

**Pairs.** References are chosen by ``inner_score`` only (the mean best inner-CV value;
never by outer-test metrics; ties by name); failed candidates are neither compared nor
references. ``question`` and ``reference_role`` say why a row exists:

- ``Q3`` (does fusion help?): every fusion candidate against ``best_image`` and
  ``best_register`` (the image / register candidate with the best inner score) and against
  ``best_fusion`` (the fusion candidate with the best inner score; it is not compared with
  itself), so a report can name the best fusion and the set of fusions not shown worse;
  and a network warm-started from a named image candidate (the profile's
  ``warm_start_source``) against that candidate (``warm_source``: the image input it
  started from), unless that is the ``best_image`` reference already;
- ``Q2`` (MLP against trees on the register): every candidate of family ``mlp`` against
  ``best_tree`` (the best inner score among the families in ``TREE_FAMILIES``).

Both candidates of a pair are compared on the same outer-test patients of the **first
repeat** both have (the lowest repeat index; with a single repeat that is all of them).

**Rows.** One per metric and pair: ``auc, ap, brier, log_loss, ece, entropy_mean,
mutual_info_mean``. ``diff = value_candidate - value_reference`` (point estimates on the
paired patients). Higher is better for AUC and AP, lower for Brier, log loss, ECE, mean
entropy and mean mutual information (less uncertainty), as ``HIGHER_IS_BETTER`` says.

- ``auc``: DeLong test for correlated ROC curves (fast algorithm of Sun & Xu 2014),
  ``z = diff / SE_DeLong``;
- every other metric: paired, class-stratified bootstrap over the test patients (the same
  resampled patients for both candidates in each of the B resamples), ``SE`` = standard
  deviation of the B resampled differences, ``z = diff / SE`` (a studentized, normal-
  approximation test: unlike a percentile-count p-value it has no floor of 2 / (B + 1),
  so a clear difference stays significant after Holm with B = 500).

``p_value = 2 (1 - Phi(|z|))``; ``lo, hi`` = ``diff -/+ 1.96 SE`` with the SE of the same
test, so ``lo > 0`` or ``hi < 0`` exactly when ``p_value < 0.05``. When SE is 0 and diff is
0 (identical predictions), p = 1 and the interval is [0, 0]. The ``test`` column says what
is tested (``TEST_OF``). Both tests hold the **fitted models fixed**: their variability is
that of the test patients only, not of training (another training sample or seed would
add to it). This includes the uncertainty rows: ``entropy_mean`` and ``mutual_info_mean``
are the patient means of each model's entropy / mutual information, tested like the others.

``holm_family``: ``primary`` for the AUC rows (the discrimination question, the one the
findings lead with), ``secondary`` for every other metric. ``p_holm`` is Holm's step-down
adjustment over all rows of the table **within** each family (NaN p-values do not count).

**Margins** (``MARGINS``; in metric units, positive; the reference's value is taken on
the paired patients): ``margin = max(absolute, relative x reference's value of 'of')``:

- ``auc``, ``ap``: 0.02 absolute (a usual non-inferiority margin for AUC);
- ``brier``, ``log_loss``: 10 % of the reference's value (proper scores whose scale
  depends on the prevalence, so the margin is relative);
- ``ece``: 10 % of the reference's ECE, but at least 0.01 (10 equal-mass bins cannot
  resolve calibration differences below about one percentage point at these sizes);
- ``entropy_mean``: 10 % of the reference's mean entropy (nats, the scale of log loss:
  a calibrated model's mean entropy is its expected log loss, so the same relative margin);
- ``mutual_info_mean``: 10 % of the reference's **mean entropy** (mutual information is
  the epistemic part of that entropy; its own value is often near 0 (members agree), where
  a margin relative to it would vanish).

``noninferior`` (bool): the unfavourable end of the 95 % interval of ``diff`` lies within
the margin (``lo > -margin`` when higher is better, ``hi < margin`` when lower is better):
the candidate is not worse than the reference by more than the margin.

``verdict`` (derived from ``p_holm`` and the sign of ``diff``, in this order):

- ``candidate_better`` / ``reference_better``: ``p_holm < 0.05`` (``ALPHA``), the side the
  sign of ``diff`` and the metric's direction favour;
- ``equivalent``: not significant and the whole 95 % interval lies within ``(-margin, margin)``;
- ``not_shown``: neither (no difference shown, no equivalence shown).

So a verdict names a side exactly when ``p_holm < 0.05``.

>>> cmp = compare_candidates(pred, leaderboard, n_boot=1000, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.errors import UserError
from benchmark.evaluate import weighted as wt
from benchmark.evaluate.leaderboard import PatientTable, validate_predictions, weighted_metrics
from benchmark.protocol import ROLES

COMPARISON_COLUMNS: tuple[str, ...] = (
    "candidate", "reference", "reference_role", "question", "metric", "value_candidate", "value_reference",
    "diff", "lo", "hi", "p_value", "test", "holm_family", "p_holm", "margin", "noninferior", "verdict",
    "n_patients",
)
HIGHER_IS_BETTER = {"auc": True, "ap": True, "brier": False, "log_loss": False, "ece": False,
                    "entropy_mean": False, "mutual_info_mean": False}
TEST_DELONG = "DeLong over test patients (fitted models fixed)"
TEST_BOOTSTRAP = "bootstrap over test patients (fitted models fixed)"
TEST_OF = {m: TEST_DELONG if m == "auc" else TEST_BOOTSTRAP for m in HIGHER_IS_BETTER}
HOLM_FAMILY = {m: "primary" if m == "auc" else "secondary" for m in HIGHER_IS_BETTER}
ALPHA = 0.05
Z95 = float(stats.norm.ppf(0.975))
VERDICTS = ("candidate_better", "reference_better", "equivalent", "not_shown")
TREE_FAMILIES = ("xgboost", "lightgbm")
MLP_FAMILY = "mlp"
# reference role -> (question, what plays it); roles of ROLES pick by modality
REFERENCE_ROLES = {**{role: "Q3" for role in ROLES}, "best_fusion": "Q3", "warm_source": "Q3", "best_tree": "Q2"}


@dataclass(frozen=True)
class Margin:
    """``max(absolute, relative x the reference's value of `of`)`` (``of`` defaults to the metric)."""

    absolute: float = 0.0
    relative: float = 0.0
    of: str | None = None

    def value(self, metric: str, reference_values: dict[str, float]) -> float:
        base = reference_values.get(self.of or metric, np.nan) if self.relative else 0.0
        m = max(self.absolute, self.relative * abs(float(base))) if np.isfinite(base) else np.nan
        return float(m) if np.isfinite(m) and m > 0 else float("nan")


MARGINS: dict[str, Margin] = {
    "auc": Margin(absolute=0.02),
    "ap": Margin(absolute=0.02),
    "brier": Margin(relative=0.10),
    "log_loss": Margin(relative=0.10),
    "ece": Margin(relative=0.10, absolute=0.01),
    "entropy_mean": Margin(relative=0.10),
    "mutual_info_mean": Margin(relative=0.10, of="entropy_mean"),
}


# ------------------------------------------------------------------------------ DeLong


def _delong_cov(y, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for k score vectors (k, n) on one label
    vector, by the midrank algorithm of Sun & Xu (2014), O(k n log n)."""
    y = np.asarray(y).astype(int).ravel()
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError("DeLong needs at least two patients of each class")
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = tz[:, :m].sum(1) / (m * n) - (m + 1.0) / (2.0 * n)
    v01 = (tz[:, :m] - tx) / n          # structural components of the positives
    v10 = 1.0 - (tz[:, m:] - ty) / m    # ... and of the negatives
    cov = np.atleast_2d(np.cov(v01)) / m + np.atleast_2d(np.cov(v10)) / n
    return aucs, cov


def delong_auc_variance(y, p) -> tuple[float, float]:
    """(AUC, DeLong variance of the AUC).

    >>> auc, var = delong_auc_variance([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> round(auc, 2)
    0.75
    """
    aucs, cov = _delong_cov(y, np.asarray(p, dtype=float)[None, :])
    return float(aucs[0]), float(cov[0, 0])


def delong_roc_test(y, p1, p2) -> tuple[float, float, float, float, float, float]:
    """Two-sided DeLong test of AUC(p1) = AUC(p2) on the same patients.

    Returns ``(auc1, auc2, diff, se, z, p)`` with ``diff = auc1 - auc2``; ``z`` and ``p`` are
    NaN when the two score vectors give identical structural components (se = 0).
    """
    aucs, cov = _delong_cov(y, np.vstack([np.asarray(p1, float), np.asarray(p2, float)]))
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    if se <= 1e-15:
        return float(aucs[0]), float(aucs[1]), diff, se, float("nan"), float("nan")
    z = diff / se
    return float(aucs[0]), float(aucs[1]), diff, se, float(z), float(2 * stats.norm.sf(abs(z)))


# --------------------------------------------------------------------------- statistics


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries stay NaN and do not count."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


def bootstrap_se(diffs: np.ndarray) -> float:
    """Standard deviation (ddof 1) of the resampled differences; NaN when fewer than half
    of them (or fewer than 2) are finite."""
    d = np.asarray(diffs, dtype=float)
    ok = d[np.isfinite(d)]
    if ok.size < 2 or ok.size < 0.5 * d.size:
        return float("nan")
    return float(np.std(ok, ddof=1))


def z_test(diff: float, se: float) -> tuple[float, float, float, float]:
    """``(p, lo, hi, z)`` of the normal approximation ``z = diff / se``: two-sided p and the
    95 % interval ``diff -/+ 1.96 se``. se = 0 with diff = 0 gives p = 1 and [0, 0]; a
    non-finite or zero se otherwise gives NaN.

    >>> p, lo, hi, z = z_test(-0.011, 0.0018)
    >>> p < 1e-6, round(lo, 4), round(hi, 4)
    (True, -0.0145, -0.0075)
    """
    if not (np.isfinite(diff) and np.isfinite(se)):
        return (float("nan"),) * 4
    if se <= 1e-15:
        return (1.0, float(diff), float(diff), 0.0) if diff == 0 else (float("nan"),) * 4
    z = diff / se
    return float(2 * stats.norm.sf(abs(z))), float(diff - Z95 * se), float(diff + Z95 * se), float(z)


def noninferior(metric: str, lo: float, hi: float, margin: float) -> bool:
    """Is the unfavourable end of the interval of ``diff`` within the margin?"""
    if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(margin)):
        return False
    return bool(lo > -margin) if HIGHER_IS_BETTER[metric] else bool(hi < margin)


def verdict(metric: str, diff: float, p_holm: float, lo: float, hi: float, margin: float,
            alpha: float = ALPHA) -> str:
    """One of ``VERDICTS`` (rules in the module docstring): a side exactly when p_holm < alpha.

    >>> verdict("brier", -0.011, 0.001, -0.015, -0.008, 0.02)
    'candidate_better'
    >>> verdict("auc", 0.004, 0.6, -0.01, 0.018, 0.02), verdict("auc", 0.004, 0.6, -0.03, 0.04, 0.02)
    ('equivalent', 'not_shown')
    """
    if np.isfinite(p_holm) and p_holm < alpha:
        return "candidate_better" if (diff > 0) == HIGHER_IS_BETTER[metric] else "reference_better"
    if np.isfinite(lo) and np.isfinite(hi) and np.isfinite(margin) and -margin < lo and hi < margin:
        return "equivalent"
    return "not_shown"


def adjust_and_decide(table: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Fill ``p_holm`` (Holm within each ``holm_family`` over the whole table) and ``verdict``."""
    out = table.copy()
    out["p_holm"] = np.nan
    for _, idx in out.groupby("holm_family", sort=False).groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p_value"].to_numpy(dtype=float))
    out["verdict"] = [verdict(m, d, ph, lo, hi, mg, alpha) for m, d, ph, lo, hi, mg in
                      zip(out["metric"], out["diff"], out["p_holm"], out["lo"], out["hi"], out["margin"])]
    return out


# --------------------------------------------------------------------------- pairs


def select_references(leaderboard: pd.DataFrame, *, higher_is_better: bool = True) -> dict[str, str]:
    """``{role: candidate}`` for the roles of ``REFERENCE_ROLES`` by ``inner_score``:
    ``best_image`` / ``best_register`` / ``best_fusion`` by modality, ``best_tree`` among the
    families of ``TREE_FAMILIES``. Roles without a usable candidate are left out."""
    lb = leaderboard[leaderboard["status"].astype(str) != "failed"]
    lb = lb[pd.to_numeric(lb["inner_score"], errors="coerce").notna()]
    pools = {role: lb[lb["modality"] == modality] for role, modality in ROLES.items()}
    pools["best_fusion"] = lb[lb["modality"] == "fusion"]
    pools["best_tree"] = lb[lb["family"].astype(str).isin(TREE_FAMILIES)]
    out = {}
    for role, c in pools.items():
        if c.empty:
            continue
        score = pd.to_numeric(c["inner_score"]) * (1 if higher_is_better else -1)
        best = c.assign(_s=score).sort_values(["_s", "candidate"], ascending=[False, True])
        out[role] = str(best["candidate"].iloc[0])
    return out


def comparison_pairs(leaderboard: pd.DataFrame, *, higher_is_better: bool = True,
                     warm_sources: dict[str, str] | None = None) -> list[tuple[str, str, str, str]]:
    """``(question, candidate, reference_role, reference)`` of every pair, in table order.
    ``warm_sources``: fusion candidate -> the image candidate its networks started from in every fold."""
    refs = select_references(leaderboard, higher_is_better=higher_is_better)
    ok = leaderboard[leaderboard["status"].astype(str) != "failed"]
    fusion = sorted(ok.loc[ok["modality"] == "fusion", "candidate"].astype(str))
    mlp = sorted(ok.loc[ok["family"].astype(str) == MLP_FAMILY, "candidate"].astype(str))
    usable = set(ok.loc[pd.to_numeric(ok["inner_score"], errors="coerce").notna(), "candidate"].astype(str))
    pairs = []
    for cand in fusion:
        for role in (*ROLES, "best_fusion"):
            if role in refs and refs[role] != cand:
                pairs.append(("Q3", cand, role, refs[role]))
        source = (warm_sources or {}).get(cand)
        if source in usable and source != refs.get("best_image"):
            pairs.append(("Q3", cand, "warm_source", source))
    for cand in mlp:
        if "best_tree" in refs and refs["best_tree"] != cand:
            pairs.append(("Q2", cand, "best_tree", refs["best_tree"]))
    return pairs


def _table(rows: pd.DataFrame) -> PatientTable:
    n = len(rows)
    return PatientTable(patient=rows["patient"].astype(str).to_numpy(), y=rows["y"].to_numpy(float),
                        prob=rows["prob"].to_numpy(float), hard_thr=np.full(n, np.nan),
                        entropy=rows["entropy"].to_numpy(float), mutual_info=rows["mutual_info"].to_numpy(float),
                        member_std=rows["member_std"].to_numpy(float), uncertainty=rows["entropy"].to_numpy(float),
                        sets={})


def _paired_rows(pred: pd.DataFrame, cand: str, ref: str) -> tuple[pd.DataFrame, pd.DataFrame, int] | None:
    test = pred[pred["set"] == "test"]
    a, b = test[test["candidate"] == cand], test[test["candidate"] == ref]
    common = sorted(set(a["repeat"]) & set(b["repeat"]))
    if not common:
        return None
    r = common[0]
    a = a[a["repeat"] == r].assign(patient=lambda d: d["patient"].astype(str)).set_index("patient")
    b = b[b["repeat"] == r].assign(patient=lambda d: d["patient"].astype(str)).set_index("patient")
    keys = sorted(set(a.index) & set(b.index))
    a, b = a.loc[keys].reset_index(), b.loc[keys].reset_index()
    if (a["y"].to_numpy() != b["y"].to_numpy()).any():
        raise UserError(f"predictions.parquet: candidates {cand!r} and {ref!r} disagree on the label of "
                        "some patients; all candidates must be evaluated on the same labels.")
    return a, b, int(r)


def _values(t: PatientTable, name: str, repeat: int, *, n_boot: int, seed: int, n_bins: int,
            counts_cache: dict | None, values_cache: dict | None) -> tuple[dict, dict]:
    """(point values, bootstrap values) of the compared metrics for one candidate on these
    patients; the resamples depend only on the patients, so they are reused across pairs."""
    key = (name, repeat, hash("\x1f".join(t.patient)), n_boot, seed, n_bins)
    if values_cache is not None and key in values_cache:
        return values_cache[key]
    names = tuple(HIGHER_IS_BETTER)
    point = {m: float(v[0]) for m, v in weighted_metrics(t, np.ones((1, t.y.size)), n_bins=n_bins,
                                                         only=names).items()}
    boot: dict[str, list[np.ndarray]] = {m: [] for m in names}
    if n_boot > 0:
        counts = wt.resample_counts(t.patient, t.y, n_boot, seed, counts_cache)
        for part in wt.chunks(n_boot, t.y.size):
            vals = weighted_metrics(t, counts[part], n_bins=n_bins, only=names)
            for m in names:
                boot[m].append(vals[m])
    res = (point, {m: np.concatenate(v) if v else np.empty(0) for m, v in boot.items()})
    if values_cache is not None:
        values_cache[key] = res
    return res


def compare_pair(pred: pd.DataFrame, cand: str, ref: str, *, n_boot: int, seed: int, n_bins: int = 10,
                 counts_cache: dict | None = None, values_cache: dict | None = None) -> list[dict]:
    """Rows of ``comparisons.csv`` for one candidate against one reference, without
    ``question``/``reference_role`` and before Holm (``p_holm`` NaN, ``verdict`` None).

    Resamples depend only on ``seed`` and the paired patients; ``counts_cache`` and
    ``values_cache`` (dicts) reuse resamples and per-candidate values across pairs.
    """
    pair = _paired_rows(pred, cand, ref)
    if pair is None:
        return []
    a, b, repeat = pair
    ta, tb = _table(a), _table(b)
    kw = dict(n_boot=n_boot, seed=seed, n_bins=n_bins, counts_cache=counts_cache, values_cache=values_cache)
    va, ba = _values(ta, cand, repeat, **kw)
    vb, bb = _values(tb, ref, repeat, **kw)
    rows = []
    for m in HIGHER_IS_BETTER:
        diff = va[m] - vb[m]
        if m == "auc":
            try:
                se = delong_roc_test(ta.y, ta.prob, tb.prob)[3]
            except ValueError:
                se = float("nan")
        else:
            se = bootstrap_se(ba[m] - bb[m])
        p, lo, hi, _ = z_test(diff, se)
        margin = MARGINS[m].value(m, vb)
        rows.append({"candidate": cand, "reference": ref, "metric": m,
                     "value_candidate": va[m], "value_reference": vb[m], "diff": float(diff),
                     "lo": lo, "hi": hi, "p_value": p, "test": TEST_OF[m], "holm_family": HOLM_FAMILY[m],
                     "p_holm": np.nan, "margin": margin, "noninferior": noninferior(m, lo, hi, margin),
                     "verdict": None, "n_patients": int(ta.y.size)})
    return rows


def compare_candidates(pred: pd.DataFrame, leaderboard: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
                       n_bins: int = 10, higher_is_better: bool = True,
                       warm_sources: dict[str, str] | None = None) -> pd.DataFrame:
    """``comparisons.csv`` (columns ``COMPARISON_COLUMNS``): the pairs of
    ``comparison_pairs`` (``higher_is_better`` says which way the inner objective points;
    ``warm_sources`` as there), Holm within each family and the verdicts (module docstring)."""
    pred = validate_predictions(pred)
    rows, counts_cache, values_cache = [], {}, {}
    for question, cand, role, ref in comparison_pairs(leaderboard, higher_is_better=higher_is_better,
                                                      warm_sources=warm_sources):
        for r in compare_pair(pred, cand, ref, n_boot=n_boot, seed=seed, n_bins=n_bins,
                              counts_cache=counts_cache, values_cache=values_cache):
            rows.append({**r, "reference_role": role, "question": question})
    out = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    if len(out):
        out = adjust_and_decide(out)
    out["noninferior"] = out["noninferior"].astype(bool)
    return out.reset_index(drop=True)
