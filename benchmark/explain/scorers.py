"""A fitted model's P(AFF) for many register tables of the same patients, at the cost of few calls.

A ``Scorer`` is one model of a unit's predictor with the view it predicts (its outer-test
part as that model sees it). ``predict(items, register, perms)`` takes ``(column, shuffle)``
items (the view's register with ``column`` put in the order ``perms[shuffle]``) and returns
one prediction per item:

- a family that reads no images is called once per chunk of items, on the tables stacked
  (rows are patients; every family here predicts a patient from its own row);
- a family whose register goes through a ``TabularPreprocessor`` (logistic regression, the
  MLP, the fusion networks) gets the preprocessed matrix of the plain table with the shuffled
  column's own output columns permuted (``_Matrix``; checked once against the real
  preprocessing), not a table to preprocess again;
- ``embed_xgboost`` / ``embed_lightgbm``: the frozen-encoder components are computed once
  and appended to each table, and the tree family is called as above;
- a family that reads images (the fusion networks) is called once per item; inside
  ``with scorer:`` its image features are kept (``feature_cache``), so only the first call
  runs the backbone.

``substitute(column, shuffle)`` (optional) gives the upstream frame a fusion family reads
for that item: a late fusion reads its register input's predictions, not the register, so
its items carry that input's predictions on the shuffled table (``run.explain_unit``).
``reads(column)`` is False for a column no model of the scorer can use (a tree ensemble
that never split on it, a late fusion's own register): its predictions are then the
unshuffled ones, not recomputed.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import Callable

import numpy as np
import pandas as pd

from benchmark.data.cohort import PatientData
from benchmark.explain.feature_cache import image_feature_cache
from benchmark.explain.permutation import shuffled

CHUNK_ROWS = 40_000   # stacked register rows per call
EVAL_ROWS = 8192      # a register network's prediction batch while scoring stacked tables (rows are independent)
EVAL_IMAGES = 1024    # a fusion network's prediction batch on cached image features, for images up to SMALL_IMAGES px
SMALL_IMAGES = 64


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


def costly_to_shuffle(model, device: str, level: str = "auto") -> str | None:
    """Why ``model``'s (a family instance or class) register importance is left out at ``level`` (run
    --importance) on ``device``, or None; ``run.plan.counts`` prices the same rule.

    A FiLM network's register input scales the feature maps of a backbone stage, so every
    shuffled column runs the stages after it on every image again (``feature_cache`` keeps only
    those before it): on a CPU, at 32 px, about half an hour per fold of the default cohort;
    ``auto`` leaves it out on a CPU. Every fusion network reads each shuffled table with every
    test image's features (about 0.06 s per table at 32 px on a CPU, 1,944 tables per unit of a
    bag of 3); ``tables`` (the ``hour`` profile's level) leaves them all out.
    """
    from benchmark.candidates.fusion_nets import FiLMFamily, NeuralFusion

    fam = model if isinstance(model, type) else type(model)   # a fitted family or its class (the plan's)
    if level == "tables" and issubclass(fam, NeuralFusion):
        return (f"{fam.family_name}: each shuffled register column is a pass over every test image's features, which "
                "--importance tables (the hour profile's default) leaves out (run --importance auto to include it)")
    if level in ("auto", "tables") and issubclass(fam, FiLMFamily) and not str(device).startswith("cuda"):
        return ("film: a shuffled register column changes the image features after the modulated stage, so each "
                "column costs a pass of the network over every test image; on a CPU that is left out under "
                "--importance auto (run --importance all to include it)")
    return None


def feature_groups(pre) -> dict[str, np.ndarray]:
    """Register column -> the positions of the columns ``TabularPreprocessor.transform`` makes of it
    (its standardised value, its missing-value flag, its one-hot levels or its code)."""
    n_num, n_ind = len(pre.num_cols_), len(pre.ind_cols_)
    groups = {c: [i] for i, c in enumerate(pre.num_cols_)}
    for j, c in enumerate(pre.ind_cols_):
        groups.setdefault(c, []).append(n_num + j)
    raw = 0
    kept = np.cumsum(pre._keep_cat) - 1       # raw categorical position -> position among the kept ones
    for col in pre.cat_cols_:
        width = 1 if pre.categorical == "codes" else (len(pre.levels_[col]) + pre.has_other_[col]
                                                      + pre.has_missing_[col])
        idx = [n_num + n_ind + int(kept[k]) for k in range(raw, raw + width) if pre._keep_cat[k]]
        if idx:
            groups[col] = idx
        raw += width
    return {c: np.asarray(v, dtype=np.int64) for c, v in groups.items()}


class _Matrix:
    """A ``TabularPreprocessor`` whose output is computed once: a shuffled column moves only its own
    output columns (the preprocessing works column by column, row by row), so a shuffled table's
    matrix is the plain one with those columns' rows permuted. ``patched`` makes the family's
    ``pre_.transform`` return a prepared matrix (checked once against the real transform)."""

    def __init__(self, pre, register: pd.DataFrame) -> None:
        self.pre, self.X = pre, pre.transform(register)
        self.groups = feature_groups(pre)

    def shuffled(self, column: str, perm: np.ndarray) -> np.ndarray:
        out = self.X.copy()
        g = self.groups.get(column)
        if g is not None and len(g):
            out[:, g] = self.X[perm][:, g]
        return out

    @contextmanager
    def patched(self, matrix: np.ndarray):
        self.pre.transform = lambda df: matrix
        try:
            yield
        finally:
            del self.pre.transform


class Scorer:
    """One model and its view; ``predict`` gives P(AFF) per item (module docstring)."""

    def __init__(self, model, view: PatientData,
                 substitute: Callable[[str, int], pd.DataFrame | None] | None = None,
                 substituted: set[str] = frozenset()) -> None:
        from benchmark.candidates.preprocess import TabularPreprocessor

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
        pre = getattr(self.inner, "pre_", None)
        self.matrix = (_Matrix(pre, view.register) if isinstance(pre, TabularPreprocessor)
                       and view.register is not None else None)
        self.checked = False

    def __enter__(self) -> "Scorer":
        """Keep the image features (``feature_cache``) and a larger prediction batch until ``__exit__``."""
        self._stack = ExitStack()
        if self.images:
            self._stack.enter_context(image_feature_cache(self.model))
            size = self.view.images.shape[-1]
            batch = getattr(self.model, "eval_batch_size_", None)
            if batch is not None and size <= SMALL_IMAGES:   # the head only, on cached features: large batches
                self.model.eval_batch_size_ = max(batch, EVAL_IMAGES)
                self._stack.callback(setattr, self.model, "eval_batch_size_", batch)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def reads(self, column: str) -> bool:
        return self.used is None or column in self.used or column in self.substituted

    def base(self) -> np.ndarray:
        """P(AFF) of the unshuffled view."""
        return self.predict([(None, -1)], self.view.register, None)[0]

    def _check(self, register: pd.DataFrame, column: str, perm: np.ndarray) -> None:
        """The prepared matrix must be what the preprocessing makes of the shuffled table; else it is not used."""
        self.checked = True
        real = self.matrix.pre.transform(shuffled(register, column, perm))
        if not np.array_equal(real, self.matrix.shuffled(column, perm)):
            self.matrix = None

    def _register(self, frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.reset_index(drop=True)
        return frame if self.extra is None else pd.concat([frame, self.extra], axis=1)

    def _upstream(self, column, shuffle: int) -> pd.DataFrame | None:
        if self.view.upstream is None:
            return None
        if self.substitute is not None and column in self.substituted:
            return self.substitute(column, shuffle)
        return self.view.upstream

    def _frame(self, register, column, perms, r) -> pd.DataFrame:
        return register if column is None else shuffled(register, column, perms[r])

    def predict(self, items: list[tuple], register: pd.DataFrame, perms: np.ndarray | None) -> list[np.ndarray]:
        """P(AFF) for each ``(column, shuffle)`` item (column None: the unshuffled table)."""
        if self.matrix is not None and not self.checked and items and items[0][0] is not None:
            self._check(register, items[0][0], perms[items[0][1]])
        if self.images:   # one call per item; inside ``with scorer:`` the image features are kept
            out = []
            for column, r in items:
                data = replace(self.view, upstream=self._upstream(column, r))
                if self.matrix is not None:
                    matrix = self.matrix.X if column is None else self.matrix.shuffled(column, perms[r])
                    with self.matrix.patched(matrix):
                        p = self.model.predict_proba(data)
                else:
                    p = self.model.predict_proba(replace(data, register=self._frame(register, column, perms, r)
                                                         .reset_index(drop=True)))
                out.append(np.asarray(p, dtype=np.float64))
            return out
        n = len(self.view)
        step = max(1, CHUNK_ROWS // max(n, 1))
        batch = getattr(self.inner, "eval_batch_size_", None)
        if batch is not None:   # a register network: larger batches, fewer calls (the same predictions)
            self.inner.eval_batch_size_ = max(batch, EVAL_ROWS)
        try:
            return [p for start in range(0, len(items), step)
                    for p in self._stacked(items[start:start + step], register, perms)]
        finally:
            if batch is not None:
                self.inner.eval_batch_size_ = batch

    def _stacked(self, chunk: list[tuple], register: pd.DataFrame, perms) -> list[np.ndarray]:
        n = len(self.view)
        ups = [self._upstream(c, r) for c, r in chunk]
        data = PatientData(patients=np.tile(self.view.patients, len(chunk)), register=None, images=None,
                           image_owner=None, y=None, categorical=list(self.view.categorical),
                           upstream=None if ups[0] is None else pd.concat(ups, ignore_index=True))
        if self.matrix is not None:
            matrix = np.concatenate([self.matrix.X if c is None else self.matrix.shuffled(c, perms[r])
                                     for c, r in chunk])
            data.register = pd.DataFrame({"_": np.zeros(len(chunk) * n)})   # the rows; the matrix is the content
            with self.matrix.patched(matrix):
                p = np.asarray(self.inner.predict_proba(data), dtype=np.float64)
        else:
            data.register = pd.concat([self._register(self._frame(register, c, perms, r)) for c, r in chunk],
                                      ignore_index=True)
            p = np.asarray(self.inner.predict_proba(data), dtype=np.float64)
        return np.split(p, len(chunk))
