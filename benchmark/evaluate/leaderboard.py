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
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmark.errors import UserError
from benchmark.evaluate import conformal
from benchmark.evaluate import weighted as wt
from benchmark.evaluate.metrics import threshold_at_spec, youden_threshold
from benchmark.evaluate.uncertainty import UNCERTAINTY_COLUMNS, add_uncertainty
from benchmark.protocol import ORACLE_OF

METRICS: tuple[str, ...] = (
    "auc", "ap", "accuracy", "balanced_accuracy", "sensitivity", "specificity",
    "sensitivity_thr", "specificity_thr", "mcc", "brier", "log_loss", "ece",
    "cal_intercept", "cal_slope", "sens_at_spec90", "sens_at_spec95",
    "sens_at_spec90_oof", "spec_at_spec90_oof", "sens_at_spec95_oof", "spec_at_spec95_oof",
    "entropy_mean", "mutual_info_mean", "member_std_mean", "aurc", "error_auroc",
    "conformal90_coverage_pos", "conformal90_coverage_neg", "conformal90_singleton",
    "conformal95_coverage_pos", "conformal95_coverage_neg", "conformal95_singleton",
)
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
CONFORMAL_LEVELS = {90: 0.10, 95: 0.05}
SPEC_TARGETS = {90: 0.90, 95: 0.95}  # sens_at_spec<k>_oof: target specificity of the OOF threshold


@dataclass
class PatientTable:
    """Per-patient arrays of one candidate x repeat (test rows), ready for ``weighted_metrics``."""

    patient: np.ndarray
    y: np.ndarray
    prob: np.ndarray
    hard_thr: np.ndarray        # 0/1 at the fold's Youden threshold, NaN without 'oof' rows
    entropy: np.ndarray
    mutual_info: np.ndarray
    member_std: np.ndarray
    uncertainty: np.ndarray
    sets: dict[int, np.ndarray]  # level -> (n, 2) float 0/1, NaN without 'oof' rows
    # target -> 0/1 at the fold's OOF threshold for that specificity, NaN without 'oof' rows
    hard_spec: dict[int, np.ndarray] = field(default_factory=dict)
    # the score AUC, AP and test-optimal sensitivity rank by (``prob_rank``); None: ``prob``
    rank: np.ndarray | None = None

    def take(self, idx: np.ndarray) -> "PatientTable":
        return PatientTable(self.patient[idx], self.y[idx], self.prob[idx], self.hard_thr[idx],
                            self.entropy[idx], self.mutual_info[idx], self.member_std[idx],
                            self.uncertainty[idx], {k: v[idx] for k, v in self.sets.items()},
                            {k: v[idx] for k, v in self.hard_spec.items()},
                            None if self.rank is None else self.rank[idx])

    @property
    def ranked(self) -> np.ndarray:
        """The score discrimination is measured on: ``rank`` when given, else ``prob``."""
        return self.prob if self.rank is None else self.rank


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


def weighted_metrics(t: PatientTable, W: np.ndarray, *, n_bins: int = 10,
                     only: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """All leaderboard metrics (or those in ``only``) for each row of the count matrix
    ``W`` (B, n); ``W = ones((1, n))`` gives the plain estimate."""
    want = set(METRICS if only is None else only)
    W = np.asarray(W, dtype=float)  # converted once; the metric functions then avoid copies
    y, p = t.y, t.prob
    B, n = W.shape
    nan = np.full(B, np.nan)
    hard = (p >= 0.5).astype(float)
    out: dict[str, np.ndarray] = {}
    # every metric that is a mean over patients: one matrix product
    cols: dict[str, np.ndarray] = {
        "y": y, "tp": y * hard, "fp": (1 - y) * hard, "tn": (1 - y) * (1 - hard), "fn": y * (1 - hard),
        "brier": wt.brier_terms(y, p), "log_loss": wt.log_loss_terms(y, p),
        "entropy_mean": t.entropy, "mutual_info_mean": t.mutual_info, "member_std_mean": t.member_std,
    }
    thr_ok = not np.isnan(t.hard_thr).any()
    if thr_ok:
        cols.update(tp_thr=y * t.hard_thr, fn_thr=y * (1 - t.hard_thr),
                    tn_thr=(1 - y) * (1 - t.hard_thr), fp_thr=(1 - y) * t.hard_thr)
    spec_ok = {k for k, h in t.hard_spec.items() if not np.isnan(h).any()}
    for k in spec_ok:
        h = t.hard_spec[k]
        cols.update({f"tp_s{k}": y * h, f"fn_s{k}": y * (1 - h), f"tn_s{k}": (1 - y) * (1 - h),
                     f"fp_s{k}": (1 - y) * h})
    for level, sets in t.sets.items():
        if not np.isnan(sets).any():
            hit = sets[np.arange(n), y.astype(int)]
            cols[f"c{level}_pos"], cols[f"c{level}_neg"] = hit * y, hit * (1 - y)
            cols[f"c{level}_single"] = (sets.sum(1) == 1).astype(float)
    names = list(cols)
    means = dict(zip(names, wt.w_means(np.column_stack([cols[k] for k in names]), W).T))
    cm = wt.confusion_metrics(means["tp"], means["fp"], means["tn"], means["fn"])
    out.update(cm)
    for k in ("brier", "log_loss", "entropy_mean", "mutual_info_mean", "member_std_mean"):
        out[k] = means[k]
    if thr_ok:
        cm = wt.confusion_metrics(means["tp_thr"], means["fp_thr"], means["tn_thr"], means["fn_thr"])
        out["sensitivity_thr"], out["specificity_thr"] = cm["sensitivity"], cm["specificity"]
    else:
        out["sensitivity_thr"] = out["specificity_thr"] = nan
    for k in SPEC_TARGETS:
        if k in spec_ok:
            cm = wt.confusion_metrics(means[f"tp_s{k}"], means[f"fp_s{k}"], means[f"tn_s{k}"], means[f"fn_s{k}"])
            out[f"sens_at_spec{k}_oof"], out[f"spec_at_spec{k}_oof"] = cm["sensitivity"], cm["specificity"]
        else:
            out[f"sens_at_spec{k}_oof"] = out[f"spec_at_spec{k}_oof"] = nan
    with np.errstate(invalid="ignore", divide="ignore"):
        for level in t.sets:
            keys = [f"conformal{level}_coverage_pos", f"conformal{level}_coverage_neg", f"conformal{level}_singleton"]
            if f"c{level}_pos" in means:
                out[keys[0]] = means[f"c{level}_pos"] / means["y"]
                out[keys[1]] = means[f"c{level}_neg"] / (1 - means["y"])
                out[keys[2]] = means[f"c{level}_single"]
            else:
                out.update({k: nan for k in keys})
    if want & {"auc", "ap", "ece", "sens_at_spec90", "sens_at_spec95"}:
        out.update(wt.w_rank_metrics(y, t.ranked, W, n_bins=n_bins, specs=(0.90, 0.95)))
        if t.rank is not None and "ece" in want and not np.array_equal(t.rank, p):   # calibration: on prob
            out["ece"] = wt.w_rank_metrics(y, p, W, n_bins=n_bins, specs=())["ece"]
    if want & {"cal_intercept", "cal_slope"}:
        out["cal_intercept"], out["cal_slope"] = wt.w_calibration(y, p, W)
    if want & {"aurc", "error_auroc"}:
        out.update(wt.w_selective_metrics((hard != y).astype(float), t.uncertainty, W))
    return {k: out[k] for k in (METRICS if only is None else only) if k in out}


def patient_table(rows: pd.DataFrame, oof: pd.DataFrame, *, uncertainty: str = "entropy") -> PatientTable:
    """Per-patient arrays of one candidate x repeat from its 'test' rows and 'oof' rows."""
    rows = rows.sort_values("patient", kind="stable")
    n = len(rows)
    hard_thr = np.full(n, np.nan)
    sets = {lvl: np.full((n, 2), np.nan) for lvl in CONFORMAL_LEVELS}
    hard_spec = {k: np.full(n, np.nan) for k in SPEC_TARGETS}
    folds = rows["outer_fold"].to_numpy()
    p = rows["prob"].to_numpy(dtype=float)
    oof_by_fold = dict(tuple(oof.groupby("outer_fold"))) if len(oof) else {}
    for f in np.unique(folds):
        m = folds == f
        cal = oof_by_fold.get(f)
        if cal is None or cal["y"].nunique() < 2:
            continue
        yc, pc = cal["y"].to_numpy(dtype=int), cal["prob"].to_numpy(dtype=float)
        thr = youden_threshold(yc, pc)
        hard_thr[m] = (p[m] >= thr).astype(float)
        for k, spec in SPEC_TARGETS.items():
            hard_spec[k][m] = (p[m] >= threshold_at_spec(yc, pc, spec)).astype(float)
        for lvl, alpha in CONFORMAL_LEVELS.items():
            sets[lvl][m] = conformal.predict_sets(p[m], conformal.fit_thresholds(yc, pc, alpha))
    if uncertainty not in rows.columns:
        raise UserError(f"predictions.parquet has no uncertainty column {uncertainty!r}; "
                        f"choose one of {list(UNCERTAINTY_COLUMNS)}.")
    return PatientTable(
        patient=rows["patient"].astype(str).to_numpy(), y=rows["y"].to_numpy(dtype=float), prob=p,
        hard_thr=hard_thr, entropy=rows["entropy"].to_numpy(dtype=float),
        mutual_info=rows["mutual_info"].to_numpy(dtype=float),
        member_std=rows["member_std"].to_numpy(dtype=float),
        uncertainty=rows[uncertainty].to_numpy(dtype=float), sets=sets, hard_spec=hard_spec,
        rank=ranking_score(rows))


def ranking_score(rows: pd.DataFrame) -> np.ndarray | None:
    """``prob_rank`` of the rows (the order-preserving map discrimination is measured on), where
    stored and complete; None (use ``prob``) for oracle rows and runs written before it existed."""
    if "prob_rank" not in rows.columns:
        return None
    r = pd.to_numeric(rows["prob_rank"], errors="coerce").to_numpy(dtype=float)
    return r if np.isfinite(r).all() else None


def candidate_tables(cpred: pd.DataFrame, *, uncertainty: str = "entropy") -> dict[int, PatientTable]:
    """``repeat -> PatientTable`` for one candidate's rows (test patients only)."""
    out = {}
    for r, rp in cpred.groupby("repeat", sort=True):
        test = rp[rp["set"] == "test"]
        if test.empty:
            continue
        if test["patient"].duplicated().any():
            raise UserError(f"predictions.parquet: candidate {rp['candidate'].iloc[0]!r}, repeat {r} has "
                            "more than one 'test' row for some patients; each patient must be tested once per repeat.")
        out[int(r)] = patient_table(test, rp[rp["set"] == "oof"], uncertainty=uncertainty)
    return out


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
