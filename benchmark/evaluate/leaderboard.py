"""The leaderboard: one row per candidate, metrics pooled over outer folds with CIs.

Protocol (what each number means):

- Point estimates pool the ``set == 'test'`` rows of all outer folds of a repeat (every
  patient once) and, with several repeats, average the per-repeat values.
- 95 % CIs: percentile bootstrap over patients, stratified by class (positives and
  negatives resampled separately, so every resample keeps the class sizes). A resample
  is drawn over the patients that have a test prediction in every repeat (the first
  repeat's patients when all repeats are complete); the same resample is applied to each
  repeat and the per-repeat values are averaged, so the CI is that of the reported
  (repeat-averaged) estimate. The fold-level thresholds and conformal thresholds are held
  fixed in the bootstrap (they come from 'oof' rows, not from the test patients).
- Discrimination (``auc``, ``ap``, the test-optimal ``sens_at_spec90/95``) is computed on
  ``prob_rank`` where a run stored it: per outer fold an order-preserving map of the raw
  score (``calibration.order_preserving``: ``prob`` itself under Platt, temperature or no
  calibration; under isotonic calibration, whose steps tie predictions, a Platt map fitted on
  the same out-of-fold predictions). Calibration (Brier, log loss, ECE, intercept, slope),
  thresholds, conformal sets and uncertainty use the calibrated ``prob``.
- ``sensitivity_thr`` / ``specificity_thr``: per outer fold a threshold maximising
  Youden's J on that fold's 'oof' rows, applied to the fold's 'test' rows.
- Sensitivity at a fixed specificity, two kinds:

  * ``sens_at_spec90`` / ``sens_at_spec95`` (**test-optimal**): the largest sensitivity
    over thresholds whose specificity on the pooled test patients is >= 90 % / 95 %; the
    threshold is picked with the test labels (in every resample anew), so it is an upper
    bound on what a deployed threshold achieves;
  * ``sens_at_spec90_oof`` / ``sens_at_spec95_oof`` (**threshold from OOF data**): per
    outer fold a threshold is chosen on that fold's 'oof' rows (the candidate's
    out-of-fold predictions of its outer-train patients, ``prob`` column) to reach the
    target specificity there (``metrics.threshold_at_spec``), then applied to the fold's
    'test' patients; sensitivity is pooled over folds like ``sensitivity_thr``, and
    ``spec_at_spec90_oof`` / ``spec_at_spec95_oof`` are the specificities it actually
    reaches on the test patients (below the target when the threshold does not transfer).
    The thresholds are held fixed in the bootstrap.
- Conformal: class-conditional split conformal (``conformal.py``) calibrated per outer
  fold on its 'oof' rows at 90 % and 95 %, applied to its 'test' rows; coverage per class
  and the singleton rate.
- Selective prediction: patients ranked by ``uncertainty`` (default ``entropy``); ``aurc``
  is the area under the risk-coverage curve (error rate at threshold 0.5);
  ``error_auroc`` is the AUROC of the uncertainty for detecting those errors.
- ``auc_gap``: AUC of the oracle row of the candidate's modality minus the candidate's
  AUC (register -> oracle_register, image -> oracle_image, fusion -> oracle_both).
- Rows without 'oof' data (oracle rows) have empty ``*_thr``, ``*_oof`` and conformal
  columns.

>>> lb, folds = build_leaderboard(pred, studies=studies, n_boot=1000, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
import numpy as np
import pandas as pd

from benchmark.errors import UserError
from benchmark.evaluate import weighted as wt
from benchmark.evaluate.patient_metrics import METRICS, PatientTable, candidate_tables, weighted_metrics
from benchmark.evaluate.uncertainty import UNCERTAINTY_COLUMNS, add_uncertainty
from benchmark.protocol import ORACLE_OF

INFO_COLUMNS: tuple[str, ...] = (
    "candidate", "family", "modality", "status", "info", "n_patients", "n_pos",
    "inner_score", "is_ceiling", "wall_s", "n_trials", "n_failed_trials",
)
LEADERBOARD_COLUMNS: tuple[str, ...] = (
    INFO_COLUMNS + tuple(c for m in METRICS for c in (m, f"{m}_lo", f"{m}_hi")) + ("auc_gap",)
)
FOLD_METRIC_COLUMNS: tuple[str, ...] = ("candidate", "repeat", "outer_fold", "metric", "value")
REQUIRED_COLUMNS: tuple[str, ...] = (
    "candidate", "family", "modality", "repeat", "outer_fold", "set", "patient", "y", "prob",
)


def validate_predictions(pred: pd.DataFrame) -> pd.DataFrame:
    """Check the columns and values metrics rely on; add uncertainty columns if missing."""
    missing = [c for c in REQUIRED_COLUMNS if c not in pred.columns]
    if missing:
        raise UserError(f"predictions.parquet lacks column(s) {missing}; "
                        "write the table in the format of the run folder (see docs/design.md).")
    bad_set = ~pred["set"].isin(["test", "oof"])
    if bad_set.any():
        raise UserError(f"predictions.parquet, column 'set', row {int(np.flatnonzero(bad_set)[0])}: "
                        "expected 'test' or 'oof'.")
    y = pd.to_numeric(pred["y"], errors="coerce")
    if not y.isin([0, 1]).all():
        raise UserError(f"predictions.parquet, column 'y', row {int(np.flatnonzero(~y.isin([0, 1]))[0])}: "
                        "labels must be 0 or 1.")
    p = pd.to_numeric(pred["prob"], errors="coerce")
    badp = ~((p >= 0) & (p <= 1))
    if badp.any():
        raise UserError(f"predictions.parquet, column 'prob', row {int(np.flatnonzero(badp)[0])}: "
                        "probabilities must be numbers in [0, 1].")
    if not all(c in pred.columns for c in UNCERTAINTY_COLUMNS):
        pred = add_uncertainty(pred)
    return pred


def bootstrap_ci(tables: dict[int, PatientTable], *, n_boot: int, seed: int, n_bins: int = 10,
                 only: tuple[str, ...] | None = None,
                 counts_cache: dict | None = None) -> dict[str, tuple[float, float]]:
    """95 % percentile CIs (see module docstring) from the same stratified resamples of
    the patients common to all repeats, averaged over repeats.

    Resamples depend only on ``seed`` and the sorted patient keys, so candidates tested on
    the same patients get the same resamples; ``counts_cache`` (a dict) reuses them.
    """
    names = METRICS if only is None else only
    if n_boot <= 0 or not tables:
        return {m: (np.nan, np.nan) for m in names}
    common = None
    for t in tables.values():
        common = set(t.patient) if common is None else common & set(t.patient)
    first = tables[min(tables)]
    keep = np.array([i for i, k in enumerate(first.patient) if k in common], dtype=np.int64)
    y = first.y[keep]
    aligned = []
    for t in tables.values():
        pos = {k: i for i, k in enumerate(t.patient)}
        aligned.append(t.take(np.array([pos[k] for k in first.patient[keep]], dtype=np.int64)))
    counts = wt.resample_counts(first.patient[keep], y, n_boot, seed, counts_cache)
    acc: dict[str, list[np.ndarray]] = {m: [] for m in names}
    for part in wt.chunks(n_boot, len(y)):
        W = counts[part]
        per_rep = [weighted_metrics(t, W, n_bins=n_bins, only=names) for t in aligned]
        for m in names:
            acc[m].append(np.mean([d[m] for d in per_rep], axis=0))
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for m in names:
            v = np.concatenate(acc[m])
            v = v[np.isfinite(v)]
            enough = v.size >= 0.5 * n_boot  # e.g. a calibration slope that diverges in most resamples
            out[m] = (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) if enough else (np.nan, np.nan)
    return out


def point_estimates(tables: dict[int, PatientTable], *, n_bins: int = 10) -> dict[str, float]:
    """Metrics per repeat on all its test patients, averaged over repeats."""
    vals = [weighted_metrics(t, np.ones((1, t.y.size)), n_bins=n_bins) for t in tables.values()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {m: float(np.nanmean([v[m][0] for v in vals])) if any(np.isfinite(v[m][0]) for v in vals)
                else np.nan for m in METRICS}


def _fold_rows(cand: str, tables: dict[int, PatientTable], cpred: pd.DataFrame, n_bins: int) -> list[dict]:
    rows = []
    for r, t in tables.items():
        fold_of = (cpred[(cpred["repeat"] == r) & (cpred["set"] == "test")]
                   .assign(patient=lambda d: d["patient"].astype(str))
                   .set_index("patient")["outer_fold"])
        folds = fold_of.reindex(t.patient).to_numpy()
        for f in np.unique(folds):
            vals = weighted_metrics(t.take(np.flatnonzero(folds == f)), np.ones((1, int((folds == f).sum()))),
                                    n_bins=n_bins)
            rows += [{"candidate": cand, "repeat": int(r), "outer_fold": int(f), "metric": m,
                      "value": float(vals[m][0])} for m in METRICS]
    return rows


def _studies_summary(studies: pd.DataFrame | None) -> dict[str, dict]:
    if studies is None or len(studies) == 0:
        return {}
    if "candidate" not in studies.columns:
        raise UserError("studies.csv lacks the column 'candidate'; write it in the run-folder format.")
    out = {}
    for cand, s in studies.groupby("candidate", sort=False):
        status = s["status"].astype(str).str.lower() if "status" in s.columns else pd.Series("", index=s.index)
        failed = status == "failed"
        noted = failed | (status == "partial")  # 'partial' study: some trials failed, the fold did not
        info = s.loc[noted, "info"].dropna().astype(str) if "info" in s.columns else pd.Series(dtype=str)
        num = lambda c, f: f(pd.to_numeric(s[c], errors="coerce")) if c in s.columns else np.nan  # noqa: E731
        out[str(cand)] = {
            "inner_score": num("best_value", lambda v: v.mean()),
            "wall_s": num("wall_s", lambda v: v.sum(min_count=1)),
            "n_trials": num("n_trials", lambda v: v.sum(min_count=1)),
            "n_failed_trials": num("n_failed", lambda v: v.sum(min_count=1)),
            "n_failed_folds": int(failed.sum()), "n_folds": len(s),
            "info": "; ".join(dict.fromkeys(i for i in info if i and i != "nan")),
            "family": s["family"].iloc[0] if "family" in s.columns else None,
            "modality": s["modality"].iloc[0] if "modality" in s.columns else None,
        }
    return out


def build_leaderboard(pred: pd.DataFrame, *, studies: pd.DataFrame | None = None, n_boot: int = 1000,
                      seed: int = 0, n_bins: int = 10,
                      uncertainty: str = "entropy") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(leaderboard, fold_metrics) with the columns of ``leaderboard.csv`` / ``fold_metrics.csv``.

    ``studies`` (optional, ``studies.csv``) gives ``inner_score``, timing, trial counts and
    the rows of candidates that failed (status 'failed', reason in ``info``, metrics empty).
    A candidate is 'partial' when some of its outer folds have no test predictions or a
    study row with status 'failed'; the reasons of failed (and 'partial': some trials
    failed) study rows are joined into ``info``. Without ``studies``, ``inner_score`` is
    empty and ``compare_candidates`` finds no references.
    """
    pred = validate_predictions(pred)
    study = _studies_summary(studies)
    test_all = pred[pred["set"] == "test"]
    expected = set(map(tuple, test_all.loc[test_all["modality"] != "oracle", ["repeat", "outer_fold"]]
                       .drop_duplicates().to_numpy().tolist()))
    rows, fold_rows, cache = [], [], {}
    for cand, cpred in pred.groupby("candidate", sort=True):
        cand = str(cand)
        st = study.get(cand, {})
        modality = str(cpred["modality"].iloc[0])
        row = {"candidate": cand, "family": cpred["family"].iloc[0], "modality": modality,
               "is_ceiling": modality == "oracle", "info": st.get("info", "")}
        for k in ("inner_score", "wall_s", "n_trials", "n_failed_trials"):
            row[k] = st.get(k, np.nan)
        tables = candidate_tables(cpred, uncertainty=uncertainty)
        if not tables:
            row.update(status="failed", info=row["info"] or "no outer-test predictions")
            rows.append(row)
            continue
        ctest = cpred[cpred["set"] == "test"]
        have = set(map(tuple, ctest[["repeat", "outer_fold"]].drop_duplicates().to_numpy().tolist()))
        missing = len(expected - have) if modality != "oracle" else 0
        partial = missing > 0 or st.get("n_failed_folds", 0) > 0
        row["status"] = "partial" if partial else "ok"
        if missing and not row["info"]:
            row["info"] = f"no outer-test predictions for {missing} of {len(expected)} outer folds"
        pts = ctest.drop_duplicates("patient")
        row["n_patients"], row["n_pos"] = len(pts), int(pts["y"].sum())
        est = point_estimates(tables, n_bins=n_bins)
        ci = bootstrap_ci(tables, n_boot=n_boot, seed=seed, n_bins=n_bins, counts_cache=cache)
        for m in METRICS:
            row[m] = est[m]
            row[f"{m}_lo"], row[f"{m}_hi"] = (ci[m] if np.isfinite(est[m]) else (np.nan, np.nan))
        rows.append(row)
        fold_rows += _fold_rows(cand, tables, cpred, n_bins)
    seen = {r["candidate"] for r in rows}
    for cand, st in study.items():
        if cand not in seen:
            rows.append({"candidate": cand, "family": st["family"], "modality": st["modality"],
                         "status": "failed", "info": st["info"] or "no predictions were written",
                         "is_ceiling": False, "inner_score": st["inner_score"], "wall_s": st["wall_s"],
                         "n_trials": st["n_trials"], "n_failed_trials": st["n_failed_trials"]})
    lb = pd.DataFrame(rows).reindex(columns=list(LEADERBOARD_COLUMNS))
    auc_of = dict(zip(lb["candidate"], lb["auc"]))
    lb["auc_gap"] = [auc_of.get(ORACLE_OF.get(m, ""), np.nan) - a if m in ORACLE_OF else np.nan
                     for m, a in zip(lb["modality"], lb["auc"])]
    lb["is_ceiling"] = lb["is_ceiling"].fillna(False).astype(bool)
    for c in ("n_patients", "n_pos", "n_trials", "n_failed_trials"):
        lb[c] = pd.to_numeric(lb[c], errors="coerce").round().astype("Int64")
    order = np.lexsort((lb["candidate"].to_numpy(), -lb["auc"].fillna(-np.inf).to_numpy(),
                        (lb["status"] == "failed").to_numpy(), ~lb["is_ceiling"].to_numpy()))
    lb = lb.iloc[order].reset_index(drop=True)
    folds = pd.DataFrame(fold_rows, columns=list(FOLD_METRIC_COLUMNS))
    return lb, folds
