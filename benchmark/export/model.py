"""The exported prediction model: a candidate's bag trained on the whole cohort, with its inputs.

    model = load_model("results/run-1/bundles/late_stacking")     # benchmark.export.bundle
    table = model.predict("new-hospital.yaml")                     # or a loaded Cohort
    table.columns   # patient, prob, entropy, mutual_info, set_90, set_95, above_threshold, missing

A model is a list of *components* in the order they are computed: the inputs a fusion
candidate consumes first, the exported candidate last. Each component is a bag of K
members (one per inner fold of the whole cohort), the calibrator fitted on their
out-of-fold predictions, and the two constants that turn the members' mean into a
single-member-equivalent prediction (``calibration.bag_prediction``: ``r`` from the run's
outer-test parts, ``mu`` the mean out-of-fold logit), fixed at export so that a patient's
prediction never depends on who else is in the batch. A fusion member k reads member k of
each of its inputs, as in the run. With the profile's ``refit_full`` a component also holds
one model trained on every patient, which gives its probability (the bag still gives the
members, hence the uncertainty). The last component's probability gets the conformal
sets (thresholds fitted on its calibrated out-of-fold predictions) and the decision
threshold (90 % specificity on the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.candidates.calibration import Calibrator, bag_prediction
from benchmark.candidates.fusion_inputs import source_frame
from benchmark.data.cohort import Cohort
from benchmark.evaluate.conformal import predict_sets
from benchmark.evaluate.uncertainty import binary_entropy

LEVELS = ("90", "95")   # conformal levels written per patient


@dataclass
class Component:
    """One bag of the exported model (an input of a fusion, or the exported candidate)."""

    name: str                      # candidate name
    family: str
    modality: str                  # register | image | fusion
    members: list                  # K fitted families
    calibrator: Calibrator
    r: float                       # single-member spread over the bag mean's (fixed)
    mu: float                      # mean member logit (fixed)
    sources: dict[str, str] = field(default_factory=dict)   # consumed role or name -> component name
    image_size: int | None = None  # images resized to this for this component (None: no images)
    full: object = None            # profile refit_full: a model of the best params trained on every patient

    def to_state(self) -> dict:
        return dict(vars(self))


@dataclass
class ComponentOutput:
    prob: np.ndarray            # (n,) calibrated bag prediction
    prob_raw: np.ndarray        # (n,) sigmoid of the members' mean logit
    members: np.ndarray         # (K, n) each member calibrated
    members_raw: np.ndarray     # (K, n)


@dataclass
class ExportedModel:
    """A candidate's bag trained on the whole cohort, with its inputs (what ``load_model`` returns).

    ``predict`` gives one row per patient: ``patient``, ``prob`` (calibrated P(AFF)),
    ``entropy``, ``mutual_info``, ``set_90``, ``set_95`` (conformal sets), ``above_threshold``
    (the decision threshold at 90 % specificity on out-of-fold data) and ``missing``.
    """

    components: list[Component]
    conformal: dict[str, list[float]]   # level -> per-class thresholds [q_NFF, q_AFF]
    threshold: float                    # decision threshold on prob (90 % specificity, OOF)
    schema: dict
    meta: dict

    @property
    def final(self) -> Component:
        return self.components[-1]

    @property
    def uses_images(self) -> bool:
        return any(c.image_size is not None for c in self.components)

    def outputs(self, cohort: Cohort, fixed: dict[str, ComponentOutput] | None = None) -> dict[str, ComponentOutput]:
        """Every component's predictions for every patient of ``cohort`` (already conformed to the schema);
        the components in ``fixed`` are not computed again (``explain.patient``: they read no register)."""
        out: dict[str, ComponentOutput] = dict(fixed or {})
        positions = np.arange(cohort.n_patients)
        has_image = np.zeros(cohort.n_patients, dtype=bool)
        if cohort.has_images:
            has_image[cohort.images["patient"].unique()] = True
        for comp in self.components:
            if comp.name in out:
                continue

            def view(k: int | None):
                """The patients as member ``k`` (None: the refitted model) sees them."""
                upstream = None
                if comp.sources:
                    cols = []
                    for role, name in comp.sources.items():
                        src, kind = out[name], self._modality(name)
                        if k is None:
                            prob, praw = src.prob, src.prob_raw
                        else:
                            prob, praw = _member(src.members, k), _member(src.members_raw, k)
                        cols.append(source_frame(role, prob, praw, index=positions,   # no image, nothing to say
                                                 missing=~has_image if kind == "image" else None))
                    upstream = pd.concat(cols, axis=1)
                return cohort.view(positions, labels=False, image_size=comp.image_size, upstream=upstream)

            raw = np.stack([np.asarray(m.predict_proba(view(k)), dtype=np.float64) for k, m in enumerate(comp.members)])
            prob, prob_raw, members = bag_prediction(comp.calibrator, raw, r=comp.r, mu=comp.mu)
            if comp.full is not None:   # refit_full: the refitted model predicts, the bag gives the uncertainty
                prob_raw = np.asarray(comp.full.predict_proba(view(None)), dtype=np.float64)
                prob = comp.calibrator.transform(prob_raw)
            out[comp.name] = ComponentOutput(prob, prob_raw, members, raw)
        return out

    def _modality(self, name: str) -> str:
        return next(c.modality for c in self.components if c.name == name)

    def predict(self, data, *, keep_ids: bool = False) -> pd.DataFrame:
        """Per patient: calibrated P(AFF), uncertainty, conformal sets, missing modality.

        ``data``: a dataset file path or a ``Cohort`` (checked against the schema first).
        Patients are named by their output key (P00001...); ``keep_ids`` adds the dataset's
        own id column instead (then the table is patient data).
        """
        from benchmark.export.schema import conform, load_for_prediction

        cohort = load_for_prediction(data, self.schema) if isinstance(data, (str, Path)) else conform(data, self.schema)
        return self.table(cohort, keep_ids=keep_ids)

    def table(self, cohort: Cohort, *, keep_ids: bool = False) -> pd.DataFrame:
        final = self.outputs(cohort)[self.final.name]
        prob = final.prob
        mean = final.members.mean(axis=0)
        entropy = binary_entropy(mean)
        mi = np.maximum(entropy - binary_entropy(final.members).mean(axis=0), 0.0)
        df = pd.DataFrame({"patient": cohort.keys, "prob": prob, "entropy": entropy, "mutual_info": mi})
        for level in LEVELS:
            sets = predict_sets(prob, self.conformal[level])
            df[f"set_{level}"] = [_set_text(s) for s in sets]
        df["above_threshold"] = prob >= self.threshold
        df["missing"] = missing_modalities(cohort, self)
        if keep_ids:
            ids = getattr(cohort, "ids", None)
            if ids is None:
                raise ValueError("keep_ids: the cohort does not carry its id column")
            df.insert(0, "id", ids)
            df = df.drop(columns=["patient"])
        return df


def missing_modalities(cohort: Cohort, model: ExportedModel) -> list[str]:
    """Per patient, the modality the model reads but the patient lacks ('' when none)."""
    n = cohort.n_patients
    out = [""] * n
    reads_register = bool((model.schema.get("register") or {}).get("columns"))
    if model.uses_images:
        has = np.zeros(n, dtype=bool)
        if cohort.has_images:
            has[cohort.images["patient"].unique()] = True
        out = ["image" if not h else "" for h in has]
    if reads_register and cohort.has_register:
        empty = cohort.register.isna().all(axis=1).to_numpy()
        out = [(o + "+register" if o else "register") if e else o for o, e in zip(out, empty)]
    return out


def _member(m: np.ndarray, k: int) -> np.ndarray:
    return m[k % len(m)]


def _set_text(s: np.ndarray) -> str:
    labels = [name for name, inside in zip(("NFF", "AFF"), s) if inside]
    return "{" + ", ".join(labels) + "}"
