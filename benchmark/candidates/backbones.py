"""Encoders the torch families build on: timm image backbones and the register MLP.

Starting weights come only from ``benchmark.candidates.weights`` (``resolve_weights`` says
which file, ``read_weights`` reads it; re-exported here). A 3-channel first convolution is
summed to one channel (timm's ``adapt_input_conv``); the classifier is re-initialised (timm
drops a pretrained head of another class count), and a one-logit head never starts far wider
than ``nn.Linear``'s default (``temper_head``)::

    net = build_timm_model("resnet18", weights=resolve_weights("resnet18", None))   # (n, 1, S, S) -> (n, 1)
    enc = TabularNet(n_numeric=10, cardinalities=[4], hidden=64, n_layers=2, dropout=0.1,
                     norm="layer", embed_dim=8, activation="relu")          # register rows -> features
    aggregate_per_patient(np.array([1., 3., 5.]), np.array([0, 0, 2]), 3)  # [2., nan, 5.]

Logit layers run in fp32 under autocast (``Float32Linear``, ``float32_classifier``): bf16
logits have 8 significant bits and tie patients at the AUC's resolution.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from benchmark.candidates.weights import (WEIGHTS_ENV, bundle_weights_only, find_weights,  # noqa: F401 - re-exported
                                          hub_overlay, read_weights, resolve_weights)
from benchmark.errors import UserError


def _create(arch: str, weights: Path | None, **kwargs: Any) -> nn.Module:
    """timm.create_model with optional kwargs dropped when the architecture rejects them."""
    import timm

    optional = {k: v for k, v in kwargs.items() if v}
    extra = ({"pretrained": True, "pretrained_cfg_overlay": {**hub_overlay(weights), "state_dict": read_weights(weights)}}
             if weights else {})
    while True:
        try:
            return timm.create_model(arch, in_chans=1, num_classes=1, **extra, **optional)
        except TypeError as exc:
            rejected = [k for k in optional if k in str(exc)]
            if not rejected:
                raise
            optional.pop(rejected[0])


def build_timm_model(arch: str, *, weights: Path | None = None, drop_rate: float = 0.0,
                     drop_path_rate: float = 0.0, seed: int = 0) -> nn.Module:
    """A one-channel, one-logit timm model; weights loaded and checked when given.

        net = build_timm_model("resnet18", weights=Path("w/resnet18.safetensors"))
    """
    import timm

    if not isinstance(arch, str) or not timm.is_model(arch):
        base = str(arch).partition(".")[0]
        raise UserError(
            f"candidate key 'arch': {arch!r} is not a timm architecture; "
            f"python -c \"import timm; print(timm.list_models('{base}*'))\" lists similar names")
    opts = {"drop_rate": drop_rate, "drop_path_rate": drop_path_rate}
    torch.manual_seed(seed)
    if weights is None:
        model = _create(arch, None, **opts)
    else:
        try:
            model = _create(arch, weights, **opts)
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise UserError(f"weights file {weights} cannot be loaded into {arch!r} ({first}); give weights saved from that architecture") from None
        _check_loaded(arch, model, weights, opts, seed)
    return crop_small_map_convs(temper_head(model))


def temper_head(net: nn.Module) -> nn.Module:
    """Scale a one-logit linear head that starts over twice as wide as ``nn.Linear``'s default
    (std 1/sqrt(3 fan_in)) down to that spread.

    timm's EfficientNet/MobileNet init draws a head's weights from U(-1/sqrt(fan_out), ...),
    which for one output is U(-1, 1): over 1280 batch-normalised features the first logits
    then have a spread of about 19, the sigmoid saturates and the first steps diverge
    (efficientnet_b0 learned nothing in a one-epoch fit). ResNet, DenseNet and ConvNeXt heads
    start at the default (up to sampling noise) or below it and are left as they are.
    """
    head = net.get_classifier() if hasattr(net, "get_classifier") else None
    if isinstance(head, nn.Linear) and head.out_features == 1 and not head.weight.is_meta:
        default_std = 1.0 / math.sqrt(3 * head.in_features)
        with torch.no_grad():
            std = float(head.weight.std())
            if std > 2 * default_std:
                head.weight.mul_(default_std / std)
    return net


_CHECKED: set[tuple[str, str]] = set()


def _check_loaded(arch: str, model: nn.Module, weights: Path, opts: dict, seed: int) -> None:
    """Fail when a file loaded (non-strictly) left most weight tensors at their random init."""
    key = (arch, str(weights))
    if key in _CHECKED:
        return
    torch.manual_seed(seed)
    fresh = dict(_create(arch, None, **opts).named_parameters())
    mats = [(k, p) for k, p in model.named_parameters() if p.ndim >= 2 and k in fresh and fresh[k].shape == p.shape]
    loaded = sum(not torch.equal(p, fresh[k]) for k, p in mats)
    if mats and loaded < 0.5 * len(mats):
        raise UserError(
            f"weights file {weights} matched only {loaded} of {len(mats)} weight tensors of {arch!r}; "
            f"give weights saved from that architecture")
    _CHECKED.add(key)



# ----------------------------------------------------------------------------- small feature maps

def _live_taps(n: int, k: int, p: int, s: int) -> tuple[int, int, int]:
    """(first tap, taps, new padding) of a ``k``-tap, ``p``-padded, ``s``-strided dimension whose
    input is ``n`` wide: the taps some output reads input with; all of them, ``(0, k, p)``, when none
    can be dropped."""
    out = (n + 2 * p - k) // s + 1
    first, last = max(0, p - (out - 1) * s), min(k - 1, p + n - 1)
    taps, pad = last - first + 1, p - first
    return (first, taps, pad) if out >= 1 and (n + 2 * pad - taps) // s + 1 == out else (0, k, p)


class CroppedConv2d(nn.Conv2d):
    """``nn.Conv2d`` that, on a feature map smaller than its kernel's reach, convolves with only the
    taps that can meet the input (same output, same parameters and state-dict keys).

    The dropped taps multiply zero padding only, so their gradient is zero either way; oneDNN's
    backward over such shapes on AVX2 CPUs falls back to a slow GEMM path (resnet18 at 32 px: the
    3x3 convolutions on its 1x1 last stage took two thirds of a training step).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        h = _live_taps(x.shape[-2], self.kernel_size[0], self.padding[0], self.stride[0])
        w = _live_taps(x.shape[-1], self.kernel_size[1], self.padding[1], self.stride[1])
        if (h[1], w[1]) == self.kernel_size:
            return super().forward(x)
        weight = self.weight[:, :, h[0]:h[0] + h[1], w[0]:w[0] + w[1]]
        return nn.functional.conv2d(x, weight, self.bias, self.stride, (h[2], w[2]), 1, self.groups)


def crop_small_map_convs(net: nn.Module) -> nn.Module:
    """Make (in place) every plain zero-padded, undilated, odd-kernel ``nn.Conv2d`` of ``net`` a
    ``CroppedConv2d``: identical outputs and gradients, faster on feature maps smaller than the kernel.

        net = crop_small_map_convs(timm.create_model("resnet18"))   # its 3x3 convs on 1x1 maps run as 1x1
    """
    for m in net.modules():
        if (type(m) is nn.Conv2d and m.padding_mode == "zeros" and m.dilation == (1, 1)
                and isinstance(m.padding, tuple) and m.kernel_size != (1, 1)
                and all(k % 2 == 1 and p == k // 2 for k, p in zip(m.kernel_size, m.padding))):
            m.__class__ = CroppedConv2d
    return net


# ----------------------------------------------------------------------------- fp32 logit layers

class _Float32Forward:
    """Mixin: under autocast the module's forward runs with autocast off on a float32 input (float32 output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not torch.is_autocast_enabled(x.device.type):
            return super().forward(x)  # type: ignore[misc]
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())  # type: ignore[misc]


class Float32Linear(_Float32Forward, nn.Linear):
    """``nn.Linear`` that stays float32 under autocast (same parameters and state-dict keys)."""


_FLOAT32_CLASSES: dict[type, type] = {nn.Linear: Float32Linear}


def as_float32(module: nn.Module) -> nn.Module:
    """Make ``module`` (in place) run in float32 under autocast; its parameters and state-dict keys stay.

        head = as_float32(nn.Linear(512, 1))     # head(bf16 features) -> float32 logits
    """
    cls = type(module)
    if issubclass(cls, _Float32Forward):
        return module
    if cls not in _FLOAT32_CLASSES:
        _FLOAT32_CLASSES[cls] = type(f"Float32{cls.__name__}", (_Float32Forward, cls), {"__module__": __name__})
    module.__class__ = _FLOAT32_CLASSES[cls]
    return module


def float32_classifier(net: nn.Module) -> nn.Module:
    """A timm model whose classifier (``get_classifier()``, when it has weights) runs in float32 under autocast."""
    get = getattr(net, "get_classifier", None)
    heads = get() if callable(get) else None
    for head in heads if isinstance(heads, (tuple, list)) else (heads,):
        if isinstance(head, nn.Module) and any(True for _ in head.parameters(recurse=False)):
            as_float32(head)
    return net


@torch.no_grad()
def pre_logits_width(net: nn.Module, size: int) -> int:
    """Width of ``net.forward_head(net.forward_features(x), pre_logits=True)``, probed once on zeros.

    Not always ``num_features`` (MobileNetV3, GhostNet: a 1x1 convolution after pooling widens it).
    """
    was_training = net.training
    net.eval()
    try:
        x = torch.zeros(1, 1, int(size), int(size), device=next(net.parameters()).device)
        return int(net.forward_head(net.forward_features(x), pre_logits=True).shape[-1])
    finally:
        net.train(was_training)


# ----------------------------------------------------------------------------- aggregation

def aggregate_per_patient(values: np.ndarray, owner: np.ndarray, n_patients: int, how: str = "mean") -> np.ndarray:
    """Per-patient mean or max of per-image ``values`` (1-D or ``(m, d)``); NaN without images.

        aggregate_per_patient(np.array([1., 3., 5.]), np.array([0, 0, 2]), 3)   # [2., nan, 5.]
    """
    values = torch.as_tensor(np.asarray(values, dtype=np.float64))
    owner_t = torch.as_tensor(np.asarray(owner, dtype=np.int64))
    shape = (n_patients,) + tuple(values.shape[1:])
    counts = torch.bincount(owner_t, minlength=n_patients).to(torch.float64)
    if how == "mean":
        out = torch.zeros(shape, dtype=torch.float64).index_add_(0, owner_t, values)
        out /= counts.reshape((-1,) + (1,) * (values.ndim - 1)).clamp_min(1.0)
    elif how == "max":
        index = owner_t.reshape((-1,) + (1,) * (values.ndim - 1)).expand_as(values)
        out = torch.full(shape, -math.inf, dtype=torch.float64).scatter_reduce_(0, index, values, "amax")
    else:
        raise ValueError(f"unknown aggregate {how!r}")
    out[counts == 0] = math.nan
    return out.numpy()



# ----------------------------------------------------------------------------- register encoder

class TabularNet(nn.Module):
    """Embeddings for categorical codes, concatenated with numeric inputs, then an MLP."""

    def __init__(self, n_numeric: int, cardinalities: list[int], *, hidden: int, n_layers: int,
                 dropout: float, norm: str, embed_dim: int, activation: str) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(c, min(embed_dim, c)) for c in cardinalities)
        width = n_numeric + sum(e.embedding_dim for e in self.embeddings)
        act = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}[activation]
        layers: list[nn.Module] = []
        for _ in range(n_layers):
            layers.append(nn.Linear(width, hidden))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(hidden))
            elif norm == "layer":
                layers.append(nn.LayerNorm(hidden))
            layers += [act(), nn.Dropout(dropout)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = Float32Linear(width, 1)     # float32 logits under autocast
        self.n_numeric = n_numeric

    def features(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x[:, : self.n_numeric]]
        codes = x[:, self.n_numeric:].long()
        parts += [emb(codes[:, j]) for j, emb in enumerate(self.embeddings)]
        return self.body(torch.cat(parts, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


def image_stats(net: nn.Module) -> tuple[float, float]:
    """(mean, std) to normalise one-channel inputs: the weights' own statistics, grey-averaged."""
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    return float(np.mean(cfg.get("mean", (0.5,)))), float(np.mean(cfg.get("std", (0.25,))))
