"""Per-patient explanations of an exported model: ``predict --explain``.

**Register contributions** (log-odds; positive pushes towards AFF), per patient, the ``top``
largest in size:

- the exported candidate is a tree ensemble (``xgboost``, ``lightgbm``, ``embed_*``):
  TreeSHAP, exact (``explain.shap``), averaged over the models that give its probability
  (the refit, else the bag's members); an ``embed_*`` family's image components are summed
  into ``[image]``;
- any other candidate (logistic regression, MLP, fusion networks, late fusion through its
  inputs): an approximation, *shuffle contributions*: a column's contribution to a patient is
  the patient's logit minus its mean logit when that column's value is replaced by other
  patients' values of the same dataset (``SHUFFLES`` seeded shuffles), the other columns
  kept. It is one column at a time (interactions are not shared out) and depends on the
  dataset's patients as the background, so a column whose value is the same for everyone
  contributes 0. The model's other inputs (image models) are computed once.

**Saliency**: Grad-CAM maps (``explain.gradcam``) of each image network in the model (an
image candidate, or a fusion network's CNN) towards the class the model predicts (AFF when
``above_threshold``), written as patient data under ``<out>/patient_data/saliency/``.

    written = explain_predictions(model, cohort, table, out)
    # table gains top_register; out/contributions.csv (patient, rank, column, contribution)
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.explain.feature_cache import image_feature_cache
from benchmark.explain.permutation import shuffled, shuffles, to_logit
from benchmark.explain.shap import tree_contributions

SHUFFLES = 4
TOP = 5          # contributions shown in predictions.csv
TOP_FILE = 10    # contributions per patient in contributions.csv


def _models(comp) -> list[tuple[object, int | None]]:
    return [(comp.full, None)] if comp.full is not None else [(m, k) for k, m in enumerate(comp.members)]


def _component_view(model, cohort, comp, k: int | None, outputs: dict):
    """The view a component's model ``k`` reads (its inputs' outputs as upstream), as ``ExportedModel.outputs``."""
    from benchmark.candidates.fusion_inputs import source_frame

    positions = np.arange(cohort.n_patients)
    upstream = None
    if comp.sources:
        has = np.zeros(cohort.n_patients, dtype=bool)
        if cohort.has_images:
            has[cohort.images["patient"].unique()] = True
        cols = []
        for role, name in comp.sources.items():
            src = outputs[name]
            prob = src.prob if k is None else src.members[k % len(src.members)]
            cols.append(source_frame(role, prob, prob, index=positions,
                                     missing=~has if model._modality(name) == "image" else None))
        upstream = pd.concat(cols, axis=1)
    return cohort.view(positions, labels=False, image_size=comp.image_size, upstream=upstream)


def tree_shap_contributions(model, cohort) -> pd.DataFrame | None:
    """(n, columns) TreeSHAP of the exported candidate when it is a tree family, else None."""
    comp = model.final
    outputs = model.outputs(cohort) if comp.sources else {}
    parts = []
    for m, k in _models(comp):
        c = tree_contributions(m, _component_view(model, cohort, comp, k, outputs))
        if c is None:
            return None
        parts.append(c)
    return sum(parts) / len(parts)


def shuffle_contributions(model, cohort, seed: int = 0, n_shuffles: int = SHUFFLES) -> pd.DataFrame:
    """(n, columns) shuffle contributions of every register column (module docstring)."""
    base_out = model.outputs(cohort)
    fixed = {c.name: base_out[c.name] for c in model.components if c.modality == "image"}
    base = to_logit(base_out[model.final.name].prob)
    perms = shuffles(cohort.n_patients, seed, n_shuffles)
    contrib = {}
    with ExitStack() as stack:
        for comp in model.components:
            for m, _ in _models(comp):
                stack.enter_context(image_feature_cache(m))
        for col in cohort.register.columns:
            if cohort.register[col].nunique(dropna=False) <= 1:
                contrib[str(col)] = np.zeros(cohort.n_patients)
                continue
            logits = [to_logit(model.outputs(replace(cohort, register=shuffled(cohort.register, col, p)),
                                             reuse=fixed)[model.final.name].prob) for p in perms]
            contrib[str(col)] = base - np.mean(logits, axis=0)
    return pd.DataFrame(contrib)


def register_contributions(model, cohort, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """(n, columns) contributions and the method's name ("TreeSHAP" or "shuffle")."""
    if cohort.register is None or not cohort.has_register:
        return pd.DataFrame(index=range(cohort.n_patients)), "none"
    shap = tree_shap_contributions(model, cohort)
    if shap is not None:
        return shap, "TreeSHAP"
    return shuffle_contributions(model, cohort, seed=seed), "shuffle"


def top_contributions(contrib: pd.DataFrame, keys, k: int) -> pd.DataFrame:
    """Long table: the ``k`` largest contributions in size per patient (patient, rank, column, contribution)."""
    rows = []
    values = contrib.to_numpy()
    names = np.array(contrib.columns)
    for i, key in enumerate(keys):
        order = np.argsort(-np.abs(values[i]), kind="stable")[:k]
        for r, j in enumerate(order, start=1):
            if values[i, j] != 0:
                rows.append({"patient": key, "rank": r, "column": names[j], "contribution": float(values[i, j])})
    return pd.DataFrame(rows, columns=["patient", "rank", "column", "contribution"])


def _text(long: pd.DataFrame, keys, k: int) -> list[str]:
    by = {key: g for key, g in long.groupby("patient", sort=False)}
    out = []
    for key in keys:
        g = by.get(key)
        out.append("" if g is None else "; ".join(f"{c} {v:+.2f}" for c, v in
                                                  zip(g["column"].head(k), g["contribution"].head(k))))
    return out


def saliency_maps(model, cohort, table: pd.DataFrame, out: Path) -> list[str]:
    """Grad-CAM of each image network of the model towards its predicted class; the components drawn."""
    from benchmark.candidates.torch_family import ImageFamily
    from benchmark.explain.gradcam import gradcam_maps
    from benchmark.explain.patient_data import patient_data_root, write_patient_maps

    if not cohort.has_images:
        return []
    signs = np.where(table["above_threshold"].to_numpy(dtype=bool), 1.0, -1.0)
    outputs = model.outputs(cohort) if any(c.sources for c in model.components) else {}
    drawn = []
    for comp in model.components:
        models = [(m, k) for m, k in _models(comp) if isinstance(m, ImageFamily)]
        if not models or comp.image_size is None:
            continue
        views = [(m, _component_view(model, cohort, comp, k, outputs)) for m, k in models]
        maps = np.mean([gradcam_maps(m, v, signs)[0] for m, v in views], axis=0)
        folder = patient_data_root(out) / "saliency" / comp.name
        folder.mkdir(parents=True, exist_ok=True)
        view = views[0][1]
        write_patient_maps(folder, cohort.keys, view.image_owner, view.images, maps)
        drawn.append(comp.name)
    return drawn


def explain_predictions(model, cohort, table: pd.DataFrame, out: Path, seed: int = 0) -> dict:
    """Add ``top_register`` to ``table`` (in place), write contributions.csv and the saliency maps."""
    contrib, method = register_contributions(model, cohort, seed=seed)
    written: dict = {"method": method}
    if not contrib.empty:
        keys = list(table["patient"] if "patient" in table else table["id"])   # as predictions.csv names them
        long = top_contributions(contrib, keys, TOP_FILE)
        table["top_register"] = _text(long, keys, TOP)
        path = Path(out) / "contributions.csv"
        long.to_csv(path, index=False)
        written["contributions"] = path
    written["saliency"] = saliency_maps(model, cohort, table, Path(out))
    return written
