"""A fitted model's P(AFF) for many register tables of the same patients, at the cost of few calls.

A ``Scorer`` is one model of a unit's predictor with the view it predicts (its outer-test
part as that model sees it). ``predict(items)`` takes ``(column, shuffle, frame)`` items, each
``frame`` a full register table of the view's patients, and returns one prediction per item:

- a family that reads no images is called once per chunk of items, on the tables stacked
  (rows are patients; every family here predicts a patient from its own row);
- ``embed_xgboost`` / ``embed_lightgbm``: the frozen-encoder components are computed once
  and appended to each table, and the tree family is called as above;
- a family that reads images (the fusion networks) is called once per item, its image
  features kept (``feature_cache``).

``substitute(column, shuffle)`` (optional) gives the upstream frame a fusion family reads
for that item: a late fusion reads its register input's predictions, not the register, so
its items carry that input's predictions on the shuffled table (``run.explain_unit``).
``reads(column)`` is False for a column no model of the scorer can use (a tree ensemble
that never split on it): its predictions are then the unshuffled ones, not recomputed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
import pandas as pd

from benchmark.data.cohort import PatientData
from benchmark.explain.feature_cache import image_feature_cache

CHUNK_ROWS = 40_000   # stacked register rows per call


def _is_embed(model) -> bool:
    """An ``embed_*`` family (frozen-encoder components appended to the register, then trees)."""
    from benchmark.candidates.fusion_embed import _EmbedTrees

    return isinstance(model, _EmbedTrees)


def used_columns(model) -> set[str] | None:
    """The register columns a model can read: those a tree ensemble splits on, none for a late
    fusion (it reads its inputs' predictions); None: any column may matter."""
    from benchmark.candidates.fusion_late import LateAverageFamily, LateStackingFamily
    from benchmark.candidates.tabular import LightGBMFamily, XGBoostFamily

    if isinstance(model, (LateAverageFamily, LateStackingFamily)):
        return set()
    from benchmark.explain.shap import input_names

    inner = model.model_ if _is_embed(model) else model
    if isinstance(inner, XGBoostFamily):
        used = set(inner.model_.get_booster().get_score(importance_type="weight"))
    elif isinstance(inner, LightGBMFamily):
        booster = inner.model_.booster_
        used = {n for n, k in zip(booster.feature_name(), booster.feature_importance("split")) if k > 0}
    else:
        return None
    names = input_names(inner)
    return {names.get(n, n) for n in used}


def costly_to_shuffle(model, device: str) -> str | None:
    """Why shuffling register columns costs a network pass per column for ``model`` on ``device``, or None.

    A FiLM network's register input scales the feature maps of a backbone stage, so every
    shuffled column runs the stages after it on every image again (``feature_cache`` keeps only
    those before it): on a CPU, at 32 px, about half an hour per fold of the default cohort.
    """
    from benchmark.candidates.fusion_nets import FiLMFamily

    if isinstance(model, FiLMFamily) and not str(device).startswith("cuda"):
        return ("film: a shuffled register column changes the image features after the modulated stage, so each "
                "column costs a pass of the network over every test image; on a CPU that is left out under "
                "--importance auto (run --importance all to include it)")
    return None


class Scorer:
    """One model and its view; ``predict`` gives P(AFF) per item (module docstring)."""

    def __init__(self, model, view: PatientData,
                 substitute: Callable[[str, int], pd.DataFrame | None] | None = None,
                 substituted: set[str] = frozenset()) -> None:
        self.model, self.view, self.substitute, self.substituted = model, view, substitute, set(substituted)
        self.used = used_columns(model)
        self.images = (getattr(model, "uses_images", False) and not _is_embed(model)
                       and view.images is not None and len(view.images) > 0)
        self.extra = None
        if _is_embed(model):   # components once; the trees then read register + components
            self.extra = model.reducer_.features(model._embed(view))
            self.inner = model.model_
        else:
            self.inner = model

    def reads(self, column: str) -> bool:
        return self.used is None or column in self.used or column in self.substituted

    def base(self) -> np.ndarray:
        """P(AFF) of the unshuffled view."""
        return self.predict([(None, -1, self.view.register)])[0]

    def _register(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.reset_index(drop=True)
        return frame if self.extra is None else pd.concat([frame, self.extra], axis=1)

    def _upstream(self, column, shuffle: int) -> pd.DataFrame | None:
        if self.view.upstream is None:
            return None
        if self.substitute is not None and column in self.substituted:
            return self.substitute(column, shuffle)
        return self.view.upstream

    def predict(self, items: list[tuple]) -> list[np.ndarray]:
        if self.images:
            out = []
            with image_feature_cache(self.model):
                for column, shuffle, frame in items:
                    data = replace(self.view, register=frame.reset_index(drop=True),
                                   upstream=self._upstream(column, shuffle))
                    out.append(np.asarray(self.model.predict_proba(data), dtype=np.float64))
            return out
        n = len(self.view)
        step = max(1, CHUNK_ROWS // max(n, 1))
        out = []
        for start in range(0, len(items), step):
            chunk = items[start:start + step]
            ups = [self._upstream(c, s) for c, s, _ in chunk]
            data = PatientData(
                patients=np.tile(self.view.patients, len(chunk)),
                register=pd.concat([self._register(f) for _, _, f in chunk], ignore_index=True),
                images=None, image_owner=None, y=None, categorical=list(self.view.categorical),
                upstream=None if ups[0] is None else pd.concat(ups, ignore_index=True))
            p = np.asarray(self.inner.predict_proba(data), dtype=np.float64)
            out.extend(np.split(p, len(chunk)))
        return out
