"""External validation of a loaded model on a labelled cohort: figures, shift, subgroups, an optional update.

    done = external_validation(model, cohort, table["prob"].to_numpy(), out, update="intercept")
    done["validation_html"], done.get("updated_bundle")

What ``predict`` does once it has predicted a labelled cohort:

1. the external figures (``report.validation.validation_figures``) beside the bundle's nested-CV ones;
2. the dataset shift against the bundle's ``shift_stats.json`` (``report.shift_compare``); when the
   calibration drifted, for the numeric register variables that moved (at most
   ``MAX_COUNTERFACTUALS``, those first whose shift times the slope of the model's logit on
   them here is largest), the model's mean prediction with that variable moved back to its
   development mean and SD (``counterfactual_mean``, ``effect``: how much of the drift the
   variable can explain; image components are computed once and reused);
3. the dataset file's subgroups (``evaluate.subgroups``);
4. with ``update``: the recalibration fitted by cross-validation on these patients, its
   out-of-fold figures, and the updated model written as a new bundle (``export.update``);
5. ``validation.html`` with the answers first, ``validation.csv``, ``shift.csv``, ``subgroups.csv``,
   ``update.csv`` (``report.validation_page``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

MAX_COUNTERFACTUALS = 40            # shifted numeric variables whose effect on the predictions is measured
MAX_IMAGE_NET_COUNTERFACTUALS = 10  # ... when a component reading the register runs a CNN too (a pass each)


def _meta(model, cohort) -> dict:
    m = model.meta
    return {"candidate": m.get("candidate"), "synthetic": m.get("synthetic"), "bundle_created": m.get("created"),
            "cohort": cohort.name, "profile": m.get("profile"),
            "threshold_text": (m.get("threshold_text") or "").replace("/", " per "),
            "training_summary": f"trained on {m.get('dataset_name')} (run {m.get('run')}, profile {m.get('profile')}); "
                                f"each member on about {m.get('member_patients_export')} patients, in the nested CV on "
                                f"about {m.get('member_patients_run')}"
                                + (f"; recalibrated {len(m['updates'])} time(s) since (predict --update)"
                                   if m.get("updates") else "")}


def counterfactuals(model, cohort, rows: list[dict]) -> None:
    """Add ``counterfactual_mean`` and ``effect`` (its difference from the mean prediction here) to the numeric
    register rows that moved beyond chance, largest |SMD| first (in place): the model's mean prediction with
    that variable moved back to its development mean and SD, all else as it is."""
    from benchmark.candidates.base import get_family
    from benchmark.export.update import recalibrate
    from benchmark.report.shift_compare import shifted

    dev = {r["name"]: r for r in (model.shift or {}).get("register", [])}
    picked = [r for r in shifted(rows) if r["kind"] == "numeric" and "mean" in dev.get(r["variable"], {})]
    if not picked:
        return
    heavy = any(c.modality != "image" and get_family(c.family).uses_images for c in model.components)
    final = model.final.name
    base = model.outputs(cohort)
    reuse = {c.name: base[c.name] for c in model.components if c.modality == "image"}   # they read no register
    prob = recalibrate(base[final].prob, model.update)
    here = float(np.mean(prob))
    z = np.log(np.clip(prob, 1e-9, 1 - 1e-9) / np.clip(1 - prob, 1e-9, 1))
    # the exact effect is a prediction pass per variable: try first those whose shift, times the slope of the
    # model's logit on the variable here, moves the logit most (a first-order guess, family-agnostic)
    picked.sort(key=lambda r: -_first_order(cohort.register[r["variable"]], z, dev[r["variable"]]["mean"]))
    for r in picked[:MAX_IMAGE_NET_COUNTERFACTUALS if heavy else MAX_COUNTERFACTUALS]:
        name, d = r["variable"], dev[r["variable"]]
        x = cohort.register[name].astype(float)
        sd = float(x.std(ddof=1))
        moved = (x - x.mean()) / sd * d["sd"] + d["mean"] if sd > 0 else x - x.mean() + d["mean"]
        reg = cohort.register.copy()
        reg[name] = moved
        out = model.outputs(dataclasses.replace(cohort, register=reg), reuse)
        mean = float(np.mean(recalibrate(out[final].prob, model.update)))
        r["counterfactual_mean"], r["effect"] = mean, mean - here


def _first_order(x, z: np.ndarray, dev_mean: float) -> float:
    """|slope of the model's logit on ``x`` here x (development mean - mean here)| (0 when it cannot tell)."""
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x)
    if ok.sum() < 3 or np.var(x[ok]) == 0:
        return 0.0
    slope = np.cov(x[ok], z[ok])[0, 1] / np.var(x[ok], ddof=1)
    return float(abs(slope * (dev_mean - x[ok].mean())))


def external_validation(model, cohort, prob: np.ndarray, out: Path, *, n_boot: int = 1000, update: str | None = None,
                        update_out: Path | None = None, sign: Path | None = None) -> dict:
    """Validate ``model`` on the labelled ``cohort`` (its predictions ``prob``) and write the files into ``out``."""
    from benchmark.evaluate.subgroups import subgroup_rows
    from benchmark.report.shift_compare import compare_shift
    from benchmark.report.validation import validation_figures
    from benchmark.report.validation_answers import drifted
    from benchmark.report.validation_page import write_validation

    seed = int(model.meta.get("seed", 0) or 0)
    ext = validation_figures(cohort.y, prob, threshold=model.threshold, conformal=model.conformal, n_boot=n_boot,
                             seed=seed)
    shift = compare_shift(model.shift, cohort, model.schema)
    if shift and drifted(ext) and cohort.has_register:
        counterfactuals(model, cohort, shift)
    groups = subgroup_rows(cohort.y, prob, cohort.groups) if cohort.groups is not None else None
    done: dict = {"auc": ext.get("auc"), "oe_ratio": ext.get("oe_ratio")}
    upd = None
    if update:
        upd, done["updated_bundle"] = _update(model, cohort, prob, ext, update, update_out, sign, n_boot, seed)
        done["update_after"] = upd["after"]
    done["validation_csv"], done["validation_html"] = write_validation(
        out, ext, model.cv, _meta(model, cohort), shift=shift, has_shift_stats=model.shift is not None,
        subgroups=groups, update=upd)
    done["shift"] = shift
    return done


def _update(model, cohort, prob, ext: dict, kind: str, update_out: Path | None, sign: Path | None, n_boot: int,
            seed: int) -> tuple[dict, Path]:
    from benchmark.export.update import carried_thresholds, fit_update, write_updated_bundle
    from benchmark.report.validation import validation_figures

    source = Path(model.meta["bundle"])
    res = fit_update(cohort.y, prob, kind, seed=seed)
    threshold, conformal = carried_thresholds(model.threshold, model.conformal,
                                              {"intercept": res.intercept, "slope": res.slope})
    # each patient's map was fitted without them; the thresholds follow the final map (same decisions as before)
    after = validation_figures(cohort.y, res.oof, threshold=threshold, conformal=conformal, n_boot=n_boot, seed=seed)
    out = Path(update_out) if update_out else source.parent / f"{source.name}-{kind}"
    path = write_updated_bundle(model, res, out, source=source, cohort_name=cohort.name, before=ext, after=after,
                                sign=sign)
    info = {"kind": kind, "before": ext, "after": after, "folds": res.folds, "intercept": res.intercept,
            "slope": res.slope, "path": str(path), "signed": sign is not None}
    return info, path
