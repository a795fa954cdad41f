"""Model updating at a new site: recalibration fitted on its labelled patients, checked out-of-fold.

    res = fit_update(y, prob, "intercept", seed=0)       # cross-validated on the new site's patients
    res.oof                                               # each patient's updated P(AFF) from a fit without them
    res.intercept, res.slope                              # the final map, fitted on every patient
    path = write_updated_bundle(model, res, out, ...)     # a new bundle; the source is never touched

The standard hierarchy of updates (Steyerberg 2019, ch. 20; Van Calster et al. 2019):

- ``intercept``: recalibration in the large, ``logit p' = a + logit p`` (slope fixed at 1): fixes a
  different prevalence or a uniform over- or under-prediction;
- ``logistic``: logistic recalibration, ``logit p' = a + b logit p``: also fixes predictions that are
  too extreme (b < 1) or too modest (b > 1);
- refitting the model is ``run`` and ``export`` on the development and the new data together (a new
  dataset file), not an update of a bundle.

The map is fitted by stratified K-fold cross-validation over the new site's patients
(``FOLDS``): every patient's updated prediction comes from a map fitted without them, and the
figures of those out-of-fold predictions (O/E, calibration-in-the-large, slope, AUC, ...) are
the honest estimate of the updated model at this site (the fit on all patients would flatter
itself: an intercept fitted on them gives O/E = 1 by construction). The final map is fitted on
every patient. It changes the probabilities, not their order: the decision threshold and the
conformal thresholds go through the same map, so the patients flagged and the prediction sets
stay those of the source model.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit, logit

from benchmark.errors import UserError
from benchmark.evaluate.calibration_ci import logistic_calibration

KINDS = ("intercept", "logistic")
FOLDS = 5
MIN_PER_CLASS = 10      # AFF and NFF patients an update needs (2 per fold of each class)
P_CLIP = 1e-10
MAX_HISTORY = 100       # updates listed in one bundle's history


def recalibrate(p, update: dict | None) -> np.ndarray:
    """``sigmoid(a + b logit p)`` for ``update = {"intercept": a, "slope": b}`` (``p`` unchanged without one)."""
    p = np.asarray(p, dtype=float)
    if not update:
        return p
    z = logit(np.clip(p, P_CLIP, 1 - P_CLIP))
    return expit(float(update["intercept"]) + float(update["slope"]) * z)


def _fit(y: np.ndarray, p: np.ndarray, kind: str) -> tuple[float, float]:
    cal = logistic_calibration(y, p)
    if kind == "intercept":
        a, b = cal["citl"], 1.0
    else:
        a, b = cal["slope_intercept"], cal["slope"]
    if not (math.isfinite(a) and math.isfinite(b)):
        raise UserError(f"the {kind} update cannot be fitted on these patients (the fit does not converge: the "
                        "classes are perfectly separated); use --update intercept, or more patients")
    return float(a), float(b)


@dataclass
class UpdateResult:
    kind: str
    intercept: float               # the final map, fitted on every patient
    slope: float
    oof: np.ndarray                # each patient's updated prediction from a map fitted without them
    folds: int
    n: int
    n_pos: int


def fit_update(y, prob, kind: str, *, seed: int = 0, folds: int = FOLDS) -> UpdateResult:
    """Cross-validated recalibration of ``prob`` on the labelled patients ``y`` (UserError when too few)."""
    from sklearn.model_selection import StratifiedKFold

    if kind not in KINDS:
        raise UserError(f"--update {kind!r}: choose one of {', '.join(KINDS)} (a refit is run and export on the "
                        "combined data)")
    y = np.asarray(y, dtype=int).ravel()
    p = np.asarray(prob, dtype=float).ravel()
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if min(n_pos, n_neg) < MIN_PER_CLASS:
        raise UserError(f"--update needs at least {MIN_PER_CLASS} AFF and {MIN_PER_CLASS} NFF patients to fit the "
                        f"update and check it out-of-fold; this cohort has {n_pos} AFF and {n_neg} NFF")
    k = min(folds, n_pos // 2, n_neg // 2)
    oof = np.empty_like(p)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=int(seed) % 2**31)
    for train, test in splitter.split(np.zeros(len(y)), y):
        a, b = _fit(y[train], p[train], kind)
        oof[test] = recalibrate(p[test], {"intercept": a, "slope": b})
    a, b = _fit(y, p, kind)
    return UpdateResult(kind, a, b, oof, k, len(y), n_pos)


def compose(first: dict | None, second: dict) -> dict:
    """The map of ``second`` applied after ``first`` (both ``{"intercept", "slope"}``)."""
    if not first:
        return {"kind": second["kind"], "intercept": float(second["intercept"]), "slope": float(second["slope"])}
    a1, b1 = float(first["intercept"]), float(first["slope"])
    a2, b2 = float(second["intercept"]), float(second["slope"])
    kind = "logistic" if "logistic" in (first.get("kind"), second["kind"]) else "intercept"
    return {"kind": kind, "intercept": a2 + b2 * a1, "slope": b2 * b1}


def carried_thresholds(threshold: float, conformal: dict, update: dict) -> tuple[float, dict]:
    """The decision and conformal thresholds through the map, so that the same patients are flagged and the
    same sets given (NFF is in a set when p <= q_NFF, AFF when 1 - p <= q_AFF)."""
    def g(v: float) -> float:
        return float(recalibrate(np.array([v]), update)[0])

    new_t = threshold if not math.isfinite(threshold) else g(threshold)
    out = {}
    for level, (q0, q1) in conformal.items():
        q0n = q0 if not math.isfinite(q0) else (g(q0) if 0 < q0 < 1 else q0)
        q1n = q1 if not math.isfinite(q1) else (1.0 - g(1.0 - q1) if 0 < q1 < 1 else q1)
        out[level] = [q0n, q1n]
    return new_t, out


def bundle_digest(path: Path) -> str:
    """SHA-256 of a bundle's ``bundle.json`` (which lists the SHA-256 of every other file)."""
    return hashlib.sha256((Path(path) / "bundle.json").read_bytes()).hexdigest()


def _finite(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def history_entry(res: UpdateResult, source: Path, cohort_name: str, before: dict, after: dict) -> dict:
    """What the new bundle records about this update: no identifier, counts and figures only."""
    keys = ("oe_ratio", "citl", "cal_slope", "auc")

    def fig(f: dict) -> dict:
        return {k: _finite(f.get(k)) for kk in keys for k in (kk, f"{kk}_lo", f"{kk}_hi")}

    return {"kind": res.kind, "intercept": res.intercept, "slope": res.slope,
            "created": dt.datetime.now().isoformat(timespec="seconds"),
            "source_bundle_sha256": bundle_digest(source), "source_candidate": None, "site": str(cohort_name)[:200],
            "n": res.n, "n_pos": res.n_pos, "folds": res.folds, "before": fig(before), "after_out_of_fold": fig(after)}


def updated_model(model, res: UpdateResult, entry: dict):
    """A copy of ``model`` with the update composed into it and the thresholds carried through."""
    new = compose(model.update, {"kind": res.kind, "intercept": res.intercept, "slope": res.slope})
    step = {"intercept": res.intercept, "slope": res.slope}
    threshold, conformal = carried_thresholds(model.threshold, model.conformal, step)
    meta = {k: v for k, v in model.meta.items() if k not in ("bundle", "signed_by")}
    entry = dict(entry, source_candidate=meta.get("candidate"))
    meta.update(updates=list(meta.get("updates") or [])[-(MAX_HISTORY - 1):] + [entry],
                created=entry["created"], synthetic=bool(meta.get("synthetic")))
    return dataclasses.replace(model, threshold=threshold, conformal=conformal, meta=meta, update=new)


def write_updated_bundle(model, res: UpdateResult, out: Path, *, source: Path, cohort_name: str, before: dict,
                         after: dict, sign: Path | None = None) -> Path:
    """Write the updated model as a new bundle at ``out`` (refused when it exists and is not empty)."""
    from benchmark.export.bundle import write_bundle
    from benchmark.export.card_sections import updated_card

    out = Path(out)
    if out.resolve() == Path(source).resolve() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise UserError(f"{out} exists and is not empty; an update is written to a new folder (--update-out DIR)")
    entry = history_entry(res, source, cohort_name, before, after)
    new = updated_model(model, res, entry)
    after = dict(after, source=f"out-of-fold predictions of the {res.kind} update at {str(cohort_name)[:200]} "
                              f"({res.folds}-fold cross-validation over its {res.n} patients)")
    card = (Path(source) / "model_card.md").read_text(encoding="utf-8") if (Path(source) / "model_card.md").is_file() else ""
    files = {"cv_figures.json": json.dumps(after, indent=1).encode(),
             "model_card.md": updated_card(card, new.meta["updates"]).encode()}
    if model.shift is not None:
        files["shift_stats.json"] = json.dumps(model.shift, indent=1, allow_nan=False).encode()
    return write_bundle(new, out, files=files, sign=sign)
