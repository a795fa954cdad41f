"""Embeddings to trees (HAIM, npj Digit Med 2022): CNN embeddings + register data -> XGBoost/LightGBM.

The consumed image candidate's embeddings (``"<src>:emb0" ... "<src>:emb{d-1}"`` in
``PatientData.upstream``, out-of-fold for training patients) are standardised and reduced
with PCA, both fitted on the training part only, then appended to the register variables
and handed to the ``xgboost`` / ``lightgbm`` register families, which do the rest (native
categoricals, missing values, early stopping on ``valid``, ``ctx.report``)::

    fam = get_family("embed_xgboost")(n_components=16, learning_rate=0.05, max_depth=4)
    fam.fit(train, valid, ctx)
    p = fam.predict_proba(test)

Missing images: a patient whose embedding is NaN gets NaN principal components, which
the trees route down their learned missing-value branch. A source that brings no
embedding (an image family without ``embed``) contributes the logit of its probability
instead (noted in ``ctx.notes``). ``include_prob=True`` adds every source's logit as well.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from benchmark.candidates.base import Family, TrialContext, register_family
from benchmark.candidates.fusion_inputs import embedding_columns, source_probs, to_logit, upstream_sources
from benchmark.candidates.tabular import BoostedTrees, LightGBMFamily, XGBoostFamily


class EmbeddingReducer:
    """Standardise + PCA per source, fitted on the training part's complete rows only.

    >>> red = EmbeddingReducer(n_components=8, seed=0).fit(train)
    >>> red.features(test).columns[:2].tolist()
    ['best_image:pc0', 'best_image:pc1']
    """

    def __init__(self, *, n_components: int = 16, include_prob: bool = False, seed: int = 0) -> None:
        self.n_components, self.include_prob, self.seed = int(n_components), bool(include_prob), int(seed)

    def fit(self, train, family: str = "embed") -> "EmbeddingReducer":
        self.sources_ = upstream_sources(train, family)
        self.emb_cols_ = embedding_columns(train.upstream)
        self.reducers_: dict[str, tuple[StandardScaler, PCA]] = {}
        for src, cols in self.emb_cols_.items():
            E = train.upstream[cols].to_numpy(dtype=np.float64, na_value=np.nan)
            ok = np.isfinite(E).all(axis=1)
            k = min(self.n_components, E.shape[1], int(ok.sum()) - 1)
            if k < 1:
                continue
            scaler = StandardScaler().fit(E[ok])
            pca = PCA(n_components=k, svd_solver="full", random_state=self.seed).fit(scaler.transform(E[ok]))
            self.reducers_[src] = (scaler, pca)
        # Sources without a usable embedding contribute their logit.
        self.prob_sources_ = [s for s in self.sources_ if self.include_prob or s not in self.reducers_]
        self.fallback_ = [s for s in self.sources_ if s not in self.reducers_]
        return self

    def features(self, data) -> pd.DataFrame:
        """(n, n_features) PCA scores (NaN where the embedding is missing) and source logits."""
        blocks = {}
        for src, (scaler, pca) in self.reducers_.items():
            E = data.upstream[self.emb_cols_[src]].to_numpy(dtype=np.float64, na_value=np.nan)
            ok = np.isfinite(E).all(axis=1)
            Z = np.full((len(E), pca.n_components_), np.nan)
            if ok.any():
                Z[ok] = pca.transform(scaler.transform(E[ok]))
            blocks.update({f"{src}:pc{i}": Z[:, i] for i in range(Z.shape[1])})
        if self.prob_sources_:
            L = to_logit(source_probs(data, self.prob_sources_))   # NaN stays NaN
            blocks.update({f"{s}:logit": L[:, j] for j, s in enumerate(self.prob_sources_)})
        return pd.DataFrame(blocks, index=pd.RangeIndex(len(data)))

    def augment(self, data):
        """The part with the reduced features appended to its register table."""
        if data is None:
            return None
        feats = self.features(data)
        reg = feats if data.register is None else pd.concat([data.register.reset_index(drop=True), feats], axis=1)
        return replace(data, register=reg)


class _EmbedTrees(Family):
    """PCA of upstream embeddings appended to the register table, then a tree family (composed)."""

    consumes_embeddings = True
    trees: ClassVar[type[BoostedTrees]]
    defaults: ClassVar[dict[str, Any]] = {"n_components": 16, "include_prob": False}

    @classmethod
    def param_names(cls) -> set[str]:
        """Its own parameters and every parameter of the tree family it hands the rest to."""
        return set(cls.defaults) | cls.trees.param_names()

    def fit(self, train, valid, ctx: TrialContext) -> "_EmbedTrees":
        s = self.settings()
        tree_params = {k: v for k, v in self.params.items() if k not in self.defaults}
        self.reducer_ = EmbeddingReducer(n_components=s["n_components"], include_prob=s["include_prob"],
                                         seed=ctx.seed)
        self.reducer_.fit(train, self.family_name)
        if self.reducer_.fallback_:
            ctx.notes.append(f"{self.family_name}: no embeddings from {', '.join(self.reducer_.fallback_)}; "
                             "its probability is used instead")
        self.model_ = self.trees(**tree_params)
        self.model_.fit(self.reducer_.augment(train), self.reducer_.augment(valid), ctx)
        return self

    def predict_proba(self, data) -> np.ndarray:
        return self.model_.predict_proba(self.reducer_.augment(data))


@register_family("embed_xgboost")
class EmbedXGBoostFamily(_EmbedTrees):
    """PCA of upstream CNN embeddings + register variables -> the ``xgboost`` family.

    Params: ``n_components`` (per source, capped by the embedding width), ``include_prob``,
    and any ``xgboost`` family parameter (``learning_rate``, ``max_depth``, ``class_weight`` ...).
    """

    trees = XGBoostFamily
    choices = XGBoostFamily.choices


@register_family("embed_lightgbm")
class EmbedLightGBMFamily(_EmbedTrees):
    """PCA of upstream CNN embeddings + register variables -> the ``lightgbm`` family.

    Params: ``n_components``, ``include_prob``, and any ``lightgbm`` family parameter.
    """

    trees = LightGBMFamily
    choices = LightGBMFamily.choices
