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

So a verdict names a side exactly when ``p_holm < 0.05``. The tests, Holm's adjustment and the
verdict are ``paired_tests``'; this module chooses the pairs and fills the table.

>>> cmp = compare_candidates(pred, leaderboard, n_boot=1000, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmark.errors import UserError
from benchmark.evaluate import weighted as wt
from benchmark.evaluate.leaderboard import PatientTable, validate_predictions, weighted_metrics
from benchmark.evaluate.paired_tests import (HIGHER_IS_BETTER, adjust_and_decide, bootstrap_se, delong_roc_test,
                                             noninferior, z_test)
from benchmark.protocol import ROLES

COMPARISON_COLUMNS: tuple[str, ...] = (
    "candidate", "reference", "reference_role", "question", "metric", "value_candidate", "value_reference",
    "diff", "lo", "hi", "p_value", "test", "holm_family", "p_holm", "margin", "noninferior", "verdict",
    "n_patients",
)
TEST_DELONG = "DeLong over test patients (fitted models fixed)"
TEST_BOOTSTRAP = "bootstrap over test patients (fitted models fixed)"
TEST_OF = {m: TEST_DELONG if m == "auc" else TEST_BOOTSTRAP for m in HIGHER_IS_BETTER}
HOLM_FAMILY = {m: "primary" if m == "auc" else "secondary" for m in HIGHER_IS_BETTER}
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
