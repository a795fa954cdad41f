"""Embeddings to trees (HAIM, npj Digit Med 2022): frozen CNN embeddings + register data -> XGBoost/LightGBM.

Every patient's images go through one *frozen* timm encoder (``encoder``, default resnet18;
weights from ``pretrained`` or ``AFF_BENCHMARK_WEIGHTS`` as for ``timm_cnn``, else a fixed
random initialisation, seed 0). Its pooled pre-logit features are averaged over the
patient's images, standardised and reduced with PCA (both fitted on the training part
only), appended to the register variables, and handed to the ``xgboost`` / ``lightgbm``
register families, which do the rest (native categoricals, missing values, early stopping
on a holdout of the training part, ``ctx.report``)::

    fam = get_family("embed_xgboost")(n_components=16, encoder="resnet18", learning_rate=0.05)
    fam.fit(train, None, ctx)
    p = fam.predict_proba(test)

Why frozen (the scheme, and the two properties it guarantees):

- *one feature map*: training and test patients are embedded by the same network, so a
  tree's split on a principal component means the same thing at training and at test
  time (an image candidate's bag has K networks, one per inner fold, each with its own
  coordinate system; mixing them would not);
- *no label in a feature*: the encoder never trains, so no tree learns from an embedding
  made by a network that saw that patient's label (a fine-tuned network's out-of-fold
  embeddings cannot give both properties inside the inner cross-validation).

This is HAIM's set-up (pretrained encoders, no fine-tuning). Without pretrained weights
the encoder's features are random convolutional features: give weights for a meaningful
result (``pretrained: imagenet``; docs/candidates.md, "Pretrained weights"), and the
findings say when a run had none. Patients without images get NaN components, which the
trees route down their learned missing-value branch.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from benchmark.candidates.backbones import (aggregate_per_patient, build_timm_model, image_stats, pre_logits_width,
                                            resolve_weights)
from benchmark.candidates.base import Family, TrialContext, register_family
from benchmark.candidates.tabular import BoostedTrees, LightGBMFamily, XGBoostFamily
from benchmark.candidates.torch_device import cpu_threads, resolve_device, torch_threads
from benchmark.errors import UserError

ENCODER_SEED = 0           # the random initialisation used when no weights are given
BUNDLE_TAG = "bundle:"     # ``pretrained_`` of an encoder whose weights came from an exported bundle
_ENCODERS: dict[tuple, tuple[torch.nn.Module, tuple[float, float]]] = {}
_FEATURES: dict[tuple, dict[str, np.ndarray]] = {}   # encoder key -> {patient key: features}


def _encoder(arch: str, pretrained: Any, device: torch.device):
    if isinstance(pretrained, str) and pretrained.startswith(BUNDLE_TAG):   # restored from a bundle
        key = (arch, pretrained, str(device))
        if key not in _ENCODERS:
            raise RuntimeError(f"encoder {pretrained} was not registered (load the bundle again)")
        return key, None, _ENCODERS[key]
    weights = resolve_weights(arch, pretrained)
    key = (arch, str(weights), str(device))
    if key not in _ENCODERS:
        net = build_timm_model(arch, weights=weights, seed=ENCODER_SEED).to(device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        _ENCODERS[key] = (net, image_stats(net))
    return key, weights, _ENCODERS[key]


PROBE_PX = 32   # the image side a part without images probes the pre-logit width at (pooled: any size gives it)


def frozen_embeddings(data, arch: str, pretrained: Any, device: str = "cpu", n_threads: int | None = None,
                      batch_size: int = 256) -> np.ndarray:
    """(n_patients, d) mean pre-logit features of each patient's images (NaN rows without images).

    Features depend on the encoder and the image only, so they are computed once per
    patient and image size in a process and reused by every fit.
    """
    dev = resolve_device(device)
    key, _, (net, (mean, std)) = _encoder(arch, pretrained, dev)
    if data.images is None or len(data.images) == 0:   # NaN rows as wide as the features of a part with images
        return np.full((len(data), pre_logits_width(net, PROBE_PX)), np.nan, dtype=np.float32)
    cache = _FEATURES.setdefault(key, {})
    owner = np.asarray(data.image_owner)
    # Keyed by the content of a patient's images (not its key: tests and users load several cohorts).
    bounds = np.searchsorted(owner, np.arange(len(data) + 1))
    digests = [hashlib.blake2b(data.images[bounds[i]:bounds[i + 1]].tobytes(), digest_size=16).hexdigest()
               + f":{bounds[i + 1] - bounds[i]}:{data.images.shape[-1]}" for i in range(len(data))]
    todo = np.array([i for i, d in enumerate(digests) if d not in cache], dtype=np.int64)
    if len(todo):
        img_rows = np.flatnonzero(np.isin(owner, todo))
        feats = []
        with torch_threads(n_threads), torch.no_grad():
            for start in range(0, len(img_rows), batch_size):
                rows = img_rows[start:start + batch_size]
                x = torch.as_tensor(data.images[rows]).to(dev).unsqueeze(1).float().div_(255.0)
                x = (x - mean) / std
                f = net.forward_head(net.forward_features(x), pre_logits=True)
                feats.append(f.float().cpu().numpy())
        d = feats[0].shape[1] if feats else pre_logits_width(net, data.images.shape[-1])
        per = (aggregate_per_patient(np.concatenate(feats), owner[img_rows], len(data), "mean")
               if feats else np.full((len(data), d), np.nan))
        for i in todo:
            cache[digests[i]] = per[i].astype(np.float32)
    return np.stack([cache[d] for d in digests])


class EmbeddingReducer:
    """Standardise + PCA of the frozen embeddings, fitted on the training part's patients with images.

    >>> red = EmbeddingReducer(n_components=8, seed=0).fit(E_train)
    >>> red.features(E_test).columns[:2].tolist()
    ['emb:pc0', 'emb:pc1']
    """

    def __init__(self, *, n_components: int = 16, seed: int = 0) -> None:
        self.n_components, self.seed = int(n_components), int(seed)

    def fit(self, E: np.ndarray) -> "EmbeddingReducer":
        ok = np.isfinite(E).all(axis=1)
        k = min(self.n_components, E.shape[1], int(ok.sum()) - 1)
        self.reducer_ = None
        if k >= 1:
            scaler = StandardScaler().fit(E[ok])
            pca = PCA(n_components=k, svd_solver="full", random_state=self.seed).fit(scaler.transform(E[ok]))
            self.reducer_ = (scaler, pca)
        return self

    def features(self, E: np.ndarray) -> pd.DataFrame:
        """(n, k) principal component scores; NaN where the patient has no image."""
        if self.reducer_ is None:
            return pd.DataFrame(index=pd.RangeIndex(len(E)))
        scaler, pca = self.reducer_
        ok = np.isfinite(E).all(axis=1)
        Z = np.full((len(E), pca.n_components_), np.nan)
        if ok.any():
            Z[ok] = pca.transform(scaler.transform(E[ok]))
        return pd.DataFrame({f"emb:pc{i}": Z[:, i] for i in range(Z.shape[1])}, index=pd.RangeIndex(len(E)))


class _EmbedTrees(Family):
    """PCA of frozen-encoder embeddings appended to the register table, then a tree family (composed)."""

    uses_images = True
    trains_on_gpu = True   # the frozen encoder embeds on the GPU
    trees: ClassVar[type[BoostedTrees]]
    defaults: ClassVar[dict[str, Any]] = {"n_components": 16, "encoder": "resnet18", "pretrained": None}

    @classmethod
    def param_names(cls) -> set[str]:
        """Its own parameters and every parameter of the tree family it hands the rest to."""
        return set(cls.defaults) | cls.trees.param_names()

    def _embed(self, data) -> np.ndarray:
        return frozen_embeddings(data, self.encoder_, self.pretrained_, self.device_, self.threads_)

    def _augment(self, data):
        feats = self.reducer_.features(self._embed(data))
        reg = feats if data.register is None else pd.concat([data.register.reset_index(drop=True), feats], axis=1)
        return replace(data, register=reg)

    def fit(self, train, valid, ctx: TrialContext) -> "_EmbedTrees":
        s = self.settings()
        if train.images is None or len(train.images) == 0:
            raise UserError(f"{self.family_name} needs images but the training part has none; give the dataset "
                            "an 'images' section or leave embedding candidates out")
        tree_params = {k: v for k, v in self.params.items() if k not in self.defaults}
        self.encoder_, self.pretrained_ = s["encoder"], s["pretrained"]
        self.device_ = str(resolve_device(ctx.device))
        self.threads_ = cpu_threads(ctx.extra) if self.device_ == "cpu" else None
        _, weights, _ = _encoder(self.encoder_, self.pretrained_, resolve_device(self.device_))
        ctx.notes.append(f"encoder weights: {weights.name}" if weights else "encoder weights: random init (frozen)")
        self.reducer_ = EmbeddingReducer(n_components=s["n_components"], seed=ctx.seed).fit(self._embed(train))
        self.model_ = self.trees(**tree_params)
        self.model_.fit(self._augment(train), None if valid is None else self._augment(valid), ctx)
        return self

    def predict_proba(self, data) -> np.ndarray:
        return self.model_.predict_proba(self._augment(data))

    # -- bundles (benchmark.export.codec): the frozen encoder's weights travel with the trees; where they
    #    came from (``pretrained_``, a file name) does not: a bundle names no file outside itself

    bundle_skip: ClassVar[tuple[str, ...]] = ("pretrained_",)

    def bundle_extra(self, writer, path: str) -> dict:
        _, _, (net, stats) = _encoder(self.encoder_, self.pretrained_, resolve_device(self.device_))
        return {"encoder": writer.tensors(f"{path}.encoder", net.state_dict()), "stats": list(stats)}

    def bundle_restore(self, reader, extra: dict) -> None:
        """Register the bundle's encoder (random-init architecture + its weights) for ``_embed``."""
        data = reader.file(extra["encoder"])
        dev = resolve_device(reader.device)
        tag = BUNDLE_TAG + hashlib.blake2b(data, digest_size=16).hexdigest()
        key = (self.encoder_, tag, str(dev))
        if key not in _ENCODERS:
            net = reader.network(lambda: build_timm_model(self.encoder_, weights=None, seed=ENCODER_SEED),
                                 extra["encoder"], self.family_name).to(dev).eval()
            for p in net.parameters():
                p.requires_grad_(False)
            _ENCODERS[key] = (net, tuple(float(v) for v in extra["stats"]))
        self.pretrained_, self.device_ = tag, str(dev)
        self.threads_ = cpu_threads({}) if dev.type == "cpu" and not self.threads_ else self.threads_

    def predict_at(self, data, share: float) -> np.ndarray:
        return self.model_.predict_at(self._augment(data), share)

    def still_improving(self) -> bool:
        return self.model_.still_improving()


@register_family("embed_xgboost")
class EmbedXGBoostFamily(_EmbedTrees):
    """PCA of frozen CNN embeddings + register variables -> the ``xgboost`` family.

    Params: ``n_components`` (capped by the embedding width), ``encoder`` (a timm
    architecture), ``pretrained``, and any ``xgboost`` family parameter.
    """

    trees = XGBoostFamily
    choices = XGBoostFamily.choices


@register_family("embed_lightgbm")
class EmbedLightGBMFamily(_EmbedTrees):
    """PCA of frozen CNN embeddings + register variables -> the ``lightgbm`` family.

    Params: ``n_components``, ``encoder``, ``pretrained``, and any ``lightgbm`` family parameter.
    """

    trees = LightGBMFamily
    choices = LightGBMFamily.choices
